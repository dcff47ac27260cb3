//! Deployment files: the Helm chart, docker-compose.yml and the Dockerfile.
//!
//! Docker and Kubernetes do not run here, so the files are checked with what does:
//! `tests/deploy/check_chart.py` lints and renders the chart with Helm's own engine
//! (helm-python-sdk, Helm v4), checks the rendered objects, the values schema, the failure cases,
//! the chart's copies of monitoring/catalog/adapter files, and the structure of docker-compose.yml
//! and the Dockerfile. Then the real gateway is started on the files a pod would see — the
//! rendered shenguan.toml with the token hashes from the Secret, and the ConfigMaps laid out as the
//! Deployment mounts them — and the compose simulator script sends traffic through it.
//! A missing Python module is a failure with instructions, never a skip.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use shenguan::config::{Overrides, Settings};

const BIN: &str = env!("CARGO_BIN_EXE_shenguan");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python(args: &[&str]) -> Output {
    Command::new("python3")
        .arg(repo().join("tests/deploy/check_chart.py"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run python3 ({e}): the deployment checks need Python 3 with the \
                 helm-python-sdk package (python3 -m pip install helm-python-sdk; scripts/test.sh \
                 installs it)"
            )
        })
}

fn explain(out: &Output) -> String {
    format!(
        "exit status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn chart_compose_file_and_dockerfile_pass_their_checks() {
    let out = python(&[]);
    assert!(
        out.status.success(),
        "tests/deploy/check_chart.py failed:\n{}",
        explain(&out)
    );
}

/// Renders the chart (default and non-default values) and lays out each pod's files in `dir`.
fn materialise(dir: &Path) {
    let out = python(&["--materialise", dir.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "rendering the chart failed:\n{}",
        explain(&out)
    );
}

fn load(path: &Path) -> Settings {
    Settings::load(Some(path), &Overrides::default())
        .unwrap_or_else(|e| panic!("the gateway refuses {}: {e:#}", path.display()))
}

#[test]
fn the_rendered_configuration_is_what_the_gateway_accepts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    materialise(tmp.path());

    let default = load(&tmp.path().join("default/shenguan.toml"));
    assert_eq!(default.server.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(default.data_dir, PathBuf::from("/var/lib/shenguan"));
    assert_eq!(
        default.adapters_dir,
        PathBuf::from("/etc/shenguan/adapters")
    );
    assert_eq!(
        default.catalog_file,
        PathBuf::from("/etc/shenguan/catalog/routing.yaml")
    );
    assert_eq!(default.bus.url, "embedded");
    assert_eq!(
        default.ledger_url(),
        "sqlite:/var/lib/shenguan/ledger.db",
        "single instance: the SQLite ledger on the data volume"
    );
    assert_eq!(default.log.format, "json");
    assert!(default.auth.tokens.is_empty());
    assert_eq!(default.ledger.burst, shenguan::config::DEFAULT_BURST);

    let production = load(&tmp.path().join("production/shenguan.toml"));
    assert_eq!(
        production.bus.url,
        "kafka://kafka-0.kafka.svc:9092,kafka-1.kafka.svc:9092"
    );
    assert_eq!(production.bus.kafka.replication_factor, 3);
    assert_eq!(
        production.bus.kafka.properties.get("security.protocol"),
        Some(&"SASL_SSL".to_string())
    );
    assert_eq!(
        production.ledger.url, None,
        "the PostgreSQL URL comes from the Secret (SHENGUAN_LEDGER), not the ConfigMap"
    );
    assert_eq!(production.ledger.burst, 8000, "ledger.burst of the values");
    assert_eq!(production.policy.as_deref(), Some("jining-2022"));
    assert_eq!(production.server.shutdown_grace_seconds, 40);
    let roles: Vec<(&str, &str)> = production
        .auth
        .tokens
        .iter()
        .map(|t| (t.role.as_str(), t.subject.as_str()))
        .collect();
    assert_eq!(
        roles,
        vec![("adapter", "nx-zwfw-approval"), ("admin", "")],
        "the token hashes from the Secret are appended to the configuration"
    );
    // The image's and docker-compose's configuration files are accepted too.
    let image = load(&repo().join("deploy/shenguan.toml"));
    assert_eq!(image.server.listen, "0.0.0.0:8080".parse().unwrap());
    let compose = load(&repo().join("deploy/compose/shenguan.toml"));
    assert_eq!(compose.bus.url, "kafka://kafka:9092");
}

/// A gateway process, killed when dropped (also when an assertion fails).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// One HTTP/1.1 request; returns (status, body).
fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, String) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(s) => s,
        Err(_) => return (0, String::new()),
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if s.write_all(head.as_bytes()).is_err() || s.write_all(body).is_err() {
        return (0, String::new());
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

/// Starts `shenguan run` on a pod's files from `materialise`, with the pod paths moved into the
/// test directory; extra arguments override the file (e.g. the bus).
fn boot(pod: &Path, extra: &[&str]) -> (Running, u16, PathBuf) {
    let etc = pod.join("etc");
    let data = pod.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let text = std::fs::read_to_string(pod.join("shenguan.toml")).expect("rendered config");
    let text = text
        .replace("/etc/shenguan/", &format!("{}/", etc.display()))
        .replace("/var/lib/shenguan", &data.display().to_string());
    let config = pod.join("local.toml");
    std::fs::write(&config, text).expect("write config");
    let port = free_port();
    let log = std::fs::File::create(pod.join("gateway.log")).expect("log file");
    let child = Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(extra)
        .env_remove("RUST_LOG")
        .env_remove("SHENGUAN_CONFIG")
        .env_remove("SHENGUAN_LEDGER")
        .env_remove("SHENGUAN_BUS")
        .env_remove("SHENGUAN_DATA_DIR")
        .env_remove("SHENGUAN_LISTEN")
        .current_dir(pod)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start shenguan");
    let mut running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if http(port, "GET", "/readyz", None, b"").0 == 200 {
            break;
        }
        if let Ok(Some(status)) = running.0.try_wait() {
            panic!(
                "the gateway exited ({status}) on the chart's files:\n{}",
                std::fs::read_to_string(pod.join("gateway.log")).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the gateway was not ready within 60 s:\n{}",
            std::fs::read_to_string(pod.join("gateway.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (running, port, config)
}

fn accepted(port: u16, adapter: &str) -> f64 {
    let (_, metrics) = http(port, "GET", "/metrics", None, b"");
    let series =
        format!("shenguan_records_ingested_total{{adapter=\"{adapter}\",outcome=\"accepted\"}}");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn the_gateway_starts_on_the_files_a_pod_mounts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    materialise(tmp.path());

    // Default values: embedded bus, SQLite ledger — exactly what the pod runs.
    let pod = tmp.path().join("default");
    let (gateway, port, config) = boot(&pod, &[]);
    assert_eq!(http(port, "GET", "/healthz", None, b"").0, 200);
    // The image's health check script (bash /dev/tcp, no curl) against the real gateway.
    for path in ["/healthz", "/readyz"] {
        let status = Command::new("bash")
            .arg(repo().join("deploy/healthcheck.sh"))
            .arg(path)
            .arg(port.to_string())
            .status()
            .expect("bash");
        assert!(status.success(), "deploy/healthcheck.sh {path} failed");
    }
    let closed = free_port();
    let status = Command::new("bash")
        .arg(repo().join("deploy/healthcheck.sh"))
        .arg("/healthz")
        .arg(closed.to_string())
        .stderr(Stdio::null())
        .status()
        .expect("bash");
    assert!(
        !status.success(),
        "the health check must fail without a gateway"
    );

    // The compose `simulator` profile: deploy/simulator.sh issues tokens in the gateway's ledger
    // and runs `shenguan demo --target`; records must arrive through the real HTTP API.
    let bin_dir = Path::new(BIN).parent().expect("bin dir");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let sim_log = std::fs::File::create(pod.join("simulator.log")).expect("log file");
    let simulator = Command::new("sh")
        .arg(repo().join("deploy/simulator.sh"))
        .env("PATH", path)
        .env("SHENGUAN_CONFIG", &config)
        .env("SHENGUAN_DEMO_TARGET", format!("http://127.0.0.1:{port}"))
        .env_remove("SHENGUAN_LEDGER")
        .env_remove("RUST_LOG")
        .current_dir(&pod)
        .stdout(Stdio::null())
        .stderr(sim_log)
        .spawn()
        .expect("start deploy/simulator.sh");
    let mut simulator = Running(simulator);
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted(port, "nx-zwfw-approval") < 1.0 {
        if let Ok(Some(status)) = simulator.0.try_wait() {
            panic!(
                "deploy/simulator.sh exited ({status}):\n{}",
                std::fs::read_to_string(pod.join("simulator.log")).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no record from the simulator within 60 s:\n{}",
            std::fs::read_to_string(pod.join("simulator.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(simulator);
    drop(gateway);

    // Non-default values: site adapter, 2027 calendar, jining-2022 policy, token hashes from the
    // Secret. Kafka and PostgreSQL are the deployment's; here the bus and ledger are overridden
    // (flags win over the file) so that everything else the pod mounts is loaded as rendered.
    let pod = tmp.path().join("production");
    let ledger = format!("sqlite:{}", pod.join("data/ledger.db").display());
    let (_gateway, port, _) = boot(&pod, &["--bus", "embedded", "--ledger", &ledger]);
    let token = std::fs::read_to_string(pod.join("adapter-token")).expect("token");
    let record =
        std::fs::read(repo().join("adapters/nx-zwfw/fixtures/nx-zwfw-approval/01-company.json"))
            .expect("fixture");
    let (status, body) = http(
        port,
        "POST",
        "/v1/ingest/nx-zwfw-approval",
        Some(token.trim()),
        &record,
    );
    assert_eq!(
        status, 202,
        "a token known only by its hash in the chart's Secret is accepted: {body}"
    );
    let (status, _) = http(
        port,
        "POST",
        "/v1/ingest/nx-zwfw-approval",
        Some("sg_not-a-known-token"),
        &record,
    );
    assert_eq!(status, 401, "an unknown token is refused");
}
