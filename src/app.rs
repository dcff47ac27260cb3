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
use crate::deadline::{Calendar, Policies};
use crate::deliver::Deliverer;
use crate::dlq;
use crate::golden;
use crate::ingest::{IngestError, Ingestor};
use crate::ledger::projector::{Projector, Shared};
use crate::ledger::tracker::{self, Clock, SystemClock};
use crate::route::Catalog;
use crate::schema::Schemas;
use crate::state::{SqliteState, StateStore};
use crate::telemetry::{self, METRICS};

/// Everything a gateway loads from files, checked at start-up without network I/O.
pub struct Definitions {
    pub schemas: Arc<Schemas>,
    pub adapters: AdapterSet,
    pub catalog: Arc<Catalog>,
    pub calendar: Arc<Calendar>,
    pub policies: Arc<Policies>,
    /// The policy profile in force.
    pub policy: String,
}

/// Loads the schemas and adapters; every problem is in the error.
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

/// The calendar with the site's extra years, if its directory exists.
pub fn load_calendar(settings: &Settings) -> anyhow::Result<Calendar> {
    let dir = settings
        .calendar_dir
        .is_dir()
        .then_some(settings.calendar_dir.as_path());
    Calendar::load(dir).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow::anyhow!("{} calendar error(s):\n{}", errors.len(), list.join("\n"))
    })
}

/// Loads every definition — schemas, adapters, routing catalog, calendar, policies — and reports
/// every error of all of them at once.
pub fn load_all(settings: &Settings) -> anyhow::Result<Definitions> {
    let mut problems = Vec::new();
    let core = load_definitions(settings)
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    let catalog = Catalog::load(&settings.catalog_file)
        .map_err(|errors| {
            let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
            problems.push(format!(
                "{} routing catalog error(s):\n{}",
                errors.len(),
                list.join("\n")
            ));
        })
        .ok();
    let calendar = load_calendar(settings)
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    let policies_dir = settings
        .policies_dir
        .is_dir()
        .then_some(settings.policies_dir.as_path());
    let policies = Policies::load(policies_dir)
        .map_err(|errors| {
            let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
            problems.push(format!(
                "{} policy error(s):\n{}",
                errors.len(),
                list.join("\n")
            ));
        })
        .ok();
    let policy = settings
        .policy
        .clone()
        .or_else(|| catalog.as_ref().map(|c| c.policy.clone()))
        .unwrap_or_default();
    if let Some(p) = &policies {
        if p.get(&policy).is_none() {
            problems.push(format!(
                "policy profile '{policy}' is not defined (known: {})",
                p.names().join(", ")
            ));
        }
    }
    match (core, catalog, calendar, policies) {
        (Some((schemas, adapters)), Some(catalog), Some(calendar), Some(policies))
            if problems.is_empty() =>
        {
            Ok(Definitions {
                schemas,
                adapters,
                catalog: Arc::new(catalog),
                calendar: Arc::new(calendar),
                policies: Arc::new(policies),
                policy,
            })
        }
        _ => anyhow::bail!("{}", problems.join("\n")),
    }
}

/// The state store named by the ledger URL: SQLite or PostgreSQL.
pub async fn open_state(settings: &Settings) -> anyhow::Result<Arc<dyn StateStore>> {
    let url = settings.ledger_url();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(crate::ledger::pg::PgState::connect(&url).await?));
    }
    let path = url
        .strip_prefix("sqlite:")
        .map(|p| p.trim_start_matches("//"))
        .ok_or_else(|| {
            anyhow::anyhow!("ledger URL '{url}': expected sqlite:PATH or postgres://…")
        })?;
    Ok(Arc::new(SqliteState::open(std::path::Path::new(path))?))
}

/// Opens the state store and the bus, creating the topics.
pub async fn open_io(
    settings: &Settings,
) -> anyhow::Result<(Arc<dyn StateStore>, Arc<dyn Bus>, Topics)> {
    let state = open_state(settings).await?;
    let bus = bus::open(&settings.bus.url, &settings.data_dir, &settings.bus.kafka)?;
    let topics = Topics::new(settings.bus.topic_prefix.clone());
    bus.ensure_topics(&topics.all())
        .await
        .with_context(|| format!("creating topics on {}", bus.describe()))?;
    Ok((state, bus, topics))
}

