//! The ingest service: runs a request through the pure pipeline, drops duplicates, publishes the
//! accepted records and the rejections (to the DLQ) in one acknowledged batch, and only then
//! remembers what it published. Shared by the HTTP API and `shenguan dlq replay`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use serde::Serialize;
use serde_json::json;

use crate::adapter::convert::now_shanghai;
use crate::adapter::format::Format;
use crate::adapter::Adapter;
use crate::bus::{Bus, BusError, Message, Topics};
use crate::pipeline::{self, BodyRejection, Outcome, RecordError, Rejection, Unit};
use crate::schema::{RecordKind, Schemas};
use crate::state::{Seen, StateError, StateStore};
use crate::telemetry::events;

/// Lock stripes that keep two concurrent requests from publishing the same business key twice.
const STRIPES: usize = 64;

/// A request body as received.
#[derive(Debug, Clone)]
pub struct Payload {
    pub body: Vec<u8>,
    /// The format named by the request's `Content-Type`; default the adapter's.
    pub format: Option<Format>,
    /// The charset named by the request; default the adapter's.
    pub charset: Option<String>,
    /// A whole body, or one record as kept by the DLQ.
    pub unit: Unit,
}

impl Payload {
    /// A request body in the adapter's own format and charset.
    pub fn body(body: Vec<u8>) -> Payload {
        Payload {
            body,
            format: None,
            charset: None,
            unit: Unit::Body,
        }
    }
}

/// The answer to an ingest request.
#[derive(Debug, Default, Serialize)]
pub struct IngestReport {
    pub adapter: String,
    pub received: usize,
    pub accepted: Vec<AcceptedRecord>,
    pub duplicates: Vec<AcceptedRecord>,
    pub rejected: Vec<RejectedRecord>,
}

#[derive(Debug, Serialize)]
pub struct AcceptedRecord {
    pub index: usize,
    pub id: String,
    pub event_id: String,
    pub business_key: String,
}

#[derive(Debug, Serialize)]
pub struct RejectedRecord {
    pub index: Option<usize>,
    pub stage: &'static str,
    pub reason: &'static str,
    pub dlq_id: String,
    pub errors: Vec<RecordError>,
}

/// Why a request could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body could not be split into records; it is in the DLQ.
    #[error("{}", .0.title)]
    Body(Box<BodyRejection>, String),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    State(#[from] StateError),
}

pub struct Ingestor {
    pub schemas: Arc<Schemas>,
    pub bus: Arc<dyn Bus>,
    pub state: Arc<dyn StateStore>,
    pub topics: Topics,
    pub max_records: usize,
    stripes: Vec<Arc<tokio::sync::Mutex<()>>>,
}

impl Ingestor {
    pub fn new(
        schemas: Arc<Schemas>,
        bus: Arc<dyn Bus>,
        state: Arc<dyn StateStore>,
        topics: Topics,
        max_records: usize,
    ) -> Ingestor {
        Ingestor {
            schemas,
            bus,
            state,
            topics,
            max_records,
            stripes: (0..STRIPES)
                .map(|_| Arc::new(tokio::sync::Mutex::new(())))
                .collect(),
        }
    }

