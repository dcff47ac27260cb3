//! The claim ledger: for every pushed record and every department it was routed to, where it
//! stands — pushed → delivered → claimed or returned → feedback → closed — with an append-only
//! history of who did what, when and how.
//!
//! The ledger is a projection of the bus topics: every change of its state is an event on a
//! topic — records on `approval/supervision/notice`; claims, returns, forwards, routing,
//! deliveries and retention on `claim`; feedback, replies and deemed agreements on `feedback`;
//! alert levels on `alert` — and [`machine::apply`] is the one pure function that applies an
//! event to what the ledger holds about its record. [`fold`] orders a record's events by
//! [`event::EventOrd`] so any interleaving of the topics gives the same ledger, and keeps an
//! event about a record not seen yet until the record arrives. [`port`] is the narrow storage
//! port with the one generic [`port::apply_batch`] the SQLite and PostgreSQL stores run inside
//! a transaction that also advances the consumer positions.

pub mod checks;
pub mod event;
pub mod fold;
pub mod levels;
pub mod machine;
pub mod port;
pub mod report;

pub use event::{
    decode, ClaimAction, ClaimEvent, Decoded, Event, EventOrd, FeedbackEvent, FeedbackType,
    RecordEvent,
};
pub use machine::apply;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::deadline::{Calendar, Policies, Policy};
use crate::route::Catalog;
use crate::schema::RecordKind;

/// Where a (record, department) entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    Pushed,
    Delivered,
    Claimed,
    Returned,
    Feedback,
    Closed,
    /// Passed on to another department (转交), which now has its own entry.
    Forwarded,
}

impl EntryState {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryState::Pushed => "pushed",
            EntryState::Delivered => "delivered",
            EntryState::Claimed => "claimed",
            EntryState::Returned => "returned",
            EntryState::Feedback => "feedback",
            EntryState::Closed => "closed",
            EntryState::Forwarded => "forwarded",
        }
    }

    pub fn parse(s: &str) -> Option<EntryState> {
        [
            EntryState::Pushed,
            EntryState::Delivered,
            EntryState::Claimed,
            EntryState::Returned,
            EntryState::Feedback,
            EntryState::Closed,
            EntryState::Forwarded,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    /// Still waiting for the department to claim it.
    pub fn is_unclaimed(self) -> bool {
        Self::UNCLAIMED.contains(&self)
    }

    /// Every state.
    pub const ALL: [EntryState; 7] = [
        EntryState::Pushed,
        EntryState::Delivered,
        EntryState::Claimed,
        EntryState::Returned,
        EntryState::Feedback,
        EntryState::Closed,
        EntryState::Forwarded,
    ];
    /// Waiting for the department to claim (or reply, or confirm attendance).
    pub const UNCLAIMED: [EntryState; 2] = [EntryState::Pushed, EntryState::Delivered];
    /// Claimed, and the follow-up (if the record asks for one) may be open.
    pub const CLAIMED: [EntryState; 2] = [EntryState::Claimed, EntryState::Feedback];
    /// What the inbox lists as claimed (已认领): claimed, with feedback since, or closed.
    pub const CLAIMED_OR_CLOSED: [EntryState; 3] = [
        EntryState::Claimed,
        EntryState::Feedback,
        EntryState::Closed,
    ];
    /// Something can still happen to the entry.
    pub const OPEN: [EntryState; 4] = [
        EntryState::Pushed,
        EntryState::Delivered,
        EntryState::Claimed,
        EntryState::Feedback,
    ];
}

impl std::str::FromStr for EntryState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EntryState::parse(s).ok_or_else(|| format!("'{s}' is not an entry state"))
    }
}

/// The highest alert raised for an entry; alerts are raised once per level, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertLevel {
    None,
    DueSoon,
    Overdue,
    Escalated,
}

impl AlertLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertLevel::None => "none",
            AlertLevel::DueSoon => "due_soon",
            AlertLevel::Overdue => "overdue",
            AlertLevel::Escalated => "escalated",
        }
    }

    /// A level by name; `None` for a name that is not one.
    pub fn parse(s: &str) -> Option<AlertLevel> {
        match s {
            "none" => Some(AlertLevel::None),
            "due_soon" => Some(AlertLevel::DueSoon),
            "overdue" => Some(AlertLevel::Overdue),
            "escalated" => Some(AlertLevel::Escalated),
            _ => None,
        }
    }

    /// Its rank as stored (0 none … 3 escalated).
    pub fn rank(self) -> i64 {
        self as i64
    }

    /// The level of a stored rank; `None` for a number that is not one.
    pub fn from_rank(rank: i64) -> Option<AlertLevel> {
        match rank {
            0 => Some(AlertLevel::None),
            1 => Some(AlertLevel::DueSoon),
            2 => Some(AlertLevel::Overdue),
            3 => Some(AlertLevel::Escalated),
            _ => None,
        }
    }
}

