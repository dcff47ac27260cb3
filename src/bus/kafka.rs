//! The Kafka bus through `rdkafka` (librdkafka, built in).
//!
//! The producer is idempotent with `acks=all`, so a retried send neither duplicates nor reorders
//! within a partition; the Kafka key is the record id. Every `[bus.kafka.properties]` entry —
//! `security.protocol`, `sasl.*`, `ssl.*` and any other librdkafka property — is passed through
//! to the producer, the consumers and the admin client, so SASL/TLS needs no code here.
//! Subscriptions follow rust-rdkafka's `at_least_once` example: automatic offset storing is off
//! and a position is committed only after the caller handled the message.
//!
//! A publish that fails (the broker gone longer than `publish_timeout_ms`) replaces the producer
//! with a new one, which asks the broker for a new producer id when it comes back: a broker that
//! restarted may not know the old id's sequence state any more (tansu's SQLite engine then
//! refuses every batch of it), and the caller resends the failed batch anyway.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use async_trait::async_trait;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::{Bus, BusError, Delivery, Message, Positions, Subscription};

/// `[bus.kafka]`: Kafka client settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Partitions of topics the gateway creates. Default 6.
    pub partitions: i32,
    /// Replication factor of topics the gateway creates. Default 1 for a single broker; use 3
    /// on a production cluster.
    pub replication_factor: i32,
    /// Milliseconds an acknowledged publish may take before ingest answers 503. Default 30000.
    pub publish_timeout_ms: u64,
    /// Producer batching delay in milliseconds. Default 5.
    pub linger_ms: u64,
    /// Producer compression: none, gzip, lz4 (default), snappy.
    pub compression: String,
    /// Consumer group session timeout in milliseconds. Default 6000.
    pub session_timeout_ms: u64,
    /// Kafka client id. Default `shenguan`.
    pub client_id: String,
    /// Any librdkafka property, passed through unchanged: `security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `sasl.password`, `ssl.ca.location` …
    /// Environment variables `SHENGUAN_KAFKA_<PROPERTY>` (dots as underscores, e.g.
    /// `SHENGUAN_KAFKA_SASL_PASSWORD`) add or override entries, so secrets need not be in the file.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            partitions: 6,
            replication_factor: 1,
            publish_timeout_ms: 30_000,
            linger_ms: 5,
            compression: "lz4".into(),
            session_timeout_ms: 6_000,
            client_id: "shenguan".into(),
            properties: BTreeMap::new(),
        }
    }
}

/// How long `read_all` waits for more messages after the reported end of every partition.
const READ_ALL_QUIET: Duration = Duration::from_millis(1500);

pub struct KafkaBus {
    servers: String,
    settings: KafkaSettings,
    /// The producer and its generation (bumped each time a failed publish replaces it).
    producer: std::sync::RwLock<(u64, FutureProducer)>,
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

impl KafkaBus {
    pub fn new(servers: &str, settings: &KafkaSettings) -> Result<KafkaBus, BusError> {
        let producer = new_producer(servers, settings)?;
        Ok(KafkaBus {
            servers: servers.to_string(),
            settings: settings.clone(),
            producer: std::sync::RwLock::new((0, producer)),
        })
    }

    fn producer(&self) -> (u64, FutureProducer) {
        self.producer.read().expect("producer lock").clone()
    }

    /// Replaces the producer of `generation` after it failed to publish (once, however many
    /// publishes of that generation failed).
    fn replace_producer(&self, generation: u64) {
        let mut current = self.producer.write().expect("producer lock");
        if current.0 != generation {
            return;
        }
        match new_producer(&self.servers, &self.settings) {
            Ok(p) => {
                *current = (generation + 1, p);
                tracing::warn!(
                    generation = generation + 1,
                    "Kafka producer replaced after a failed publish"
                );
            }
            Err(e) => tracing::error!(error = %e, "cannot replace the Kafka producer"),
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = base_config(&self.servers, &self.settings);
        for (k, v) in &self.settings.properties {
            if !is_producer_only(k) {
                config.set(k, v);
            }
        }
        config
    }

    fn reader(&self, group: &str) -> Result<BaseConsumer, BusError> {
        self.client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .map_err(|e| BusError::Fatal(format!("cannot create a Kafka consumer: {e}")))
    }
}

/// The idempotent `acks=all` producer (also the benchmark's plain producer, so that both are
/// configured alike).
pub fn new_producer(servers: &str, settings: &KafkaSettings) -> Result<FutureProducer, BusError> {
    let mut config = base_config(servers, settings);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", settings.linger_ms.to_string())
        .set("compression.type", &settings.compression)
        .set(
            "message.timeout.ms",
            settings.publish_timeout_ms.to_string(),
        );
    // Site properties win, so an operator can tune anything librdkafka knows.
    for (k, v) in &settings.properties {
        config.set(k, v);
    }
    config
        .create()
        .map_err(|e| BusError::Fatal(format!("cannot create the Kafka producer: {e}")))
}

fn base_config(servers: &str, settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", servers)
        .set("client.id", &settings.client_id)
        .set("socket.timeout.ms", "10000");
    config
}

fn is_producer_only(key: &str) -> bool {
    matches!(
        key,
        "acks"
            | "enable.idempotence"
            | "linger.ms"
            | "compression.type"
            | "message.timeout.ms"
            | "batch.size"
            | "batch.num.messages"
    )
}

#[async_trait]
impl Bus for KafkaBus {
    fn describe(&self) -> String {
        format!("kafka ({})", self.servers)
    }

