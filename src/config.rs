//! Settings: one TOML file (`--config`, else `shenguan.toml` when present, else built-in
//! defaults), then `SHENGUAN_*` environment variables, then command-line flags. Every key is
//! documented here (`///` is the user documentation) and in `shenguan.example.toml`.
//! Unknown keys are errors: a typo must not silently fall back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::bus::kafka::KafkaSettings;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Directory for the embedded bus and the SQLite state. Default `./data`.
    pub data_dir: PathBuf,
    /// Directory of adapter files (`<system>/<name>.yaml`). Default `./adapters`;
    /// `SHENGUAN_ADAPTERS_DIR` overrides.
    pub adapters_dir: PathBuf,
    /// Directory of the canonical schemas. Default `./schemas`; when it does not exist, the
    /// schemas built into the binary are used. `SHENGUAN_SCHEMAS_DIR` overrides.
    pub schemas_dir: PathBuf,
    /// The routing catalog (划转事项清单). Default `./catalog/routing.yaml`;
    /// `SHENGUAN_CATALOG_FILE` overrides.
    pub catalog_file: PathBuf,
    /// Directory with yearly holiday files (`<year>.toml`) that add to or replace the built-in
    /// calendar, e.g. next year's State Council arrangement. Default `./calendar`; ignored when
    /// it does not exist. `SHENGUAN_CALENDAR_DIR` overrides.
    pub calendar_dir: PathBuf,
    /// Directory with a site's own policy profiles (`<name>.toml`). Default `./policies`;
    /// ignored when it does not exist. `SHENGUAN_POLICIES_DIR` overrides.
    pub policies_dir: PathBuf,
    /// The deadline policy profile (`yuanqu-2022`, `jining-2022` …); default: the catalog's.
    pub policy: Option<String>,
    /// Seconds between checks of the adapter directory for changed files; a changed adapter or
    /// code table is checked and swapped in, a broken one is reported and the old one kept.
    /// 0 turns hot reload off. Default 2.
    pub adapters_reload_seconds: u64,
    /// Pull sources: `[[sources]]` with `type = "http_poll" | "directory" | "postgres" | "kafka"`.
    pub sources: Vec<crate::source::SourceConfig>,
    /// What `shenguan run` does: `all` (default: everything in one process), `ingest` (sources,
    /// `/v1/ingest`, publishing) or `ledger` (projector, tracker, delivery, department API,
    /// console). `ingest` and `ledger` need a Kafka bus. `--role` and `SHENGUAN_ROLE` override.
    pub role: crate::role::Role,
    pub server: ServerSettings,
    pub tracker: TrackerSettings,
    pub retention: RetentionSettings,
    pub delivery: DeliverySettings,
    pub bus: BusSettings,
    pub ledger: LedgerSettings,
    pub auth: AuthSettings,
    pub log: LogSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("./data"),
            adapters_dir: PathBuf::from("./adapters"),
            schemas_dir: PathBuf::from("./schemas"),
            catalog_file: PathBuf::from("./catalog/routing.yaml"),
            calendar_dir: PathBuf::from("./calendar"),
            policies_dir: PathBuf::from("./policies"),
            policy: None,
            adapters_reload_seconds: 2,
            sources: Vec::new(),
            role: crate::role::Role::All,
            server: ServerSettings::default(),
            tracker: TrackerSettings::default(),
            retention: RetentionSettings::default(),
            delivery: DeliverySettings::default(),
            bus: BusSettings::default(),
            ledger: LedgerSettings::default(),
            auth: AuthSettings::default(),
            log: LogSettings::default(),
        }
    }
}

/// `[server]`: the HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on: `HOST:PORT`, an IP address or a host name (`localhost:8080`
    /// listens on the first address the name resolves to, IPv4 first). Default `127.0.0.1:8080`.
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes. Default 16 MiB (a 双公示 bulk export of some
    /// ten thousand rows); larger bodies get 413.
    pub max_body_bytes: usize,
    /// Largest number of records in one ingest request. Default 10,000.
    pub max_batch_records: usize,
    /// Seconds to let in-flight requests finish at shutdown. Default 30.
    pub shutdown_grace_seconds: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            max_body_bytes: 16 * 1024 * 1024,
            max_batch_records: 10_000,
            shutdown_grace_seconds: 30,
        }
    }
}

