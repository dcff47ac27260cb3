//! The claim ledger: for every pushed record and every department it was routed to, where it
//! stands — pushed → delivered → claimed or returned → feedback → closed — with an append-only
//! history of who did what, when and how.
//!
//! The ledger is a projection of the bus topics: every change is an event on a topic (records
//! on `approval/supervision/notice`, claims, returns, routing and deliveries on `claim`, feedback
//! on `feedback`). [`apply`] is the pure state machine: given what the ledger holds about one
//! record and one event, it returns the changes. The store runs it inside one transaction that
//! also advances the consumer position, so a redelivered event changes nothing and a rebuild
//! from the topics gives the same ledger.

pub mod report;

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::deadline::{Calendar, Policies, Policy, Rule};
use crate::route::{Catalog, Route};
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
        matches!(self, EntryState::Pushed | EntryState::Delivered)
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

    pub fn parse(s: &str) -> AlertLevel {
        match s {
            "due_soon" => AlertLevel::DueSoon,
            "overdue" => AlertLevel::Overdue,
            "escalated" => AlertLevel::Escalated,
            _ => AlertLevel::None,
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
    /// For supervision information: the approval record of the licence it concerns, when known.
    pub linked_record_id: Option<String>,
    /// The department whose system sent the record (from the catalog's adapter list), if known.
    pub source_department: Option<String>,
    pub data: Value,
}

impl RecordRow {
    /// The keys an approval record can be found by: (许可编号, 许可决定文书号, 统一社会信用代码).
    pub fn link_keys(&self) -> (Option<String>, Option<String>, Option<String>) {
        if self.kind != RecordKind::Approval {
            return (None, None, None);
        }
        let text = |p: &str| {
            self.data
                .pointer(p)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        (
            text("/license/license_no"),
            text("/license/document_no"),
            text("/counterpart/uscc"),
        )
    }
}

/// The keys by which supervision information names the licence it affects: (许可编号,
/// 许可决定文书号, 统一社会信用代码 of the licence holder).
pub fn affected_keys(data: &Value) -> (Option<String>, Option<String>, Option<String>) {
    let text = |p: &str| data.pointer(p).and_then(Value::as_str).map(str::to_string);
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

/// The tracker's scan, in both stores' SQL: open claims, then open follow-ups (reply,
/// confirmation, sign-off, verification, disposition), due before the first parameter and not
/// yet escalated. Each half reads only the columns of its covering index
/// (`entries_claim_due`, `entries_feedback_due`).
pub const DUE_SCAN: &str = "
    SELECT record_id, department, kind, policy, claim_rule, claim_due_at, pushed_at, calendar_version, alert_level
    FROM ledger_entries
    WHERE state IN ('pushed', 'delivered') AND alert_level < 3 AND claim_due_at < $1 AND claim_rule IS NOT NULL
    UNION ALL
    SELECT record_id, department, kind, policy, feedback_rule, feedback_due_at, pushed_at, calendar_version, alert_level
    FROM ledger_entries
    WHERE state IN ('claimed', 'feedback') AND alert_level < 3 AND feedback_due_at < $1 AND feedback_rule IS NOT NULL";

/// The covering partial indexes [`DUE_SCAN`] reads, as `(name, key, included columns,
/// predicate)`; SQLite, which has no `INCLUDE`, appends the included columns to the key.
pub const DUE_INDEXES: [(&str, &str, &str, &str); 2] = [
    (
        "entries_claim_due",
        "claim_due_at",
        "record_id, department, kind, policy, claim_rule, pushed_at, calendar_version, alert_level, state",
        "state IN ('pushed', 'delivered') AND alert_level < 3",
    ),
    (
        "entries_feedback_due",
        "feedback_due_at",
        "record_id, department, kind, policy, feedback_rule, pushed_at, calendar_version, alert_level, state",
        "state IN ('claimed', 'feedback') AND alert_level < 3",
    ),
];

/// The narrower partial indexes [`DUE_INDEXES`] replace; a store drops them when it opens.
pub const SUPERSEDED_INDEXES: [&str; 2] = ["entries_awaiting_alert", "entries_awaiting_follow_up"];

/// What kind of flow an entry belongs to, for listings and the report.
pub fn flow_of(entry: &Entry) -> &'static str {
    match (entry.claim_rule.as_deref(), entry.feedback_rule.as_deref()) {
        (Some(rules::REPLY_INQUIRY), _) => "inquiry",
        (Some(rules::CONFIRM_INSPECTION), _) => "inspection",
        (_, Some(rules::VERIFY_COMMITMENT)) => "commitment",
        _ => "claim",
    }
}

/// Rule names the ledger sets on entries besides the profile's claim rules.
pub mod rules {
    pub use crate::deadline::rule_names::{
        DISPOSITION_FEEDBACK, INSPECTION_NOTICE, INSPECTION_SIGNOFF, REPLY_INQUIRY,
        VERIFY_COMMITMENT,
    };
    /// A department confirms who attends a joint site inspection, by the time it starts.
    pub const CONFIRM_INSPECTION: &str = "confirm_inspection";
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

/// An alert to publish on `shenguan.alert.v1`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub id: String,
    pub record_id: String,
    pub department: Option<String>,
    pub kind: RecordKind,
    pub level: String,
    pub rule: String,
    pub policy: String,
    pub event_at: Option<DateTime<FixedOffset>>,
    pub due_at: Option<DateTime<FixedOffset>>,
    pub calendar_version: String,
    pub at: DateTime<FixedOffset>,
    pub message: String,
}

impl Alert {
    /// The alert's CloudEvent data (alert.v1).
    pub fn data(&self) -> Value {
        let mut d = json!({
            "record_id": self.record_id,
            "kind": self.kind.as_str(),
            "level": self.level,
            "rule": self.rule,
            "policy": self.policy,
            "calendar_version": self.calendar_version,
            "at": rfc3339(self.at),
            "message": self.message,
        });
        if let Some(dep) = &self.department {
            d["department"] = json!(dep);
        }
        if let Some(t) = self.event_at {
            d["event_at"] = json!(rfc3339(t));
        }
        if let Some(t) = self.due_at {
            d["due_at"] = json!(rfc3339(t));
        }
        d
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

pub fn rfc3339(t: DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// What the ledger holds about one record before an event is applied.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub record: Option<RecordRow>,
    pub entries: Vec<Entry>,
    /// The event was applied before.
    pub seen: bool,
    /// For a supervision record: the approval record its affected licence was found in.
    pub linked_approval: Option<String>,
}

/// What applying an event changes.
#[derive(Debug, Clone, Default)]
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

/// A ledger event decoded from a bus message.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Record {
        kind: RecordKind,
        event_id: String,
        record_id: String,
        time: DateTime<FixedOffset>,
        data: Value,
    },
    Claim(ClaimEvent),
    Feedback(FeedbackEvent),
}

impl Event {
    /// The licence keys a supervision record names (to link it to its approval); `None` for
    /// anything else.
    pub fn affected(&self) -> Option<(Option<String>, Option<String>, Option<String>)> {
        match self {
            Event::Record {
                kind: RecordKind::Supervision,
                data,
                ..
            } => Some(affected_keys(data)),
            _ => None,
        }
    }

    pub fn record_id(&self) -> &str {
        match self {
            Event::Record { record_id, .. } => record_id,
            Event::Claim(c) => &c.record_id,
            Event::Feedback(f) => &f.record_id,
        }
    }

    pub fn event_id(&self) -> &str {
        match self {
            Event::Record { event_id, .. } => event_id,
            Event::Claim(c) => &c.event_id,
            Event::Feedback(f) => &f.event_id,
        }
    }
}

/// `shenguan.claim.v1`: claim, return, route, deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimEvent {
    pub event_id: String,
    pub record_id: String,
    pub department: String,
    pub action: String,
    pub reason: Option<String>,
    pub actor: Option<String>,
    pub at: DateTime<FixedOffset>,
    pub channel: Option<String>,
    /// For `forward`: the receiving department.
    pub to: Option<String>,
    /// For a claim entered after an offline acknowledgement: its reference.
    pub document_ref: Option<String>,
}

/// `shenguan.feedback.v1`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackEvent {
    pub event_id: String,
    pub record_id: String,
    pub department: String,
    pub feedback_type: String,
    pub data: Value,
    pub at: DateTime<FixedOffset>,
}

