//! `shenguan bench`: the whole-system benchmarks, one command, one table.
//!
//! Workloads: the in-process pipeline (parse + map + validate + route) on realistic 政务服务网
//! records; the embedded bus (durable, group-committed); the ledger and tracker with many open
//! items (find what is due, refresh the gauges, build a monthly report) on SQLite and, given a
//! URL, PostgreSQL; end-to-end latency from ingest to claimable at a steady rate; and, given a
//! broker, ingest over HTTP into Kafka against a plain rdkafka producer sending the same bytes.
//! Each line reports throughput or latency percentiles and the process's peak resident memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::adapter::convert::now_shanghai;
use crate::bus::{Bus, Message};
use crate::config::Settings;
use crate::demo::{legacy_record, Lcg};
use crate::ledger::store::LedgerStore;
use crate::pipeline::{self, Outcome, Unit};
use crate::schema::RecordKind;

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
    /// Seconds of the steady 1,000 records/s run.
    pub latency_seconds: u64,
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

/// Realistic request bodies: batches of `per_batch` 政务服务网 records (~1.3 KB of JSON each).
pub fn bodies(records: usize, per_batch: usize) -> Vec<Vec<u8>> {
    let mut rng = Lcg(7);
    let decided = now_shanghai() - chrono::Duration::hours(1);
    let all: Vec<Value> = (0..records as u64)
        .map(|n| legacy_record(100_000 + n, decided, &mut rng, false))
        .collect();
    all.chunks(per_batch)
        .map(|c| serde_json::to_vec(c).expect("JSON"))
        .collect()
}

async fn pipeline_run(settings: &Settings, records: usize) -> anyhow::Result<Line> {
    let defs = crate::app::load_all(settings)?;
    let adapter = defs
        .adapters
        .get("nx-zwfw-approval")
        .ok_or_else(|| anyhow::anyhow!("adapter nx-zwfw-approval is missing"))?;
    let batches = bodies(records, 500);
    let bytes: usize = batches.iter().map(Vec::len).sum();
    let received = now_shanghai();
    let start = Instant::now();
    let mut accepted = Vec::with_capacity(records);
    let mut per_batch = Vec::new();
    for body in &batches {
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
        let n = outcomes.len();
        accepted.extend(outcomes.into_iter().filter_map(|o| match o {
            Outcome::Accepted(c) => Some(c),
            Outcome::Rejected(_) => None,
        }));
        per_batch.push(t.elapsed().as_secs_f64() * 1000.0 / n.max(1) as f64);
    }
    let process_secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(
        accepted.len() == records,
        "only {} of {records} records were accepted",
        accepted.len()
    );
    // Routing runs in the ledger projector on the canonical data; timed on its own here.
    let data: Vec<Value> = accepted
        .iter()
        .map(|c| serde_json::from_slice::<Value>(&c.event).map(|mut e| e["data"].take()))
        .collect::<Result<_, _>>()?;
    let t = Instant::now();
    let routed = data
        .iter()
        .filter(|d| {
            matches!(
                defs.catalog.route(RecordKind::Approval, d),
                crate::route::Route::To { .. }
            )
        })
        .count();
    let route_secs = t.elapsed().as_secs_f64();
    let secs = process_secs + route_secs;
    per_batch.sort_by(f64::total_cmp);
    anyhow::ensure!(routed > 0, "nothing was routed");
    Ok(Line {
        workload: format!(
            "pipeline: parse+map+validate+route, 1 core, {records} records of {} B",
            bytes / records.max(1)
        ),
        figure: format!(
            "{:.0} records/s; per record p50 {:.3} ms, p99 {:.3} ms",
            records as f64 / secs,
            percentile(&per_batch, 0.5),
            percentile(&per_batch, 0.99)
        ),
        target: "≥ 100,000 records/s per core".into(),
        peak_rss_mib: peak_rss_mib(),
    })
}

