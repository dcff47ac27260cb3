//! docs/operations.md run as written, so that it cannot drift from the product: its SQLite backup
//! and restore commands against a live gateway taking records, and its nginx example in front of
//! a real gateway over TLS. The shell and nginx blocks are read from the document itself; only
//! paths and ports are substituted. A missing tool (sqlite3, nginx, openssl) is a failure with
//! instructions, never a skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use shenguan::bus::Bus as _;

const DOC: &str = "docs/operations.md";

/// The fenced blocks of `lang` in the document, in order.
fn blocks(lang: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo().join(DOC)).expect("docs/operations.md");
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        match &mut current {
            None if trimmed == format!("```{lang}") => current = Some(String::new()),
            Some(block) if trimmed == "```" => {
                out.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

/// The one block of `lang` that contains all of `needles`.
fn block(lang: &str, needles: &[&str]) -> String {
    let found: Vec<String> = blocks(lang)
        .into_iter()
        .filter(|b| needles.iter().all(|n| b.contains(n)))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{DOC}: expected one ```{lang} block with {needles:?}, found {}",
        found.len()
    );
    found.into_iter().next().unwrap()
}

/// A tool on PATH (or in /usr/sbin, where Debian puts nginx), or a failure saying how to get it.
fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed, so {DOC} cannot be checked: run the tests with \
                 `bash scripts/test.sh`, which installs it (apt-get install sqlite3 nginx-light openssl)"
            )
        })
}

fn bash(script: &str) -> String {
    let sqlite = tool("sqlite3");
    let path = format!(
        "{}:{}",
        sqlite.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .env("PATH", path)
        .output()
        .expect("bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the script failed:\n{script}\n{text}");
    text
}

/// `n` approvals of the 政务服务网 fixture with their own 办件编号, starting at `from`.
fn approvals(from: u32, n: u32) -> Vec<u8> {
    let records: Vec<Value> = (from..from + n)
        .map(|i| approval_record(i, "2026-11-02T10:00:00+08:00"))
        .collect();
    serde_json::to_vec(&records).unwrap()
}

/// Record ids on the approval topic of a bus file.
async fn approval_ids(bus: &Path) -> Vec<String> {
    let bus = shenguan::bus::embedded::EmbeddedBus::open(bus).unwrap();
    bus.read_all("shenguan.approval.v1")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|d| d.key)
        .collect()
}

async fn record_status(gw: &Gateway, admin: &str, id: &str) -> u16 {
    gw.client
        .get(gw.url(&format!("/v1/records/{id}")))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documented_sqlite_backup_taken_while_records_arrive_restores_a_ledger_that_catches_up()
{
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    let mut gw = Gateway::start(&data, &[]).await;
    let adapter = gw.token("adapter", "nx-zwfw-approval");
    let admin = gw.token("admin", "");
    let (status, body) = gw
        .ingest(
            "nx-zwfw-approval",
            &adapter,
            "application/json",
            approvals(0, 200),
        )
        .await;
    assert_eq!(status, 202, "{body}");

    // The backup block, run while more records arrive.
    let backup = block("sh", &["VACUUM INTO", "integrity_check"])
        .replace("/var/lib/shenguan", &data.display().to_string())
        .replace("/var/backups/shenguan", &backups.display().to_string());
    let sender = {
        let (client, url, token) = (
            gw.client.clone(),
            gw.url("/v1/ingest/nx-zwfw-approval"),
            adapter.clone(),
        );
        tokio::spawn(async move {
            for batch in 0..10 {
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(approvals(1000 + batch * 50, 50))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
            }
        })
    };
    let script = format!("{backup}echo \"BACKUP=$B\"\n");
    let out = tokio::task::spawn_blocking(move || bash(&script))
        .await
        .unwrap();
    sender.await.unwrap();
    assert_eq!(
        out.matches("ok\n").count(),
        2,
        "two integrity checks: {out}"
    );
    let taken = PathBuf::from(
        out.lines()
            .find_map(|l| l.strip_prefix("BACKUP="))
            .expect("the backup directory"),
    );
    let in_backup = approval_ids(&taken.join("bus.db")).await;
    assert!(
        in_backup.len() >= 200,
        "{} records in the backup",
        in_backup.len()
    );

    // After the backup: one more record, which the restore must not bring back.
    let (status, late) = gw
        .ingest(
            "nx-zwfw-approval",
            &adapter,
            "application/json",
            approvals(5000, 1),
        )
        .await;
    assert_eq!(status, 202);
    let late_id = late["accepted"][0]["id"].as_str().unwrap().to_string();
    gw.stop();

    // The restore block, without the service manager's lines.
    let restore: String = block("sh", &["rm -f /var/lib/shenguan/*.db"])
        .lines()
        .filter(|l| !l.trim_start().starts_with("systemctl"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace("/var/lib/shenguan", &data.display().to_string());
    bash(&format!("B={}\n{restore}", taken.display()));
    gw.restart().await;

    // The restored ledger applies what the restored bus holds beyond it: every record of the
    // backup is there, the one sent after it is not.
    let last = in_backup.last().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while record_status(&gw, &admin, &last).await != 200 {
        assert!(
            Instant::now() < deadline,
            "the restored ledger never caught up with the restored bus:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in in_backup.iter().step_by(37) {
        assert_eq!(record_status(&gw, &admin, id).await, 200, "{id}");
    }
    assert_eq!(record_status(&gw, &admin, &late_id).await, 404);
    // And it takes records again, after the restored ones.
    let (status, body) = gw
        .ingest(
            "nx-zwfw-approval",
            &adapter,
            "application/json",
            approvals(6000, 1),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

/// nginx in the foreground with the given configuration; stopped on drop.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_documented_nginx_example_serves_the_api_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&dir.path().join("data"), &[]).await;
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let out = Command::new(tool("openssl"))
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=shenguan.szs.gov.cn",
            "-addext",
            "subjectAltName=DNS:shenguan.szs.gov.cn",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
        ])
        .arg(tls.join("shenguan.key"))
        .arg("-out")
        .arg(tls.join("shenguan.crt"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The document's server block, on a free port, with the test's certificate and gateway.
    let port = free_port();
    let site = block("nginx", &["listen 443 ssl", "proxy_pass"])
        .replace("listen 443 ssl;", &format!("listen 127.0.0.1:{port} ssl;"))
        .replace("/etc/nginx/tls", &tls.display().to_string())
        .replace("127.0.0.1:8080", &gw.addr.to_string());
    let prefix = dir.path().join("nginx");
    std::fs::create_dir_all(&prefix).unwrap();
    std::fs::write(prefix.join("shenguan.conf"), site).unwrap();
    let p = prefix.display();
    std::fs::write(
        prefix.join("nginx.conf"),
        format!(
            "pid {p}/nginx.pid;\nerror_log {p}/error.log;\nevents {{}}\nhttp {{\n  access_log {p}/access.log;\n  \
             client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  include {p}/shenguan.conf;\n}}\n"
        ),
    )
    .unwrap();
    let nginx = tool("nginx");
    let conf = prefix.join("nginx.conf");
    let check = Command::new(&nginx)
        .arg("-t")
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "nginx -t refuses the documented example: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _nginx = Nginx(
        Command::new(&nginx)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let cert =
        reqwest::Certificate::from_pem(&std::fs::read(tls.join("shenguan.crt")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(cert)
        .resolve(
            "shenguan.szs.gov.cn",
            format!("127.0.0.1:{port}").parse().unwrap(),
        )
        .build()
        .unwrap();
    let base = format!("https://shenguan.szs.gov.cn:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.get(format!("{base}/readyz")).send().await {
            Ok(r) if r.status() == 200 => break,
            other => assert!(
                Instant::now() < deadline,
                "no answer over TLS: {other:?}\n{}",
                std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A legacy system ingests through the proxy with its bearer token.
    let token = gw.token("adapter", "nx-zwfw-approval");
    let r = client
        .post(format!("{base}/v1/ingest/nx-zwfw-approval"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(fixture("01-company.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["accepted"].as_array().unwrap().len(), 1, "{body}");
    // /metrics answers the platform's addresses (here 127.0.0.1).
    let r = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The port speaks TLS only.
    let plain = gw
        .client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        plain.status(),
        400,
        "nginx answers plain HTTP on a TLS port with 400"
    );
}
