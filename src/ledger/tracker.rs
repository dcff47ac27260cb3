//! The deadline tracker: at each tick it publishes the alerts that raise entries to a new level
//! (due soon, overdue, escalated) — the ledger applies them like any other event — records
//! lapsed inquiries as deemed agreed, purges what retention says, sends the daily digests,
//! refreshes the gauges and publishes the alerts the ledger derived. The level of an entry at a
//! given instant is a pure function (`levels`); tests drive it with explicit times, never with
//! `sleep`. Of several gateways sharing a ledger, the one holding the tracker lease decides.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, FixedOffset};
use tokio::sync::watch;

use super::projector::Shared;
use super::store::DigestRow;
use super::store::{LedgerError, LedgerStore};
use super::{alert_id, rfc3339, rules, Alert};
use crate::bus::{Bus, Message};
use crate::schema::RecordKind;
use crate::telemetry::{events, METRICS};

pub use super::levels::{due_scan_bound, level_at, level_due, DUE_SOON_HORIZON};

/// The alerts due at `now`: for every entry whose open obligation has reached a higher level
/// than the one raised so far, the alert that raises it (alert.v1). Publishing them is the
/// tracker's; the ledger applies them like any other event, so the levels are part of what a
/// rebuild restores. `published` holds the ids this tracker published and the ledger may not
/// have applied yet; they are not published again.
pub async fn due_alerts(
    ledger: &dyn LedgerStore,
    shared: &Shared,
    now: DateTime<FixedOffset>,
    published: &std::collections::HashSet<String>,
) -> Result<Vec<Alert>, LedgerError> {
    let mut out = Vec::new();
    let bound = due_scan_bound(&shared.policies, &shared.calendar, now);
    for entry in ledger.entries_due_before(bound).await? {
        let Some(policy) = shared.policies.get(&entry.policy) else {
            continue;
        };
        let level = level_due(entry.due_at, policy, &shared.calendar, now);
        if level <= entry.alert_level {
            continue;
        }
        let alert = super::levels::raise(&entry, level, now);
        if !published.contains(&alert.id) {
            out.push(alert);
        }
    }
    Ok(out)
}

/// The alert.v1 message of an alert.
pub fn alert_message(shared: &Shared, alert: &Alert) -> Message {
    let event = crate::pipeline::envelope(
        RecordKind::Alert,
        &alert.id,
        "/shenguan/tracker",
        &alert.record_id,
        alert.at,
        alert.data(),
    );
    Message {
        topic: shared.topics.name(RecordKind::Alert),
        key: alert.record_id.clone(),
        payload: serde_json::to_vec(&event).expect("JSON"),
    }
}

/// Raises what is due at `now`: publishes the alerts and returns them.
pub async fn raise_due(
    ledger: &dyn LedgerStore,
    bus: &dyn Bus,
    shared: &Shared,
    now: DateTime<FixedOffset>,
    published: &mut std::collections::HashSet<String>,
) -> anyhow::Result<Vec<Alert>> {
    let alerts = due_alerts(ledger, shared, now, published).await?;
    if alerts.is_empty() {
        return Ok(alerts);
    }
    let messages = alerts.iter().map(|a| alert_message(shared, a)).collect();
    bus.publish(messages).await?;
    events::published(&shared.topics.name(RecordKind::Alert), alerts.len());
    published.extend(alerts.iter().map(|a| a.id.clone()));
    Ok(alerts)
}

