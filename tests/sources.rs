//! Pull sources from the outside: a directory drop, an HTTP API polled page by page, a
//! PostgreSQL table, a Kafka topic of raw messages — each across a gateway restart, with rows
//! committed out of order — and hot reload of adapters.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A private adapters directory: the shipped ones plus the test's drop adapter.
fn adapters_dir(dir: &std::path::Path) -> std::path::PathBuf {
    let target = dir.join("adapters");
    copy_dir(&repo().join("adapters"), &target);
    std::fs::create_dir_all(target.join("drop")).unwrap();
    std::fs::copy(
        repo().join("tests/fixtures/drop/export.yaml"),
        target.join("drop/export.yaml"),
    )
    .unwrap();
    target
}

async fn start(dir: &std::path::Path, config: &str, extra: &[&str]) -> Gateway {
    let adapters = adapters_dir(dir);
    let file = dir.join("shenguan.toml");
    std::fs::write(
        &file,
        format!("adapters_dir = {adapters:?}\nadapters_reload_seconds = 1\n{config}"),
    )
    .unwrap();
    let mut args = vec!["--config".to_string(), file.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Gateway::start(&dir.join("data"), &args).await
}

async fn wait_for_events(data: &std::path::Path, n: usize) -> Vec<Value> {
    for _ in 0..150 {
        let events = embedded_topic(data, "shenguan.approval.v1").await;
        if events.len() >= n {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("fewer than {n} records reached the bus");
}

fn keys(events: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = events
        .iter()
        .map(|e| {
            e["data"]["source"]["business_key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread")]
async fn gb18030_csv_and_xlsx_dropped_in_a_directory_match_their_utf8_twin() {
    let dir = tempfile::tempdir().unwrap();
    let drop = dir.path().join("drop");
    std::fs::create_dir_all(&drop).unwrap();
    let config = format!(
        "[[sources]]\ntype = \"directory\"\nname = \"export-drop\"\nadapter = \"drop-export\"\npath = {drop:?}\ninterval_seconds = 1\nsettle_seconds = 1\n"
    );
    let gw = start(dir.path(), &config, &[]).await;
    let fixtures = repo().join("tests/fixtures/drop");
    // A file still being written is left alone.
    std::fs::copy(
        fixtures.join("rows.utf-8.csv"),
        drop.join("rows.utf-8.csv.part"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(embedded_topic(&gw.data_dir, "shenguan.approval.v1")
        .await
        .is_empty());
    std::fs::rename(
        drop.join("rows.utf-8.csv.part"),
        drop.join("rows.utf-8.csv"),
    )
    .unwrap();
    let first = wait_for_events(&gw.data_dir, 3).await;
    assert_eq!(
        keys(&first),
        ["SZS-ZJ-2026-0001", "SZS-ZJ-2026-0002", "SZS-ZJ-2026-0003"]
    );
    // The GB18030 and .xlsx twins map to exactly the same canonical records: all duplicates.
    std::fs::copy(
        fixtures.join("rows.gb18030.csv"),
        drop.join("rows.gb18030.csv"),
    )
    .unwrap();
    std::fs::copy(fixtures.join("rows.xlsx"), drop.join("rows.xlsx")).unwrap();
    std::fs::write(drop.join("broken.xlsx"), b"not a workbook").unwrap();
    let done = drop.join("done");
    for _ in 0..100 {
        if done.join("rows.xlsx.report.json").exists()
            && done.join("rows.gb18030.csv.report.json").exists()
            && drop.join("failed/broken.xlsx").exists()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let accepted_ids: Vec<Value> = first.iter().map(|e| e["subject"].clone()).collect();
    for twin in ["rows.gb18030.csv", "rows.xlsx"] {
        let report: Value = serde_json::from_slice(
            &std::fs::read(done.join(format!("{twin}.report.json"))).unwrap(),
        )
        .unwrap();
        assert!(
            report["accepted"].as_array().unwrap().is_empty(),
            "{twin}: {report}"
        );
        assert!(
            report["rejected"].as_array().unwrap().is_empty(),
            "{twin}: {report}"
        );
        let dup_ids: Vec<Value> = report["duplicates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].clone())
            .collect();
        assert_eq!(dup_ids, accepted_ids, "{twin}");
        assert!(done.join(twin).exists());
    }
    assert!(
        done.join("rows.utf-8.csv").exists() && done.join("rows.utf-8.csv.report.json").exists()
    );
    let failed: Value = serde_json::from_slice(
        &std::fs::read(drop.join("failed/broken.xlsx.report.json")).unwrap(),
    )
    .unwrap();
    assert!(
        failed["error"].as_str().unwrap().contains("xlsx"),
        "{failed}"
    );
    assert_eq!(
        embedded_topic(&gw.data_dir, "shenguan.approval.v1")
            .await
            .len(),
        3
    );
    assert_eq!(
        embedded_topic(&gw.data_dir, "shenguan.dlq.v1").await.len(),
        1,
        "the unreadable file is in the DLQ"
    );
}

/// A legacy API: records ordered by (UPDATE_TIME, PROJID), filtered by `since`, paged; the first
/// request of each poll fails with 500 to exercise the retries.
async fn legacy_api(records: Arc<Mutex<Vec<Value>>>) -> String {
    let calls = Arc::new(Mutex::new(0u64));
    let app = axum::Router::new().route(
        "/results",
        axum::routing::get(
            move |q: axum::extract::Query<std::collections::HashMap<String, String>>| {
                let records = records.clone();
                let calls = calls.clone();
                async move {
                    let n = {
                        let mut c = calls.lock().unwrap();
                        *c += 1;
                        *c
                    };
                    if n % 5 == 1 {
                        return (
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            axum::Json(json!({"error": "busy"})),
                        );
                    }
                    let since = q
                        .get("since")
                        .map(|s| chrono::DateTime::parse_from_rfc3339(s).unwrap());
                    let page: usize = q.get("page").unwrap().parse().unwrap();
                    let size: usize = q.get("page_size").unwrap().parse().unwrap();
                    let mut rows: Vec<Value> = records
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|r| {
                            let t = chrono::DateTime::parse_from_rfc3339(
                                r["UPDATE_TIME"].as_str().unwrap(),
                            )
                            .unwrap();
                            since.is_none_or(|s| t >= s)
                        })
                        .cloned()
                        .collect();
                    rows.sort_by_key(|r| {
                        (
                            r["UPDATE_TIME"].as_str().unwrap().to_string(),
                            r["PROJID"].as_str().unwrap().to_string(),
                        )
                    });
                    let page_rows: Vec<Value> = rows
                        .into_iter()
                        .skip((page - 1) * size)
                        .take(size)
                        .collect();
                    (axum::http::StatusCode::OK, axum::Json(json!(page_rows)))
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/results", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn legacy_record(n: u32, updated: &str) -> Value {
    let mut r: Value = serde_json::from_slice(&fixture("01-company.json")).unwrap();
    r["PROJID"] = json!(format!("6402002026010600{n:02}"));
    r["UPDATE_TIME"] = json!(updated);
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_poll_loses_no_row_and_publishes_none_twice_across_a_restart() {
    let records = Arc::new(Mutex::new(
        (1..=5)
            .map(|i| legacy_record(i, &format!("2026-01-06T10:0{i}:00+08:00")))
            .collect::<Vec<_>>(),
    ));
    let url = legacy_api(records.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[[sources]]\ntype = \"http_poll\"\nname = \"zwfw-poll\"\nadapter = \"nx-zwfw-approval\"\nurl = \"{url}\"\ninterval_seconds = 1\npage_size = 2\noverlap_seconds = 600\ninitial_backoff_ms = 50\ncursor_time = \"$.UPDATE_TIME\"\ncursor_id = \"$.PROJID\"\n"
    );
    let mut gw = start(dir.path(), &config, &[]).await;
    assert_eq!(wait_for_events(&gw.data_dir, 5).await.len(), 5);
    gw.stop();
    // While the gateway is down: a new record, and one committed late with an earlier time.
    records
        .lock()
        .unwrap()
        .push(legacy_record(6, "2026-01-06T10:09:00+08:00"));
    records
        .lock()
        .unwrap()
        .push(legacy_record(7, "2026-01-06T10:02:30+08:00"));
    gw.restart().await;
    let events = wait_for_events(&gw.data_dir, 7).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events_after = embedded_topic(&gw.data_dir, "shenguan.approval.v1").await;
    assert_eq!(
        events_after.len(),
        7,
        "nothing published twice: {:?}",
        keys(&events_after)
    );
    assert_eq!(keys(&events).len(), 7);
    let mut unique = keys(&events_after);
    unique.dedup();
    assert_eq!(unique.len(), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_table_poll_loses_no_row_and_publishes_none_twice() {
    let url = postgres_database().await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            r#"CREATE TABLE approvals ("PROJID" text PRIMARY KEY, updated_at timestamptz NOT NULL, "SERVICENAME" text,
                 "CATALOG_CODE" text, "APPLYNAME" text, "APPLY_PROPERTY" text, "APPLY_CARDNUMBER" text, "DEPTNAME" text,
                 "TRANSACT_TIME" timestamptz, "DOCUMENT_CODE" text, "XKNR" text, "VALID_FROM" date, "VALID_TO" date)"#,
        )
        .await
        .unwrap();
    let insert = |n: u32, updated: &'static str| {
        let client = &client;
        async move {
            client
                .execute(
                    r#"INSERT INTO approvals VALUES ($1, $2::text::timestamptz, '食品经营许可', '000117006000', '宁夏塞上人家餐饮管理有限公司',
                       '1', '91640200MA76C3K57X', '石嘴山市行政审批服务局', '2026-01-05 10:30:00+08', $3, '热食类食品制售',
                       '2026-01-05', '2031-01-04')"#,
                    &[&format!("64020020260107{n:04}"), &updated, &format!("石审服许字〔2026〕第{n}号")],
                )
                .await
                .unwrap();
        }
    };
    for (n, t) in [
        (1, "2026-01-07 09:00:00+08"),
        (2, "2026-01-07 09:01:00+08"),
        (3, "2026-01-07 09:02:00+08"),
    ] {
        insert(n, t).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[[sources]]\ntype = \"postgres\"\nname = \"legacy-db\"\nadapter = \"nx-zwfw-approval\"\nurl = \"{url}\"\ntable = \"approvals\"\ncursor_time_column = \"updated_at\"\ncursor_id_column = \"PROJID\"\nbatch_size = 2\ninterval_seconds = 1\noverlap_seconds = 600\n"
    );
    let mut gw = start(dir.path(), &config, &[]).await;
    assert_eq!(wait_for_events(&gw.data_dir, 3).await.len(), 3);
    gw.stop();
    insert(4, "2026-01-07 09:05:00+08").await;
    // Committed late, with a change time before the cursor.
    insert(5, "2026-01-07 09:00:30+08").await;
    gw.restart().await;
    wait_for_events(&gw.data_dir, 5).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = embedded_topic(&gw.data_dir, "shenguan.approval.v1").await;
    assert_eq!(events.len(), 5, "{:?}", keys(&events));
    assert_eq!(events[0]["data"]["decided_at"], "2026-01-05T10:30:00+08:00");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kafka_topic_of_raw_messages_is_ingested_once_across_a_restart() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let broker = Broker::start();
    let producer: FutureProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let send = |n: u32| {
        let producer = producer.clone();
        async move {
            let r = legacy_record(n, "2026-01-06T10:00:00+08:00");
            producer
                .send(
                    FutureRecord::to("legacy.zwfw.raw")
                        .key("k")
                        .payload(&r.to_string()),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
    };
    for n in 1..=3 {
        send(n).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = "[[sources]]\ntype = \"kafka\"\nname = \"zwfw-raw\"\nadapter = \"nx-zwfw-approval\"\ntopic = \"legacy.zwfw.raw\"\n";
    let bus = broker.url();
    let mut gw = start(dir.path(), config, &["--bus", &bus]).await;
    let count = |want: usize| {
        let bootstrap = broker.bootstrap();
        async move {
            let bus = shenguan::bus::kafka::KafkaBus::new(&bootstrap, &Default::default()).unwrap();
            use shenguan::bus::Bus as _;
            for _ in 0..60 {
                let n = bus.read_all("shenguan.approval.v1").await.unwrap().len();
                if n >= want {
                    return n;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            0
        }
    };
    assert_eq!(count(3).await, 3);
    gw.stop();
    send(4).await;
    gw.restart().await;
    assert_eq!(count(4).await, 4);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(4).await, 4, "nothing published twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_adapter_is_swapped_in_and_a_broken_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), "", &[]).await;
    let token = gw.token("adapter", "nx-zwfw-approval");
    let (_, before) = gw
        .ingest(
            "nx-zwfw-approval",
            &token,
            "application/json",
            fixture("14-unknown-code.json"),
        )
        .await;
    assert_eq!(before["rejected"].as_array().unwrap().len(), 1);
    // The site adds code 7 to its table.
    let table = dir
        .path()
        .join("adapters/nx-zwfw/tables/applicant-category.yaml");
    let mut t = std::fs::read_to_string(&table).unwrap();
    t.push_str("\"7\": 法人及非法人组织\n");
    std::fs::write(&table, t).unwrap();
    let mut accepted = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, body) = gw
            .ingest(
                "nx-zwfw-approval",
                &token,
                "application/json",
                fixture("14-unknown-code.json"),
            )
            .await;
        if body["accepted"].as_array().is_some_and(|a| a.len() == 1) {
            accepted = body;
            break;
        }
    }
    assert_eq!(
        accepted["accepted"].as_array().map(Vec::len),
        Some(1),
        "{}",
        gw.logs()
    );
    // A broken edit is refused; the running adapter keeps working.
    let adapter = dir.path().join("adapters/nx-zwfw/approval.yaml");
    let text = std::fs::read_to_string(&adapter).unwrap();
    std::fs::write(&adapter, text.replace("to: case_no", "to: case_number")).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        gw.logs().contains("adapter reload refused"),
        "{}",
        gw.logs()
    );
    let (status, body) = gw
        .ingest(
            "nx-zwfw-approval",
            &token,
            "application/json",
            fixture("01-company.json"),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(body["accepted"].as_array().unwrap().len(), 1, "{body}");
}
