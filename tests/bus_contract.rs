//! One test body for every bus: the embedded bus on every run, Kafka against a real broker.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shenguan::bus::{Bus, Delivery, Message};

/// The CloudEvents Kafka protocol binding's structured-mode header, on every message read back.
fn assert_structured_cloudevent(d: &Delivery) {
    assert_eq!(
        d.header("content-type"),
        Some("application/cloudevents+json; charset=UTF-8"),
        "message {}:{}:{} headers {:?}",
        d.topic,
        d.partition,
        d.offset,
        d.headers
    );
    assert_eq!(
        d.headers.len(),
        1,
        "only the content-type header: {:?}",
        d.headers
    );
}

fn messages(topic: &str, keys: &[&str], n: usize, tag: &str) -> Vec<Message> {
    (0..n)
        .map(|i| Message {
            topic: topic.to_string(),
            key: keys[i % keys.len()].to_string(),
            payload: format!("{tag}-{i}").into_bytes(),
        })
        .collect()
}

/// The contract: durable acknowledged publishing, per-key order, group positions that resume.
async fn contract(open: impl Fn() -> Arc<dyn Bus>) {
    let topic = "shenguan.contract.v1".to_string();
    let bus = open();
    bus.ensure_topics(std::slice::from_ref(&topic))
        .await
        .unwrap();
    bus.ensure_topics(std::slice::from_ref(&topic))
        .await
        .expect("ensure_topics is idempotent");
    bus.ready().await.unwrap();

    // Two batches; per-key order must hold.
    bus.publish(messages(&topic, &["rec-a", "rec-b", "rec-c"], 60, "one"))
        .await
        .unwrap();
    bus.publish(messages(&topic, &["rec-a", "rec-b", "rec-c"], 30, "two"))
        .await
        .unwrap();
    let all = bus.read_all(&topic).await.unwrap();
    assert_eq!(all.len(), 90);
    all.iter().for_each(assert_structured_cloudevent);
    let mut per_key: HashMap<String, Vec<String>> = HashMap::new();
    for d in &all {
        per_key
            .entry(d.key.clone().unwrap())
            .or_default()
            .push(String::from_utf8(d.payload.clone()).unwrap());
    }
    let expected_a: Vec<String> = (0..60)
        .step_by(3)
        .map(|i| format!("one-{i}"))
        .chain((0..30).step_by(3).map(|i| format!("two-{i}")))
        .collect();
    assert_eq!(per_key["rec-a"], expected_a);

    // A consumer group reads everything once, committing as it goes.
    let mut sub = bus
        .subscribe("contract-group", std::slice::from_ref(&topic))
        .await
        .unwrap();
    let mut seen = 0;
    while seen < 90 {
        let d = sub
            .next(Duration::from_secs(20))
            .await
            .unwrap()
            .expect("message within 20 s");
        assert_structured_cloudevent(&d);
        sub.commit(&d).await.unwrap();
        seen += 1;
    }
    assert!(
        sub.next(Duration::from_millis(500))
            .await
            .unwrap()
            .is_none(),
        "nothing beyond what was published"
    );
    drop(sub);

    // After a client restart, everything is still there and the group resumes after its commits.
    drop(bus);
    let bus = open();
    assert_eq!(bus.read_all(&topic).await.unwrap().len(), 90);
    bus.publish(messages(&topic, &["rec-d"], 5, "three"))
        .await
        .unwrap();
    let mut sub = bus
        .subscribe("contract-group", std::slice::from_ref(&topic))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        let d = sub
            .next(Duration::from_secs(20))
            .await
            .unwrap()
            .expect("new message within 20 s");
        assert_structured_cloudevent(&d);
        got.push(String::from_utf8(d.payload.clone()).unwrap());
        sub.commit(&d).await.unwrap();
    }
    assert_eq!(
        got,
        (0..5).map(|i| format!("three-{i}")).collect::<Vec<_>>()
    );
    assert!(sub
        .next(Duration::from_millis(500))
        .await
        .unwrap()
        .is_none());

    // A new group starts at the beginning.
    let mut fresh = bus
        .subscribe("another-group", std::slice::from_ref(&topic))
        .await
        .unwrap();
    let first = fresh
        .next(Duration::from_secs(20))
        .await
        .unwrap()
        .expect("a message");
    assert!(
        String::from_utf8(first.payload)
            .unwrap()
            .starts_with("one-")
            || first.key.is_some()
    );
    bus.flush(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_bus_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.db");
    contract(|| {
        Arc::new(shenguan::bus::embedded::EmbeddedBus::open(&path).unwrap()) as Arc<dyn Bus>
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_bus_meets_the_contract_on_a_real_broker() {
    let broker = common::Broker::start();
    let bootstrap = broker.bootstrap();
    let settings = shenguan::config::KafkaSettings {
        partitions: 3,
        ..Default::default()
    };
    contract(|| {
        Arc::new(shenguan::bus::kafka::KafkaBus::new(&bootstrap, &settings).unwrap())
            as Arc<dyn Bus>
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_bus_groups_concurrent_publishes_and_keeps_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let bus =
        Arc::new(shenguan::bus::embedded::EmbeddedBus::open(&dir.path().join("bus.db")).unwrap());
    let mut tasks = Vec::new();
    for t in 0..8 {
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                bus.publish(messages("t", &["k"], 2, &format!("{t}-{i}")))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = bus.read_all("t").await.unwrap();
    assert_eq!(all.len(), 8 * 50 * 2);
    let offsets: Vec<i64> = all.iter().map(|d| d.offset).collect();
    assert_eq!(
        offsets,
        (0..800).collect::<Vec<i64>>(),
        "offsets are dense and ordered"
    );
}

#[tokio::test]
async fn embedded_retention_deletes_only_what_is_older_than_the_period() {
    let dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn Bus> =
        Arc::new(shenguan::bus::embedded::EmbeddedBus::open(&dir.path().join("bus.db")).unwrap());
    let topic = "shenguan.dlq.v1".to_string();
    bus.publish(messages(&topic, &["a"], 5, "old"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    bus.publish(messages(&topic, &["a"], 3, "new"))
        .await
        .unwrap();
    let deleted = bus
        .retain(&topic, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(deleted, 5);
    let left = bus.read_all(&topic).await.unwrap();
    assert_eq!(left.len(), 3);
    assert!(left.iter().all(|d| d.payload.starts_with(b"new")));
    // Offsets go on after the deleted ones.
    bus.publish(messages(&topic, &["a"], 1, "next"))
        .await
        .unwrap();
    let all = bus.read_all(&topic).await.unwrap();
    assert_eq!(all.last().unwrap().offset, 8);
}

#[tokio::test]
async fn an_embedded_bus_file_from_before_headers_opens_and_keeps_its_messages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.db");
    // The layout of a bus file written before messages kept headers, with one message in it.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE bus_topics (topic TEXT PRIMARY KEY, next_offset INTEGER NOT NULL);
             CREATE TABLE bus_messages (
                 topic TEXT NOT NULL, offset INTEGER NOT NULL, key TEXT, payload BLOB NOT NULL,
                 ts INTEGER NOT NULL, PRIMARY KEY (topic, offset)) WITHOUT ROWID;
             CREATE TABLE bus_group_offsets (
                 group_id TEXT NOT NULL, topic TEXT NOT NULL, next_offset INTEGER NOT NULL,
                 PRIMARY KEY (group_id, topic)) WITHOUT ROWID;
             INSERT INTO bus_messages VALUES ('t', 0, 'k', CAST('old-0' AS BLOB), 1);
             INSERT INTO bus_topics VALUES ('t', 1);",
        )
        .unwrap();
    }
    let bus: Arc<dyn Bus> = Arc::new(shenguan::bus::embedded::EmbeddedBus::open(&path).unwrap());
    bus.publish(messages("t", &["k"], 1, "new")).await.unwrap();
    let all = bus.read_all("t").await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].payload, b"old-0");
    assert!(all[0].headers.is_empty(), "{:?}", all[0].headers);
    assert_eq!(all[1].offset, 1);
    assert_structured_cloudevent(&all[1]);
    drop(bus);
    // Opening it again (the column is there now) changes nothing, its page size included.
    let bus = shenguan::bus::embedded::EmbeddedBus::open(&path).unwrap();
    assert_eq!(bus.read_all("t").await.unwrap().len(), 2);
    assert_eq!(common::sqlite_page_size(&path), 4096);
}

/// Publishes 2,000 events of `body` and returns their bytes and the size of the checkpointed file.
async fn stored_size(path: &std::path::Path, body: &str) -> (usize, usize) {
    let bus = shenguan::bus::embedded::EmbeddedBus::open(path).unwrap();
    let batch: Vec<Message> = (0..2000)
        .map(|i| Message {
            topic: "t".into(),
            key: format!("record-{i}"),
            payload: format!("{{\"id\":\"{i}\",\"data\":\"{body}\"}}").into_bytes(),
        })
        .collect();
    let bytes: usize = batch.iter().map(|m| m.payload.len()).sum();
    bus.publish(batch).await.unwrap();
    assert_eq!(bus.read_all("t").await.unwrap().len(), 2000);
    drop(bus);
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    (bytes, std::fs::metadata(path).unwrap().len() as usize)
}

#[tokio::test]
async fn an_embedded_bus_keeps_a_canonical_event_in_its_page_not_in_an_overflow_page_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.db");
    // Events of 1.8 KB, the size of a canonical approval.
    let (bytes, file) = stored_size(&path, &"审".repeat(600)).await;
    // In a row of its own page the file holds little more than the events; with the tail of
    // each in an overflow page (the layout of bus files before) it took 2.6 times their size.
    assert!(
        file < bytes * 13 / 10,
        "{file} bytes on disk for {bytes} bytes of events"
    );
}

#[tokio::test]
async fn a_new_embedded_bus_file_packs_events_of_two_kilobytes_into_its_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.db");
    // Events of 2.1 KB (the peer job's 1.3 KB records as canonical events): on 4 KiB pages
    // each took a page of its own, 1.9 times their size.
    let (bytes, file) = stored_size(&path, &"审".repeat(700)).await;
    assert_eq!(common::sqlite_page_size(&path), 16_384);
    assert!(
        file < bytes * 12 / 10,
        "{file} bytes on disk for {bytes} bytes of events"
    );
}
