//! The dead-letter queue: every rejected input is a CloudEvent on `shenguan.dlq.v1` holding the
//! original bytes, the adapter, the stage, a reason code and the errors. `shenguan dlq list`
//! shows them with personal data masked; `shenguan dlq replay` runs them again through the
//! current adapters and schemas, after a fix; `shenguan dlq show ID --original` and
//! `GET /v1/dlq/{id}/original` give an admin the original bytes, audited.
//!
//! Each entry has a status, derived from the replays the state store remembers and the entries
//! on the bus: `open` until it is replayed; `replayed` when a replay was accepted (or found the
//! records already published); `superseded` when a replay failed — the failure is a new entry
//! naming it in `replay_of`, which is the open one now. So an input that keeps failing has one
//! open entry, however often it is replayed.
//!
//! The `charset` of an entry is the one its request declared (or the XML declaration, or UTF-8
//! for a single record the gateway already decoded); an entry without one was sent without a
//! charset, and a replay decodes it with its adapter's charset as it is at the time of the
//! replay — the fix for a GB18030 export sent undeclared is `charset: gb18030` in the adapter.

use std::collections::HashMap;

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

use crate::bus::{Bus, BusError, Topics};
use crate::mask::mask;
use crate::schema::RecordKind;

pub use crate::preview::{preview, record_preview};

/// Where an entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not replayed yet: the operator's to fix and replay.
    Open,
    /// A replay was accepted, or found its records already published.
    Replayed,
    /// A replay failed again; the new entry (naming this one in `replay_of`) replaces it.
    Superseded,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Replayed => "replayed",
            Status::Superseded => "superseded",
        }
    }
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
    /// Where the entry stands (see [`with_status`]).
    pub status: Status,
    /// The entries that replace this one: the failures of its replays.
    pub replaced_by: Vec<String>,
    #[serde(skip)]
    pub original: Vec<u8>,
    /// The charset the request declared; `None` when it declared none (the adapter's applies).
    pub charset: Option<String>,
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
            charset: self.charset.clone().filter(|c| c != "binary"),
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
            status: Status::Open,
            replaced_by: Vec::new(),
            charset: data
                .get("charset")
                .and_then(Value::as_str)
                .map(str::to_string),
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

/// Sets each entry's status and successors from the outcome of each replayed entry's last
/// replay (`accepted`, `duplicate`, `rejected`, as the state store keeps them) and the
/// `replay_of` links on the bus.
pub fn with_status(mut entries: Vec<Entry>, outcomes: &HashMap<String, String>) -> Vec<Entry> {
    let mut successors: HashMap<String, Vec<String>> = HashMap::new();
    for e in &entries {
        if let Some(of) = &e.replay_of {
            successors.entry(of.clone()).or_default().push(e.id.clone());
        }
    }
    for e in &mut entries {
        e.replaced_by = successors.remove(&e.id).unwrap_or_default();
        e.status = match outcomes.get(&e.id).map(String::as_str) {
            Some("accepted" | "duplicate") => Status::Replayed,
            Some(_) => Status::Superseded,
            None if !e.replaced_by.is_empty() => Status::Superseded,
            None => Status::Open,
        };
    }
    entries
}

/// Every DLQ entry with its status, oldest first.
pub async fn entries_with_status(
    bus: &dyn Bus,
    topics: &Topics,
    state: &dyn crate::state::StateStore,
) -> anyhow::Result<Vec<Entry>> {
    let entries = entries(bus, topics).await?;
    let outcomes = state.replay_outcomes().await?;
    Ok(with_status(entries, &outcomes))
}