/// Decodes a CloudEvent from a ledger topic.
pub fn decode(kind: RecordKind, payload: &[u8]) -> Result<Event, String> {
    let event: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let time = |v: &Value, k: &str| -> Result<DateTime<FixedOffset>, String> {
        let s = text(v, k).ok_or_else(|| format!("missing {k}"))?;
        DateTime::parse_from_rfc3339(&s).map_err(|e| format!("{k}: {e}"))
    };
    let event_id = text(&event, "id").ok_or("missing id")?;
    let data = event.get("data").cloned().ok_or("missing data")?;
    let record_id = text(&data, "record_id").ok_or("missing data.record_id")?;
    match kind {
        RecordKind::Approval | RecordKind::Supervision | RecordKind::Notice => Ok(Event::Record {
            kind,
            event_id,
            record_id,
            time: time(&event, "time")?,
            data,
        }),
        RecordKind::Claim => Ok(Event::Claim(ClaimEvent {
            event_id,
            record_id,
            department: text(&data, "department").ok_or("missing department")?,
            action: text(&data, "action").ok_or("missing action")?,
            reason: text(&data, "reason"),
            actor: text(&data, "actor"),
            at: time(&data, "at")?,
            channel: text(&data, "channel"),
            to: text(&data, "to"),
            document_ref: text(&data, "document_ref"),
        })),
        RecordKind::Feedback => Ok(Event::Feedback(FeedbackEvent {
            event_id,
            record_id,
            department: text(&data, "department").ok_or("missing department")?,
            feedback_type: text(&data, "feedback_type").ok_or("missing feedback_type")?,
            at: time(&data, "at")?,
            data,
        })),
        other => Err(format!("{} events are not ledger events", other.as_str())),
    }
}