/// One record as the ledger knows it (its latest version).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordRow {
    pub record_id: String,
    pub kind: RecordKind,
    pub event_id: String,
    pub published_at: DateTime<FixedOffset>,
    pub decided_at: Option<DateTime<FixedOffset>>,
    pub adapter: String,
    pub push_rule: Option<String>,
    pub push_due_at: Option<DateTime<FixedOffset>>,
    pub push_late: bool,
    /// Why the record waits in the unrouted queue, if it does.
    pub unrouted: Option<String>,
    /// For supervision information: the approval record of the licence it concerns, when the
    /// ledger holds it. Not state: the store looks it up when it shows the record, so it does
    /// not depend on which of the two arrived first.
    pub linked_record_id: Option<String>,
    /// The department whose system sent the record (from the catalog's adapter list), if known.
    pub source_department: Option<String>,
    /// Who pushed the record, for the report's push side: the bureau for approvals, the issuing
    /// department for supervision information and notices (`None` when not known).
    pub pusher: Option<String>,
    /// When the record was pushed: its publication, or the offline push it records.
    pub pushed_at: DateTime<FixedOffset>,
    /// Working hours from the event the push rule counts from (the decision, the receipt) to the
    /// push, computed with the calendar when the record arrives; `None` without such an event.
    pub push_hours: Option<f64>,
    /// 1 for the first version; each new version under the same business key adds one.
    pub version: u32,
    /// The canonical record, shared with the event it came from and every copy of the row.
    pub data: Arc<Value>,
    /// What the record is looked up by (from `data`).
    #[serde(skip)]
    pub keys: RecordKeys,
}

/// The licence keys of a record: for an approval its own (许可编号, 许可决定文书号, 统一社会信用代码
/// of the holder), for supervision information the licence it affects; nothing for a notice.
/// Approvals and the supervision about them meet on these keys.
pub type LinkKeys = (Option<String>, Option<String>, Option<String>);

/// The value at a JSON pointer made of member names only (no array indices, no `~` escapes),
/// which is every pointer the ledger reads: [`Value::pointer`] without the copy of each segment.
pub fn at<'a>(data: &'a Value, pointer: &str) -> Option<&'a Value> {
    pointer
        .split('/')
        .skip(1)
        .try_fold(data, |v, name| v.get(name))
}

impl RecordRow {
    /// See [`LinkKeys`].
    pub fn link_keys(&self) -> LinkKeys {
        (
            self.keys.license_no.clone(),
            self.keys.document_no.clone(),
            self.keys.uscc.clone(),
        )
    }
}

/// What a record is looked up by, read from its data once, when its event is decoded (while the
/// data is fresh in the processor's cache), and kept as columns of its row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordKeys {
    /// [`LinkKeys`]: 许可编号, 许可决定文书号, 统一社会信用代码.
    pub license_no: Option<String>,
    pub document_no: Option<String>,
    pub uscc: Option<String>,
    /// What a person searches a record by: 办件编号 or document number, 事项名称 or title, 相对人
    /// name.
    pub case_no: Option<String>,
    pub title: Option<String>,
    pub counterpart: Option<String>,
}

impl RecordKeys {
    /// The keys of a record of `kind` with `data`.
    pub fn of(kind: RecordKind, data: &Value) -> RecordKeys {
        let text = |p: &str| at(data, p).and_then(Value::as_str).map(str::to_string);
        let (license_no, document_no, uscc) = match kind {
            RecordKind::Approval => (
                text("/license/license_no"),
                text("/license/document_no"),
                text("/counterpart/uscc"),
            ),
            RecordKind::Supervision => affected_keys(data),
            _ => (None, None, None),
        };
        RecordKeys {
            license_no,
            document_no,
            uscc,
            case_no: text("/case_no").or_else(|| text("/document_no")),
            title: text("/item/name").or_else(|| text("/title")),
            counterpart: text("/counterpart/name"),
        }
    }
}

/// The keys by which supervision information names the licence it affects: (许可编号,
/// 许可决定文书号, 统一社会信用代码 of the licence holder).
pub fn affected_keys(data: &Value) -> (Option<String>, Option<String>, Option<String>) {
    let text = |p: &str| at(data, p).and_then(Value::as_str).map(str::to_string);
    (
        text("/affected_license/license_no"),
        text("/affected_license/document_no"),
        text("/affected_license/uscc").or_else(|| text("/counterpart/uscc")),
    )
}

