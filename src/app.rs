//! The composition root: the one place that knows every component. It checks everything that
//! can be checked without the network first (configuration, schemas, adapters), reports every
//! error at once, then opens the state store and the bus, serves HTTP, and shuts down in order:
//! stop accepting, let in-flight requests finish (each waits for its bus acknowledgement), flush
//! the bus.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::adapter::{self, AdapterSet};
use crate::api::{self, AppState};
use crate::auth::{self, Authenticator};
use crate::bus::{self, Bus, Topics};
use crate::config::Settings;
use crate::dlq;
use crate::golden;
use crate::ingest::{IngestError, Ingestor};
use crate::schema::Schemas;
use crate::state::{SqliteState, StateStore, TokenRow};
use crate::telemetry::{self, METRICS};

/// Loads and checks the schemas and the adapters; every problem is in the error.
pub fn load_definitions(settings: &Settings) -> anyhow::Result<(Arc<Schemas>, AdapterSet)> {
    let schemas = Schemas::load(Some(&settings.schemas_dir)).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow::anyhow!("{} schema error(s):\n{}", errors.len(), list.join("\n"))
    })?;
    let adapters = AdapterSet::load(&settings.adapters_dir, &schemas).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow::anyhow!("{} adapter error(s):\n{}", errors.len(), list.join("\n"))
    })?;
    Ok((Arc::new(schemas), adapters))
}

/// Opens the state store and the bus, creating the topics.
pub async fn open_io(
    settings: &Settings,
) -> anyhow::Result<(Arc<dyn StateStore>, Arc<dyn Bus>, Topics)> {
    let state: Arc<dyn StateStore> = Arc::new(SqliteState::open(&settings.ledger_path()?)?);
    let bus = bus::open(&settings.bus.url, &settings.data_dir, &settings.bus.kafka)?;
    let topics = Topics::new(settings.bus.topic_prefix.clone());
    bus.ensure_topics(&topics.all())
        .await
        .with_context(|| format!("creating topics on {}", bus.describe()))?;
    Ok((state, bus, topics))
}

/// `shenguan run`.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let (schemas, adapters) = load_definitions(&settings)?;
    tracing::info!(schemas = %schemas.origin, adapters = adapters.len(), "definitions loaded");
    for a in adapters.iter() {
        METRICS.register_adapter(&a.name);
    }
    let (state, bus, topics) = open_io(&settings).await?;
    let auth = Arc::new(Authenticator::new(&settings.auth.tokens, state.clone()).await?);
    let ingestor = Arc::new(Ingestor::new(
        schemas,
        bus.clone(),
        state,
        topics,
        settings.server.max_batch_records,
    ));
    let app_state = Arc::new(AppState {
        ingestor,
        adapters: Arc::new(std::sync::RwLock::new(Arc::new(adapters))),
        auth,
        max_body_bytes: settings.server.max_body_bytes,
        metrics_public: settings.auth.metrics_public,
    });
    let listener = tokio::net::TcpListener::bind(settings.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.server.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, bus = %bus.describe(), data_dir = %settings.data_dir.display(), "shenguan listening");
    let grace = Duration::from_secs(settings.server.shutdown_grace_seconds);
    axum::serve(listener, api::router(app_state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("stopped accepting requests; flushing the bus");
    bus.flush(grace).await?;
    tracing::info!("shutdown complete");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}

/// `shenguan adapters lint [PATH…]`: every error of every adapter; `Ok(false)` when any.
pub fn adapters_lint(settings: &Settings, paths: &[PathBuf]) -> anyhow::Result<bool> {
    let schemas =
        Schemas::load(Some(&settings.schemas_dir)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut errors = Vec::new();
    let files = if paths.is_empty() {
        adapter::adapter_files(&settings.adapters_dir, &mut errors)
    } else {
        expand(paths, &mut errors)
    };
    let mut checked = 0;
    for file in &files {
        checked += 1;
        if let Err(mut e) = adapter::compile_file(file, &schemas) {
            errors.append(&mut e);
        }
    }
    if paths.is_empty() {
        if let Err(set_errors) = AdapterSet::load(&settings.adapters_dir, &schemas) {
            for e in set_errors {
                if !errors.contains(&e) {
                    errors.push(e);
                }
            }
        }
    }
    for e in &errors {
        println!("{e}");
    }
    println!(
        "{checked} adapter file(s) checked, {} error(s)",
        errors.len()
    );
    Ok(errors.is_empty())
}

fn expand(paths: &[PathBuf], errors: &mut Vec<adapter::LintError>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut direct: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|f| {
                            f.is_file() && f.extension().is_some_and(|x| x == "yaml" || x == "yml")
                        })
                        .collect()
                })
                .unwrap_or_default();
            if direct.is_empty() {
                direct = adapter::adapter_files(p, errors);
            }
            direct.sort();
            files.extend(direct);
        } else {
            files.push(p.clone());
        }
    }
    files
}

