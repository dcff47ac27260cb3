//! Notifications to people through the webhook channel: the alerts meant for a department's
//! staff rather than its systems — the daily digest and the notice that an inquiry was deemed
//! agreed — are read from the alert topic (consumer group `shenguan-notify`) and POSTed, signed
//! like record deliveries, to the department's webhook, so a site can forward them to SMS,
//! 企业微信 or e-mail. A notification is retried with backoff; after the last attempt it goes to
//! the DLQ (stage `deliver`). The group's position moves only past handled alerts, so a restart
//! resends at most the one in flight, with the same CloudEvent id.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use super::{backoff, post_signed, webhook_targets, Target};
use crate::bus::{Bus, Delivery};
use crate::config::DeliverySettings;
use crate::ingest::Ingestor;
use crate::ledger::projector::Shared;
use crate::pipeline::{RecordError, Rejection, Stage};
use crate::schema::RecordKind;
use crate::telemetry::events;

/// The alert levels sent to departments' webhooks.
pub const NOTIFIED_LEVELS: [&str; 2] = ["digest", "deemed_agreed"];

pub struct Notifier {
    bus: Arc<dyn Bus>,
    ingestor: Arc<Ingestor>,
    shared: Arc<Shared>,
    settings: DeliverySettings,
    client: reqwest::Client,
    targets: HashMap<String, Target>,
}

impl Notifier {
    pub fn new(
        bus: Arc<dyn Bus>,
        ingestor: Arc<Ingestor>,
        shared: Arc<Shared>,
        settings: DeliverySettings,
    ) -> anyhow::Result<Notifier> {
        let targets = webhook_targets(&shared)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .build()?;
        Ok(Notifier {
            bus,
            ingestor,
            shared,
            settings,
            client,
            targets,
        })
    }

    /// Notifies until `stop`; does nothing when no department has a webhook.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        if self.targets.is_empty() {
            return;
        }
        let topic = self.shared.topics.name(RecordKind::Alert);
        let mut subscription = loop {
            match self
                .bus
                .subscribe("shenguan-notify", std::slice::from_ref(&topic))
                .await
            {
                Ok(s) => break s,
                Err(e) => {
                    events::bus_error("subscribe", &e);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                        _ = stop.changed() => return,
                    }
                }
            }
        };
        loop {
            if *stop.borrow() {
                return;
            }
            let next = tokio::select! {
                n = subscription.next(Duration::from_millis(500)) => n,
                _ = stop.changed() => return,
            };
            match next {
                Ok(Some(delivery)) => {
                    let handled = tokio::select! {
                        h = self.notify(&delivery) => h,
                        _ = stop.changed() => return,
                    };
                    match handled {
                        Ok(()) => {
                            if let Err(e) = subscription.commit(&delivery).await {
                                events::bus_error("commit", &e);
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "notification could not be dead-lettered; retrying");
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    events::bus_error("consume", &e);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Sends one alert to its department's webhook if it is a notification; retries with
    /// backoff, then dead-letters it.
    async fn notify(&self, delivery: &Delivery) -> anyhow::Result<()> {
        let Ok(event) = serde_json::from_slice::<Value>(&delivery.payload) else {
            return Ok(());
        };
        let data = &event["data"];
        let level = data["level"].as_str().unwrap_or("");
        let Some(department) = data["department"].as_str() else {
            return Ok(());
        };
        let Some(target) = self.targets.get(department) else {
            return Ok(());
        };
        if !NOTIFIED_LEVELS.contains(&level) {
            return Ok(());
        }
        let subject = data["record_id"].as_str().unwrap_or("");
        let max = self.settings.max_attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=max {
            match post_signed(
                &self.client,
                target,
                department,
                delivery.payload.clone(),
                self.settings.timeout_ms,
            )
            .await
            {
                None => {
                    events::delivery_attempt(department, "ok", subject, "");
                    return Ok(());
                }
                Some(reason) => {
                    last = reason;
                    if attempt < max {
                        events::delivery_attempt(department, "failed", subject, &last);
                        tokio::time::sleep(backoff(&self.settings, attempt)).await;
                    }
                }
            }
        }
        events::delivery_attempt(department, "dead_lettered", subject, &last);
        let rejection = Rejection {
            index: None,
            stage: Stage::Deliver,
            reason: "webhook_failed",
            errors: vec![RecordError {
                index: None,
                path: target.url.clone(),
                reason: format!(
                    "{level} notification to {department} failed {max} times; last: {last}"
                ),
            }],
            original: delivery.payload.clone(),
            charset: "utf-8".into(),
            content_type: "application/cloudevents+json",
            unit: crate::pipeline::Unit::Body,
            business_key: Some(subject.to_string()),
        };
        let now = crate::adapter::convert::now_shanghai();
        let (dlq_id, message) = self
            .ingestor
            .dlq_message("notification", &rejection, now, None);
        self.ingestor.bus.publish(vec![message]).await?;
        events::record_rejected(
            "notification",
            "deliver",
            "webhook_failed",
            None,
            &rejection.errors[0].reason,
            &dlq_id,
        );
        Ok(())
    }
}