/// What the state machine needs besides the ledger's own state.
pub struct Context<'a> {
    pub catalog: &'a Catalog,
    pub calendar: &'a Calendar,
    pub policies: &'a Policies,
    /// The policy profile in force (configuration, else the catalog's).
    pub policy: &'a str,
}

impl Context<'_> {
    fn policy(&self, overrides: &BTreeMap<String, u32>) -> Option<Policy> {
        let base = self.policies.get(self.policy)?;
        Some(
            base.with_overrides(overrides)
                .unwrap_or_else(|_| base.clone()),
        )
    }
}

/// The rule counting the push of a record from its decision, and the decision time.
fn push_rule(
    kind: RecordKind,
    data: &Value,
) -> Option<(&'static str, Option<DateTime<FixedOffset>>)> {
    let at = |p: &str| -> Option<DateTime<FixedOffset>> {
        let v = data.pointer(p)?.as_str()?;
        DateTime::parse_from_rfc3339(v)
            .ok()
            .or_else(|| crate::adapter::convert::parse_datetime(v).ok())
    };
    match kind {
        RecordKind::Approval => Some(("push_approval", at("/decided_at"))),
        RecordKind::Supervision => {
            if data["action"] == "告知承诺未履行" {
                Some((
                    "push_commitment_failure",
                    at("/commitment_check/period_end"),
                ))
            } else {
                Some((
                    "push_supervision",
                    at("/decided_at").or_else(|| at("/decision_date")),
                ))
            }
        }
        RecordKind::Notice if data.get("inspection").is_some() => {
            Some((rules::INSPECTION_NOTICE, at("/inspection/scheduled_at")))
        }
        // An inquiry is the sender's own letter, not something forwarded within a period.
        RecordKind::Notice if data.get("inquiry").is_some() => None,
        RecordKind::Notice => Some(("forward_notice", at("/issued_at"))),
        _ => None,
    }
}

/// When an offline push happened (济宁 第二十条、第二十一条(二)), with its channel.
fn offline_push(data: &Value) -> Option<(DateTime<FixedOffset>, String)> {
    let o = data.get("offline_push")?;
    let at = DateTime::parse_from_rfc3339(o.get("pushed_at")?.as_str()?).ok()?;
    Some((at, o.get("channel")?.as_str()?.to_string()))
}

/// The end of a date (23:59:59 Asia/Shanghai), for periods given as a last day.
fn end_of(date: &str) -> Option<DateTime<FixedOffset>> {
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    d.and_hms_opt(23, 59, 59)?
        .and_local_timezone(crate::adapter::convert::shanghai())
        .single()
}

fn claim_rule(kind: RecordKind) -> Option<&'static str> {
    match kind {
        RecordKind::Approval => Some("claim_approval"),
        RecordKind::Supervision => Some("claim_supervision"),
        _ => None,
    }
}

/// Supervision actions the bureau must decide on and feed back.
fn needs_disposition(data: &Value) -> bool {
    matches!(
        data["action"].as_str(),
        Some("撤回许可" | "撤销许可" | "注销许可" | "告知承诺未履行")
    )
}

fn history(
    record_id: &str,
    department: Option<&str>,
    action: &str,
    at: DateTime<FixedOffset>,
    event_id: &str,
    detail: Value,
) -> HistoryRow {
    HistoryRow {
        record_id: record_id.to_string(),
        department: department.map(str::to_string),
        action: action.to_string(),
        actor: None,
        channel: None,
        at,
        event_id: event_id.to_string(),
        detail,
    }
}

