//! The roles of `shenguan run` (`--role all|ingest|ledger`) as separate processes on one real
//! Kafka-protocol broker: ingest instances publish, a ledger instance applies and serves the
//! departments. Every record reaches the department's inbox exactly once across a SIGKILL of
//! each; the same record sent to two ingest instances at once is on the bus twice with one
//! CloudEvents id and in the ledger once; each instance serves only its role's paths and says
//! where the others are.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message as _;
use serde_json::Value;
use shenguan::state::StateStore as _;

const ADAPTER: &str = "nx-zwfw-approval";

/// A configuration with 3 partitions per topic, so records of one batch spread over them.
fn config(dir: &std::path::Path) -> String {
    let path = dir.join("shenguan.toml");
    std::fs::write(&path, "[bus.kafka]\npartitions = 3\n").unwrap();
    path.display().to_string()
}

async fn start(dir: &std::path::Path, role: &str, bus: &str, config: &str) -> Gateway {
    Gateway::start(
        &dir.join(role),
        &["--role", role, "--bus", bus, "--config", config],
    )
    .await
}

/// Waits until `/readyz` answers 200.
async fn ready(gw: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = gw.client.get(gw.url("/readyz")).send().await.unwrap();
        if r.status() == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not ready within 60 s: {}\n{}",
            r.text().await.unwrap(),
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(gw: &Gateway, path: &str, token: &str) -> (u16, Value) {
    let r = gw
        .client
        .get(gw.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Records `from..to`, as one batch.
fn batch(from: u32, to: u32) -> Vec<u8> {
    let records: Vec<Value> = (from..to)
        .map(|n| approval_record(n, "2026-01-05 10:30:00"))
        .collect();
    serde_json::to_vec(&records).unwrap()
}

/// The ids of every record in a department's unclaimed inbox (all pages of up to 1,000).
async fn inbox_ids(ledger: &Gateway, token: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/inbox?status=unclaimed&limit=1000&cursor={c}"),
            None => "/v1/inbox?status=unclaimed&limit=1000".to_string(),
        };
        let (status, page) = get(ledger, &path, token).await;
        assert_eq!(status, 200, "{page}");
        for r in page["records"].as_array().unwrap() {
            ids.push(r["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return ids,
        }
    }
}

/// Waits until the inbox holds `want` records (and no more arrive for a moment); its ids.
async fn inbox_settles_at(ledger: &Gateway, token: &str, want: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, page) = get(ledger, "/v1/inbox?status=unclaimed&limit=1", token).await;
        if page["total"].as_u64() == Some(want as u64) {
            tokio::time::sleep(Duration::from_secs(2)).await;
            return inbox_ids(ledger, token).await;
        }
        assert!(
            Instant::now() < deadline,
            "the inbox holds {} records, not {want}, after 90 s:\n{}",
            page["total"],
            ledger.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every message on a topic as (key, event), read from the beginning of every partition until
/// `want` arrived and the topic stayed quiet for 3 s. The partitions are assigned, not joined
/// through a consumer group, so no rebalance can leave one of them unread.
async fn topic(bootstrap: &str, topic: &str, want: usize) -> Vec<(String, Value)> {
    let consumer: StreamConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("roles-test-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut partitions = rdkafka::TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        partitions
            .add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
            .unwrap();
    }
    assert!(partitions.count() > 0, "{topic} has no partitions");
    consumer.assign(&partitions).unwrap();
    let mut out = Vec::new();
    loop {
        let quiet = if out.len() >= want { 3 } else { 60 };
        match tokio::time::timeout(Duration::from_secs(quiet), consumer.recv()).await {
            Err(_) if out.len() >= want => return out,
            Err(_) => panic!("only {} of {want} messages on {topic}", out.len()),
            Ok(m) => {
                let m = m.unwrap();
                let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
                out.push((key, serde_json::from_slice(m.payload().unwrap()).unwrap()));
            }
        }
    }
}

/// What the clients were told, per record id: accepted or duplicate.
#[derive(Default)]
struct Answers {
    accepted: BTreeSet<String>,
    duplicates: BTreeSet<String>,
    refused: usize,
}

/// Posts batches `0..batches` of `size` records to `url`, each until it is answered 202 —
/// through a gateway's SIGKILL and restart, a refused connection or a 503 is sent again.
fn send_batches(
    url: String,
    token: String,
    batches: u32,
    size: u32,
    answers: Arc<Mutex<Answers>>,
    acked: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        for b in 0..batches {
            let body = batch(b * size, (b + 1) * size);
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let sent = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                if let Ok(r) = sent {
                    if r.status() == 202 {
                        let answer: Value = r.json().await.unwrap();
                        let mut guard = answers.lock().unwrap();
                        let a = &mut *guard;
                        for (list, set) in [
                            ("accepted", &mut a.accepted),
                            ("duplicates", &mut a.duplicates),
                        ] {
                            for rec in answer[list].as_array().unwrap() {
                                set.insert(rec["id"].as_str().unwrap().to_string());
                            }
                        }
                        break;
                    }
                }
                answers.lock().unwrap().refused += 1;
                assert!(Instant::now() < deadline, "batch {b} not accepted in 120 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            acked.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    })
}

async fn until(seconds: u64, what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {seconds} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ingest_and_a_ledger_instance_deliver_every_record_once_across_a_kill_of_each() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (bus, config) = (broker.url(), config(dir.path()));
    // Nothing shared but the broker: each instance keeps its own state in its own directory.
    let mut ingest = start(dir.path(), "ingest", &bus, &config).await;
    let mut ledger = start(dir.path(), "ledger", &bus, &config).await;
    let adapter_token = ingest.token("adapter", ADAPTER);
    let scjg = ledger.token("department", "szs-scjg");
    ready(&ingest).await;
    ready(&ledger).await;

    const BATCHES: u32 = 40;
    const SIZE: u32 = 10;
    let answers = Arc::new(Mutex::new(Answers::default()));
    let acked = Arc::new(AtomicUsize::new(0));
    let sender = send_batches(
        ingest.url(&format!("/v1/ingest/{ADAPTER}")),
        adapter_token.clone(),
        BATCHES,
        SIZE,
        answers.clone(),
        acked.clone(),
    );
    // The ingest instance dies while the client sends: the batch in flight is sent again to the
    // restarted instance, which rebuilds its table from its snapshot and the record topics.
    until(60, "10 batches answered", || {
        acked.load(Ordering::SeqCst) >= 10
    })
    .await;
    ingest.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ingest.restart().await;
    // Then the ledger instance dies; it catches up from its stored positions.
    until(90, "25 batches answered", || {
        acked.load(Ordering::SeqCst) >= 25
    })
    .await;
    ledger.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ledger.restart().await;
    tokio::time::timeout(Duration::from_secs(180), sender)
        .await
        .expect("the client finished")
        .unwrap();

    // The first batch again, to the restarted ingest instance: every record is a duplicate.
    let (status, again) = ingest
        .ingest(ADAPTER, &adapter_token, "application/json", batch(0, SIZE))
        .await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["accepted"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(
        again["duplicates"].as_array().unwrap().len(),
        SIZE as usize,
        "{again}"
    );

    let total = (BATCHES * SIZE) as usize;
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    let answered: BTreeSet<String> = answers
        .accepted
        .union(&answers.duplicates)
        .cloned()
        .collect();
    assert_eq!(answered.len(), total, "every record was answered");

    // The department sees each record once.
    let ids = inbox_settles_at(&ledger, &scjg, total).await;
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), total, "no record twice in the inbox");
    assert_eq!(
        unique, answered,
        "the inbox holds exactly the answered records"
    );

    // On the bus: every record, each content once by its CloudEvents id.
    let messages = topic(&broker.bootstrap(), "shenguan.approval.v1", total).await;
    let mut per_event: BTreeMap<String, usize> = BTreeMap::new();
    for (key, event) in &messages {
        assert_eq!(event["subject"], key.as_str());
        *per_event
            .entry(event["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let keys: BTreeSet<String> = messages.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(
        keys, answered,
        "the topic holds exactly the answered records"
    );
    assert_eq!(per_event.len(), total, "one content per record");
    println!(
        "roles: {total} records over {BATCHES} batches; ingest and ledger each killed once; \
         {} answers other than 202; accepted {}, answered duplicate on resend {}; {} messages \
         on the topic, {} published twice; inbox {}",
        answers.refused,
        answers.accepted.len(),
        answers.duplicates.len(),
        messages.len(),
        per_event.values().filter(|n| **n > 1).count(),
        ids.len()
    );
}

/// How many record ids an answer lists as `accepted` and as `duplicates`.
fn answered(r: &Value) -> (usize, usize) {
    let n = |list: &str| r[list].as_array().map_or(0, Vec::len);
    (n("accepted"), n("duplicates"))
}

/// Bytes in the log of an ingest instance's de-duplication table.
fn logged_bytes(db: &std::path::Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT COALESCE(SUM(LENGTH(entries)), 0) FROM ingest_dedup",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

/// An ingest instance on its own broker that has published records 0–19 and stopped.
struct Ingested {
    broker: Broker,
    _dir: tempfile::TempDir,
    ingest: Gateway,
    token: String,
    /// The instance's state store, where its de-duplication table's log is.
    db: std::path::PathBuf,
}

async fn ingested_twenty() -> Ingested {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (bus, config) = (broker.url(), config(dir.path()));
    let mut ingest = start(dir.path(), "ingest", &bus, &config).await;
    let token = ingest.token("adapter", ADAPTER);
    ready(&ingest).await;
    let (s, r) = ingest
        .ingest(ADAPTER, &token, "application/json", batch(0, 20))
        .await;
    assert_eq!((s, answered(&r)), (202, (20, 0)), "{r}");
    ingest.stop();
    let db = dir.path().join("ingest").join("ledger.db");
    Ingested {
        broker,
        _dir: dir,
        ingest,
        token,
        db,
    }
}

impl Ingested {
    /// Starts the instance again, sends records `from..to` and stops it: (accepted, duplicates).
    async fn resend(&mut self, from: u32, to: u32) -> (usize, usize) {
        self.ingest.restart().await;
        ready(&self.ingest).await;
        let (s, r) = self
            .ingest
            .ingest(ADAPTER, &self.token, "application/json", batch(from, to))
            .await;
        assert_eq!(s, 202, "{r}");
        self.ingest.stop();
        answered(&r)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ingest_instance_knows_what_it_published_after_a_restart_and_from_yesterdays_snapshot() {
    let mut run = ingested_twenty().await;
    // The snapshot is a log of 16 bytes a record published.
    assert_eq!(logged_bytes(&run.db), 20 * 16);
    assert_eq!(run.resend(0, 20).await, (0, 20));

    // Yesterday's snapshot: the same records as rows of the state store's table, and no log.
    let messages = topic(&run.broker.bootstrap(), "shenguan.approval.v1", 20).await;
    assert_eq!(messages.len(), 20);
    let seen: Vec<_> = messages
        .iter()
        .map(|(_, e)| shenguan::ingest::seen_from_event(&serde_json::to_vec(e).unwrap()).unwrap())
        .collect();
    shenguan::state::SqliteState::open(&run.db)
        .unwrap()
        .remember(seen)
        .await
        .unwrap();
    rusqlite::Connection::open(&run.db)
        .unwrap()
        .execute_batch("DELETE FROM ingest_dedup; DELETE FROM ingest_activity;")
        .unwrap();

    assert_eq!(run.resend(0, 25).await, (5, 20));
    assert_eq!(
        logged_bytes(&run.db),
        25 * 16,
        "the old rows were written as the log"
    );
    let activity = shenguan::state::SqliteState::open(&run.db)
        .unwrap()
        .adapter_activity()
        .await
        .unwrap();
    assert_eq!(activity.len(), 1);
    assert_eq!(
        (activity[0].adapter.as_str(), activity[0].records),
        (ADAPTER, 25)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_start_replaces_a_log_much_longer_than_the_table_by_the_table() {
    let mut run = ingested_twenty().await;
    // One record changed 1.2 million times: the log holds 1.2 million entries for 21 records.
    let mut piece = Vec::with_capacity(1_200_000 * 16);
    for n in 0..1_200_000u64 {
        piece.extend_from_slice(&0x5eed_u64.to_le_bytes());
        piece.extend_from_slice(&n.to_le_bytes());
    }
    shenguan::state::SqliteState::open(&run.db)
        .unwrap()
        .dedup_append(piece, Vec::new())
        .await
        .unwrap();
    assert_eq!(logged_bytes(&run.db), (20 + 1_200_000) * 16);

    assert_eq!(run.resend(0, 20).await, (0, 20));
    assert_eq!(logged_bytes(&run.db), 21 * 16, "the table, once per record");
    assert!(run
        .ingest
        .logs()
        .contains("de-duplication log replaced by the table"));
    assert_eq!(run.resend(0, 21).await, (1, 20));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_record_sent_to_two_ingest_instances_at_once_is_applied_once() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (bus, config) = (broker.url(), config(dir.path()));
    let a = Gateway::start(
        &dir.path().join("a"),
        &["--role", "ingest", "--bus", &bus, "--config", &config],
    )
    .await;
    let b = Gateway::start(
        &dir.path().join("b"),
        &["--role", "ingest", "--bus", &bus, "--config", &config],
    )
    .await;
    let ledger = start(dir.path(), "ledger", &bus, &config).await;
    let (token_a, token_b) = (a.token("adapter", ADAPTER), b.token("adapter", ADAPTER));
    let scjg = ledger.token("department", "szs-scjg");
    for gw in [&a, &b, &ledger] {
        ready(gw).await;
    }

    // Both instances get the same 20 records at the same moment; each knows only what it
    // published itself, so each publishes them.
    let body = batch(0, 20);
    let ((sa, ra), (sb, rb)) = tokio::join!(
        a.ingest(ADAPTER, &token_a, "application/json", body.clone()),
        b.ingest(ADAPTER, &token_b, "application/json", body.clone()),
    );
    assert_eq!((sa, sb), (202, 202), "{ra}\n{rb}");
    let ids = |r: &Value| -> BTreeSet<String> {
        (r["accepted"].as_array().unwrap().iter())
            .map(|x| x["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&ra).len(), 20, "{ra}");
    assert_eq!(
        ids(&ra),
        ids(&rb),
        "both instances published the 20 records"
    );
    let events = |r: &Value| -> BTreeSet<String> {
        (r["accepted"].as_array().unwrap().iter())
            .map(|x| x["event_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(events(&ra), events(&rb), "with the same CloudEvents ids");

    // The bus holds each record twice, with one CloudEvents id.
    let messages = topic(&broker.bootstrap(), "shenguan.approval.v1", 40).await;
    assert_eq!(messages.len(), 40);
    let mut per_event: BTreeMap<String, usize> = BTreeMap::new();
    for (_, event) in &messages {
        *per_event
            .entry(event["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_event.len(), 20);
    assert!(per_event.values().all(|n| *n == 2), "{per_event:?}");

    // The ledger applies each once: one inbox entry, one publication in its history.
    let inbox = inbox_settles_at(&ledger, &scjg, 20).await;
    assert_eq!(inbox.iter().cloned().collect::<BTreeSet<_>>(), ids(&ra));
    for id in ids(&ra) {
        let (status, record) = get(&ledger, &format!("/v1/records/{id}"), &scjg).await;
        assert_eq!(status, 200, "{record}");
        assert_eq!(record["entries"].as_array().unwrap().len(), 1, "{record}");
        let published = (record["history"].as_array().unwrap().iter())
            .filter(|h| h["action"] == "published")
            .count();
        assert_eq!(published, 1, "{record}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_role_serves_its_own_paths_and_names_the_role_that_serves_the_others() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (bus, config) = (broker.url(), config(dir.path()));
    let ingest = start(dir.path(), "ingest", &bus, &config).await;
    let ledger = start(dir.path(), "ledger", &bus, &config).await;
    ready(&ingest).await;
    ready(&ledger).await;
    let adapter_token = ingest.token("adapter", ADAPTER);
    let admin = ledger.token("admin", "");

    // A ledger instance does not ingest: 404 with the problem type that says where to send it.
    let r = ledger
        .client
        .post(ledger.url(&format!("/v1/ingest/{ADAPTER}")))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(fixture("01-company.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["type"], "urn:shenguan:problem:wrong-role");
    assert_eq!(problem["role"], "ledger");
    assert_eq!(problem["served_by"], "ingest");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("this is a ledger instance"),
        "{problem}"
    );

    // An ingest instance serves no department API and no console.
    for path in ["/v1/inbox", "/ui/login", "/v1/records/x"] {
        let (status, problem) = get(&ingest, path, &admin).await;
        assert_eq!(status, 404, "{path}: {problem}");
        assert_eq!(problem["type"], "urn:shenguan:problem:wrong-role", "{path}");
        assert_eq!(problem["served_by"], "ledger", "{path}");
    }
    // A path nobody serves is the plain 404.
    let (status, problem) = get(&ingest, "/v2/nothing", "").await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (404, Some("urn:shenguan:problem:not-found"))
    );

    // It ingests, and opened no ledger: its state file has no ledger table.
    let (status, answer) = ingest
        .ingest(
            ADAPTER,
            &adapter_token,
            "application/json",
            fixture("01-company.json"),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let state = rusqlite::Connection::open(ingest.data_dir.join("ledger.db")).unwrap();
    let ledger_tables: i64 = state
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name LIKE 'ledger%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        ledger_tables, 0,
        "an ingest instance creates no ledger tables"
    );

    // /metrics says the role and has the series of that role.
    let metrics = |gw: &Gateway| {
        let url = gw.url("/metrics");
        let client = gw.client.clone();
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let (mi, ml) = (metrics(&ingest).await, metrics(&ledger).await);
    assert!(mi.contains("shenguan_build_info{role=\"ingest\""), "{mi}");
    assert!(ml.contains("shenguan_build_info{role=\"ledger\""), "{ml}");
    assert!(mi.contains(
        "shenguan_records_ingested_total{adapter=\"nx-zwfw-approval\",outcome=\"accepted\"} 1"
    ));
    assert!(
        !mi.contains("shenguan_unclaimed_records"),
        "no ledger gauges on an ingest instance"
    );
    assert!(
        !mi.contains("shenguan_calendar_days_remaining "),
        "no tracker gauges"
    );
    assert!(ml.contains("shenguan_unclaimed_records{department=\"szs-scjg\""));
    assert!(ml.contains("shenguan_calendar_days_remaining "));
    assert!(
        !ml.contains("shenguan_records_ingested_total{"),
        "no ingest series on a ledger instance"
    );
    // Readiness reflects the role: an ingest instance has no projector to report on.
    let readyz = |gw: &Gateway| {
        let (url, client) = (gw.url("/readyz"), gw.client.clone());
        async move {
            let r = client.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(readyz(&ingest).await, (200, "ready\n".to_string()));
    // The record reaches the department through the ledger instance, which then has nothing
    // left to apply.
    let scjg = ledger.token("department", "szs-scjg");
    inbox_settles_at(&ledger, &scjg, 1).await;
    let (status, text) = readyz(&ledger).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with("ready\n"), "{text}");
    assert!(!text.contains("projector_stalled"), "{text}");
    let (status, text) = readyz(&ingest).await;
    assert_eq!((status, text.as_str()), (200, "ready\n"));
}

#[test]
fn split_roles_are_refused_on_the_embedded_bus() {
    let dir = tempfile::tempdir().unwrap();
    for role in ["ingest", "ledger"] {
        let out = shenguan(&[
            "run",
            "--role",
            role,
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]);
        assert!(
            !out.status.success(),
            "--role {role} on the embedded bus started"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("--role {role} needs a Kafka bus")) && err.contains("--role all"),
            "{err}"
        );
    }
}
