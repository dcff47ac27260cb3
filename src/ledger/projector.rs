//! The projector: consumes the ledger topics (records, claims, feedback, alert levels) from the
//! positions stored in the ledger and applies each message with its new position; the messages
//! already waiting when one arrives (up to [`Projector::burst`]) go into the same transaction,
//! so a burst costs one commit. In live mode it also updates the claim-latency histogram and the
//! breach counter; a rebuild does not, so replaying history never double-counts. A message that
//! is not a ledger event goes to the DLQ with its bytes and the reason.
//!
//! A task of its own receives and decodes the messages as they arrive. Under a backlog, each
//! burst is worked out while the one before it is written ([`super::applier`]); under light
//! traffic the next burst waits for the write and takes everything that arrived meanwhile.
//!
//! A consumer that stops receiving while the topics grow past its positions (a broker that came
//! back without the client noticing) is noticed: the projector compares the topics' ends with
//! its positions when it has been idle for a while, and subscribes again from its positions.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};

use super::applier::{Applier, Written};
use super::port::Outcome;
pub use super::shared::{Shared, LEDGER_KINDS};
use super::store::{LedgerError, LedgerStore, Prepared};
use super::Changes;
use crate::bus::{Bus, BusError, Delivery, Message, Subscription};
use crate::schema::RecordKind;
use crate::telemetry::events;

/// The `id` of a CloudEvent; its other members are skipped unread.
#[derive(serde::Deserialize)]
struct EventId {
    id: String,
}

/// How often the projector looks whether a backlog has queued while it writes a burst.
const BACKLOG_CHECK: Duration = Duration::from_millis(5);

/// How long the projector may receive nothing before it checks that the topics did not grow
/// past its positions meanwhile.
const STALL_CHECK: Duration = Duration::from_secs(10);

/// Why projecting stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

pub struct Projector {
    pub ledger: Arc<dyn LedgerStore>,
    pub bus: Arc<dyn Bus>,
    pub shared: Arc<Shared>,
    /// Ids of events as they are applied, for API calls waiting on their own claim.
    pub applied: broadcast::Sender<String>,
    /// What `/readyz` says about the projector.
    pub status: Arc<ProjectorStatus>,
    /// Most messages applied in one transaction (`[ledger] burst`, 2,000 unless configured).
    pub burst: usize,
}

/// How the projector is doing, for `/readyz`: when it last applied a batch, and since when the
/// topics have grown past its positions without it receiving anything.
#[derive(Debug, Default)]
pub struct ProjectorStatus {
    /// Epoch milliseconds of the last batch applied; 0 before the first.
    last_applied_ms: AtomicI64,
    /// Epoch milliseconds since which it is stalled; 0 when it is not.
    stalled_since_ms: AtomicI64,
    /// How often it subscribed again after a stall.
    resubscribed: AtomicU64,
}

impl ProjectorStatus {
    fn applied(&self) {
        self.last_applied_ms.store(now_ms(), Ordering::Relaxed);
        self.stalled_since_ms.store(0, Ordering::Relaxed);
    }

