//! Routing, claims, feedback, webhooks, the monthly report and the ledger rebuild, from the
//! outside: the real binary on the embedded bus, department and admin tokens.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use shenguan::ledger::store::LedgerStore;

const JSON: &str = "application/json";

/// A gateway with its own configuration file (fast tracker and delivery).
async fn gateway(dir: &std::path::Path, catalog: Option<&str>, env: &[(&str, &str)]) -> Gateway {
    let mut config = String::from("[tracker]\ninterval_seconds = 1\n[delivery]\ninterval_ms = 50\ninitial_backoff_ms = 50\nmax_backoff_ms = 200\nmax_attempts = 3\ntimeout_ms = 2000\n");
    if let Some(c) = catalog {
        let path = dir.join("routing.yaml");
        std::fs::write(&path, c).unwrap();
        config = format!("catalog_file = {path:?}\n{config}");
    }
    let file = dir.join("shenguan.toml");
    std::fs::write(&file, config).unwrap();
    for (k, v) in env {
        // The child inherits the test process environment.
        std::env::set_var(k, v);
    }
    Gateway::start(
        &dir.join("data"),
        &["--config", &file.display().to_string()],
    )
    .await
}

async fn call(
    gw: &Gateway,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = match method {
        "GET" => gw.client.get(gw.url(path)),
        _ => gw.client.post(gw.url(path)),
    }
    .bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn wait_for<F: Fn(&Value) -> bool>(gw: &Gateway, path: &str, token: &str, ok: F) -> Value {
    for _ in 0..100 {
        let (status, body) = call(gw, "GET", path, token, None).await;
        if status == 200 && ok(&body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never reached the expected state:\n{}", gw.logs());
}

#[tokio::test]
async fn a_department_sees_and_claims_only_what_was_routed_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), None, &[]).await;
    let ingest = gw.token("adapter", "nx-zwfw-approval");
    let scjg = gw.token("department", "szs-scjg");
    let wjw = gw.token("department", "szs-wjw");
    let admin = gw.token("admin", "");

    let (status, body) = gw
        .ingest(
            "nx-zwfw-approval",
            &ingest,
            JSON,
            fixture("01-company.json"),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["accepted"][0]["id"].as_str().unwrap().to_string();

    // 食品经营许可 → 市场监管局.
    let inbox = wait_for(&gw, "/v1/inbox?status=unclaimed", &scjg, |b| {
        b["count"] == 1
    })
    .await;
    let rec = &inbox["records"][0];
    assert_eq!(rec["id"], id.as_str());
    assert_eq!(rec["entry"]["state"], "pushed");
    assert_eq!(rec["entry"]["claim_rule"], "claim_approval");
    assert!(rec["entry"]["claim_due_at"]
        .as_str()
        .unwrap()
        .ends_with("T23:59:59+08:00"));
    assert_eq!(
        rec["data"]["counterpart"]["name"],
        "宁夏塞上人家餐饮管理有限公司"
    );

    // Another department sees nothing and may do nothing with it.
    let (_, other_inbox) = call(&gw, "GET", "/v1/inbox", &wjw, None).await;
    assert_eq!(other_inbox["count"], 0);
    for (method, path, body) in [
        ("GET", format!("/v1/records/{id}"), None),
        ("POST", format!("/v1/records/{id}/claim"), None),
        (
            "POST",
            format!("/v1/records/{id}/return"),
            Some(json!({"reason": "不是我们的"})),
        ),
        (
            "POST",
            format!("/v1/records/{id}/feedback"),
            Some(json!({"feedback_type": "supervision_started"})),
        ),
    ] {
        let (status, problem) = call(&gw, method, &path, &wjw, body).await;
        assert_eq!(status, 403, "{method} {path}: {problem}");
        assert_eq!(problem["type"], "urn:shenguan:problem:forbidden");
    }
    // Adapter tokens cannot use department endpoints; department tokens cannot ingest or read reports.
    assert_eq!(call(&gw, "GET", "/v1/inbox", &ingest, None).await.0, 403);
    assert_eq!(
        call(&gw, "GET", "/v1/reports/monthly?month=2026-01", &scjg, None)
            .await
            .0,
        403
    );
    assert_eq!(call(&gw, "GET", "/v1/unrouted", &scjg, None).await.0, 403);
    assert_eq!(
        call(&gw, "POST", "/v1/records/nope/claim", &scjg, None)
            .await
            .0,
        404
    );

    // The right department claims; a second claim is idempotent.
    let (status, claimed) = call(
        &gw,
        "POST",
        &format!("/v1/records/{id}/claim"),
        &scjg,
        Some(json!({"actor": "张科长"})),
    )
    .await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["entry"]["state"], "claimed");
    let first_claim = claimed["entry"]["claimed_at"].clone();
    let (status, again) = call(&gw, "POST", &format!("/v1/records/{id}/claim"), &scjg, None).await;
    assert_eq!(status, 200);
    assert_eq!(again["entry"]["claimed_at"], first_claim);

    // Feedback after the claim, validated against the schema.
    let (status, bad) = call(
        &gw,
        "POST",
        &format!("/v1/records/{id}/feedback"),
        &scjg,
        Some(json!({"feedback_type": "whatever"})),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    let (status, fed) = call(
        &gw,
        "POST",
        &format!("/v1/records/{id}/feedback"),
        &scjg,
        Some(json!({"feedback_type": "supervision_started", "content": "已纳入双随机抽查名录"})),
    )
    .await;
    assert_eq!(status, 200, "{fed}");
    assert_eq!(fed["entry"]["state"], "feedback");

    // The history tells who did what.
    let (_, record) = call(&gw, "GET", &format!("/v1/records/{id}"), &scjg, None).await;
    let actions: Vec<&str> = record["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    // The fixture's decision is from January: its push is late, and the ledger says so.
    assert_eq!(
        actions,
        ["published", "late_push", "routed", "claim", "feedback"],
        "{record}"
    );
    assert_eq!(record["push_late"], true);
    assert_eq!(record["history"][3]["actor"], "张科长");

    // Claims and feedback are events on the bus, like everything the ledger knows.
    let claims = embedded_topic(&gw.data_dir, "shenguan.claim.v1").await;
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0]["data"]["department"], "szs-scjg");
    assert_eq!(claims[0]["_key"], id.as_str());
    assert_eq!(
        embedded_topic(&gw.data_dir, "shenguan.feedback.v1")
            .await
            .len(),
        1
    );

    // The admin sees every entry; the claim latency is on /metrics.
    let (status, full) = call(&gw, "GET", &format!("/v1/records/{id}"), &admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(full["entries"].as_array().unwrap().len(), 1);
    let metrics = gw
        .client
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"shenguan_claim_latency_seconds_count{department="szs-scjg",kind="approval"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"shenguan_push_latency_seconds_count{adapter="nx-zwfw-approval",kind="approval"} 1"#
    ));
}