/// One entry for a person: every field but the original bytes, personal data masked.
pub fn details(e: &Entry) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k:<13} {v}\n"));
    line("id", &e.id);
    line("time", &e.time);
    line("status", e.status.as_str());
    if let Some(of) = &e.replay_of {
        line("replay of", of);
    }
    if !e.replaced_by.is_empty() {
        line("replaced by", &e.replaced_by.join(", "));
    }
    line("adapter", &e.adapter);
    line("stage", &e.stage);
    line("reason", &e.reason);
    if let Some(i) = e.record_index {
        line("record index", &i.to_string());
    }
    line("unit", &e.unit);
    line("content type", &e.content_type);
    line(
        "charset",
        e.charset
            .as_deref()
            .unwrap_or("(none declared: the adapter's charset applies)"),
    );
    line("bytes", &e.original.len().to_string());
    for err in &e.errors {
        let path = err.get("path").and_then(Value::as_str).unwrap_or("");
        let reason = err.get("reason").and_then(Value::as_str).unwrap_or("");
        line("error", &mask(&format!("{path} {reason}")));
    }
    line("preview", &e.preview);
    out
}

/// Renders entries as a table for people.
pub fn table(entries: &[Entry]) -> String {
    let mut out = String::from("ID                                    TIME                           STATUS     ADAPTER              STAGE     REASON               ERROR\n");
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
            "{:<37} {:<30} {:<10} {:<20} {:<9} {:<20} {}{}\n    {}\n",
            e.id,
            e.time,
            e.status.as_str(),
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

/// Writes to the audit log that `actor` read the original bytes of an entry.
pub async fn audit_original_read(
    state: &dyn crate::state::StateStore,
    actor: &str,
    entry: &Entry,
) -> Result<(), crate::state::StateError> {
    state
        .audit(
            actor,
            "dlq_original_read",
            &entry.id,
            serde_json::json!({"adapter": entry.adapter, "bytes": entry.original.len()}),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, replay_of: Option<&str>) -> Entry {
        Entry {
            id: id.into(),
            time: String::new(),
            adapter: "a".into(),
            stage: "map".into(),
            reason: "mapping_failed".into(),
            errors: Vec::new(),
            record_index: Some(0),
            preview: String::new(),
            replay_of: replay_of.map(str::to_string),
            status: Status::Open,
            replaced_by: Vec::new(),
            original: Vec::new(),
            charset: None,
            content_type: "application/json".into(),
            unit: "record".into(),
        }
    }

    #[test]
    fn a_chain_of_failed_replays_leaves_one_open_entry() {
        let entries = vec![
            entry("a", None),
            entry("b", Some("a")),
            entry("c", Some("b")),
            entry("d", None),
            entry("e", None),
        ];
        let outcomes: HashMap<String, String> = [
            ("a", "rejected"),
            ("b", "rejected"),
            ("d", "accepted"),
            ("e", "duplicate"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let got: Vec<(String, Status, Vec<String>)> = with_status(entries, &outcomes)
            .into_iter()
            .map(|e| (e.id, e.status, e.replaced_by))
            .collect();
        assert_eq!(
            got,
            [
                ("a".into(), Status::Superseded, vec!["b".to_string()]),
                ("b".into(), Status::Superseded, vec!["c".to_string()]),
                ("c".into(), Status::Open, vec![]),
                ("d".into(), Status::Replayed, vec![]),
                ("e".into(), Status::Replayed, vec![]),
            ]
        );
        // A failure on the bus whose outcome was not recorded (the command stopped in between)
        // still supersedes the entry it replayed.
        let got = with_status(
            vec![entry("x", None), entry("y", Some("x"))],
            &HashMap::new(),
        );
        assert_eq!(got[0].status, Status::Superseded);
        assert_eq!(got[1].status, Status::Open);
    }
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
                "rejected again: {} (now DLQ entry {})",
                r.rejected[0]
                    .errors
                    .iter()
                    .map(|x| format!("{} {}", x.path, x.reason))
                    .collect::<Vec<_>>()
                    .join("; "),
                r.rejected
                    .iter()
                    .map(|x| x.dlq_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
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
            Err(crate::ingest::IngestError::Body(b, dlq_id)) => Replayed::Rejected(format!(
                "rejected again: {} (now DLQ entry {dlq_id})",
                b.rejection.errors[0].reason
            )),
            Err(e) => return Err(e.into()),
        },
    )
}
