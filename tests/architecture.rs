//! The core stays pure: `crates/core` (the adapters, schemas, routing, deadlines, the ledger's
//! state machine and its storage port) depends on no async runtime, no database and no network
//! client, so the compiler keeps I/O out of it. This reads what the core depends on, through
//! `cargo metadata`, and fails on any crate that would bring I/O in.

use std::collections::{BTreeSet, HashMap};

/// Crates that do I/O (a runtime, a database, a network client or server).
const IO_CRATES: [&str; 16] = [
    "tokio",
    "async-std",
    "smol",
    "mio",
    "rusqlite",
    "libsqlite3-sys",
    "tokio-postgres",
    "postgres",
    "deadpool-postgres",
    "sqlx",
    "rdkafka",
    "reqwest",
    "hyper",
    "axum",
    "tower",
    "socket2",
];

#[test]
fn the_core_depends_on_no_runtime_database_or_network_crate() {
    let out = std::process::Command::new(env!("CARGO"))
        // The host's dependencies only: the packages of other platforms (Android's, Windows')
        // are not downloaded by a build here, and `--offline` would fail on them.
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--offline",
            "--filter-platform",
            "host-tuple",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let core = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "shenguan-core")
        .expect("the core package")["id"]
        .as_str()
        .unwrap();
    // Everything the core's normal (not dev) dependencies pull in.
    let nodes: HashMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let mut seen = BTreeSet::new();
    let mut stack = vec![core];
    while let Some(id) = stack.pop() {
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            let pkg = dep["pkg"].as_str().unwrap();
            if normal && seen.insert(names[pkg]) {
                stack.push(pkg);
            }
        }
    }
    let io: Vec<&&str> = seen.iter().filter(|n| IO_CRATES.contains(n)).collect();
    assert!(
        io.is_empty(),
        "the core depends on I/O crates {io:?}; keep I/O in the gateway crate"
    );
    assert!(seen.contains("serde_json") && seen.contains("chrono"));
}
