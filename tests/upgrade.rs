//! An upgraded gateway opens yesterday's data. The fixtures in tests/fixtures/upgrade/ were made
//! by the version before the ledger became an event log (its first schema: times as text or
//! `timestamptz`, alert levels written beside the state machine): three approvals through
//! `nx-zwfw-approval`, one claimed and one returned by szs-scjg, the gateway stopped — once with
//! the SQLite ledger in the data directory, once with the ledger in PostgreSQL (`ledger.sql`, a
//! `pg_dump` of its database). `meta.json` holds the tokens it issued and the record ids. The
//! new gateway starts on them, rebuilds its ledger from the bus, and shows the same claims.
//!
//! `v4-sqlite.tar.gz` holds the same steps made by a version whose ledger (schema 4) keyed its
//! tables by record id: today's gateway, which keys them by the record's number, rebuilds that
//! ledger from the bus.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn unpack(name: &str, into: &Path) -> Value {
    let archive = repo().join("tests/fixtures/upgrade").join(name);
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(into)
        .status()
        .expect("tar");
    assert!(status.success(), "cannot unpack {}", archive.display());
    serde_json::from_slice(&std::fs::read(into.join("meta.json")).unwrap()).unwrap()
}

async fn get(gw: &Gateway, token: &str, path: &str) -> (u16, Value) {
    let r = gw
        .client
        .get(gw.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The department's entry state of a record, once the rebuilt ledger shows it.
async fn state_of(gw: &Gateway, token: &str, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get(gw, token, &format!("/v1/records/{id}")).await;
        if status == 200 {
            let state = body["entries"]
                .as_array()
                .and_then(|e| e.iter().find(|e| e["department"] == "szs-scjg"))
                .and_then(|e| e["state"].as_str())
                .map(str::to_string);
            if let Some(s) = state {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "record {id} did not come back: {status} {body}\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the log of the upgraded gateway says it did with yesterday's ledger.
const REBUILT: &str = "rebuilt from the bus topics";

async fn the_upgraded_gateway_shows_yesterdays_claims(gw: &Gateway, meta: &Value, says: &str) {
    let department = meta["tokens"]["department"].as_str().unwrap();
    // Tokens issued by the earlier version still work.
    assert_eq!(
        state_of(gw, department, meta["claimed"].as_str().unwrap()).await,
        "claimed"
    );
    assert_eq!(
        state_of(gw, department, meta["returned"].as_str().unwrap()).await,
        "returned"
    );
    assert_eq!(
        state_of(gw, department, meta["open"].as_str().unwrap()).await,
        "pushed"
    );
    let (status, inbox) = get(gw, department, "/v1/inbox?status=unclaimed").await;
    assert_eq!(status, 200, "{inbox}");
    assert_eq!(inbox["records"].as_array().unwrap().len(), 1, "{inbox}");
    assert!(
        gw.logs().contains(says),
        "the upgrade says what it does ({says}):\n{}",
        gw.logs()
    );
    // And it goes on: the open record can be claimed now.
    let open = meta["open"].as_str().unwrap();
    let r = gw
        .client
        .post(gw.url(&format!("/v1/records/{open}/claim")))
        .bearer_auth(department)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_opens_a_data_directory_of_the_first_ledger_schema() {
    let dir = tempfile::tempdir().unwrap();
    let meta = unpack("v1-sqlite.tar.gz", dir.path());
    let gw = Gateway::start(&dir.path().join("data"), &[]).await;
    the_upgraded_gateway_shows_yesterdays_claims(&gw, &meta, REBUILT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_rebuilds_a_sqlite_ledger_keyed_by_record_id_into_numbered_tables() {
    let dir = tempfile::tempdir().unwrap();
    let meta = unpack("v4-sqlite.tar.gz", dir.path());
    let data = dir.path().join("data");
    let columns = |table: &str| -> Vec<String> {
        let db = rusqlite::Connection::open(data.join("ledger.db")).unwrap();
        let mut stmt = db
            .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
            .unwrap();
        let names = stmt.query_map([table], |r| r.get(0)).unwrap();
        names.map(Result::unwrap).collect()
    };
    assert!(!columns("ledger_entries").contains(&"seq".to_string()));
    let gw = Gateway::start(&data, &[]).await;
    the_upgraded_gateway_shows_yesterdays_claims(&gw, &meta, "the ledger's schema changed").await;
    assert!(gw.logs().contains(REBUILT), "{}", gw.logs());
    for table in [
        "ledger_records",
        "ledger_entries",
        "ledger_history",
        "ledger_events",
    ] {
        assert_eq!(
            columns(table)[0],
            "seq",
            "{table} is keyed by the record's number"
        );
    }
    // The three records, numbered once each, and their entries.
    let db = rusqlite::Connection::open(data.join("ledger.db")).unwrap();
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT COUNT(*) FROM ledger_ids"), 3);
    assert_eq!(count("SELECT COUNT(DISTINCT seq) FROM ledger_records"), 3);
    assert_eq!(count("SELECT COUNT(*) FROM ledger_entries"), 3);
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM ledger_entries e JOIN ledger_ids i ON i.seq = e.seq
             WHERE i.record_id = e.record_id"
        ),
        3,
        "every entry carries the number of its own record"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_opens_a_postgres_ledger_of_the_first_ledger_schema() {
    let dir = tempfile::tempdir().unwrap();
    let meta = unpack("v1-postgres.tar.gz", dir.path());
    let url = postgres_database().await;
    let out = std::process::Command::new(postgres_bin().join("psql"))
        .arg("--quiet")
        .arg("--set")
        .arg("ON_ERROR_STOP=1")
        .arg("--file")
        .arg(dir.path().join("ledger.sql"))
        .arg(&url)
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "restoring the dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gw = Gateway::start(&dir.path().join("data"), &["--ledger", &url]).await;
    the_upgraded_gateway_shows_yesterdays_claims(&gw, &meta, REBUILT).await;
}
