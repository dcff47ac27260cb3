//! Signed webhook delivery to department systems that have no Kafka client.
//!
//! Each record routed to a department with a `webhook` in the catalog is POSTed to it as its
//! CloudEvent (`application/cloudevents+json`), signed Stripe-style: header
//! `X-Shenguan-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, so the
//! receiver can check both the body and its freshness. A 2xx answer is a delivery, recorded as a
//! `deliver` event on the claim topic; anything else is retried with exponential backoff, and
//! after the last attempt the event goes to the DLQ (stage `deliver`) and stops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::watch;

use crate::bus::Message;
use crate::config::DeliverySettings;
use crate::ingest::Ingestor;
use crate::ledger::projector::Shared;
use crate::ledger::store::LedgerStore;
use crate::ledger::tracker::Clock;
use crate::ledger::{Entry, RecordRow};
use crate::pipeline::{RecordError, Rejection, Stage};
use crate::schema::RecordKind;
use crate::telemetry::events;

/// The signature header: `t=<unix seconds>,v1=<hex hmac>`.
pub const SIGNATURE_HEADER: &str = "x-shenguan-signature";

/// Signs a body: `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Checks a signature header in constant time (for receivers written in Rust, and the tests).
pub fn verify(secret: &[u8], header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = hex::decode(x).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

pub mod notify;

pub(crate) struct Target {
    url: String,
    secret: Vec<u8>,
}

/// Every catalog department's webhook with its secret, read from its environment variable; a
/// missing one is an error now, not a failed delivery later.
pub(crate) fn webhook_targets(shared: &Shared) -> anyhow::Result<HashMap<String, Target>> {
    let mut targets = HashMap::new();
    let mut missing = Vec::new();
    for d in &shared.catalog.departments {
        if let Some(w) = &d.webhook {
            match std::env::var(&w.secret_env) {
                Ok(secret) if !secret.is_empty() => {
                    targets.insert(
                        d.code.clone(),
                        Target {
                            url: w.url.clone(),
                            secret: secret.into_bytes(),
                        },
                    );
                }
                _ => missing.push(format!("{} (department {})", w.secret_env, d.code)),
            }
        }
    }
    anyhow::ensure!(
        missing.is_empty(),
        "webhook secret environment variable(s) not set: {}",
        missing.join(", ")
    );
    Ok(targets)
}

/// The wait after `attempts` failures: doubled each time from the initial backoff, capped.
pub(crate) fn backoff(settings: &DeliverySettings, attempts: u32) -> Duration {
    let factor = 2u64.saturating_pow(attempts.saturating_sub(1).min(30));
    Duration::from_millis(
        settings
            .initial_backoff_ms
            .saturating_mul(factor)
            .min(settings.max_backoff_ms),
    )
}

/// POSTs a signed CloudEvent to a department's webhook; the reason when it was not a delivery.
pub(crate) async fn post_signed(
    client: &reqwest::Client,
    target: &Target,
    department: &str,
    body: Vec<u8>,
    timeout_ms: u64,
) -> Option<String> {
    let signature = sign(&target.secret, chrono::Utc::now().timestamp(), &body);
    let result = client
        .post(&target.url)
        .header("content-type", "application/cloudevents+json")
        .header(SIGNATURE_HEADER, signature)
        .header("x-shenguan-department", department)
        .body(body)
        .send()
        .await;
    match result {
        Ok(r) if r.status().is_success() => None,
        Ok(r) => Some(format!("answered {}", r.status())),
        Err(e) if e.is_timeout() => Some(format!("no answer within {timeout_ms} ms")),
        Err(e) => Some(format!("cannot connect: {e}")),
    }
}

pub struct Deliverer {
    ledger: Arc<dyn LedgerStore>,
    ingestor: Arc<Ingestor>,
    shared: Arc<Shared>,
    settings: DeliverySettings,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
    targets: HashMap<String, Target>,
}

impl Deliverer {
    /// Reads every webhook secret from its environment variable; a missing one is an error now,
    /// not a failed delivery later.
    pub fn new(
        ledger: Arc<dyn LedgerStore>,
        ingestor: Arc<Ingestor>,
        shared: Arc<Shared>,
        settings: DeliverySettings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Deliverer> {
        let targets = webhook_targets(&shared)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the webhook client: {e}"))?;
        Ok(Deliverer {
            ledger,
            ingestor,
            shared,
            settings,
            clock,
            client,
            targets,
        })
    }

    /// Delivers until `stop`.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        if self.targets.is_empty() {
            return;
        }
        let interval = Duration::from_millis(self.settings.interval_ms.max(10));
        loop {
            if let Err(e) = self.deliver_due().await {
                tracing::error!(error = %e, "webhook delivery round failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One round: every entry due for an attempt now.
    pub async fn deliver_due(&self) -> anyhow::Result<usize> {
        let departments: Vec<String> = self.targets.keys().cloned().collect();
        let now = self.clock.now();
        let due = self.ledger.due_deliveries(departments, now, 100).await?;
        let n = due.len();
        for (entry, record, attempts) in due {
            self.attempt(&entry, &record, attempts).await?;
        }
        Ok(n)
    }

    fn backoff(&self, attempts: u32) -> Duration {
        backoff(&self.settings, attempts)
    }

    async fn attempt(
        &self,
        entry: &Entry,
        record: &RecordRow,
        attempts: u32,
    ) -> anyhow::Result<()> {
        let target = &self.targets[&entry.department];
        let event = crate::pipeline::envelope(
            record.kind,
            &record.event_id,
            &format!("/shenguan/adapters/{}", record.adapter),
            &record.record_id,
            record.published_at,
            (*record.data).clone(),
        );
        let body = serde_json::to_vec(&event)?;
        let now = self.clock.now();
        let failure = post_signed(
            &self.client,
            target,
            &entry.department,
            body.clone(),
            self.settings.timeout_ms,
        )
        .await;
        let attempts = attempts + 1;
        match failure {
            None => {
                events::delivery_attempt(&entry.department, "ok", &entry.record_id, "");
                self.ledger
                    .delivery_done(
                        entry.record_id.clone(),
                        entry.department.clone(),
                        attempts,
                        "ok",
                    )
                    .await?;
                let data = json!({
                    "record_id": entry.record_id, "department": entry.department, "action": "deliver",
                    "at": crate::ledger::event_time(now), "channel": "rest", "actor": "webhook",
                });
                let id = uuid::Uuid::new_v4().to_string();
                let event = crate::pipeline::envelope(
                    RecordKind::Claim,
                    &id,
                    "/shenguan/delivery",
                    &entry.record_id,
                    now,
                    data,
                );
                let message = Message {
                    topic: self.shared.topics.name(RecordKind::Claim),
                    key: entry.record_id.clone(),
                    payload: serde_json::to_vec(&event)?,
                };
                self.ingestor.bus.publish(vec![message]).await?;
            }
            Some(reason) if attempts >= self.settings.max_attempts => {
                events::delivery_attempt(
                    &entry.department,
                    "dead_lettered",
                    &entry.record_id,
                    &reason,
                );
                let rejection = Rejection {
                    index: None,
                    stage: Stage::Deliver,
                    reason: "webhook_failed",
                    errors: vec![RecordError {
                        index: None,
                        path: target.url.clone(),
                        reason: format!(
                            "delivery to {} failed {attempts} times; last: {reason}",
                            entry.department
                        ),
                    }],
                    original: body,
                    charset: "utf-8".into(),
                    content_type: "application/cloudevents+json",
                    unit: crate::pipeline::Unit::Body,
                    business_key: record
                        .data
                        .pointer("/source/business_key")
                        .and_then(|v| v.as_str())
                        .map(str::to_string),
                };
                let adapter = if record.adapter.is_empty() {
                    "delivery"
                } else {
                    record.adapter.as_str()
                };
                let (dlq_id, message) = self.ingestor.dlq_message(adapter, &rejection, now, None);
                self.ingestor.bus.publish(vec![message]).await?;
                events::record_rejected(
                    adapter,
                    "deliver",
                    "webhook_failed",
                    None,
                    &rejection.errors[0].reason,
                    &dlq_id,
                );
                self.ledger
                    .delivery_done(
                        entry.record_id.clone(),
                        entry.department.clone(),
                        attempts,
                        "dead",
                    )
                    .await?;
            }
            Some(reason) => {
                events::delivery_attempt(&entry.department, "failed", &entry.record_id, &reason);
                let next =
                    now + chrono::Duration::from_std(self.backoff(attempts)).unwrap_or_default();
                self.ledger
                    .delivery_retry(
                        entry.record_id.clone(),
                        entry.department.clone(),
                        attempts,
                        next,
                        reason,
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_detect_tampering() {
        let s = sign(b"secret", 1_767_580_200, b"{\"a\":1}");
        assert!(s.starts_with("t=1767580200,v1="));
        assert!(verify(b"secret", &s, b"{\"a\":1}"));
        assert!(!verify(b"secret", &s, b"{\"a\":2}"));
        assert!(!verify(b"other", &s, b"{\"a\":1}"));
        assert!(!verify(b"secret", "t=1,v1=zz", b"{}"));
    }
}
