//! `shenguan dlq list|replay`: the dead-letter queue for the operator.

use crate::app::*;
use crate::bus::{self, Topics};
use crate::config::Settings;
use crate::dlq;
use crate::ingest::Ingestor;

/// `shenguan dlq list`.
pub async fn dlq_list(
    settings: &Settings,
    adapter: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let bus = bus::open(&settings.bus.url, &settings.data_dir, &settings.bus.kafka)?;
    let topics = Topics::new(settings.bus.topic_prefix.clone());
    let mut entries = dlq::entries(bus.as_ref(), &topics).await?;
    if let Some(a) = adapter {
        entries.retain(|e| e.adapter == a);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        print!("{}", dlq::table(&entries));
    }
    Ok(())
}

/// `shenguan dlq replay`: re-runs DLQ entries not yet replayed through the current adapters.
pub async fn dlq_replay(
    settings: &Settings,
    ids: &[String],
    adapter: Option<&str>,
    all: bool,
) -> anyhow::Result<bool> {
    anyhow::ensure!(
        all || !ids.is_empty() || adapter.is_some(),
        "say what to replay: --id ID, --adapter NAME or --all"
    );
    let (schemas, adapters) = load_definitions(settings)?;
    let (state, bus, topics) = open_io(settings).await?;
    let entries = dlq::entries(bus.as_ref(), &topics).await?;
    let done = state.replayed().await?;
    let ingestor = Ingestor::new(schemas, bus.clone(), state.clone(), topics, usize::MAX);
    let selected: Vec<&dlq::Entry> = entries
        .iter()
        .filter(|e| !done.contains(&e.id))
        .filter(|e| ids.is_empty() || ids.contains(&e.id))
        .filter(|e| adapter.is_none_or(|a| e.adapter == a))
        .collect();
    for id in ids {
        if !entries.iter().any(|e| &e.id == id) {
            anyhow::bail!("no DLQ entry with id {id}");
        }
    }
    let (mut accepted, mut duplicates, mut rejected, mut left) = (0, 0, 0, 0);
    let mut marks = Vec::new();
    let mut ledger = None;
    for e in selected {
        if e.stage == "deliver" && e.adapter != "notification" && ledger.is_none() {
            ledger = Some(crate::ledger::store::open(&settings.ledger_url()).await?);
        }
        let replayed = dlq::replay_entry(&ingestor, &adapters, ledger.as_deref(), e).await?;
        match &replayed {
            dlq::Replayed::Accepted(_) => accepted += 1,
            dlq::Replayed::Duplicate(_) => duplicates += 1,
            dlq::Replayed::Rejected(_) => rejected += 1,
            dlq::Replayed::Left(_) => left += 1,
        }
        if !matches!(replayed, dlq::Replayed::Left(_)) {
            marks.push((e.id.clone(), replayed.outcome().to_string()));
        }
        println!("{}: {}", e.id, replayed.message());
    }
    for (id, outcome) in &marks {
        state
            .audit(
                "cli",
                "dlq_replayed",
                id,
                serde_json::json!({"outcome": outcome}),
            )
            .await?;
    }
    state.mark_replayed(marks).await?;
    println!("replayed: {accepted} accepted, {duplicates} duplicate, {rejected} rejected again, {left} left in the DLQ");
    // Anything not accepted is the operator's to look at: a non-zero exit says so.
    Ok(rejected == 0 && left == 0)
}
