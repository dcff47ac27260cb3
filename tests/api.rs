//! The HTTP API's contract from the outside: the OpenAPI document a running gateway serves
//! (checked by an independent validator, and against the routes the router serves and the
//! answers it gives), the paginated inbox (10,006 records, on SQLite over HTTP and on
//! PostgreSQL through the store), and errors that must not mislead.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use serde_json::{json, Value};
use shenguan::ledger::store::{InboxOrder, InboxQuery, InboxStatus};

const JSON: &str = "application/json";

async fn call(
    gw: &Gateway,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, String, Value) {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut r = gw.client.request(method, gw.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, content_type, body)
}

async fn get(gw: &Gateway, path: &str, token: &str) -> (u16, Value) {
    let (status, _, body) = call(gw, "GET", path, Some(token), None).await;
    (status, body)
}

/// Checks `instance` against a schema of the OpenAPI document (`#/components/schemas/NAME`).
fn conforms(doc: &Value, name: &str, instance: &Value) {
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"],
    });
    let validator = jsonschema::validator_for(&schema).expect("the document's schemas compile");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "an answer does not match schema {name}: {errors:#?}\n{instance:#}"
    );
}

/// Runs the Python `openapi-spec-validator` on a document; a missing validator is a failure.
fn validate_with_openapi_spec_validator(doc: &Value) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(doc).unwrap()).unwrap();
    let script = "import json, sys\n\
        from openapi_spec_validator import validate\n\
        from openapi_spec_validator.validation.validators import OpenAPIV31SpecValidator\n\
        validate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator)\n\
        print('valid')\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&file)
        .output()
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'openapi_spec_validator'"),
        "no OpenAPI validator: run the tests with `bash scripts/test.sh`, which installs it \
         (pip install openapi-spec-validator==0.9.0)"
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("valid"),
        "openapi-spec-validator refuses /openapi.json:\n{stderr}"
    );
}

#[tokio::test]
async fn the_openapi_document_is_valid_and_describes_every_route_and_answer() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &[]).await;
    let (status, content_type, doc) = call(&gw, "GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert_eq!(doc["openapi"], "3.1.0");
    validate_with_openapi_spec_validator(&doc);

    // Every route the router serves is in the document with its methods, and nothing else is.
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = HashSet::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let served: HashSet<(String, String)> = shenguan::api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert!(served.len() >= 27, "{served:?}");
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "served but not documented"
    );
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented but not served"
    );
    // And the running router answers each of them (no token: 401 or an open endpoint), never
    // with the fallback's 404 or a 405.
    for (method, path) in &served {
        let concrete = path
            .replace("{adapter}", "nx-zwfw-approval")
            .replace("{id}", "00000000-0000-0000-0000-000000000000");
        let concrete = concrete.replace("{code}", "szs-scjg");
        let (status, _, body) = call(&gw, method, &concrete, None, None).await;
        assert!(
            status != 405 && body["type"] != "urn:shenguan:problem:not-found",
            "{method} {path}: {status} {body}"
        );
        let operation = &doc["paths"][path][method];
        if operation["security"].is_array() && !path.starts_with("/metrics") {
            assert_eq!(status, 401, "{method} {path} needs a token: {body}");
        }
    }
    let (status, _, body) = call(&gw, "get", "/v1/nothing-here", None, None).await;
    assert_eq!(
        (status, &body["type"]),
        (404, &json!("urn:shenguan:problem:not-found"))
    );

    // The bearer scheme, and problem documents for errors.
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&bearer["type"], &bearer["scheme"]),
        (&json!("http"), &json!("bearer"))
    );
    let inbox = &doc["paths"]["/v1/inbox"]["get"];
    assert!(
        inbox["responses"]["403"]["content"]["application/problem+json"]["schema"]["$ref"]
            .as_str()
            .unwrap()
            .ends_with("/Problem"),
        "{inbox:#}"
    );
    let params: Vec<&str> = inbox["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in ["status", "q", "order", "cursor", "limit"] {
        assert!(params.contains(&p), "{p} missing from {params:?}");
    }

    // Real answers match the schemas the document gives them.
    let adapter = gw.token("adapter", "nx-zwfw-approval");
    let scjg = gw.token("department", "szs-scjg");
    let admin = gw.token("admin", "");
    let batch: Vec<Value> = vec![
        serde_json::from_slice(&fixture("01-company.json")).unwrap(),
        serde_json::from_slice(&fixture("10-bad-uscc.json")).unwrap(),
    ];
    let (status, body) = gw
        .ingest(
            "nx-zwfw-approval",
            &adapter,
            JSON,
            serde_json::to_vec(&batch).unwrap(),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    conforms(&doc, "IngestReport", &body);
    let (status, problem) = gw
        .ingest(
            "nx-zwfw-approval",
            &adapter,
            JSON,
            fixture("15-malformed.json"),
        )
        .await;
    assert_eq!(status, 400);
    conforms(&doc, "Problem", &problem);
    let inbox = wait_for_total(&gw, "/v1/inbox?status=unclaimed", &scjg, 1).await;
    conforms(&doc, "InboxAnswer", &inbox);
    let id = inbox["records"][0]["id"].as_str().unwrap().to_string();
    let (status, _, claimed) = call(
        &gw,
        "POST",
        &format!("/v1/records/{id}/claim"),
        Some(&scjg),
        None,
    )
    .await;
    assert_eq!(status, 200, "{claimed}");
    conforms(&doc, "RecordEntry", &claimed);
    let (_, record) = get(&gw, &format!("/v1/records/{id}"), &scjg).await;
    conforms(&doc, "RecordHistory", &record);
    let month = (chrono::Utc::now() + chrono::Duration::hours(8))
        .format("%Y-%m")
        .to_string();
    let (status, report) = get(&gw, &format!("/v1/reports/monthly?month={month}"), &admin).await;
    assert_eq!(status, 200, "{report}");
    assert!(!report["claims"].as_array().unwrap().is_empty(), "{report}");
    conforms(&doc, "MonthlyReport", &report);
    for (path, schema) in [
        ("/v1/departments", "DepartmentList"),
        ("/v1/admin/tokens", "TokenList"),
        ("/v1/admin/audit", "AuditLog"),
        ("/v1/unrouted", "UnroutedAnswer"),
        ("/v1/commitments", "CommitmentList"),
    ] {
        let (status, body) = get(&gw, path, &admin).await;
        assert_eq!(status, 200, "{path}: {body}");
        conforms(&doc, schema, &body);
    }
    let (status, problem) = get(&gw, "/v1/inbox", &admin).await;
    assert_eq!(status, 403);
    conforms(&doc, "Problem", &problem);
}