/// 逾期不回复的视为同意: for every inquiry whose reply deadline passed before `now` under a profile
/// that deems silence agreement, the `deemed_agreed` feedback event (feedback.v1) the gateway
/// records on the receiver's behalf. The event id is fixed per inquiry and receiver, so
/// publishing it again changes nothing; the projector closes the entry and tells both sides.
pub async fn deemed_agreed(
    ledger: &dyn LedgerStore,
    shared: &Shared,
    now: DateTime<FixedOffset>,
) -> Result<Vec<Message>, LedgerError> {
    let mut out = Vec::new();
    for (entry, _) in ledger
        .obligations(rules::REPLY_INQUIRY, None, 10_000)
        .await?
    {
        let Some((rules::REPLY_INQUIRY, due)) = entry.obligation() else {
            continue;
        };
        let deems = shared
            .policies
            .get(&entry.policy)
            .and_then(|p| p.rule(rules::REPLY_INQUIRY))
            .is_some_and(|r| r.deemed_agreed_when_late);
        if !deems || now <= due {
            continue;
        }
        let id = alert_id(
            &entry.record_id,
            Some(&entry.department),
            rules::REPLY_INQUIRY,
            "deemed_agreed_feedback",
        );
        let data = serde_json::json!({
            "record_id": entry.record_id,
            "department": entry.department,
            "feedback_type": "deemed_agreed",
            "agreed": true,
            "due_at": rfc3339(due),
            "actor": "shenguan",
            "content": "逾期不回复的视为同意: no reply by the deadline",
            "at": rfc3339(due),
        });
        let event = crate::pipeline::envelope(
            RecordKind::Feedback,
            &id,
            "/shenguan/tracker",
            &entry.record_id,
            now,
            data,
        );
        out.push(Message {
            topic: shared.topics.name(RecordKind::Feedback),
            key: entry.record_id.clone(),
            payload: serde_json::to_vec(&event).expect("JSON"),
        });
    }
    Ok(out)
}

/// The daily digest for each catalog department at `now` (alert.v1, level `digest`), or nothing
/// when the day is not a working day. Every catalog department gets one, with zeros when it has
/// nothing open, so a missing digest means a problem, not a quiet day.
pub async fn digests(
    ledger: &dyn LedgerStore,
    shared: &Shared,
    now: DateTime<FixedOffset>,
) -> Result<Vec<Message>, LedgerError> {
    let local = now.with_timezone(&crate::adapter::convert::shanghai());
    let today = local.date_naive();
    if !shared.calendar.is_working_day(today).unwrap_or(false) {
        return Ok(Vec::new());
    }
    let start = |d: chrono::NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .and_then(|t| {
                t.and_local_timezone(crate::adapter::convert::shanghai())
                    .single()
            })
            .unwrap_or(now)
    };
    let month = today.with_day0(0).unwrap_or(today);
    let counts = ledger
        .digest_counts(start(today), start(month), now)
        .await?;
    let mut out = Vec::new();
    for d in &shared.catalog.departments {
        let row = counts
            .iter()
            .find(|r| r.department == d.code)
            .cloned()
            .unwrap_or(DigestRow {
                department: d.code.clone(),
                ..DigestRow::default()
            });
        let subject = format!("digest/{}/{today}", d.code);
        let id = alert_id(&subject, Some(&d.code), "daily_digest", "digest");
        let data = serde_json::json!({
            "record_id": subject,
            "department": d.code,
            "level": "digest",
            "rule": "daily_digest",
            "at": rfc3339(now),
            "message": format!(
                "{} 每日汇总 {today}: 待认领 {}, 今日已认领 {}, 本月未认领 {}, 已超期 {}",
                d.name, row.to_claim, row.claimed_today, row.unclaimed_this_month, row.overdue
            ),
            "digest": {
                "date": today.to_string(),
                "to_claim": row.to_claim,
                "claimed_today": row.claimed_today,
                "unclaimed_this_month": row.unclaimed_this_month,
                "overdue": row.overdue,
                "open_verifications": row.open_verifications,
                "open_inquiries": row.open_inquiries,
            },
        });
        let event = crate::pipeline::envelope(
            RecordKind::Alert,
            &id,
            "/shenguan/tracker",
            &subject,
            now,
            data,
        );
        out.push(Message {
            topic: shared.topics.name(RecordKind::Alert),
            key: subject,
            payload: serde_json::to_vec(&event).expect("JSON"),
        });
    }
    Ok(out)
}

