//! An upgraded gateway opens yesterday's data. The fixtures in tests/fixtures/upgrade/ were made
//! by the version before the ledger became an event log (its first schema: times as text or
//! `timestamptz`, alert levels written beside the state machine): three approvals through
//! `nx-zwfw-approval`, one claimed and one returned by szs-scjg, the gateway stopped — once with
//! the SQLite ledger in the data directory, once with the ledger in PostgreSQL (`ledger.sql`, a
//! `pg_dump` of its database). `meta.json` holds the tokens it issued and the record ids. The
//! new gateway starts on them, rebuilds its ledger from the bus, and shows the same claims.
//!
//! `v4-sqlite.tar.gz` holds the same steps made by the version whose SQLite ledger clustered its
//! entries and history by record id (`WITHOUT ROWID`): today's gateway keeps that ledger and
//! copies those two tables into rowid tables, without a rebuild.

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
async fn a_gateway_keeps_a_sqlite_ledger_that_clustered_its_entries_and_copies_them_to_rowid_tables(
) {
    let dir = tempfile::tempdir().unwrap();
    let meta = unpack("v4-sqlite.tar.gz", dir.path());
    let data = dir.path().join("data");
    let clustered = |table: &str| -> bool {
        let db = rusqlite::Connection::open(data.join("ledger.db")).unwrap();
        let sql: String = db
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .unwrap();
        sql.to_uppercase().contains("WITHOUT ROWID")
    };
    assert!(clustered("ledger_entries") && clustered("ledger_history"));
    let gw = Gateway::start(&data, &[]).await;
    the_upgraded_gateway_shows_yesterdays_claims(&gw, &meta, "its rows were copied").await;
    assert!(
        !gw.logs().contains(REBUILT),
        "kept, not rebuilt:\n{}",
        gw.logs()
    );
    assert!(!clustered("ledger_entries") && !clustered("ledger_history"));
    let db = rusqlite::Connection::open(data.join("ledger.db")).unwrap();
    let leftovers: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE '%_clustered'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(leftovers, 0);
    // The three records' entries, kept.
    let entries: i64 = db
        .query_row("SELECT COUNT(*) FROM ledger_entries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(entries, 3);
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
