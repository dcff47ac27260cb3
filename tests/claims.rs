//! Routing, claims, feedback, webhooks, the monthly report and the ledger rebuild, from the
//! outside: the real binary on the embedded bus, department and admin tokens.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const JSON: &str = "application/json";

/// A gateway with its own configuration file (fast tracker and delivery, no daily digest).
async fn gateway(dir: &std::path::Path, catalog: Option<&str>, env: &[(&str, &str)]) -> Gateway {
    gateway_with_digest(dir, catalog, env, "").await
}

/// A gateway whose daily digest goes out from `digest_at` (empty: never).
async fn gateway_with_digest(
    dir: &std::path::Path,
    catalog: Option<&str>,
    env: &[(&str, &str)],
    digest_at: &str,
) -> Gateway {
    let mut config = format!("[tracker]\ninterval_seconds = 1\ndigest_at = \"{digest_at}\"\n[delivery]\ninterval_ms = 50\ninitial_backoff_ms = 50\nmax_backoff_ms = 200\nmax_attempts = 3\ntimeout_ms = 2000\n");
    if let Some(c) = catalog {
        let path = dir.join("routing.yaml");
        std::fs::write(&path, c).unwrap();
        config = format!("catalog_file = {path:?}\n{config}");
    }
    for (k, v) in env {
        // The child inherits the test process environment.
        std::env::set_var(k, v);
    }
    Gateway::configured(dir, &config).await
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
        "PUT" => gw.client.put(gw.url(path)),
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
    // One line for the burst, by kind and reason, with the count and the first record.
    let logs = regex::Regex::new("\x1b\\[[0-9;]*m")
        .unwrap()
        .replace_all(&gw.logs(), "")
        .into_owned();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("records wait unrouted"))
        .collect();
    assert_eq!(lines.len(), 1, "{logs}");
    assert!(
        lines[0].contains(&lost) && lines[0].contains("count=1") && lines[0].contains("approval"),
        "{}",
        lines[0]
    );
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
    let line = &report["claims"][0];
    assert_eq!(line["department"], "szs-scjg");
    assert_eq!(line["department_name"], "石嘴山市市场监督管理局");
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
        text.starts_with("\u{FEFF}月份,方向,单位代码,单位名称,信息类别,流程,推送数"),
        "{text}"
    );
    let row =
        format!("{month},认领,szs-scjg,石嘴山市市场监督管理局,审批信息,认领,1,1,1,0,0,0,0,0,100%,");
    assert!(text.contains(&row), "{text}");
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
    assert!(String::from_utf8_lossy(&out.stdout).contains(&row));
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
    let ledger_url = format!("sqlite:{}", ledger_db.display());
    let live = common::ledger_snapshot(&ledger_url).await;
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
    let rebuilt = common::ledger_snapshot(&ledger_url).await;
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
    let gw = Gateway::configured(
        dir.path(),
        "[auth]\nrequests_per_second = 1.0\nburst = 3.0\n",
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

#[tokio::test]
async fn inquiries_are_sent_answered_and_listed_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), None, &[]).await;
    let bureau = gw.token("department", "szs-xzsp");
    let scjg = gw.token("department", "szs-scjg");
    let wjw = gw.token("department", "szs-wjw");
    let zjj = gw.token("department", "szs-zjj");
    let letter = json!({
        "to": ["szs-scjg", "szs-wjw"], "title": "关于食品经营许可现场核查标准的函询",
        "subject_type": "行政许可事项办理标准", "question": "现场核查是否按2026版标准执行？",
        "reply_within_working_days": 3, "document_no": "石审服函〔2026〕8号",
    });
    let (status, body) = call(&gw, "POST", "/v1/inquiries", &bureau, Some(letter.clone())).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(body["data"]["notice_type"], "业务函询");
    assert_eq!(body["entries"].as_array().unwrap().len(), 2);
    assert_eq!(body["entries"][0]["claim_rule"], "reply_inquiry");
    assert!(body["entries"][0]["claim_due_at"].is_string());
    // The same letter number again is the same inquiry.
    let (status, again) = call(&gw, "POST", "/v1/inquiries", &bureau, Some(letter)).await;
    assert_eq!((status, again["id"].as_str()), (200, Some(id.as_str())));
    // Unknown receivers and adapters are refused.
    let (status, _) = call(
        &gw,
        "POST",
        "/v1/inquiries",
        &bureau,
        Some(json!({"to": ["nobody"], "title": "x", "subject_type": "政策", "question": "?"})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = call(
        &gw,
        "POST",
        "/v1/inquiries",
        &gw.token("adapter", "nx-zwfw-approval"),
        Some(json!({"to": ["szs-scjg"], "title": "x", "subject_type": "政策", "question": "?"})),
    )
    .await;
    assert_eq!(status, 403);

    let (_, open) = call(&gw, "GET", "/v1/inquiries", &scjg, None).await;
    assert_eq!(open["count"], 1, "{open}");
    assert_eq!(open["inquiries"][0]["open"]["rule"], "reply_inquiry");
    // Only a receiver answers; the gateway alone records a lapse.
    let reply = json!({"feedback_type": "reply", "content": "按2026版标准执行", "agreed": true});
    let (status, _) = call(
        &gw,
        "POST",
        &format!("/v1/records/{id}/feedback"),
        &zjj,
        Some(reply.clone()),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &gw,
        "POST",
        &format!("/v1/records/{id}/feedback"),
        &wjw,
        Some(json!({"feedback_type": "deemed_agreed"})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = call(
        &gw,
        "POST",
        &format!("/v1/records/{id}/feedback"),
        &scjg,
        Some(reply.clone()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entry"]["state"], "closed");
    assert_eq!(body["entry"]["outcome"], "replied");
    let (status, _) = call(
        &gw,
        "POST",
        &format!("/v1/records/{id}/feedback"),
        &scjg,
        Some(reply),
    )
    .await;
    assert_eq!(status, 409, "answered once");
    let (_, open) = call(&gw, "GET", "/v1/inquiries", &scjg, None).await;
    assert_eq!(open["count"], 0);
    // The sender follows every receiver.
    let (_, view) = call(&gw, "GET", &format!("/v1/records/{id}"), &bureau, None).await;
    let states: Vec<&str> = view["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["closed", "pushed"]);
}

#[tokio::test]
async fn joint_inspections_are_announced_by_the_bureau_confirmed_and_signed_off() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), None, &[]).await;
    let admin = gw.token("admin", "");
    let scjg = gw.token("department", "szs-scjg");
    let wjw = gw.token("department", "szs-wjw");
    let notice = json!({
        "to": ["szs-scjg", "szs-wjw"], "title": "食品生产许可联合现场核查通知", "mode": "联合踏勘评审",
        "scheduled_at": "2026-12-15T09:00:00+08:00", "location": "石嘴山市大武口区工业园区8号",
        "matter": "宁夏某食品有限公司 食品生产许可 现场核查",
    });
    let (status, _) = call(&gw, "POST", "/v1/inspections", &scjg, Some(notice.clone())).await;
    assert_eq!(status, 403, "only the bureau announces inspections");
    let (status, body) = call(&gw, "POST", "/v1/inspections", &admin, Some(notice)).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(body["push_rule"], "inspection_notice");
    assert_eq!(body["push_late"], false);
    assert_eq!(
        body["entries"][0]["claim_due_at"],
        "2026-12-15T09:00:00+08:00"
    );
    assert_eq!(
        body["entries"][0]["feedback_due_at"],
        "2026-12-18T23:59:59+08:00"
    );

    let feedback = |kind: &str| format!("/v1/records/{id}/feedback").replace("{kind}", kind);
    let (status, _) = call(
        &gw,
        "POST",
        &feedback(""),
        &scjg,
        Some(json!({"feedback_type": "inspection_result", "content": "符合"})),
    )
    .await;
    assert_eq!(status, 409, "confirm attendance first");
    let (status, body) = call(
        &gw,
        "POST",
        &feedback(""),
        &scjg,
        Some(
            json!({"feedback_type": "inspection_attendance", "attendees": ["李某 食品生产监管科"]}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["entry"]["state"].as_str(),
            body["entry"]["outcome"].as_str()
        ),
        (Some("claimed"), Some("attending"))
    );
    let (_, open) = call(&gw, "GET", "/v1/inspections", &scjg, None).await;
    assert_eq!(open["inspections"][0]["open"]["rule"], "inspection_signoff");
    let (status, body) = call(&gw, "POST", &feedback(""), &scjg, Some(json!({"feedback_type": "inspection_result", "content": "现场核查符合要求，已签字确认"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entry"]["outcome"], "signed_off");
    // The department that has not confirmed still sees it open, with its deadline.
    let (_, open) = call(&gw, "GET", "/v1/inspections", &wjw, None).await;
    assert_eq!(
        (
            open["count"].as_u64(),
            open["inspections"][0]["open"]["rule"].as_str()
        ),
        (Some(1), Some("confirm_inspection"))
    );
    let (_, all) = call(&gw, "GET", "/v1/inspections", &admin, None).await;
    assert_eq!(all["count"], 1);
}

#[tokio::test]
async fn a_department_forwards_a_record_to_its_upper_level_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), None, &[]).await;
    let ingest = gw.token("adapter", "nx-zwfw-approval");
    let scjg = gw.token("department", "szs-scjg");
    let nx = gw.token("department", "nx-scjg");
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
    let path = format!("/v1/records/{id}/forward");
    let (status, _) = call(&gw, "POST", &path, &scjg, Some(json!({}))).await;
    assert_eq!(status, 400, "a reason is required");
    let (status, _) = call(
        &gw,
        "POST",
        &path,
        &scjg,
        Some(json!({"to": "szs-scjg", "reason": "x"})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = call(
        &gw,
        "POST",
        &path,
        &nx,
        Some(json!({"to": "szs-wjw", "reason": "x"})),
    )
    .await;
    assert_eq!(status, 403, "not routed to nx-scjg yet");
    let (status, _) = call(&gw, "POST", &path, &nx, Some(json!({"reason": "x"}))).await;
    assert_eq!(
        status, 403,
        "not routed to nx-scjg yet, whatever else the request says"
    );
    // No `to`: the upper-level department from the catalog.
    let (status, body) = call(
        &gw,
        "POST",
        &path,
        &scjg,
        Some(json!({"reason": "涉及跨市经营，属自治区监管事项", "actor": "张三"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entry"]["state"], "forwarded");
    let inbox = wait_for(&gw, "/v1/inbox?status=unclaimed", &nx, |b| b["count"] == 1).await;
    assert_eq!(inbox["records"][0]["id"], id.as_str());
    let (status, _) = call(&gw, "POST", &format!("/v1/records/{id}/claim"), &scjg, None).await;
    assert_eq!(status, 409, "the forwarder cannot claim it any more");
    let (status, _) = call(&gw, "POST", &format!("/v1/records/{id}/claim"), &nx, None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&gw, "POST", &path, &nx, Some(json!({"reason": "x"}))).await;
    assert_eq!(status, 400, "nx-scjg has no upper level in the catalog");
    let (_, view) = call(
        &gw,
        "GET",
        &format!("/v1/records/{id}"),
        &gw.token("admin", ""),
        None,
    )
    .await;
    let actions: Vec<&str> = view["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert!(
        actions
            .windows(2)
            .any(|w| w == ["forwarded", "forwarded_in"]),
        "{actions:?}"
    );
}

/// An approval decided on 2026-11-02 and pushed by letter that afternoon: the shipped fixture's
/// canonical record without the fields the gateway sets.
fn offline_approval(commitment: Value) -> Value {
    let expected: Value = serde_json::from_slice(&fixture("01-company.expected.json")).unwrap();
    let mut record = expected[0]["accepted"].clone();
    for k in ["record_id", "kind", "source"] {
        record.as_object_mut().unwrap().remove(k);
    }
    record["decided_at"] = json!("2026-11-02T09:00:00+08:00");
    record["commitment"] = commitment;
    json!({
        "kind": "approval", "channel": "书面公函", "document_ref": "石审管函〔2026〕15号",
        "pushed_at": "2026-11-02T15:00:00+08:00", "recorded_by": "审管联动科 王五",
        "record": record,
    })
}

#[tokio::test]
async fn offline_pushes_and_claims_are_entered_by_an_admin_with_their_references() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), None, &[]).await;
    let admin = gw.token("admin", "");
    let scjg = gw.token("department", "szs-scjg");
    let push = offline_approval(json!({"is_commitment": false}));
    let (status, _) = call(&gw, "POST", "/v1/offline-pushes", &scjg, Some(push.clone())).await;
    assert_eq!(status, 403);
    let (status, body) = call(&gw, "POST", "/v1/offline-pushes", &admin, Some(push)).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(body["data"]["offline_push"]["channel"], "书面公函");
    let entry = &body["entries"][0];
    assert_eq!(
        (entry["department"].as_str(), entry["via"].as_str()),
        (Some("szs-scjg"), Some("书面公函"))
    );
    assert_eq!(entry["pushed_at"], "2026-11-02T15:00:00+08:00");
    // An invalid record is refused with the schema's reason.
    let (status, body) = call(&gw, "POST", "/v1/offline-pushes", &admin, Some(json!({"kind": "approval", "channel": "电话", "document_ref": "x", "pushed_at": "2026-11-02T15:00:00+08:00", "record": {}}))).await;
    assert_eq!(status, 400, "{body}");

    let claim = format!("/v1/records/{id}/claim");
    let (status, _) = call(
        &gw,
        "POST",
        &claim,
        &admin,
        Some(json!({"department": "szs-scjg"})),
    )
    .await;
    assert_eq!(status, 400, "an offline claim names its acknowledgement");
    let (status, body) = call(&gw, "POST", &claim, &admin, Some(json!({"department": "szs-scjg", "document_ref": "石市监回执〔2026〕3号", "at": "2026-11-03T11:00:00+08:00"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entry"]["claimed_at"], "2026-11-03T11:00:00+08:00");
    let (_, view) = call(&gw, "GET", &format!("/v1/records/{id}"), &scjg, None).await;
    let c = view["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["action"] == "claim")
        .unwrap()
        .clone();
    assert_eq!(
        (c["channel"].as_str(), c["detail"]["document_ref"].as_str()),
        (Some("offline"), Some("石市监回执〔2026〕3号"))
    );
    // The report counts it.
    let (_, report) = call(
        &gw,
        "GET",
        "/v1/reports/monthly?month=2026-11",
        &admin,
        None,
    )
    .await;
    let line = report["claims"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["department"] == "szs-scjg")
        .unwrap()
        .clone();
    assert_eq!(
        (line["offline"].as_u64(), line["claimed_on_time"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
}

#[tokio::test]
async fn open_commitment_verifications_are_listed_per_department_until_verified() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), None, &[]).await;
    let admin = gw.token("admin", "");
    let scjg = gw.token("department", "szs-scjg");
    let wjw = gw.token("department", "szs-wjw");
    let push = offline_approval(
        json!({"is_commitment": true, "items": ["30日内补交健康证明"], "period_end": "2026-12-02"}),
    );
    let (status, body) = call(&gw, "POST", "/v1/offline-pushes", &admin, Some(push)).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let (_, list) = call(&gw, "GET", "/v1/commitments", &scjg, None).await;
    assert_eq!(list["count"], 1, "{list}");
    // 10 working days after 2026-12-02: 12-03 … 12-16.
    assert_eq!(
        list["commitments"][0]["entry"]["feedback_due_at"],
        "2026-12-16T23:59:59+08:00"
    );
    let (_, other) = call(&gw, "GET", "/v1/commitments", &wjw, None).await;
    assert_eq!(other["count"], 0, "a department sees only its own");
    let (_, all) = call(
        &gw,
        "GET",
        "/v1/commitments?department=szs-scjg",
        &admin,
        None,
    )
    .await;
    assert_eq!(all["count"], 1);
    let fb = format!("/v1/records/{id}/feedback");
    let verified = json!({"feedback_type": "commitment_verified", "verification": "fulfilled", "content": "已补交"});
    let (status, _) = call(&gw, "POST", &fb, &scjg, Some(verified.clone())).await;
    assert_eq!(status, 409, "claim first");
    call(&gw, "POST", &format!("/v1/records/{id}/claim"), &scjg, None).await;
    let (status, body) = call(&gw, "POST", &fb, &scjg, Some(verified)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entry"]["outcome"], "commitment_fulfilled");
    let (_, list) = call(&gw, "GET", "/v1/commitments", &scjg, None).await;
    assert_eq!(list["count"], 0);
}

#[tokio::test]
async fn the_liaison_registry_is_kept_by_admins_audited_and_masked_for_others() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), None, &[]).await;
    let admin = gw.token("admin", "");
    let scjg = gw.token("department", "szs-scjg");
    let wjw = gw.token("department", "szs-wjw");
    let liaison = json!({"officer": "马丽", "phone": "13995027788", "leader": "副局长 周某"});
    let path = "/v1/departments/szs-scjg/liaison";
    let (status, _) = call(&gw, "PUT", path, &scjg, Some(liaison.clone())).await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &gw,
        "PUT",
        path,
        &admin,
        Some(json!({"officer": "马丽", "phone": "call me"})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = call(
        &gw,
        "PUT",
        "/v1/departments/nobody/liaison",
        &admin,
        Some(liaison.clone()),
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = call(&gw, "PUT", path, &admin, Some(liaison)).await;
    assert_eq!(status, 200, "{body}");
    let find = |b: &Value| {
        b["departments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["code"] == "szs-scjg")
            .unwrap()
            .clone()
    };
    let (_, own) = call(&gw, "GET", "/v1/departments", &scjg, None).await;
    assert_eq!(find(&own)["liaison"]["phone"], "13995027788");
    assert_eq!(find(&own)["parent"], "nx-scjg");
    let (_, other) = call(&gw, "GET", "/v1/departments", &wjw, None).await;
    assert_eq!(find(&other)["liaison"]["officer"], "马丽");
    assert_ne!(
        find(&other)["liaison"]["phone"],
        "13995027788",
        "masked for other departments"
    );
    let (_, audit) = call(&gw, "GET", "/v1/admin/audit", &admin, None).await;
    let entry = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "liaison.set")
        .unwrap()
        .clone();
    assert_eq!(entry["target"], "szs-scjg");
    assert!(
        unmasked_personal_numbers(&entry.to_string()).is_empty(),
        "{entry}"
    );
    // The CLI writes the same registry.
    let data = gw.data_dir.display().to_string();
    let out = shenguan(&[
        "--data-dir",
        &data,
        "liaison",
        "set",
        "szs-wjw",
        "--officer",
        "杨帆",
        "--phone",
        "0952-2011234",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = shenguan(&["--data-dir", &data, "liaison", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("杨帆") && text.contains("马丽"), "{text}");
    let out = shenguan(&[
        "--data-dir",
        &data,
        "liaison",
        "set",
        "szs-wjw",
        "--officer",
        "杨帆",
        "--phone",
        "x",
    ]);
    assert!(!out.status.success());
    assert!(unmasked_personal_numbers(&gw.logs()).is_empty());
}

#[tokio::test]
async fn the_daily_digest_reaches_department_webhooks_on_working_days_once() {
    let (url, seen) = receiver(200).await;
    let dir = tempfile::tempdir().unwrap();
    let mut gw = gateway_with_digest(
        dir.path(),
        Some(&catalog_with_webhook(&url, "TEST_HOOK_SECRET_DIGEST")),
        &[("TEST_HOOK_SECRET_DIGEST", "s3cret-digest")],
        "00:00",
    )
    .await;
    let today = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .date_naive();
    let working = shenguan::deadline::Calendar::builtin()
        .is_working_day(today)
        .unwrap();
    let digests = || -> Vec<Value> {
        seen.lock()
            .unwrap()
            .iter()
            .map(|(_, b)| serde_json::from_slice::<Value>(b).unwrap())
            .filter(|v| v["data"]["level"] == "digest")
            .collect()
    };
    for _ in 0..100 {
        if !digests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if working {
        let d = digests();
        assert_eq!(d.len(), 1, "one digest for the webhook department: {d:?}");
        assert_eq!(d[0]["data"]["department"], "szs-scjg");
        assert_eq!(d[0]["data"]["digest"]["date"], today.to_string());
        let (sig, body) = seen
            .lock()
            .unwrap()
            .iter()
            .find(|(_, b)| String::from_utf8_lossy(b).contains("\"digest\""))
            .cloned()
            .unwrap();
        assert!(shenguan::deliver::verify(b"s3cret-digest", &sig, &body));
        let topic = embedded_topic(&gw.data_dir, "shenguan.alert.v1").await;
        let n = shenguan::route::Catalog::load(&repo().join("catalog/routing.yaml"))
            .unwrap()
            .departments
            .len();
        assert_eq!(
            topic
                .iter()
                .filter(|e| e["data"]["level"] == "digest")
                .count(),
            n,
            "every department gets one"
        );
        // A restart the same day sends nothing again.
        gw.restart().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(digests().len(), 1);
        assert_eq!(
            embedded_topic(&gw.data_dir, "shenguan.alert.v1")
                .await
                .len(),
            n
        );
    } else {
        assert!(digests().is_empty(), "no digest on a day off");
    }
}