/// Reads an address to listen on: `IP:PORT` as it is, or `HOST:PORT` resolved (an IPv4 address
/// first, so that `localhost` listens where clients on this machine connect by default).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let hint = "give HOST:PORT, e.g. 127.0.0.1:8080, [::1]:8080 or localhost:8080";
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| format!("cannot listen on '{text}': {e}; {hint}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| {
            format!("cannot listen on '{text}': the name resolves to no address; {hint}")
        })
}

fn listen_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    parse_listen(&text).map_err(serde::de::Error::custom)
}

/// `[tracker]`: the deadline tracker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerSettings {
    /// Seconds between two checks of every open deadline (alerts, gauges). Default 30.
    pub interval_seconds: u64,
    /// Local time (Asia/Shanghai, `HH:MM`) from which each working day's digest goes to every
    /// department, on the alert topic and through its webhook. Empty: no digest. Default 08:30.
    pub digest_at: String,
}

impl Default for TrackerSettings {
    fn default() -> Self {
        TrackerSettings {
            interval_seconds: 30,
            digest_at: "08:30".into(),
        }
    }
}

impl TrackerSettings {
    /// The digest time, `None` when digests are off.
    pub fn digest_time(&self) -> Result<Option<chrono::NaiveTime>, String> {
        if self.digest_at.trim().is_empty() {
            return Ok(None);
        }
        chrono::NaiveTime::parse_from_str(self.digest_at.trim(), "%H:%M")
            .map(Some)
            .map_err(|_| {
                format!(
                    "tracker.digest_at: '{}' is not a time of day like 08:30",
                    self.digest_at
                )
            })
    }
}

/// `[retention]`: how long personal data is kept (个人信息保护法 第十九条: no longer than the
/// purpose needs). 0 keeps everything; the deletion runs hourly.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Days a finished record stays in the ledger after its last activity: routed, every entry
    /// claimed, returned, forwarded or closed, no follow-up open. Its entries, history and
    /// deliveries go with it. Topics keep their own retention (`ledger rebuild` restores what they
    /// still hold). Default 0: keep.
    pub ledger_days: u32,
    /// Days a DLQ entry (with the original bytes) is kept: the embedded bus deletes older
    /// ones, a Kafka DLQ topic gets `retention.ms`. Default 0: keep.
    pub dlq_days: u32,
}

/// `[delivery]`: signed webhooks to department systems.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// Attempts per record before it goes to the DLQ. Default 8.
    pub max_attempts: u32,
    /// Milliseconds before the first retry; doubled after each failure. Default 1000.
    pub initial_backoff_ms: u64,
    /// Longest wait between two attempts, in milliseconds. Default 600000 (10 minutes).
    pub max_backoff_ms: u64,
    /// Milliseconds a department system may take to answer. Default 10000.
    pub timeout_ms: u64,
    /// Milliseconds between two looks for records to deliver. Default 1000.
    pub interval_ms: u64,
    /// Milliseconds an API claim, return or feedback waits for the ledger to apply it before
    /// answering 202 instead of 200. Default 10000.
    pub apply_wait_ms: u64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            max_attempts: 8,
            initial_backoff_ms: 1000,
            max_backoff_ms: 600_000,
            timeout_ms: 10_000,
            interval_ms: 1000,
            apply_wait_ms: 10_000,
        }
    }
}

/// `[bus]`: where canonical records are published.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusSettings {
    /// `embedded` (default: SQLite file `<data_dir>/bus.db`) or `kafka://host:port[,host:port]`.
    pub url: String,
    /// Prefix of every topic name. Default `shenguan.` (topics `shenguan.approval.v1` …).
    pub topic_prefix: String,
    pub kafka: KafkaSettings,
}

impl Default for BusSettings {
    fn default() -> Self {
        BusSettings {
            url: "embedded".into(),
            topic_prefix: "shenguan.".into(),
            kafka: KafkaSettings::default(),
        }
    }
}

