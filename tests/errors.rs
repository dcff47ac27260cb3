//! Errors that say what to do, from the real binary: started where its definitions are not, the
//! gateway names what it could not find and how to point at it; `--listen` takes a host name;
//! a report month must be YYYY-MM; token times read like every other time of the CLI.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn started_outside_the_repository_the_gateway_names_what_it_cannot_find_and_how_to_point_at_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["run", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("run shenguan");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for needle in [
        "the adapter directory ./adapters does not exist",
        "the routing catalog ./catalog/routing.yaml does not exist",
        "SHENGUAN_ADAPTERS_DIR",
        "SHENGUAN_CATALOG_FILE",
        "--config FILE",
        &dir.path().display().to_string(),
    ] {
        assert!(err.contains(needle), "`{needle}` missing from:\n{err}");
    }
    assert!(!err.contains("policy profile ''"), "{err}");

    // Pointed at the definitions with the variables it named, it starts from anywhere.
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["run", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env("SHENGUAN_ADAPTERS_DIR", repo().join("adapters"))
        .env("SHENGUAN_CATALOG_FILE", repo().join("catalog/routing.yaml"))
        .env("SHENGUAN_SCHEMAS_DIR", repo().join("schemas"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let healthy = wait_healthy(&format!("127.0.0.1:{port}"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(healthy, "the gateway did not start with SHENGUAN_* paths");
}

/// Whether `/healthz` answers at `addr` within 60 s.
fn wait_healthy(addr: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            use std::io::{Read as _, Write as _};
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn listen_takes_a_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["run", "--listen", &format!("localhost:{port}")])
        .arg("--data-dir")
        .arg(dir.path())
        .current_dir(repo())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let healthy = wait_healthy(&format!("127.0.0.1:{port}"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        healthy,
        "--listen localhost:{port} did not listen on 127.0.0.1:{port}"
    );

    // Something that is no address at all says what to give.
    let out = shenguan(&["run", "--listen", "no such host:80"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("give HOST:PORT"), "{err}");
}

#[test]
fn a_report_month_must_be_yyyy_mm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    for bad in ["2026-1", "2026-13", "2026/01"] {
        let out = shenguan(&["report", "--month", bad, "--data-dir", &data]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--month {bad} was accepted");
        assert!(
            err.contains(&format!("--month '{bad}'")) && err.contains("YYYY-MM"),
            "{err}"
        );
    }
    // A well-formed month gets past the check (to the data directory, which holds nothing).
    let out = shenguan(&["report", "--month", "2026-01", "--data-dir", &data]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("YYYY-MM") && err.contains("no shenguan data"),
        "{err}"
    );
}

#[test]
fn token_list_shows_times_in_shanghai_time_without_fractions() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let issue = |subject: &str| {
        let out = shenguan(&[
            "token",
            "issue",
            "--role",
            "department",
            "--subject",
            subject,
            "--data-dir",
            &data,
        ]);
        assert!(out.status.success());
    };
    issue("szs-scjg");
    issue("szs-wjw");
    let list = String::from_utf8(shenguan(&["token", "list", "--data-dir", &data]).stdout).unwrap();
    let id = list
        .lines()
        .find(|l| l.contains("szs-wjw"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let out = shenguan(&["token", "revoke", &id, "--data-dir", &data]);
    assert!(out.status.success());

    let out = shenguan(&["token", "list", "--data-dir", &data]);
    assert!(out.status.success());
    let list = String::from_utf8(out.stdout).unwrap();
    let time = regex::Regex::new(r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+08:00\b").unwrap();
    let rows: Vec<&str> = list.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{list}");
    for row in &rows {
        let times = time.find_iter(row).count();
        let expected = if row.contains("szs-wjw") { 2 } else { 1 };
        assert_eq!(
            times, expected,
            "issued (and revoked) times in +08:00: {row}"
        );
    }
    assert!(!list.contains("+00:00") && !list.contains('Z'), "{list}");
    assert!(
        !regex::Regex::new(r":\d{2}\.\d").unwrap().is_match(&list),
        "no fractions of a second: {list}"
    );
}
