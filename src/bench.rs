//! `shenguan bench`: the whole-system benchmarks, one command, one table.
//!
//! Workloads: the in-process pipeline (parse + map + validate + route) on realistic 政务服务网
//! records, on one core and on two threads; the embedded bus (durable, group-committed); the
//! ledger and tracker with many open items (find what is due, refresh the gauges, build a
//! monthly report) on SQLite and, given a URL, PostgreSQL; end-to-end latency from ingest to
//! claimable at a steady rate; and, given a broker, ingest over HTTP into Kafka against a plain
//! rdkafka producer sending the same bytes, with 1 and with 6 partitions per topic; and the peer
//! job against a `shenguan run` process ([`peer`]). `--only` picks workloads. Each line reports
//! throughput or latency percentiles and the process's peak resident memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::adapter::convert::now_shanghai;
use chrono::{DateTime, FixedOffset};

use crate::bus::{Bus, Delivery, Message};
use crate::config::Settings;
use crate::demo::{legacy_record, Lcg};
use crate::ledger::store::{LedgerStore, SqlLedger};
use crate::pipeline::{self, Outcome, Unit};
use crate::schema::RecordKind;

pub mod peer;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Records for the pipeline and bus runs.
    pub records: usize,
    /// Open items for the ledger runs (1 million and more take minutes to load).
    pub ledger_items: Vec<usize>,
    /// A PostgreSQL URL for the ledger runs on PostgreSQL.
    pub postgres: Option<String>,
    /// A Kafka bootstrap (`host:port`) for the ingest-to-Kafka run.
    pub kafka: Option<String>,
    /// Seconds of the steady-rate run.
    pub latency_seconds: u64,
    /// Records per second of the steady-rate run.
    pub latency_rate: u64,
    /// The workloads to run (`pipeline`, `bus`, `ledger`, `latency`, `kafka`, `peer`); empty
    /// runs all.
    pub only: Vec<String>,
    /// The peer job's warm-up, window and extra `shenguan run` arguments.
    pub peer: peer::PeerOptions,
}

impl BenchOptions {
    fn runs(&self, workload: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|w| w == workload)
    }
}

/// One line of the table.
pub struct Line {
    pub workload: String,
    pub figure: String,
    pub target: String,
    pub peak_rss_mib: f64,
}

/// Starts a new peak-memory measurement (Linux: writing 5 to `clear_refs` resets `VmHWM`).
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory of this process since the last [`reset_peak`], MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_string)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// A 政务服务网 办件 as the platform exports it: the fields the adapter maps plus the rest of the
/// 前置库 row (PRE_APASINFO, PRE_APASINFO_EXT, PRE_ACCEPT, PRE_TRANSACT and two PRE_ATTR
/// materials) that it carries along and the adapter ignores; about 1.7 KB of JSON, mostly Chinese.
pub fn bench_record(
    n: u64,
    decided: chrono::DateTime<chrono::FixedOffset>,
    rng: &mut Lcg,
) -> Value {
    let mut record = legacy_record(n, decided, rng, false);
    let received = decided - chrono::Duration::days(3 + (n % 9) as i64);
    let stamp =
        |t: chrono::DateTime<chrono::FixedOffset>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let extra = serde_json::json!({
        "SERVICEVERSION": "3",
        "PROJECTNAME": format!("{}关于{}的申请", record["APPLYNAME"].as_str().unwrap_or(""), record["SERVICENAME"].as_str().unwrap_or("")),
        "CONTACTMAN": "马建国",
        "DEPTID": "640200-XZSP-0003",
        "RECEIVETIME": stamp(received),
        "ACCEPT_TIME": stamp(received + chrono::Duration::hours(2)),
        "PROMISEE_TIME": stamp(received + chrono::Duration::days(10)),
        "PROMISEVALUE": "10",
        "HANDLESTATE": "办结",
        "DATAVERSION": "1",
        "CREATE_TIME": stamp(decided),
        "BELONGSYSTEM": "640200ZWFW01",
        "TASK_CODE": format!("11640200MB1A28063W4{}001", record["CATALOG_CODE"].as_str().unwrap_or("")),
        "RESULT_CETR_NAME": "行政许可证",
        "RESULT_CETR_CODE": format!("JY1640202{:08}", n),
        "GB_PROJECT_NO": format!("0640200{:013}", n),
        "TRANSACT_USER": "李海峰",
        "TRANSACT_RESULT": "准予许可",
        "TRANSACT_DESCRIBE": "经审查，申请材料齐全、符合法定形式，符合许可条件，决定准予行政许可。",
        "ATTRS": [
            {"ATTRID": format!("{n}-1"), "ATTRNAME": "营业执照副本复印件", "TAKETYPE": "电子", "ISTAKE": "1", "FILENAME": "营业执照.pdf"},
            {"ATTRID": format!("{n}-2"), "ATTRNAME": "经营场所平面布局图", "TAKETYPE": "纸质", "ISTAKE": "1"},
        ],
    });
    if let (Some(r), Value::Object(e)) = (record.as_object_mut(), extra) {
        r.extend(e);
    }
    record
}

