//! Alert levels: which level an open obligation has reached at a given instant, and the alert
//! that raises it. Pure: a function of the deadline, the policy, the calendar and the instant;
//! the tracker publishes the alerts and the ledger applies them like any other event.

use chrono::{DateTime, FixedOffset};

use super::{alert_id, rules, Alert, AlertLevel, DueEntry, Entry};
use crate::deadline::{Calendar, Policy};

/// The alert level an entry's open obligation (claim, reply, confirmation, sign-off,
/// verification, disposition) has reached at `now`.
pub fn level_at(
    entry: &Entry,
    policy: &Policy,
    calendar: &Calendar,
    now: DateTime<FixedOffset>,
) -> AlertLevel {
    match entry.obligation() {
        Some((_, due)) => level_due(due, policy, calendar, now),
        None => AlertLevel::None,
    }
}

/// The alert level at `now` of an obligation due at `due`.
pub fn level_due(
    due: DateTime<FixedOffset>,
    policy: &Policy,
    calendar: &Calendar,
    now: DateTime<FixedOffset>,
) -> AlertLevel {
    if now > due {
        let escalate_at = calendar
            .deadline_after(due, policy.escalate_after_working_days)
            .unwrap_or(due);
        return if now > escalate_at {
            AlertLevel::Escalated
        } else {
            AlertLevel::Overdue
        };
    }
    match calendar.working_seconds_between(now, due) {
        Ok(left) if left <= i64::from(policy.due_soon_working_hours) * 3600 => AlertLevel::DueSoon,
        _ => AlertLevel::None,
    }
}

/// How far ahead of now a deadline can be and still be "due soon": the due-soon window is a few
/// working hours, and the longest run of days off in the State Council arrangements is 9 days,
/// so three weeks covers it with room to spare. Deadlines further out are not read at all.
pub const DUE_SOON_HORIZON: chrono::Duration = chrono::Duration::days(21);

/// The alert that raises `entry` to `level` at `now`. Its id is fixed per record, department,
/// rule and level, so however often it is published the ledger applies it once.
pub fn raise(entry: &DueEntry, level: AlertLevel, now: DateTime<FixedOffset>) -> Alert {
    let what = match entry.rule.as_str() {
        rules::REPLY_INQUIRY => "reply to this inquiry",
        rules::CONFIRM_INSPECTION => "confirm who attends this site inspection",
        rules::INSPECTION_SIGNOFF => "sign off this site inspection",
        rules::VERIFY_COMMITMENT => "verify this 告知承诺 commitment",
        rules::DISPOSITION_FEEDBACK => "feed back its disposition of this request",
        rules::CONFIRM_ATTENDANCE => "confirm who attends this meeting or training",
        rules::CLAIM_DECISION => "claim the bureau's decision on its request",
        rules::CLAIM_NOTICE => "claim this notice",
        _ => "claim this record",
    };
    let (department, kind) = (&entry.department, entry.kind.as_str());
    Alert {
        id: alert_id(
            &entry.record_id,
            Some(department),
            &entry.rule,
            level.as_str(),
        ),
        record_id: entry.record_id.clone(),
        department: Some(department.clone()),
        kind: entry.kind,
        level: level.as_str().into(),
        rule: entry.rule.clone(),
        policy: entry.policy.clone(),
        event_at: Some(entry.pushed_at),
        due_at: Some(entry.due_at),
        calendar_version: entry.calendar_version.clone(),
        at: now,
        message: match level {
            AlertLevel::DueSoon => format!("{department} must {what} ({kind}) soon"),
            AlertLevel::Overdue => {
                format!("{department} did not {what} ({kind}) by its deadline")
            }
            _ => format!("{department} still did not {what} ({kind}); escalated"),
        },
    }
}
