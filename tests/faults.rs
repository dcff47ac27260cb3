//! Fault injection against real processes: the gateway killed with SIGKILL while it ingests,
//! polls and applies claims; PostgreSQL restarted under load; department webhooks down, slow or
//! failing; a legacy API that errs, hangs and pages badly; the Kafka-protocol broker killed
//! mid-stream. After each fault every record a client was answered 202 for is on the bus exactly
//! once per record id, and the ledger equals what a rebuild from the bus gives.
//!
//! Each test prints one `fault:` line with its figures (run with `--nocapture` to see them);
//! docs/runbook.md ("Fault tests") lists them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const ADAPTER: &str = "nx-zwfw-approval";
const DEPARTMENT: &str = "szs-scjg";

/// What a source system saw while sending.
#[derive(Debug, Default)]
struct Tally {
    /// Record id → how many 202 answers named it as accepted (more than one: published twice).
    accepted: BTreeMap<String, u32>,
    /// Record ids a 202 answer named as duplicates (already published before).
    duplicates: BTreeSet<String>,
    /// Answers other than 202, by status (0 = no answer: connection refused or reset).
    failures: BTreeMap<u16, usize>,
    /// 503 answers that carried `Retry-After`.
    retry_after: usize,
}

impl Tally {
    /// Every record id the client holds a 202 for.
    fn acknowledged(&self) -> BTreeSet<String> {
        self.accepted
            .keys()
            .cloned()
            .chain(self.duplicates.iter().cloned())
            .collect()
    }

    fn accepted_twice(&self) -> usize {
        self.accepted.values().filter(|n| **n > 1).count()
    }
}

