//! `shenguan token issue|list`: bearer tokens for systems (revoke and hash are in `auth`).

use crate::app::*;
use crate::auth;
use crate::config::Settings;
use crate::route::Catalog;

/// `shenguan token issue`: prints a new token once; stores only its hash.
pub async fn token_issue(settings: &Settings, role: &str, subject: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        auth::ROLES.contains(&role),
        "role must be one of {}",
        auth::ROLES.join(", ")
    );
    anyhow::ensure!(
        role == "admin" || !subject.is_empty(),
        "a {role} token needs --subject (the adapter name or department code)"
    );
    // A token for a subject the gateway does not know would only ever be refused.
    match role {
        "department" => {
            let catalog = Catalog::load(&settings.catalog_file).map_err(|e| {
                anyhow::anyhow!(
                    "{}",
                    e.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })?;
            anyhow::ensure!(
                catalog.department(subject).is_some(),
                "department '{subject}' is not in the routing catalog {}",
                settings.catalog_file.display()
            );
        }
        "adapter" => {
            let (_, adapters) = load_definitions(settings)?;
            anyhow::ensure!(
                adapters.get(subject).is_some(),
                "no adapter named '{subject}' in {}",
                settings.adapters_dir.display()
            );
        }
        _ => {}
    }
    let state = open_state(settings).await?;
    let (_, token) = auth::issue(state.as_ref(), role, subject, "cli").await?;
    Ok(token)
}

/// `shenguan token list`: every token ever issued (never the token itself), times in +08:00.
pub async fn token_list(settings: &Settings) -> anyhow::Result<String> {
    let state = open_state(settings).await?;
    let time = |id: &str, what: &str, stored: &str| {
        auth::local_time(stored).ok_or_else(|| {
            anyhow::anyhow!("token {id}: the stored {what} time '{stored}' is not RFC 3339")
        })
    };
    let mut out = format!(
        "{:<38} {:<11} {:<24} {:<26} REVOKED\n",
        "ID", "ROLE", "SUBJECT", "ISSUED"
    );
    for t in state.token_list().await? {
        let issued = time(&t.id, "issue", &t.created_at)?;
        let revoked = match &t.revoked_at {
            Some(r) => time(&t.id, "revocation", r)?,
            None => String::new(),
        };
        out.push_str(&format!(
            "{:<38} {:<11} {:<24} {:<26} {}\n",
            t.id, t.role, t.subject, issued, revoked
        ));
    }
    Ok(out)
}
