//! A Kafka topic of raw legacy messages (a department system that already publishes its own
//! format): each message is one payload for the adapter; its offset is committed only after the
//! canonical records are acknowledged by the bus, so a crash re-reads it (and its records are
//! duplicates), and a bus outage holds the source at that message.

use std::time::Duration;

use serde::Deserialize;

use super::{pause, SourceContext};
use crate::bus::Bus;
use crate::ingest::Payload;

/// `[[sources]] type = "kafka"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    pub name: String,
    pub adapter: String,
    /// The topic of raw messages.
    pub topic: String,
    /// Brokers, `host:port[,host:port]`; default the bus's when the bus is Kafka.
    #[serde(default)]
    pub brokers: Option<String>,
    /// Consumer group; default `shenguan-source-<name>`.
    #[serde(default)]
    pub group: Option<String>,
}

pub async fn run(
    config: KafkaSourceConfig,
    ctx: SourceContext,
    bus_servers: Option<String>,
    settings: crate::bus::kafka::KafkaSettings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let servers = config
        .brokers
        .clone()
        .or(bus_servers)
        .ok_or("a kafka source needs `brokers` when the bus is not Kafka")?;
    let client =
        crate::bus::kafka::KafkaBus::new(&servers, &settings).map_err(|e| e.to_string())?;
    let group = config
        .group
        .clone()
        .unwrap_or_else(|| format!("shenguan-source-{}", config.name));
    let mut sub = client
        .subscribe(&group, std::slice::from_ref(&config.topic))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let message = tokio::select! {
            m = sub.next(Duration::from_millis(500)) => m,
            _ = stop.changed() => return Ok(()),
        };
        let delivery = match message {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(source = %config.name, error = %e, "cannot read the source topic");
                if pause(Duration::from_secs(1), &mut stop).await {
                    return Ok(());
                }
                continue;
            }
        };
        // Hold this message until the bus took its records.
        loop {
            match ctx
                .ingest(&config.adapter, Payload::body(delivery.payload.clone()))
                .await
            {
                Ok(Ok(_)) | Ok(Err(_)) => break,
                Err(e) => {
                    tracing::warn!(source = %config.name, offset = delivery.offset, error = %e, "ingest failed; retrying this message");
                    if pause(Duration::from_secs(1), &mut stop).await {
                        return Ok(());
                    }
                }
            }
        }
        sub.commit(&delivery).await.map_err(|e| e.to_string())?;
    }
}