/// `[ledger]`: the gateway's own state (ingest de-duplication, tokens) and how the projector
/// writes the ledger.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSettings {
    /// `sqlite:PATH` (default `sqlite:<data_dir>/ledger.db`) for one gateway, or
    /// `postgres://user:password@host:port/db` when several gateway instances share the ledger.
    pub url: Option<String>,
    /// Most bus messages the projector applies in one ledger transaction (default
    /// [`DEFAULT_BURST`], at most [`MAX_BURST`]). Larger bursts apply a backlog faster on a
    /// large ledger and hold more messages in memory.
    pub burst: usize,
}

/// Most messages applied in one ledger transaction unless `[ledger] burst` says otherwise. Each
/// message of a burst costs about 30 KB of memory while it is worked out and written (its bytes,
/// the decoded record, the rows), and up to three bursts are in hand at once (one queued, one
/// worked out, one written); on a large ledger a larger burst writes fewer pages per record, see
/// the README's benchmarks.
pub const DEFAULT_BURST: usize = 2000;

/// The largest `[ledger] burst`.
pub const MAX_BURST: usize = 100_000;

impl Default for LedgerSettings {
    fn default() -> Self {
        LedgerSettings {
            url: None,
            burst: DEFAULT_BURST,
        }
    }
}

/// `[auth]`: bearer tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Whether `/metrics` may be scraped without a token. Default true.
    pub metrics_public: bool,
    /// Tokens given in the file as SHA-256 hashes (`shenguan token hash` prints one), in
    /// addition to those issued with `shenguan token issue`.
    pub tokens: Vec<TokenEntry>,
    /// Requests per second each token may make on average (token bucket); 0 turns the limit
    /// off. Default 100. Over the limit the answer is 429 with `Retry-After`.
    pub requests_per_second: f64,
    /// Requests a token may make in a burst above the average. Default 200.
    pub burst: f64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            metrics_public: true,
            requests_per_second: 100.0,
            burst: 200.0,
            tokens: Vec::new(),
        }
    }
}