/// Realistic request bodies: batches of `per_batch` 政务服务网 records ([`bench_record`]).
pub fn bodies(records: usize, per_batch: usize) -> Vec<Vec<u8>> {
    let mut rng = Lcg(7);
    let decided = now_shanghai() - chrono::Duration::hours(1);
    (0..records as u64)
        .step_by(per_batch.max(1))
        .map(|first| {
            let last = (first + per_batch as u64).min(records as u64);
            let batch: Vec<Value> = (first..last)
                .map(|n| bench_record(100_000 + n, decided, &mut rng))
                .collect();
            serde_json::to_vec(&batch).expect("JSON")
        })
        .collect()
}

/// What one thread of the pipeline run measured.
#[derive(Default)]
struct PipelineTally {
    accepted: usize,
    routed: usize,
    /// Seconds in parse + map + validate, and in routing.
    process_secs: f64,
    route_secs: f64,
    /// Per-record milliseconds of each batch.
    per_record_ms: Vec<f64>,
}

/// Runs `batches` through the pipeline and the router on the calling thread. Each batch's
/// results are dropped before the next, as the gateway does once they are published.
fn pipeline_thread(
    defs: &crate::app::Definitions,
    batches: &[Vec<u8>],
) -> anyhow::Result<PipelineTally> {
    let adapter = defs
        .adapters
        .get("nx-zwfw-approval")
        .ok_or_else(|| anyhow::anyhow!("adapter nx-zwfw-approval is missing"))?;
    let received = now_shanghai();
    let mut tally = PipelineTally::default();
    for body in batches {
        let t = Instant::now();
        let outcomes = pipeline::process(
            &adapter,
            &defs.schemas,
            body,
            None,
            None,
            Unit::Body,
            received,
            usize::MAX,
        )
        .map_err(|b| anyhow::anyhow!(b.title))?;
        let secs = t.elapsed().as_secs_f64();
        tally.process_secs += secs;
        tally
            .per_record_ms
            .push(secs * 1000.0 / outcomes.len().max(1) as f64);
        // Routing runs in the ledger projector on the canonical data; timed on its own.
        let data: Vec<Value> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Accepted(c) => Some(c),
                Outcome::Rejected(_) => None,
            })
            .map(|c| serde_json::from_slice::<Value>(&c.event).map(|mut e| e["data"].take()))
            .collect::<Result<_, _>>()?;
        tally.accepted += data.len();
        drop(outcomes);
        let t = Instant::now();
        tally.routed += data
            .iter()
            .filter(|d| {
                matches!(
                    defs.catalog.route(RecordKind::Approval, d),
                    crate::route::Route::To { .. }
                )
            })
            .count();
        tally.route_secs += t.elapsed().as_secs_f64();
    }
    Ok(tally)
}

