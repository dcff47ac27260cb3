//! `shenguan ledger rebuild`: the ledger rebuilt from the bus topics.

use std::sync::Arc;
use std::time::Duration;

use crate::app::*;
use crate::config::Settings;
use crate::ledger::projector::{Projector, Shared};

/// `shenguan ledger rebuild`: clears the ledger projection and replays every ledger topic.
pub async fn ledger_rebuild(settings: &Settings) -> anyhow::Result<u64> {
    let defs = load_all(settings)?;
    crate::datadir::require_data(settings)?;
    // Not while a gateway runs on the same directory.
    let _lock = crate::datadir::lock(settings, "ledger rebuild")?;
    let (_, bus, topics) = open_io(settings).await?;
    let ledger = crate::ledger::store::open(&settings.ledger_url()).await?;
    ledger.clear().await?;
    let shared = Arc::new(Shared {
        catalog: defs.catalog,
        calendar: defs.calendar,
        policies: defs.policies,
        policy: defs.policy,
        topics,
    });
    let (applied, _) = tokio::sync::broadcast::channel(16);
    let projector = Projector {
        ledger,
        bus,
        shared,
        applied,
        status: Default::default(),
        burst: settings.ledger.burst,
    };
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    Ok(projector
        .run(stopped, Some(Duration::from_secs(2)), false)
        .await?)
}
