//! `shenguan bench --only peer`: the peer job — HTTP → field mapping → Kafka — as a site runs it
//! and as a general-purpose log shipper would be measured on it.
//!
//! Generated 双公示 行政许可 records of about 1.3 KB (27 members, 5 of them dates, mostly Chinese
//! text, every business key unique) go to a real `shenguan run` child process as 100-record
//! batches over 8 keep-alive HTTP connections, each connection sending its next batch when the
//! previous one was answered (202 comes only after the bus acknowledged). After a warm-up the
//! measured window counts the records answered, the request latencies and the child's CPU time
//! (`utime + stime` of `/proc/<pid>/stat`). The same canonical bytes then go through a plain
//! rdkafka producer configured as the gateway's (idempotent, `acks=all`), in the same shape: 8
//! senders with 100 records in flight each. A last run does the same job against the embedded
//! bus with the SQLite ledger in the same process (`--role all`), and follows the ledger's
//! projected count on `/metrics` until it has caught up.
//!
//! The child gets its own configuration file (its data directory, topic prefix and the broker
//! given with `--kafka`, no per-token request limit) and the extra arguments of `--peer-args`
//! (e.g. `--role ingest`).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset};
use serde_json::{json, Value};

use super::{percentile, Line, Scratch};
use crate::adapter::convert::now_shanghai;
use crate::config::Settings;
use crate::demo::Lcg;
use crate::pipeline::{self, Outcome, Unit};
use crate::schema::formats;

/// The adapter of the peer job's records.
pub const ADAPTER: &str = "nx-credit-xk-json";
/// Records per request.
const BATCH: usize = 100;
/// Keep-alive connections, each with one request in flight.
const CONNECTIONS: usize = 8;
/// Distinct 100-record bodies the senders cycle through (each send patches new serials in).
const POOL: usize = 64;
/// Stands for a record's serial in a pooled body; replaced by 10 digits before each send.
const SERIAL_SLOT: &[u8] = b"##########";
/// `utime` and `stime` in `/proc/<pid>/stat` count in USER_HZ, 100 on every Linux architecture
/// (the kernel scales its own tick rate to it for every value it reports to user space).
const USER_HZ: f64 = 100.0;

/// What the peer job runs.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Seconds of load before the measured window.
    pub warmup: Duration,
    /// Seconds of the measured window.
    pub seconds: Duration,
    /// Extra arguments of the Kafka gateway's `shenguan run` (e.g. `--role ingest`).
    pub args: Vec<String>,
}

/// Items of the generated records: (事项名称, 决定书, 许可证, 许可编号 prefix, 许可类别, 内容).
const ITEMS: [(&str, &str, &str, &str, &str, &str); 4] = [
    (
        "食品经营许可",
        "食品经营许可决定书",
        "食品经营许可证",
        "JY16402",
        "普通",
        "主体业态：食品销售经营者（超市）；经营项目：预包装食品销售（含冷藏冷冻食品），散装食品销售（不含散装熟食），保健食品销售，特殊医学用途配方食品销售；经营场所：宁夏回族自治区石嘴山市大武口区朝阳西街116号一层商铺；仓库地址：大武口区星海镇工业园区7号库；许可条件：经营场所与有毒有害场所保持规定距离，设有与经营品种相适应的冷藏冷冻设施及温度监控记录，食品安全管理员一名",
    ),
    (
        "食品生产许可",
        "食品生产许可决定书",
        "食品生产许可证",
        "SC10664",
        "普通",
        "食品类别：粮食加工品，糕点，调味品；生产地址：宁夏回族自治区石嘴山市平罗县太沙工业园区纬二路18号；生产场所面积2400平方米，设原料库、成品库、内包装间各一处，检验室配备水分、微生物检验设备；许可条件：按食品安全国家标准组织生产，出厂检验逐批进行并留存记录，生产许可证有效期内每年提交自查报告",
    ),
    (
        "公共场所卫生许可",
        "公共场所卫生许可决定书",
        "公共场所卫生许可证",
        "宁卫公字",
        "登记",
        "许可项目：住宿（宾馆），沐浴，美容美发；经营场所：宁夏回族自治区石嘴山市惠农区北大街35号，营业面积3200平方米，客房86间；卫生管理人员：一名专职，从业人员均持有效健康合格证明上岗；许可条件：集中空调通风系统每年清洗消毒一次，公共用品用具一客一换一消毒，卫生检测结果在显著位置公示",
    ),
    (
        "排污许可证核发",
        "排污许可决定书",
        "排污许可证",
        "91640221",
        "核准",
        "行业类别：铁合金冶炼；排放口：有组织废气排放口4个，废水总排放口1个；许可排放浓度按《铁合金工业污染物排放标准》执行；许可年排放量：颗粒物12.6吨，二氧化硫35.2吨，氮氧化物48.0吨；自行监测：废气排放口安装在线监测设备并与生态环境部门联网，每季度提交执行报告",
    ),
];