/// Applies one event to what the ledger holds about its record. Pure.
pub fn apply(loaded: &Loaded, event: &Event, ctx: &Context) -> Changes {
    if loaded.seen {
        return Changes::default();
    }
    match event {
        Event::Record {
            kind,
            event_id,
            record_id,
            time,
            data,
        } => apply_record(loaded, *kind, event_id, record_id, *time, data, ctx),
        Event::Claim(c) => apply_claim(loaded, c, ctx),
        Event::Feedback(f) => apply_feedback(loaded, f, ctx),
    }
}

fn new_entry(
    record: &RecordRow,
    department: &str,
    at: DateTime<FixedOffset>,
    policy: Option<&Policy>,
    ctx: &Context,
) -> Entry {
    let mut entry = Entry {
        record_id: record.record_id.clone(),
        department: department.to_string(),
        kind: record.kind,
        state: EntryState::Pushed,
        pushed_at: at,
        delivered_at: None,
        claimed_at: None,
        returned_at: None,
        feedback_at: None,
        closed_at: None,
        policy: policy
            .map(|p| p.name.clone())
            .unwrap_or_else(|| ctx.policy.to_string()),
        claim_rule: None,
        claim_due_at: None,
        feedback_rule: None,
        feedback_due_at: None,
        calendar_version: ctx.calendar.version().to_string(),
        deadline_problem: None,
        alert_level: AlertLevel::None,
        note: None,
        outcome: None,
        via: offline_push(&record.data).map(|(_, channel)| channel),
    };
    let Some(policy) = policy else {
        entry.deadline_problem = Some(format!("policy '{}' is not defined", ctx.policy));
        return entry;
    };
    let data = &record.data;
    // (rule, its deadline) for the first step and for the follow-up.
    let mut first: Option<(&str, Result<DateTime<FixedOffset>, String>)> = None;
    let mut then: Option<(&str, Result<DateTime<FixedOffset>, String>)> = None;
    let counted = |rule: &Rule, from| rule.due_at(ctx.calendar, from).map_err(entry_problem);
    if let Some(inquiry) = data.get("inquiry") {
        // The letter's own reply period overrides the profile's.
        if let Some(rule) = policy.rule(rules::REPLY_INQUIRY) {
            let mut rule = rule.clone();
            if let Some(days) = inquiry["reply_within_working_days"].as_u64() {
                rule.within_working_days = days as u32;
            }
            first = Some((rules::REPLY_INQUIRY, counted(&rule, at)));
            then = first.clone();
        }
    } else if let Some(inspection) = data.get("inspection") {
        let scheduled = inspection["scheduled_at"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        if let (Some(scheduled), Some("联合踏勘评审")) = (scheduled, inspection["mode"].as_str())
        {
            first = Some((rules::CONFIRM_INSPECTION, Ok(scheduled)));
            if let Some(rule) = policy.rule(rules::INSPECTION_SIGNOFF) {
                then = Some((rules::INSPECTION_SIGNOFF, counted(rule, scheduled)));
            }
        }
    } else if let Some(rule_name) = claim_rule(record.kind) {
        if let Some(rule) = policy.rule(rule_name) {
            first = Some((rule_name, counted(rule, at)));
        }
        let period_end = data
            .pointer("/commitment/period_end")
            .and_then(Value::as_str)
            .filter(|_| data.pointer("/commitment/is_commitment") == Some(&json!(true)))
            .and_then(end_of);
        if let (Some(end), Some(rule)) = (period_end, policy.rule(rules::VERIFY_COMMITMENT)) {
            then = Some((rules::VERIFY_COMMITMENT, counted(rule, end)));
        } else if record.kind == RecordKind::Supervision && needs_disposition(data) {
            if let Some(rule) = policy.rule(rules::DISPOSITION_FEEDBACK) {
                then = Some((rules::DISPOSITION_FEEDBACK, counted(rule, at)));
            }
        }
    }
    if let Some((rule, due)) = first {
        entry.claim_rule = Some(rule.to_string());
        match due {
            Ok(due) => entry.claim_due_at = Some(due),
            Err(e) => entry.deadline_problem = Some(e),
        }
    }
    if let Some((rule, due)) = then {
        entry.feedback_rule = Some(rule.to_string());
        match due {
            Ok(due) => entry.feedback_due_at = Some(due),
            Err(e) => entry.deadline_problem = Some(e),
        }
    }
    entry
}

fn entry_problem(e: crate::deadline::MissingYear) -> String {
    format!(
        "no working-day calendar for {}: add the State Council arrangement for that year",
        e.year
    )
}

fn apply_record(
    loaded: &Loaded,
    kind: RecordKind,
    event_id: &str,
    record_id: &str,
    time: DateTime<FixedOffset>,
    data: &Value,
    ctx: &Context,
) -> Changes {
    let mut changes = Changes::default();
    let adapter = data
        .pointer("/source/adapter")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(existing) = &loaded.record {
        // A new version of a known record: keep its routing and deadlines, record the change.
        let mut record = existing.clone();
        record.event_id = event_id.to_string();
        record.data = data.clone();
        changes.history.push(history(
            record_id,
            None,
            "updated",
            time,
            event_id,
            json!({}),
        ));
        changes.record = Some(record);
        return changes;
    }
    let route = ctx.catalog.route(kind, data);
    let overrides = match &route {
        Route::To { overrides, .. } => overrides.clone(),
        Route::Unrouted(_) => BTreeMap::new(),
    };
    let policy = ctx.policy(&overrides);
    let source_department = ctx
        .catalog
        .departments
        .iter()
        .find(|d| d.adapters.contains(&adapter))
        .map(|d| d.code.clone())
        .or_else(|| {
            data.get("issuer_code")
                .and_then(Value::as_str)
                .filter(|c| ctx.catalog.department(c).is_some())
                .map(str::to_string)
        });
    let mut record = RecordRow {
        record_id: record_id.to_string(),
        kind,
        event_id: event_id.to_string(),
        published_at: time,
        decided_at: None,
        adapter,
        push_rule: None,
        push_due_at: None,
        push_late: false,
        unrouted: None,
        linked_record_id: loaded.linked_approval.clone(),
        source_department,
        data: data.clone(),
    };
    if let Some(approval) = &loaded.linked_approval {
        let detail = json!({"approval_record_id": approval});
        changes
            .history
            .push(history(record_id, None, "linked", time, event_id, detail));
        let back = json!({"supervision_record_id": record_id, "action": data["action"]});
        changes
            .history
            .push(history(approval, None, "supervision", time, event_id, back));
    }
    // A push made outside the platform counts from when it really happened.
    let offline = data.get("offline_push");
    let pushed_at = offline_push(data).map_or(time, |(at, _)| at);
    let mut published = json!({"kind": kind.as_str()});
    if let Some(o) = offline {
        published["offline_push"] = o.clone();
    }
    changes.history.push(history(
        record_id,
        None,
        "published",
        time,
        event_id,
        published,
    ));
    if let (Some((rule_name, Some(decided))), Some(policy)) = (push_rule(kind, data), &policy) {
        record.decided_at = Some(decided);
        if let Some(rule) = policy.rule(rule_name) {
            record.push_rule = Some(rule_name.to_string());
            if let Ok(due) = rule.due_at(ctx.calendar, decided) {
                record.push_due_at = Some(due);
                if pushed_at > due {
                    record.push_late = true;
                    changes.history.push(history(
                        record_id,
                        None,
                        "late_push",
                        time,
                        event_id,
                        json!({"rule": rule_name, "due_at": rfc3339(due)}),
                    ));
                    let pusher = match kind {
                        RecordKind::Approval => ctx.catalog.bureau.clone(),
                        // Only catalog departments become metric labels.
                        _ => data
                            .get("issuer_code")
                            .and_then(Value::as_str)
                            .filter(|c| ctx.catalog.department(c).is_some())
                            .unwrap_or("unknown")
                            .to_string(),
                    };
                    changes
                        .breaches
                        .push((pusher.clone(), kind, rule_name.to_string()));
                    changes.alerts.push(Alert {
                        id: alert_id(record_id, None, rule_name, "late_push"),
                        record_id: record_id.to_string(),
                        department: Some(pusher),
                        kind,
                        level: "late_push".into(),
                        rule: rule_name.into(),
                        policy: policy.name.clone(),
                        event_at: Some(decided),
                        due_at: Some(due),
                        calendar_version: ctx.calendar.version().to_string(),
                        at: time,
                        message: format!("pushed after the {rule_name} deadline"),
                    });
                }
            }
        }
    }
    match route {
        Route::To { departments, .. } => {
            for d in departments {
                changes
                    .entries
                    .push(new_entry(&record, &d, pushed_at, policy.as_ref(), ctx));
                changes.history.push(history(
                    record_id,
                    Some(&d),
                    "routed",
                    time,
                    event_id,
                    json!({"catalog": ctx.catalog.version}),
                ));
            }
        }
        Route::Unrouted(reason) => {
            changes.history.push(history(
                record_id,
                None,
                "unrouted",
                time,
                event_id,
                json!({"reason": reason}),
            ));
            record.unrouted = Some(reason);
        }
    }
    changes.record = Some(record);
    changes
}

fn apply_claim(loaded: &Loaded, c: &ClaimEvent, ctx: &Context) -> Changes {
    let mut changes = Changes::default();
    let Some(record) = &loaded.record else {
        let mut h = history(
            &c.record_id,
            Some(&c.department),
            "ignored",
            c.at,
            &c.event_id,
            json!({"action": c.action, "why": "unknown record"}),
        );
        h.actor = c.actor.clone();
        changes.history.push(h);
        return changes;
    };
    let mut h = history(
        &c.record_id,
        Some(&c.department),
        &c.action,
        c.at,
        &c.event_id,
        json!({}),
    );
    h.actor = c.actor.clone();
    h.channel = c.channel.clone();
    if let Some(reason) = &c.reason {
        h.detail = json!({"reason": reason});
    }
    if let Some(doc) = &c.document_ref {
        h.detail["document_ref"] = json!(doc);
    }
    let entry = loaded
        .entries
        .iter()
        .find(|e| e.department == c.department)
        .cloned();
    let mut follow = Vec::new();
    match (c.action.as_str(), entry) {
        ("route", existing) => {
            if existing
                .as_ref()
                .is_some_and(|e| e.state != EntryState::Returned)
            {
                h.action = "ignored".into();
                h.detail = json!({"action": "route", "why": "already routed to this department"});
            } else {
                let overrides = match ctx.catalog.route(record.kind, &record.data) {
                    Route::To { overrides, .. } => overrides,
                    Route::Unrouted(_) => BTreeMap::new(),
                };
                let policy = ctx.policy(&overrides);
                changes
                    .entries
                    .push(new_entry(record, &c.department, c.at, policy.as_ref(), ctx));
                let mut r = record.clone();
                r.unrouted = None;
                changes.record = Some(r);
            }
        }
        ("deliver", Some(mut e)) if e.state == EntryState::Pushed => {
            e.state = EntryState::Delivered;
            e.delivered_at = Some(c.at);
            changes.entries.push(e);
        }
        ("claim", Some(mut e)) if e.state.is_unclaimed() => {
            e.state = EntryState::Claimed;
            e.claimed_at = Some(c.at);
            let latency = (c.at - e.pushed_at).num_milliseconds() as f64 / 1000.0;
            changes
                .claimed
                .push((e.department.clone(), e.kind, latency.max(0.0)));
            // A late claim is a breach; one the tracker already counted as overdue is not counted again.
            if e.claim_due_at.is_some_and(|due| c.at > due) && e.alert_level < AlertLevel::Overdue {
                changes.breaches.push((
                    e.department.clone(),
                    e.kind,
                    e.claim_rule.clone().unwrap_or_default(),
                ));
            }
            if e.alert_level != AlertLevel::None {
                changes.alerts.push(Alert {
                    id: alert_id(
                        &e.record_id,
                        Some(&e.department),
                        e.claim_rule.as_deref().unwrap_or("claim"),
                        "closed",
                    ),
                    record_id: e.record_id.clone(),
                    department: Some(e.department.clone()),
                    kind: e.kind,
                    level: "closed".into(),
                    rule: e.claim_rule.clone().unwrap_or_default(),
                    policy: e.policy.clone(),
                    event_at: Some(e.pushed_at),
                    due_at: e.claim_due_at,
                    calendar_version: e.calendar_version.clone(),
                    at: c.at,
                    message: "claimed; the alert is closed".into(),
                });
            }
            // The follow-up (a disposition, a verification …) is alerted on from now on.
            if e.feedback_due_at.is_some() && e.feedback_rule != e.claim_rule {
                e.alert_level = AlertLevel::None;
            }
            changes.entries.push(e);
        }
        ("forward", Some(mut e)) if e.state.is_unclaimed() || e.state == EntryState::Claimed => {
            let to = c.to.clone().unwrap_or_default();
            let receiver = loaded.entries.iter().find(|o| o.department == to);
            let why = if ctx.catalog.department(&to).is_none() {
                Some(format!("{to} is not a department in the catalog"))
            } else if to == c.department {
                Some("a department cannot forward to itself".into())
            } else if receiver.is_some_and(|o| o.state != EntryState::Returned) {
                Some(format!("already routed to {to}"))
            } else {
                None
            };
            if let Some(why) = why {
                h.action = "ignored".into();
                h.detail = json!({"action": "forward", "to": to, "why": why});
            } else {
                let reason = c.reason.clone().unwrap_or_default();
                e.state = EntryState::Forwarded;
                e.closed_at = Some(c.at);
                e.outcome = Some("forwarded".into());
                e.note = Some(format!("forwarded to {to}: {reason}"));
                h.action = "forwarded".into();
                h.detail = json!({"to": to, "reason": reason});
                let overrides = match ctx.catalog.route(record.kind, &record.data) {
                    Route::To { overrides, .. } => overrides,
                    Route::Unrouted(_) => BTreeMap::new(),
                };
                let policy = ctx.policy(&overrides);
                // The receiver's deadlines count from the hand-over.
                let mut next = new_entry(record, &to, c.at, policy.as_ref(), ctx);
                next.note = Some(format!("forwarded by {}: {reason}", c.department));
                let mut received = history(
                    &c.record_id,
                    Some(&to),
                    "forwarded_in",
                    c.at,
                    &c.event_id,
                    json!({"from": c.department, "reason": reason}),
                );
                received.actor = c.actor.clone();
                follow.push(received);
                changes.entries.push(e);
                changes.entries.push(next);
            }
        }
        ("return", Some(mut e)) if e.state.is_unclaimed() || e.state == EntryState::Claimed => {
            e.state = EntryState::Returned;
            e.returned_at = Some(c.at);
            e.note = c.reason.clone();
            let others_active = loaded
                .entries
                .iter()
                .any(|o| o.department != c.department && o.state != EntryState::Returned);
            if !others_active {
                let mut r = record.clone();
                r.unrouted = Some(format!(
                    "returned by {} as 非本部门: {}",
                    c.department,
                    c.reason.as_deref().unwrap_or("no reason given")
                ));
                changes.record = Some(r);
            }
            changes.entries.push(e);
        }
        (action, e) => {
            h.action = "ignored".into();
            h.detail = json!({
                "action": action,
                "why": match e { None => "not routed to this department".to_string(), Some(e) => format!("entry is {}", e.state.as_str()) },
            });
        }
    }
    changes.history.push(h);
    changes.history.extend(follow);
    changes
}

fn apply_feedback(loaded: &Loaded, f: &FeedbackEvent, ctx: &Context) -> Changes {
    let mut changes = Changes::default();
    let mut h = history(
        &f.record_id,
        Some(&f.department),
        "feedback",
        f.at,
        &f.event_id,
        f.data.clone(),
    );
    h.actor = f
        .data
        .get("actor")
        .and_then(Value::as_str)
        .map(str::to_string);
    let Some(record) = &loaded.record else {
        h.action = "ignored".into();
        changes.history.push(h);
        return changes;
    };
    let Some(mut e) = loaded
        .entries
        .iter()
        .find(|e| e.department == f.department)
        .cloned()
    else {
        h.action = "ignored".into();
        h.detail = json!({"why": "not routed to this department"});
        changes.history.push(h);
        return changes;
    };
    let open = matches!(
        e.state,
        EntryState::Pushed | EntryState::Delivered | EntryState::Claimed | EntryState::Feedback
    );
    let follow_up = matches!(e.state, EntryState::Claimed | EntryState::Feedback);
    let flow = flow_of(&e);
    let kind = f.feedback_type.as_str();
    // What the feedback does to the entry: (new state, outcome), or why it is ignored.
    let step: Result<(EntryState, Option<String>), String> = match kind {
        "reply" | "deemed_agreed" if flow != "inquiry" => {
            Err(format!("{kind} answers an inquiry; this record is not one"))
        }
        "reply" | "deemed_agreed" if open => Ok((
            EntryState::Closed,
            Some(
                if kind == "reply" {
                    "replied"
                } else {
                    "deemed_agreed"
                }
                .into(),
            ),
        )),
        "inspection_attendance" if flow != "inspection" => Err(
            "attendance is confirmed for a joint site inspection; this record is not one".into(),
        ),
        "inspection_attendance" if e.state.is_unclaimed() => {
            Ok((EntryState::Claimed, Some("attending".into())))
        }
        "inspection_result" if flow != "inspection" => {
            Err("a sign-off is for a joint site inspection; this record is not one".into())
        }
        "inspection_result" if follow_up => Ok((EntryState::Closed, Some("signed_off".into()))),
        "inspection_result" if e.state.is_unclaimed() => {
            Err("confirm who attends (inspection_attendance) before signing off".into())
        }
        "commitment_verified" if flow != "commitment" => {
            Err("this record carries no 告知承诺 commitment to verify".into())
        }
        "commitment_verified" if follow_up => {
            let result = f.data["verification"].as_str().unwrap_or("fulfilled");
            Ok((EntryState::Closed, Some(format!("commitment_{result}"))))
        }
        "disposition" if follow_up && record.kind == RecordKind::Supervision => {
            Ok((EntryState::Closed, None))
        }
        _ if follow_up => Ok((EntryState::Feedback, None)),
        _ => Err(format!("entry is {}; claim it first", e.state.as_str())),
    };
    match step {
        Err(why) => {
            h.action = "ignored".into();
            h.detail = json!({"feedback_type": kind, "why": why});
        }
        Ok((state, outcome)) => {
            // The deadline this feedback meets, if it is the one the entry waits for.
            let met = e
                .obligation()
                .filter(|(rule, _)| {
                    matches!(
                        (*rule, kind),
                        (rules::REPLY_INQUIRY, "reply")
                            | (rules::CONFIRM_INSPECTION, "inspection_attendance")
                            | (rules::INSPECTION_SIGNOFF, "inspection_result")
                            | (rules::VERIFY_COMMITMENT, "commitment_verified")
                            | (rules::DISPOSITION_FEEDBACK, "disposition")
                    )
                })
                .map(|(rule, due)| (rule.to_string(), due));
            if let Some((rule, due)) = &met {
                // Late, and not already counted by the tracker as overdue.
                if f.at > *due && e.alert_level < AlertLevel::Overdue {
                    changes
                        .breaches
                        .push((e.department.clone(), e.kind, rule.clone()));
                }
            }
            if kind == "deemed_agreed" {
                if e.alert_level < AlertLevel::Overdue {
                    changes.breaches.push((
                        e.department.clone(),
                        e.kind,
                        rules::REPLY_INQUIRY.into(),
                    ));
                }
                h.action = "deemed_agreed".into();
                deemed_alerts(&mut changes, record, &e, f, ctx);
            }
            // A reply or an attendance confirmation answers the record; a lapse does not.
            if e.state.is_unclaimed() && kind != "deemed_agreed" {
                e.claimed_at = Some(f.at);
            }
            if state == EntryState::Closed {
                e.closed_at = Some(f.at);
            }
            // A new phase starts with its own alerts.
            if state == EntryState::Claimed && e.state.is_unclaimed() {
                e.alert_level = AlertLevel::None;
            }
            e.state = state;
            e.feedback_at = Some(f.at);
            if outcome.is_some() {
                e.outcome = outcome;
            }
            changes.entries.push(e);
        }
    }
    changes.history.push(h);
    changes
}

/// 逾期视为同意: both sides are told — the receiver that its silence counted as agreement, the
/// sender that its inquiry is agreed.
fn deemed_alerts(
    changes: &mut Changes,
    record: &RecordRow,
    e: &Entry,
    f: &FeedbackEvent,
    ctx: &Context,
) {
    let due = e.claim_due_at;
    let sender = record
        .source_department
        .clone()
        .or_else(|| Some(ctx.catalog.bureau.clone()));
    let title = record.data["title"].as_str().unwrap_or("");
    for (department, message) in [
        (
            Some(e.department.clone()),
            format!("no reply to the inquiry 「{title}」 by its deadline: deemed agreed (逾期不回复的视为同意)"),
        ),
        (
            sender,
            format!("{} did not reply to the inquiry 「{title}」 by its deadline: deemed agreed", e.department),
        ),
    ] {
        let Some(department) = department else { continue };
        changes.alerts.push(Alert {
            id: alert_id(
                &e.record_id,
                Some(&format!("{department}\n{}", e.department)),
                rules::REPLY_INQUIRY,
                "deemed_agreed",
            ),
            record_id: e.record_id.clone(),
            department: Some(department),
            kind: e.kind,
            level: "deemed_agreed".into(),
            rule: rules::REPLY_INQUIRY.into(),
            policy: e.policy.clone(),
            event_at: Some(e.pushed_at),
            due_at: due,
            calendar_version: e.calendar_version.clone(),
            at: f.at,
            message,
        });
    }
}
