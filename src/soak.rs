//! `shenguan soak`: a bounded run of the real gateway process at a steady, realistic rate with
//! everything a working day brings — valid records, records with bad identifiers, resent
//! duplicates, claims, returns and feedback from the departments — sampling the gateway's memory,
//! open files, threads and latencies every minute. At the end the gateway is stopped and the bus
//! is read back: every accepted record is on it exactly once, every rejected one in the DLQ.
//! Exits non-zero when anything was lost or duplicated, or memory or file handles kept growing.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::adapter::convert::now_shanghai;
use crate::bus::Bus;
use crate::config::Settings;
use crate::demo::{legacy_record, Lcg};

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub minutes: u64,
    /// Records per second.
    pub rate: u64,
}

/// One minute of the run.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub minute: u64,
    pub rss_mib: f64,
    pub open_files: usize,
    pub threads: usize,
    pub ingest_p50_ms: f64,
    pub ingest_p99_ms: f64,
    pub claim_p99_ms: f64,
    pub accepted: usize,
    pub rejected: usize,
    pub duplicates: usize,
    pub claims: usize,
    pub returns: usize,
    pub feedback: usize,
}

fn proc_status(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

struct Gateway {
    child: Child,
    base: String,
}

fn start(data_dir: &std::path::Path) -> anyhow::Result<Gateway> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = std::fs::File::create(data_dir.join("gateway.log"))?;
    // The same configuration as this process (`shenguan.toml` or SHENGUAN_CONFIG), its own data.
    let child = Command::new(std::env::current_exe()?)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("run")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    Ok(Gateway {
        child,
        base: format!("http://127.0.0.1:{port}"),
    })
}