/// Polls an inbox until its `total` is at least `want`.
async fn wait_for_total(gw: &Gateway, path: &str, token: &str, want: u64) -> Value {
    let mut last = Value::Null;
    for _ in 0..1200 {
        let (status, body) = get(gw, path, token).await;
        if status == 200 && body["total"].as_u64().is_some_and(|t| t >= want) {
            return body;
        }
        last = body;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{path} never reached total {want}: {last}\n{}", gw.logs());
}

/// A 政务服务网 approval routed to szs-scjg with its own 办件编号 (`6402002026` and 8 digits).
fn numbered_approval(n: u32) -> Value {
    let mut r: Value = serde_json::from_slice(&fixture("01-company.json")).unwrap();
    r["PROJID"] = json!(format!("6402002026{n:08}"));
    r["DOCUMENT_CODE"] = json!(format!("石审服食经许字〔2026〕第{n}号"));
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn the_inbox_pages_through_ten_thousand_records_with_a_total_and_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &[]).await;
    let adapter = gw.token("adapter", "nx-zwfw-approval");
    let scjg = gw.token("department", "szs-scjg");

    // 10,006 unclaimed records, three of them findable by their own 办件编号, 事项名称 and 相对人.
    let mut records: Vec<Value> = (0..10_006).map(numbered_approval).collect();
    records[17]["PROJID"] = json!("640200209912310017");
    records[4242]["SERVICENAME"] = json!("食品经营许可（变更）");
    records[9001]["APPLYNAME"] = json!("石嘴山市星海湖餐饮有限公司");
    let mut accepted = Vec::new();
    for chunk in records.chunks(2000) {
        let (status, body) = gw
            .ingest(
                "nx-zwfw-approval",
                &adapter,
                JSON,
                serde_json::to_vec(chunk).unwrap(),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        assert!(body["rejected"].as_array().unwrap().is_empty(), "{body}");
        for a in body["accepted"].as_array().unwrap() {
            accepted.push(a["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(accepted.len(), 10_006);
    let all: HashSet<String> = accepted.iter().cloned().collect();

    // The default page is 100 records, with the total and a cursor.
    let first = wait_for_total(&gw, "/v1/inbox?status=unclaimed", &scjg, 10_006).await;
    assert_eq!(first["count"], 100);
    assert_eq!(first["records"].as_array().unwrap().len(), 100);
    assert!(first["next_cursor"].is_string(), "{}", first["next_cursor"]);

    // Walking the cursor from the first page to the last returns every record exactly once,
    // newest first and most urgent first alike.
    for order in ["newest", "urgency"] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("/v1/inbox?status=unclaimed&order={order}&limit=1000");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, page) = get(&gw, &path, &scjg).await;
            assert_eq!(status, 200, "{page}");
            assert_eq!(page["total"], 10_006);
            let rows = page["records"].as_array().unwrap();
            assert_eq!(page["count"], rows.len());
            seen.extend(rows.iter().map(|r| r["id"].as_str().unwrap().to_string()));
            pages += 1;
            match page["next_cursor"].as_str() {
                Some(c) => {
                    assert_eq!(rows.len(), 1000, "only the last page is short");
                    cursor = Some(c.to_string());
                }
                None => {
                    assert!(page["next_cursor"].is_null());
                    break;
                }
            }
            assert!(pages <= 11, "the cursor does not end");
        }
        assert_eq!(pages, 11, "{order}");
        assert_eq!(
            seen.len(),
            10_006,
            "{order}: a record came twice or not at all"
        );
        assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), all, "{order}");
    }

    // Search by 办件编号, 事项名称 and 相对人 name finds the one record.
    for (q, index) in [
        ("640200209912310017", 17),
        ("%E5%8F%98%E6%9B%B4", 4242),          // 变更
        ("%E6%98%9F%E6%B5%B7%E6%B9%96", 9001), // 星海湖
    ] {
        let (status, found) = get(&gw, &format!("/v1/inbox?q={q}"), &scjg).await;
        assert_eq!(status, 200, "{found}");
        assert_eq!(found["total"], 1, "q={q}: {found}");
        assert_eq!(found["records"][0]["id"], accepted[index].as_str(), "q={q}");
        assert!(found["next_cursor"].is_null());
    }

    // A page over the maximum is refused with the maximum, not capped; a bad cursor is a 400.
    let (status, _, p) = call(&gw, "GET", "/v1/inbox?limit=1001", Some(&scjg), None).await;
    assert_eq!(status, 400, "{p}");
    assert_eq!(p["type"], "urn:shenguan:problem:limit-too-large");
    assert!(p["detail"].as_str().unwrap().contains("1000"), "{p}");
    assert_eq!(p["max_limit"], 1000);
    let (status, content_type, p) = call(
        &gw,
        "GET",
        "/v1/inbox?cursor=not-a-cursor!",
        Some(&scjg),
        None,
    )
    .await;
    assert_eq!(status, 400, "{p}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(p["type"], "urn:shenguan:problem:bad-cursor");
    let (status, _, p) = call(&gw, "GET", "/v1/inbox?status=lost", Some(&scjg), None).await;
    assert_eq!(
        (status, &p["type"]),
        (400, &json!("urn:shenguan:problem:bad-query"))
    );
    // Another department's inbox is empty.
    let wjw = gw.token("department", "szs-wjw");
    let (_, other) = get(&gw, "/v1/inbox", &wjw).await;
    assert_eq!((&other["total"], &other["count"]), (&json!(0), &json!(0)));
}

/// An approval event as the projector reads it from `shenguan.approval.v1`.
fn approval_event(n: u32) -> Value {
    let id = format!("rec-{n:05}");
    let published = format!(
        "2026-11-{:02}T{:02}:{:02}:00+08:00",
        2 + n % 20,
        8 + n % 10,
        n % 60
    );
    let (case_no, item_name, counterpart) = match n {
        17 => (
            "640200209912310017".to_string(),
            "食品经营许可",
            "宁夏塞上人家餐饮管理有限公司",
        ),
        4242 => (
            format!("6402002026{n:08}"),
            "食品经营许可（变更）",
            "宁夏塞上人家餐饮管理有限公司",
        ),
        9001 => (
            format!("6402002026{n:08}"),
            "食品经营许可",
            "石嘴山市星海湖餐饮有限公司",
        ),
        _ => (
            format!("6402002026{n:08}"),
            "食品经营许可",
            "宁夏塞上人家餐饮管理有限公司",
        ),
    };
    json!({
        "specversion": "1.0", "id": format!("ev-{id}"), "source": "/test", "type": "cn.shenguan.approval.v1",
        "subject": id, "time": published, "datacontenttype": "application/json",
        "data": {
            "record_id": id, "kind": "approval", "case_no": case_no,
            "source": {"system": "test", "adapter": "nx-zwfw-approval", "business_key": id, "received_at": published},
            "item": {"code": "000117006000", "name": item_name},
            "counterpart": {"name": counterpart},
            "decided_at": published,
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_postgres_inbox_pages_through_ten_thousand_records_once_each() {
    let url = postgres_database().await;
    let ledger = shenguan::ledger::store::open(&url).await.unwrap();
    let catalog = shenguan::route::Catalog::load(&repo().join("catalog/routing.yaml")).unwrap();
    let shared = Arc::new(shenguan::ledger::projector::Shared {
        catalog: Arc::new(catalog),
        calendar: Arc::new(shenguan::deadline::Calendar::builtin()),
        policies: Arc::new(shenguan::deadline::Policies::builtin()),
        policy: "yuanqu-2022".into(),
        topics: shenguan::bus::Topics::default(),
    });
    let topic = shared.topics.name(shenguan::schema::RecordKind::Approval);
    let events: Vec<(shenguan::bus::Delivery, shenguan::schema::RecordKind)> = (0..10_006u32)
        .map(|n| {
            (
                shenguan::bus::Delivery {
                    topic: topic.clone(),
                    partition: 0,
                    offset: i64::from(n),
                    key: None,
                    payload: serde_json::to_vec(&approval_event(n)).unwrap(),
                    timestamp_ms: 0,
                    headers: Vec::new(),
                },
                shenguan::schema::RecordKind::Approval,
            )
        })
        .collect();
    for chunk in events.chunks(1000) {
        ledger
            .apply_batch(chunk.to_vec().into(), shared.clone(), false)
            .await
            .unwrap();
    }
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-30T12:00:00+08:00").unwrap();
    for order in [InboxOrder::Newest, InboxOrder::Urgency] {
        let mut seen = Vec::new();
        let mut query = InboxQuery {
            status: Some(InboxStatus::Unclaimed),
            order,
            limit: 1000,
            ..Default::default()
        };
        let mut pages = 0;
        loop {
            let page = ledger.inbox_page("szs-scjg", &query, now).await.unwrap();
            assert_eq!(page.total, 10_006);
            seen.extend(page.rows.iter().map(|(e, _)| e.record_id.clone()));
            pages += 1;
            match page.next {
                Some(next) => query.cursor = Some(next),
                None => break,
            }
            assert!(pages <= 11, "the cursor does not end");
        }
        assert_eq!(pages, 11, "{order:?}");
        assert_eq!(
            seen.len(),
            10_006,
            "{order:?}: a record came twice or not at all"
        );
        let distinct: HashSet<&String> = seen.iter().collect();
        assert_eq!(distinct.len(), 10_006, "{order:?}");
    }
    for (q, id) in [
        ("640200209912310017", "rec-00017"),
        ("变更", "rec-04242"),
        ("星海湖", "rec-09001"),
    ] {
        let query = InboxQuery {
            search: Some(q.into()),
            limit: 100,
            ..Default::default()
        };
        let page = ledger.inbox_page("szs-scjg", &query, now).await.unwrap();
        assert_eq!(page.total, 1, "q={q}");
        assert_eq!(page.rows[0].0.record_id, id, "q={q}");
        assert!(page.next.is_none());
    }
}

#[tokio::test]
async fn ingest_for_an_adapter_that_does_not_exist_is_404_for_every_token() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &[]).await;
    let tokens = [
        gw.token("adapter", "nx-zwfw-approval"),
        gw.token("department", "szs-scjg"),
        gw.token("admin", ""),
    ];
    for token in &tokens {
        let (status, body) = gw
            .ingest("nx-zwfw-aproval", token, JSON, fixture("01-company.json"))
            .await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["type"], "urn:shenguan:problem:unknown-adapter");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("'nx-zwfw-aproval'"),
            "{body}"
        );
    }
    // An existing adapter with another's token is still refused.
    let (status, body) = gw
        .ingest(
            "nx-zwfw-approval",
            &tokens[1],
            JSON,
            fixture("01-company.json"),
        )
        .await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test]
async fn a_liaison_update_with_officer_and_phone_keeps_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &[]).await;
    let admin = gw.token("admin", "");
    let path = "/v1/departments/szs-scjg/liaison";
    let full = json!({"officer": "马丽", "phone": "13995027788", "leader": "副局长 周某", "email": "mali@example.gov.cn"});
    let (status, _, body) = call(&gw, "PUT", path, Some(&admin), Some(full)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = call(
        &gw,
        "PUT",
        path,
        Some(&admin),
        Some(json!({"officer": "杨帆", "phone": "0952-2011234"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["liaison"]["officer"], "杨帆");
    assert_eq!(body["liaison"]["leader"], "副局长 周某");
    assert_eq!(body["liaison"]["email"], "mali@example.gov.cn");
    let (_, departments) = get(&gw, "/v1/departments", &admin).await;
    let scjg = departments["departments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["code"] == "szs-scjg")
        .unwrap()
        .clone();
    assert_eq!(scjg["liaison"]["leader"], "副局长 周某", "{scjg}");
    assert_eq!(scjg["liaison"]["phone"], "0952-2011234");
    // A field given as null is removed; a first entry needs an officer and a phone.
    let (status, _, body) =
        call(&gw, "PUT", path, Some(&admin), Some(json!({"email": null}))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["liaison"].get("email").is_none(), "{body}");
    assert_eq!(body["liaison"]["leader"], "副局长 周某");
    let (status, _, p) = call(
        &gw,
        "PUT",
        "/v1/departments/szs-wjw/liaison",
        Some(&admin),
        Some(json!({"leader": "副主任 李某"})),
    )
    .await;
    assert_eq!(status, 400, "{p}");
    assert!(p["detail"].as_str().unwrap().starts_with("officer:"), "{p}");

    // The command line merges the same way.
    let data = gw.data_dir.display().to_string();
    let out = shenguan(&[
        "--data-dir",
        &data,
        "liaison",
        "set",
        "szs-scjg",
        "--officer",
        "马丽",
        "--phone",
        "13995027788",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = shenguan(&["--data-dir", &data, "liaison", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("szs-scjg")).unwrap();
    assert!(
        line.contains("马丽") && line.contains("副局长 周某"),
        "{text}"
    );
}

#[tokio::test]
async fn the_ledgers_refusals_are_problem_documents_with_their_own_types() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &[]).await;
    let adapter = gw.token("adapter", "nx-zwfw-approval");
    let scjg = gw.token("department", "szs-scjg");
    let zjj = gw.token("department", "szs-zjj");
    let admin = gw.token("admin", "");
    let (status, body) = gw
        .ingest(
            "nx-zwfw-approval",
            &adapter,
            JSON,
            fixture("01-company.json"),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["accepted"][0]["id"].as_str().unwrap().to_string();
    wait_for_total(&gw, "/v1/inbox", &scjg, 1).await;
    let (status, _, body) = call(
        &gw,
        "POST",
        &format!("/v1/records/{id}/claim"),
        Some(&scjg),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Routed to a second department, which the first cannot forward it to any more.
    let (status, _, body) = call(
        &gw,
        "POST",
        &format!("/v1/records/{id}/route"),
        Some(&admin),
        Some(json!({"departments": ["szs-wjw"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let cases = [
        (
            "POST",
            format!("/v1/records/{id}/feedback"),
            &scjg,
            Some(json!({"feedback_type": "commitment_verified", "verification": "fulfilled"})),
            409,
            "feedback-not-applicable",
        ),
        (
            "POST",
            format!("/v1/records/{id}/route"),
            &admin,
            Some(json!({"departments": ["szs-scjg"]})),
            409,
            "already-routed",
        ),
        (
            "POST",
            format!("/v1/records/{id}/forward"),
            &scjg,
            Some(json!({"to": "szs-scjg", "reason": "转给自己"})),
            400,
            "receiver-is-sender",
        ),
        (
            "POST",
            format!("/v1/records/{id}/forward"),
            &scjg,
            Some(json!({"to": "szs-wjw", "reason": "卫健委已在办理"})),
            409,
            "forward-refused",
        ),
        (
            "POST",
            format!("/v1/records/{id}/return"),
            &scjg,
            Some(json!({})),
            400,
            "reason-required",
        ),
        (
            "POST",
            format!("/v1/records/{id}/claim"),
            &zjj,
            None,
            403,
            "forbidden",
        ),
        (
            "POST",
            "/v1/records/00000000-0000-0000-0000-000000000000/claim".to_string(),
            &scjg,
            None,
            404,
            "unknown-record",
        ),
    ];
    for (method, path, token, body, status, slug) in cases {
        let (got, content_type, p) = call(&gw, method, &path, Some(token), body).await;
        assert_eq!(got, status, "{method} {path}: {p}");
        assert_eq!(content_type, "application/problem+json", "{path}");
        assert_eq!(p["type"], format!("urn:shenguan:problem:{slug}"), "{p}");
        assert_eq!(p["status"], status);
        assert!(!p["detail"].as_str().unwrap().is_empty(), "{p}");
    }
}