async fn bus_run(records: usize) -> anyhow::Result<Line> {
    let dir = tempfile_dir("bus")?;
    let bus = Arc::new(crate::bus::embedded::EmbeddedBus::open(
        &dir.join("bus.db"),
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
    let _ = std::fs::remove_dir_all(&dir);
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

fn tempfile_dir(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "shenguan-bench-{name}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Loads `n` open entries (1 in 100 overdue, the rest due within the next months) straight into
/// a ledger's tables, then times what the tracker and the report do with them.
async fn ledger_run(settings: &Settings, store: &str, n: usize) -> anyhow::Result<Vec<Line>> {
    let calendar = crate::app::load_calendar(settings)?;
    let now = now_shanghai();
    let (ledger, cleanup): (Arc<dyn LedgerStore>, Option<std::path::PathBuf>) = if store == "sqlite"
    {
        let dir = tempfile_dir("ledger")?;
        let path = dir.join("ledger.db");
        let ledger = crate::ledger::sqlite::SqliteLedger::open(&path)?;
        crate::ledger::sqlite::bulk_load(&path, n, now)?;
        (Arc::new(ledger), Some(dir))
    } else {
        let ledger = crate::ledger::pg::PgLedger::connect(store).await?;
        ledger.bulk_load(n, now).await?;
        (Arc::new(ledger), None)
    };
    let label = if store == "sqlite" {
        "SQLite"
    } else {
        "PostgreSQL"
    };
    let mut lines = Vec::new();
    reset_peak();
    let t = Instant::now();
    let due = ledger
        .entries_due_before(now + crate::ledger::tracker::DUE_SOON_HORIZON)
        .await?;
    let scan = t.elapsed();
    let overdue = due
        .iter()
        .filter(|e| e.claim_due_at.is_some_and(|d| d < now))
        .count();
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
    let gauges = ledger.gauges(now).await?;
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
    let builder = crate::ledger::report::Monthly::new(&month, Arc::new(calendar.clone()), now);
    let builder = ledger.report_month(from, to, builder).await?;
    let entries = builder.entries;
    let report = builder.finish();
    lines.push(Line {
        workload: format!("monthly report over {entries} entries of the month ({label})"),
        figure: format!(
            "{:.3} s ({} lines)",
            t.elapsed().as_secs_f64(),
            report.lines.len()
        ),
        target: "—".into(),
        peak_rss_mib: peak_rss_mib(),
    });
    if let Some(dir) = cleanup {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(lines)
}

/// A gateway in this process on a free port; returns its base URL and tokens.
async fn gateway(
    settings: &Settings,
    bus: &str,
) -> anyhow::Result<(
    String,
    String,
    String,
    tokio::task::JoinHandle<anyhow::Result<()>>,
)> {
    let mut s = settings.clone();
    s.data_dir = tempfile_dir("gateway")?;
    s.bus.url = bus.to_string();
    s.ledger.url = None;
    s.tracker.interval_seconds = 60;
    s.server.max_batch_records = 100_000;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    s.server.listen = format!("127.0.0.1:{port}").parse()?;
    let handle = tokio::spawn(crate::app::run(s.clone()));
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
    let adapter = crate::app::token_issue(&s, "adapter", "nx-zwfw-approval").await?;
    let admin = crate::app::token_issue(&s, "admin", "").await?;
    Ok((base, adapter, admin, handle))
}

async fn latency_run(settings: &Settings, seconds: u64) -> anyhow::Result<Line> {
    let (base, token, admin, _gateway) = gateway(settings, "embedded").await?;
    let client = reqwest::Client::new();
    let rate = 1000u64;
    let ticks = seconds * 100;
    let per_tick = (rate / 100) as usize;
    let mut rng = Lcg(99);
    let decided = now_shanghai() - chrono::Duration::hours(1);
    let mut latencies = Vec::new();
    let mut sampled = Vec::new();
    let start = Instant::now();
    let mut n = 0u64;
    for tick in 0..ticks {
        let due = start + Duration::from_millis(tick * 10);
        tokio::time::sleep_until(due.into()).await;
        let batch: Vec<Value> = (0..per_tick)
            .map(|_| {
                n += 1;
                legacy_record(900_000 + n, decided, &mut rng, false)
            })
            .collect();
        let sent = Instant::now();
        let answer: Value = client
            .post(format!("{base}/v1/ingest/nx-zwfw-approval"))
            .bearer_auth(&token)
            .json(&batch)
            .send()
            .await?
            .json()
            .await?;
        // One record in ten batches is followed until it is claimable.
        if tick % 10 == 0 {
            if let Some(id) = answer["accepted"][0]["id"].as_str() {
                sampled.push((id.to_string(), sent));
            }
        }
        let mut still = Vec::new();
        for (id, sent) in sampled.drain(..) {
            let r = client
                .get(format!("{base}/v1/records/{id}"))
                .bearer_auth(&admin)
                .send()
                .await?;
            if r.status().is_success() {
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
            } else {
                still.push((id, sent));
            }
        }
        sampled = still;
    }
    latencies.sort_by(f64::total_cmp);
    Ok(Line {
        workload: format!("end to end: ingested → claimable in the ledger, {rate} records/s for {seconds} s (embedded)"),
        figure: format!(
            "p50 {:.1} ms, p99 {:.1} ms ({} samples; 10 ms polling granularity)",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.len()
        ),
        target: "p99 < 50 ms at 1,000 records/s".into(),
        peak_rss_mib: peak_rss_mib(),
    })
}

async fn kafka_run(
    settings: &Settings,
    bootstrap: &str,
    records: usize,
) -> anyhow::Result<Vec<Line>> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let (base, token, _admin, _gateway) =
        gateway(settings, &format!("kafka://{bootstrap}")).await?;
    let batches = bodies(records, 500);
    let client = reqwest::Client::new();
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

    // The same canonical bytes through a plain idempotent producer.
    let defs = crate::app::load_all(settings)?;
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
    let start = Instant::now();
    let sends = events.iter().map(|(k, v)| {
        producer.send(
            FutureRecord::to("shenguan.bench.raw").key(k).payload(v),
            Duration::from_secs(30),
        )
    });
    for r in futures::future::join_all(sends).await {
        r.map_err(|(e, _)| e)?;
    }
    let raw_rate = events.len() as f64 / start.elapsed().as_secs_f64();
    Ok(vec![Line {
        workload: format!("ingest to Kafka over HTTP, {records} records in batches of 500, 4 in flight"),
        figure: format!("{gateway_rate:.0} records/s; raw rdkafka producer {raw_rate:.0} records/s; ratio {:.0}%", gateway_rate / raw_rate * 100.0),
        target: "≥ 70% of the raw producer".into(),
        peak_rss_mib: peak_rss_mib(),
    }])
}

/// Runs the benchmarks and prints the table.
pub async fn run(settings: Settings, options: BenchOptions) -> anyhow::Result<()> {
    reset_peak();
    let mut lines = vec![pipeline_run(&settings, options.records).await?];
    print_line(lines.last().unwrap());
    reset_peak();
    lines.push(bus_run(options.records).await?);
    print_line(lines.last().unwrap());
    for &n in &options.ledger_items {
        for l in ledger_run(&settings, "sqlite", n).await? {
            print_line(&l);
            lines.push(l);
        }
        if let Some(url) = &options.postgres {
            for l in ledger_run(&settings, url, n).await? {
                print_line(&l);
                lines.push(l);
            }
        }
    }
    if options.latency_seconds > 0 {
        reset_peak();
        lines.push(latency_run(&settings, options.latency_seconds).await?);
        print_line(lines.last().unwrap());
    }
    if let Some(k) = &options.kafka {
        reset_peak();
        for l in kafka_run(&settings, k, options.records).await? {
            print_line(&l);
            lines.push(l);
        }
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
