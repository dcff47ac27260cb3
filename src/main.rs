//! The `shenguan` command line. Parsing only: every command is carried out by `shenguan::app`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// The pipeline allocates many small strings and maps per record; mimalloc handles that pattern
/// markedly better than the system allocator (see the README's performance section).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use shenguan::config::{Overrides, Settings};
use shenguan::{app, cmd};

#[derive(Parser)]
#[command(
    name = "shenguan",
    version,
    about = "Data-exchange gateway for 审管联动 (approval ↔ supervision)"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

/// Options every command understands; flags override the file and `SHENGUAN_*` variables.
#[derive(Args, Clone)]
struct Common {
    /// Configuration file (default: shenguan.toml if present, else built-in defaults).
    #[arg(long, global = true, env = "SHENGUAN_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the embedded bus and SQLite state (default ./data).
    #[arg(long, global = true, env = "SHENGUAN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Bus URL: `embedded` or `kafka://host:port[,host:port]`.
    #[arg(long, global = true, env = "SHENGUAN_BUS")]
    bus: Option<String>,
    /// Ledger URL: `sqlite:PATH`.
    #[arg(long, global = true, env = "SHENGUAN_LEDGER")]
    ledger: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Address for the HTTP API, HOST:PORT (default 127.0.0.1:8080; a host name is resolved).
        #[arg(long, env = "SHENGUAN_LISTEN", value_parser = shenguan::config::parse_listen)]
        listen: Option<SocketAddr>,
        /// all (default: everything in one process), ingest (sources, /v1/ingest, publishing) or
        /// ledger (projector, tracker, delivery, department API, console); ingest and ledger
        /// need a Kafka bus.
        #[arg(long, env = "SHENGUAN_ROLE", value_enum)]
        role: Option<shenguan::role::Role>,
    },
    /// A gateway with simulated legacy systems and departments, for a first look.
    Demo {
        /// Address for the demo gateway's HTTP API (default 127.0.0.1:8080).
        #[arg(long, env = "SHENGUAN_LISTEN", value_parser = shenguan::config::parse_listen)]
        listen: Option<SocketAddr>,
        /// Only simulate traffic against a running gateway at this URL (e.g. http://shenguan:8080).
        #[arg(long, env = "SHENGUAN_DEMO_TARGET")]
        target: Option<String>,
        /// With --target: the token of the nx-zwfw-approval adapter.
        #[arg(long, env = "SHENGUAN_DEMO_ADAPTER_TOKEN")]
        adapter_token: Option<String>,
        /// With --target: department tokens as CODE=TOKEN, comma-separated or repeated.
        #[arg(long, env = "SHENGUAN_DEMO_DEPARTMENT_TOKENS", value_delimiter = ',')]
        department_token: Vec<String>,
    },
    /// Run the benchmarks and print the table (build with --release for real numbers).
    Bench {
        /// Records for the pipeline, bus and Kafka runs.
        #[arg(long, default_value_t = 20_000)]
        records: usize,
        /// Open items for the ledger runs, comma-separated (e.g. 1000000,10000000).
        #[arg(long, value_delimiter = ',', default_value = "1000000")]
        ledger_items: Vec<usize>,
        /// PostgreSQL URL for the ledger runs on PostgreSQL (a database for benchmarks only).
        #[arg(long)]
        postgres: Option<String>,
        /// Kafka bootstrap host:port for the ingest-to-Kafka run.
        #[arg(long)]
        kafka: Option<String>,
        /// Seconds of the steady-rate latency run (0 skips it).
        #[arg(long, default_value_t = 30)]
        latency_seconds: u64,
        /// Records per second the latency run sends (a multiple of 100, in batches every 10 ms).
        #[arg(long, default_value_t = 1000)]
        latency_rate: u64,
        /// Only these workloads, comma-separated: pipeline, bus, ledger, latency, kafka, peer.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Seconds of load before the peer job's measured window.
        #[arg(long, default_value_t = 10)]
        peer_warmup: u64,
        /// Seconds of the peer job's measured window.
        #[arg(long, default_value_t = 30)]
        peer_seconds: u64,
        /// Extra arguments of the peer job's `shenguan run` on Kafka, e.g. "--role ingest".
        #[arg(long, default_value = "", allow_hyphen_values = true)]
        peer_args: String,
    },
    /// A bounded soak run of a gateway process at a steady rate with claims, returns, bad records
    /// and duplicates; fails on any loss, duplicate or steady growth of memory or open files.
    Soak {
        /// Minutes to run.
        #[arg(long, default_value_t = 30)]
        minutes: u64,
        /// Records per second.
        #[arg(long, default_value_t = 20)]
        rate: u64,
    },
    /// Check and test adapters.
    Adapters {
        #[command(subcommand)]
        command: AdaptersCommand,
    },
    /// Inspect and replay the dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Issue and hash bearer tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The monthly report (每月通报) of push and claim performance per department.
    Report {
        /// The month, YYYY-MM.
        #[arg(long)]
        month: String,
        /// Output format.
        #[arg(long, default_value = "table", value_parser = ["table", "csv", "json"])]
        format: String,
    },
    /// Files for other platforms: `sgs`, the 双公示 行政许可/行政处罚 tables for the credit platform.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
    /// Working-day arithmetic with the State Council holiday arrangements.
    Calendar {
        #[command(subcommand)]
        command: CalendarCommand,
    },
    /// Ledger maintenance.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Accounts for people, who log in to the console at /ui.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// The liaison registry: each department's liaison officer (联络员) and contact.
    Liaison {
        #[command(subcommand)]
        command: LiaisonCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account; prints its login and a one-time password, to be changed at first login.
    Add {
        /// The person's name (shown in the console, the audit log and the ledger history).
        #[arg(long)]
        name: String,
        /// The department (code from the routing catalog) the clerk works for.
        #[arg(long)]
        department: Option<String>,
        /// An operator account (DLQ, unrouted queue, accounts, report) instead of a clerk.
        #[arg(long)]
        admin: bool,
        /// The login name (default: the department code, or `admin`, and a number).
        #[arg(long)]
        login: Option<String>,
    },
    /// List accounts (never a password).
    List,
    /// Disable an account; its sessions end at once.
    Disable { login: String },
}