/// `shenguan run`.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let defs = load_all(&settings)?;
    tracing::info!(
        schemas = %defs.schemas.origin,
        adapters = defs.adapters.len(),
        catalog = %defs.catalog.version,
        calendar = %defs.calendar.version(),
        policy = %defs.policy,
        "definitions loaded"
    );
    for a in defs.adapters.iter() {
        METRICS.register_adapter(&a.name);
    }
    let today = crate::adapter::convert::now_shanghai().date_naive();
    METRICS
        .calendar_days_remaining
        .set(defs.calendar.days_remaining(today) as f64);
    if defs.calendar.days_remaining(today) < 60 {
        tracing::warn!(last_covered = %defs.calendar.last_covered_date(), "the working-day calendar runs out soon: add next year's State Council arrangement to the calendar directory");
    }
    let source_errors = crate::source::check(&settings.sources, &defs.adapters);
    anyhow::ensure!(
        source_errors.is_empty(),
        "{} source error(s):\n  {}",
        source_errors.len(),
        source_errors.join("\n  ")
    );
    let (state, bus, topics) = open_io(&settings).await?;
    let ledger = crate::ledger::store::open(&settings.ledger_url()).await?;
    let shared = Arc::new(Shared {
        catalog: defs.catalog.clone(),
        calendar: defs.calendar.clone(),
        policies: defs.policies.clone(),
        policy: defs.policy.clone(),
        topics: topics.clone(),
    });
    let auth = Arc::new(Authenticator::new(&settings.auth.tokens, state.clone()).await?);
    let ingestor = Arc::new(Ingestor::new(
        defs.schemas.clone(),
        bus.clone(),
        state.clone(),
        topics,
        settings.server.max_batch_records,
    ));
    let (applied, _) = tokio::sync::broadcast::channel(4096);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (stop, stopped) = tokio::sync::watch::channel(false);

    let projector = Projector {
        ledger: ledger.clone(),
        bus: bus.clone(),
        shared: shared.clone(),
        applied: applied.clone(),
    };
    let projector_stop = stopped.clone();
    let projector_task =
        tokio::spawn(async move { projector.run(projector_stop, None, true).await });
    let digest = settings
        .tracker
        .digest_time()
        .map_err(anyhow::Error::msg)?
        .map(|at| tracker::DigestSchedule {
            at,
            state: state.clone(),
        });
    let tracker_task = tokio::spawn(tracker::run(
        ledger.clone(),
        bus.clone(),
        shared.clone(),
        clock.clone(),
        tracker::TrackerOptions {
            interval: Duration::from_secs(settings.tracker.interval_seconds.max(1)),
            digest,
            retention: settings.retention.clone(),
        },
        stopped.clone(),
    ));
    let deliverer = Deliverer::new(
        ledger.clone(),
        ingestor.clone(),
        shared.clone(),
        settings.delivery.clone(),
        clock.clone(),
    )?;
    let delivery_task = tokio::spawn(deliverer.run(stopped.clone()));
    let notifier = crate::deliver::notify::Notifier::new(
        bus.clone(),
        ingestor.clone(),
        shared.clone(),
        settings.delivery.clone(),
    )?;
    let notify_task = tokio::spawn(notifier.run(stopped.clone()));

    let adapters = Arc::new(std::sync::RwLock::new(Arc::new(defs.adapters)));
    let reload_task = tokio::spawn(watch_adapters(
        settings.clone(),
        defs.schemas.clone(),
        adapters.clone(),
        stopped.clone(),
    ));
    let source_ctx = crate::source::SourceContext {
        ingestor: ingestor.clone(),
        adapters: adapters.clone(),
    };
    let kafka_servers = settings
        .bus
        .url
        .strip_prefix("kafka://")
        .map(|s| s.trim_end_matches('/').to_string());
    let source_tasks = crate::source::spawn_all(
        &settings.sources,
        source_ctx,
        kafka_servers,
        settings.bus.kafka.clone(),
        stopped.clone(),
    );
    let app_state = Arc::new(AppState {
        ingestor,
        ledger,
        shared,
        applied,
        apply_wait: Duration::from_millis(settings.delivery.apply_wait_ms),
        clock,
        adapters,
        auth,
        limiter: crate::auth::RateLimiter::new(
            settings.auth.requests_per_second,
            settings.auth.burst,
        ),
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
    tracing::info!("stopped accepting requests; stopping the ledger, tracker and delivery");
    let _ = stop.send(true);
    match projector_task.await {
        Ok(Ok(n)) => tracing::info!(applied = n, "projector stopped"),
        Ok(Err(e)) => tracing::error!(error = %e, "projector stopped with an error"),
        Err(e) => tracing::error!(error = %e, "projector task failed"),
    }
    let _ = tracker_task.await;
    let _ = delivery_task.await;
    let _ = notify_task.await;
    let _ = reload_task.await;
    for t in source_tasks {
        let _ = t.await;
    }
    tracing::info!("flushing the bus");
    bus.flush(grace).await?;
    tracing::info!("shutdown complete");
    Ok(())
}

/// `shenguan ledger rebuild`: clears the ledger projection and replays every ledger topic.
pub async fn ledger_rebuild(settings: &Settings) -> anyhow::Result<u64> {
    let defs = load_all(settings)?;
    let (_, bus, topics) = open_io(settings).await?;
    let ledger = crate::ledger::store::open(&settings.ledger_url()).await?;
    ledger.clear().await?;
    let shared = Arc::new(Shared {
        catalog: defs.catalog,
        calendar: defs.calendar,
        policies: defs.policies,
        policy: defs.policy,
        topics,
    });
    let (applied, _) = tokio::sync::broadcast::channel(16);
    let projector = Projector {
        ledger,
        bus,
        shared,
        applied,
    };
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    Ok(projector
        .run(stopped, Some(Duration::from_secs(2)), false)
        .await?)
}

/// `shenguan report --month YYYY-MM`.
pub async fn report(settings: &Settings, month: &str, format: &str) -> anyhow::Result<String> {
    let calendar = load_calendar(settings)?;
    let (from, to) = crate::ledger::report::month_bounds(month).map_err(|e| anyhow::anyhow!(e))?;
    let ledger = crate::ledger::store::open(&settings.ledger_url()).await?;
    let builder = crate::ledger::report::Monthly::new(
        month,
        Arc::new(calendar),
        crate::adapter::convert::now_shanghai(),
    );
    let r = ledger.report_month(from, to, builder).await?.finish();
    Ok(match format {
        "csv" => crate::ledger::report::to_csv(&r),
        "json" => serde_json::to_string_pretty(&r)? + "\n",
        _ => crate::ledger::report::to_table(&r),
    })
}

/// `shenguan calendar add DATE N`: the date of the Nth working day after DATE.
pub fn calendar_add(settings: &Settings, date: &str, n: u32) -> anyhow::Result<String> {
    let calendar = load_calendar(settings)?;
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map_err(|_| anyhow::anyhow!("'{date}' is not a date (YYYY-MM-DD)"))?;
    let result = calendar.add_working_days(day, n)?;
    Ok(result.format("%Y-%m-%d").to_string())
}

/// What the adapter directory holds now: every file with its size and modification time.
fn adapters_fingerprint(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                // Fixtures do not change what runs.
                if p.file_name().is_some_and(|n| n != "fixtures") {
                    stack.push(p);
                }
            } else if let Ok(m) = e.metadata() {
                out.push((
                    p,
                    m.len(),
                    m.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH),
                ));
            }
        }
    }
    out.sort();
    out
}