/// One (record, department) entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub record_id: String,
    pub department: String,
    pub kind: RecordKind,
    pub state: EntryState,
    pub pushed_at: DateTime<FixedOffset>,
    pub delivered_at: Option<DateTime<FixedOffset>>,
    pub claimed_at: Option<DateTime<FixedOffset>>,
    pub returned_at: Option<DateTime<FixedOffset>>,
    pub feedback_at: Option<DateTime<FixedOffset>>,
    pub closed_at: Option<DateTime<FixedOffset>>,
    pub policy: String,
    pub claim_rule: Option<String>,
    pub claim_due_at: Option<DateTime<FixedOffset>>,
    pub feedback_rule: Option<String>,
    pub feedback_due_at: Option<DateTime<FixedOffset>>,
    pub calendar_version: String,
    /// Why a deadline could not be computed (a year without calendar data), if so.
    pub deadline_problem: Option<String>,
    pub alert_level: AlertLevel,
    pub note: Option<String>,
    /// How the entry ended beyond its state: `replied`, `deemed_agreed`, `attending`,
    /// `signed_off`, `commitment_fulfilled`, `commitment_unfulfilled`, `forwarded`.
    pub outcome: Option<String>,
    /// How the record reached the department when not through the platform: the offline push
    /// channel (书面公函, 案卷移送, 协调会议).
    pub via: Option<String>,
    /// The version of the record the entry was pushed for (1, then one more for each update
    /// delivered after a change of the record).
    pub version: u32,
    /// Working hours from the push to the claim (or first answer), computed with the calendar
    /// when the claim happens; `None` while unclaimed.
    pub claim_hours: Option<f64>,
}

impl Entry {
    /// The obligation the department has open now and its deadline: the claim (or reply, or
    /// attendance confirmation) while unclaimed, then the follow-up the record asks for (a
    /// disposition, a sign-off, a commitment verification, a reply).
    pub fn obligation(&self) -> Option<(&str, DateTime<FixedOffset>)> {
        match self.state {
            EntryState::Pushed | EntryState::Delivered => {
                Some((self.claim_rule.as_deref()?, self.claim_due_at?))
            }
            EntryState::Claimed | EntryState::Feedback => {
                Some((self.feedback_rule.as_deref()?, self.feedback_due_at?))
            }
            _ => None,
        }
    }

    /// The obligation is open and past its deadline at `now`.
    pub fn overdue_at(&self, now: DateTime<FixedOffset>) -> bool {
        self.obligation().is_some_and(|(_, due)| now > due)
    }

    /// Counted in the unclaimed gauge.
    pub fn counts_unclaimed(&self) -> bool {
        self.state.is_unclaimed()
    }

    /// Counted in the overdue gauge: unclaimed, and the tracker raised it overdue.
    pub fn counts_overdue(&self) -> bool {
        self.state.is_unclaimed() && self.alert_level >= AlertLevel::Overdue
    }
}

/// What the deadline tracker reads of an entry whose obligation is open: enough to compute its
/// alert level and word the alert. Both stores answer it from a covering partial index, without
/// touching the entries themselves, so a tick over millions of open items reads only the index
/// range of what is near or past its deadline.
#[derive(Debug, Clone, PartialEq)]
pub struct DueEntry {
    pub record_id: String,
    pub department: String,
    pub kind: RecordKind,
    pub policy: String,
    /// The open obligation's rule (`claim_rule` while unclaimed, `feedback_rule` after).
    pub rule: String,
    pub due_at: DateTime<FixedOffset>,
    pub pushed_at: DateTime<FixedOffset>,
    pub calendar_version: String,
    pub alert_level: AlertLevel,
}

/// What kind of flow an entry belongs to, for listings and the report.
pub fn flow_of(entry: &Entry) -> &'static str {
    match (entry.claim_rule.as_deref(), entry.feedback_rule.as_deref()) {
        (Some(rules::REPLY_INQUIRY), _) => "inquiry",
        (Some(rules::CONFIRM_INSPECTION), _) => "inspection",
        (Some(rules::CONFIRM_ATTENDANCE), _) => "attendance",
        (Some(rules::CLAIM_DECISION), _) => "decision",
        (Some(rules::CLAIM_NOTICE), _) => "notice",
        (_, Some(rules::VERIFY_COMMITMENT)) => "commitment",
        _ => "claim",
    }
}