#[tokio::test]
async fn unrouted_records_wait_visibly_and_an_admin_routes_them() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), None, &[]).await;
    let ingest = gw.token("adapter", "nx-zwfw-approval");
    let admin = gw.token("admin", "");
    let scjg = gw.token("department", "szs-scjg");
    // The second record of the batch names an item that is not in the catalog.
    let (_, body) = gw
        .ingest("nx-zwfw-approval", &ingest, JSON, fixture("02-batch.json"))
        .await;
    let lost = body["accepted"][1]["id"].as_str().unwrap().to_string();
    let unrouted = wait_for(&gw, "/v1/unrouted", &admin, |b| b["count"] == 1).await;
    assert_eq!(unrouted["records"][0]["id"], lost.as_str());
    assert!(unrouted["records"][0]["unrouted"]
        .as_str()
        .unwrap()
        .contains("食品经营许可（告知承诺）"));
    let metrics = loop {
        let m = gw
            .client
            .get(gw.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if m.contains(r#"shenguan_unrouted_records{kind="approval"} 1"#) {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        metrics.contains(r#"shenguan_unclaimed_records{department="szs-wjw",kind="approval"} 1"#),
        "{metrics}"
    );

    let (status, problem) = call(
        &gw,
        "POST",
        &format!("/v1/records/{lost}/route"),
        &admin,
        Some(json!({"departments": ["nobody"]})),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    let (status, routed) = call(
        &gw,
        "POST",
        &format!("/v1/records/{lost}/route"),
        &admin,
        Some(json!({"departments": ["szs-scjg"], "actor": "平台管理员"})),
    )
    .await;
    assert_eq!(status, 200, "{routed}");
    assert_eq!(routed["unrouted"], Value::Null);
    assert_eq!(routed["entries"][0]["department"], "szs-scjg");
    let (_, unrouted) = call(&gw, "GET", "/v1/unrouted", &admin, None).await;
    assert_eq!(unrouted["count"], 0);

    // The department returns it as 非本部门: back to the unrouted queue, with the reason.
    let (status, _) = call(
        &gw,
        "POST",
        &format!("/v1/records/{lost}/return"),
        &scjg,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 400, "a return needs a reason");
    let (status, returned) = call(
        &gw,
        "POST",
        &format!("/v1/records/{lost}/return"),
        &scjg,
        Some(json!({"reason": "餐饮告知承诺事项由区局监管"})),
    )
    .await;
    assert_eq!(status, 200, "{returned}");
    assert_eq!(returned["entry"]["state"], "returned");
    let (_, unrouted) = call(&gw, "GET", "/v1/unrouted", &admin, None).await;
    assert!(unrouted["records"][0]["unrouted"]
        .as_str()
        .unwrap()
        .contains("餐饮告知承诺事项由区局监管"));
    let (status, _) = call(
        &gw,
        "POST",
        &format!("/v1/records/{lost}/claim"),
        &scjg,
        None,
    )
    .await;
    assert_eq!(status, 409, "a returned record cannot be claimed");
}

#[tokio::test]
async fn the_monthly_report_is_served_as_json_and_excel_safe_csv() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), None, &[]).await;
    let ingest = gw.token("adapter", "nx-zwfw-approval");
    let admin = gw.token("admin", "");
    let scjg = gw.token("department", "szs-scjg");
    let (_, body) = gw
        .ingest(
            "nx-zwfw-approval",
            &ingest,
            JSON,
            fixture("01-company.json"),
        )
        .await;
    let id = body["accepted"][0]["id"].as_str().unwrap().to_string();
    wait_for(&gw, "/v1/inbox", &scjg, |b| b["count"] == 1).await;
    call(&gw, "POST", &format!("/v1/records/{id}/claim"), &scjg, None).await;
    let month = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .format("%Y-%m")
        .to_string();
    let (status, report) = call(
        &gw,
        "GET",
        &format!("/v1/reports/monthly?month={month}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    let line = &report["lines"][0];
    assert_eq!(line["department"], "szs-scjg");
    assert_eq!(line["pushed"], 1);
    assert_eq!(line["claimed"], 1);
    assert_eq!(line["claimed_on_time"], 1);
    assert_eq!(line["on_time_rate"], 1.0);
    let csv = gw
        .client
        .get(gw.url(&format!("/v1/reports/monthly?month={month}")))
        .bearer_auth(&admin)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.unwrap();
    assert!(
        text.starts_with("\u{FEFF}month,department,kind,pushed"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{month},szs-scjg,approval,1,1,1,0,0,0,1,")),
        "{text}"
    );
    let (status, _) = call(
        &gw,
        "GET",
        "/v1/reports/monthly?month=2026-13",
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 400);

    // The same report from the command line.
    let data = gw.data_dir.display().to_string();
    let out = shenguan(&[
        "report",
        "--month",
        &month,
        "--data-dir",
        &data,
        "--format",
        "csv",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains(&format!("{month},szs-scjg,approval,1,1,1,0,0,0,1,")));
    let out = shenguan(&["report", "--month", &month, "--data-dir", &data]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("szs-scjg"));
}

/// Deliveries a receiver saw: (signature header, body).
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A department system receiving webhooks: records every delivery, answers with `status`.
async fn receiver(status: u16) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let seen = seen2.clone();
                async move {
                    let sig = headers
                        .get("x-shenguan-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    seen.lock().unwrap().push((sig, body.to_vec()));
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn catalog_with_webhook(url: &str, env: &str) -> String {
    let text = std::fs::read_to_string(repo().join("catalog/routing.yaml")).unwrap();
    text.replace(
        "  - code: szs-scjg\n    name: 石嘴山市市场监督管理局\n",
        &format!("  - code: szs-scjg\n    name: 石嘴山市市场监督管理局\n    webhook: {{ url: \"{url}\", secret_env: {env} }}\n"),
    )
}

#[tokio::test]
async fn signed_webhooks_deliver_records_to_department_systems() {
    let (url, seen) = receiver(200).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(
        dir.path(),
        Some(&catalog_with_webhook(&url, "TEST_HOOK_SECRET_OK")),
        &[("TEST_HOOK_SECRET_OK", "s3cret-ok")],
    )
    .await;
    let ingest = gw.token("adapter", "nx-zwfw-approval");
    let scjg = gw.token("department", "szs-scjg");
    let (_, body) = gw
        .ingest(
            "nx-zwfw-approval",
            &ingest,
            JSON,
            fixture("01-company.json"),
        )
        .await;
    let id = body["accepted"][0]["id"].as_str().unwrap().to_string();
    let inbox = wait_for(&gw, "/v1/inbox", &scjg, |b| {
        b["records"][0]["entry"]["state"] == "delivered"
    })
    .await;
    assert!(inbox["records"][0]["entry"]["delivered_at"].is_string());
    let deliveries = seen.lock().unwrap().clone();
    assert_eq!(deliveries.len(), 1, "delivered once");
    let (signature, payload) = &deliveries[0];
    assert!(
        shenguan::deliver::verify(b"s3cret-ok", signature, payload),
        "{signature}"
    );
    assert!(!shenguan::deliver::verify(b"wrong", signature, payload));
    let event: Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(event["subject"], id.as_str());
    assert_eq!(event["type"], "cn.shenguan.approval.v1");
    let metrics = gw
        .client
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains(r#"shenguan_delivery_attempts_total{department="szs-scjg",outcome="ok"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_failing_webhook_is_retried_with_backoff_then_dead_lettered() {
    let (url, seen) = receiver(500).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(
        dir.path(),
        Some(&catalog_with_webhook(&url, "TEST_HOOK_SECRET_500")),
        &[("TEST_HOOK_SECRET_500", "s3cret-500")],
    )
    .await;
    let ingest = gw.token("adapter", "nx-zwfw-approval");
    gw.ingest(
        "nx-zwfw-approval",
        &ingest,
        JSON,
        fixture("01-company.json"),
    )
    .await;
    let mut dlq = Vec::new();
    for _ in 0..100 {
        dlq = embedded_topic(&gw.data_dir, "shenguan.dlq.v1").await;
        if !dlq.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dlq.len(), 1, "{}", gw.logs());
    assert_eq!(dlq[0]["data"]["stage"], "deliver");
    assert_eq!(dlq[0]["data"]["reason"], "webhook_failed");
    assert!(dlq[0]["data"]["errors"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("failed 3 times"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        seen.lock().unwrap().len(),
        3,
        "max_attempts = 3, then no more"
    );
    let metrics = gw
        .client
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"shenguan_delivery_attempts_total{department="szs-scjg",outcome="failed"} 2"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"shenguan_delivery_attempts_total{department="szs-scjg",outcome="dead_lettered"} 1"#
    ));
}

#[tokio::test]
async fn a_rebuilt_ledger_equals_the_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = gateway(dir.path(), None, &[]).await;
    let ingest = gw.token("adapter", "nx-zwfw-approval");
    let scjg = gw.token("department", "szs-scjg");
    let wjw = gw.token("department", "szs-wjw");
    gw.ingest("nx-zwfw-approval", &ingest, JSON, fixture("02-batch.json"))
        .await;
    let (_, body) = gw
        .ingest(
            "nx-zwfw-approval",
            &ingest,
            JSON,
            fixture("01-company.json"),
        )
        .await;
    let id = body["accepted"][0]["id"].as_str().unwrap().to_string();
    wait_for(&gw, "/v1/inbox", &scjg, |b| b["count"] == 1).await;
    call(&gw, "POST", &format!("/v1/records/{id}/claim"), &scjg, None).await;
    let inbox = wait_for(&gw, "/v1/inbox", &wjw, |b| b["count"] == 1).await;
    let other = inbox["records"][0]["id"].as_str().unwrap().to_string();
    call(
        &gw,
        "POST",
        &format!("/v1/records/{other}/return"),
        &wjw,
        Some(json!({"reason": "非本部门"})),
    )
    .await;
    gw.stop();

    let ledger_db = gw.data_dir.join("ledger.db");
    let live = shenguan::ledger::sqlite::SqliteLedger::open(&ledger_db)
        .unwrap()
        .snapshot()
        .await
        .unwrap();
    assert!(live.len() > 10);
    let config = dir.path().join("shenguan.toml").display().to_string();
    let data = gw.data_dir.display().to_string();
    let out = shenguan(&[
        "ledger",
        "rebuild",
        "--config",
        &config,
        "--data-dir",
        &data,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ledger rebuilt from 5 messages"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rebuilt = shenguan::ledger::sqlite::SqliteLedger::open(&ledger_db)
        .unwrap()
        .snapshot()
        .await
        .unwrap();
    assert_eq!(rebuilt, live);
}

#[test]
fn calendar_add_prints_the_nth_working_day() {
    let run = |d: &str, n: &str| {
        let out = shenguan(&["calendar", "add", d, n]);
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    assert_eq!(
        run("2026-09-30", "1"),
        (true, "2026-10-08\n".into(), String::new())
    );
    assert_eq!(
        run("2026-02-13", "1"),
        (true, "2026-02-14\n".into(), String::new())
    );
    assert_eq!(
        run("2026-02-13", "0"),
        (true, "2026-02-13\n".into(), String::new())
    );
    assert_eq!(run("2025-09-30", "1").1, "2025-10-09\n");
    let (ok, out, err) = run("2026-12-31", "1");
    assert!(!ok && out.is_empty() && err.contains("2027"), "{err}");
    // A site adds 2027 without a rebuild.
    let dir = tempfile::tempdir().unwrap();
    let years = dir.path().join("calendar");
    std::fs::create_dir(&years).unwrap();
    std::fs::write(
        years.join("2027.toml"),
        "year = 2027\nnotice = \"国务院办公厅关于2027年部分节假日安排的通知\"\noff = [{ date = 2027-01-01, holiday = \"元旦\" }]\nwork = []\n",
    )
    .unwrap();
    let config = dir.path().join("shenguan.toml");
    std::fs::write(&config, format!("calendar_dir = {years:?}\n")).unwrap();
    let out = shenguan(&[
        "calendar",
        "add",
        "2026-12-31",
        "1",
        "--config",
        &config.display().to_string(),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2027-01-04\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn admins_issue_rotate_and_revoke_tokens_with_an_audit_trail() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), None, &[]).await;
    let admin = gw.token("admin", "");
    let scjg = gw.token("department", "szs-scjg");
    assert_eq!(
        call(&gw, "GET", "/v1/admin/tokens", &scjg, None).await.0,
        403
    );
    let (status, problem) = call(
        &gw,
        "POST",
        "/v1/admin/tokens",
        &admin,
        Some(json!({"role": "department", "subject": "nobody"})),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    let (status, issued) = call(
        &gw,
        "POST",
        "/v1/admin/tokens",
        &admin,
        Some(json!({"role": "department", "subject": "szs-wjw"})),
    )
    .await;
    assert_eq!(status, 201, "{issued}");
    let (first_id, first) = (
        issued["id"].as_str().unwrap().to_string(),
        issued["token"].as_str().unwrap().to_string(),
    );
    assert_eq!(call(&gw, "GET", "/v1/inbox", &first, None).await.0, 200);
    let (_, listed) = call(&gw, "GET", "/v1/admin/tokens", &admin, None).await;
    assert!(
        !listed.to_string().contains(&first),
        "a listing never shows a token"
    );
    // Rotation: a new token for the same department; the old one stops working.
    let url = format!("/v1/admin/tokens/{first_id}/rotate");
    let r = gw
        .client
        .post(gw.url(&url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let rotated: Value = r.json().await.unwrap();
    let second = rotated["token"].as_str().unwrap().to_string();
    assert_eq!(rotated["subject"], "szs-wjw");
    assert_eq!(call(&gw, "GET", "/v1/inbox", &second, None).await.0, 200);
    let mut old_status = 0;
    for _ in 0..80 {
        old_status = call(&gw, "GET", "/v1/inbox", &first, None).await.0;
        if old_status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(old_status, 401);
    // Revocation.
    let second_id = rotated["id"].as_str().unwrap();
    let r = gw
        .client
        .delete(gw.url(&format!("/v1/admin/tokens/{second_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = gw
        .client
        .delete(gw.url(&format!("/v1/admin/tokens/{second_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The audit trail records every step and cannot be changed through the API.
    let (_, audit) = call(&gw, "GET", "/v1/admin/audit", &admin, None).await;
    let actions: Vec<(String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let api = |a: &str| {
        actions
            .iter()
            .filter(|(x, actor)| x == a && actor == "api:admin")
            .count()
    };
    assert_eq!(api("token_issued"), 2, "{actions:?}");
    assert_eq!(api("token_revoked"), 2, "{actions:?}");
    assert!(actions
        .iter()
        .any(|(a, actor)| a == "token_issued" && actor == "cli"));
    let r = gw
        .client
        .delete(gw.url("/v1/admin/audit"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn each_token_is_rate_limited_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shenguan.toml");
    std::fs::write(&file, "[auth]\nrequests_per_second = 1.0\nburst = 3.0\n").unwrap();
    let gw = Gateway::start(
        &dir.path().join("data"),
        &["--config", &file.display().to_string()],
    )
    .await;
    let busy = gw.token("department", "szs-scjg");
    let quiet = gw.token("department", "szs-wjw");
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = gw
            .client
            .get(gw.url("/v1/inbox"))
            .bearer_auth(&busy)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
            assert_eq!(r.headers()["content-type"], "application/problem+json");
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "the burst passes");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    assert_eq!(
        call(&gw, "GET", "/v1/inbox", &quiet, None).await.0,
        200,
        "another token is not affected"
    );
}
