//! `shenguan liaison set|list`: the registry of liaison officers (联络员).

use crate::app::*;
use crate::config::Settings;

/// `shenguan liaison set`: checks the department and the contact, stores it, audits it.
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
    let value = crate::api::flows::liaison_value(
        &shared,
        department,
        body,
        crate::adapter::convert::now_shanghai(),
    )
    .map_err(anyhow::Error::msg)?;
    let state = open_state(settings).await?;
    state.set_liaison(department, value.clone()).await?;
    let masked = serde_json::json!({
        "officer": value["officer"],
        "phone": crate::mask::mask(value["phone"].as_str().unwrap_or("")),
    });
    state
        .audit("cli", "liaison.set", department, masked)
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
