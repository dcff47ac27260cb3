//! The rules of the regulations as a user meets them on the running gateway: the README's
//! 告知承诺 walk-through run as written, the 双公示 export read back through the `nx-credit`
//! adapters, the fields a profile requires, a profile out of its period, and the monthly report
//! in Chinese.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// A gateway with a fast tracker, the shipped catalog and, if given, a policy profile.
async fn gateway(dir: &std::path::Path, policy: Option<&str>) -> (Gateway, std::path::PathBuf) {
    let mut config = "[tracker]\ninterval_seconds = 1\ndigest_at = \"\"\n".to_string();
    if let Some(p) = policy {
        config = format!("policy = \"{p}\"\n{config}");
    }
    let gw = Gateway::configured(dir, &config).await;
    (gw, dir.join("shenguan.toml"))
}

async fn get(gw: &Gateway, path: &str, token: &str) -> (u16, String) {
    let r = gw
        .client
        .get(gw.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The `sh` block after `<!-- walk-through: NAME -->` in the README, one command per entry
/// (continuation lines joined, comments left out).
fn walk_through(name: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let marker = format!("<!-- walk-through: {name} -->\n```sh\n");
    let start = readme
        .find(&marker)
        .expect("the walk-through is in the README")
        + marker.len();
    let block = &readme[start..start + readme[start..].find("\n```").unwrap()];
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if !line.ends_with('\\') {
            commands.push(std::mem::take(&mut current));
        }
    }
    commands
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_commitment_walk_through_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, config) = gateway(dir.path(), None).await;
    let bureau = gw.token("department", "szs-xzsp");
    let scjg = gw.token("department", "szs-scjg");
    let commands = walk_through("commitment");
    assert!(commands.len() >= 10, "{commands:?}");
    // Run as a person would: one command after the other, each after the last was applied.
    let mut script = String::from("set -e\n");
    for c in &commands {
        script.push_str(c);
        script.push_str("echo\nsleep 0.5\n");
    }
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(repo())
        .env("GW", gw.url(""))
        .env("BUREAU", &bureau)
        .env("SCJG", &scjg)
        .env("SHENGUAN_CONFIG", &config)
        .env("SHENGUAN_DATA_DIR", &gw.data_dir)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.logs()
    );
    let answers: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The approval and the failure were accepted, as the fixed ids say.
    assert_eq!(
        answers[0]["accepted"][0]["id"],
        "d7ad3e88-053a-5f8b-8b57-2a0e391de96a"
    );
    let failure = answers
        .iter()
        .find(|a| a["adapter"] == "nx-scjg-supervision")
        .unwrap();
    assert_eq!(failure["accepted"].as_array().unwrap().len(), 3);
    assert_eq!(
        failure["accepted"][0]["id"],
        "ec9a9d96-f772-56ab-a16c-6298069d9814"
    );
    let open = answers
        .iter()
        .find(|a| a.get("commitments").is_some())
        .unwrap();
    assert_eq!(open["commitments"][0]["open"]["rule"], "verify_commitment");
    // The decision reached 市场监管局 and it claimed it.
    let last = answers.last().unwrap();
    assert_eq!(last["id"], "ec9a9d96-f772-56ab-a16c-6298069d9814");
    assert_eq!(
        last["linked_record_id"],
        "d7ad3e88-053a-5f8b-8b57-2a0e391de96a"
    );
    assert_eq!(last["entry"]["department"], "szs-scjg");
    assert_eq!(last["entry"]["claim_rule"], "claim_decision");
    assert_eq!(last["entry"]["state"], "claimed");
    assert!(last["entry"]["note"].as_str().unwrap().contains("撤销许可"));
    let inbox = answers.iter().find(|a| a.get("records").is_some()).unwrap();
    assert!(inbox["records"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["id"] == "ec9a9d96-f772-56ab-a16c-6298069d9814"));

    // The month's 通报 in Chinese, with names next to codes and the decision flow.
    let month = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .format("%Y-%m")
        .to_string();
    let report = std::process::Command::new(BIN)
        .args(["report", "--month", &month])
        .current_dir(repo())
        .env("SHENGUAN_CONFIG", &config)
        .env("SHENGUAN_DATA_DIR", &gw.data_dir)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&report.stdout);
    assert!(report.status.success(), "{table}");
    assert!(table.contains("一、推送情况"), "{table}");
    assert!(
        table.contains("石嘴山市市场监督管理局（szs-scjg） | 监管信息 | 处理决定认领 | 1 | 1 |"),
        "{table}"
    );
    assert!(table.contains("注：推送侧按推送时间计入当月"), "{table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sgs_export_reads_back_through_the_credit_adapters_as_the_same_records() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, config) = gateway(dir.path(), None).await;
    let admin = gw.token("admin", "ops");
    let credit = std::path::Path::new("adapters/nx-credit/fixtures");
    let mut originals = Vec::new();
    for (adapter, file) in [
        ("nx-credit-xk", "nx-credit-xk/01-xk.csv"),
        ("nx-credit-cf", "nx-credit-cf/01-cf.csv"),
    ] {
        let token = gw.token("adapter", adapter);
        let body = std::fs::read(repo().join(credit).join(file)).unwrap();
        let (status, answer) = gw.ingest(adapter, &token, "text/csv", body.clone()).await;
        assert_eq!(status, 202, "{answer}");
        assert!(
            answer["rejected"].as_array().unwrap().is_empty(),
            "{answer}"
        );
        originals.push((adapter, body));
    }
    // The approval was decided in 2026-01, the penalty in 2025-12.
    let schemas = shenguan::schema::Schemas::load(Some(&repo().join("schemas"))).unwrap();
    let adapters = shenguan::adapter::AdapterSet::load(&repo().join("adapters"), &schemas).unwrap();
    let canonical = |adapter: &str, body: &[u8], format: shenguan::adapter::format::Format| {
        let a = adapters.get(adapter).unwrap();
        let at = chrono::DateTime::parse_from_rfc3339("2026-02-01T00:00:00+08:00").unwrap();
        let outcomes = shenguan::pipeline::process(
            &a,
            &schemas,
            body,
            Some(format),
            None,
            shenguan::pipeline::Unit::Body,
            at,
            100,
        )
        .unwrap();
        outcomes
            .into_iter()
            .map(|o| match o {
                shenguan::pipeline::Outcome::Accepted(c) => {
                    let mut event: Value = serde_json::from_slice(&c.event).unwrap();
                    event["data"].take()
                }
                shenguan::pipeline::Outcome::Rejected(r) => panic!("rejected: {:?}", r.errors),
            })
            .collect::<Vec<Value>>()
    };
    // The records of a month, by record id.
    let of_month = |mut records: Vec<Value>, month: &str| {
        records.retain(|r| {
            r["decided_at"]
                .as_str()
                .or(r["decision_date"].as_str())
                .is_some_and(|d| d.starts_with(month))
        });
        records.sort_by(|a, b| a["record_id"].as_str().cmp(&b["record_id"].as_str()));
        records
    };
    use shenguan::adapter::format::Format;
    for ((adapter, original), (kind, month)) in
        originals.iter().zip([("xk", "2026-01"), ("cf", "2025-12")])
    {
        let expected = of_month(canonical(adapter, original, Format::Csv), month);
        assert!(!expected.is_empty());
        for format in ["csv", "xlsx"] {
            let path = format!("/v1/exports/sgs?month={month}&kind={kind}&format={format}");
            let mut body = Vec::new();
            for _ in 0..100 {
                let r = gw
                    .client
                    .get(gw.url(&path))
                    .bearer_auth(&admin)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                body = r.bytes().await.unwrap().to_vec();
                if canonical(
                    adapter,
                    &body,
                    Format::from_media_type(if format == "csv" {
                        "text/csv"
                    } else {
                        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
                    })
                    .unwrap(),
                )
                .len()
                    == 1
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let fmt = if format == "csv" {
                Format::Csv
            } else {
                Format::Xlsx
            };
            assert_eq!(
                of_month(canonical(adapter, &body, fmt), month),
                expected,
                "{kind} as {format} reads back as the same canonical records"
            );
        }
    }
    // The CLI writes the same file; a department sees only its own, an unknown one is refused.
    let out_file = dir.path().join("xk.xlsx");
    let out = std::process::Command::new(BIN)
        .args([
            "export",
            "sgs",
            "--month",
            "2026-01",
            "--kind",
            "xk",
            "--format",
            "xlsx",
            "--department",
            "szs-scjg",
            "-o",
        ])
        .arg(&out_file)
        .current_dir(repo())
        .env("SHENGUAN_CONFIG", &config)
        .env("SHENGUAN_DATA_DIR", &gw.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xlsx = std::fs::read(&out_file).unwrap();
    let scjg_records: Vec<Value> = of_month(
        canonical("nx-credit-xk", &originals[0].1, Format::Csv),
        "2026-01",
    )
    .into_iter()
    .filter(|r| r["item"]["name"] == "食品经营许可")
    .collect();
    assert!(!scjg_records.is_empty());
    assert_eq!(
        of_month(canonical("nx-credit-xk", &xlsx, Format::Xlsx), "2026-01"),
        scjg_records,
        "szs-scjg's: the 食品经营许可 routed to it"
    );
    let (status, body) = get(
        &gw,
        "/v1/exports/sgs?month=2026-01&kind=xk&department=szs-wjw",
        &admin,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body.trim_start_matches('\u{feff}').lines().count(),
        1,
        "only the header: {body}"
    );
    let (status, body) = get(&gw, "/v1/exports/sgs?month=2026-01&kind=zz", &admin).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("xk (行政许可)"), "{body}");
    let scjg = gw.token("department", "szs-scjg");
    let (status, _) = get(&gw, "/v1/exports/sgs?month=2026-01&kind=xk", &scjg).await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn under_jining_an_approval_without_contact_and_address_goes_to_the_dlq() {
    // 济宁 第二十条（二）: 联系方式、地址 are required. The 政务服务网 fixture 16 has a phone and no
    // address.
    let dir = tempfile::tempdir().unwrap();
    let (gw, config) = gateway(dir.path(), Some("jining-2022")).await;
    let token = gw.token("adapter", "nx-zwfw-approval");
    let (status, answer) = gw
        .ingest(
            "nx-zwfw-approval",
            &token,
            "application/json",
            fixture("16-fullwidth.json"),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    assert!(
        answer["accepted"].as_array().unwrap().is_empty(),
        "{answer}"
    );
    let rejected = &answer["rejected"][0];
    assert_eq!(rejected["reason"], "required_by_policy");
    assert_eq!(rejected["stage"], "validate");
    assert_eq!(rejected["errors"][0]["path"], "/counterpart/address");
    assert_eq!(
        rejected["errors"][0]["reason"],
        "地址 counterpart.address is required under policy jining-2022 (济宁 2022 第二十条（二）); the record has none"
    );
    // A complete record passes.
    let (_, answer) = gw
        .ingest(
            "nx-zwfw-approval",
            &token,
            "application/json",
            fixture("01-company.json"),
        )
        .await;
    assert_eq!(answer["accepted"].as_array().unwrap().len(), 1, "{answer}");
    // The DLQ keeps it with the reason.
    let out = std::process::Command::new(BIN)
        .args(["dlq", "list"])
        .current_dir(repo())
        .env("SHENGUAN_CONFIG", &config)
        .env("SHENGUAN_DATA_DIR", &gw.data_dir)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("required_by_policy"), "{list}");

    // Under the shipped profile (generic: 石嘴山 and 安康 list no fields) the same record passes.
    let dir = tempfile::tempdir().unwrap();
    let (gw, _) = gateway(dir.path(), None).await;
    let token = gw.token("adapter", "nx-zwfw-approval");
    let (_, answer) = gw
        .ingest(
            "nx-zwfw-approval",
            &token,
            "application/json",
            fixture("16-fullwidth.json"),
        )
        .await;
    assert_eq!(answer["accepted"].as_array().unwrap().len(), 1, "{answer}");
}

/// `/readyz` once the instance has started: a moment after it answers, its de-duplication table
/// is still catching up with the bus (503), which is not what these tests look at.
async fn readyz(gw: &Gateway) -> (u16, String) {
    for _ in 0..100 {
        let (status, body) = get(gw, "/readyz", "").await;
        if !(status == 503 && body.contains("catching up")) {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the de-duplication table did not catch up with an empty bus in 5 s")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_profile_out_of_its_period_shows_on_readyz_metrics_and_the_log() {
    // 济宁 第三十七条: in force until 2024-12-09.
    let dir = tempfile::tempdir().unwrap();
    let (gw, _) = gateway(dir.path(), Some("jining-2022")).await;
    let (status, body) = readyz(&gw).await;
    assert_eq!(status, 200, "still ready: {body}");
    assert!(
        body.contains("policy_out_of_period: jining-2022 is in force 2022-12-10 to 2024-12-09 (济宁 2022 第三十七条)"),
        "{body}"
    );
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = get(&gw, "/metrics", "").await.1;
        if metrics.contains("shenguan_policy_out_of_period{policy=\"jining-2022\"} 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics.contains("shenguan_policy_out_of_period{policy=\"jining-2022\"} 1"),
        "{metrics}"
    );
    assert!(
        gw.logs().contains("outside the period it is in force"),
        "{}",
        gw.logs()
    );

    // The shipped profile has no period: ready, and the gauge at 0.
    let dir = tempfile::tempdir().unwrap();
    let (gw, _) = gateway(dir.path(), None).await;
    let (status, readyz) = readyz(&gw).await;
    assert_eq!(status, 200, "{readyz}");
    assert!(readyz.starts_with("ready\n"), "{readyz}");
    assert!(!readyz.contains("policy_out_of_period"), "{readyz}");
    for _ in 0..50 {
        metrics = get(&gw, "/metrics", "").await.1;
        if metrics.contains("shenguan_policy_out_of_period{policy=\"generic\"} 0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics.contains("shenguan_policy_out_of_period{policy=\"generic\"} 0"),
        "{metrics}"
    );
}