    fn stalled(&self) {
        let _ = self.stalled_since_ms.compare_exchange(
            0,
            now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        self.resubscribed.fetch_add(1, Ordering::Relaxed);
    }

    /// The lines `/readyz` shows, given how many messages the ledger topics hold past the
    /// ledger's positions (`None` when the bus could not say): `projector_lag: …`, and
    /// `projector_stalled: …` while the topics grow and nothing arrives.
    pub fn readiness(&self, lag: Option<i64>) -> Vec<String> {
        let now = now_ms();
        let last = self.last_applied_ms.load(Ordering::Relaxed);
        let applied = if last == 0 {
            "nothing applied since start".to_string()
        } else {
            format!("last batch applied {} s ago", (now - last).max(0) / 1000)
        };
        let mut out = vec![match lag {
            Some(n) => format!("projector_lag: {n} messages behind the ledger topics; {applied}"),
            None => {
                format!("projector_lag: unknown (the bus did not give the topics' ends); {applied}")
            }
        }];
        let since = self.stalled_since_ms.load(Ordering::Relaxed);
        if since != 0 {
            out.push(format!(
                "projector_stalled: the ledger topics grew past the projector's positions and nothing arrived for {} s; subscribed again {} times",
                (now - since).max(0) / 1000 + STALL_CHECK.as_secs() as i64,
                self.resubscribed.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How many messages the ledger topics hold past the ledger's positions, summed over partitions.
pub async fn lag(
    bus: &dyn Bus,
    ledger: &dyn LedgerStore,
    shared: &Shared,
) -> Result<i64, ProjectError> {
    let ends = bus.end_offsets(&shared.ledger_topics()).await?;
    let positions = ledger.positions().await?;
    Ok(ends
        .iter()
        .map(|(key, end)| (end - positions.get(key).copied().unwrap_or(0)).max(0))
        .sum())
}

impl Projector {
    /// Applies messages until `stop` turns true (live) or, with `until_idle`, until no message
    /// arrived for that long (rebuild). Returns how many messages were applied.
    ///
    /// Receiving runs beside applying: a task reads and decodes the messages as they come while
    /// the previous batch is written, and each batch takes whatever it has queued meanwhile.
    pub async fn run(
        &self,
        mut stop: watch::Receiver<bool>,
        until_idle: Option<Duration>,
        live: bool,
    ) -> Result<u64, ProjectError> {
        let topics = self.shared.ledger_topics();
        let burst = self.burst.max(1);
        let positions = self.ledger.positions().await?;
        let sub = self.bus.assign(&topics, &positions).await?;
        // One burst queued while one is written: double buffering, no more.
        let (tx, mut rx) = mpsc::channel(burst);
        let receiver = Receiver {
            bus: self.bus.clone(),
            ledger: self.ledger.clone(),
            shared: self.shared.clone(),
            status: self.status.clone(),
            topics,
        };
        let mut receiving = tokio::spawn(receiver.run(sub, stop.clone(), until_idle, tx));
        // Stops the receiving task when this returns, whichever way.
        let _receiving = AbortOnDrop(receiving.abort_handle());
        let mut applied = 0u64;
        let mut applier =
            Applier::new(self.ledger.clone(), self.shared.clone(), live, stop.clone());
        loop {
            if *stop.borrow() {
                if let Ok(Some(written)) = applier.finish().await {
                    self.settled(written, live, &mut applied).await;
                }
                return Ok(applied);
            }
            // While a burst is written, the next is taken and worked out beside it only when a
            // backlog has queued (a rebuild, a burst of traffic); otherwise it waits for the write
            // and takes everything that arrived meanwhile, so light traffic still makes bursts.
            let backlog = rx.len() >= burst / 2;
            let written = tokio::select! {
                p = rx.recv(), if !applier.is_writing() || backlog => {
                    let Some(first) = p else {
                        // The receiving task ended: idle after a rebuild, or a failure it
                        // reports.
                        let written = applier.finish().await;
                        let received = (&mut receiving).await;
                        if let Some(w) = written? {
                            self.settled(w, live, &mut applied).await;
                        }
                        return match received {
                            Ok(Ok(())) => Ok(applied),
                            Ok(Err(e)) => Err(e),
                            Err(e) if e.is_cancelled() => Ok(applied),
                            Err(e) => std::panic::resume_unwind(e.into_panic()),
                        };
                    };
                    // Whatever else is already waiting goes into the same transaction: one
                    // commit for a burst instead of one per record.
                    let mut batch = vec![first];
                    while batch.len() < burst {
                        match rx.try_recv() {
                            Ok(p) => batch.push(p),
                            Err(_) => break,
                        }
                    }
                    applier.push(batch.into()).await
                }
                w = applier.written(), if applier.is_writing() => w,
                _ = tokio::time::sleep(BACKLOG_CHECK), if applier.is_writing() && !backlog => continue,
                _ = stop.changed() => continue,
            };
            match written {
                Ok(Some(w)) => self.settled(w, live, &mut applied).await,
                Ok(None) => {}
                // Only a write given up at stop fails.
                Err(_) if *stop.borrow() => return Ok(applied),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// What follows a written burst: the metrics of what it changed, the DLQ entries of what
    /// was not a ledger event, and the ids of its events for the API requests waiting on them.
    async fn settled(&self, (batch, outcomes): Written, live: bool, applied: &mut u64) {
        self.status.applied();
        let mut rejected = Vec::new();
        let mut noted = BurstNotes::default();
        for (outcome, prepared) in outcomes.iter().zip(batch.iter()) {
            *applied += 1;
            let delivery = &prepared.delivery;
            match outcome {
                Outcome::Applied(changes) if live => noted.observe(changes),
                Outcome::Waiting => tracing::info!(
                    topic = %delivery.topic,
                    offset = delivery.offset,
                    "event kept until its record arrives"
                ),
                Outcome::Rejected(e) if live => rejected.push(self.dead_letter(delivery, e)),
                _ => {}
            }
            let id = match prepared.event_id() {
                Some(id) => Some(id.to_string()),
                None => serde_json::from_slice::<EventId>(&delivery.payload)
                    .ok()
                    .map(|e| e.id),
            };
            if let Some(id) = id {
                let _ = self.applied.send(id);
            }
        }
        noted.log();
        if !rejected.is_empty() {
            // The messages are on their topics still; this makes them visible.
            if let Err(e) = self.bus.publish(rejected).await {
                events::bus_error("publish", &e);
            }
        }
    }

    /// The DLQ entry for a message on a ledger topic that is not a ledger event.
    fn dead_letter(&self, delivery: &Delivery, error: &super::event::DecodeError) -> Message {
        use base64::Engine as _;
        let id = uuid::Uuid::new_v4().to_string();
        let now = crate::adapter::convert::now_shanghai();
        let reason = format!(
            "{} offset {} partition {}: {error}",
            delivery.topic, delivery.offset, delivery.partition
        );
        events::ledger_event_rejected(&delivery.topic, &reason, &id);
        let data = serde_json::json!({
            "adapter": "ledger",
            "stage": "ledger",
            "reason": "not_a_ledger_event",
            "errors": [{"path": delivery.topic, "reason": reason}],
            "record_index": null,
            "original_base64": base64::engine::general_purpose::STANDARD.encode(&delivery.payload),
            "content_type": "application/cloudevents+json",
            "unit": "body",
            "charset": "utf-8",
            "preview": crate::preview::preview(&delivery.payload, "utf-8", &[]),
            "received_at": super::rfc3339(now),
        });
        let event =
            crate::pipeline::envelope(RecordKind::Dlq, &id, "/shenguan/ledger", &id, now, data);
        Message {
            topic: self.shared.topics.name(RecordKind::Dlq),
            key: id,
            payload: serde_json::to_vec(&event).expect("a JSON value serialises"),
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The projector's receiving side: reads the ledger topics from the ledger's positions, decodes
/// each message as it arrives, and notices a consumer that stopped receiving.
struct Receiver {
    bus: Arc<dyn Bus>,
    ledger: Arc<dyn LedgerStore>,
    shared: Arc<Shared>,
    status: Arc<ProjectorStatus>,
    topics: Vec<String>,
}

impl Receiver {
    /// Sends every message, decoded, until `stop`, or (with `until_idle`) until none arrived for
    /// that long, or the applying side is gone.
    async fn run(
        self,
        mut sub: Box<dyn Subscription>,
        mut stop: watch::Receiver<bool>,
        until_idle: Option<Duration>,
        tx: mpsc::Sender<Prepared>,
    ) -> Result<(), ProjectError> {
        let wait = until_idle.unwrap_or(Duration::from_millis(500));
        let mut idle_since = std::time::Instant::now();
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let next = tokio::select! {
                r = sub.next(wait) => r,
                _ = stop.changed() => continue,
            };
            match next {
                Ok(Some(d)) => {
                    idle_since = std::time::Instant::now();
                    if let Some(kind) = self.shared.topics.kind_of(&d.topic) {
                        if tx.send(Prepared::new(d, kind)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                Ok(None) if until_idle.is_some() => return Ok(()),
                Ok(None) => {
                    if idle_since.elapsed() >= STALL_CHECK {
                        idle_since = std::time::Instant::now();
                        if self.stalled().await {
                            self.status.stalled();
                            tracing::warn!("the ledger topics grew past the projector's positions without it receiving anything: subscribing again");
                            let positions = self.ledger.positions().await?;
                            match self.bus.assign(&self.topics, &positions).await {
                                Ok(s) => sub = s,
                                Err(e) => events::bus_error("consume", &e),
                            }
                        }
                    }
                }
                Err(e) => {
                    events::bus_error("consume", &e);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Whether the ledger topics hold messages past the stored positions.
    async fn stalled(&self) -> bool {
        let (Ok(ends), Ok(positions)) = (
            self.bus.end_offsets(&self.shared.ledger_topics()).await,
            self.ledger.positions().await,
        ) else {
            return false;
        };
        ends.iter().any(|(key, end)| {
            let at = positions.get(key).copied().unwrap_or(0);
            *end > at
        })
    }
}

/// What a burst's messages changed that is counted and logged once per burst: the deadlines
/// missed, by department, kind and rule, and the records that wait unrouted, by kind and reason
/// (a backlog of late or uncatalogued records logs a line per burst, not one per record).
#[derive(Default)]
struct BurstNotes {
    breaches: std::collections::BTreeMap<(String, RecordKind, String), u64>,
    /// The count and the first record of each kind and reason.
    unrouted: std::collections::BTreeMap<(RecordKind, String), (u64, String)>,
}

impl BurstNotes {
    /// The metrics of what one message changed, and its part of the burst's log lines.
    fn observe(&mut self, changes: &Changes) {
        for (department, kind, seconds) in &changes.claimed {
            events::claimed(department, kind.as_str(), *seconds);
        }
        for (department, kind, rule) in &changes.breaches {
            *self
                .breaches
                .entry((department.clone(), *kind, rule.clone()))
                .or_default() += 1;
        }
        if let Some(r) = &changes.record {
            if let (Some(decided), true) = (
                r.decided_at,
                changes.history.iter().any(|h| h.action == "published"),
            ) {
                let seconds = (r.published_at - decided).num_milliseconds() as f64 / 1000.0;
                events::pushed(&r.adapter, r.kind.as_str(), seconds.max(0.0));
            }
            if let (Some(reason), true) = (
                &r.unrouted,
                changes.history.iter().any(|h| h.action == "unrouted"),
            ) {
                self.unrouted
                    .entry((r.kind, reason.clone()))
                    .or_insert_with(|| (0, r.record_id.clone()))
                    .0 += 1;
            }
        }
        for e in &changes.entries {
            if let Some(problem) = &e.deadline_problem {
                events::calendar_missing(&e.record_id, problem);
            }
        }
    }

    fn log(self) {
        for ((department, kind, rule), count) in self.breaches {
            events::deadline_breaches(&department, kind.as_str(), &rule, count);
        }
        for ((kind, reason), (count, first)) in self.unrouted {
            tracing::warn!(
                kind = kind.as_str(),
                reason = %crate::mask::mask(&reason),
                count,
                first_record_id = %first,
                "records wait unrouted"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_shows_the_lag_and_a_stall_until_a_batch_is_applied() {
        let status = ProjectorStatus::default();
        assert_eq!(
            status.readiness(Some(0)),
            vec!["projector_lag: 0 messages behind the ledger topics; nothing applied since start"]
        );
        status.stalled();
        status.stalled();
        let lines = status.readiness(Some(42));
        assert!(lines[0].starts_with("projector_lag: 42 messages behind"));
        assert!(
            lines[1].starts_with("projector_stalled: ")
                && lines[1].ends_with("subscribed again 2 times"),
            "{lines:?}"
        );
        status.applied();
        let lines = status.readiness(None);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("projector_lag: unknown"));
        assert!(lines[0].ends_with("last batch applied 0 s ago"));
    }
}
