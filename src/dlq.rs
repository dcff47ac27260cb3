//! The dead-letter queue: every rejected input is a CloudEvent on `shenguan.dlq.v1` holding the
//! original bytes, the adapter, the stage, a reason code and the errors. `shenguan dlq list`
//! shows them with personal data masked; `shenguan dlq replay` runs them again through the
//! current adapters and schemas, after a fix.

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

use crate::bus::{Bus, BusError, Topics};
use crate::mask::mask;
use crate::schema::RecordKind;

/// Characters of the original input a preview shows.
const PREVIEW_CHARS: usize = 240;

/// A masked, shortened text preview of original bytes.
pub fn preview(original: &[u8], charset: &str) -> String {
    let encoding =
        encoding_rs::Encoding::for_label(charset.as_bytes()).unwrap_or(encoding_rs::UTF_8);
    let (text, _, _) = encoding.decode(original);
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(PREVIEW_CHARS)
        .collect();
    let mut out = mask(&flat);
    if text.chars().count() > PREVIEW_CHARS {
        out.push('…');
    }
    out
}

/// One DLQ entry as read back from the bus.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub id: String,
    pub time: String,
    pub adapter: String,
    pub stage: String,
    pub reason: String,
    pub errors: Vec<Value>,
    pub record_index: Option<u64>,
    pub preview: String,
    pub replay_of: Option<String>,
    #[serde(skip)]
    pub original: Vec<u8>,
    #[serde(skip)]
    pub charset: String,
    pub content_type: String,
    /// `body` or `record`.
    pub unit: String,
}

impl Entry {
    /// The stored bytes as an ingest payload, in their own format and charset.
    pub fn payload(&self) -> crate::ingest::Payload {
        crate::ingest::Payload {
            body: self.original.clone(),
            format: crate::adapter::format::Format::from_media_type(&self.content_type),
            charset: (self.charset != "binary").then(|| self.charset.clone()),
            unit: if self.unit == "record" {
                crate::pipeline::Unit::Record
            } else {
                crate::pipeline::Unit::Body
            },
        }
    }
}

impl Entry {
    fn from_event(event: &Value) -> Option<Entry> {
        let data = event.get("data")?;
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
        let original = base64::engine::general_purpose::STANDARD
            .decode(data.get("original_base64")?.as_str()?)
            .ok()?;
        Some(Entry {
            id: text(event.get("id")),
            time: text(event.get("time")),
            adapter: text(data.get("adapter")),
            stage: text(data.get("stage")),
            reason: text(data.get("reason")),
            errors: data
                .get("errors")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            record_index: data.get("record_index").and_then(Value::as_u64),
            preview: text(data.get("preview")),
            replay_of: data
                .get("replay_of")
                .and_then(Value::as_str)
                .map(str::to_string),
            charset: data
                .get("charset")
                .and_then(Value::as_str)
                .unwrap_or("utf-8")
                .to_string(),
            original,
            content_type: text(data.get("content_type")),
            unit: data
                .get("unit")
                .and_then(Value::as_str)
                .unwrap_or("body")
                .to_string(),
        })
    }
}

/// Every DLQ entry, oldest first.
pub async fn entries(bus: &dyn Bus, topics: &Topics) -> Result<Vec<Entry>, BusError> {
    let deliveries = bus.read_all(&topics.name(RecordKind::Dlq)).await?;
    Ok(deliveries
        .iter()
        .filter_map(|d| serde_json::from_slice::<Value>(&d.payload).ok())
        .filter_map(|e| Entry::from_event(&e))
        .collect())
}

/// Renders entries as a table for people.
pub fn table(entries: &[Entry]) -> String {
    let mut out = String::from("ID                                    TIME                           ADAPTER              STAGE     REASON               ERROR\n");
    for e in entries {
        let first = e
            .errors
            .first()
            .map(|err| {
                let path = err.get("path").and_then(Value::as_str).unwrap_or("");
                let reason = err.get("reason").and_then(Value::as_str).unwrap_or("");
                format!("{path} {reason}")
            })
            .unwrap_or_default();
        let more = if e.errors.len() > 1 {
            format!(" (+{} more)", e.errors.len() - 1)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{:<37} {:<30} {:<20} {:<9} {:<20} {}{}\n    {}\n",
            e.id,
            e.time,
            e.adapter,
            e.stage,
            e.reason,
            mask(&first),
            more,
            e.preview
        ));
    }
    out.push_str(&format!("{} entries\n", entries.len()));
    out
}

