//! `shenguan liaison set|list`: the registry of liaison officers (联络员).

use crate::app::*;
use crate::config::Settings;

/// `shenguan liaison set`: checks the department and the contact, merges the change into the
/// stored entry (fields not given are kept), stores it, audits it.
pub async fn liaison_set(
    settings: &Settings,
    department: &str,
    body: crate::api::flows::LiaisonBody,
) -> anyhow::Result<()> {
    let defs = load_all(settings)?;
    let shared = crate::ledger::projector::Shared {
        catalog: defs.catalog.clone(),
        calendar: defs.calendar.clone(),
        policies: defs.policies.clone(),
        policy: defs.policy.clone(),
        topics: crate::bus::Topics::new(settings.bus.topic_prefix.clone()),
    };
    let state = open_state(settings).await?;
    crate::api::flows::set_liaison_in(
        &shared,
        state.as_ref(),
        department,
        body,
        crate::adapter::convert::now_shanghai(),
        "cli",
    )
    .await?;
    Ok(())
}

/// `shenguan liaison list`: every catalog department with its liaison officer.
pub async fn liaison_list(settings: &Settings) -> anyhow::Result<String> {
    let defs = load_all(settings)?;
    let state = open_state(settings).await?;
    let liaisons = state.liaisons().await?;
    let mut out = format!(
        "{:<16} {:<24} {:<10} {:<16} {}\n",
        "CODE", "NAME", "OFFICER", "PHONE", "LEADER"
    );
    for d in &defs.catalog.departments {
        let l = liaisons
            .iter()
            .find(|(code, _)| code == &d.code)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let text = |k: &str| l[k].as_str().unwrap_or("-").to_string();
        out.push_str(&format!(
            "{:<16} {:<24} {:<10} {:<16} {}\n",
            d.code,
            d.name,
            text("officer"),
            text("phone"),
            text("leader")
        ));
    }
    Ok(out)
}
