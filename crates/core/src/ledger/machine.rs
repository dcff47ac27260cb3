//! The ledger's state machine: what one event does to what the ledger holds about its record
//! (the record and its entries, one per department). Pure and synchronous; the order of a
//! record's events and the events that wait for their record are [`super::fold`]'s business.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use serde_json::{json, Value};

use super::event::{ClaimAction, ClaimEvent, Event, FeedbackEvent, FeedbackType, RecordEvent};
use super::{
    alert_id, at, flow_of, rfc3339, rules, Alert, AlertLevel, Changes, Context, Entry, EntryState,
    HistoryRow, RecordRow,
};
use crate::deadline::{Policy, Rule};
use crate::route::Route;
use crate::schema::RecordKind;

/// What the ledger holds about one record when an event is applied: the record (its latest
/// version), if it arrived, and its entries, one per department, ordered by department.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordState {
    pub record: Option<RecordRow>,
    pub entries: Vec<Entry>,
}

impl RecordState {
    /// Takes what an event changed into the state.
    pub fn absorb(&mut self, changes: &Changes) {
        if let Some(r) = &changes.record {
            self.record = Some(r.clone());
        }
        for e in &changes.entries {
            match self
                .entries
                .binary_search_by(|x| x.department.as_str().cmp(&e.department))
            {
                Ok(i) => self.entries[i] = e.clone(),
                Err(i) => self.entries.insert(i, e.clone()),
            }
        }
    }
}

/// The rule counting the push of a record, and the event it counts from (the decision, the
/// receipt, the day announced): `None` for a record no push deadline applies to, an unknown
/// event time for one that cannot be judged.
fn push_rule(
    kind: RecordKind,
    data: &Value,
) -> Option<(&'static str, Option<DateTime<FixedOffset>>)> {
    let time = |p: &str| -> Option<DateTime<FixedOffset>> {
        let v = at(data, p)?.as_str()?;
        DateTime::parse_from_rfc3339(v)
            .ok()
            .or_else(|| crate::adapter::convert::parse_datetime(v).ok())
    };
    match kind {
        RecordKind::Approval => Some(("push_approval", time("/decided_at"))),
        RecordKind::Supervision => {
            if data["action"] == "告知承诺未履行" {
                Some((
                    "push_commitment_failure",
                    time("/commitment_check/period_end"),
                ))
            } else {
                Some((
                    "push_supervision",
                    time("/decided_at").or_else(|| time("/decision_date")),
                ))
            }
        }
        // 垣曲 第二十五条: 对需联合踏勘评审的事项……至少提前1个工作日 — the advance notice is for a
        // joint inspection only; the bureau carries out an 独立 or 委托 one without the departments.
        RecordKind::Notice if data.get("inspection").is_some() => {
            (at(data, "/inspection/mode").and_then(Value::as_str) == Some("联合踏勘评审"))
                .then(|| (rules::INSPECTION_NOTICE, time("/inspection/scheduled_at")))
        }
        // An inquiry is the sender's own letter, not something forwarded within a period.
        RecordKind::Notice if data.get("inquiry").is_some() => None,
        // 垣曲 附件 三（四）: 联席会议召开前1个工作日 the materials reach the member units.
        RecordKind::Notice if data.get("meeting").is_some() => {
            (at(data, "/meeting/kind").and_then(Value::as_str) == Some("联席会议"))
                .then(|| (rules::MEETING_MATERIALS, time("/meeting/starts_at")))
        }
        // 淄川 三（二）2: 收到……后一个工作日内抄告 — counted from the receipt. A notice that does not
        // say when it was received cannot be judged late.
        RecordKind::Notice => Some((rules::FORWARD_NOTICE, time("/received_at"))),
        _ => None,
    }
}

/// Working hours between two instants, for the report's percentiles; `None` across a year
/// without calendar data.
fn working_hours(
    ctx: &Context,
    from: DateTime<FixedOffset>,
    to: DateTime<FixedOffset>,
) -> Option<f64> {
    ctx.calendar
        .working_seconds_between(from, to)
        .ok()
        .map(|s| (s.max(0) as f64 / 3600.0 * 100.0).round() / 100.0)
}