const HOLDERS: [&str; 12] = [
    "石嘴山市塞北明珠商贸有限公司",
    "宁夏贺兰山农产品开发有限公司",
    "石嘴山市大武口区沙湖宾馆有限责任公司",
    "平罗县宏达铁合金有限公司",
    "宁夏星海湖食品有限公司",
    "石嘴山市惠农区鑫源副食品店",
    "宁夏九鼎建筑安装有限公司",
    "石嘴山市银河湾酒店管理有限公司",
    "宁夏塞上人家餐饮管理有限公司",
    "平罗县福源调味品厂",
    "石嘴山市新天地美容美发店",
    "宁夏长城须弥山葡萄酒有限公司",
];

const PEOPLE: [&str; 6] = ["王海燕", "马建国", "李海峰", "张晓梅", "杨志刚", "丁学文"];

fn uscc(prefix: &str, n: u64) -> String {
    let first = format!("{prefix}MA7{:06}", n % 1_000_000);
    let check = formats::uscc_check_char(&first).expect("17 characters of the alphabet");
    format!("{first}{check}")
}

fn resident_id(n: u64) -> String {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let first = format!(
        "640202{}{:02}{:02}{:03}",
        1965 + n % 35,
        1 + n % 12,
        1 + n % 28,
        n % 1000
    );
    let sum: u32 = first
        .bytes()
        .zip(W)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    format!("{first}{}", char::from(b"10X98765432"[(sum % 11) as usize]))
}

/// One 双公示 行政许可 row as the credit platform's reporting interface pushes it: the 2.0
/// template's columns a company or 个体工商户 fills, plus XK_XMMC, DFBM, XK_JZQ and SJC of 2016 —
/// 27 members, 5 of them dates. Its 决定文书号 holds [`SERIAL_SLOT`] for the serial.
pub fn peer_record(n: u64, decided: DateTime<FixedOffset>, rng: &mut Lcg) -> Value {
    let (item, document, certificate, number, category, content) =
        ITEMS[rng.next(ITEMS.len() as u64) as usize];
    let holder = HOLDERS[rng.next(HOLDERS.len() as u64) as usize];
    let person = PEOPLE[rng.next(PEOPLE.len() as u64) as usize];
    let individual = holder.ends_with('店');
    let code = uscc(if individual { "92640202" } else { "91640202" }, n);
    // A live feed: decided in the ten hours before `decided`, pushed within its deadline (a
    // late push raises an alert, which the ledger applies as a message of its own).
    let decided = decided - chrono::Duration::minutes(rng.next(600) as i64);
    let date = |d: DateTime<FixedOffset>| d.format("%Y-%m-%d").to_string();
    let valid_to = decided + chrono::Duration::days(5 * 365 - 1);
    json!({
        "XK_XDR_MC": holder,
        "XK_XDR_LB": if individual { "个体工商户" } else { "法人及非法人组织" },
        "XK_XDR_SHXYM": code,
        "XK_XDR_GSZC": format!("6402020{:08}", n % 100_000_000),
        "XK_XDR_ZZJG": format!("{}-{}", &code[8..16], &code[16..17]),
        "XK_XDR_SWDJ": code,
        "XK_FRDB": person,
        "XK_FR_ZJLX": "身份证",
        "XK_FR_ZJHM": resident_id(n),
        "XK_XKWS": document,
        "XK_WSH": format!("石审服许字〔{}〕第{}号", decided.format("%Y"), std::str::from_utf8(SERIAL_SLOT).expect("ASCII")),
        "XK_XKLB": category,
        "XK_XKZS": certificate,
        "XK_XKBH": format!("{number}{:09}", n),
        "XK_NR": content,
        "XK_JDRQ": date(decided),
        "XK_YXQZ": date(decided),
        "XK_YXQZI": date(valid_to),
        "XK_XKJG": "石嘴山市行政审批服务局",
        "XK_XKJGDM": "11640200MB1A28063W",
        "XK_ZT": "0",
        "XK_LYDW": "石嘴山市行政审批服务局",
        "XK_LYDWDM": "11640200MB1A28063W",
        "XK_XMMC": item,
        "DFBM": "640200",
        "XK_JZQ": date(valid_to),
        "SJC": (decided + chrono::Duration::hours(1)).format("%Y-%m-%d %H:%M:%S").to_string(),
    })
}

