//! The deadline tracker: at each tick it raises alerts once per level (due soon, overdue,
//! escalated) for entries still waiting to be claimed, refreshes the gauges, and publishes the
//! alert outbox. The level of an entry at a given instant is a pure function of the entry, its
//! policy, the calendar and the instant; tests drive it with explicit times, never with `sleep`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use tokio::sync::watch;

use super::projector::Shared;
use super::store::{LedgerError, LedgerStore};
use super::{alert_id, Alert, AlertLevel, Entry};
use crate::bus::{Bus, Message};
use crate::deadline::{Calendar, Policy};
use crate::schema::RecordKind;
use crate::telemetry::{events, METRICS};

/// The alert level an unclaimed entry has reached at `now`.
pub fn level_at(
    entry: &Entry,
    policy: &Policy,
    calendar: &Calendar,
    now: DateTime<FixedOffset>,
) -> AlertLevel {
    let Some(due) = entry.claim_due_at else {
        return AlertLevel::None;
    };
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

/// Raises what is due at `now`; returns the alerts this instance raised.
pub async fn raise_due(
    ledger: &dyn LedgerStore,
    shared: &Shared,
    now: DateTime<FixedOffset>,
) -> Result<Vec<Alert>, LedgerError> {
    let mut raised = Vec::new();
    for entry in ledger.entries_due_before(now + DUE_SOON_HORIZON).await? {
        let Some(policy) = shared.policies.get(&entry.policy) else {
            continue;
        };
        let level = level_at(&entry, policy, &shared.calendar, now);
        if level <= entry.alert_level {
            continue;
        }
        let rule = entry.claim_rule.clone().unwrap_or_default();
        let alert = Alert {
            id: alert_id(
                &entry.record_id,
                Some(&entry.department),
                &rule,
                level.as_str(),
            ),
            record_id: entry.record_id.clone(),
            department: Some(entry.department.clone()),
            kind: entry.kind,
            level: level.as_str().into(),
            rule: rule.clone(),
            policy: entry.policy.clone(),
            event_at: Some(entry.pushed_at),
            due_at: entry.claim_due_at,
            calendar_version: entry.calendar_version.clone(),
            at: now,
            message: match level {
                AlertLevel::DueSoon => format!(
                    "{} must claim this {} record soon",
                    entry.department,
                    entry.kind.as_str()
                ),
                AlertLevel::Overdue => format!(
                    "{} has not claimed this {} record by its deadline",
                    entry.department,
                    entry.kind.as_str()
                ),
                _ => format!(
                    "{} is still not claiming this {} record; escalated",
                    entry.department,
                    entry.kind.as_str()
                ),
            },
        };
        if ledger.raise_alert(alert.clone(), level).await? {
            if level >= AlertLevel::Overdue && entry.alert_level < AlertLevel::Overdue {
                events::deadline_breach(&entry.department, entry.kind.as_str(), &rule);
            }
            raised.push(alert);
        }
    }
    Ok(raised)
}

/// Refreshes the unclaimed/overdue/oldest gauges and the unrouted gauge from the ledger. Every
/// catalog department keeps its series, at 0 when it has nothing open.
pub async fn refresh_gauges(
    ledger: &dyn LedgerStore,
    shared: &Shared,
    now: DateTime<FixedOffset>,
) -> Result<(), LedgerError> {
    let rows = ledger.gauges(now).await?;
    METRICS.unclaimed.reset();
    METRICS.overdue.reset();
    METRICS.oldest_unclaimed.reset();
    for d in &shared.catalog.departments {
        METRICS.register_department(&d.code, d.webhook.is_some());
    }
    for (department, kind, unclaimed, overdue, oldest) in rows {
        METRICS
            .unclaimed
            .with_label_values(&[&department, &kind])
            .set(unclaimed);
        METRICS
            .overdue
            .with_label_values(&[&department, &kind])
            .set(overdue);
        let age = oldest.map(|t| (now - t).num_seconds().max(0)).unwrap_or(0);
        METRICS
            .oldest_unclaimed
            .with_label_values(&[&department, &kind])
            .set(age as f64);
    }
    for kind in [
        RecordKind::Approval,
        RecordKind::Supervision,
        RecordKind::Notice,
    ] {
        METRICS.unrouted.with_label_values(&[kind.as_str()]).set(0);
    }
    for (kind, n) in ledger.unrouted_counts().await? {
        METRICS.unrouted.with_label_values(&[&kind]).set(n);
    }
    Ok(())
}

/// Publishes queued alerts; each is removed from the outbox only after the bus acknowledged it.
pub async fn publish_outbox(
    ledger: &dyn LedgerStore,
    bus: &dyn Bus,
    shared: &Shared,
    owner: &str,
) -> Result<usize, LedgerError> {
    // The lease keeps other instances off these alerts while this one publishes them.
    let pending = ledger
        .claim_outbox(owner, Duration::from_secs(30), 500)
        .await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let topic = shared.topics.name(RecordKind::Alert);
    let messages = pending
        .iter()
        .map(|(_, record_id, payload)| Message {
            topic: topic.clone(),
            key: record_id.clone(),
            payload: payload.clone(),
        })
        .collect();
    match bus.publish(messages).await {
        Ok(()) => {
            let n = pending.len();
            events::published(&topic, n);
            ledger
                .outbox_done(pending.into_iter().map(|(id, _, _)| id).collect())
                .await?;
            Ok(n)
        }
        Err(e) => {
            events::bus_error("publish", &e);
            Ok(0)
        }
    }
}

/// Bus reachability and the ledger consumer's lag behind the end of each topic.
pub async fn bus_health(ledger: &dyn LedgerStore, bus: &dyn Bus, shared: &Shared) {
    let up = bus.ready().await.is_ok();
    METRICS.bus_up.set(i64::from(up));
    if !up {
        return;
    }
    let (Ok(ends), Ok(positions)) = (
        bus.end_offsets(&shared.ledger_topics()).await,
        ledger.positions().await,
    ) else {
        return;
    };
    let mut lag: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for ((topic, partition), end) in &ends {
        let position = positions
            .get(&(topic.clone(), *partition))
            .copied()
            .unwrap_or(0);
        *lag.entry(topic.as_str()).or_default() += (end - position).max(0);
    }
    for (topic, n) in lag {
        METRICS
            .consumer_lag
            .with_label_values(&["ledger", topic])
            .set(n);
    }
}

/// The source of "now" for the tracker.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<FixedOffset>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<FixedOffset> {
        crate::adapter::convert::now_shanghai()
    }
}

/// Runs the tracker every `interval` until `stop`.
pub async fn run(
    ledger: Arc<dyn LedgerStore>,
    bus: Arc<dyn Bus>,
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let owner = format!("tracker-{}", uuid::Uuid::new_v4());
    loop {
        let now = clock.now();
        if let Err(e) = raise_due(ledger.as_ref(), &shared, now).await {
            tracing::error!(error = %e, "tracker could not raise alerts");
        }
        if let Err(e) = refresh_gauges(ledger.as_ref(), &shared, now).await {
            tracing::error!(error = %e, "tracker could not refresh gauges");
        }
        if let Err(e) = publish_outbox(ledger.as_ref(), bus.as_ref(), &shared, &owner).await {
            tracing::error!(error = %e, "tracker could not publish alerts");
        }
        bus_health(ledger.as_ref(), bus.as_ref(), &shared).await;
        METRICS
            .calendar_days_remaining
            .set(shared.calendar.days_remaining(now.date_naive()) as f64);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}
