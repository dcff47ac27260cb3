//! The gateway from the outside, on the embedded bus: the real binary on a loopback port.

mod common;

use common::*;
use serde_json::{json, Value};

const JSON: &str = "application/json";

fn schemas() -> shenguan::schema::Schemas {
    shenguan::schema::Schemas::load(Some(&repo().join("schemas"))).expect("schemas load")
}

#[tokio::test]
async fn accepted_and_rejected_records_are_answered_and_published() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &[]).await;
    let token = gw.token("adapter", "nx-zwfw-approval");

    // A batch with two good records and one bad 统一社会信用代码.
    let mut batch: Vec<Value> = serde_json::from_slice(&fixture("02-batch.json")).unwrap();
    batch.push(serde_json::from_slice(&fixture("10-bad-uscc.json")).unwrap());
    let (status, body) = gw
        .ingest(
            "nx-zwfw-approval",
            &token,
            JSON,
            serde_json::to_vec(&batch).unwrap(),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["received"], 3);
    let accepted = body["accepted"].as_array().unwrap();
    assert_eq!(accepted.len(), 2);
    assert_eq!(accepted[0]["index"], 0);
    assert_eq!(accepted[1]["index"], 1);
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["index"], 2);
    assert_eq!(rejected[0]["stage"], "validate");
    assert_eq!(rejected[0]["reason"], "invalid_identifier");
    assert_eq!(rejected[0]["errors"][0]["path"], "/counterpart/uscc");
    assert_eq!(
        rejected[0]["errors"][0]["reason"],
        "统一社会信用代码 check digit is 'N', expected 'L'"
    );

    // The accepted records are CloudEvents on shenguan.approval.v1, keyed by record id.
    let events = embedded_topic(dir.path(), "shenguan.approval.v1").await;
    assert_eq!(events.len(), 2);
    let schemas = schemas();
    for (event, acc) in events.iter().zip(accepted) {
        let mut envelope = event.clone();
        envelope.as_object_mut().unwrap().remove("_key");
        assert!(
            schemas.validate_envelope(&envelope).is_empty(),
            "{envelope}"
        );
        assert!(schemas
            .validate(shenguan::schema::RecordKind::Approval, &event["data"])
            .is_empty());
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["type"], "cn.shenguan.approval.v1");
        assert_eq!(event["id"], acc["event_id"]);
        assert_eq!(event["subject"], acc["id"]);
        assert_eq!(event["_key"], acc["id"]);
        assert_eq!(event["data"]["record_id"], acc["id"]);
    }
    assert_eq!(events[0]["data"]["counterpart"]["category"], "自然人");
    assert_eq!(
        events[1]["data"]["commitment"]["missing_materials"][0]["name"],
        "从业人员健康证明"
    );

    // The rejection is on the DLQ with the record's original bytes.
    let dlq = embedded_topic(dir.path(), "shenguan.dlq.v1").await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0]["id"], rejected[0]["dlq_id"]);
    let data = &dlq[0]["data"];
    assert_eq!(data["adapter"], "nx-zwfw-approval");
    assert_eq!(data["stage"], "validate");
    assert_eq!(data["record_index"], 2);
    use base64::Engine as _;
    let original = base64::engine::general_purpose::STANDARD
        .decode(data["original_base64"].as_str().unwrap())
        .unwrap();
    let original: Value = serde_json::from_slice(&original).unwrap();
    assert_eq!(original, batch[2]);
    let mut dlq_event = dlq[0].clone();
    dlq_event.as_object_mut().unwrap().remove("_key");
    assert!(
        schemas
            .validate(shenguan::schema::RecordKind::Dlq, &dlq_event["data"])
            .is_empty(),
        "{dlq_event}"
    );
}

