//! One gateway per data directory, and commands that read a directory holding no data say so.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_second_gateway_on_a_held_data_directory_refuses_to_start_and_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Gateway::start(&data, &[]).await;
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let out = shenguan(&[
        "run",
        "--listen",
        &listen,
        "--data-dir",
        &data.display().to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the second gateway started: {stderr}"
    );
    assert!(
        stderr.contains("is in use by another shenguan process")
            && stderr.contains(&format!("pid {}", first.pid().unwrap())),
        "{stderr}"
    );
    // `ledger rebuild` is refused too while the gateway runs.
    let out = shenguan(&[
        "ledger",
        "rebuild",
        "--data-dir",
        &data.display().to_string(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
    // The first one still answers.
    let health = first
        .client
        .get(first.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_killed_without_warning_leaves_no_stale_lock() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut gw = Gateway::start(&data, &[]).await;
    gw.kill9();
    // The kernel released the lock with the process: the next start takes it.
    gw.restart().await;
    let health = gw.client.get(gw.url("/healthz")).send().await.unwrap();
    assert!(health.status().is_success());
}

#[test]
fn reading_commands_on_a_directory_without_data_say_so_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("mistyped");
    let path = wrong.display().to_string();
    for args in [
        vec!["report", "--month", "2026-11", "--data-dir", &path],
        vec!["dlq", "list", "--data-dir", &path],
        vec!["token", "list", "--data-dir", &path],
        vec!["ledger", "rebuild", "--data-dir", &path],
    ] {
        let out = shenguan(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
        assert!(
            stderr.contains("no shenguan data in") && stderr.contains("mistyped"),
            "{args:?}: {stderr}"
        );
        assert!(!wrong.join("ledger.db").exists() && !wrong.join("bus.db").exists());
    }
}