/// Refreshes the unclaimed/overdue/oldest gauges and the unrouted gauge from the counters the
/// ledger keeps with its entries (constant time, whatever the number of open items). Every
/// catalog department keeps its series, at 0 when it has nothing open.
pub async fn refresh_gauges(
    ledger: &dyn LedgerStore,
    shared: &Shared,
    now: DateTime<FixedOffset>,
) -> Result<(), LedgerError> {
    if let Some(policy) = shared.policies.get(&shared.policy) {
        let why = super::machine::out_of_period(policy, now);
        events::policy_period(&policy.name, why.as_deref());
    }
    let rows = ledger.gauges().await?;
    METRICS.unclaimed.reset();
    METRICS.overdue.reset();
    METRICS.oldest_unclaimed.reset();
    for d in &shared.catalog.departments {
        METRICS.register_department(&d.code, d.webhook.is_some());
    }
    for super::store::GaugeRow {
        department,
        kind,
        unclaimed,
        overdue,
        oldest,
    } in rows
    {
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
    for kind in [RecordKind::Claim, RecordKind::Feedback, RecordKind::Alert] {
        METRICS.waiting.with_label_values(&[kind.as_str()]).set(0);
    }
    for (kind, n) in ledger.waiting_counts().await? {
        METRICS.waiting.with_label_values(&[&kind]).set(n);
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

/// When the daily digest goes out, and where the day it last went out is kept.
pub struct DigestSchedule {
    /// Local time (Asia/Shanghai) from which the day's digest is sent, on working days.
    pub at: chrono::NaiveTime,
    pub state: Arc<dyn crate::state::StateStore>,
}

const DIGEST_CHECKPOINT: &str = "tracker:daily-digest";

/// Sends the day's digests once, on a working day at or after the scheduled time.
async fn send_digests(
    ledger: &dyn LedgerStore,
    bus: &dyn Bus,
    shared: &Shared,
    schedule: &DigestSchedule,
    now: DateTime<FixedOffset>,
) -> anyhow::Result<usize> {
    let local = now.with_timezone(&crate::adapter::convert::shanghai());
    let today = local.date_naive().to_string();
    if local.time() < schedule.at
        || schedule
            .state
            .checkpoint(DIGEST_CHECKPOINT)
            .await?
            .as_deref()
            == Some(today.as_str())
    {
        return Ok(0);
    }
    let messages = digests(ledger, shared, now).await?;
    let n = messages.len();
    if n > 0 {
        bus.publish(messages).await?;
        events::published(&shared.topics.name(RecordKind::Alert), n);
    }
    schedule
        .state
        .save_checkpoint(DIGEST_CHECKPOINT, today)
        .await?;
    Ok(n)
}

/// Applies the retention settings: finished ledger records are purged — a purge event on the
/// claim topic for each, which the ledger applies like any other, so a rebuild purges them too
/// — and old DLQ entries are deleted.
pub async fn apply_retention(
    ledger: &dyn LedgerStore,
    bus: &dyn Bus,
    shared: &Shared,
    retention: &crate::config::RetentionSettings,
    now: DateTime<FixedOffset>,
) -> anyhow::Result<(u64, u64)> {
    let day = chrono::Duration::days(1);
    let mut purged = (0, 0);
    if retention.ledger_days > 0 {
        let before = now - day * retention.ledger_days as i32;
        loop {
            let ids = ledger.finished_before(before, 500).await?;
            if ids.is_empty() {
                break;
            }
            let n = ids.len();
            let messages: Vec<Message> = ids
                .iter()
                .map(|id| purge_message(shared, id, before, now))
                .collect();
            bus.publish(messages).await?;
            events::published(&shared.topics.name(RecordKind::Claim), n);
            purged.0 += n as u64;
            // The ledger applies them before the next round finds the same records again.
            if !wait_until_gone(ledger, &ids, Duration::from_secs(30)).await {
                break;
            }
        }
    }
    if retention.dlq_days > 0 {
        let age = Duration::from_secs(86_400 * u64::from(retention.dlq_days));
        purged.1 = bus
            .retain(&shared.topics.name(RecordKind::Dlq), age)
            .await?;
    }
    if purged != (0, 0) {
        tracing::info!(
            ledger_records = purged.0,
            dlq_entries = purged.1,
            "retention: deleted what is past its retention period"
        );
    }
    Ok(purged)
}

/// The purge event (claim.v1, action `purge`) for a finished record; its id is fixed per record.
pub fn purge_message(
    shared: &Shared,
    record_id: &str,
    before: DateTime<FixedOffset>,
    now: DateTime<FixedOffset>,
) -> Message {
    let mut purge = super::ClaimEvent::new(
        record_id,
        &shared.catalog.bureau,
        super::ClaimAction::Purge,
        now,
    );
    purge.actor = Some("shenguan".into());
    purge.reason = Some(format!(
        "retention: finished, no activity since {}",
        rfc3339(before)
    ));
    let id = alert_id(record_id, None, "retention", "purge");
    let event = crate::pipeline::envelope(
        RecordKind::Claim,
        &id,
        "/shenguan/tracker",
        record_id,
        now,
        serde_json::to_value(&purge).expect("a claim serialises"),
    );
    Message {
        topic: shared.topics.name(RecordKind::Claim),
        key: record_id.to_string(),
        payload: serde_json::to_vec(&event).expect("JSON"),
    }
}

/// Waits until the ledger no longer holds any of `ids` (the projector applied their purges).
async fn wait_until_gone(ledger: &dyn LedgerStore, ids: &[String], within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        let mut left = false;
        for id in ids {
            if matches!(ledger.record(id).await, Ok(Some(_))) {
                left = true;
                break;
            }
        }
        if !left {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// How long the tracker's lease lasts: another instance takes over when the holder stops
/// renewing it for this many ticks.
const LEASE_TICKS: u32 = 3;

/// How the tracker runs.
pub struct TrackerOptions {
    /// Time between two ticks.
    pub interval: Duration,
    /// The daily digest, if sent.
    pub digest: Option<DigestSchedule>,
    pub retention: crate::config::RetentionSettings,
}

/// Runs the tracker every `options.interval` until `stop`.
pub async fn run(
    ledger: Arc<dyn LedgerStore>,
    bus: Arc<dyn Bus>,
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    options: TrackerOptions,
    mut stop: watch::Receiver<bool>,
) {
    let TrackerOptions {
        interval,
        digest,
        retention,
    } = options;
    let owner = format!("tracker-{}", uuid::Uuid::new_v4());
    let mut retained_at: Option<std::time::Instant> = None;
    // Alerts published and perhaps not applied yet, with when: forgotten after a while, by
    // which time the ledger has applied them (or the bus lost them and they are due again).
    let mut published: std::collections::HashSet<String> = Default::default();
    let mut published_at = std::time::Instant::now();
    loop {
        let now = clock.now();
        if published_at.elapsed() > Duration::from_secs(600) {
            published.clear();
            published_at = std::time::Instant::now();
        }
        // One gateway of those sharing a ledger decides what is due; the others stand by.
        let leader = match ledger
            .lease("tracker", &owner, interval * LEASE_TICKS)
            .await
        {
            Ok(held) => held,
            Err(e) => {
                tracing::error!(error = %e, "tracker could not renew its lease");
                false
            }
        };
        if leader {
            if retained_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                retained_at = Some(std::time::Instant::now());
                if let Err(e) =
                    apply_retention(ledger.as_ref(), bus.as_ref(), &shared, &retention, now).await
                {
                    tracing::error!(error = %e, "retention could not delete expired data");
                }
            }
            if let Err(e) =
                raise_due(ledger.as_ref(), bus.as_ref(), &shared, now, &mut published).await
            {
                tracing::error!(error = %e, "tracker could not raise alerts");
            }
            match deemed_agreed(ledger.as_ref(), &shared, now).await {
                Ok(messages) if !messages.is_empty() => {
                    let n = messages.len();
                    match bus.publish(messages).await {
                        Ok(()) => events::published(&shared.topics.name(RecordKind::Feedback), n),
                        Err(e) => events::bus_error("publish", &e),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "tracker could not look for lapsed inquiries")
                }
            }
            if let Some(schedule) = &digest {
                if let Err(e) =
                    send_digests(ledger.as_ref(), bus.as_ref(), &shared, schedule, now).await
                {
                    tracing::error!(error = %e, "tracker could not send the daily digest");
                }
            }
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
