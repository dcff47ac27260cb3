//! Sources: how records reach the gateway besides HTTP push — polling an HTTP API, files dropped
//! into a directory, polling a database table, and a Kafka topic of raw legacy messages.
//!
//! Every source has a durable checkpoint in the state store that moves only after the bus
//! acknowledged what it covers (at-least-once); what is read twice — the overlap window of a
//! poll, a file picked up again after a crash — is answered as a duplicate by the ingest
//! de-duplication and not published again. Sources look adapters up by name at each use, so a
//! hot-reloaded adapter applies to the next batch.

pub mod directory;
pub mod http_poll;
pub mod kafka;
pub mod pg_poll;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde::Deserialize;

use crate::adapter::{Adapter, AdapterSet};
use crate::ingest::{IngestError, IngestReport, Ingestor, Payload};

/// One `[[sources]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    HttpPoll(http_poll::HttpPollConfig),
    Directory(directory::DirectoryConfig),
    Postgres(pg_poll::PgPollConfig),
    Kafka(kafka::KafkaSourceConfig),
}

impl SourceConfig {
    pub fn name(&self) -> &str {
        match self {
            SourceConfig::HttpPoll(c) => &c.name,
            SourceConfig::Directory(c) => &c.name,
            SourceConfig::Postgres(c) => &c.name,
            SourceConfig::Kafka(c) => &c.name,
        }
    }

    pub fn adapter(&self) -> &str {
        match self {
            SourceConfig::HttpPoll(c) => &c.adapter,
            SourceConfig::Directory(c) => &c.adapter,
            SourceConfig::Postgres(c) => &c.adapter,
            SourceConfig::Kafka(c) => &c.adapter,
        }
    }
}

/// What every source needs from the gateway.
#[derive(Clone)]
pub struct SourceContext {
    pub ingestor: Arc<Ingestor>,
    pub adapters: Arc<RwLock<Arc<AdapterSet>>>,
}

impl SourceContext {
    /// The adapter as currently loaded.
    pub fn adapter(&self, name: &str) -> Result<Arc<Adapter>, String> {
        self.adapters
            .read()
            .expect("adapter set lock")
            .get(name)
            .ok_or_else(|| format!("adapter '{name}' is not loaded"))
    }

    /// Ingests a payload; `Ok(None)` is a body that could not be read at all (it is in the DLQ).
    pub async fn ingest(
        &self,
        adapter: &str,
        payload: Payload,
    ) -> Result<Result<IngestReport, String>, String> {
        let adapter = self.adapter(adapter)?;
        match self.ingestor.ingest(adapter, payload, None).await {
            Ok(report) => Ok(Ok(report)),
            Err(IngestError::Body(b, dlq_id)) => Ok(Err(format!(
                "{} ({}), kept in the DLQ as {dlq_id}",
                b.title,
                b.rejection
                    .errors
                    .first()
                    .map(|e| e.reason.as_str())
                    .unwrap_or("")
            ))),
            Err(e) => Err(e.to_string()),
        }
    }

    pub async fn checkpoint<T: for<'de> Deserialize<'de>>(
        &self,
        source: &str,
    ) -> Result<Option<T>, String> {
        match self
            .ingestor
            .state
            .checkpoint(source)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| format!("checkpoint of {source} is unreadable: {e}")),
            None => Ok(None),
        }
    }

    pub async fn save_checkpoint<T: serde::Serialize>(
        &self,
        source: &str,
        value: &T,
    ) -> Result<(), String> {
        let text = serde_json::to_string(value).map_err(|e| e.to_string())?;
        self.ingestor
            .state
            .save_checkpoint(source, text)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Checks sources at start-up: unique names, known adapters, valid settings. Every error at once.
pub fn check(sources: &[SourceConfig], adapters: &AdapterSet) -> Vec<String> {
    let mut errors = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, s) in sources.iter().enumerate() {
        let at = format!("sources[{i}] ({})", s.name());
        if s.name().is_empty() || !names.insert(s.name().to_string()) {
            errors.push(format!("{at}: every source needs a unique name"));
        }
        if adapters.get(s.adapter()).is_none() {
            errors.push(format!("{at}: adapter '{}' is not loaded", s.adapter()));
        }
        match s {
            SourceConfig::Postgres(c) => {
                errors.extend(c.check().into_iter().map(|e| format!("{at}: {e}")))
            }
            SourceConfig::HttpPoll(c) => {
                errors.extend(c.check().into_iter().map(|e| format!("{at}: {e}")))
            }
            _ => {}
        }
    }
    errors
}

/// Starts every source; each runs until `stop`.
pub fn spawn_all(
    sources: &[SourceConfig],
    ctx: SourceContext,
    kafka_servers: Option<String>,
    kafka: crate::bus::kafka::KafkaSettings,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    sources
        .iter()
        .cloned()
        .map(|s| {
            let ctx = ctx.clone();
            let stop = stop.clone();
            let servers = kafka_servers.clone();
            let kafka = kafka.clone();
            tokio::spawn(async move {
                let name = s.name().to_string();
                let result = match s {
                    SourceConfig::HttpPoll(c) => http_poll::run(c, ctx, stop).await,
                    SourceConfig::Directory(c) => directory::run(c, ctx, stop).await,
                    SourceConfig::Postgres(c) => pg_poll::run(c, ctx, stop).await,
                    SourceConfig::Kafka(c) => kafka::run(c, ctx, servers, kafka, stop).await,
                };
                if let Err(e) = result {
                    tracing::error!(source = %name, error = %e, "source stopped");
                }
            })
        })
        .collect()
}

pub use crate::stop::pause;

/// Replaces `${NAME}` with the environment variable NAME (for passwords in URLs).
pub fn expand_env(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').ok_or("unclosed ${")? + i;
        let name = &rest[i + 2..end];
        out.push_str(
            &std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?,
        );
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Extra HTTP headers, values with `${ENV}` expansion.
pub type Headers = BTreeMap<String, String>;

/// A directory given in configuration.
pub type Dir = PathBuf;
