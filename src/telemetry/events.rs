//! One function per observable occurrence: each logs (personal data masked) and updates its
//! metrics in one place, so a log line and a counter can never disagree.

use std::time::Duration;

use super::METRICS;
use crate::mask::mask;

/// A source record was published.
pub fn record_accepted(adapter: &str, record_id: &str, index: usize) {
    METRICS
        .ingested
        .with_label_values(&[adapter, "accepted"])
        .inc();
    tracing::debug!(adapter, record_id, index, "record accepted");
}

/// A source record had already been published with the same content.
pub fn record_duplicate(adapter: &str, record_id: &str, index: usize) {
    METRICS
        .ingested
        .with_label_values(&[adapter, "duplicate"])
        .inc();
    tracing::info!(
        adapter,
        record_id,
        index,
        "duplicate record answered, not published again"
    );
}

/// An input was rejected and written to the DLQ.
pub fn record_rejected(
    adapter: &str,
    stage: &str,
    reason: &str,
    index: Option<usize>,
    detail: &str,
    dlq_id: &str,
) {
    METRICS
        .ingested
        .with_label_values(&[adapter, "rejected"])
        .inc();
    METRICS
        .dlq
        .with_label_values(&[adapter, stage, reason])
        .inc();
    tracing::warn!(adapter, stage, reason, index, dlq_id, detail = %mask(detail), "record rejected to the DLQ");
}

/// Messages were acknowledged by the bus.
pub fn published(topic: &str, count: usize) {
    METRICS
        .published
        .with_label_values(&[topic])
        .inc_by(count as u64);
}

/// The time from receipt to bus acknowledgement, once per record.
pub fn pipeline_latency(adapter: &str, elapsed: Duration, records: usize) {
    let h = METRICS.pipeline_latency.with_label_values(&[adapter]);
    for _ in 0..records {
        h.observe(elapsed.as_secs_f64());
    }
}

/// A bus operation failed.
pub fn bus_error(operation: &str, error: &dyn std::fmt::Display) {
    METRICS.bus_errors.with_label_values(&[operation]).inc();
    tracing::error!(operation, error = %error, "bus operation failed");
}

/// A record was published; `seconds` since its business decision.
pub fn pushed(adapter: &str, kind: &str, seconds: f64) {
    METRICS
        .push_latency
        .with_label_values(&[adapter, kind])
        .observe(seconds);
}

/// A department claimed a record `seconds` after it was pushed.
pub fn claimed(department: &str, kind: &str, seconds: f64) {
    METRICS
        .claim_latency
        .with_label_values(&[department, kind])
        .observe(seconds);
    tracing::info!(department, kind, seconds, "record claimed");
}

/// `count` deadlines of one department, kind and rule were missed (in one burst of the ledger).
pub fn deadline_breaches(department: &str, kind: &str, rule: &str, count: u64) {
    METRICS
        .breaches
        .with_label_values(&[department, kind, rule])
        .inc_by(count);
    tracing::warn!(department, kind, rule, count, "deadline missed");
}

/// A deadline could not be computed: the calendar has no data for the year.
pub fn calendar_missing(record_id: &str, problem: &str) {
    METRICS.deadline_uncomputable.inc();
    tracing::warn!(record_id, problem, "deadline not computed");
}

/// Whether the policy profile in force is outside its period today: the gauge, and a log line
/// when that changes (at start-up, and when the period ends while the gateway runs).
pub fn policy_period(policy: &str, out_of_period: Option<&str>) {
    static LAST: std::sync::Mutex<Option<(String, bool)>> = std::sync::Mutex::new(None);
    METRICS.policy_out_of_period.reset();
    METRICS
        .policy_out_of_period
        .with_label_values(&[policy])
        .set(i64::from(out_of_period.is_some()));
    let now = (policy.to_string(), out_of_period.is_some());
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if last.as_ref() != Some(&now) {
        match out_of_period {
            Some(why) => tracing::warn!(
                policy,
                why,
                "records are decided under a policy profile outside the period it is in force: choose the profile of the regulation in force"
            ),
            None => tracing::info!(policy, "the policy profile is in force"),
        }
        *last = Some(now);
    }
}

/// A webhook delivery attempt.
pub fn delivery_attempt(department: &str, outcome: &str, record_id: &str, detail: &str) {
    METRICS
        .delivery_attempts
        .with_label_values(&[department, outcome])
        .inc();
    if outcome == "ok" {
        tracing::debug!(department, record_id, "webhook delivered");
    } else {
        tracing::warn!(department, record_id, outcome, detail = %mask(detail), "webhook delivery failed");
    }
}

/// A message on a ledger topic is not a ledger event; it went to the DLQ.
pub fn ledger_event_rejected(topic: &str, detail: &str, dlq_id: &str) {
    METRICS
        .dlq
        .with_label_values(&["ledger", "ledger", "not_a_ledger_event"])
        .inc();
    tracing::warn!(topic, dlq_id, detail = %mask(detail), "ledger event rejected to the DLQ");
}