#[derive(Subcommand)]
enum LiaisonCommand {
    /// Set a department's liaison officer (audited).
    Set {
        /// Department code from the routing catalog.
        department: String,
        /// The liaison officer's name (联络员).
        #[arg(long)]
        officer: String,
        /// Telephone number.
        #[arg(long)]
        phone: String,
        /// The deputy head in charge (联络负责人).
        #[arg(long)]
        leader: Option<String>,
        #[arg(long)]
        email: Option<String>,
    },
    /// List every catalog department with its liaison officer.
    List,
}

#[derive(Subcommand)]
enum ExportCommand {
    /// 双公示: the month's 行政许可 (xk) or 行政处罚 (cf) decisions in the national columns.
    Sgs {
        /// The month of the decisions, YYYY-MM.
        #[arg(long)]
        month: String,
        /// xk (行政许可: approvals) or cf (行政处罚: penalties).
        #[arg(long, value_parser = ["xk", "cf"])]
        kind: String,
        /// csv (UTF-8 with a byte-order mark) or xlsx.
        #[arg(long, default_value = "csv", value_parser = ["csv", "xlsx"])]
        format: String,
        /// Only this department's: approvals routed to it, penalties it pushed.
        #[arg(long)]
        department: Option<String>,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum CalendarCommand {
    /// Print the date (YYYY-MM-DD) of the Nth working day after DATE.
    Add {
        /// The start date, YYYY-MM-DD (never counted itself).
        date: String,
        /// How many working days.
        n: u32,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Rebuild the ledger from the bus topics (stop the gateway first).
    Rebuild,
}

#[derive(Subcommand)]
enum AdaptersCommand {
    /// Check adapter files; prints every error with file and line; exits 1 on any.
    Lint {
        /// Adapter files or directories (default: the configured adapter directory).
        paths: Vec<PathBuf>,
    },
    /// Write a new adapter skeleton with every field its schema requires, and its fixture folder.
    New {
        /// Adapter name ([a-z0-9-]).
        name: String,
        /// The legacy system's folder under the adapter directory, e.g. nx-scjg.
        #[arg(long)]
        system: String,
        /// approval, supervision or notice.
        #[arg(long, default_value = "approval")]
        kind: String,
        /// json, xml, csv or xlsx.
        #[arg(long, default_value = "json")]
        format: String,
    },
    /// Run golden fixtures: raw input → expected canonical records or rejections.
    Test {
        /// Adapter files or directories (default: all adapters).
        paths: Vec<PathBuf>,
        /// Write the expectation files from the current output instead of comparing.
        #[arg(long)]
        update: bool,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List rejected inputs (personal data masked).
    List {
        /// Only this adapter's entries.
        #[arg(long)]
        adapter: Option<String>,
        /// Output format.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        /// Which entries: open (not replayed yet), replayed, superseded (replayed and failed
        /// again: the new entry replaces it) or all.
        #[arg(long, default_value = "open")]
        status: shenguan::cmd::dlq::StatusFilter,
    },
    /// One entry in full (personal data masked); --original prints its original bytes (audited).
    Show {
        /// The entry's id.
        id: String,
        /// Write the original bytes, unmasked, to stdout; recorded in the audit log.
        #[arg(long)]
        original: bool,
    },
    /// Run rejected inputs again through the current adapters and schemas.
    Replay {
        /// Replay this entry (repeatable).
        #[arg(long = "id")]
        ids: Vec<String>,
        /// Replay this adapter's entries.
        #[arg(long)]
        adapter: Option<String>,
        /// Replay every open entry (not yet replayed, not superseded).
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token, print it once and store only its hash.
    Issue {
        /// adapter, department or admin.
        #[arg(long)]
        role: String,
        /// The adapter name or department code.
        #[arg(long, default_value = "")]
        subject: String,
    },
    /// Print the SHA-256 of a token, for `[[auth.tokens]]` in the configuration file.
    Hash { token: String },
    /// List issued tokens (id, role, subject, when issued and revoked; never the token).
    List,
    /// Revoke a token by id; it is refused within seconds, by every gateway sharing the state.
    Revoke { id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let listen = match &cli.command {
        Command::Run { listen, .. } | Command::Demo { listen, .. } => *listen,
        _ => None,
    };
    let role = match &cli.command {
        Command::Run { role, .. } => *role,
        _ => None,
    };
    let overrides = Overrides {
        listen,
        data_dir: cli.common.data_dir.clone(),
        bus: cli.common.bus.clone(),
        ledger: cli.common.ledger.clone(),
        role,
    };
    let settings = match Settings::load(cli.common.config.as_deref(), &overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    app::init(&settings);
    // Commands that read what a gateway wrote refuse a directory that holds none of it.
    let reads_data = matches!(
        &cli.command,
        Command::Report { .. }
            | Command::Export { .. }
            | Command::Dlq { .. }
            | Command::Token {
                command: TokenCommand::List
            }
            | Command::Liaison {
                command: LiaisonCommand::List
            }
    );
    // What was typed is checked before where it is looked up.
    if let Command::Report { month, .. } = &cli.command {
        if let Err(e) = cmd::report::check_month(month) {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    if reads_data {
        if let Err(e) = shenguan::datadir::require_data(&settings) {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    }
    if let Command::Run { .. } = &cli.command {
        settings.role.tune_allocator();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = settings.role.max_blocking_threads() {
        builder.max_blocking_threads(n);
    }
    let runtime = builder.enable_all().build().expect("tokio runtime");
    let result: anyhow::Result<bool> = runtime.block_on(async move {
        match cli.command {
            Command::Run { .. } => app::run(settings).await.map(|_| true),
            Command::Adapters {
                command: AdaptersCommand::New { name, system, kind, format },
            } => {
                let path = cmd::adapters::adapters_new(&settings, &name, &system, &kind, &format)?;
                println!("{}", path.display());
                eprintln!("Fill in the `from:` paths, put raw examples into the fixture folder, then run `shenguan adapters test`.");
                Ok(true)
            }
            Command::Adapters {
                command: AdaptersCommand::Lint { paths },
            } => cmd::adapters::adapters_lint(&settings, &paths),
            Command::Adapters {
                command: AdaptersCommand::Test { paths, update },
            } => cmd::adapters::adapters_test(&settings, &paths, update),
            Command::Dlq {
                command: DlqCommand::List { adapter, format, status },
            } => cmd::dlq::dlq_list(&settings, adapter.as_deref(), status, format == "json")
                .await
                .map(|_| true),
            Command::Dlq {
                command: DlqCommand::Show { id, original },
            } => cmd::dlq::dlq_show(&settings, &id, original).await.map(|_| true),
            Command::Dlq {
                command: DlqCommand::Replay { ids, adapter, all },
            } => cmd::dlq::dlq_replay(&settings, &ids, adapter.as_deref(), all).await,
            Command::Token {
                command: TokenCommand::Issue { role, subject },
            } => {
                let token = cmd::token::token_issue(&settings, &role, &subject).await?;
                println!("{token}");
                eprintln!("Store this token now: it is shown once; only its hash is kept.");
                Ok(true)
            }
            Command::Demo { target: None, .. } => {
                shenguan::demo::run_embedded(settings).await.map(|_| true)
            }
            Command::Demo {
                target: Some(target),
                adapter_token,
                department_token,
                ..
            } => {
                let adapter = adapter_token
                    .ok_or_else(|| anyhow::anyhow!("--target needs --adapter-token"))?;
                let departments = department_token
                    .iter()
                    .map(|pair| {
                        pair.split_once('=')
                            .map(|(c, t)| (c.to_string(), t.to_string()))
                            .ok_or_else(|| {
                                anyhow::anyhow!("--department-token takes CODE=TOKEN, got '{pair}'")
                            })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                anyhow::ensure!(
                    !departments.is_empty(),
                    "--target needs at least one --department-token CODE=TOKEN"
                );
                let tokens = shenguan::demo::Tokens {
                    adapter,
                    departments,
                };
                shenguan::demo::simulate(target.trim_end_matches('/'), &tokens, None)
                    .await
                    .map(|_| true)
            }
            Command::Bench { records, ledger_items, postgres, kafka, latency_seconds, latency_rate, only, peer_warmup, peer_seconds, peer_args } => {
                let peer = shenguan::bench::peer::PeerOptions {
                    warmup: std::time::Duration::from_secs(peer_warmup),
                    seconds: std::time::Duration::from_secs(peer_seconds.max(1)),
                    args: peer_args.split_whitespace().map(str::to_string).collect(),
                };
                let options = shenguan::bench::BenchOptions { records, ledger_items, postgres, kafka, latency_seconds, latency_rate, only, peer };
                shenguan::bench::run(settings, options).await.map(|_| true)
            }
            Command::Soak { minutes, rate } => {
                shenguan::soak::run(settings, shenguan::soak::SoakOptions { minutes, rate }).await
            }
            Command::Report { month, format } => {
                print!("{}", cmd::report::report(&settings, &month, &format).await?);
                Ok(true)
            }
            Command::Export {
                command: ExportCommand::Sgs { month, kind, format, department, output },
            } => {
                let file = cmd::export::export_sgs(&settings, &month, &kind, &format, department.as_deref()).await?;
                match output {
                    Some(path) => {
                        std::fs::write(&path, &file.bytes)?;
                        eprintln!("{} record(s) written to {}", file.records, path.display());
                    }
                    None => {
                        use std::io::Write as _;
                        std::io::stdout().write_all(&file.bytes)?;
                    }
                }
                Ok(true)
            }
            Command::Calendar {
                command: CalendarCommand::Add { date, n },
            } => {
                println!("{}", cmd::calendar::calendar_add(&settings, &date, n)?);
                Ok(true)
            }
            Command::Ledger {
                command: LedgerCommand::Rebuild,
            } => {
                let n = cmd::ledger::ledger_rebuild(&settings).await?;
                eprintln!("ledger rebuilt from {n} messages");
                Ok(true)
            }
            Command::Liaison {
                command:
                    LiaisonCommand::Set {
                        department,
                        officer,
                        phone,
                        leader,
                        email,
                    },
            } => {
                let body =
                    shenguan::api::flows::LiaisonBody::new(officer, phone, leader, email);
                cmd::liaison::liaison_set(&settings, &department, body).await?;
                eprintln!("liaison officer of {department} set");
                Ok(true)
            }
            Command::User {
                command: UserCommand::Add { name, department, admin, login },
            } => {
                let added = cmd::user::user_add(&settings, &name, department.as_deref(), admin, login.as_deref()).await?;
                println!("login: {}\npassword: {}", added.login, added.password);
                eprintln!("The password works once: {} sets their own at the first login at /ui.", added.login);
                Ok(true)
            }
            Command::User { command: UserCommand::List } => {
                print!("{}", cmd::user::user_list(&settings).await?);
                Ok(true)
            }
            Command::User { command: UserCommand::Disable { login } } => {
                if cmd::user::user_disable(&settings, &login).await? {
                    eprintln!("account {login} disabled");
                } else {
                    eprintln!("account {login} was already disabled");
                }
                Ok(true)
            }
            Command::Liaison {
                command: LiaisonCommand::List,
            } => {
                print!("{}", cmd::liaison::liaison_list(&settings).await?);
                Ok(true)
            }
            Command::Token { command: TokenCommand::List } => {
                print!("{}", cmd::token::token_list(&settings).await?);
                Ok(true)
            }
            Command::Token { command: TokenCommand::Revoke { id } } => {
                let state = app::open_state(&settings).await?;
                anyhow::ensure!(shenguan::auth::revoke(state.as_ref(), &id, "cli").await?, "no active token with id {id}");
                eprintln!("revoked {id}");
                Ok(true)
            }
            Command::Token {
                command: TokenCommand::Hash { token },
            } => {
                println!("{}", hex::encode(shenguan::auth::hash_token(&token)));
                Ok(true)
            }
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