/// Hot reload: when an adapter or code table changes, check the whole set and swap it in
/// atomically; a broken set is reported and the running one kept. Requests in flight keep the
/// adapter they started with.
async fn watch_adapters(
    settings: Settings,
    schemas: Arc<Schemas>,
    adapters: Arc<std::sync::RwLock<Arc<AdapterSet>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if settings.adapters_reload_seconds == 0 {
        return;
    }
    let dir = settings.adapters_dir.clone();
    let mut last = adapters_fingerprint(&dir);
    loop {
        if crate::source::pause(
            Duration::from_secs(settings.adapters_reload_seconds),
            &mut stop,
        )
        .await
        {
            return;
        }
        let now = adapters_fingerprint(&dir);
        if now == last {
            continue;
        }
        last = now;
        match AdapterSet::load(&dir, &schemas) {
            Ok(set) => {
                for a in set.iter() {
                    METRICS.register_adapter(&a.name);
                }
                let n = set.len();
                *adapters.write().expect("adapter set lock") = Arc::new(set);
                tracing::info!(adapters = n, "adapters reloaded");
            }
            Err(errors) => {
                for e in &errors {
                    tracing::error!(error = %e, "adapter reload refused; the running adapters stay");
                }
            }
        }
    }
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

/// `shenguan adapters new`: a skeleton that lints clean, with every field the schema requires.
pub fn adapters_new(
    settings: &Settings,
    name: &str,
    system: &str,
    kind: &str,
    format: &str,
) -> anyhow::Result<PathBuf> {
    use crate::schema::RecordKind;
    let schemas =
        Schemas::load(Some(&settings.schemas_dir)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let kind: RecordKind = kind.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    anyhow::ensure!(
        kind.is_source_kind(),
        "kind must be approval, supervision or notice"
    );
    anyhow::ensure!(
        ["json", "xml", "csv", "xlsx"].contains(&format),
        "format must be json, xml, csv or xlsx"
    );
    anyhow::ensure!(
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "adapter name must be a-z, 0-9 and '-'"
    );
    let dir = settings.adapters_dir.join(system);
    let file = dir.join(format!("{name}.yaml"));
    anyhow::ensure!(!file.exists(), "{} exists already", file.display());
    let mut fields = String::new();
    let mut targets = Vec::new();
    for top in schemas.required(kind, "") {
        if ["record_id", "kind", "source"].contains(&top.as_str()) {
            continue;
        }
        let children = schemas.required(kind, &top);
        if children.is_empty() {
            targets.push(top);
        } else {
            targets.extend(children.into_iter().map(|c| format!("{top}.{c}")));
        }
    }
    for t in &targets {
        let info = schemas.field(kind, t);
        let convert = match info.as_ref().and_then(|i| i.format.as_deref()) {
            Some("date") => "\n    convert: date",
            Some("date-time") => "\n    convert: datetime",
            _ => "",
        };
        let hint = info
            .as_ref()
            .and_then(|i| i.enum_values.as_ref())
            .map(|v| {
                format!(
                    "    # one of: {}\n",
                    v.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .unwrap_or_default();
        let column = t.replace('.', "_").to_ascii_uppercase();
        fields.push_str(&format!("  - to: {t}\n    from: $.{column}                 # SITE: the source field\n    required: true{convert}\n{hint}"));
    }
    let records = if matches!(format, "json" | "xml") {
        "# records: $.data[*]               # where the records are inside one payload\n"
    } else {
        ""
    };
    let text = format!(
        "# {system} — {name}: <what this system sends> → canonical {versioned}\n\
         #\n\
         # Modelled on <the national exchange table it follows>. Lines a site changes are marked  # SITE:\n\
         \n\
         adapter: {name}\n\
         system: {system}                       # SITE: the system's name\n\
         kind: {kind}\n\
         format: {format}\n\
         {records}\
         key: [\"$.{first}\"]                   # SITE: the field(s) that identify a record in its system\n\
         \n\
         fields:\n{fields}",
        versioned = kind.versioned(),
        kind = kind.as_str(),
        first = targets.first().map(|t| t.replace('.', "_").to_ascii_uppercase()).unwrap_or_else(|| "ID".into()),
    );
    std::fs::create_dir_all(dir.join("fixtures").join(name))?;
    std::fs::write(&file, text)?;
    adapter::compile_file(&file, &schemas).map_err(|errors| {
        anyhow::anyhow!(
            "the skeleton does not lint: {}",
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    Ok(file)
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
    let (mut accepted, mut duplicates, mut rejected, mut left) = (0, 0, 0, 0);
    let mut marks = Vec::new();
    let mut ledger = None;
    for e in selected {
        if e.stage == "deliver" {
            // The original is the CloudEvent the webhook refused: send it again.
            let subject = serde_json::from_slice::<serde_json::Value>(&e.original)
                .ok()
                .and_then(|v| v["subject"].as_str().map(str::to_string))
                .unwrap_or_default();
            let outcome = if e.adapter == "notification" {
                // A notification goes back on the alert topic; the notifier sends it again.
                bus.publish(vec![crate::bus::Message {
                    topic: ingestor.topics.name(crate::schema::RecordKind::Alert),
                    key: subject.clone(),
                    payload: e.original.clone(),
                }])
                .await?;
                "accepted"
            } else {
                if ledger.is_none() {
                    ledger = Some(crate::ledger::store::open(&settings.ledger_url()).await?);
                }
                let store = ledger.as_ref().expect("opened");
                let n = store
                    .delivery_reset(subject.clone(), crate::adapter::convert::now_shanghai())
                    .await?;
                if n > 0 {
                    "accepted"
                } else {
                    "duplicate"
                }
            };
            if outcome == "accepted" {
                accepted += 1;
                println!("{}: delivery of {subject} scheduled again", e.id);
            } else {
                duplicates += 1;
                println!(
                    "{}: no dead delivery of {subject} left (already delivered or rescheduled)",
                    e.id
                );
            }
            marks.push((e.id.clone(), outcome.to_string()));
            continue;
        }
        let Some(a) = adapters.get(&e.adapter) else {
            println!(
                "{}: adapter '{}' is not loaded; left in the DLQ",
                e.id, e.adapter
            );
            left += 1;
            continue;
        };
        let outcome = match ingestor.ingest(a, e.payload(), Some(e.id.clone())).await {
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
    for (id, outcome) in &marks {
        state
            .audit(
                "cli",
                "dlq_replayed",
                id,
                serde_json::json!({"outcome": outcome}),
            )
            .await?;
    }
    state.mark_replayed(marks).await?;
    println!("replayed: {accepted} accepted, {duplicates} duplicate, {rejected} rejected again, {left} left in the DLQ");
    // Anything not accepted is the operator's to look at: a non-zero exit says so.
    Ok(rejected == 0 && left == 0)
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
    // A token for a subject the gateway does not know would only ever be refused.
    match role {
        "department" => {
            let catalog = Catalog::load(&settings.catalog_file).map_err(|e| {
                anyhow::anyhow!(
                    "{}",
                    e.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })?;
            anyhow::ensure!(
                catalog.department(subject).is_some(),
                "department '{subject}' is not in the routing catalog {}",
                settings.catalog_file.display()
            );
        }
        "adapter" => {
            let (_, adapters) = load_definitions(settings)?;
            anyhow::ensure!(
                adapters.get(subject).is_some(),
                "no adapter named '{subject}' in {}",
                settings.adapters_dir.display()
            );
        }
        _ => {}
    }
    let state = open_state(settings).await?;
    let (_, token) = auth::issue(state.as_ref(), role, subject, "cli").await?;
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

/// `shenguan liaison set`: checks the department and the contact, stores it, audits it.
pub async fn liaison_set(
    settings: &Settings,
    department: &str,
    body: crate::api::flows::LiaisonBody,
) -> anyhow::Result<()> {
    let defs = load_all(settings)?;
    let shared = crate::ledger::projector::Shared {
        catalog: defs.catalog.clone(),
        calendar: defs.calendar.clone(),
        policies: defs.policies.clone(),
        policy: defs.policy.clone(),
        topics: crate::bus::Topics::new(settings.bus.topic_prefix.clone()),
    };
    let value = crate::api::flows::liaison_value(
        &shared,
        department,
        body,
        crate::adapter::convert::now_shanghai(),
    )
    .map_err(anyhow::Error::msg)?;
    let state = open_state(settings).await?;
    state.set_liaison(department, value.clone()).await?;
    let masked = serde_json::json!({
        "officer": value["officer"],
        "phone": crate::mask::mask(value["phone"].as_str().unwrap_or("")),
    });
    state
        .audit("cli", "liaison.set", department, masked)
        .await?;
    Ok(())
}

/// `shenguan liaison list`: every catalog department with its liaison officer.
pub async fn liaison_list(settings: &Settings) -> anyhow::Result<String> {
    let defs = load_all(settings)?;
    let state = open_state(settings).await?;
    let liaisons = state.liaisons().await?;
    let mut out = format!(
        "{:<16} {:<24} {:<10} {:<16} {}\n",
        "CODE", "NAME", "OFFICER", "PHONE", "LEADER"
    );
    for d in &defs.catalog.departments {
        let l = liaisons
            .iter()
            .find(|(code, _)| code == &d.code)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let text = |k: &str| l[k].as_str().unwrap_or("-").to_string();
        out.push_str(&format!(
            "{:<16} {:<24} {:<10} {:<16} {}\n",
            d.code,
            d.name,
            text("officer"),
            text("phone"),
            text("leader")
        ));
    }
    Ok(out)
}