/// The pipeline on `threads` threads, each with its share of the batches: records/s per busy
/// second times the threads (what the cores sustain), records/s by the wall clock, and the
/// per-record time of the batches.
async fn pipeline_run(settings: &Settings, records: usize, threads: usize) -> anyhow::Result<Line> {
    let defs = crate::app::load_all(settings)?;
    let batches = bodies(records, 500);
    let bytes: usize = batches.iter().map(Vec::len).sum();
    let share = batches.len().div_ceil(threads.max(1));
    // One untimed pass over a few batches first: the allocator's first use of fresh pages is
    // start-up cost, not throughput.
    let warm = batches.len().min(4 * threads.max(1));
    std::thread::scope(|scope| {
        for part in batches[..warm].chunks(4) {
            let defs = &defs;
            scope.spawn(move || pipeline_thread(defs, part));
        }
    });
    reset_peak();
    let start = Instant::now();
    let tallies: Vec<anyhow::Result<PipelineTally>> = std::thread::scope(|scope| {
        let handles: Vec<_> = batches
            .chunks(share.max(1))
            .map(|part| {
                let defs = &defs;
                scope.spawn(move || pipeline_thread(defs, part))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("pipeline thread"))
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let mut total = PipelineTally::default();
    for t in tallies {
        let t = t?;
        total.accepted += t.accepted;
        total.routed += t.routed;
        total.process_secs += t.process_secs;
        total.route_secs += t.route_secs;
        total.per_record_ms.extend(t.per_record_ms);
    }
    anyhow::ensure!(
        total.accepted == records,
        "only {} of {records} records were accepted",
        total.accepted
    );
    anyhow::ensure!(total.routed > 0, "nothing was routed");
    // Busy time only: the untimed decoding of the results for the router is left out.
    let busy = total.process_secs + total.route_secs;
    let rate = records as f64 / busy * threads as f64;
    total.per_record_ms.sort_by(f64::total_cmp);
    let (workload, target) = if threads == 1 {
        ("1 core".to_string(), "≥ 100,000 records/s per core")
    } else {
        (format!("{threads} threads"), "— (scaling with cores)")
    };
    Ok(Line {
        workload: format!(
            "pipeline: parse+map+validate+route, {workload}, {records} records of {} B",
            bytes / records.max(1)
        ),
        figure: format!(
            "{rate:.0} records/s ({:.0}/s wall clock); per record p50 {:.3} ms, p99 {:.3} ms",
            records as f64 / wall,
            percentile(&total.per_record_ms, 0.5),
            percentile(&total.per_record_ms, 0.99)
        ),
        target: target.into(),
        peak_rss_mib: peak_rss_mib(),
    })
}

async fn bus_run(records: usize) -> anyhow::Result<Line> {
    let dir = Scratch::new("bus")?;
    let bus = Arc::new(crate::bus::embedded::EmbeddedBus::open(
        &dir.path().join("bus.db"),
    )?);
    let payload = vec![b'x'; 1024];
    let tasks = 8;
    let per_call = 50;
    let calls = records / (tasks * per_call);
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let bus = bus.clone();
        let payload = payload.clone();
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(calls);
            for c in 0..calls {
                let batch = (0..per_call)
                    .map(|i| Message {
                        topic: "bench".into(),
                        key: format!("{t}-{c}-{i}"),
                        payload: payload.clone(),
                    })
                    .collect();
                let t0 = Instant::now();
                bus.publish(batch).await.expect("publish");
                latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.await?);
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let n = tasks * calls * per_call;
    Ok(Line {
        workload: format!(
            "embedded bus: {n} × 1 KiB, 8 publishers, {per_call} per call, fsync on commit"
        ),
        figure: format!(
            "{:.0} records/s durable; publish p50 {:.1} ms, p99 {:.1} ms",
            n as f64 / secs,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99)
        ),
        target: "≥ 20,000 records/s durable".into(),
        peak_rss_mib: peak_rss_mib(),
    })
}

/// A benchmark's directory under the system's temporary directory, removed with everything in
/// it when this is dropped — when the workload ends, or fails.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> anyhow::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!(
            "shenguan-bench-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loads `n` open entries (1 in 100 overdue, the rest due within the next months, pushed over
/// the last 30 days) through the store's write path, 10,000 a transaction, with the counters
/// the gauges read.
pub async fn bulk_entries(
    ledger: &SqlLedger,
    n: usize,
    now: DateTime<FixedOffset>,
) -> anyhow::Result<()> {
    use crate::ledger::port::{Counter, CounterDelta, HistoryWrite, RecordWrite, Writes};
    let chunk = 10_000;
    let mut i = 0;
    while i < n {
        let end = (i + chunk).min(n);
        let mut writes = Writes::default();
        let mut per_department = [0i64; 5];
        for k in i..end {
            let due = if k % 100 == 0 {
                now - chrono::Duration::days(1)
            } else {
                now + chrono::Duration::days(30)
                    + chrono::Duration::seconds((k % 5000) as i64 * 1000)
            };
            per_department[k % 5] += 1;
            writes.records.push(RecordWrite {
                record_id: format!("bench-{k}"),
                record: None,
                entries: vec![crate::ledger::Entry {
                    record_id: format!("bench-{k}"),
                    department: format!("dep-{}", k % 5),
                    kind: RecordKind::Approval,
                    state: crate::ledger::EntryState::Pushed,
                    pushed_at: now - chrono::Duration::hours((k % 720) as i64),
                    delivered_at: None,
                    claimed_at: None,
                    returned_at: None,
                    feedback_at: None,
                    closed_at: None,
                    policy: "yuanqu-2022".into(),
                    claim_rule: Some("claim_approval".into()),
                    claim_due_at: Some(due),
                    feedback_rule: None,
                    feedback_due_at: None,
                    calendar_version: "bench".into(),
                    deadline_problem: None,
                    alert_level: crate::ledger::AlertLevel::None,
                    note: None,
                    outcome: None,
                    via: None,
                    version: 1,
                    claim_hours: None,
                }],
                events: Vec::new(),
                history: HistoryWrite::Append {
                    from: 0,
                    rows: Vec::new(),
                },
                purge: false,
            });
        }
        writes.counters = per_department
            .iter()
            .enumerate()
            .map(|(d, count)| CounterDelta {
                name: Counter::Unclaimed,
                department: format!("dep-{d}"),
                kind: RecordKind::Approval,
                delta: *count,
            })
            .collect();
        ledger.write_through(writes).await?;
        i = end;
    }
    Ok(())
}

/// Canonical approval events of the 1.7 KB benchmark record, as they lie on the bus.
fn approval_deliveries(
    settings: &Settings,
    n: usize,
    topic: &str,
) -> anyhow::Result<Vec<(Delivery, RecordKind)>> {
    let (schemas, adapters) = crate::app::load_definitions(settings)?;
    let adapter = adapters
        .get("nx-zwfw-approval")
        .ok_or_else(|| anyhow::anyhow!("adapter nx-zwfw-approval is missing"))?;
    let received = now_shanghai();
    let mut out = Vec::with_capacity(n);
    for body in bodies(n, 100) {
        let outcomes = pipeline::process(
            &adapter,
            &schemas,
            &body,
            None,
            None,
            Unit::Body,
            received,
            usize::MAX,
        )
        .map_err(|b| anyhow::anyhow!(b.title))?;
        for o in outcomes {
            if let Outcome::Accepted(c) = o {
                let offset = out.len() as i64;
                out.push((
                    Delivery {
                        topic: topic.to_string(),
                        partition: 0,
                        offset,
                        key: None,
                        payload: c.event.to_vec(),
                        timestamp_ms: 0,
                        headers: Vec::new(),
                    },
                    RecordKind::Approval,
                ));
            }
        }
    }
    Ok(out)
}

/// Applies `records` approvals to an empty ledger the way the projector does (bursts of
/// `[ledger] burst` in one transaction each).
async fn apply_run(settings: &Settings, store: &str, records: usize) -> anyhow::Result<Line> {
    let defs = crate::app::load_all(settings)?;
    let shared = Arc::new(crate::ledger::projector::Shared {
        catalog: defs.catalog.clone(),
        calendar: defs.calendar.clone(),
        policies: defs.policies.clone(),
        policy: defs.policy.clone(),
        topics: crate::bus::Topics::default(),
    });
    let deliveries =
        approval_deliveries(settings, records, &shared.topics.name(RecordKind::Approval))?;
    let (ledger, _scratch, label) = open_bench_ledger(store).await?;
    ledger.clear().await?;
    // As the projector receives and writes them: bursts of messages already on the bus, decoded
    // by a receiving task and each worked out while the previous one is written; all of it on
    // the clock.
    let bursts: Vec<Vec<(Delivery, RecordKind)>> = deliveries
        .chunks(settings.ledger.burst)
        .map(<[_]>::to_vec)
        .collect();
    drop(deliveries);
    reset_peak();
    let t = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<crate::ledger::store::Batch>(1);
    let receiving = tokio::spawn(async move {
        for burst in bursts {
            if tx.send(burst.into()).await.is_err() {
                break;
            }
        }
    });
    let ledger: Arc<dyn crate::ledger::store::LedgerStore> = Arc::new(ledger);
    let (_keep, stop) = tokio::sync::watch::channel(false);
    let mut applier = crate::ledger::applier::Applier::new(ledger, shared.clone(), true, stop);
    let mut applied = 0;
    while let Some(batch) = rx.recv().await {
        if let Some((_, outcomes)) = applier.push(batch).await? {
            applied += outcomes.len();
        }
    }
    if let Some((_, outcomes)) = applier.finish().await? {
        applied += outcomes.len();
    }
    receiving.await?;
    let secs = t.elapsed().as_secs_f64();
    Ok(Line {
        workload: format!("ledger: apply {applied} approvals of 1.7 KB ({label})"),
        figure: format!("{:.0} records/s", applied as f64 / secs),
        target: if label == "SQLite" {
            "≥ 25,000/s"
        } else {
            "≥ 15,000/s"
        }
        .into(),
        peak_rss_mib: peak_rss_mib(),
    })
}

/// A ledger for a benchmark: a fresh SQLite file, or the PostgreSQL database given.
async fn open_bench_ledger(
    store: &str,
) -> anyhow::Result<(SqlLedger, Option<Scratch>, &'static str)> {
    Ok(if store == "sqlite" {
        let dir = Scratch::new("ledger")?;
        let url = format!("sqlite:{}", dir.path().join("ledger.db").display());
        (SqlLedger::open(&url).await?, Some(dir), "SQLite")
    } else {
        (SqlLedger::open(store).await?, None, "PostgreSQL")
    })
}

/// Loads `n` open entries, then times what the tracker and the report do with them.
async fn ledger_run(settings: &Settings, store: &str, n: usize) -> anyhow::Result<Vec<Line>> {
    let defs = crate::app::load_all(settings)?;
    let (calendar, policies) = (defs.calendar, defs.policies);
    let now = now_shanghai();
    let (ledger, scratch, label) = open_bench_ledger(store).await?;
    ledger.clear().await?;
    bulk_entries(&ledger, n, now).await?;
    if scratch.is_none() {
        // As autovacuum would after a bulk insert: the statistics, and the visibility map the
        // tracker's index-only scan needs (see the README's performance section).
        let (client, connection) = tokio_postgres::connect(store, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client
            .batch_execute("VACUUM ANALYZE ledger_entries")
            .await?;
    }
    let mut lines = Vec::new();
    reset_peak();
    let t = Instant::now();
    let bound = crate::ledger::tracker::due_scan_bound(&policies, &calendar, now);
    let due = ledger.entries_due_before(bound).await?;
    let scan = t.elapsed();
    let overdue = due.iter().filter(|e| e.due_at < now).count();
    lines.push(Line {
        workload: format!("tracker: find what is due among {n} open items ({label})"),
        figure: format!(
            "{:.3} s ({} near or past their deadline, {overdue} overdue)",
            scan.as_secs_f64(),
            due.len()
        ),
        target: "< 1 s over 10 million, < 1 GiB".into(),
        peak_rss_mib: peak_rss_mib(),
    });
    reset_peak();
    let t = Instant::now();
    let gauges = ledger.gauges().await?;
    lines.push(Line {
        workload: format!("tracker: refresh the gauges over {n} open items ({label})"),
        figure: format!(
            "{:.3} s ({} department/kind series)",
            t.elapsed().as_secs_f64(),
            gauges.len()
        ),
        target: "—".into(),
        peak_rss_mib: peak_rss_mib(),
    });
    let month = now.format("%Y-%m").to_string();
    reset_peak();
    let t = Instant::now();
    let (from, to) = crate::ledger::report::month_bounds(&month).map_err(|e| anyhow::anyhow!(e))?;
    let builder =
        crate::ledger::report::Monthly::new(&month, calendar.version(), now, Default::default());
    let builder = ledger.report_month(from, to, builder).await?;
    let entries = builder.entries;
    let report = builder.finish();
    lines.push(Line {
        workload: format!("monthly report over {entries} entries of the month ({label})"),
        figure: format!(
            "{:.3} s ({} lines)",
            t.elapsed().as_secs_f64(),
            report.pushes.len() + report.claims.len()
        ),
        target: "—".into(),
        peak_rss_mib: peak_rss_mib(),
    });
    Ok(lines)
}

/// A gateway started in this process by [`gateway`]. It runs until the process ends (stopping
/// it in the middle of the run held up the workloads after it); its data directory is removed
/// when this is dropped, its files still open.
struct InProcess {
    base: String,
    /// A token of the `nx-zwfw-approval` adapter.
    adapter: String,
    /// An admin token.
    admin: String,
    _dir: Scratch,
}

/// A gateway in this process on a free port, with a data directory of its own.
async fn gateway(settings: &Settings, bus: &str) -> anyhow::Result<InProcess> {
    let dir = Scratch::new("gateway")?;
    let mut s = settings.clone();
    s.data_dir = dir.path().to_path_buf();
    s.bus.url = bus.to_string();
    s.ledger.url = None;
    s.tracker.interval_seconds = 60;
    s.server.max_batch_records = 100_000;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    s.server.listen = format!("127.0.0.1:{port}").parse()?;
    tokio::spawn(crate::app::run(s.clone()));
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let adapter = crate::cmd::token::token_issue(&s, "adapter", "nx-zwfw-approval").await?;
    let admin = crate::cmd::token::token_issue(&s, "admin", "").await?;
    Ok(InProcess {
        base,
        adapter,
        admin,
        _dir: dir,
    })
}

/// Requests the end-to-end run keeps in flight at most.
const LATENCY_IN_FLIGHT: usize = 64;

/// The slots of the end-to-end run's bodies: the serial in [`bench_record`]'s 办件编号, 决定文书号
/// and 证照编号 (8 digits, as it writes the first and the last), and its applicant's 统一社会信用代码
/// (check character included), each new for every record sent.
const APPROVAL_SLOTS: [peer::Slot; 2] = [
    peer::Slot {
        holder: b"########",
        fill: |n| format!("{:08}", 900_000 + n),
    },
    peer::Slot {
        holder: b"@@@@@@@@@@@@@@@@@@",
        fill: |n| crate::demo::uscc(900_000 + n),
    },
];

/// The end-to-end run's request bodies: `per_request` [`bench_record`]s each, made once and sent
/// with new serials in every key of a record (see [`APPROVAL_SLOTS`]), like the peer job's, so
/// that the sender, in the gateway's process, does not build and serialise every record on the
/// gateway's cores.
fn approval_bodies(per_request: usize) -> peer::Bodies {
    let decided = now_shanghai() - chrono::Duration::hours(1);
    let [serial, uscc] = APPROVAL_SLOTS
        .each_ref()
        .map(|s| std::str::from_utf8(s.holder).expect("ASCII"));
    peer::Bodies::of(per_request, &APPROVAL_SLOTS, Lcg(99), move |n, rng| {
        let mut record = bench_record(900_000 + n, decided, rng);
        record["PROJID"] = Value::from(format!("6402002026{serial}"));
        record["DOCUMENT_CODE"] = Value::from(format!(
            "石审服许字〔{}〕第{serial}号",
            chrono::Datelike::year(&decided)
        ));
        record["RESULT_CETR_CODE"] = Value::from(format!("JY1640202{serial}"));
        record["APPLY_CARDNUMBER"] = Value::from(uscc);
        record
    })
}

async fn latency_run(settings: &Settings, seconds: u64, rate: u64) -> anyhow::Result<Line> {
    let gateway = gateway(settings, "embedded").await?;
    let (base, token, admin) = (&gateway.base, &gateway.adapter, gateway.admin.clone());
    let client = reqwest::Client::new();
    let ticks = seconds * 100;
    let per_tick = (rate / 100) as usize;
    // The first record of every fifth batch (one in 50) is followed until the API shows it,
    // polled every 5 ms on its own task so the sender keeps its pace; following more would
    // load the gateway with the lookups themselves.
    let (follow, mut followed) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let poller = {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move {
            let (mut latencies, mut missed) = (Vec::new(), 0usize);
            let mut pending: Vec<(String, Instant)> = Vec::new();
            let mut open = true;
            while open || !pending.is_empty() {
                loop {
                    match followed.try_recv() {
                        Ok(p) => pending.push(p),
                        Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
                let looks = pending.iter().map(|(id, _)| {
                    client
                        .get(format!("{base}/v1/records/{id}"))
                        .bearer_auth(&admin)
                        .send()
                });
                let answers = futures::future::join_all(looks).await;
                let seen = Instant::now();
                let mut still = Vec::new();
                for ((id, sent), r) in pending.drain(..).zip(answers) {
                    if r.is_ok_and(|r| r.status().is_success()) {
                        latencies.push((seen - sent).as_secs_f64() * 1000.0);
                    } else if sent.elapsed() < Duration::from_secs(60) {
                        still.push((id, sent));
                    } else {
                        missed += 1;
                    }
                }
                pending = still;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (latencies, missed)
        })
    };
    let bodies = approval_bodies(per_tick);
    // Open loop: a request leaves at every tick whether or not the ones before it were
    // answered, up to this many in flight (then the sender falls behind its ticks).
    let in_flight = Arc::new(tokio::sync::Semaphore::new(LATENCY_IN_FLIGHT));
    let mut requests = tokio::task::JoinSet::new();
    let start = Instant::now();
    let mut n = 0u64;
    for tick in 0..ticks {
        let due = start + Duration::from_millis(tick * 10);
        tokio::time::sleep_until(due.into()).await;
        let body = bodies.next();
        n += per_tick as u64;
        let permit = in_flight.clone().acquire_owned().await?;
        let (client, url, token, follow) = (
            client.clone(),
            format!("{base}/v1/ingest/nx-zwfw-approval"),
            token.clone(),
            follow.clone(),
        );
        requests.spawn(async move {
            let sent = Instant::now();
            let answer: Value = client
                .post(url)
                .bearer_auth(&token)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await?
                .json()
                .await?;
            drop(permit);
            for (list, what) in [
                ("rejected", "rejected"),
                ("duplicates", "took as a duplicate"),
            ] {
                if let Some(first) = answer[list].as_array().and_then(|r| r.first()) {
                    anyhow::bail!("the gateway {what} a generated record: {first}");
                }
            }
            if let (0, Some(id)) = (tick % 5, answer["accepted"][0]["id"].as_str()) {
                let _ = follow.send((id.to_string(), sent));
            }
            anyhow::Ok(())
        });
        while let Some(done) = requests.try_join_next() {
            done??;
        }
    }
    while let Some(done) = requests.join_next().await {
        done??;
    }
    // A gateway that cannot take the pace holds the sender back: say what it reached.
    let sent_rate = n as f64 / start.elapsed().as_secs_f64();
    drop(follow);
    let (mut latencies, missed) = poller.await?;
    latencies.sort_by(f64::total_cmp);
    Ok(Line {
        workload: format!("end to end: ingested → claimable in the ledger, {rate} records/s for {seconds} s (embedded)"),
        figure: format!(
            "{sent_rate:.0} records/s sent; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples; polled every 5 ms){}",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(0.0),
            latencies.len(),
            if missed > 0 {
                format!("; {missed} samples not claimable within 60 s, left out")
            } else {
                String::new()
            }
        ),
        target: "p99 < 50 ms at 10,000 records/s".into(),
        peak_rss_mib: peak_rss_mib(),
    })
}

/// Records the gateway's ledger has projected with a push latency (every accepted approval).
async fn projected(client: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("shenguan_push_latency_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// HTTP ingest into Kafka through a gateway whose topics have `partitions` partitions, then the
/// same canonical bytes through a plain producer into a topic with as many.
async fn kafka_run(
    settings: &Settings,
    bootstrap: &str,
    records: usize,
    partitions: i32,
) -> anyhow::Result<Line> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut settings = settings.clone();
    settings.bus.topic_prefix = format!("bench{}.{partitions}.", &run[..8]);
    settings.bus.kafka.partitions = partitions;
    let gateway = gateway(&settings, &format!("kafka://{bootstrap}")).await?;
    let (base, token) = (&gateway.base, &gateway.adapter);
    let batches = bodies(records, 500);
    let client = reqwest::Client::new();
    let projected_before = projected(&client, base).await?;
    let start = Instant::now();
    let mut inflight = futures::stream::FuturesUnordered::new();
    use futures::StreamExt as _;
    for body in batches.iter().cloned() {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        inflight.push(async move {
            client
                .post(format!("{base}/v1/ingest/nx-zwfw-approval"))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
        });
        if inflight.len() >= 4 {
            inflight.next().await.transpose()?;
        }
    }
    while let Some(r) = inflight.next().await {
        r?;
    }
    let gateway_rate = records as f64 / start.elapsed().as_secs_f64();
    // The same process projects every record into the ledger; the run ends when it has.
    let deadline = Instant::now() + Duration::from_secs(600);
    while projected(&client, base).await? < projected_before + records as u64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the ledger did not catch up within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ledger_rate = records as f64 / start.elapsed().as_secs_f64();

    // The same canonical bytes through a plain idempotent producer.
    let defs = crate::app::load_all(&settings)?;
    let adapter = defs.adapters.get("nx-zwfw-approval").expect("adapter");
    let mut events = Vec::new();
    for body in &batches {
        for o in pipeline::process(
            &adapter,
            &defs.schemas,
            body,
            None,
            None,
            Unit::Body,
            now_shanghai(),
            usize::MAX,
        )
        .map_err(|b| anyhow::anyhow!(b.title))?
        {
            if let Outcome::Accepted(c) = o {
                events.push((c.record_id, c.event));
            }
        }
    }
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()?;
    let raw_topic = format!("{}raw", settings.bus.topic_prefix);
    let admin: AdminClient<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    admin
        .create_topics(
            &[NewTopic::new(
                &raw_topic,
                partitions,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await?;
    let start = Instant::now();
    let sends = events.iter().map(|(k, v)| {
        producer.send(
            FutureRecord::to(&raw_topic).key(k).payload(v),
            Duration::from_secs(30),
        )
    });
    for r in futures::future::join_all(sends).await {
        r.map_err(|(e, _)| e)?;
    }
    let raw_rate = events.len() as f64 / start.elapsed().as_secs_f64();
    Ok(Line {
        workload: format!("ingest to Kafka over HTTP, {records} records in batches of 500, 4 in flight, {partitions} partition(s) per topic"),
        figure: format!("{gateway_rate:.0} records/s; raw rdkafka producer {raw_rate:.0} records/s; ratio {:.0}% (all projected into the ledger: {ledger_rate:.0} records/s)", gateway_rate / raw_rate * 100.0),
        target: "≥ 70% of the raw producer".into(),
        peak_rss_mib: peak_rss_mib(),
    })
}

/// Runs the benchmarks and prints the table.
pub async fn run(settings: Settings, options: BenchOptions) -> anyhow::Result<()> {
    const WORKLOADS: [&str; 6] = ["pipeline", "bus", "ledger", "latency", "kafka", "peer"];
    if let Some(w) = options
        .only
        .iter()
        .find(|w| !WORKLOADS.contains(&w.as_str()))
    {
        anyhow::bail!(
            "unknown workload '{w}'; the workloads are {}",
            WORKLOADS.join(", ")
        );
    }
    // Without a broker the peer job runs its embedded line only (`--role all` on the embedded
    // bus); the Kafka workload has nothing to run.
    if options.kafka.is_none() && options.only.iter().any(|o| o == "kafka") {
        anyhow::bail!("the kafka workload needs a broker: --kafka HOST:PORT");
    }
    let rate = options.latency_rate;
    if rate < 100 || !rate.is_multiple_of(100) {
        anyhow::bail!(
            "--latency-rate {rate}: give a multiple of 100 records/s (a batch is sent every 10 ms)"
        );
    }
    let mut lines = Vec::new();
    let mut add = |l: Line| {
        print_line(&l);
        lines.push(l);
    };
    if options.runs("pipeline") {
        for threads in [1, 2] {
            add(pipeline_run(&settings, options.records, threads).await?);
        }
    }
    if options.runs("bus") {
        reset_peak();
        add(bus_run(options.records).await?);
    }
    if options.runs("ledger") {
        add(apply_run(&settings, "sqlite", options.records).await?);
        if let Some(url) = &options.postgres {
            add(apply_run(&settings, url, options.records).await?);
        }
        for &n in &options.ledger_items {
            for l in ledger_run(&settings, "sqlite", n).await? {
                add(l);
            }
            if let Some(url) = &options.postgres {
                for l in ledger_run(&settings, url, n).await? {
                    add(l);
                }
            }
        }
    }
    if options.runs("latency") && options.latency_seconds > 0 {
        reset_peak();
        add(latency_run(&settings, options.latency_seconds, options.latency_rate).await?);
    }
    if let (true, Some(k)) = (options.runs("kafka"), &options.kafka) {
        for partitions in [1, 6] {
            reset_peak();
            add(kafka_run(&settings, k, options.records, partitions).await?);
        }
    }
    if options.runs("peer") {
        if let Some(k) = &options.kafka {
            for l in peer::kafka_lines(&settings, k, &options.peer).await? {
                add(l);
            }
        }
        add(peer::embedded_line(&settings, &options.peer).await?);
    }
    println!("\n| workload | figure | target | peak RSS |\n|---|---|---|---|");
    for l in &lines {
        println!(
            "| {} | {} | {} | {:.0} MiB |",
            l.workload, l.figure, l.target, l.peak_rss_mib
        );
    }
    Ok(())
}

fn print_line(l: &Line) {
    eprintln!("{:<90} {}", l.workload, l.figure);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record of the end-to-end run's bodies is accepted by its adapter, and the keys the
    /// ledger knows a record by are new in every body sent: the record id (from the 办件编号),
    /// the 决定文书号, the 证照编号 and the applicant's 统一社会信用代码 of the canonical events.
    #[test]
    fn the_end_to_end_bodies_are_accepted_with_new_keys_in_every_send() {
        let bodies = approval_bodies(100);
        // More sends than the pool holds: the second round reuses the first's templates.
        let events =
            peer::canonical_events(&Settings::default(), "nx-zwfw-approval", &bodies, 130).unwrap();
        assert_eq!(events.len(), 13_000);
        let mut keys: Vec<String> = Vec::new();
        for (id, event) in &events {
            let data = &serde_json::from_slice::<Value>(event).unwrap()["data"];
            assert_eq!(data["case_no"].as_str().unwrap().len(), 18, "{data}");
            keys.push(id.clone());
            for key in [
                "/license/document_no",
                "/license/license_no",
                "/counterpart/uscc",
            ] {
                let k = data.pointer(key).and_then(Value::as_str).unwrap();
                assert!(!k.contains(['#', '@']), "{key}: {k}");
                keys.push(k.to_string());
            }
        }
        let sent = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), sent, "every key once");
    }
}