/// Runs the soak; prints one line per minute and the summary; `Ok(false)` when it failed.
pub async fn run(settings: Settings, options: SoakOptions) -> anyhow::Result<bool> {
    let data_dir = std::env::temp_dir().join(format!("shenguan-soak-{}", std::process::id()));
    std::fs::create_dir_all(&data_dir)?;
    let mut s = settings.clone();
    s.data_dir = data_dir.clone();
    s.bus.url = "embedded".into();
    s.ledger.url = None;
    let catalog = crate::app::load_all(&s)?.catalog;
    let adapter = crate::cmd::token::token_issue(&s, "adapter", "nx-zwfw-approval").await?;
    let admin = crate::cmd::token::token_issue(&s, "admin", "").await?;
    let mut departments = HashMap::new();
    for d in &catalog.departments {
        departments.insert(
            d.code.clone(),
            crate::cmd::token::token_issue(&s, "department", &d.code).await?,
        );
    }
    let mut gw = start(&data_dir)?;
    let pid = gw.child.id();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    for _ in 0..600 {
        if client
            .get(format!("{}/healthz", gw.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "soak: {} minutes at {} records/s against pid {pid} (data in {})",
        options.minutes,
        options.rate,
        data_dir.display()
    );
    eprintln!(
        "{:>3} {:>8} {:>6} {:>7} {:>9} {:>9} {:>9} {:>8} {:>8} {:>5} {:>7} {:>7} {:>8}",
        "MIN",
        "RSS_MIB",
        "FDS",
        "THREADS",
        "ING_P50",
        "ING_P99",
        "CLM_P99",
        "ACCEPTED",
        "REJECTED",
        "DUPS",
        "CLAIMS",
        "RETURNS",
        "FEEDBACK"
    );
    let mut rng = Lcg(20261123);
    let decided = now_shanghai() - chrono::Duration::minutes(30);
    let mut accepted: HashSet<String> = HashSet::new();
    let mut rejected = 0usize;
    let mut pending: Vec<(String, Instant)> = Vec::new();
    let mut last_batch: Option<Vec<Value>> = None;
    let mut samples = Vec::new();
    let mut sample = Sample::default();
    let (mut ingest_ms, mut claim_ms) = (Vec::new(), Vec::new());
    let start_at = Instant::now();
    let mut n = 0u64;
    let seconds = options.minutes * 60;
    for second in 0..seconds {
        tokio::time::sleep_until((start_at + Duration::from_secs(second)).into()).await;
        // Every 30th second the source system resends its previous batch.
        let batch: Vec<Value> = match (&last_batch, second % 30 == 29) {
            (Some(b), true) => b.clone(),
            _ => (0..options.rate)
                .map(|_| {
                    n += 1;
                    // One record in twenty has a bad 统一社会信用代码 and goes to the DLQ.
                    legacy_record(n, decided, &mut rng, n.is_multiple_of(20))
                })
                .collect(),
        };
        let sent = Instant::now();
        let answer: Value = client
            .post(format!("{}/v1/ingest/nx-zwfw-approval", gw.base))
            .bearer_auth(&adapter)
            .json(&batch)
            .send()
            .await?
            .json()
            .await?;
        ingest_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
        for a in answer["accepted"].as_array().into_iter().flatten() {
            if let Some(id) = a["id"].as_str() {
                accepted.insert(id.to_string());
                sample.accepted += 1;
                pending.push((id.to_string(), Instant::now()));
            }
        }
        let r = answer["rejected"].as_array().map_or(0, Vec::len);
        rejected += r;
        sample.rejected += r;
        sample.duplicates += answer["duplicates"].as_array().map_or(0, Vec::len);
        last_batch = Some(batch);
        // The departments work through what is at least 5 seconds old.
        let ready: Vec<(String, Instant)> = {
            let (ready, waiting): (Vec<_>, Vec<_>) = pending
                .drain(..)
                .partition(|(_, at)| at.elapsed() >= Duration::from_secs(5));
            pending = waiting;
            ready
        };
        for (id, _) in ready {
            let view: Value = client
                .get(format!("{}/v1/records/{id}", gw.base))
                .bearer_auth(&admin)
                .send()
                .await?
                .json()
                .await?;
            let Some(department) = view["entries"][0]["department"].as_str() else {
                continue; // unrouted
            };
            let token = &departments[department];
            let roll = rng.next(10);
            let (path, body) = match roll {
                0 => ("return", json!({"reason": "非本部门监管事项"})),
                1 | 2 => continue, // left unclaimed
                _ => ("claim", json!({"actor": "soak"})),
            };
            let sent = Instant::now();
            let r = client
                .post(format!("{}/v1/records/{id}/{path}", gw.base))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?;
            claim_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(
                r.status().is_success(),
                "{path} of {id} answered {}",
                r.status()
            );
            if path == "return" {
                sample.returns += 1;
                continue;
            }
            sample.claims += 1;
            if roll >= 7 {
                let r = client
                    .post(format!("{}/v1/records/{id}/feedback", gw.base))
                    .bearer_auth(token)
                    .json(&json!({"feedback_type": "supervision_started", "content": "已纳入日常监管"}))
                    .send()
                    .await?;
                anyhow::ensure!(r.status().is_success(), "feedback answered {}", r.status());
                sample.feedback += 1;
            }
        }
        if second % 60 == 59 {
            sample.minute = second / 60 + 1;
            sample.rss_mib = proc_status(pid, "VmRSS:").unwrap_or(0.0) / 1024.0;
            sample.open_files = open_files(pid);
            sample.threads = proc_status(pid, "Threads:").unwrap_or(0.0) as usize;
            sample.ingest_p50_ms = percentile(&mut ingest_ms, 0.5);
            sample.ingest_p99_ms = percentile(&mut ingest_ms, 0.99);
            sample.claim_p99_ms = percentile(&mut claim_ms, 0.99);
            let x = &sample;
            eprintln!(
                "{:>3} {:>8.1} {:>6} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>8} {:>8} {:>5} {:>7} {:>7} {:>8}",
                x.minute, x.rss_mib, x.open_files, x.threads, x.ingest_p50_ms, x.ingest_p99_ms, x.claim_p99_ms,
                x.accepted, x.rejected, x.duplicates, x.claims, x.returns, x.feedback
            );
            samples.push(std::mem::take(&mut sample));
            ingest_ms.clear();
            claim_ms.clear();
        }
    }
    // Stop the gateway gracefully, then read the bus back.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let stopped = tokio::task::spawn_blocking(move || gw.child.wait()).await??;
    let bus = crate::bus::embedded::EmbeddedBus::open(&data_dir.join("bus.db"))?;
    let topics = crate::bus::Topics::new(s.bus.topic_prefix.clone());
    let mut on_bus: HashMap<String, usize> = HashMap::new();
    for d in bus
        .read_all(&topics.name(crate::schema::RecordKind::Approval))
        .await?
    {
        let v: Value = serde_json::from_slice(&d.payload)?;
        *on_bus
            .entry(v["subject"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    let dlq = bus
        .read_all(&topics.name(crate::schema::RecordKind::Dlq))
        .await?
        .len();
    let lost = accepted
        .iter()
        .filter(|id| !on_bus.contains_key(*id))
        .count();
    let duplicated = on_bus.values().filter(|&&c| c > 1).count();
    let strangers = on_bus.keys().filter(|id| !accepted.contains(*id)).count();
    let mut ok = stopped.success() && lost == 0 && duplicated == 0 && strangers == 0;
    ok &= dlq == rejected;
    println!(
        "soak: {} minutes, {} records accepted, {} on the bus, {} duplicated, {} lost, {} rejected, {} in the DLQ; gateway exit {}",
        options.minutes,
        accepted.len(),
        on_bus.len(),
        duplicated,
        lost,
        rejected,
        dlq,
        stopped
    );
    if samples.len() >= 2 {
        // Steady: compare the second minute (warm; the first in a two-minute run) with the last.
        let warm = if samples.len() > 2 { 1 } else { 0 };
        let (first, last) = (&samples[warm], &samples[samples.len() - 1]);
        let rss_growth = last.rss_mib - first.rss_mib;
        let fd_growth = last.open_files as i64 - first.open_files as i64;
        println!(
            "soak: RSS {:.1} → {:.1} MiB, open files {} → {}, threads {} → {}, ingest p99 {:.1} → {:.1} ms, claim p99 {:.1} → {:.1} ms",
            first.rss_mib, last.rss_mib, first.open_files, last.open_files, first.threads, last.threads,
            first.ingest_p99_ms, last.ingest_p99_ms, first.claim_p99_ms, last.claim_p99_ms
        );
        // Growth allowed: the ledger's caches and SQLite's page cache fill during the first
        // half hour; a leak grows without bound.
        let rss_allowed = 64.0 + first.rss_mib * 0.5;
        if rss_growth > rss_allowed {
            println!("soak: FAILED: memory grew by {rss_growth:.1} MiB (allowed {rss_allowed:.1})");
            ok = false;
        }
        if fd_growth > 16 {
            println!("soak: FAILED: open files grew by {fd_growth}");
            ok = false;
        }
    }
    if ok {
        let _ = std::fs::remove_dir_all(&data_dir);
    } else {
        println!(
            "soak: FAILED; data and gateway.log kept in {}",
            data_dir.display()
        );
    }
    Ok(ok)
}
