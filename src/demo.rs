//! `shenguan demo`: a gateway with simulated legacy systems and departments, so that a newcomer
//! sees real numbers within a minute — metrics, an alert condition, a monthly report.
//!
//! Embedded (the default): starts the gateway in this process on a fresh demo data directory,
//! seeds three weeks of history (records pushed days ago, claimed on time, late or never — so
//! some are overdue and escalated at once), then keeps sending new records, a few bad ones, and
//! claims through the real HTTP API. With `--target URL` it only simulates the legacy system and
//! the departments against a running gateway (the docker-compose `simulator` profile).

use std::time::Duration;

use chrono::{DateTime, Datelike, FixedOffset, TimeZone};
use serde_json::{json, Value};

use crate::adapter::convert::{now_shanghai, shanghai};
use crate::bus::{self, Message, Topics};
use crate::config::Settings;
use crate::pipeline::{self, Outcome};
use crate::schema::{formats, RecordKind};

/// The adapter the simulated 政务服务网 sends through.
const ADAPTER: &str = "nx-zwfw-approval";

/// (事项名称, 基本目录编码, 许可内容) of the simulated items; the last one is not in the demo
/// catalog, so its records wait unrouted.
const ITEMS: [(&str, &str, &str); 4] = [
    ("食品经营许可", "000117006000", "热食类食品制售"),
    ("公共场所卫生许可", "000118002000", "美容美发场所"),
    ("建筑工程施工许可证核发", "000111002000", "住宅楼新建工程"),
    ("烟花爆竹经营（零售）许可", "000199001000", "烟花爆竹零售"),
];

const NAMES: [&str; 8] = [
    "宁夏塞上人家餐饮管理有限公司",
    "石嘴山市贺兰山美发店",
    "宁夏沙湖建设工程有限公司",
    "大武口区老马家牛肉面馆",
    "宁夏星海酒店管理有限公司",
    "惠农区悦美美容院",
    "宁夏九鼎建筑安装有限公司",
    "平罗县福源烟花爆竹店",
];

/// Departments and how they behave: (code, share of records claimed, usual delay in hours).
const BEHAVIOUR: [(&str, u64, i64); 3] = [
    ("szs-scjg", 90, 3),
    ("szs-wjw", 70, 30),
    ("szs-zjj", 40, 60),
];

/// A small deterministic generator, so every demo run tells the same story.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

/// The 统一社会信用代码 of the `i`th generated company, its check character computed.
pub fn uscc(i: u64) -> String {
    let first = format!("91640200MA7{:06}", 100000 + i % 900000);
    let check = formats::uscc_check_char(&first).expect("17 characters of the alphabet");
    format!("{first}{check}")
}

/// One 政务服务网 办件 as the legacy system sends it.
pub fn legacy_record(n: u64, decided: DateTime<FixedOffset>, rng: &mut Lcg, bad: bool) -> Value {
    // Mostly catalogued items; one in twelve is not in the catalog and waits unrouted.
    let pick = match rng.next(12) {
        0..=4 => 0,
        5..=7 => 1,
        8..=10 => 2,
        _ => 3,
    };
    let (item, code, content) = ITEMS[pick];
    let name = NAMES[rng.next(NAMES.len() as u64) as usize];
    let mut record = json!({
        "PROJID": format!("6402002026{:08}", n),
        "SERVICECODE": format!("11640200MB1A28063W4{code}"),
        "SERVICENAME": item,
        "CATALOG_CODE": code,
        "APPLYNAME": name,
        "APPLY_PROPERTY": "1",
        "APPLY_CARDTYPE": "001",
        "APPLY_CARDNUMBER": uscc(n),
        "LEGALMAN": "马建国",
        "TELPHONE": format!("139950{:05}", n % 100000),
        "ADDRESS": "宁夏回族自治区石嘴山市大武口区朝阳东街88号",
        "DEPTNAME": "石嘴山市行政审批服务局",
        "DEPT_USCC": "11640200MB1A28063W",
        "AREACODE": "640200",
        "TRANSACT_TIME": decided.format("%Y-%m-%d %H:%M:%S").to_string(),
        "DOCUMENT_NAME": "准予行政许可决定书",
        "DOCUMENT_CODE": format!("石审服许字〔{}〕第{:04}号", decided.year(), n),
        "XKLB": "1",
        "XKNR": content,
        "VALID_FROM": decided.format("%Y-%m-%d").to_string(),
        "VALID_TO": "2031-12-31",
    });
    if bad {
        if n.is_multiple_of(2) {
            // A typing error in the 统一社会信用代码: the check digit no longer matches.
            let mut code = uscc(n);
            let last = code.pop().expect("18 characters");
            code.push(if last == '0' { '1' } else { '0' });
            record["APPLY_CARDNUMBER"] = json!(code);
        } else {
            record
                .as_object_mut()
                .expect("object")
                .remove("DOCUMENT_CODE");
        }
    }
    record
}

