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

pub mod pg;
pub mod projector;
pub mod report;
pub mod sqlite;
pub mod store;
pub mod tracker;

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::deadline::{Calendar, Policies, Policy};
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
        RecordKind::Notice => Some(("forward_notice", at("/issued_at"))),
        _ => None,
    }
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
    };
    let Some(policy) = policy else {
        entry.deadline_problem = Some(format!("policy '{}' is not defined", ctx.policy));
        return entry;
    };
    let problem = entry_problem;
    if let Some(rule_name) = claim_rule(record.kind) {
        if let Some(rule) = policy.rule(rule_name) {
            entry.claim_rule = Some(rule_name.to_string());
            match rule.due_at(ctx.calendar, at) {
                Ok(due) => entry.claim_due_at = Some(due),
                Err(e) => entry.deadline_problem = Some(problem(e)),
            }
        }
    }
    if record.kind == RecordKind::Supervision && needs_disposition(&record.data) {
        if let Some(rule) = policy.rule("disposition_feedback") {
            entry.feedback_rule = Some("disposition_feedback".into());
            match rule.due_at(ctx.calendar, at) {
                Ok(due) => entry.feedback_due_at = Some(due),
                Err(e) => entry.deadline_problem = Some(problem(e)),
            }
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
        .map(|d| d.code.clone());
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
    changes.history.push(history(
        record_id,
        None,
        "published",
        time,
        event_id,
        json!({"kind": kind.as_str()}),
    ));
    if let (Some((rule_name, Some(decided))), Some(policy)) = (push_rule(kind, data), &policy) {
        record.decided_at = Some(decided);
        if let Some(rule) = policy.rule(rule_name) {
            record.push_rule = Some(rule_name.to_string());
            if let Ok(due) = rule.due_at(ctx.calendar, decided) {
                record.push_due_at = Some(due);
                if time > due {
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
                    .push(new_entry(&record, &d, time, policy.as_ref(), ctx));
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
    let entry = loaded
        .entries
        .iter()
        .find(|e| e.department == c.department)
        .cloned();
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
            changes.entries.push(e);
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
    changes
}

fn apply_feedback(loaded: &Loaded, f: &FeedbackEvent, _ctx: &Context) -> Changes {
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
    match loaded
        .entries
        .iter()
        .find(|e| e.department == f.department)
        .cloned()
    {
        Some(mut e) if matches!(e.state, EntryState::Claimed | EntryState::Feedback) => {
            e.state = if f.feedback_type == "disposition" && record.kind == RecordKind::Supervision
            {
                e.closed_at = Some(f.at);
                EntryState::Closed
            } else {
                EntryState::Feedback
            };
            e.feedback_at = Some(f.at);
            if let Some(due) = e.feedback_due_at {
                if f.at > due {
                    changes.breaches.push((
                        e.department.clone(),
                        e.kind,
                        "disposition_feedback".into(),
                    ));
                }
            }
            changes.entries.push(e);
        }
        Some(e) => {
            h.action = "ignored".into();
            h.detail = json!({"why": format!("entry is {}; claim it first", e.state.as_str())});
        }
        None => {
            h.action = "ignored".into();
            h.detail = json!({"why": "not routed to this department"});
        }
    }
    changes.history.push(h);
    changes
}