    async fn ensure_topics(&self, topics: &[String]) -> Result<(), BusError> {
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(|e| BusError::Fatal(format!("cannot create the Kafka admin client: {e}")))?;
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    self.settings.partitions,
                    TopicReplication::Fixed(self.settings.replication_factor),
                )
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics(new.iter(), &opts)
            .await
            .map_err(unavailable)?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(BusError::Unavailable(format!(
                        "cannot create topic {topic}: {code}"
                    )));
                }
            }
        }
        Ok(())
    }

    async fn retain(&self, topic: &str, max_age: Duration) -> Result<u64, BusError> {
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(|e| BusError::Fatal(format!("cannot create the Kafka admin client: {e}")))?;
        let ms = max_age.as_millis().to_string();
        let config = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("retention.ms", &ms);
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for r in admin
            .alter_configs([&config], &opts)
            .await
            .map_err(unavailable)?
        {
            r.map_err(|(_, code)| {
                BusError::Unavailable(format!("cannot set retention.ms of {topic}: {code}"))
            })?;
        }
        Ok(0)
    }

    async fn publish(&self, batch: Vec<Message>) -> Result<(), BusError> {
        let timeout = Duration::from_millis(self.settings.publish_timeout_ms);
        let (generation, producer) = self.producer();
        let sends = batch.iter().map(|m| {
            let headers = m
                .headers()
                .iter()
                .fold(OwnedHeaders::new(), |h, (name, value)| {
                    h.insert(Header {
                        key: name,
                        value: Some(value),
                    })
                });
            producer.send(
                FutureRecord::to(&m.topic)
                    .key(&m.key)
                    .payload(&m.payload)
                    .headers(headers),
                timeout,
            )
        });
        let results = futures::future::join_all(sends).await;
        for r in results {
            if let Err((e, _)) = r {
                return Err(match e {
                    KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge) => {
                        BusError::Fatal(format!("message too large for the broker: {e}"))
                    }
                    other => {
                        self.replace_producer(generation);
                        BusError::Unavailable(other.to_string())
                    }
                });
            }
        }
        Ok(())
    }

    async fn read_all(&self, topic: &str) -> Result<Vec<Delivery>, BusError> {
        let consumer = self.reader(&format!("shenguan-reader-{}", uuid::Uuid::new_v4()))?;
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || -> Result<Vec<Delivery>, BusError> {
            let timeout = Duration::from_secs(10);
            let metadata = consumer
                .fetch_metadata(Some(&topic), timeout)
                .map_err(unavailable)?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic)
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            let mut ends = BTreeMap::new();
            let mut assignment = TopicPartitionList::new();
            for p in partitions {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, p, timeout)
                    .map_err(unavailable)?;
                if high > low {
                    ends.insert(p, high);
                    assignment
                        .add_partition_offset(&topic, p, Offset::Offset(low))
                        .map_err(unavailable)?;
                }
            }
            let mut out = Vec::new();
            if ends.is_empty() {
                return Ok(out);
            }
            consumer.assign(&assignment).map_err(unavailable)?;
            // Read past the reported end until the topic is quiet: some Kafka-protocol brokers
            // report a high watermark at the start of the last batch rather than after it.
            let give_up = std::time::Instant::now() + Duration::from_secs(120);
            let mut last_message = std::time::Instant::now();
            while !ends.is_empty() || last_message.elapsed() < READ_ALL_QUIET {
                if std::time::Instant::now() > give_up {
                    return Err(BusError::Unavailable(format!("timed out reading {topic}")));
                }
                match consumer.poll(Duration::from_millis(100)) {
                    None => {}
                    Some(Err(e)) => return Err(unavailable(e)),
                    Some(Ok(m)) => {
                        let d = delivery(&m);
                        if ends
                            .get(&d.partition)
                            .is_some_and(|&end| d.offset + 1 >= end)
                        {
                            ends.remove(&d.partition);
                        }
                        last_message = std::time::Instant::now();
                        out.push(d);
                    }
                }
            }
            out.sort_by_key(|d| (d.timestamp_ms, d.partition, d.offset));
            Ok(out)
        })
        .await
        .map_err(|e| BusError::Fatal(e.to_string()))?
    }

    async fn subscribe(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Subscription>, BusError> {
        let consumer: StreamConsumer = self
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                self.settings.session_timeout_ms.to_string(),
            )
            .create()
            .map_err(|e| BusError::Fatal(format!("cannot create a Kafka consumer: {e}")))?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(unavailable)?;
        Ok(Box::new(KafkaSubscription {
            consumer: std::sync::Arc::new(consumer),
            assigned: false,
        }))
    }

    async fn assign(
        &self,
        topics: &[String],
        positions: &Positions,
    ) -> Result<Box<dyn Subscription>, BusError> {
        let consumer: StreamConsumer = self
            .client_config()
            .set("group.id", format!("{}-assigned", self.settings.client_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create()
            .map_err(|e| BusError::Fatal(format!("cannot create a Kafka consumer: {e}")))?;
        let consumer = std::sync::Arc::new(consumer);
        let c = consumer.clone();
        let topics = topics.to_vec();
        let positions = positions.clone();
        tokio::task::spawn_blocking(move || -> Result<(), BusError> {
            let mut tpl = TopicPartitionList::new();
            for topic in &topics {
                let metadata = c
                    .fetch_metadata(Some(topic), Duration::from_secs(10))
                    .map_err(unavailable)?;
                for t in metadata.topics().iter().filter(|t| t.name() == topic) {
                    for p in t.partitions() {
                        let offset = positions
                            .get(&(topic.clone(), p.id()))
                            .map_or(Offset::Beginning, |&o| Offset::Offset(o));
                        tpl.add_partition_offset(topic, p.id(), offset)
                            .map_err(unavailable)?;
                    }
                }
            }
            c.assign(&tpl).map_err(unavailable)
        })
        .await
        .map_err(|e| BusError::Fatal(e.to_string()))??;
        Ok(Box::new(KafkaSubscription {
            consumer,
            assigned: true,
        }))
    }

    async fn end_offsets(&self, topics: &[String]) -> Result<Positions, BusError> {
        let consumer = self.reader(&format!("{}-lag", self.settings.client_id))?;
        let topics = topics.to_vec();
        tokio::task::spawn_blocking(move || -> Result<Positions, BusError> {
            let timeout = Duration::from_secs(5);
            let mut out = Positions::new();
            for topic in topics {
                let metadata = consumer
                    .fetch_metadata(Some(&topic), timeout)
                    .map_err(unavailable)?;
                for t in metadata.topics().iter().filter(|t| t.name() == topic) {
                    for p in t.partitions() {
                        let (_, high) = consumer
                            .fetch_watermarks(&topic, p.id(), timeout)
                            .map_err(unavailable)?;
                        out.insert((topic.clone(), p.id()), high);
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| BusError::Fatal(e.to_string()))?
    }

    async fn ready(&self) -> Result<(), BusError> {
        let (_, producer) = self.producer();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(5))
                .map(|_| ())
                .map_err(unavailable)
        })
        .await
        .map_err(|e| BusError::Fatal(e.to_string()))?
    }

    async fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        let (_, producer) = self.producer();
        tokio::task::spawn_blocking(move || producer.flush(timeout).map_err(unavailable))
            .await
            .map_err(|e| BusError::Fatal(e.to_string()))?
    }
}

fn delivery<M: rdkafka::message::Message>(m: &M) -> Delivery {
    Delivery {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        payload: m.payload().unwrap_or_default().to_vec(),
        timestamp_ms: m.timestamp().to_millis().unwrap_or_default(),
        headers: m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

struct KafkaSubscription {
    consumer: std::sync::Arc<StreamConsumer>,
    /// Positions are kept by the caller; nothing is committed to the broker.
    assigned: bool,
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self, wait: Duration) -> Result<Option<Delivery>, BusError> {
        match tokio::time::timeout(wait, self.consumer.recv()).await {
            Err(_) => Ok(None),
            Ok(Err(e)) => Err(unavailable(e)),
            Ok(Ok(m)) => Ok(Some(delivery(&m))),
        }
    }

    async fn commit(&mut self, d: &Delivery) -> Result<(), BusError> {
        if self.assigned {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&d.topic, d.partition, Offset::Offset(d.offset + 1))
            .map_err(unavailable)?;
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || {
            consumer.commit(&tpl, CommitMode::Sync).map_err(unavailable)
        })
        .await
        .map_err(|e| BusError::Fatal(e.to_string()))?
    }
}