/// A legacy system pushing `batches` with `workers` concurrent connections; every batch is sent
/// again until it is answered 202 (ingest is idempotent by business key). `acked` counts the
/// batches answered so far.
fn send_batches(
    url: String,
    token: String,
    batches: Vec<Vec<Value>>,
    workers: usize,
    tally: Arc<Mutex<Tally>>,
    acked: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let queue = Arc::new(Mutex::new(batches.into_iter().collect::<Vec<_>>()));
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let (client, url, token, queue, tally, acked) = (
                client.clone(),
                url.clone(),
                token.clone(),
                queue.clone(),
                tally.clone(),
                acked.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(140);
                loop {
                    let Some(batch) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    let body = serde_json::to_vec(&batch).unwrap();
                    loop {
                        assert!(
                            Instant::now() < deadline,
                            "a batch was not accepted within 140 s"
                        );
                        let r = client
                            .post(&url)
                            .bearer_auth(&token)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await;
                        let wait = match r {
                            Ok(r) if r.status() == 202 => {
                                let answer: Value = r.json().await.unwrap();
                                let mut t = tally.lock().unwrap();
                                assert!(
                                    answer["rejected"].as_array().unwrap().is_empty(),
                                    "{answer}"
                                );
                                let acc = answer["accepted"].as_array().unwrap();
                                let dup = answer["duplicates"].as_array().unwrap();
                                assert_eq!(acc.len() + dup.len(), batch.len(), "{answer}");
                                for a in acc {
                                    *t.accepted
                                        .entry(a["id"].as_str().unwrap().to_string())
                                        .or_default() += 1;
                                }
                                for d in dup {
                                    t.duplicates.insert(d["id"].as_str().unwrap().to_string());
                                }
                                acked.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                            Ok(r) => {
                                let status = r.status().as_u16();
                                let mut t = tally.lock().unwrap();
                                *t.failures.entry(status).or_default() += 1;
                                if status == 503 && r.headers().contains_key("retry-after") {
                                    t.retry_after += 1;
                                }
                                assert!(
                                    status == 503 || status == 502,
                                    "unexpected answer {status}"
                                );
                                // Retry-After says 5 s; the test client retries sooner.
                                Duration::from_millis(200)
                            }
                            Err(_) => {
                                *tally.lock().unwrap().failures.entry(0).or_default() += 1;
                                Duration::from_millis(100)
                            }
                        };
                        tokio::time::sleep(wait).await;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
}

/// `n` approvals per batch, `batches` batches, record numbers from `first`.
fn approval_batches(first: u32, batches: u32, n: u32) -> Vec<Vec<Value>> {
    (0..batches)
        .map(|b| {
            (0..n)
                .map(|i| {
                    let k = first + b * n + i;
                    approval_record(k, &at(k))
                })
                .collect()
        })
        .collect()
}

/// A change time per record number: one second apart.
fn at(k: u32) -> String {
    (chrono::DateTime::parse_from_rfc3339("2026-01-06T08:00:00+08:00").unwrap()
        + chrono::Duration::seconds(k as i64))
    .to_rfc3339()
}

/// Waits until `cond` holds, polling; panics with `what` after `secs`.
async fn until<F, Fut>(secs: u64, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond().await {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Record id → number of messages on the embedded approval topic.
async fn embedded_counts(data: &std::path::Path) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for e in embedded_topic(data, "shenguan.approval.v1").await {
        *counts
            .entry(e["subject"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    counts
}

/// Asserts the bus holds exactly the acknowledged records, each once. Returns (on the bus,
/// duplicates, lost).
fn assert_exactly_once(
    what: &str,
    acknowledged: &BTreeSet<String>,
    on_bus: &BTreeMap<String, u32>,
) -> (usize, usize, usize) {
    let duplicates: Vec<_> = on_bus.iter().filter(|(_, n)| **n > 1).collect();
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|id| !on_bus.contains_key(*id))
        .collect();
    let unacknowledged: Vec<_> = on_bus
        .keys()
        .filter(|id| !acknowledged.contains(*id))
        .collect();
    assert!(
        duplicates.is_empty(),
        "{what}: records on the bus more than once: {duplicates:?}"
    );
    assert!(
        lost.is_empty(),
        "{what}: acknowledged but not on the bus: {lost:?}"
    );
    // A record on the bus the client never got a 202 for would be fine (at-least-once), but the
    // client resends everything, so every record ends up acknowledged.
    assert!(
        unacknowledged.is_empty(),
        "{what}: on the bus but never acknowledged: {unacknowledged:?}"
    );
    (on_bus.len(), duplicates.len(), lost.len())
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
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits until every record has its ledger entry for the department (the projector caught up).
async fn wait_for_ledger(gw: &Gateway, admin: &str, ids: &BTreeSet<String>) {
    let mut pending: Vec<&String> = ids.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(id) = pending.last() {
        let (status, body) = get(gw, &format!("/v1/records/{id}"), admin).await;
        if status == 200
            && body["entries"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["department"] == DEPARTMENT))
        {
            pending.pop();
            continue;
        }
        assert!(
            Instant::now() < deadline,
            "record {id} has no ledger entry for {DEPARTMENT}: {status} {body}\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops the gateway, runs `shenguan ledger rebuild` and returns (live, rebuilt) snapshots.
async fn rebuild_and_compare(gw: &mut Gateway, ledger_url: &str, extra: &[&str]) -> usize {
    gw.stop();
    let live = common::ledger_snapshot(ledger_url).await;
    let data = gw.data_dir.display().to_string();
    let mut args = vec!["ledger", "rebuild", "--data-dir", data.as_str()];
    args.extend_from_slice(extra);
    let out = shenguan(&args);
    assert!(
        out.status.success(),
        "ledger rebuild failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rebuilt = common::ledger_snapshot(ledger_url).await;
    assert_eq!(live.len(), rebuilt.len(), "rebuilt ledger row count");
    for (a, b) in live.iter().zip(&rebuilt) {
        assert_eq!(a, b, "the rebuilt ledger differs from the live one");
    }
    live.len()
}

fn sqlite_ledger(gw: &Gateway) -> String {
    format!("sqlite:{}", gw.data_dir.join("ledger.db").display())
}

/// Faults 1 and 5: SIGKILL while four clients post batches, restart on the same data
/// directory (the embedded bus's and ledger's SQLite files and WAL as the crash left them),
/// clients resend what was not answered 202.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_ingest_loses_nothing_and_publishes_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(&dir.path().join("data"), &[]).await;
    let token = gw.token("adapter", ADAPTER);
    let admin = gw.token("admin", "");
    let batches = approval_batches(1, 80, 8);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let acked = Arc::new(AtomicUsize::new(0));
    let sender = send_batches(
        gw.url(&format!("/v1/ingest/{ADAPTER}")),
        token,
        batches,
        4,
        tally.clone(),
        acked.clone(),
    );
    until(60, "25 batches answered before the kill", || {
        let n = acked.load(Ordering::SeqCst);
        async move { n >= 25 }
    })
    .await;
    gw.kill9();
    let acked_at_kill = acked.load(Ordering::SeqCst);
    // What the crash left: the SQLite write-ahead logs, not checkpointed into the databases.
    for f in ["bus.db-wal", "ledger.db-wal"] {
        let len = std::fs::metadata(gw.data_dir.join(f))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 0, "{f} left by the crash is empty or missing");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    gw.restart().await;
    // Ready once the de-duplication table has loaded its log and caught up with the bus (the
    // clients' resends wait for it meanwhile).
    let restarted = &gw;
    until(30, "ready after the restart", || async move {
        get(restarted, "/readyz", "").await.0 == 200
    })
    .await;
    tokio::time::timeout(Duration::from_secs(120), sender)
        .await
        .expect("clients done")
        .unwrap();
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let acknowledged = tally.acknowledged();
    assert_eq!(acknowledged.len(), 640);
    let on_bus = embedded_counts(&gw.data_dir).await;
    let (n, dups, lost) = assert_exactly_once("sigkill during ingest", &acknowledged, &on_bus);
    assert_eq!(
        tally.accepted_twice(),
        0,
        "a record was answered accepted twice"
    );
    wait_for_ledger(&gw, &admin, &acknowledged).await;
    assert!(
        !gw.logs().contains("cannot be matched to its content hash"),
        "{}",
        gw.logs()
    );
    let ledger = sqlite_ledger(&gw);
    // The live ledger took bursts of up to 2,000 messages; the rebuild takes bursts of 5, so a
    // record's events are split across transactions, and gives the same ledger. A burst of 0 is
    // refused, with the key named.
    let refused = dir.path().join("refused.toml");
    std::fs::write(&refused, "[ledger]\nburst = 0\n").unwrap();
    let data = gw.data_dir.display().to_string();
    gw.stop();
    let out = shenguan(&[
        "ledger",
        "rebuild",
        "--data-dir",
        &data,
        "--config",
        &refused.display().to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("[ledger] burst = 0: must be from 1 to 100000"),
        "{stderr}"
    );
    let small = dir.path().join("small-bursts.toml");
    std::fs::write(&small, "[ledger]\nburst = 5\n").unwrap();
    let small = small.display().to_string();
    let rows = rebuild_and_compare(&mut gw, &ledger, &["--config", &small]).await;
    println!(
        "fault: sigkill during ingest: 640 records, killed after {acked_at_kill} of 80 batches; \
         accepted {}, answered duplicate on resend {}, failed sends {:?}; on the bus {n}, \
         duplicates {dups}, lost {lost}; ledger rows {rows} = rebuild",
        tally.accepted.len(),
        tally.duplicates.len(),
        tally.failures
    );
}

/// A legacy API paged by `since`/`page`/`page_size`, ordered by (time, id), every page `delay`
/// slow. `requests` counts the requests.
async fn paged_api(
    records: Arc<Vec<Value>>,
    delay: Duration,
    requests: Arc<AtomicUsize>,
) -> String {
    let app = axum::Router::new().route(
        "/results",
        axum::routing::get(
            move |q: axum::extract::Query<std::collections::HashMap<String, String>>| {
                let records = records.clone();
                let requests = requests.clone();
                async move {
                    requests.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    axum::Json(Value::Array(page_of(&records, &q)))
                }
            },
        ),
    );
    serve(app).await
}

/// The page `q` asks for: records at or after `since`, ordered by (UPDATE_TIME, PROJID).
fn page_of(records: &[Value], q: &std::collections::HashMap<String, String>) -> Vec<Value> {
    let since = q
        .get("since")
        .map(|s| chrono::DateTime::parse_from_rfc3339(s).unwrap());
    let page: usize = q["page"].parse().unwrap();
    let size: usize = q["page_size"].parse().unwrap();
    let mut rows: Vec<&Value> = records
        .iter()
        .filter(|r| {
            let t =
                chrono::DateTime::parse_from_rfc3339(r["UPDATE_TIME"].as_str().unwrap()).unwrap();
            since.is_none_or(|s| t >= s)
        })
        .collect();
    rows.sort_by_key(|r| {
        (
            r["UPDATE_TIME"].as_str().unwrap().to_string(),
            r["PROJID"].as_str().unwrap().to_string(),
        )
    });
    rows.into_iter()
        .skip((page - 1) * size)
        .take(size)
        .cloned()
        .collect()
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/results", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A gateway with a configuration file (`config` is TOML) and its own adapters directory.
async fn gateway_with(dir: &std::path::Path, config: &str, extra: &[&str]) -> Gateway {
    let file = dir.join("shenguan.toml");
    std::fs::write(&file, config).unwrap();
    let mut args = vec!["--config".to_string(), file.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Gateway::start(&dir.join("data"), &args).await
}

fn poll_source(url: &str, extra: &str) -> String {
    format!(
        "[[sources]]\ntype = \"http_poll\"\nname = \"zwfw-poll\"\nadapter = \"{ADAPTER}\"\nurl = \"{url}\"\n\
         interval_seconds = 1\npage_size = 10\noverlap_seconds = 3600\ninitial_backoff_ms = 50\n\
         cursor_time = \"$.UPDATE_TIME\"\ncursor_id = \"$.PROJID\"\n{extra}"
    )
}

fn ids_of(records: &[Value]) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| shenguan::pipeline::record_id(ADAPTER, r["PROJID"].as_str().unwrap()))
        .collect()
}

/// Waits until the approval topic holds `want` distinct records, then until the source polled
/// twice more, and returns the counts.
async fn settle_poll(
    data: &std::path::Path,
    want: usize,
    requests: &AtomicUsize,
    secs: u64,
) -> BTreeMap<String, u32> {
    until(secs, &format!("{want} records on the bus"), || async move {
        embedded_counts(data).await.len() >= want
    })
    .await;
    // Two more complete polls over the overlap window: anything they publish is a duplicate.
    let seen = requests.load(Ordering::SeqCst);
    until(30, "two more polls", || {
        let n = requests.load(Ordering::SeqCst);
        async move { n >= seen + 2 * (want / 10 + 1) }
    })
    .await;
    embedded_counts(data).await
}

/// Fault 2: SIGKILL while an `http_poll` source is half-way through a long poll; the restarted
/// gateway resumes from its checkpoint.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_an_http_poll_loses_nothing_and_publishes_nothing_twice() {
    let records: Arc<Vec<Value>> =
        Arc::new((1..=300).map(|k| approval_record(k, &at(k))).collect());
    let requests = Arc::new(AtomicUsize::new(0));
    let url = paged_api(records.clone(), Duration::from_millis(60), requests.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut gw = gateway_with(dir.path(), &poll_source(&url, ""), &[]).await;
    until(60, "12 pages served", || {
        let n = requests.load(Ordering::SeqCst);
        async move { n >= 12 }
    })
    .await;
    gw.kill9();
    let before = embedded_counts(&gw.data_dir).await.len();
    gw.restart().await;
    let on_bus = settle_poll(&gw.data_dir, 300, &requests, 90).await;
    let (n, dups, lost) = assert_exactly_once("sigkill during poll", &ids_of(&records), &on_bus);
    let admin = gw.token("admin", "");
    wait_for_ledger(&gw, &admin, &ids_of(&records)).await;
    let ledger = sqlite_ledger(&gw);
    let config = dir.path().join("shenguan.toml").display().to_string();
    let rows = rebuild_and_compare(&mut gw, &ledger, &["--config", &config]).await;
    println!(
        "fault: sigkill during http poll: 300 records, {before} on the bus at the kill; \
         {} requests; on the bus {n}, duplicates {dups}, lost {lost}; ledger rows {rows} = rebuild",
        requests.load(Ordering::SeqCst)
    );
}

/// Fault 7: a legacy API that answers 500, hangs past the request timeout, serves a page twice
/// (the previous page again) and serves pages and rows out of order.
#[tokio::test(flavor = "multi_thread")]
async fn a_misbehaving_poll_api_still_yields_every_record_exactly_once() {
    let records: Arc<Vec<Value>> = Arc::new((1..=60).map(|k| approval_record(k, &at(k))).collect());
    let requests = Arc::new(AtomicUsize::new(0));
    let faults = Arc::new(Mutex::new(BTreeMap::<&'static str, usize>::new()));
    let (r2, q2, f2) = (records.clone(), requests.clone(), faults.clone());
    let app = axum::Router::new().route(
        "/results",
        axum::routing::get(
            move |q: axum::extract::Query<std::collections::HashMap<String, String>>| {
                let (records, requests, faults) = (r2.clone(), q2.clone(), f2.clone());
                async move {
                    let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
                    let mut q = q.0;
                    let page: usize = q["page"].parse().unwrap();
                    let fault = match n % 7 {
                        1 => "error",
                        3 => "hang",
                        _ if page > 1 && n % 5 == 0 => "duplicate_page",
                        _ if page <= 2 && n % 3 == 0 => "pages_swapped",
                        _ => "none",
                    };
                    *faults.lock().unwrap().entry(fault).or_default() += 1;
                    match fault {
                        "error" => {
                            return (
                                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                                axum::Json(json!({"error": "ORA-12519"})),
                            )
                        }
                        // Longer than timeout_seconds = 1: the request is abandoned.
                        "hang" => tokio::time::sleep(Duration::from_millis(2500)).await,
                        "duplicate_page" => {
                            q.insert("page".into(), (page - 1).to_string());
                        }
                        "pages_swapped" => {
                            q.insert("page".into(), (3 - page).to_string());
                        }
                        _ => {}
                    }
                    let mut rows = page_of(&records, &q);
                    // Rows out of order within the page, too.
                    rows.reverse();
                    (axum::http::StatusCode::OK, axum::Json(Value::Array(rows)))
                }
            },
        ),
    );
    let url = serve(app).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway_with(
        dir.path(),
        &poll_source(&url, "timeout_seconds = 1\nmax_retries = 4\n"),
        &[],
    )
    .await;
    let on_bus = settle_poll(&gw.data_dir, 60, &requests, 90).await;
    let (n, dups, lost) = assert_exactly_once("misbehaving poll API", &ids_of(&records), &on_bus);
    let faults = faults.lock().unwrap().clone();
    for f in ["error", "hang", "duplicate_page", "pages_swapped"] {
        assert!(
            faults.get(f).is_some_and(|n| *n > 0),
            "fault {f} never happened: {faults:?}"
        );
    }
    println!(
        "fault: misbehaving poll API: 60 records, {} requests, faults {faults:?}; on the bus {n}, \
         duplicates {dups}, lost {lost}",
        requests.load(Ordering::SeqCst)
    );
}

/// Claims `ids` for the department with `workers` concurrent clients, each retried until it is
/// answered 200 or 202. Returns the number of failed attempts.
fn claim_all(
    gw_url: String,
    token: String,
    ids: Vec<String>,
    workers: usize,
    done: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<usize> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let queue = Arc::new(Mutex::new(ids));
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let (client, url, token, queue, done) = (
                client.clone(),
                gw_url.clone(),
                token.clone(),
                queue.clone(),
                done.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut failures = 0;
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    let Some(id) = queue.lock().unwrap().pop() else {
                        return failures;
                    };
                    loop {
                        assert!(Instant::now() < deadline, "claim of {id} not answered");
                        match client
                            .post(format!("{url}/v1/records/{id}/claim"))
                            .bearer_auth(&token)
                            .send()
                            .await
                        {
                            Ok(r) if r.status() == 200 || r.status() == 202 => {
                                done.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                            Ok(r) => {
                                let s = r.status().as_u16();
                                assert!(s >= 500, "claim of {id}: {s}");
                                failures += 1;
                            }
                            Err(_) => failures += 1,
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }));
        }
        let mut failures = 0;
        for t in tasks {
            failures += t.await.unwrap();
        }
        failures
    })
}

/// Every record claimed once by the department: its entry is `claimed` and its history has one
/// `claim` (a repeated claim is recorded as ignored, never applied twice).
async fn assert_claimed_once(gw: &Gateway, admin: &str, ids: &BTreeSet<String>) -> usize {
    let mut repeated = 0;
    for id in ids {
        let deadline = Instant::now() + Duration::from_secs(30);
        let body = loop {
            let (s, b) = get(gw, &format!("/v1/records/{id}"), admin).await;
            if s == 200
                && b["entries"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|e| e["state"] == "claimed"))
            {
                break b;
            }
            assert!(Instant::now() < deadline, "record {id} not claimed: {b}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let history = body["history"].as_array().unwrap();
        let claims = history.iter().filter(|h| h["action"] == "claim").count();
        assert_eq!(claims, 1, "record {id}: {history:?}");
        repeated += history
            .iter()
            .filter(|h| h["action"] == "ignored" && h["detail"]["action"] == "claim")
            .count();
        let entries = body["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "record {id}: {entries:?}");
    }
    repeated
}

/// Fault 3: SIGKILL while a department claims records concurrently; the restarted gateway
/// applies every claim once, and `ledger rebuild` gives the same ledger.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_claims_applies_each_claim_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = gateway_with(dir.path(), "[delivery]\napply_wait_ms = 2000\n", &[]).await;
    let token = gw.token("adapter", ADAPTER);
    let admin = gw.token("admin", "");
    let scjg = gw.token("department", DEPARTMENT);
    let tally = Arc::new(Mutex::new(Tally::default()));
    send_batches(
        gw.url(&format!("/v1/ingest/{ADAPTER}")),
        token,
        approval_batches(1, 10, 20),
        2,
        tally.clone(),
        Arc::new(AtomicUsize::new(0)),
    )
    .await
    .unwrap();
    let ids = tally.lock().unwrap().acknowledged();
    assert_eq!(ids.len(), 200);
    wait_for_ledger(&gw, &admin, &ids).await;
    let done = Arc::new(AtomicUsize::new(0));
    let claims = claim_all(
        format!("http://{}", gw.addr),
        scjg,
        ids.iter().cloned().collect(),
        4,
        done.clone(),
    );
    until(60, "60 claims answered before the kill", || {
        let n = done.load(Ordering::SeqCst);
        async move { n >= 60 }
    })
    .await;
    gw.kill9();
    let at_kill = done.load(Ordering::SeqCst);
    gw.restart().await;
    let failures = tokio::time::timeout(Duration::from_secs(120), claims)
        .await
        .expect("claims done")
        .unwrap();
    let repeated = assert_claimed_once(&gw, &admin, &ids).await;
    let on_bus = embedded_counts(&gw.data_dir).await;
    let (n, dups, lost) = assert_exactly_once("sigkill during claims", &ids, &on_bus);
    let ledger = sqlite_ledger(&gw);
    let config = dir.path().join("shenguan.toml").display().to_string();
    let rows = rebuild_and_compare(&mut gw, &ledger, &["--config", &config]).await;
    println!(
        "fault: sigkill during claims: 200 records, {at_kill} claims answered at the kill, \
         {failures} failed claim attempts retried, {repeated} repeated claims ignored; every \
         record claimed once; records on the bus {n}, duplicates {dups}, lost {lost}; \
         ledger rows {rows} = rebuild"
    );
}

/// Fault 4: the PostgreSQL server holding the ledger and the gateway's state is stopped the way
/// a crash stops it and started again while records are ingested and claimed.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_restart_under_load_loses_nothing() {
    let pg = PgCluster::start();
    let ledger_url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let mut gw = gateway_with(
        dir.path(),
        "[delivery]\napply_wait_ms = 2000\n",
        &["--ledger", &ledger_url],
    )
    .await;
    let token = gw.token("adapter", ADAPTER);
    let admin = gw.token("admin", "");
    let scjg = gw.token("department", DEPARTMENT);
    // A first lot, ingested and routed before the fault, is claimed during it.
    let tally = Arc::new(Mutex::new(Tally::default()));
    send_batches(
        gw.url(&format!("/v1/ingest/{ADAPTER}")),
        token.clone(),
        approval_batches(1, 5, 20),
        2,
        tally.clone(),
        Arc::new(AtomicUsize::new(0)),
    )
    .await
    .unwrap();
    let first: BTreeSet<String> = tally.lock().unwrap().acknowledged();
    wait_for_ledger(&gw, &admin, &first).await;
    let acked = Arc::new(AtomicUsize::new(0));
    let sender = send_batches(
        gw.url(&format!("/v1/ingest/{ADAPTER}")),
        token,
        approval_batches(101, 60, 5),
        3,
        tally.clone(),
        acked.clone(),
    );
    let claimed = Arc::new(AtomicUsize::new(0));
    let claims = claim_all(
        format!("http://{}", gw.addr),
        scjg,
        first.iter().cloned().collect(),
        2,
        claimed.clone(),
    );
    until(60, "10 batches answered before the restart", || {
        let n = acked.load(Ordering::SeqCst);
        async move { n >= 10 }
    })
    .await;
    pg.stop_immediate();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acked_while_down = acked.load(Ordering::SeqCst);
    pg.start_again();
    let outage = down.elapsed();
    tokio::time::timeout(Duration::from_secs(120), sender)
        .await
        .expect("clients done")
        .unwrap();
    let claim_failures = tokio::time::timeout(Duration::from_secs(120), claims)
        .await
        .expect("claims done")
        .unwrap();
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let acknowledged = tally.acknowledged();
    assert_eq!(acknowledged.len(), 400);
    let on_bus = embedded_counts(&gw.data_dir).await;
    let (n, dups, lost) = assert_exactly_once("postgres restart", &acknowledged, &on_bus);
    wait_for_ledger(&gw, &admin, &acknowledged).await;
    let repeated = assert_claimed_once(&gw, &admin, &first).await;
    let config = dir.path().join("shenguan.toml").display().to_string();
    let rows = rebuild_and_compare(
        &mut gw,
        &ledger_url,
        &["--config", &config, "--ledger", &ledger_url],
    )
    .await;
    println!(
        "fault: postgres restart under load: 400 records, PostgreSQL down {:.1} s; answers while \
         it was down or recovering {:?} ({} with Retry-After), batches answered at the stop {acked_while_down}; \
         claims of 100 records with {claim_failures} failed attempts, {repeated} repeated; on the bus {n}, \
         duplicates {dups}, lost {lost}; ledger rows {rows} = rebuild",
        outage.as_secs_f64(),
        tally.failures,
        tally.retry_after
    );
}

/// Deliveries a webhook receiver accepted: (signature header, body).
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A department system behind a webhook whose behaviour the test switches: `ok`, `error` (500),
/// `slow` (answers after 1.5 s), or down (nothing listening). Records the event ids it accepted.
struct Hook {
    mode: Arc<Mutex<&'static str>>,
    received: Seen,
    port: u16,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Hook {
    async fn start() -> Hook {
        let mut h = Hook {
            mode: Arc::new(Mutex::new("ok")),
            received: Arc::default(),
            port: free_port(),
            server: None,
        };
        h.up().await;
        h
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn set(&self, mode: &'static str) {
        *self.mode.lock().unwrap() = mode;
    }

    async fn up(&mut self) {
        let (mode, received) = (self.mode.clone(), self.received.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (mode, received) = (mode.clone(), received.clone());
                    async move {
                        let m = *mode.lock().unwrap();
                        match m {
                            "error" => return axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            "slow" => tokio::time::sleep(Duration::from_millis(1500)).await,
                            _ => {}
                        }
                        let sig = headers
                            .get("x-shenguan-signature")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        received.lock().unwrap().push((sig, body.to_vec()));
                        axum::http::StatusCode::OK
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.server = Some(tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap()
        }));
    }

    /// Nothing listens any more: connections are refused.
    async fn down(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
            let _ = s.await;
        }
    }

    /// Record ids delivered with a valid signature (answered 2xx by the hook): id → count.
    fn delivered(&self, secret: &[u8]) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        for (sig, body) in self.received.lock().unwrap().iter() {
            assert!(
                shenguan::deliver::verify(secret, sig, body),
                "bad signature"
            );
            let e: Value = serde_json::from_slice(body).unwrap();
            *out.entry(e["subject"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        out
    }
}

fn webhook_config(dir: &std::path::Path, url: &str, env: &str, delivery: &str) -> String {
    let catalog = std::fs::read_to_string(repo().join("catalog/routing.yaml"))
        .unwrap()
        .replace(
            "  - code: szs-scjg\n    name: 石嘴山市市场监督管理局\n",
            &format!("  - code: szs-scjg\n    name: 石嘴山市市场监督管理局\n    webhook: {{ url: \"{url}\", secret_env: {env} }}\n"),
        );
    let path = dir.join("routing.yaml");
    std::fs::write(&path, catalog).unwrap();
    // No daily digest: the deliveries counted here are the records'.
    format!("catalog_file = {path:?}\n[tracker]\ndigest_at = \"\"\n[delivery]\ninterval_ms = 50\n{delivery}")
}

/// `shenguan_delivery_attempts_total` for the department, by outcome.
async fn delivery_attempts(gw: &Gateway) -> BTreeMap<String, f64> {
    let text = gw
        .client
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&format!(
            "shenguan_delivery_attempts_total{{department=\"{DEPARTMENT}\",outcome=\""
        )) {
            let (outcome, value) = rest.split_once("\"} ").unwrap();
            out.insert(outcome.to_string(), value.parse().unwrap());
        }
    }
    out
}

/// Fault 6a: the department's webhook is down (connection refused), then slower than the
/// delivery timeout, then answers 500, then recovers: retried with backoff, every record
/// reaches it, nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_down_slow_or_failing_gets_every_record_once_it_recovers() {
    let secret = "fault-hook-secret-recovers";
    std::env::set_var("FAULT_HOOK_SECRET_A", secret);
    let mut hook = Hook::start().await;
    hook.down().await;
    let dir = tempfile::tempdir().unwrap();
    let config = webhook_config(
        dir.path(),
        &hook.url(),
        "FAULT_HOOK_SECRET_A",
        "initial_backoff_ms = 100\nmax_backoff_ms = 400\nmax_attempts = 40\ntimeout_ms = 500\n",
    );
    let gw = gateway_with(dir.path(), &config, &[]).await;
    let token = gw.token("adapter", ADAPTER);
    let tally = Arc::new(Mutex::new(Tally::default()));
    send_batches(
        gw.url(&format!("/v1/ingest/{ADAPTER}")),
        token,
        approval_batches(1, 2, 5),
        1,
        tally.clone(),
        Arc::new(AtomicUsize::new(0)),
    )
    .await
    .unwrap();
    let ids = tally.lock().unwrap().acknowledged();
    let mut phases = Vec::new();
    for (mode, secs) in [("down", 2), ("slow", 3), ("error", 2)] {
        if mode != "down" {
            hook.set(mode);
            if hook.server.is_none() {
                hook.up().await;
            }
        }
        let before = delivery_attempts(&gw).await;
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let after = delivery_attempts(&gw).await;
        let failed = after.get("failed").copied().unwrap_or(0.0)
            - before.get("failed").copied().unwrap_or(0.0);
        assert!(failed > 0.0, "no failed attempt while the hook was {mode}");
        phases.push((mode, failed));
    }
    // Requests the gateway gave up on while the hook was slow may still have reached it.
    let late = hook.received.lock().unwrap().len();
    hook.set("ok");
    let deadline = Instant::now() + Duration::from_secs(60);
    let delivered = loop {
        let d = hook.delivered(secret.as_bytes());
        if ids.iter().all(|id| d.contains_key(id)) {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "not every record delivered after the hook recovered: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let admin = gw.token("admin", "");
    let (g, a) = (&gw, &admin);
    for id in &ids {
        until(
            30,
            &format!("record {id} delivered in the ledger"),
            || async move {
                let (_, b) = get(g, &format!("/v1/records/{id}"), a).await;
                b["entries"][0]["state"] == "delivered"
            },
        )
        .await;
    }
    let metrics = delivery_attempts(&gw).await;
    assert_eq!(metrics.get("dead_lettered").copied().unwrap_or(0.0), 0.0);
    assert_eq!(metrics.get("ok").copied().unwrap_or(0.0), ids.len() as f64);
    assert!(embedded_topic(&gw.data_dir, "shenguan.dlq.v1")
        .await
        .is_empty());
    let extra: u32 = delivered.values().map(|n| n - 1).sum();
    println!(
        "fault: webhook down/slow/500 then back: {} records, failed attempts per phase {phases:?}, \
         metric {metrics:?}; every record delivered, {extra} extra copies received (of which \
         {late} arrived while the gateway had given up waiting), 0 dead-lettered",
        ids.len()
    );
}

/// Fault 6b: the webhook fails longer than `max_attempts` allows: the deliveries are
/// dead-lettered (stage `deliver`) and stay in the department's inbox; once the hook answers
/// again, `shenguan dlq replay --all` delivers them, as docs/runbook.md promises.
#[tokio::test(flavor = "multi_thread")]
async fn dead_lettered_webhook_deliveries_reach_the_department_after_dlq_replay() {
    let secret = "fault-hook-secret-replay";
    std::env::set_var("FAULT_HOOK_SECRET_B", secret);
    let hook = Hook::start().await;
    hook.set("error");
    let dir = tempfile::tempdir().unwrap();
    let config = webhook_config(
        dir.path(),
        &hook.url(),
        "FAULT_HOOK_SECRET_B",
        "initial_backoff_ms = 50\nmax_backoff_ms = 100\nmax_attempts = 3\ntimeout_ms = 500\n",
    );
    let gw = gateway_with(dir.path(), &config, &[]).await;
    let token = gw.token("adapter", ADAPTER);
    let scjg = gw.token("department", DEPARTMENT);
    let (status, body) = gw
        .ingest(
            ADAPTER,
            &token,
            "application/json",
            serde_json::to_vec(&approval_batches(1, 1, 5)[0]).unwrap(),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let g = &gw;
    until(30, "5 deliveries dead-lettered", || async move {
        delivery_attempts(g)
            .await
            .get("dead_lettered")
            .is_some_and(|n| *n >= 5.0)
    })
    .await;
    let dlq = embedded_topic(&gw.data_dir, "shenguan.dlq.v1").await;
    assert_eq!(dlq.len(), 5);
    assert!(dlq.iter().all(|e| e["data"]["stage"] == "deliver"));
    let (_, inbox) = get(&gw, "/v1/inbox", &scjg).await;
    assert_eq!(inbox["count"], 5, "dead-lettered records stay in the inbox");
    hook.set("ok");
    let config_path = dir.path().join("shenguan.toml").display().to_string();
    let data = gw.data_dir.display().to_string();
    let out = shenguan(&[
        "dlq",
        "replay",
        "--all",
        "--config",
        &config_path,
        "--data-dir",
        &data,
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let h = &hook;
    until(
        30,
        "every dead-lettered record delivered after the replay",
        || async move { h.delivered(secret.as_bytes()).len() == 5 },
    )
    .await;
}

/// Fault 8: the Kafka-protocol broker (durable SQLite storage) is killed with SIGKILL while
/// clients post; ingest answers 503 with Retry-After while it is gone; it restarts on the same
/// storage and every acknowledged record is on the topic exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_kafka_broker_killed_mid_stream_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = DurableBroker::start(&dir.path().join("tansu.db"));
    let bus = broker.url();
    let gw = gateway_with(
        dir.path(),
        "[bus.kafka]\npublish_timeout_ms = 3000\n",
        &["--bus", &bus],
    )
    .await;
    let token = gw.token("adapter", ADAPTER);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let acked = Arc::new(AtomicUsize::new(0));
    let sender = send_batches(
        gw.url(&format!("/v1/ingest/{ADAPTER}")),
        token,
        approval_batches(1, 60, 5),
        3,
        tally.clone(),
        acked.clone(),
    );
    until(60, "15 batches answered before the kill", || {
        let n = acked.load(Ordering::SeqCst);
        async move { n >= 15 }
    })
    .await;
    broker.kill9();
    let at_kill = acked.load(Ordering::SeqCst);
    // While the broker is gone the gateway answers 503 with Retry-After.
    until(
        30,
        "a 503 with Retry-After while the broker is down",
        || {
            let t = tally.clone();
            async move { t.lock().unwrap().retry_after > 0 }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let while_down = acked.load(Ordering::SeqCst) - at_kill;
    broker.restart();
    let done = tokio::time::timeout(Duration::from_secs(150), sender).await;
    if !matches!(done, Ok(Ok(()))) {
        let logs = gw.logs();
        let tail: Vec<&str> = logs.lines().rev().take(60).collect();
        panic!(
            "the clients did not finish after the broker came back ({:?}); gateway log, newest \
             first:\n{}\nbroker log:\n{}",
            tally.lock().unwrap().failures,
            tail.join("\n"),
            broker.logs()
        );
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let acknowledged = tally.acknowledged();
    assert_eq!(acknowledged.len(), 300);
    let messages = consume_all(&broker.bootstrap(), "shenguan.approval.v1", 300).await;
    let mut on_bus = BTreeMap::new();
    for (key, event) in &messages {
        assert_eq!(event["subject"], key.as_str());
        *on_bus.entry(key.clone()).or_default() += 1;
    }
    let (n, dups, lost) = assert_exactly_once("kafka broker killed", &acknowledged, &on_bus);
    // The projector resumes after the broker came back: every acknowledged record reaches the
    // ledger, and /readyz says the projector is not behind.
    let admin = gw.token("admin", "");
    let resumed = Instant::now();
    wait_for_ledger(&gw, &admin, &acknowledged).await;
    let caught_up = resumed.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    let readyz = loop {
        let r = gw.client.get(gw.url("/readyz")).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        if status == 200
            && text.contains("projector_lag: 0 messages behind")
            && !text.contains("projector_stalled")
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz does not report the projector caught up: {status} {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(readyz.contains("last batch applied"), "{readyz}");
    println!(
        "fault: kafka broker sigkill: ledger caught up {} ms after the clients finished",
        caught_up.as_millis()
    );
    println!(
        "fault: kafka broker sigkill: 300 records, killed after {at_kill} of 60 batches, \
         {while_down} answered while it was down; answers other than 202 {:?} ({} with \
         Retry-After); accepted {}, answered duplicate on resend {}; on the topic {n} \
         ({} messages), duplicates {dups}, lost {lost}",
        tally.failures,
        tally.retry_after,
        tally.accepted.len(),
        tally.duplicates.len(),
        messages.len()
    );
}

/// Every message of a topic, read with a plain consumer group from the beginning until `want`
/// arrived and the topic stayed quiet for 3 s.
async fn consume_all(bootstrap: &str, topic: &str, want: usize) -> Vec<(String, Value)> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::Message as _;
    let consumer: StreamConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("fault-test-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
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
        assert!(Instant::now() < deadline, "reading {topic} took over 90 s");
    }
}