/// One `[[auth.tokens]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// `adapter`, `department` or `admin`.
    pub role: String,
    /// The adapter name or department code; empty for `admin`.
    #[serde(default)]
    pub subject: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` (default) or `json` (for production log collection).
    pub format: String,
    /// A `tracing` filter, e.g. `info` (default) or `shenguan=debug,info`. `RUST_LOG` overrides.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// Overrides from the command line (already merged with `SHENGUAN_*` variables by clap).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub bus: Option<String>,
    pub ledger: Option<String>,
    pub role: Option<crate::role::Role>,
}

impl Settings {
    /// Reads the file (explicit path, else `shenguan.toml` if present, else defaults), then
    /// applies `SHENGUAN_KAFKA_*` variables and the overrides.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Settings> {
        let mut settings = match file {
            Some(path) => Self::from_file(path)?,
            None if Path::new("shenguan.toml").is_file() => {
                Self::from_file(Path::new("shenguan.toml"))?
            }
            None => Settings::default(),
        };
        for (key, value) in std::env::vars() {
            if let Some(prop) = key.strip_prefix("SHENGUAN_KAFKA_") {
                settings
                    .bus
                    .kafka
                    .properties
                    .insert(prop.to_ascii_lowercase().replace('_', "."), value);
            }
        }
        // Where the definitions are, e.g. for a container that mounts them elsewhere.
        for (var, path) in [
            ("SHENGUAN_ADAPTERS_DIR", &mut settings.adapters_dir),
            ("SHENGUAN_SCHEMAS_DIR", &mut settings.schemas_dir),
            ("SHENGUAN_CATALOG_FILE", &mut settings.catalog_file),
            ("SHENGUAN_CALENDAR_DIR", &mut settings.calendar_dir),
            ("SHENGUAN_POLICIES_DIR", &mut settings.policies_dir),
        ] {
            if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
                *path = PathBuf::from(v);
            }
        }
        if let Some(v) = overrides.listen {
            settings.server.listen = v;
        }
        if let Some(v) = &overrides.data_dir {
            settings.data_dir = v.clone();
        }
        if let Some(v) = &overrides.bus {
            settings.bus.url = v.clone();
        }
        if let Some(v) = &overrides.ledger {
            settings.ledger.url = Some(v.clone());
        }
        if let Some(v) = overrides.role {
            settings.role = v;
        }
        Ok(settings)
    }

    /// Why the definitions cannot be found where the settings look for them — the adapter
    /// directory and the routing catalog must exist; the schema, calendar and policy
    /// directories fall back to those built into the binary — with how to point at them.
    /// `None` when the required ones are there.
    pub fn missing_definitions(&self) -> Option<String> {
        let here = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| "the working directory".into());
        let mut missing = Vec::new();
        if !self.adapters_dir.is_dir() {
            missing.push(format!(
                "the adapter directory {} does not exist (adapters_dir, SHENGUAN_ADAPTERS_DIR)",
                self.adapters_dir.display()
            ));
        }
        if !self.catalog_file.is_file() {
            missing.push(format!(
                "the routing catalog {} does not exist (catalog_file, SHENGUAN_CATALOG_FILE)",
                self.catalog_file.display()
            ));
        }
        if missing.is_empty() {
            return None;
        }
        let mut fallbacks = Vec::new();
        for (dir, what) in [
            (&self.schemas_dir, "schemas_dir, SHENGUAN_SCHEMAS_DIR"),
            (&self.calendar_dir, "calendar_dir, SHENGUAN_CALENDAR_DIR"),
            (&self.policies_dir, "policies_dir, SHENGUAN_POLICIES_DIR"),
        ] {
            if !dir.is_dir() {
                fallbacks.push(format!("{} ({what})", dir.display()));
            }
        }
        let mut text = missing.join("\n");
        if !fallbacks.is_empty() {
            text.push_str(&format!(
                "\nnot found either, so the built-in ones would be used: {}",
                fallbacks.join(", ")
            ));
        }
        text.push_str(&format!(
            "\nRelative paths are read from the working directory ({here}). Start shenguan in the \
             directory that holds adapters/, catalog/, schemas/, calendar/ and policies/ (the \
             repository or release root), or point at them: in the configuration file named by \
             --config FILE (or SHENGUAN_CONFIG) with the keys above, or with the SHENGUAN_* \
             variables above."
        ));
        Some(text)
    }

    fn from_file(path: &Path) -> anyhow::Result<Settings> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read configuration {}: {e}", path.display()))?;
        let settings: Settings = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("configuration {}: {e}", path.display()))?;
        let burst = settings.ledger.burst;
        anyhow::ensure!(
            (1..=MAX_BURST).contains(&burst),
            "configuration {}: [ledger] burst = {burst}: must be from 1 to {MAX_BURST} messages a transaction",
            path.display()
        );
        Ok(settings)
    }

    /// The ledger URL: `sqlite:PATH` (default `sqlite:<data_dir>/ledger.db`) or `postgres://…`.
    pub fn ledger_url(&self) -> String {
        match &self.ledger.url {
            Some(url) => url.clone(),
            None => format!("sqlite:{}", self.data_dir.join("ledger.db").display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_configuration_parses_and_unknown_keys_are_errors() {
        let example = include_str!("../shenguan.example.toml");
        let s: Settings = toml::from_str(example).expect("example config parses");
        assert_eq!(s.bus.topic_prefix, "shenguan.");
        let err = toml::from_str::<Settings>("[server]\nlistne = \"1.2.3.4:1\"").unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
        let source =
            "[[sources]]\ntype = \"directory\"\nname = \"d\"\nadapter = \"a\"\npath = \"/x\"\n";
        assert_eq!(toml::from_str::<Settings>(source).unwrap().sources.len(), 1);
        let typo = format!("{source}intervall_seconds = 5\n");
        assert!(toml::from_str::<Settings>(&typo)
            .unwrap_err()
            .to_string()
            .contains("intervall_seconds"));
        let unknown = "[[sources]]\ntype = \"ftp\"\nname = \"d\"\nadapter = \"a\"\n";
        assert!(toml::from_str::<Settings>(unknown).is_err());
    }
}