/// The profile in force for a record, with its item's overrides.
fn record_policy<'a>(record: &RecordRow, ctx: &Context<'a>) -> Option<Cow<'a, Policy>> {
    let overrides = match ctx.catalog.route(record.kind, &record.data) {
        Route::To { overrides, .. } => overrides,
        Route::Unrouted(_) => BTreeMap::new(),
    };
    ctx.policy(&overrides)
}

/// The department that sent a record: the one whose adapter it came through (the catalog's
/// adapter lists), else the issuer it names, else the issuer an offline push names.
fn source_department(data: &Value, adapter: &str, ctx: &Context) -> Option<String> {
    ctx.catalog
        .departments
        .iter()
        .find(|d| d.adapters.iter().any(|a| a == adapter))
        .map(|d| d.code.clone())
        .or_else(|| {
            [data.get("issuer_code"), at(data, "/offline_push/issuer")]
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .find(|c| ctx.catalog.department(c).is_some())
                .map(str::to_string)
        })
}

/// The leaf paths whose values differ between two versions of a record (its `source` left
/// out), e.g. `license.status`.
fn changed_paths(old: &Value, new: &Value) -> Vec<String> {
    fn walk(prefix: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<String>) {
        match (a, b) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    if prefix.is_empty() && (k == "source" || k == "record_id") {
                        continue;
                    }
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, x.get(k), y.get(k), out);
                }
            }
            (a, b) if a != b => out.push(prefix.to_string()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", Some(old), Some(new), &mut out);
    out
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

/// Supervision actions the bureau must decide on and feed back to the department that asked:
/// 撤回/撤销/注销 (垣曲 第二十三条末段, 石嘴山 三（四）), 变更 (济宁 第二十一条（三）), a failed
/// commitment (垣曲 第二十四条第三款) and an objection to an approval, which the bureau reviews
/// (复核, 安康 15).
pub fn needs_disposition(data: &Value) -> bool {
    matches!(
        data["action"].as_str(),
        Some("撤回许可" | "撤销许可" | "注销许可" | "变更许可" | "审批结果异议" | "告知承诺未履行")
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

/// Applies one event to what the ledger holds about its record. Pure. An event about a record
/// the state does not hold yet is [`super::fold`]'s to keep; given one here, it is ignored.
pub fn apply(state: &RecordState, event: &Event, ctx: &Context) -> Changes {
    match event {
        Event::Record(r) => apply_record(state, r, ctx),
        Event::Claim(c) => apply_claim(state, c, ctx),
        Event::Feedback(f) => apply_feedback(state, f, ctx),
        Event::Level(a) => apply_level(state, a),
    }
}

/// An entry pushed to `department` at `at`, without deadlines yet.
fn base_entry(
    record: &RecordRow,
    department: &str,
    at: DateTime<FixedOffset>,
    policy: Option<&Policy>,
    ctx: &Context,
) -> Entry {
    Entry {
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
        deadline_problem: if policy.is_none() {
            Some(format!("policy '{}' is not defined", ctx.policy))
        } else {
            None
        },
        alert_level: AlertLevel::None,
        note: None,
        outcome: None,
        via: offline_push(&record.data).map(|(_, channel)| channel),
        version: record.version,
        claim_hours: None,
    }
}

/// When something the record announces starts: a meeting or a training the departments are
/// invited to (垣曲 附件 三, 石嘴山 四（二）, 安康 28, 济宁 第二十六条).
fn attendance_starts(data: &Value) -> Option<DateTime<FixedOffset>> {
    ["/meeting/starts_at", "/training/starts_at"]
        .iter()
        .find_map(|p| at(data, p).and_then(Value::as_str))
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
}

fn new_entry(
    record: &RecordRow,
    department: &str,
    at: DateTime<FixedOffset>,
    policy: Option<&Policy>,
    ctx: &Context,
) -> Entry {
    let mut entry = base_entry(record, department, at, policy, ctx);
    let Some(policy) = policy else {
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
    } else if record.kind == RecordKind::Notice {
        // A meeting or training: who attends is confirmed by the time it starts; any other
        // notice (training or policy-change information) is claimed like approval information.
        if let Some(starts) = attendance_starts(data) {
            first = Some((rules::CONFIRM_ATTENDANCE, Ok(starts)));
        } else if let Some(rule) = policy.rule(rules::CLAIM_NOTICE) {
            first = Some((rules::CLAIM_NOTICE, counted(rule, at)));
        }
    } else if let Some(rule_name) = claim_rule(record.kind) {
        if let Some(rule) = policy.rule(rule_name) {
            first = Some((rule_name, counted(rule, at)));
        }
        let commitment = data
            .get("commitment")
            .filter(|c| c.get("is_commitment") == Some(&json!(true)));
        let period_end = commitment
            .and_then(|c| c.get("period_end"))
            .and_then(Value::as_str)
            .and_then(end_of);
        // 济宁 第二十四条（一）: the bureau sets each item's verification time, or exempts it.
        let verification = commitment.and_then(|c| c.get("verification"));
        let exempt = verification.and_then(|v| v.get("exempt")) == Some(&json!(true));
        let verify_by = verification
            .and_then(|v| v.get("due_date"))
            .and_then(Value::as_str)
            .and_then(end_of);
        if exempt {
            entry.note = Some("免予核查: the bureau exempted this commitment from verification (济宁 第二十四条（一）)".into());
        } else if let Some(by) = verify_by {
            then = Some((rules::VERIFY_COMMITMENT, Ok(by)));
        } else if let (Some(end), Some(rule)) = (period_end, policy.rule(rules::VERIFY_COMMITMENT))
        {
            then = Some((rules::VERIFY_COMMITMENT, counted(rule, end)));
        } else if record.kind == RecordKind::Supervision
            && needs_disposition(data)
            && policy.rule(rules::DISPOSITION_FEEDBACK).is_some()
        {
            // Counted from the bureau's claim: the deadline is set when it claims.
            entry.feedback_rule = Some(rules::DISPOSITION_FEEDBACK.to_string());
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

fn apply_record(state: &RecordState, r: &RecordEvent, ctx: &Context) -> Changes {
    let (kind, event_id, record_id, time, data) = (
        r.kind,
        r.event_id.as_str(),
        r.record_id.as_str(),
        r.time,
        &r.data,
    );
    let mut changes = Changes::default();
    let adapter = at(data, "/source/adapter")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(existing) = &state.record {
        return apply_update(state, existing, r, ctx);
    }
    let route = ctx.catalog.route(kind, data);
    let overrides = match &route {
        Route::To { overrides, .. } => overrides.clone(),
        Route::Unrouted(_) => BTreeMap::new(),
    };
    let policy = ctx.policy(&overrides);
    let source_department = source_department(data, &adapter, ctx);
    // A push made outside the platform counts from when it really happened.
    let pushed_at = offline_push(data).map_or(time, |(at, _)| at);
    let pusher = match kind {
        RecordKind::Approval => Some(ctx.catalog.bureau.clone()),
        _ => source_department.clone(),
    };
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
        linked_record_id: None,
        source_department,
        pusher,
        pushed_at,
        push_hours: None,
        version: 1,
        data: data.clone(),
        keys: r.keys.clone(),
    };
    let offline = data.get("offline_push");
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
            if rule.direction == crate::deadline::Direction::After {
                record.push_hours = working_hours(ctx, decided, pushed_at);
            }
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
    // Deciding under a profile outside the period its regulation is in force is shown, not
    // silent (济宁 第三十七条: 2022-12-10 to 2024-12-09).
    let out_of_period = policy.as_ref().and_then(|p| out_of_period(p, pushed_at));
    match route {
        Route::To { departments, .. } => {
            for d in departments {
                changes
                    .entries
                    .push(new_entry(&record, &d, pushed_at, policy.as_deref(), ctx));
                let mut detail = json!({"catalog": ctx.catalog.version});
                if let Some(why) = &out_of_period {
                    detail["policy_out_of_period"] = json!(why);
                }
                changes.history.push(history(
                    record_id,
                    Some(&d),
                    "routed",
                    time,
                    event_id,
                    detail,
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

/// Why deciding under `policy` at `at` is outside the period its regulation is in force, if it is.
pub fn out_of_period(policy: &Policy, at: DateTime<FixedOffset>) -> Option<String> {
    let day = at
        .with_timezone(&crate::adapter::convert::shanghai())
        .date_naive();
    (!policy.period.contains(day)).then(|| {
        format!(
            "{} is in force {} ({}), not on {day}",
            policy.name,
            policy.period.describe(),
            policy.period.citation
        )
    })
}

/// A new version of a known record (a licence changed, cancelled or revoked after its push):
/// the record takes the new data and its version number, the history keeps both (the changed
/// fields and the event of each version), and every department that holds the record gets it
/// again as an update with its own claim deadline — an entry at the new version, pushed now.
/// Departments that returned or passed it on, and a decision delivered to a requester, are left
/// as they are; an unrouted record stays in the queue.
fn apply_update(
    state: &RecordState,
    existing: &RecordRow,
    r: &RecordEvent,
    ctx: &Context,
) -> Changes {
    let mut changes = Changes::default();
    let mut record = existing.clone();
    record.event_id = r.event_id.clone();
    record.data = r.data.clone();
    record.keys = r.keys.clone();
    record.version = existing.version + 1;
    let changed = changed_paths(&existing.data, &r.data);
    changes.history.push(history(
        &r.record_id,
        None,
        "updated",
        r.time,
        &r.event_id,
        json!({"version": record.version, "previous_event_id": existing.event_id, "changed": changed}),
    ));
    if existing.unrouted.is_none() {
        let policy = record_policy(&record, ctx);
        for e in &state.entries {
            if matches!(e.state, EntryState::Returned | EntryState::Forwarded)
                || flow_of(e) == "decision"
            {
                continue;
            }
            let mut next = new_entry(&record, &e.department, r.time, policy.as_deref(), ctx);
            next.note = Some(format!(
                "version {} (changed: {})",
                record.version,
                if changed.is_empty() {
                    "nothing but its source".to_string()
                } else {
                    changed.join(", ")
                }
            ));
            changes.history.push(history(
                &r.record_id,
                Some(&e.department),
                "update_pushed",
                r.time,
                &r.event_id,
                json!({"version": record.version, "claim_rule": next.claim_rule, "claim_due_at": next.claim_due_at.map(rfc3339)}),
            ));
            changes.entries.push(next);
        }
    }
    changes.record = Some(record);
    changes
}

fn apply_claim(state: &RecordState, c: &ClaimEvent, ctx: &Context) -> Changes {
    let mut changes = Changes::default();
    let Some(record) = &state.record else {
        return changes;
    };
    let mut h = history(
        &c.record_id,
        Some(&c.department),
        c.action.as_str(),
        c.at,
        &c.event_id,
        json!({}),
    );
    h.actor = c.actor.clone();
    h.channel = c.channel.map(|ch| ch.as_str().to_string());
    if let Some(reason) = &c.reason {
        h.detail = json!({"reason": reason});
    }
    if let Some(doc) = &c.document_ref {
        h.detail["document_ref"] = json!(doc);
    }
    let entry = state
        .entries
        .iter()
        .find(|e| e.department == c.department)
        .cloned();
    let mut follow = Vec::new();
    match (c.action, entry) {
        (ClaimAction::Route, existing) => {
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
                changes.entries.push(new_entry(
                    record,
                    &c.department,
                    c.at,
                    policy.as_deref(),
                    ctx,
                ));
                let mut r = record.clone();
                r.unrouted = None;
                changes.record = Some(r);
            }
        }
        (ClaimAction::Deliver, Some(mut e)) if e.state == EntryState::Pushed => {
            e.state = EntryState::Delivered;
            e.delivered_at = Some(c.at);
            changes.entries.push(e);
        }
        (ClaimAction::Claim, Some(mut e)) if e.state.is_unclaimed() => {
            e.state = EntryState::Claimed;
            e.claimed_at = Some(c.at);
            e.claim_hours = working_hours(ctx, e.pushed_at, c.at);
            // The disposition of a request is due counted from the bureau's claim of it.
            if e.feedback_rule.as_deref() == Some(rules::DISPOSITION_FEEDBACK)
                && e.feedback_due_at.is_none()
            {
                if let Some(rule) = record_policy(record, ctx)
                    .as_ref()
                    .and_then(|p| p.rule(rules::DISPOSITION_FEEDBACK))
                {
                    match rule.due_at(ctx.calendar, c.at) {
                        Ok(due) => e.feedback_due_at = Some(due),
                        Err(m) => e.deadline_problem = Some(entry_problem(m)),
                    }
                }
            }
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
        (ClaimAction::Forward, Some(mut e))
            if e.state.is_unclaimed() || e.state == EntryState::Claimed =>
        {
            let to = c.to.clone().unwrap_or_default();
            let receiver = state.entries.iter().find(|o| o.department == to);
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
                let policy = record_policy(record, ctx);
                // The receiver's deadlines count from the hand-over.
                let mut next = new_entry(record, &to, c.at, policy.as_deref(), ctx);
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
        (ClaimAction::Return, Some(mut e))
            if e.state.is_unclaimed() || e.state == EntryState::Claimed =>
        {
            e.state = EntryState::Returned;
            e.returned_at = Some(c.at);
            e.note = c.reason.clone();
            let others_active = state
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
                "action": action.as_str(),
                "why": match e { None => "not routed to this department".to_string(), Some(e) => format!("entry is {}", e.state.as_str()) },
            });
        }
    }
    changes.history.push(h);
    changes.history.extend(follow);
    changes
}

fn apply_feedback(state: &RecordState, f: &FeedbackEvent, ctx: &Context) -> Changes {
    let mut changes = Changes::default();
    let others = &state.entries;
    let Some(record) = &state.record else {
        return changes;
    };
    let mut h = history(
        &f.record_id,
        Some(&f.department),
        "feedback",
        f.at,
        &f.event_id,
        f.data(),
    );
    h.actor = f.actor.clone();
    let Some(mut e) = state
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
    let kind = f.feedback_type.as_str();
    // What the feedback does to the entry: (new state, outcome), or why it is ignored.
    let step = feedback_step(&e, record.kind, f.feedback_type, f.verification);
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
                            | (rules::CONFIRM_ATTENDANCE, "attendance")
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
                e.claim_hours = working_hours(ctx, e.pushed_at, f.at);
            }
            if f.feedback_type == FeedbackType::Disposition
                && record.kind == RecordKind::Supervision
                && needs_disposition(&record.data)
            {
                deliver_decision(&mut changes, record, &e, others, f, ctx);
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

/// The bureau's decision on a request (撤回/撤销/注销/变更, 异议复核, a failed 告知承诺) reaches the
/// department that asked as a record routed to it: an entry of its own on the request, pushed
/// when the decision is fed back and due by the profile's `claim_decision` (垣曲 第二十三条末段
/// 同时推送至监管部门, 济宁 第二十一条（三）, 石嘴山 三（四） 及时函复, 安康 15 及时反馈). It is in its
/// inbox, goes to its webhook, and its Kafka client reads it on the feedback topic. A requester
/// that is not known, or that holds an entry on the record already, is said in the history.
fn deliver_decision(
    changes: &mut Changes,
    record: &RecordRow,
    bureau: &Entry,
    entries: &[Entry],
    f: &FeedbackEvent,
    ctx: &Context,
) {
    let Some(requester) = record.source_department.clone() else {
        changes.history.push(history(
            &f.record_id,
            None,
            "decision_not_delivered",
            f.at,
            &f.event_id,
            json!({"why": "the department that sent the request is not known (its adapter is in no department's list, and it names no issuer)"}),
        ));
        return;
    };
    if requester == bureau.department {
        return;
    }
    if entries.iter().any(|e| e.department == requester) {
        changes.history.push(history(
            &f.record_id,
            Some(&requester),
            "decision_not_delivered",
            f.at,
            &f.event_id,
            json!({"why": format!("{requester} holds the record already; the decision is in its history")}),
        ));
        return;
    }
    let policy = record_policy(record, ctx);
    let mut entry = base_entry(record, &requester, f.at, policy.as_deref(), ctx);
    entry.via = None;
    entry.claim_rule = Some(rules::CLAIM_DECISION.to_string());
    if let Some(rule) = policy.as_ref().and_then(|p| p.rule(rules::CLAIM_DECISION)) {
        match rule.due_at(ctx.calendar, f.at) {
            Ok(due) => entry.claim_due_at = Some(due),
            Err(m) => entry.deadline_problem = Some(entry_problem(m)),
        }
    }
    let decision = f
        .details
        .get("disposition")
        .or_else(|| f.details.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("");
    entry.note = Some(format!("decision of {}: {decision}", bureau.department));
    let mut detail = json!({"from": bureau.department, "decision": decision});
    if let Some(no) = f.details.get("document_no") {
        detail["document_no"] = no.clone();
    }
    detail["claim_due_at"] = json!(entry.claim_due_at.map(rfc3339));
    changes.history.push(history(
        &f.record_id,
        Some(&requester),
        "decision_delivered",
        f.at,
        &f.event_id,
        detail,
    ));
    changes.entries.push(entry);
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

/// An alert level the tracker raised: the entry's level goes up when the alert is about the
/// obligation the entry has open now and is higher than what was raised before; otherwise (the
/// entry was claimed or answered meanwhile, or the level is no news) nothing changes. Reaching
/// overdue is a deadline breach.
fn apply_level(state: &RecordState, a: &Alert) -> Changes {
    let mut changes = Changes::default();
    let (Some(department), Some(level)) = (a.department.as_deref(), AlertLevel::parse(&a.level))
    else {
        return changes;
    };
    let Some(mut e) = state
        .entries
        .iter()
        .find(|e| e.department == department)
        .cloned()
    else {
        return changes;
    };
    let current = e.obligation().map(|(rule, _)| rule);
    if current != Some(a.rule.as_str()) || level <= e.alert_level {
        return changes;
    }
    if level >= AlertLevel::Overdue && e.alert_level < AlertLevel::Overdue {
        changes
            .breaches
            .push((e.department.clone(), e.kind, a.rule.clone()));
    }
    e.alert_level = level;
    let mut h = history(
        &a.record_id,
        Some(department),
        "alert",
        a.at,
        &a.id,
        json!({"level": a.level, "rule": a.rule, "due_at": a.due_at.map(rfc3339)}),
    );
    h.actor = Some("shenguan".into());
    changes.history.push(h);
    changes.entries.push(e);
    changes
}

/// What feedback of `feedback_type` does to an entry: its new state and outcome, or why it does
/// not apply (the record is not the kind of flow the feedback answers, or the entry is not at
/// the step the feedback is for). The API asks the same before it publishes.
pub fn feedback_step(
    e: &Entry,
    record_kind: RecordKind,
    feedback_type: super::event::FeedbackType,
    verification: Option<super::event::Verification>,
) -> Result<(EntryState, Option<String>), String> {
    let open = e.state.is_unclaimed() || EntryState::CLAIMED.contains(&e.state);
    let follow_up = EntryState::CLAIMED.contains(&e.state);
    let flow = flow_of(e);
    let kind = feedback_type.as_str();
    match kind {
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
        "attendance" if flow != "attendance" => Err(
            "attendance is confirmed for a meeting or training the department is invited to; this record is not one".into(),
        ),
        "attendance" if e.state.is_unclaimed() => Ok((EntryState::Closed, Some("attending".into()))),
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
            let result = match verification {
                Some(super::event::Verification::Unfulfilled) => "unfulfilled",
                _ => "fulfilled",
            };
            Ok((EntryState::Closed, Some(format!("commitment_{result}"))))
        }
        "disposition" if flow == "decision" => Err(
            "this is the bureau's decision on the department's request: claim it; the disposition is the bureau's".into(),
        ),
        "disposition" if follow_up && record_kind == RecordKind::Supervision => {
            Ok((EntryState::Closed, None))
        }
        _ if follow_up => Ok((EntryState::Feedback, None)),
        _ => Err(format!("entry is {}; claim it first", e.state.as_str())),
    }
}
