//! Alert levels: which level an open obligation has reached at a given instant, and the alert
//! that raises it. Pure: a function of the deadline, the policy, the calendar and the instant;
//! the tracker publishes the alerts and the ledger applies them like any other event.

use chrono::{DateTime, FixedOffset};

use super::{alert_id, rules, Alert, AlertLevel, DueEntry, Entry};
use crate::deadline::{Calendar, Policies, Policy};

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

/// How far ahead of now a deadline can be and still be "due soon" when the calendar cannot say:
/// the due-soon window is a few working hours, and the longest run of days off in the State
/// Council arrangements is 9 days, so three weeks covers it with room to spare.
pub const DUE_SOON_HORIZON: chrono::Duration = chrono::Duration::days(21);

/// The bound below which the tracker reads deadlines at `now`: just past the last instant that
/// is within the longest due-soon window of `policies` in working time
/// ([`Calendar::last_within_working_seconds`]). A deadline at or after it has more working time
/// left than any profile's window, so it has no level to raise yet and is not read: what the
/// tracker reads at each tick is what is due soon or overdue, not every fresh claim due within
/// days. [`DUE_SOON_HORIZON`] from `now` when the calendar has no data for the days ahead.
pub fn due_scan_bound(
    policies: &Policies,
    calendar: &Calendar,
    now: DateTime<FixedOffset>,
) -> DateTime<FixedOffset> {
    let hours = policies
        .names()
        .into_iter()
        .filter_map(|name| policies.get(name))
        .map(|p| p.due_soon_working_hours)
        .max()
        .unwrap_or(0);
    match calendar.last_within_working_seconds(now, hours.saturating_mul(3600)) {
        Ok(last) => last + chrono::Duration::seconds(1),
        Err(_) => now + DUE_SOON_HORIZON,
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    #[test]
    fn the_due_scan_reads_up_to_the_end_of_the_due_soon_window_in_working_time() {
        let (policies, calendar) = (Policies::builtin(), Calendar::builtin());
        let hours = policies
            .names()
            .into_iter()
            .map(|n| policies.get(n).unwrap().due_soon_working_hours)
            .max()
            .unwrap();
        assert_eq!(hours, 8, "the builtin profiles' window");
        // Friday 16:00: the 8 working hours end with the day, and the weekend adds none.
        let friday = at("2026-12-11T16:00:00+08:00");
        let bound = due_scan_bound(&policies, &calendar, friday);
        assert_eq!(bound, at("2026-12-14T00:00:01+08:00"));
        let policy = policies.get("yuanqu-2022").unwrap();
        // A claim due on Monday at 00:00 is due soon on Friday; one due later has no level yet.
        let monday = at("2026-12-14T00:00:00+08:00");
        assert_eq!(
            level_due(monday, policy, &calendar, friday),
            AlertLevel::DueSoon
        );
        assert!(monday < bound);
        let later = at("2026-12-14T23:59:59+08:00");
        assert_eq!(
            level_due(later, policy, &calendar, friday),
            AlertLevel::None
        );
        assert!(later >= bound);
        // Past the calendar's data the horizon is kept.
        let late = at("2026-12-31T20:00:00+08:00");
        assert_eq!(
            due_scan_bound(&policies, &calendar, late),
            late + DUE_SOON_HORIZON
        );
    }
}
