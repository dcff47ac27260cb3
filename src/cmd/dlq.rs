//! `shenguan dlq list|replay`: the dead-letter queue for the operator.

use crate::app::*;
use crate::bus::{self, Topics};
use crate::config::Settings;
use crate::dlq;
use crate::ingest::{IngestError, Ingestor};

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
    let defs = load_all(settings)?;
    let (schemas, adapters) = (defs.schemas.clone(), defs.adapters);
    let (state, bus, topics) = open_io(settings).await?;
    let entries = dlq::entries(bus.as_ref(), &topics).await?;
    let done = state.replayed().await?;
    // A replay is checked like a first ingest, required fields included.
    let ingestor = Ingestor::new(schemas, bus.clone(), state.clone(), topics, usize::MAX)
        .with_policy(defs.policies.get(&defs.policy).cloned());
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
        if e.stage == "deliver" {
            // The original is the CloudEvent the webhook refused: send it again.
            let subject = serde_json::from_slice::<serde_json::Value>(&e.original)
                .ok()
                .and_then(|v| v["subject"].as_str().map(str::to_string))
                .unwrap_or_default();
            let outcome = if e.adapter == "notification" {
                // A notification goes back on the alert topic; the notifier sends it again.
                bus.publish(vec![crate::bus::Message {
                    topic: ingestor.topics.name(crate::schema::RecordKind::Alert),
                    key: subject.clone(),
                    payload: e.original.clone(),
                }])
                .await?;
                "accepted"
            } else {
                if ledger.is_none() {
                    ledger = Some(crate::ledger::store::open(&settings.ledger_url()).await?);
                }
                let store = ledger.as_ref().expect("opened");
                let n = store
                    .delivery_reset(subject.clone(), crate::adapter::convert::now_shanghai())
                    .await?;
                if n > 0 {
                    "accepted"
                } else {
                    "duplicate"
                }
            };
            if outcome == "accepted" {
                accepted += 1;
                println!("{}: delivery of {subject} scheduled again", e.id);
            } else {
                duplicates += 1;
                println!(
                    "{}: no dead delivery of {subject} left (already delivered or rescheduled)",
                    e.id
                );
            }
            marks.push((e.id.clone(), outcome.to_string()));
            continue;
        }
        let Some(a) = adapters.get(&e.adapter) else {
            println!(
                "{}: adapter '{}' is not loaded; left in the DLQ",
                e.id, e.adapter
            );
            left += 1;
            continue;
        };
        let outcome = match ingestor.ingest(a, e.payload(), Some(e.id.clone())).await {
            Ok(r) if !r.rejected.is_empty() => {
                rejected += 1;
                format!(
                    "rejected again: {}",
                    r.rejected[0]
                        .errors
                        .iter()
                        .map(|x| format!("{} {}", x.path, x.reason))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
            Ok(r) if !r.duplicates.is_empty() && r.accepted.is_empty() => {
                duplicates += 1;
                "duplicate (already published)".to_string()
            }
            Ok(r) => {
                accepted += 1;
                format!(
                    "accepted as {}",
                    r.accepted
                        .iter()
                        .map(|x| x.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            Err(IngestError::Body(b, _)) => {
                rejected += 1;
                format!("rejected again: {}", b.rejection.errors[0].reason)
            }
            Err(e) => return Err(e.into()),
        };
        let kind = if outcome.starts_with("rejected") {
            "rejected"
        } else if outcome.starts_with("duplicate") {
            "duplicate"
        } else {
            "accepted"
        };
        marks.push((e.id.clone(), kind.to_string()));
        println!("{}: {outcome}", e.id);
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
