//! `shenguan dlq list|show|replay`: the dead-letter queue for the operator.

use std::io::Write as _;

use crate::app::*;
use crate::bus::{self, Topics};
use crate::config::Settings;
use crate::dlq::{self, Status};
use crate::ingest::Ingestor;

/// Which entries `dlq list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Only(Status),
    All,
}

impl std::str::FromStr for StatusFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(StatusFilter::Only(Status::Open)),
            "replayed" => Ok(StatusFilter::Only(Status::Replayed)),
            "superseded" => Ok(StatusFilter::Only(Status::Superseded)),
            "all" => Ok(StatusFilter::All),
            other => Err(format!(
                "unknown status '{other}': use open, replayed, superseded or all"
            )),
        }
    }
}

/// `shenguan dlq list`: the open entries by default.
pub async fn dlq_list(
    settings: &Settings,
    adapter: Option<&str>,
    status: StatusFilter,
    json: bool,
) -> anyhow::Result<()> {
    let state = open_state(settings).await?;
    let bus = bus::open(&settings.bus.url, &settings.data_dir, &settings.bus.kafka)?;
    let topics = Topics::new(settings.bus.topic_prefix.clone());
    let mut entries = dlq::entries_with_status(bus.as_ref(), &topics, state.as_ref()).await?;
    let counts = |status: Status, entries: &[dlq::Entry]| {
        entries.iter().filter(|e| e.status == status).count()
    };
    let (open, replayed, superseded) = (
        counts(Status::Open, &entries),
        counts(Status::Replayed, &entries),
        counts(Status::Superseded, &entries),
    );
    if let Some(a) = adapter {
        entries.retain(|e| e.adapter == a);
    }
    if let StatusFilter::Only(s) = status {
        entries.retain(|e| e.status == s);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        print!("{}", dlq::table(&entries));
        eprintln!(
            "in the DLQ: {open} open, {replayed} replayed, {superseded} superseded \
             (--status open|replayed|superseded|all)"
        );
    }
    Ok(())
}

/// `shenguan dlq show ID [--original]`: one entry, masked; with `--original` its original
/// bytes, unmasked, to stdout — for an operator of the gateway only, and written to the audit
/// log with the actor.
pub async fn dlq_show(settings: &Settings, id: &str, original: bool) -> anyhow::Result<()> {
    let state = open_state(settings).await?;
    let bus = bus::open(&settings.bus.url, &settings.data_dir, &settings.bus.kafka)?;
    let topics = Topics::new(settings.bus.topic_prefix.clone());
    let entries = dlq::entries_with_status(bus.as_ref(), &topics, state.as_ref()).await?;
    let entry = entries.iter().find(|e| e.id == id).ok_or_else(|| {
        anyhow::anyhow!("no DLQ entry with id {id} (see `shenguan dlq list --status all`)")
    })?;
    if !original {
        print!("{}", dlq::details(entry));
        return Ok(());
    }
    // Audited before the bytes leave: a read that is not in the log does not happen.
    dlq::audit_original_read(state.as_ref(), "cli", entry).await?;
    let mut out = std::io::stdout().lock();
    out.write_all(&entry.original)?;
    out.flush()?;
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
    let defs = load_all(settings)?;
    let (schemas, adapters) = (defs.schemas.clone(), defs.adapters);
    let (state, bus, topics) = open_io(settings).await?;
    let entries = dlq::entries_with_status(bus.as_ref(), &topics, state.as_ref()).await?;
    // A replay is checked like a first ingest, required fields included.
    let ingestor = Ingestor::new(schemas, bus.clone(), state.clone(), topics, usize::MAX)
        .with_policy(defs.policies.get(&defs.policy).cloned());
    for id in ids {
        let Some(e) = entries.iter().find(|e| &e.id == id) else {
            anyhow::bail!("no DLQ entry with id {id}");
        };
        match e.status {
            Status::Open => {}
            Status::Replayed => println!("{id}: already replayed; nothing to do"),
            Status::Superseded => println!(
                "{id}: superseded by {} (its replay failed again); replay that one",
                e.replaced_by.join(", ")
            ),
        }
    }
    // Only open entries: a replayed one is done, a superseded one lives on in its successor.
    let selected: Vec<&dlq::Entry> = entries
        .iter()
        .filter(|e| e.status == Status::Open)
        .filter(|e| ids.is_empty() || ids.contains(&e.id))
        .filter(|e| adapter.is_none_or(|a| e.adapter == a))
        .collect();
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