/// Every flow [`flow_of`] names, in the report's order.
pub const FLOWS: [&str; 7] = [
    "claim",
    "commitment",
    "decision",
    "notice",
    "attendance",
    "inquiry",
    "inspection",
];

/// Rule names the ledger sets on entries besides the profile's claim rules.
pub mod rules {
    pub use crate::deadline::rule_names::{
        CLAIM_DECISION, CLAIM_NOTICE, DISPOSITION_FEEDBACK, FORWARD_NOTICE, INSPECTION_NOTICE,
        INSPECTION_SIGNOFF, MEETING_MATERIALS, REPLY_INQUIRY, VERIFY_COMMITMENT,
    };
    /// A department confirms who attends a joint site inspection, by the time it starts.
    pub const CONFIRM_INSPECTION: &str = "confirm_inspection";
    /// A department confirms who attends a meeting or training it is invited to, by the time it
    /// starts (垣曲 附件 三（一）, 济宁 第三十一条（二）, 石嘴山 四（二）, 安康 28).
    pub const CONFIRM_ATTENDANCE: &str = "confirm_attendance";
}

/// One line of the append-only history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryRow {
    pub record_id: String,
    pub department: Option<String>,
    pub action: String,
    pub actor: Option<String>,
    pub channel: Option<String>,
    pub at: DateTime<FixedOffset>,
    pub event_id: String,
    pub detail: Value,
}

/// An alert on `shenguan.alert.v1` (its data). The levels the tracker raises on an entry
/// (`due_soon`, `overdue`, `escalated`) are ledger events; the others (`closed`, `late_push`,
/// `deemed_agreed`) are notifications the ledger derives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The CloudEvent id (not part of the data).
    #[serde(skip)]
    pub id: String,
    pub record_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    pub kind: RecordKind,
    pub level: String,
    pub rule: String,
    #[serde(default)]
    pub policy: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "event::rfc3339::option"
    )]
    pub event_at: Option<DateTime<FixedOffset>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "event::rfc3339::option"
    )]
    pub due_at: Option<DateTime<FixedOffset>>,
    #[serde(default)]
    pub calendar_version: String,
    #[serde(with = "event::rfc3339")]
    pub at: DateTime<FixedOffset>,
    #[serde(default)]
    pub message: String,
}

impl Alert {
    /// The alert's CloudEvent data (alert.v1).
    pub fn data(&self) -> Value {
        serde_json::to_value(self).expect("an alert serialises")
    }
}

/// The id of an alert: one per record, department, rule and level, so it is emitted once.
pub fn alert_id(record_id: &str, department: Option<&str>, rule: &str, level: &str) -> String {
    let ns = uuid::Uuid::from_u128(0x7368_656e_6775_5a6e_8000_5347_4157_0002);
    uuid::Uuid::new_v5(
        &ns,
        format!("{record_id}\n{}\n{rule}\n{level}", department.unwrap_or("")).as_bytes(),
    )
    .to_string()
}

/// A time as people read it: RFC 3339 to the second.
pub fn rfc3339(t: DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// The time an event happened, as events carry it: RFC 3339 to the millisecond, so the events
/// of one record sort as they happened (see [`event::EventOrd`]).
pub fn event_time(t: DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

/// What applying an event changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub record: Option<RecordRow>,
    pub entries: Vec<Entry>,
    pub history: Vec<HistoryRow>,
    pub alerts: Vec<Alert>,
    /// Seconds from push to claim, per claimed entry (for the claim latency histogram).
    pub claimed: Vec<(String, RecordKind, f64)>,
    /// Deadline breaches detected (department, kind, rule).
    pub breaches: Vec<(String, RecordKind, String)>,
}

/// What the state machine needs besides the ledger's own state.
pub struct Context<'a> {
    pub catalog: &'a Catalog,
    pub calendar: &'a Calendar,
    pub policies: &'a Policies,
    /// The policy profile in force (configuration, else the catalog's).
    pub policy: &'a str,
}

impl<'a> Context<'a> {
    /// The profile in force with a record's per-item overrides: the profile itself, not a copy,
    /// when the item has none (nearly every record).
    pub fn policy(&self, overrides: &BTreeMap<String, u32>) -> Option<Cow<'a, Policy>> {
        let base = self.policies.get(self.policy)?;
        if overrides.is_empty() {
            return Some(Cow::Borrowed(base));
        }
        Some(Cow::Owned(
            base.with_overrides(overrides)
                .unwrap_or_else(|_| base.clone()),
        ))
    }
}