fn at(day: chrono::NaiveDate, hour: u32, minute: u32) -> DateTime<FixedOffset> {
    shanghai()
        .from_local_datetime(&day.and_hms_opt(hour, minute, 0).expect("valid time"))
        .single()
        .expect("fixed offset")
}

/// Seeds three weeks of history straight onto the bus, with the times it happened.
async fn seed_history(settings: &Settings) -> anyhow::Result<usize> {
    let (schemas, adapters) = crate::app::load_definitions(settings)?;
    let calendar = crate::app::load_calendar(settings)?;
    let adapter = adapters
        .get(ADAPTER)
        .ok_or_else(|| anyhow::anyhow!("the demo needs the {ADAPTER} adapter"))?;
    let bus = bus::open(&settings.bus.url, &settings.data_dir, &settings.bus.kafka)?;
    let topics = Topics::new(settings.bus.topic_prefix.clone());
    let catalog = crate::route::Catalog::load(&settings.catalog_file)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut rng = Lcg(2026);
    let today = now_shanghai().date_naive();
    let mut messages = Vec::new();
    let mut n = 0;
    for back in (1..=15u32).rev() {
        let mut day = today;
        for _ in 0..back {
            day = calendar.sub_working_days(day, 1)?;
        }
        for _ in 0..2 {
            n += 1;
            let pushed = at(day, 9 + rng.next(8) as u32, rng.next(60) as u32);
            // Most decisions are pushed the same day; some a few days late.
            let decided = if rng.next(5) == 0 {
                pushed - chrono::Duration::days(3)
            } else {
                pushed - chrono::Duration::minutes(30)
            };
            let body = serde_json::to_vec(&legacy_record(n, decided, &mut rng, false))?;
            let outcomes = pipeline::process(
                &adapter,
                &schemas,
                &body,
                None,
                None,
                pipeline::Unit::Body,
                pushed,
                10,
            )
            .map_err(|b| anyhow::anyhow!(b.title))?;
            for o in outcomes {
                let Outcome::Accepted(c) = o else { continue };
                let data: Value = serde_json::from_slice::<Value>(&c.event)?["data"].clone();
                messages.push(Message {
                    topic: topics.name(RecordKind::Approval),
                    key: c.record_id.clone(),
                    payload: c.event,
                });
                let crate::route::Route::To { departments, .. } =
                    catalog.route(RecordKind::Approval, &data)
                else {
                    continue;
                };
                for d in departments {
                    let Some(&(_, share, delay)) = BEHAVIOUR.iter().find(|b| b.0 == d) else {
                        continue;
                    };
                    if rng.next(100) >= share {
                        continue;
                    }
                    let claimed =
                        pushed + chrono::Duration::hours(delay / 2 + rng.next(delay as u64) as i64);
                    if claimed > now_shanghai() {
                        continue;
                    }
                    let id = uuid::Uuid::new_v4().to_string();
                    let claim = json!({"record_id": c.record_id, "department": d, "action": "claim", "at": claimed.to_rfc3339(), "channel": "rest", "actor": "科员"});
                    let event = pipeline::envelope(
                        RecordKind::Claim,
                        &id,
                        "/shenguan/demo",
                        &c.record_id,
                        claimed,
                        claim,
                    );
                    messages.push(Message {
                        topic: topics.name(RecordKind::Claim),
                        key: c.record_id.clone(),
                        payload: serde_json::to_vec(&event)?,
                    });
                }
            }
        }
    }
    // Claims after their records, as they happened.
    messages.sort_by_key(|m| {
        serde_json::from_slice::<Value>(&m.payload)
            .ok()
            .and_then(|v| v["time"].as_str().map(str::to_string))
            .unwrap_or_default()
    });
    let count = messages.len();
    bus.publish(messages).await?;
    Ok(count)
}

/// Tokens the simulation uses.
pub struct Tokens {
    pub adapter: String,
    pub departments: Vec<(String, String)>,
}

/// Sends new records and claims through the HTTP API until stopped.
pub async fn simulate(base: &str, tokens: &Tokens, rounds: Option<u64>) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut rng = Lcg(4242);
    let mut n = 10_000;
    let mut round = 0;
    loop {
        round += 1;
        for _ in 0..(1 + rng.next(3)) {
            n += 1;
            let bad = rng.next(6) == 0;
            let decided = now_shanghai() - chrono::Duration::minutes(rng.next(240) as i64);
            let body = legacy_record(n, decided, &mut rng, bad);
            let r = client
                .post(format!("{base}/v1/ingest/{ADAPTER}"))
                .bearer_auth(&tokens.adapter)
                .json(&body)
                .send()
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "demo: the gateway did not answer");
            }
        }
        if round % 2 == 0 {
            let (code, token) =
                &tokens.departments[rng.next(tokens.departments.len() as u64) as usize];
            let inbox: Value = client
                .get(format!("{base}/v1/inbox?status=unclaimed&limit=5"))
                .bearer_auth(token)
                .send()
                .await?
                .json()
                .await
                .unwrap_or(Value::Null);
            if let Some(id) = inbox["records"]
                .as_array()
                .and_then(|r| r.last())
                .and_then(|r| r["id"].as_str())
            {
                let _ = client
                    .post(format!("{base}/v1/records/{id}/claim"))
                    .bearer_auth(token)
                    .json(&json!({"actor": format!("{code} 值班员")}))
                    .send()
                    .await;
            }
        }
        if rounds.is_some_and(|r| round >= r) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// The bureau sends an inquiry and announces a joint site inspection, as it would on a working