#[tokio::test]
async fn the_same_record_twice_is_a_duplicate_and_published_once() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &[]).await;
    let token = gw.token("adapter", "nx-zwfw-approval");
    let (s1, first) = gw
        .ingest("nx-zwfw-approval", &token, JSON, fixture("01-company.json"))
        .await;
    assert_eq!(s1, 202);
    assert_eq!(first["accepted"].as_array().unwrap().len(), 1);
    let (s2, second) = gw
        .ingest("nx-zwfw-approval", &token, JSON, fixture("01-company.json"))
        .await;
    assert_eq!(s2, 202);
    assert!(
        second["accepted"].as_array().unwrap().is_empty(),
        "{second}"
    );
    assert_eq!(second["duplicates"][0]["id"], first["accepted"][0]["id"]);
    // A changed record with the same business key is a new version of the same record id.
    let mut changed: Value = serde_json::from_slice(&fixture("01-company.json")).unwrap();
    changed["VALID_TO"] = json!("2032-01-04");
    let (_, third) = gw
        .ingest(
            "nx-zwfw-approval",
            &token,
            JSON,
            serde_json::to_vec(&changed).unwrap(),
        )
        .await;
    assert_eq!(third["accepted"][0]["id"], first["accepted"][0]["id"]);
    assert_ne!(
        third["accepted"][0]["event_id"],
        first["accepted"][0]["event_id"]
    );
    let events = embedded_topic(dir.path(), "shenguan.approval.v1").await;
    assert_eq!(events.len(), 2);

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
            r#"shenguan_records_ingested_total{adapter="nx-zwfw-approval",outcome="accepted"} 2"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"shenguan_records_ingested_total{adapter="nx-zwfw-approval",outcome="duplicate"} 1"#
    ));
    assert!(metrics.contains(r#"shenguan_records_published_total{topic="shenguan.approval.v1"} 2"#));
    assert!(metrics
        .contains(r#"shenguan_pipeline_latency_seconds_count{adapter="nx-zwfw-approval"} 2"#));
}

#[tokio::test]
async fn records_survive_a_gateway_restart_between_ingest_and_consume() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(dir.path(), &[]).await;
    let token = gw.token("adapter", "nx-zwfw-approval");
    let (status, body) = gw
        .ingest("nx-zwfw-approval", &token, JSON, fixture("02-batch.json"))
        .await;
    assert_eq!(status, 202, "{body}");
    gw.restart().await;
    let events = embedded_topic(dir.path(), "shenguan.approval.v1").await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["subject"], body["accepted"][0]["id"]);
    // De-duplication state survives too, and the token still works.
    let (_, again) = gw
        .ingest("nx-zwfw-approval", &token, JSON, fixture("02-batch.json"))
        .await;
    assert_eq!(again["duplicates"].as_array().unwrap().len(), 2, "{again}");
    assert_eq!(
        embedded_topic(dir.path(), "shenguan.approval.v1")
            .await
            .len(),
        2
    );
    assert!(gw.logs().contains("shutdown complete"), "{}", gw.logs());
}

#[tokio::test]
async fn malformed_requests_get_problem_details() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &[]).await;
    let token = gw.token("adapter", "nx-zwfw-approval");
    let other = gw.token("department", "szs-scjg");
    let post = |path: &str, token: Option<&str>, ct: &str, body: Vec<u8>| {
        let mut r = gw
            .client
            .post(gw.url(path))
            .header("content-type", ct)
            .body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let check = |r: reqwest::Response, status: u16| async move {
        let got = r.status().as_u16();
        let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
        let p: Value = r.json().await.unwrap();
        assert_eq!(got, status, "{p}");
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(p["status"], status);
        assert!(p["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:shenguan:problem:"));
        assert!(!p["detail"].as_str().unwrap().is_empty());
        p
    };
    let path = "/v1/ingest/nx-zwfw-approval";
    check(
        post(path, None, JSON, fixture("01-company.json"))
            .await
            .unwrap(),
        401,
    )
    .await;
    check(
        post(
            path,
            Some("sg_not-a-token"),
            JSON,
            fixture("01-company.json"),
        )
        .await
        .unwrap(),
        401,
    )
    .await;
    check(
        post(path, Some(&other), JSON, fixture("01-company.json"))
            .await
            .unwrap(),
        403,
    )
    .await;
    check(
        post(path, Some(&token), "text/csv", fixture("01-company.json"))
            .await
            .unwrap(),
        415,
    )
    .await;
    check(
        post(
            path,
            Some(&token),
            "application/x-www-form-urlencoded",
            b"a=b".to_vec(),
        )
        .await
        .unwrap(),
        415,
    )
    .await;
    // A declared body over the limit is refused before it is read.
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        17 * 1024 * 1024
    );
    let answer = raw_http(gw.addr, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("application/problem+json") && answer.contains("body-too-large"),
        "{answer}"
    );
    assert!(
        answer.contains("\"dlq_id\""),
        "the refusal is in the DLQ: {answer}"
    );
    // A chunked body over the limit is refused as soon as the limit is passed.
    let mut chunked = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    let chunk = vec![b' '; 1024 * 1024];
    for _ in 0..17 {
        chunked.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend(&chunk);
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    let answer = raw_http(gw.addr, &chunked).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let p = check(
        post(path, Some(&token), JSON, fixture("15-malformed.json"))
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(p["reason"], "malformed_json");
    let dlq_id = p["dlq_id"].as_str().unwrap().to_string();
    let p = check(
        post(
            path,
            Some(&token),
            "application/json; charset=utf-8",
            vec![0xC4, 0xFE, 0x7B],
        )
        .await
        .unwrap(),
        400,
    )
    .await;
    assert_eq!(p["reason"], "invalid_encoding");
    let p = check(
        post(
            path,
            Some(&token),
            "application/json; charset=klingon",
            b"{}".to_vec(),
        )
        .await
        .unwrap(),
        400,
    )
    .await;
    assert_eq!(p["reason"], "unknown_charset");
    let admin = gw.token("admin", "");
    check(
        post(
            "/v1/ingest/no-such-adapter",
            Some(&admin),
            JSON,
            b"{}".to_vec(),
        )
        .await
        .unwrap(),
        404,
    )
    .await;
    check(
        gw.client.get(gw.url("/v1/nothing")).send().await.unwrap(),
        404,
    )
    .await;

    // The malformed body is on the DLQ with its original bytes.
    let dlq = embedded_topic(dir.path(), "shenguan.dlq.v1").await;
    let entry = dlq
        .iter()
        .find(|e| e["id"] == dlq_id.as_str())
        .expect("dlq entry");
    use base64::Engine as _;
    let original = base64::engine::general_purpose::STANDARD
        .decode(entry["data"]["original_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(original, fixture("15-malformed.json"));
    assert_eq!(entry["data"]["stage"], "parse");
}

#[tokio::test]
async fn gb18030_bodies_map_like_their_utf8_twins() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &[]).await;
    let token = gw.token("adapter", "nx-zwfw-approval");
    let (status, body) = gw
        .ingest(
            "nx-zwfw-approval",
            &token,
            "application/json; charset=GB18030",
            fixture("18-company.gb18030.json"),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"].as_array().unwrap().len(), 1);
    let events = embedded_topic(dir.path(), "shenguan.approval.v1").await;
    assert_eq!(
        events[0]["data"]["counterpart"]["name"],
        "宁夏塞上人家餐饮管理有限公司"
    );
    assert_eq!(
        events[0]["data"]["license"]["document_no"],
        "石审服食经许字〔2026〕第0018号"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &[]).await;
    assert_eq!(
        gw.client
            .get(gw.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        gw.client
            .get(gw.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = gw.client.get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    for name in [
        "shenguan_records_ingested_total",
        "shenguan_pipeline_latency_seconds_bucket",
        "shenguan_build_info",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test]
async fn personal_data_is_masked_in_logs_and_dlq_listings() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &[]).await;
    let token = gw.token("adapter", "nx-zwfw-approval");
    for f in [
        "11-bad-id-number.json",
        "12-missing-required.json",
        "02-batch.json",
        "15-malformed.json",
    ] {
        gw.ingest("nx-zwfw-approval", &token, JSON, fixture(f))
            .await;
    }
    let dir_arg = dir.path().display().to_string();
    let out = shenguan(&["dlq", "list", "--data-dir", &dir_arg]);
    assert!(out.status.success());
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(listing.contains("check digit"), "{listing}");
    assert!(listing.contains("3 entries"), "{listing}");
    assert!(listing.contains("360426********009X"), "{listing}");
    assert_eq!(
        unmasked_personal_numbers(&listing),
        Vec::<String>::new(),
        "{listing}"
    );
    let out = shenguan(&["dlq", "list", "--data-dir", &dir_arg, "--format", "json"]);
    assert_eq!(
        unmasked_personal_numbers(&String::from_utf8_lossy(&out.stdout)),
        Vec::<String>::new()
    );
    assert_eq!(
        unmasked_personal_numbers(&gw.logs()),
        Vec::<String>::new(),
        "{}",
        gw.logs()
    );
}

#[tokio::test]
async fn a_dlq_entry_is_replayed_after_the_adapter_is_fixed() {
    // A private copy of the adapters, so the test can fix a code table.
    let dir = tempfile::tempdir().unwrap();
    let adapters = dir.path().join("adapters");
    copy_dir(&repo().join("adapters"), &adapters);
    let config = dir.path().join("shenguan.toml");
    std::fs::write(
        &config,
        format!(
            "adapters_dir = {:?}\nschemas_dir = {:?}\n",
            adapters,
            repo().join("schemas")
        ),
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let gw = Gateway::start(&data, &["--config", &config_arg]).await;
    let token = gw.token("adapter", "nx-zwfw-approval");
    let (_, body) = gw
        .ingest(
            "nx-zwfw-approval",
            &token,
            JSON,
            fixture("14-unknown-code.json"),
        )
        .await;
    assert_eq!(
        body["rejected"][0]["errors"][0]["reason"],
        "counterpart.category: code '7' is not in code table 'applicant_category'"
    );

    // Replaying before the fix rejects it again (and says so).
    let out = shenguan(&[
        "dlq",
        "replay",
        "--all",
        "--config",
        &config_arg,
        "--data-dir",
        &data_arg,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("rejected again"), "{text}");

    // The site adds code 7 to its table; the replay of the new DLQ entry is accepted.
    let table = adapters.join("nx-zwfw/tables/applicant-category.yaml");
    let mut t = std::fs::read_to_string(&table).unwrap();
    t.push_str("\"7\": 法人及非法人组织\n");
    std::fs::write(&table, t).unwrap();
    let out = shenguan(&[
        "dlq",
        "replay",
        "--all",
        "--config",
        &config_arg,
        "--data-dir",
        &data_arg,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("replayed: 1 accepted, 0 duplicate, 0 rejected again, 0 left in the DLQ"),
        "{text}"
    );
    let events = embedded_topic(&data, "shenguan.approval.v1").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["case_no"], "640200202601050014");

    // Nothing is left to replay.
    let out = shenguan(&[
        "dlq",
        "replay",
        "--all",
        "--config",
        &config_arg,
        "--data-dir",
        &data_arg,
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("replayed: 0 accepted"));
    assert_eq!(embedded_topic(&data, "shenguan.approval.v1").await.len(), 1);
}

/// Sends raw bytes and returns what the server answered (the server may stop reading early).
async fn raw_http(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut buf),
    )
    .await;
    String::from_utf8_lossy(&buf).to_string()
}

#[tokio::test]
async fn a_graceful_shutdown_finishes_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(dir.path(), &[]).await;
    let token = gw.token("adapter", "nx-zwfw-approval");
    // 2,000 records in one request, with SIGTERM sent while it is being handled.
    let template: Value = serde_json::from_slice(&fixture("01-company.json")).unwrap();
    let batch: Vec<Value> = (0..2000)
        .map(|i| {
            let mut r = template.clone();
            r["PROJID"] = json!(format!("64020020260105{i:04}"));
            r
        })
        .collect();
    let body = serde_json::to_vec(&batch).unwrap();
    let request = gw
        .client
        .post(gw.url("/v1/ingest/nx-zwfw-approval"))
        .bearer_auth(&token)
        .header("content-type", JSON)
        .body(body)
        .send();
    let pid = gw.child.as_ref().unwrap().id();
    let kill = async {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap();
    };
    let (response, _) = tokio::join!(request, kill);
    let response = response.expect("the request in flight is answered");
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["accepted"].as_array().unwrap().len(), 2000);
    gw.stop();
    assert!(gw.logs().contains("shutdown complete"), "{}", gw.logs());
    assert_eq!(
        embedded_topic(dir.path(), "shenguan.approval.v1")
            .await
            .len(),
        2000
    );
}

#[tokio::test]
async fn a_revoked_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &[]).await;
    let token = gw.token("adapter", "nx-zwfw-approval");
    let (status, _) = gw
        .ingest("nx-zwfw-approval", &token, JSON, fixture("01-company.json"))
        .await;
    assert_eq!(status, 202);
    let data = dir.path().display().to_string();
    let list = shenguan(&["token", "list", "--data-dir", &data]);
    let listing = String::from_utf8(list.stdout).unwrap();
    assert!(
        !listing.contains(&token),
        "the token itself is never listed"
    );
    let id = listing
        .lines()
        .find(|l| l.contains("nx-zwfw-approval"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let out = shenguan(&["token", "revoke", &id, "--data-dir", &data]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !shenguan(&["token", "revoke", &id, "--data-dir", &data])
            .status
            .success(),
        "revoking twice is an error"
    );
    let listing =
        String::from_utf8(shenguan(&["token", "list", "--data-dir", &data]).stdout).unwrap();
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with(&id) && l.trim_end().ends_with("+08:00")),
        "the revocation time is listed: {listing}"
    );
    // Cached tokens are re-read within 5 seconds.
    let mut status = 0;
    for _ in 0..80 {
        status = gw
            .ingest("nx-zwfw-approval", &token, JSON, fixture("01-company.json"))
            .await
            .0;
        if status == 401 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 401);
}