/// Where the records of pooled [`Bodies`] hold a key's number: a string that appears nowhere else
/// (`holder`), and what a record's serial turns it into (as many bytes).
pub struct Slot {
    pub holder: &'static [u8],
    pub fill: fn(u64) -> String,
}

/// The peer job's slot: the 决定文书号's number, 10 digits.
const SERIAL: [Slot; 1] = [Slot {
    holder: SERIAL_SLOT,
    fill: |n| format!("{n:010}"),
}];

/// A pooled body and its slots: (offset, which [`Slot`], which record of the body).
type Pooled = (Vec<u8>, Vec<(usize, usize, u64)>);

/// Request bodies with unique business keys: [`POOL`] bodies of a batch of records each, each
/// send a copy of the next one with the next serials written into its [`Slot`]s. Cheap enough
/// that the senders do not compete with the gateway for the cores.
pub struct Bodies {
    pool: Vec<Pooled>,
    next: AtomicU64,
    /// Records in a body.
    batch: usize,
    slots: &'static [Slot],
}

impl Bodies {
    /// The peer job's bodies: [`BATCH`] 双公示 records ([`peer_record`]), their 决定文书号 the slot.
    pub fn new() -> Bodies {
        let decided = now_shanghai() - chrono::Duration::hours(2);
        Bodies::of(BATCH, &SERIAL, Lcg(1300), |n, rng| {
            peer_record(n, decided, rng)
        })
    }

    /// [`POOL`] bodies of `batch` records that `record` makes from its number and `rng`; every
    /// record holds each of `slots` the same number of times.
    pub fn of(
        batch: usize,
        slots: &'static [Slot],
        mut rng: Lcg,
        mut record: impl FnMut(u64, &mut Lcg) -> Value,
    ) -> Bodies {
        let pool = (0..POOL as u64)
            .map(|b| {
                let records: Vec<Value> = (0..batch as u64)
                    .map(|i| record(b * batch as u64 + i, &mut rng))
                    .collect();
                let body = serde_json::to_vec(&records).expect("JSON");
                let mut at = Vec::new();
                for (k, slot) in slots.iter().enumerate() {
                    let found: Vec<usize> = body
                        .windows(slot.holder.len())
                        .enumerate()
                        .filter(|(_, w)| *w == slot.holder)
                        .map(|(at, _)| at)
                        .collect();
                    let each = found.len() / batch;
                    assert!(
                        each > 0 && found.len() == each * batch,
                        "slot {k} held {} times by {batch} records",
                        found.len()
                    );
                    at.extend(
                        found
                            .into_iter()
                            .enumerate()
                            .map(|(j, offset)| (offset, k, (j / each) as u64)),
                    );
                }
                (body, at)
            })
            .collect();
        Bodies {
            pool,
            next: AtomicU64::new(0),
            batch,
            slots,
        }
    }