/// day, so the other flows have something to show.
async fn seed_flows(client: &reqwest::Client, base: &str, admin: &str) -> anyhow::Result<()> {
    let inspection_at = (now_shanghai() + chrono::Duration::days(7))
        .date_naive()
        .and_hms_opt(9, 0, 0)
        .and_then(|t| t.and_local_timezone(shanghai()).single())
        .unwrap_or_else(now_shanghai);
    for (path, body) in [
        (
            "/v1/inquiries",
            json!({"to": ["szs-scjg", "szs-wjw"], "title": "关于食品经营许可现场核查标准的函询",
                   "subject_type": "行政许可事项办理标准", "question": "现场核查是否按2026版标准执行？",
                   "document_no": "石审服函〔2026〕8号"}),
        ),
        (
            "/v1/inspections",
            json!({"to": ["szs-scjg"], "title": "食品生产许可联合现场核查", "mode": "联合踏勘评审",
                   "scheduled_at": crate::ledger::rfc3339(inspection_at),
                   "location": "石嘴山市大武口区工业园区8号", "matter": "宁夏某食品有限公司 食品生产许可",
                   "document_no": "石审服勘〔2026〕3号"}),
        ),
    ] {
        let r = client
            .post(format!("{base}{path}"))
            .bearer_auth(admin)
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(
            r.status().is_success(),
            "demo: {path} answered {}",
            r.status()
        );
    }
    Ok(())
}

/// `shenguan demo` without `--target`: gateway, history and live traffic in one process.
pub async fn run_embedded(mut settings: Settings) -> anyhow::Result<()> {
    // A demo directory of its own, fresh every time; it never touches the real data directory.
    settings.data_dir = settings.data_dir.join("demo");
    if settings.data_dir.exists() {
        std::fs::remove_dir_all(&settings.data_dir)?;
    }
    settings.bus.url = "embedded".into();
    settings.ledger.url = None;
    settings.tracker.interval_seconds = 2;
    let base = format!("http://{}", settings.server.listen);
    let gateway = tokio::spawn(crate::app::run(settings.clone()));
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
        if gateway.is_finished() {
            return gateway.await?;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seeded = seed_history(&settings).await?;
    let mut departments = Vec::new();
    for (code, _, _) in BEHAVIOUR {
        departments.push((
            code.to_string(),
            crate::cmd::token::token_issue(&settings, "department", code).await?,
        ));
    }
    let tokens = Tokens {
        adapter: crate::cmd::token::token_issue(&settings, "adapter", ADAPTER).await?,
        departments,
    };
    let admin = crate::cmd::token::token_issue(&settings, "admin", "").await?;
    seed_flows(&client, &base, &admin).await?;
    let month = now_shanghai().format("%Y-%m");
    let dir = settings.data_dir.display();
    println!(
        "\nshenguan demo — {base}  (data: {dir})\n\
         Seeded {seeded} messages of history (three weeks of 办件 and claims); new records and claims follow every few seconds.\n\n\
         Watch it:\n\
         \x20 curl -s {base}/metrics | grep -E '^shenguan_(overdue|unclaimed|deadline_breaches|records_ingested)'\n\
         \x20 curl -s -H 'Authorization: Bearer {scjg}' '{base}/v1/inbox?status=overdue'\n\
         \x20 curl -s -H 'Authorization: Bearer {admin}' {base}/v1/unrouted\n\
         \x20 curl -s -H 'Authorization: Bearer {scjg}' {base}/v1/inquiries      # a 业务函询 to answer\n\
         \x20 curl -s -H 'Authorization: Bearer {scjg}' {base}/v1/inspections    # a joint inspection to confirm\n\
         \x20 curl -s -H 'Authorization: Bearer {admin}' '{base}/v1/reports/monthly?month={month}'\n\
         \x20 shenguan report --month {month} --data-dir {dir}\n\
         \x20 shenguan dlq list --data-dir {dir}\n\n\
         Tokens (demo only): adapter {adapter}\n\
         \x20 szs-scjg {scjg}\n\x20 szs-wjw {wjw}\n\x20 szs-zjj {zjj}\n\x20 admin {admin}\n\n\
         Ctrl-C stops the demo.\n",
        scjg = tokens.departments[0].1,
        wjw = tokens.departments[1].1,
        zjj = tokens.departments[2].1,
        adapter = tokens.adapter,
    );
    tokio::select! {
        r = gateway => r?,
        r = simulate(&base, &tokens, None) => r,
    }
}
