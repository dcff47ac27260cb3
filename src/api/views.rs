//! What the API answers with: the ledger's records, entries and history as JSON, typed so the
//! OpenAPI document ([`super::openapi`]) describes exactly what the handlers serialize.

use chrono::{DateTime, FixedOffset};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::ledger::{rfc3339, Entry, HistoryRow, RecordRow};

/// A record as the ledger holds it (the canonical record is `data`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordView {
    /// The record id (a UUID derived from the adapter and the business key).
    pub id: String,
    /// `approval`, `supervision` or `notice`.
    pub kind: String,
    /// When the record was published on the bus (RFC 3339, +08:00).
    pub published_at: String,
    /// When the business decision was taken, if the record says.
    pub decided_at: Option<String>,
    /// The rule the push deadline came from.
    pub push_rule: Option<String>,
    pub push_due_at: Option<String>,
    /// Whether the record reached the bus after its push deadline.
    pub push_late: bool,
    /// Why the record waits in the unrouted queue, if it does.
    pub unrouted: Option<String>,
    /// For supervision information: the approval of the licence it concerns, when known.
    pub linked_record_id: Option<String>,
    /// The department whose system sent the record, if known.
    pub source_department: Option<String>,
    /// The canonical record (`schemas/approval.v1.schema.json`, `supervision.v1`, `notice.v1`).
    #[schema(value_type = Object)]
    pub data: Value,
}

impl From<&RecordRow> for RecordView {
    fn from(r: &RecordRow) -> Self {
        RecordView {
            id: r.record_id.clone(),
            kind: r.kind.as_str().to_string(),
            published_at: rfc3339(r.published_at),
            decided_at: r.decided_at.map(rfc3339),
            push_rule: r.push_rule.clone(),
            push_due_at: r.push_due_at.map(rfc3339),
            push_late: r.push_late,
            unrouted: r.unrouted.clone(),
            linked_record_id: r.linked_record_id.clone(),
            source_department: r.source_department.clone(),
            data: (*r.data).clone(),
        }
    }
}

/// A department's entry for a record: its state and deadlines.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EntryView {
    pub department: String,
    /// `pushed`, `delivered`, `claimed`, `returned`, `feedback`, `forwarded` or `closed`.
    pub state: String,
    pub pushed_at: String,
    pub delivered_at: Option<String>,
    pub claimed_at: Option<String>,
    pub returned_at: Option<String>,
    pub feedback_at: Option<String>,
    pub closed_at: Option<String>,
    /// The policy profile the deadlines follow (`yuanqu-2022`, `jining-2022`).
    pub policy: String,
    pub claim_rule: Option<String>,
    /// End of the claim deadline (23:59:59 Asia/Shanghai of the last working day).
    pub claim_due_at: Option<String>,
    pub feedback_rule: Option<String>,
    pub feedback_due_at: Option<String>,
    /// Whether the obligation open now is past its deadline.
    pub overdue: bool,
    /// How the entry ended beyond its state (`replied`, `deemed_agreed`, `forwarded` …).
    pub outcome: Option<String>,
    /// The offline channel the record came through, if not the platform.
    pub via: Option<String>,
    pub calendar_version: String,
    /// Why a deadline could not be computed (a year without calendar data), if so.
    pub deadline_problem: Option<String>,
    /// The highest alert raised: `none`, `due_soon`, `overdue`, `escalated`.
    pub alert_level: String,
    pub note: Option<String>,
}

impl EntryView {
    pub fn new(e: &Entry, now: DateTime<FixedOffset>) -> Self {
        EntryView {
            department: e.department.clone(),
            state: e.state.as_str().to_string(),
            pushed_at: rfc3339(e.pushed_at),
            delivered_at: e.delivered_at.map(rfc3339),
            claimed_at: e.claimed_at.map(rfc3339),
            returned_at: e.returned_at.map(rfc3339),
            feedback_at: e.feedback_at.map(rfc3339),
            closed_at: e.closed_at.map(rfc3339),
            policy: e.policy.clone(),
            claim_rule: e.claim_rule.clone(),
            claim_due_at: e.claim_due_at.map(rfc3339),
            feedback_rule: e.feedback_rule.clone(),
            feedback_due_at: e.feedback_due_at.map(rfc3339),
            overdue: e.overdue_at(now),
            outcome: e.outcome.clone(),
            via: e.via.clone(),
            calendar_version: e.calendar_version.clone(),
            deadline_problem: e.deadline_problem.clone(),
            alert_level: e.alert_level.as_str().to_string(),
            note: e.note.clone(),
        }
    }
}

/// A record with the caller's entry for it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordEntry {
    #[serde(flatten)]
    pub record: RecordView,
    pub entry: EntryView,
}

impl RecordEntry {
    pub fn new(r: &RecordRow, e: &Entry, now: DateTime<FixedOffset>) -> Self {
        RecordEntry {
            record: r.into(),
            entry: EntryView::new(e, now),
        }
    }
}

/// A record with the entries of the departments it was routed to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordEntries {
    #[serde(flatten)]
    pub record: RecordView,
    pub entries: Vec<EntryView>,
}

/// One line of a record's append-only history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryView {
    pub at: String,
    /// `published`, `routed`, `pushed`, `delivered`, `claimed`, `returned`, `feedback` …
    pub action: String,
    pub department: Option<String>,
    pub actor: Option<String>,
    /// `rest`, `kafka`, `offline`, `webhook` …
    pub channel: Option<String>,
    pub event_id: String,
    #[schema(value_type = Object)]
    pub detail: Value,
}

impl From<&HistoryRow> for HistoryView {
    fn from(h: &HistoryRow) -> Self {
        HistoryView {
            at: rfc3339(h.at),
            action: h.action.clone(),
            department: h.department.clone(),
            actor: h.actor.clone(),
            channel: h.channel.clone(),
            event_id: h.event_id.clone(),
            detail: h.detail.clone(),
        }
    }
}

/// A record, the entries the caller may see and the history lines that concern the caller.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordHistory {
    #[serde(flatten)]
    pub record: RecordView,
    pub entries: Vec<EntryView>,
    pub history: Vec<HistoryView>,
}
