//! The projector: consumes the record, claim and feedback topics from the positions stored in
//! the ledger and applies each message with its new position; the messages already waiting when
//! one arrives (up to [`MAX_BATCH`]) go into the same transaction, so a burst costs one commit. In live mode it
//! also updates the claim-latency histogram and the breach counter; a rebuild does not, so
//! replaying history never double-counts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::store::{LedgerError, LedgerStore};
use super::{Changes, Context};
use crate::bus::{Bus, BusError, Topics};
use crate::deadline::{Calendar, Policies};
use crate::route::Catalog;
use crate::schema::RecordKind;
use crate::telemetry::events;

/// The `id` of a CloudEvent; its other members are skipped unread.
#[derive(serde::Deserialize)]
struct EventId {
    id: String,
}

/// Most messages applied in one ledger transaction.
pub const MAX_BATCH: usize = 500;

/// What the projector and the tracker share: routing, calendar, policies, topics.
pub struct Shared {
    pub catalog: Arc<Catalog>,
    pub calendar: Arc<Calendar>,
    pub policies: Arc<Policies>,
    /// The policy profile in force.
    pub policy: String,
    pub topics: Topics,
}

impl Shared {
    pub fn context(&self) -> Context<'_> {
        Context {
            catalog: &self.catalog,
            calendar: &self.calendar,
            policies: &self.policies,
            policy: &self.policy,
        }
    }

    /// The topics the ledger is built from.
    pub fn ledger_topics(&self) -> Vec<String> {
        [
            RecordKind::Approval,
            RecordKind::Supervision,
            RecordKind::Notice,
            RecordKind::Claim,
            RecordKind::Feedback,
        ]
        .iter()
        .map(|k| self.topics.name(*k))
        .collect()
    }
}

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
}

impl Projector {
    /// Applies messages until `stop` turns true (live) or, with `until_idle`, until no message
    /// arrived for that long (rebuild). Returns how many messages were applied.
    pub async fn run(
        &self,
        mut stop: watch::Receiver<bool>,
        until_idle: Option<Duration>,
        live: bool,
    ) -> Result<u64, ProjectError> {
        let positions = self.ledger.positions().await?;
        let mut sub = self
            .bus
            .assign(&self.shared.ledger_topics(), &positions)
            .await?;
        let mut applied = 0u64;
        let wait = until_idle.unwrap_or(Duration::from_millis(500));
        loop {
            if *stop.borrow() {
                return Ok(applied);
            }
            let next = tokio::select! {
                r = sub.next(wait) => r,
                _ = stop.changed() => continue,
            };
            let delivery = match next {
                Ok(Some(d)) => d,
                Ok(None) if until_idle.is_some() => return Ok(applied),
                Ok(None) => continue,
                Err(e) => {
                    events::bus_error("consume", &e);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            // Whatever else is already waiting goes into the same transaction: one commit for
            // a burst instead of one per record.
            let mut batch = Vec::new();
            let mut next = Some(delivery);
            while let Some(d) = next.take() {
                if let Some(kind) = self.shared.topics.kind_of(&d.topic) {
                    batch.push((d, kind));
                }
                if batch.len() < MAX_BATCH {
                    next = sub.next(Duration::ZERO).await.ok().flatten();
                }
            }
            if batch.is_empty() {
                continue;
            }
            // The event ids, for the API requests waiting to see their event applied: read
            // without building the rest of the event.
            let event_ids: Vec<Option<String>> = batch
                .iter()
                .map(|(d, _)| {
                    serde_json::from_slice::<EventId>(&d.payload)
                        .ok()
                        .map(|e| e.id)
                })
                .collect();
            let batch: super::store::Batch = batch.into();
            let all = loop {
                match self
                    .ledger
                    .apply_batch(batch.clone(), self.shared.clone())
                    .await
                {
                    Ok(c) => break c,
                    Err(e) => {
                        tracing::error!(error = %e, "ledger update failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if *stop.borrow() {
                            return Ok(applied);
                        }
                    }
                }
            };
            for (changes, id) in all.iter().zip(event_ids) {
                applied += 1;
                if live {
                    observe(changes);
                }
                if let Some(id) = id {
                    let _ = self.applied.send(id);
                }
            }
        }
    }
}

fn observe(changes: &Changes) {
    for (department, kind, seconds) in &changes.claimed {
        events::claimed(department, kind.as_str(), *seconds);
    }
    for (department, kind, rule) in &changes.breaches {
        events::deadline_breach(department, kind.as_str(), rule);
    }
    if let Some(r) = &changes.record {
        if let (Some(decided), true) = (
            r.decided_at,
            changes.history.iter().any(|h| h.action == "published"),
        ) {
            let seconds = (r.published_at - decided).num_milliseconds() as f64 / 1000.0;
            events::pushed(&r.adapter, r.kind.as_str(), seconds.max(0.0));
        }
        if r.unrouted.is_some() && changes.history.iter().any(|h| h.action == "unrouted") {
            tracing::warn!(record_id = %r.record_id, kind = r.kind.as_str(), reason = %crate::mask::mask(r.unrouted.as_deref().unwrap_or("")), "record waits unrouted");
        }
    }
    for e in &changes.entries {
        if let Some(problem) = &e.deadline_problem {
            events::calendar_missing(&e.record_id, problem);
        }
    }
}