    /// The next body: its records carry serials never sent before in this run.
    pub fn next(&self) -> Vec<u8> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (template, slots) = &self.pool[(n % POOL as u64) as usize];
        let mut body = template.clone();
        for &(at, k, record) in slots {
            let slot = &self.slots[k];
            let text = (slot.fill)(n * self.batch as u64 + record);
            assert_eq!(text.len(), slot.holder.len(), "slot {k} filled with {text}");
            body[at..at + text.len()].copy_from_slice(text.as_bytes());
        }
        body
    }

    /// Average bytes of a record.
    pub fn record_bytes(&self) -> usize {
        self.pool.iter().map(|(b, _)| b.len()).sum::<usize>() / (POOL * self.batch)
    }
}

impl Default for Bodies {
    fn default() -> Self {
        Bodies::new()
    }
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name in parentheses may hold spaces: count fields after its closing one.
    let after = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow::anyhow!("unreadable /proc/{pid}/stat"))?
        .1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime) are the 12th and 13th after the name.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
            .parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / USER_HZ)
}

/// Busy and total jiffies of the whole machine (`/proc/stat`), for the share of the cores used.
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle + iowait are not busy.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Peak resident memory of a process, MiB (`VmHWM`).
fn peak_rss_of(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A `shenguan run` child process with a configuration of its own; stopped on drop.
struct Gateway {
    child: Child,
    base: String,
    token: String,
    dir: Scratch,
}

impl Gateway {
    async fn start(
        settings: &Settings,
        bus: &str,
        prefix: &str,
        args: &[String],
    ) -> anyhow::Result<Gateway> {
        let scratch = Scratch::new("peer")?;
        let dir = scratch.path();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let abs = |p: &std::path::Path| -> String {
            std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .display()
                .to_string()
        };
        let kafka = &settings.bus.kafka;
        let mut config = toml::Table::new();
        config.insert("data_dir".into(), dir.display().to_string().into());
        config.insert("adapters_dir".into(), abs(&settings.adapters_dir).into());
        config.insert("schemas_dir".into(), abs(&settings.schemas_dir).into());
        config.insert("catalog_file".into(), abs(&settings.catalog_file).into());
        config.insert("calendar_dir".into(), abs(&settings.calendar_dir).into());
        config.insert("policies_dir".into(), abs(&settings.policies_dir).into());
        if let Some(p) = &settings.policy {
            config.insert("policy".into(), p.clone().into());
        }
        let table = |v: Value| -> anyhow::Result<toml::Value> { Ok(toml::Value::try_from(v)?) };
        config.insert(
            "server".into(),
            table(json!({"listen": format!("127.0.0.1:{port}")}))?,
        );
        config.insert(
            "bus".into(),
            table(json!({
                "url": bus,
                "topic_prefix": prefix,
                "kafka": {
                    "partitions": kafka.partitions,
                    "replication_factor": kafka.replication_factor,
                    "linger_ms": kafka.linger_ms,
                    "compression": kafka.compression,
                    "properties": kafka.properties,
                },
            }))?,
        );
        // The job measures throughput: the per-token request limit is an operator's choice.
        config.insert("auth".into(), table(json!({"requests_per_second": 0.0}))?);
        config.insert("log".into(), table(json!({"level": "warn"}))?);
        let file = dir.join("shenguan.toml");
        std::fs::write(&file, toml::to_string(&config)?)?;
        let mut child_settings = Settings::load(Some(&file), &Default::default())?;
        child_settings.data_dir = dir.to_path_buf();
        let token = crate::cmd::token::token_issue(&child_settings, "adapter", ADAPTER).await?;
        let log = std::fs::File::create(dir.join("gateway.log"))?;
        let child = Command::new(std::env::current_exe()?)
            .arg("--config")
            .arg(&file)
            .arg("run")
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let mut gw = Gateway {
            child,
            base: format!("http://127.0.0.1:{port}"),
            token,
            dir: scratch,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = gw.child.try_wait()? {
                anyhow::bail!("the gateway exited with {status}:\n{}", gw.logs());
            }
            if client
                .get(format!("{}/readyz", gw.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(gw);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the gateway did not get ready within 2 minutes:\n{}",
                gw.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn logs(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default();
        let mut start = text.len().saturating_sub(4000);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_string()
    }

    /// Records the ledger has projected (every accepted approval gets a push latency).
    async fn projected(&self, client: &reqwest::Client) -> anyhow::Result<u64> {
        super::projected(client, &self.base).await
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one measured window of the job gave.
struct Window {
    records: u64,
    seconds: f64,
    latencies_ms: Vec<f64>,
    cpu_seconds: f64,
    machine_busy: f64,
    /// Records accepted before and during the window (the ledger's work).
    sent_total: u64,
}

impl Window {
    fn rate(&self) -> f64 {
        self.records as f64 / self.seconds
    }
    fn cpu_us_per_record(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.records.max(1) as f64
    }
}

#[derive(serde::Deserialize)]
struct Answer {
    accepted: Vec<serde::de::IgnoredAny>,
}

/// Drives the job against a gateway: warm-up, then the measured window.
async fn drive(gw: &Gateway, bodies: Arc<Bodies>, options: &PeerOptions) -> anyhow::Result<Window> {
    let start = Instant::now();
    let measure_from = start + options.warmup;
    let end = measure_from + options.seconds;
    let url = format!("{}/v1/ingest/{ADAPTER}", gw.base);
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        // A client per sender: one keep-alive connection each.
        let client = reqwest::Client::builder()
            .http1_only()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(60))
            .build()?;
        let (url, token, bodies) = (url.clone(), gw.token.clone(), bodies.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut measured, mut total) = (0u64, 0u64);
            while Instant::now() < end {
                let body = bodies.next();
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = response.status();
                let bytes = response.bytes().await?;
                let done = Instant::now();
                anyhow::ensure!(
                    status == reqwest::StatusCode::ACCEPTED,
                    "the gateway answered {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(2000)])
                );
                let answer: Answer = serde_json::from_slice(&bytes)?;
                anyhow::ensure!(
                    answer.accepted.len() == BATCH,
                    "{} of {BATCH} records accepted: {}",
                    answer.accepted.len(),
                    String::from_utf8_lossy(&bytes[..bytes.len().min(2000)])
                );
                total += BATCH as u64;
                if sent >= measure_from && done <= end {
                    measured += BATCH as u64;
                    latencies.push((done - sent).as_secs_f64() * 1000.0);
                }
            }
            anyhow::Ok((measured, total, latencies))
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = cpu_seconds(gw.pid())?;
    let machine_before = machine_jiffies();
    tokio::time::sleep_until(end.into()).await;
    let cpu_after = cpu_seconds(gw.pid())?;
    let machine_after = machine_jiffies();
    let mut window = Window {
        records: 0,
        seconds: options.seconds.as_secs_f64(),
        latencies_ms: Vec::new(),
        cpu_seconds: cpu_after - cpu_before,
        machine_busy: (machine_after.0 - machine_before.0) as f64
            / (machine_after.1 - machine_before.1).max(1) as f64,
        sent_total: 0,
    };
    for t in tasks {
        let (measured, total, latencies) = t.await??;
        window.records += measured;
        window.sent_total += total;
        window.latencies_ms.extend(latencies);
    }
    window.latencies_ms.sort_by(f64::total_cmp);
    anyhow::ensure!(
        window.records > 0,
        "no request was answered within the measured window"
    );
    Ok(window)
}

fn job_figure(w: &Window) -> String {
    format!(
        "{:.0} records/s; request p50 {:.1} ms, p99 {:.1} ms; gateway CPU {:.1} µs/record; machine busy {:.0}%",
        w.rate(),
        percentile(&w.latencies_ms, 0.5),
        percentile(&w.latencies_ms, 0.99),
        w.cpu_us_per_record(),
        w.machine_busy * 100.0
    )
}

/// The canonical events of the next `sends` bodies, as the gateway publishes them through
/// `adapter`; an error at the first record it rejects.
pub fn canonical_events(
    settings: &Settings,
    adapter: &str,
    bodies: &Bodies,
    sends: usize,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let (schemas, adapters) = crate::app::load_definitions(settings)?;
    let adapter = adapters
        .get(adapter)
        .ok_or_else(|| anyhow::anyhow!("adapter {adapter} is missing"))?;
    let mut events = Vec::new();
    for _ in 0..sends {
        let body = bodies.next();
        for o in pipeline::process(
            &adapter,
            &schemas,
            &body,
            None,
            None,
            Unit::Body,
            now_shanghai(),
            usize::MAX,
        )
        .map_err(|b| anyhow::anyhow!(b.title))?
        {
            match o {
                Outcome::Accepted(c) => events.push((c.record_id, c.event)),
                Outcome::Rejected(r) => {
                    anyhow::bail!("a generated record was rejected: {:?}", r.errors)
                }
            }
        }
    }
    Ok(events)
}

/// The plain producer: the gateway's producer configuration, the same canonical bytes, 8
/// senders with [`BATCH`] records in flight each, for the same warm-up and window.
async fn plain_producer(
    settings: &Settings,
    bootstrap: &str,
    topic: &str,
    events: Arc<Vec<(String, Vec<u8>)>>,
    options: &PeerOptions,
) -> anyhow::Result<f64> {
    use rdkafka::producer::FutureRecord;
    let producer = crate::bus::kafka::new_producer(bootstrap, &settings.bus.kafka)?;
    let admin: rdkafka::admin::AdminClient<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    admin
        .create_topics(
            &[rdkafka::admin::NewTopic::new(
                topic,
                settings.bus.kafka.partitions,
                rdkafka::admin::TopicReplication::Fixed(settings.bus.kafka.replication_factor),
            )],
            &rdkafka::admin::AdminOptions::new(),
        )
        .await?;
    let start = Instant::now();
    let measure_from = start + options.warmup;
    let end = measure_from + options.seconds;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (producer, events, next, topic) = (
            producer.clone(),
            events.clone(),
            next.clone(),
            topic.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut measured = 0u64;
            while Instant::now() < end {
                let first = next.fetch_add(BATCH as u64, Ordering::Relaxed) as usize;
                let sent = Instant::now();
                let sends = (first..first + BATCH).map(|i| {
                    let (key, payload) = &events[i % events.len()];
                    producer.send(
                        FutureRecord::to(&topic).key(key).payload(payload),
                        Duration::from_secs(30),
                    )
                });
                for r in futures::future::join_all(sends).await {
                    r.map_err(|(e, _)| e)?;
                }
                if sent >= measure_from && Instant::now() <= end {
                    measured += BATCH as u64;
                }
            }
            anyhow::Ok(measured)
        }));
    }
    let mut measured = 0;
    for t in tasks {
        measured += t.await??;
    }
    Ok(measured as f64 / options.seconds.as_secs_f64())
}

/// The peer job against Kafka (the gateway, then the plain producer), as two lines.
pub async fn kafka_lines(
    settings: &Settings,
    bootstrap: &str,
    options: &PeerOptions,
) -> anyhow::Result<Vec<Line>> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("peer{}.", &run[..8]);
    let bodies = Arc::new(Bodies::new());
    let record_bytes = bodies.record_bytes();
    let events = Arc::new(canonical_events(settings, ADAPTER, &bodies, POOL)?);
    let event_bytes = events.iter().map(|(_, e)| e.len()).sum::<usize>() / events.len().max(1);
    let (window, peak) = {
        let gw = Gateway::start(
            settings,
            &format!("kafka://{bootstrap}"),
            &prefix,
            &options.args,
        )
        .await?;
        let window = drive(&gw, bodies.clone(), options).await?;
        (window, peak_rss_of(gw.pid()))
    };
    let args = if options.args.is_empty() {
        "(default role)".to_string()
    } else {
        options.args.join(" ")
    };
    let plain = plain_producer(
        settings,
        bootstrap,
        &format!("{prefix}plain"),
        events,
        options,
    )
    .await?;
    let secs = options.seconds.as_secs();
    Ok(vec![
        Line {
            workload: format!(
                "peer job: {record_bytes} B 双公示 records, 100 a request, 8 keep-alive connections, {secs} s after {} s warm-up, Kafka, shenguan run {args}",
                options.warmup.as_secs()
            ),
            figure: job_figure(&window),
            target: "≥ 50,000 records/s, ≤ 25 µs CPU/record (--role ingest)".into(),
            peak_rss_mib: peak,
        },
        Line {
            workload: format!(
                "peer job: plain rdkafka producer, same {event_bytes} B canonical events, 8 × 100 in flight"
            ),
            figure: format!(
                "{plain:.0} records/s; gateway {:.0}% of it",
                window.rate() / plain * 100.0
            ),
            target: "gateway ≥ 70% of it".into(),
            peak_rss_mib: super::peak_rss_mib(),
        },
    ])
}

/// The peer job against the embedded bus with the SQLite ledger in the same process.
pub async fn embedded_line(settings: &Settings, options: &PeerOptions) -> anyhow::Result<Line> {
    let bodies = Arc::new(Bodies::new());
    let record_bytes = bodies.record_bytes();
    let gw = Gateway::start(settings, "embedded", "shenguan.", &[]).await?;
    let client = reqwest::Client::new();
    let before = gw.projected(&client).await?;
    let started = Instant::now();
    let window = drive(&gw, bodies, options).await?;
    let at_end = gw.projected(&client).await? - before;
    let mut caught_up = 0.0;
    let deadline = Instant::now() + Duration::from_secs(600);
    let ended = Instant::now();
    while gw.projected(&client).await? - before < window.sent_total {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the ledger did not catch up within 10 minutes:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        caught_up = ended.elapsed().as_secs_f64();
    }
    let sustained = window.sent_total as f64 / started.elapsed().as_secs_f64();
    let peak = peak_rss_of(gw.pid());
    Ok(Line {
        workload: format!(
            "peer job: {record_bytes} B 双公示 records, 100 a request, 8 keep-alive connections, {} s after {} s warm-up, embedded bus + SQLite ledger (role all)",
            options.seconds.as_secs(),
            options.warmup.as_secs()
        ),
        figure: format!(
            "{}; ledger {at_end} of {} projected at the end, caught up {caught_up:.1} s later ({sustained:.0} records/s ingested and projected)",
            job_figure(&window),
            window.sent_total
        ),
        target: "≥ 20,000 records/s sustained, ledger keeping up".into(),
        peak_rss_mib: peak,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_records_have_the_peer_shape_and_unique_keys() {
        let bodies = Bodies::new();
        let (a, b) = (bodies.next(), bodies.next());
        let a: Vec<Value> = serde_json::from_slice(&a).unwrap();
        let b: Vec<Value> = serde_json::from_slice(&b).unwrap();
        assert_eq!(a.len(), BATCH);
        let record = a[0].as_object().unwrap();
        assert_eq!(record.len(), 27);
        let dates = ["XK_JDRQ", "XK_YXQZ", "XK_YXQZI", "XK_JZQ", "SJC"];
        assert!(dates.iter().all(|d| record.contains_key(*d)));
        let bytes = bodies.record_bytes();
        assert!((1200..1450).contains(&bytes), "{bytes} B a record");
        let mut keys: Vec<&str> = a
            .iter()
            .chain(&b)
            .map(|r| r["XK_WSH"].as_str().unwrap())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 2 * BATCH);
        assert!(keys.iter().all(|k| !k.contains('#')));
        for r in a.iter().chain(&b) {
            assert!(formats::is_uscc(r["XK_XDR_SHXYM"].as_str().unwrap()), "{r}");
            assert!(
                formats::is_resident_id(r["XK_FR_ZJHM"].as_str().unwrap()),
                "{r}"
            );
        }
    }
}
