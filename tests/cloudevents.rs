//! The CloudEvents Kafka protocol binding, checked by an independent consumer: the gateway runs
//! on a real Kafka-protocol broker, and `tests/cloudevents/consume.py` reads its topics with a
//! plain Kafka client and the CloudEvents SDK for Python (`cloudevents`, with `kafka-python`),
//! choosing the content mode from the `content-type` header as the binding says a receiver does.
//! A missing Python package is a failure with instructions, never a skip.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Every message of the given topics as the SDK consumer read them.
fn consume(bootstrap: &str, topics: &[(&str, usize)]) -> Vec<Value> {
    let mut args = vec![
        repo()
            .join("tests/cloudevents/consume.py")
            .display()
            .to_string(),
        bootstrap.to_string(),
    ];
    args.extend(topics.iter().map(|(t, n)| format!("{t}={n}")));
    let out = Command::new("python3")
        .args(&args)
        .output()
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named") && !stderr.contains("UnsupportedCodecError"),
        "the CloudEvents consumer needs the Python packages cloudevents, kafka-python and lz4: run the \
         tests with `bash scripts/test.sh`, which installs them (pip install cloudevents==2.2.0 \
         kafka-python==2.3.3 lz4==4.4.4)\n{stderr}"
    );
    assert!(
        out.status.success(),
        "the CloudEvents SDK consumer failed ({}):\n{stderr}",
        out.status
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// Asserts what every message must be: structured mode by its header, and the SDK's event equal
/// to what the gateway published.
fn assert_structured(m: &Value) {
    assert_eq!(
        m["headers"]["content-type"], "application/cloudevents+json; charset=UTF-8",
        "{m}"
    );
    assert_eq!(m["mode"], "structured", "{m}");
    assert_eq!(m["attributes"]["specversion"], "1.0", "{m}");
    assert_eq!(
        m["attributes"]["subject"].as_str(),
        m["key"].as_str(),
        "the Kafka key is the subject: {m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cloudevents_sdk_reads_records_claims_and_dlq_entries_in_structured_mode() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let url = broker.url();
    let gw = Gateway::start(dir.path(), &["--bus", &url]).await;
    let adapter = gw.token("adapter", "nx-zwfw-approval");
    let scjg = gw.token("department", "szs-scjg");

    let (status, accepted) = gw
        .ingest(
            "nx-zwfw-approval",
            &adapter,
            "application/json",
            fixture("01-company.json"),
        )
        .await;
    assert_eq!(status, 202, "{accepted}\n{}", gw.logs());
    let record_id = accepted["accepted"][0]["id"].as_str().unwrap().to_string();
    let event_id = accepted["accepted"][0]["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, rejected) = gw
        .ingest(
            "nx-zwfw-approval",
            &adapter,
            "application/json",
            fixture("10-bad-uscc.json"),
        )
        .await;
    assert_eq!(status, 202, "{rejected}");
    let dlq_id = rejected["rejected"][0]["dlq_id"]
        .as_str()
        .unwrap()
        .to_string();

    // The department claims the record once the ledger has routed it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = gw
            .client
            .post(gw.url(&format!("/v1/records/{record_id}/claim")))
            .bearer_auth(&scjg)
            .send()
            .await
            .unwrap();
        if r.status().is_success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the claim kept failing ({}): {}\n{}",
            r.status(),
            r.text().await.unwrap_or_default(),
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let messages = consume(
        &broker.bootstrap(),
        &[
            ("shenguan.approval.v1", 1),
            ("shenguan.claim.v1", 1),
            ("shenguan.dlq.v1", 1),
        ],
    );
    messages.iter().for_each(assert_structured);

    // The record: the SDK gives the id, type and data the gateway published.
    let record = messages
        .iter()
        .find(|m| m["topic"] == "shenguan.approval.v1")
        .expect("the approval record");
    assert_eq!(record["attributes"]["id"], event_id.as_str());
    assert_eq!(record["attributes"]["type"], "cn.shenguan.approval.v1");
    assert_eq!(record["key"], record_id.as_str());
    assert_eq!(record["data"]["record_id"], record_id.as_str());
    assert_eq!(record["data"]["case_no"], "640200202601050001");
    assert_eq!(
        record["data"]["counterpart"]["name"],
        "宁夏塞上人家餐饮管理有限公司"
    );

    // The claim: an API event, on the record's key.
    let claim = messages
        .iter()
        .find(|m| m["topic"] == "shenguan.claim.v1" && m["data"]["action"] == "claim")
        .unwrap_or_else(|| panic!("no claim event among {messages:?}"));
    assert_eq!(claim["attributes"]["type"], "cn.shenguan.claim.v1");
    assert_eq!(claim["key"], record_id.as_str());
    assert_eq!(claim["data"]["record_id"], record_id.as_str());
    assert_eq!(claim["data"]["department"], "szs-scjg");
    assert!(
        claim["attributes"]["id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{claim}"
    );

    // The DLQ entry.
    let dlq = messages
        .iter()
        .find(|m| m["topic"] == "shenguan.dlq.v1")
        .expect("the DLQ entry");
    assert_eq!(dlq["attributes"]["id"], dlq_id.as_str());
    assert_eq!(dlq["attributes"]["type"], "cn.shenguan.dlq.v1");
    assert_eq!(dlq["data"]["stage"], "validate");
    assert_eq!(dlq["data"]["reason"], "invalid_identifier");
    assert_eq!(dlq["data"]["adapter"], "nx-zwfw-approval");
}
