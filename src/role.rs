//! What a `shenguan run` process does: everything (`all`, the single-machine setup), or one side
//! of the gateway so that each side scales on its own.
//!
//! - `ingest`: the pull sources, `POST /v1/ingest/{adapter}` and publishing to the bus, with the
//!   de-duplication table. Instances share nothing but the bus (and the state store for tokens,
//!   when it is PostgreSQL): a site runs as many as the traffic needs behind a load balancer.
//! - `ledger`: the projector, the tracker, webhook delivery and notifications, the department
//!   API and the console. One instance applies the record topics to the ledger.
//!
//! Both serve `/healthz`, `/readyz`, `/metrics` and `/openapi.json`. A path of the other role is
//! answered 404 with the problem type `wrong-role`, which names the role that serves it
//! ([`served_by`]). Split roles meet only on the bus, so they need Kafka: the embedded bus lives
//! inside one process ([`Role::check_bus`]).

use std::fmt;

/// The role of a `shenguan run` process.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything in one process (the embedded setup).
    #[default]
    All,
    /// Sources, `/v1/ingest` and publishing.
    Ingest,
    /// Projector, tracker, delivery, department API and console.
    Ledger,
}

impl Role {
    /// The name used on the command line, in the configuration and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Ingest => "ingest",
            Role::Ledger => "ledger",
        }
    }

    /// Whether the process runs the sources and `/v1/ingest`.
    pub fn ingests(self) -> bool {
        matches!(self, Role::All | Role::Ingest)
    }

    /// Whether the process keeps the ledger: projector, tracker, delivery, department API and
    /// console.
    pub fn keeps_ledger(self) -> bool {
        matches!(self, Role::All | Role::Ledger)
    }

    /// Refuses a split role on a bus that only one process can see (`bus_url` not `kafka://`).
    pub fn check_bus(self, bus_url: &str) -> Result<(), String> {
        if self == Role::All || bus_url.starts_with("kafka://") {
            return Ok(());
        }
        Err(format!(
            "--role {self} needs a Kafka bus (--bus kafka://HOST:PORT): the bus '{bus_url}' is \
             embedded in one process, so an ingest and a ledger instance could not share it; \
             run --role all for a single-machine gateway"
        ))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    let (_, pattern) = crate::api::ROUTES
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

    #[test]
    fn split_roles_need_kafka() {
        assert!(Role::All.check_bus("embedded").is_ok());
        assert!(Role::Ingest.check_bus("kafka://localhost:9092").is_ok());
        let e = Role::Ledger.check_bus("embedded").unwrap_err();
        assert!(e.contains("--role ledger needs a Kafka bus") && e.contains("--role all"));
    }
}