/// `shenguan adapters test [PATH…] [--update]`: `Ok(false)` when any fixture differs.
pub fn adapters_test(settings: &Settings, paths: &[PathBuf], update: bool) -> anyhow::Result<bool> {
    let schemas =
        Schemas::load(Some(&settings.schemas_dir)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut errors = Vec::new();
    let files = if paths.is_empty() {
        adapter::adapter_files(&settings.adapters_dir, &mut errors)
    } else {
        expand(paths, &mut errors)
    };
    let (mut passed, mut failed) = (0, 0);
    for e in &errors {
        println!("{e}");
        failed += 1;
    }
    for file in files {
        let adapter = match adapter::compile_file(&file, &schemas) {
            Ok(a) => a,
            Err(errs) => {
                for e in errs {
                    println!("{e}");
                }
                failed += 1;
                continue;
            }
        };
        let results = golden::test_adapter(&adapter, &schemas, update);
        if results.is_empty() {
            println!(
                "FAIL {}: no fixtures in {}",
                adapter.name,
                golden::fixture_dir(&adapter).display()
            );
            failed += 1;
        }
        for r in results {
            if r.differences.is_empty() {
                passed += 1;
                println!("ok   {} {}", adapter.name, r.input.display());
            } else {
                failed += 1;
                println!("FAIL {} {}", adapter.name, r.input.display());
                for d in r.differences {
                    println!("       {d}");
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// `shenguan dlq list`.
pub async fn dlq_list(
    settings: &Settings,
    adapter: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let bus = bus::open(&settings.bus.url, &settings.data_dir, &settings.bus.kafka)?;
    let topics = Topics::new(settings.bus.topic_prefix.clone());
    let mut entries = dlq::entries(bus.as_ref(), &topics).await?;
    if let Some(a) = adapter {
        entries.retain(|e| e.adapter == a);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        print!("{}", dlq::table(&entries));
    }
    Ok(())
}

/// `shenguan dlq replay`: re-runs DLQ entries not yet replayed through the current adapters.
pub async fn dlq_replay(
    settings: &Settings,
    ids: &[String],
    adapter: Option<&str>,
    all: bool,
) -> anyhow::Result<bool> {
    anyhow::ensure!(
        all || !ids.is_empty() || adapter.is_some(),
        "say what to replay: --id ID, --adapter NAME or --all"
    );
    let (schemas, adapters) = load_definitions(settings)?;
    let (state, bus, topics) = open_io(settings).await?;
    let entries = dlq::entries(bus.as_ref(), &topics).await?;
    let done = state.replayed().await?;
    let ingestor = Ingestor::new(schemas, bus.clone(), state.clone(), topics, usize::MAX);
    let selected: Vec<&dlq::Entry> = entries
        .iter()
        .filter(|e| !done.contains(&e.id))
        .filter(|e| ids.is_empty() || ids.contains(&e.id))
        .filter(|e| adapter.is_none_or(|a| e.adapter == a))
        .collect();
    for id in ids {
        if !entries.iter().any(|e| &e.id == id) {
            anyhow::bail!("no DLQ entry with id {id}");
        }
    }
    let (mut accepted, mut duplicates, mut rejected) = (0, 0, 0);
    let mut marks = Vec::new();
    for e in selected {
        let Some(a) = adapters.get(&e.adapter) else {
            println!("{}: adapter '{}' is not loaded; skipped", e.id, e.adapter);
            continue;
        };
        let outcome = match ingestor
            .ingest(
                a,
                e.original.clone(),
                Some(e.charset.clone()),
                Some(e.id.clone()),
            )
            .await
        {
            Ok(r) if !r.rejected.is_empty() => {
                rejected += 1;
                format!(
                    "rejected again: {}",
                    r.rejected[0]
                        .errors
                        .iter()
                        .map(|x| format!("{} {}", x.path, x.reason))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
            Ok(r) if !r.duplicates.is_empty() && r.accepted.is_empty() => {
                duplicates += 1;
                "duplicate (already published)".to_string()
            }
            Ok(r) => {
                accepted += 1;
                format!(
                    "accepted as {}",
                    r.accepted
                        .iter()
                        .map(|x| x.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            Err(IngestError::Body(b, _)) => {
                rejected += 1;
                format!("rejected again: {}", b.rejection.errors[0].reason)
            }
            Err(e) => return Err(e.into()),
        };
        let kind = if outcome.starts_with("rejected") {
            "rejected"
        } else if outcome.starts_with("duplicate") {
            "duplicate"
        } else {
            "accepted"
        };
        marks.push((e.id.clone(), kind.to_string()));
        println!("{}: {outcome}", e.id);
    }
    state.mark_replayed(marks).await?;
    println!("replayed: {accepted} accepted, {duplicates} duplicate, {rejected} rejected again");
    Ok(rejected == 0)
}

/// `shenguan token issue`: prints a new token once; stores only its hash.
pub async fn token_issue(settings: &Settings, role: &str, subject: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        auth::ROLES.contains(&role),
        "role must be one of {}",
        auth::ROLES.join(", ")
    );
    anyhow::ensure!(
        role == "admin" || !subject.is_empty(),
        "a {role} token needs --subject (the adapter name or department code)"
    );
    let state = SqliteState::open(&settings.ledger_path()?)?;
    let token = auth::new_token();
    state
        .add_token(TokenRow {
            id: uuid::Uuid::new_v4().to_string(),
            role: role.into(),
            subject: subject.into(),
            sha256: auth::hash_token(&token),
        })
        .await?;
    Ok(token)
}

/// Prepares logging for a command.
pub fn init(settings: &Settings) {
    telemetry::init_logging(&settings.log.format, &settings.log.level);
}

/// Whether a path looks like a data directory created by the gateway.
pub fn has_data(dir: &Path) -> bool {
    dir.join("bus.db").exists() || dir.join("ledger.db").exists()
}