    /// Ingests one request body for `adapter`. `replay_of` names the DLQ entry being replayed.
    pub async fn ingest(
        &self,
        adapter: Arc<Adapter>,
        payload: Payload,
        replay_of: Option<String>,
    ) -> Result<IngestReport, IngestError> {
        let Payload {
            body,
            format,
            charset,
            unit,
        } = payload;
        let started = Instant::now();
        let received_at = now_shanghai();
        let schemas = self.schemas.clone();
        let max = self.max_records;
        let a = adapter.clone();
        // Parsing, mapping and validating a large batch is CPU work: keep it off the I/O threads.
        let processed = tokio::task::spawn_blocking(move || {
            let result = pipeline::process(
                &a,
                &schemas,
                &body,
                format,
                charset.as_deref(),
                unit,
                received_at,
                max,
            );
            (result, body)
        })
        .await
        .expect("pipeline does not panic");
        let outcomes = match processed {
            (Ok(outcomes), _) => outcomes,
            (Err(body_rejection), _) => {
                let (dlq_id, message) = self.dlq_message(
                    &adapter.name,
                    &body_rejection.rejection,
                    received_at,
                    replay_of.as_deref(),
                );
                self.publish(vec![message]).await?;
                let r = &body_rejection.rejection;
                events::record_rejected(
                    &adapter.name,
                    r.stage.as_str(),
                    r.reason,
                    None,
                    &r.errors[0].reason,
                    &dlq_id,
                );
                return Err(IngestError::Body(body_rejection, dlq_id));
            }
        };
        let mut report = IngestReport {
            adapter: adapter.name.clone(),
            received: outcomes.len(),
            ..Default::default()
        };
        let mut candidates = Vec::new();
        let mut messages = Vec::new();
        for outcome in outcomes {
            match outcome {
                Outcome::Accepted(c) => candidates.push(c),
                Outcome::Rejected(r) => {
                    let (dlq_id, message) =
                        self.dlq_message(&adapter.name, &r, received_at, replay_of.as_deref());
                    messages.push(message);
                    report.rejected.push(RejectedRecord {
                        index: r.index,
                        stage: r.stage.as_str(),
                        reason: r.reason,
                        dlq_id,
                        errors: r.errors,
                    });
                }
            }
        }
        // Hold the stripes of every business key in the batch until it is remembered.
        let stripe_ids: BTreeSet<usize> =
            candidates.iter().map(|c| stripe(&c.business_key)).collect();
        let mut guards = Vec::with_capacity(stripe_ids.len());
        for i in stripe_ids {
            guards.push(self.stripes[i].clone().lock_owned().await);
        }
        let keys: Vec<String> = candidates.iter().map(|c| c.business_key.clone()).collect();
        let last = self.state.last_hashes(&adapter.name, keys).await?;
        let mut latest: HashMap<&str, Option<String>> = HashMap::new();
        let mut to_remember = Vec::new();
        let mut fresh = Vec::new();
        for (c, stored) in candidates.iter().zip(last) {
            let previous = latest.entry(c.business_key.as_str()).or_insert(stored);
            let record = AcceptedRecord {
                index: c.index,
                id: c.record_id.clone(),
                event_id: c.event_id.clone(),
                business_key: c.business_key.clone(),
            };
            if previous.as_deref() == Some(c.content_hash.as_str()) {
                report.duplicates.push(record);
                continue;
            }
            *previous = Some(c.content_hash.clone());
            messages.push(Message {
                topic: self.topics.name(c.kind),
                key: c.record_id.clone(),
                payload: c.event.clone(),
            });
            to_remember.push(Seen {
                adapter: adapter.name.clone(),
                business_key: c.business_key.clone(),
                content_hash: c.content_hash.clone(),
                record_id: c.record_id.clone(),
            });
            fresh.push((c.kind, record));
        }
        let mut per_topic: HashMap<String, usize> = HashMap::new();
        for m in &messages {
            *per_topic.entry(m.topic.clone()).or_default() += 1;
        }
        self.publish(messages).await?;
        if let Err(e) = self.state.remember(to_remember).await {
            // Published but not remembered: a resend would publish again (at-least-once);
            // the event id is the same, so consumers still see one record.
            tracing::error!(adapter = %adapter.name, error = %e, "published records could not be remembered for de-duplication");
        }
        drop(guards);
        for (topic, n) in per_topic {
            events::published(&topic, n);
        }
        events::pipeline_latency(&adapter.name, started.elapsed(), fresh.len());
        for (_, r) in &fresh {
            events::record_accepted(&adapter.name, &r.id, r.index);
        }
        for r in &report.duplicates {
            events::record_duplicate(&adapter.name, &r.id, r.index);
        }
        for r in &report.rejected {
            let detail = r
                .errors
                .iter()
                .map(|e| format!("{} {}", e.path, e.reason))
                .collect::<Vec<_>>()
                .join("; ");
            events::record_rejected(
                &adapter.name,
                r.stage,
                r.reason,
                r.index,
                &detail,
                &r.dlq_id,
            );
        }
        report.accepted = fresh.into_iter().map(|(_, r)| r).collect();
        Ok(report)
    }

    async fn publish(&self, messages: Vec<Message>) -> Result<(), BusError> {
        self.bus
            .publish(messages)
            .await
            .inspect_err(|e| events::bus_error("publish", e))
    }

    /// The DLQ CloudEvent for a rejection.
    pub fn dlq_message(
        &self,
        adapter: &str,
        r: &Rejection,
        received_at: chrono::DateTime<chrono::FixedOffset>,
        replay_of: Option<&str>,
    ) -> (String, Message) {
        let id = uuid::Uuid::new_v4().to_string();
        let mut data = json!({
            "adapter": adapter,
            "stage": r.stage.as_str(),
            "reason": r.reason,
            "errors": r.errors,
            "record_index": r.index,
            "original_base64": base64::engine::general_purpose::STANDARD.encode(&r.original),
            "content_type": r.content_type,
            "unit": r.unit,
            "charset": r.charset,
            "preview": crate::dlq::preview(&r.original, &r.charset),
            "received_at": received_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
        });
        if let Some(k) = &r.business_key {
            data["business_key"] = json!(k);
        }
        if let Some(original) = replay_of {
            data["replay_of"] = json!(original);
        }
        let event = pipeline::envelope(
            RecordKind::Dlq,
            &id,
            &format!("/shenguan/adapters/{adapter}"),
            &id,
            received_at,
            data,
        );
        let payload = serde_json::to_vec(&event).expect("a JSON value serialises");
        (
            id.clone(),
            Message {
                topic: self.topics.name(RecordKind::Dlq),
                key: id,
                payload,
            },
        )
    }
}

fn stripe(key: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() as usize) % STRIPES
}