/// The ids of entries that were already replayed (a later entry or a replay record names them).
pub fn replayed_ids(entries: &[Entry]) -> std::collections::HashSet<String> {
    entries.iter().filter_map(|e| e.replay_of.clone()).collect()
}

/// What replaying one DLQ entry did, with the line an operator reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    Accepted(String),
    Duplicate(String),
    Rejected(String),
    /// Not replayed: its adapter is not loaded. The entry stays in the DLQ, unmarked.
    Left(String),
}

impl Replayed {
    /// `accepted`, `duplicate`, `rejected` or `left`: what is stored with the entry.
    pub fn outcome(&self) -> &'static str {
        match self {
            Replayed::Accepted(_) => "accepted",
            Replayed::Duplicate(_) => "duplicate",
            Replayed::Rejected(_) => "rejected",
            Replayed::Left(_) => "left",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Replayed::Accepted(m)
            | Replayed::Duplicate(m)
            | Replayed::Rejected(m)
            | Replayed::Left(m) => m,
        }
    }
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::store::LedgerError),
    #[error(transparent)]
    Ingest(#[from] crate::ingest::IngestError),
    #[error("DLQ entry {0} is a dead webhook delivery: replaying it needs the ledger")]
    NoLedger(String),
}

/// Replays one DLQ entry through the current adapters and schemas (`shenguan dlq replay` and the
/// console): a dead webhook delivery is scheduled again (a notification goes back on the alert
/// topic), anything else is ingested again with `replay_of` naming the entry. Marking the entry
/// replayed and auditing it is the caller's.
pub async fn replay_entry(
    ingestor: &crate::ingest::Ingestor,
    adapters: &crate::adapter::AdapterSet,
    ledger: Option<&dyn crate::ledger::store::LedgerStore>,
    e: &Entry,
) -> Result<Replayed, ReplayError> {
    if e.stage == "deliver" {
        // The original is the CloudEvent the webhook refused: send it again.
        let subject = serde_json::from_slice::<Value>(&e.original)
            .ok()
            .and_then(|v| v["subject"].as_str().map(str::to_string))
            .unwrap_or_default();
        let accepted = if e.adapter == "notification" {
            // A notification goes back on the alert topic; the notifier sends it again.
            ingestor
                .bus
                .publish(vec![crate::bus::Message {
                    topic: ingestor.topics.name(RecordKind::Alert),
                    key: subject.clone(),
                    payload: e.original.clone(),
                }])
                .await?;
            true
        } else {
            let store = ledger.ok_or_else(|| ReplayError::NoLedger(e.id.clone()))?;
            store
                .delivery_reset(subject.clone(), crate::adapter::convert::now_shanghai())
                .await?
                > 0
        };
        return Ok(if accepted {
            Replayed::Accepted(format!("delivery of {subject} scheduled again"))
        } else {
            Replayed::Duplicate(format!(
                "no dead delivery of {subject} left (already delivered or rescheduled)"
            ))
        });
    }
    let Some(a) = adapters.get(&e.adapter) else {
        return Ok(Replayed::Left(format!(
            "adapter '{}' is not loaded; left in the DLQ",
            e.adapter
        )));
    };
    Ok(
        match ingestor.ingest(a, e.payload(), Some(e.id.clone())).await {
            Ok(r) if !r.rejected.is_empty() => Replayed::Rejected(format!(
                "rejected again: {}",
                r.rejected[0]
                    .errors
                    .iter()
                    .map(|x| format!("{} {}", x.path, x.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            Ok(r) if !r.duplicates.is_empty() && r.accepted.is_empty() => {
                Replayed::Duplicate("duplicate (already published)".to_string())
            }
            Ok(r) => Replayed::Accepted(format!(
                "accepted as {}",
                r.accepted
                    .iter()
                    .map(|x| x.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Err(crate::ingest::IngestError::Body(b, _)) => {
                Replayed::Rejected(format!("rejected again: {}", b.rejection.errors[0].reason))
            }
            Err(e) => return Err(e.into()),
        },
    )
}
