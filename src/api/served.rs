//! Which role serves a path: the ingest endpoint belongs to ingest instances, the rest of the
//! JSON API and the console to ledger instances, and `/healthz`, `/readyz`, `/metrics` and
//! `/openapi.json` to every instance. Read from the router's own route table, so a new route is
//! placed without a second list.

use crate::role::Role;

/// The role that serves `path`: `Some(Role::Ingest)` for the ingest endpoint,
/// `Some(Role::Ledger)` for the rest of the JSON API and the console, `None` for a path every
/// role serves (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`) and for a path nobody serves.
pub fn served_by(path: &str) -> Option<Role> {
    const EVERY_ROLE: &[&str] = &["/healthz", "/readyz", "/metrics", "/openapi.json"];
    if EVERY_ROLE.contains(&path) {
        return None;
    }
    if path == "/" || path == "/ui" || path.starts_with("/ui/") {
        return Some(Role::Ledger);
    }
    let (_, pattern) = super::ROUTES
        .iter()
        .find(|(_, pattern)| matches_pattern(pattern, path))?;
    if pattern.starts_with("/v1/ingest/") {
        Some(Role::Ingest)
    } else {
        Some(Role::Ledger)
    }
}

/// Whether `path` matches a route pattern, where a `{name}` segment matches any one segment.
fn matches_pattern(pattern: &str, path: &str) -> bool {
    let mut want = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') && !g.is_empty() => {}
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_belong_to_the_role_that_serves_them() {
        assert_eq!(served_by("/v1/ingest/nx-zwfw-approval"), Some(Role::Ingest));
        assert_eq!(served_by("/v1/inbox"), Some(Role::Ledger));
        assert_eq!(served_by("/v1/records/abc/claim"), Some(Role::Ledger));
        assert_eq!(served_by("/ui/login"), Some(Role::Ledger));
        assert_eq!(served_by("/"), Some(Role::Ledger));
        assert_eq!(served_by("/metrics"), None);
        assert_eq!(served_by("/v2/nothing"), None);
        assert_eq!(served_by("/v1/ingest/"), None);
        assert_eq!(served_by("/v1/records/abc/nothing"), None);
    }
}
