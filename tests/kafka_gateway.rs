//! The gateway with `--bus kafka://…` against a real Kafka-protocol broker process: a record is
//! ingested over HTTP and consumed back from the topic with a plain Kafka consumer.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message as _;
use serde_json::Value;

async fn consume(bootstrap: &str, topic: &str, n: usize) -> Vec<(String, Value)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("message within 60 s")
            .unwrap();
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        out.push((key, serde_json::from_slice(m.payload().unwrap()).unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn records_ingested_over_http_are_consumed_back_from_kafka() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let url = broker.url();
    let mut gw = Gateway::start(dir.path(), &["--bus", &url]).await;
    let token = gw.token("adapter", "nx-zwfw-approval");

    let (status, body) = gw
        .ingest(
            "nx-zwfw-approval",
            &token,
            "application/json",
            fixture("02-batch.json"),
        )
        .await;
    assert_eq!(status, 202, "{body}\n{}", gw.logs());
    let accepted = body["accepted"].as_array().unwrap().clone();
    assert_eq!(accepted.len(), 2);
    let (_, bad) = gw
        .ingest(
            "nx-zwfw-approval",
            &token,
            "application/json",
            fixture("11-bad-id-number.json"),
        )
        .await;
    assert_eq!(bad["rejected"][0]["reason"], "invalid_identifier");

    let records = consume(&broker.bootstrap(), "shenguan.approval.v1", 2).await;
    let schemas = shenguan::schema::Schemas::load(Some(&repo().join("schemas"))).unwrap();
    for (key, event) in &records {
        let acc = accepted
            .iter()
            .find(|a| a["id"] == key.as_str())
            .expect("key is an accepted record id");
        assert_eq!(event["id"], acc["event_id"]);
        assert_eq!(event["type"], "cn.shenguan.approval.v1");
        assert!(schemas.validate_envelope(event).is_empty());
        assert!(schemas
            .validate(shenguan::schema::RecordKind::Approval, &event["data"])
            .is_empty());
    }
    let dlq = consume(&broker.bootstrap(), "shenguan.dlq.v1", 1).await;
    assert_eq!(dlq[0].1["data"]["reason"], "invalid_identifier");

    // `dlq list` reads the Kafka DLQ topic.
    let dir_arg = dir.path().display().to_string();
    let out = shenguan(&["dlq", "list", "--bus", &url, "--data-dir", &dir_arg]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{listing}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        listing.contains("1 entries") && listing.contains("check digit"),
        "{listing}"
    );

    // A restart of the gateway loses nothing and duplicates nothing.
    gw.restart().await;
    let (_, again) = gw
        .ingest(
            "nx-zwfw-approval",
            &token,
            "application/json",
            fixture("02-batch.json"),
        )
        .await;
    assert_eq!(again["duplicates"].as_array().unwrap().len(), 2, "{again}");
    let (_, more) = gw
        .ingest(
            "nx-zwfw-approval",
            &token,
            "application/json",
            fixture("01-company.json"),
        )
        .await;
    assert_eq!(more["accepted"].as_array().unwrap().len(), 1);
    let all = consume(&broker.bootstrap(), "shenguan.approval.v1", 3).await;
    assert_eq!(all.len(), 3);
    assert_eq!(
        gw.client
            .get(gw.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_answers_503_when_the_broker_is_gone_and_accepts_nothing() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let url = broker.url();
    let config = dir.path().join("shenguan.toml");
    std::fs::write(&config, "[bus.kafka]\npublish_timeout_ms = 3000\n").unwrap();
    let config_arg = config.display().to_string();
    let gw = Gateway::start(dir.path(), &["--bus", &url, "--config", &config_arg]).await;
    let token = gw.token("adapter", "nx-zwfw-approval");
    drop(broker);
    let (status, body) = gw
        .ingest(
            "nx-zwfw-approval",
            &token,
            "application/json",
            fixture("01-company.json"),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("send the request again"));
    assert_eq!(
        gw.client
            .get(gw.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
}

/// A department's own Kafka client claims a record the ledger has never seen: the claim waits
/// for it, the admin is told so, and the gauge of waiting events counts it.
#[tokio::test(flavor = "multi_thread")]
async fn a_claim_for_a_record_that_has_not_arrived_waits_and_is_shown() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shenguan.toml");
    std::fs::write(&config, "[tracker]\ninterval_seconds = 1\n").unwrap();
    let (url, config) = (broker.url(), config.display().to_string());
    let gw = Gateway::start(dir.path(), &["--bus", &url, "--config", &config]).await;
    let admin = gw.token("admin", "");
    let record_id = uuid::Uuid::new_v4().to_string();
    let claim = serde_json::json!({
        "specversion": "1.0", "id": uuid::Uuid::new_v4().to_string(), "source": "/szs-wjw/system",
        "type": "cn.shenguan.claim.v1", "subject": record_id, "time": "2026-11-23T10:00:00+08:00",
        "datacontenttype": "application/json",
        "data": {"record_id": record_id, "department": "szs-wjw", "action": "claim",
                 "at": "2026-11-23T10:00:00+08:00", "channel": "kafka", "actor": "卫健委系统"}
    });
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to("shenguan.claim.v1")
                .key(&record_id)
                .payload(&claim.to_string()),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let detail = loop {
        let r = gw
            .client
            .get(gw.url(&format!("/v1/records/{record_id}")))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let body: Value = r.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap_or("").to_string();
        let metrics = gw
            .client
            .get(gw.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let gauge = metrics
            .lines()
            .find(|l| l.starts_with("shenguan_ledger_waiting_events{kind=\"claim\"}"))
            .unwrap_or("")
            .to_string();
        if detail.contains("1 events about it wait") && gauge.ends_with(" 1") {
            break detail;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the waiting claim is not shown: detail {detail:?}, gauge {gauge:?}\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(
        detail,
        format!("no record {record_id} yet; 1 events about it wait for it to arrive")
    );
    // A department is told nothing more than that there is no such record.
    let wjw = gw.token("department", "szs-wjw");
    let r = gw
        .client
        .get(gw.url(&format!("/v1/records/{record_id}")))
        .bearer_auth(&wjw)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["detail"], format!("no record {record_id}"), "{body}");
}
