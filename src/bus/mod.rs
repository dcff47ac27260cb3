//! The message bus seam. Two implementations pass one shared test suite
//! (`tests/bus_contract.rs`): Kafka through `rdkafka` for production, and an embedded bus on
//! SQLite so that `shenguan run` works on a fresh machine with no server.
//!
//! Both promise the same: `publish` returns only when every message of the batch is durably
//! stored (Kafka: `acks=all` on an idempotent producer; embedded: a committed, fsynced SQLite
//! transaction), messages with one key stay in order, and a subscription resumes after the last
//! position it committed.
//!
//! Every message is a CloudEvent in structured JSON mode, so every message carries the Kafka
//! header the CloudEvents Kafka protocol binding requires for that mode
//! (`content-type: application/cloudevents+json; charset=UTF-8`): the buses attach
//! [`Message::headers`] when they publish, so no publisher can forget it, and both return the
//! headers they stored with each [`Delivery`].

pub mod embedded;
pub mod kafka;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::schema::RecordKind;

/// The Kafka header that names a message's content type (CloudEvents Kafka protocol binding,
/// section 3.1).
pub const CONTENT_TYPE_HEADER: &str = "content-type";
/// The content type of a CloudEvent in structured JSON mode (binding section 3.2): a consumer's
/// CloudEvents SDK reads the whole event from the message value when it sees this header.
pub const STRUCTURED_CLOUDEVENT: &str = "application/cloudevents+json; charset=UTF-8";

/// Message headers as (name, value) pairs, in order. Values are text: the gateway writes only
/// text headers, and a non-UTF-8 value read from Kafka is decoded lossily.
pub type Headers = Vec<(String, String)>;

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    /// The record id: messages about one record land on one partition, in order.
    pub key: String,
    pub payload: Vec<u8>,
}

impl Message {
    /// The headers the bus publishes this message with. Every payload on the gateway's topics —
    /// records, API events, alerts, DLQ entries, notifications — is a structured-mode JSON
    /// CloudEvent, so this is the one place that says so.
    pub fn headers(&self) -> Headers {
        vec![(
            CONTENT_TYPE_HEADER.to_string(),
            STRUCTURED_CLOUDEVENT.to_string(),
        )]
    }
}

/// Next offset to read, by topic and partition.
pub type Positions = std::collections::HashMap<(String, i32), i64>;

/// A message read back from the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    /// Milliseconds since the epoch at which the bus stored the message.
    pub timestamp_ms: i64,
    /// The headers stored with the message (empty for messages stored before the bus kept them).
    pub headers: Headers,
}

impl Delivery {
    /// The value of the first header with this name (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Bus failures. `Unavailable` is retriable (the ingest API answers 503); `Fatal` is a bug or a
/// configuration error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    #[error("bus error: {0}")]
    Fatal(String),
}

/// The bus.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// For logs: `embedded (./data/bus.db)`, `kafka (host:9092)`.
    fn describe(&self) -> String;
    /// Creates the topics that do not exist yet.
    async fn ensure_topics(&self, topics: &[String]) -> Result<(), BusError>;
    /// Publishes a batch; returns when all of it is durably acknowledged, or fails as a whole
    /// (some messages may then be stored: publishing is at-least-once).
    async fn publish(&self, batch: Vec<Message>) -> Result<(), BusError>;
    /// Every message of a topic from its beginning to its end at the time of the call.
    async fn read_all(&self, topic: &str) -> Result<Vec<Delivery>, BusError>;
    /// A subscription of a consumer group to topics, starting after the group's committed
    /// positions (or at the beginning for a new group).
    async fn subscribe(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Subscription>, BusError>;
    /// A subscription to every partition of `topics` starting at the given positions (next
    /// offset per topic and partition; absent = the beginning). Positions are the caller's to
    /// keep — the ledger stores them in the same transaction as its changes — so `commit` on
    /// the returned subscription does nothing.
    async fn assign(
        &self,
        topics: &[String],
        positions: &Positions,
    ) -> Result<Box<dyn Subscription>, BusError>;
    /// The end of every partition of `topics`: the offset the next message will get.
    async fn end_offsets(&self, topics: &[String]) -> Result<Positions, BusError>;
    /// Whether the bus can be reached now.
    async fn ready(&self) -> Result<(), BusError>;
    /// Waits until everything published has been acknowledged (used at shutdown).
    async fn flush(&self, timeout: Duration) -> Result<(), BusError>;
    /// Keeps a topic's messages for `max_age` only: the embedded bus deletes older ones now
    /// (returning how many), Kafka gets the topic's `retention.ms` set and deletes on its own.
    async fn retain(&self, topic: &str, max_age: Duration) -> Result<u64, BusError>;
}

/// A consumer group's view of some topics.
#[async_trait]
pub trait Subscription: Send {
    /// The next message, or `None` when none arrived within `wait`.
    async fn next(&mut self, wait: Duration) -> Result<Option<Delivery>, BusError>;
    /// Records that `delivery` and everything before it on its partition is handled.
    async fn commit(&mut self, delivery: &Delivery) -> Result<(), BusError>;
}

/// Topic names: a configurable prefix (default `shenguan.`) + the versioned kind.
#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Topics {
        Topics {
            prefix: prefix.into(),
        }
    }

    pub fn name(&self, kind: RecordKind) -> String {
        format!("{}{}", self.prefix, kind.versioned())
    }

    pub fn all(&self) -> Vec<String> {
        RecordKind::ALL.iter().map(|k| self.name(*k)).collect()
    }

    /// The kind a topic name stands for, if it is one of ours.
    pub fn kind_of(&self, topic: &str) -> Option<RecordKind> {
        RecordKind::ALL.into_iter().find(|k| self.name(*k) == topic)
    }
}

impl Default for Topics {
    fn default() -> Self {
        Topics::new("shenguan.")
    }
}

/// Opens the bus named by a URL: `embedded` (under `data_dir`) or `kafka://host:port[,host:port]`.
pub fn open(
    url: &str,
    data_dir: &std::path::Path,
    kafka: &crate::bus::kafka::KafkaSettings,
) -> Result<Arc<dyn Bus>, BusError> {
    if url == "embedded" || url.starts_with("embedded:") {
        let path = url
            .strip_prefix("embedded:")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| data_dir.join("bus.db"));
        return Ok(Arc::new(embedded::EmbeddedBus::open(&path)?));
    }
    if let Some(servers) = url.strip_prefix("kafka://") {
        let servers = servers.trim_end_matches('/');
        if servers.is_empty() {
            return Err(BusError::Fatal("kafka:// URL names no broker".into()));
        }
        return Ok(Arc::new(kafka::KafkaBus::new(servers, kafka)?));
    }
    Err(BusError::Fatal(format!(
        "unknown bus URL '{url}': expected 'embedded' or 'kafka://host:port[,host:port]'"
    )))
}
