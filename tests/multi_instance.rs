//! Two gateway instances on one Kafka-protocol broker and one PostgreSQL ledger: every message
//! is applied once, every alert is published once, and a claim made through either instance —
//! or produced straight to the claim topic by a department's own Kafka client — is seen by both.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message as _;
use serde_json::{json, Value};

async fn drain(bootstrap: &str, topic: &str, quiet: Duration) -> Vec<Value> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    while let Ok(Ok(m)) = tokio::time::timeout(quiet, consumer.recv()).await {
        out.push(serde_json::from_slice(m.payload().unwrap()).unwrap());
    }
    out
}

async fn get(gw: &Gateway, path: &str, token: &str) -> Value {
    gw.client
        .get(gw.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_on_one_postgres_ledger_apply_and_alert_exactly_once() {
    let broker = Broker::start();
    let ledger = postgres_database().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shenguan.toml");
    std::fs::write(
        &config,
        "[tracker]\ninterval_seconds = 1\n[bus.kafka]\npartitions = 3\n",
    )
    .unwrap();
    let (bus, config) = (broker.url(), config.display().to_string());
    let args = [
        "--bus",
        bus.as_str(),
        "--ledger",
        ledger.as_str(),
        "--config",
        config.as_str(),
    ];
    let a = Gateway::start(&dir.path().join("a"), &args).await;
    let b = Gateway::start(&dir.path().join("b"), &args).await;
    let ingest = a.token("adapter", "nx-zwfw-approval");
    let scjg = b.token("department", "szs-scjg");
    let wjw = a.token("department", "szs-wjw");

    // Three decisions from January, pushed now: three late pushes.
    let (status, one) = a
        .ingest(
            "nx-zwfw-approval",
            &ingest,
            "application/json",
            fixture("01-company.json"),
        )
        .await;
    assert_eq!(status, 202, "{one}");
    let (status, batch) = b
        .ingest(
            "nx-zwfw-approval",
            &ingest,
            "application/json",
            fixture("02-batch.json"),
        )
        .await;
    assert_eq!(status, 202, "{batch}");
    let food = one["accepted"][0]["id"].as_str().unwrap().to_string();
    let health = batch["accepted"][0]["id"].as_str().unwrap().to_string();

    // Both instances see the record routed to 市场监管局; a claim through instance B is final.
    for _ in 0..100 {
        if get(&a, "/v1/inbox", &scjg).await["count"] == 1
            && get(&b, "/v1/inbox", &scjg).await["count"] == 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = b
        .client
        .post(b.url(&format!("/v1/records/{food}/claim")))
        .bearer_auth(&scjg)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        get(&a, &format!("/v1/records/{food}"), &scjg).await["entries"][0]["state"],
        "claimed"
    );

    // 卫健委 claims with its own Kafka client, straight onto the claim topic.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let claim = json!({
        "specversion": "1.0", "id": uuid::Uuid::new_v4().to_string(), "source": "/szs-wjw/system",
        "type": "cn.shenguan.claim.v1", "subject": health, "time": "2026-11-23T10:00:00+08:00",
        "datacontenttype": "application/json",
        "data": {"record_id": health, "department": "szs-wjw", "action": "claim", "at": "2026-11-23T10:00:00+08:00", "channel": "kafka", "actor": "卫健委系统"}
    });
    producer
        .send(
            FutureRecord::to("shenguan.claim.v1")
                .key(&health)
                .payload(&claim.to_string()),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let mut state = Value::Null;
    for _ in 0..100 {
        state = get(&b, &format!("/v1/records/{health}"), &wjw).await;
        if state["entries"][0]["state"] == "claimed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(state["entries"][0]["state"], "claimed", "{state}");
    assert_eq!(
        state["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["action"] == "claim")
            .count(),
        1
    );

    // Each message applied once: one history line per action, whichever instance applied it.
    let record = get(&a, &format!("/v1/records/{food}"), &scjg).await;
    let actions: Vec<&str> = record["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["published", "late_push", "routed", "claim"],
        "{record}"
    );

    // Every late push alerted exactly once, though both trackers publish the outbox.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let alerts = drain(
        &broker.bootstrap(),
        "shenguan.alert.v1",
        Duration::from_secs(8),
    )
    .await;
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for a in &alerts {
        *by_id
            .entry(a["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let late: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["data"]["level"] == "late_push")
        .collect();
    assert_eq!(late.len(), 3, "{alerts:#?}");
    assert!(
        by_id.values().all(|&n| n == 1),
        "an alert was published twice: {by_id:?}"
    );
}
