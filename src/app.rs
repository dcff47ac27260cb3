//! The composition root: the one place that knows every component. It checks everything that
//! can be checked without the network first (configuration, schemas, adapters), reports every
//! error at once, then opens the state store and the bus, serves HTTP, and shuts down in order:
//! stop accepting, let in-flight requests finish (each waits for its bus acknowledgement), flush
//! the bus.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::adapter::AdapterSet;
use crate::api::{self, AppState};
use crate::auth::Authenticator;
use crate::bus::{self, Bus, Topics};
use crate::config::Settings;
use crate::deadline::{Calendar, Policies};
use crate::deliver::Deliverer;
use crate::ingest::Ingestor;
use crate::ledger::projector::{Projector, ProjectorStatus, Shared};
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
    if let Some(missing) = settings.missing_definitions() {
        anyhow::bail!("{missing}");
    }
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
    // Without a catalog there is no profile to check (its own error says why).
    if let (Some(p), true) = (&policies, catalog.is_some() || settings.policy.is_some()) {
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
        return Ok(Arc::new(crate::state::pg::PgState::connect(&url).await?));
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

/// `shenguan run`: the parts the role runs (see [`crate::role`]).
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let role = settings.role;
    role.check_bus(&settings.bus.url)
        .map_err(anyhow::Error::msg)?;
    let defs = load_all(&settings)?;
    let _lock = crate::datadir::lock(&settings, &format!("gateway, role {role}"))?;
    tracing::info!(
        role = %role,
        schemas = %defs.schemas.origin,
        adapters = defs.adapters.len(),
        catalog = %defs.catalog.version,
        calendar = %defs.calendar.version(),
        policy = %defs.policy,
        "definitions loaded"
    );
    let today = crate::adapter::convert::now_shanghai().date_naive();
    METRICS.build_info(role.as_str());
    if role.keeps_ledger() {
        METRICS
            .calendar_days_remaining
            .set(defs.calendar.days_remaining(today) as f64);
    }
    if role.keeps_ledger() && defs.calendar.days_remaining(today) < 60 {
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
    // An ingest instance opens no ledger: it only publishes.
    let ledger = match role.keeps_ledger() {
        true => Some(crate::ledger::store::open(&settings.ledger_url()).await?),
        false => None,
    };
    let shared = Arc::new(Shared {
        catalog: defs.catalog.clone(),
        calendar: defs.calendar.clone(),
        policies: defs.policies.clone(),
        policy: defs.policy.clone(),
        topics: topics.clone(),
    });
    METRICS.register_known(&known_labels(&defs, &shared, role));
    let auth = Arc::new(Authenticator::new(&settings.auth.tokens, state.clone()).await?);
    let mut ingestor = Ingestor::new(
        defs.schemas.clone(),
        bus.clone(),
        state.clone(),
        topics,
        settings.server.max_batch_records,
    )
    .with_policy(defs.policies.get(&defs.policy).cloned());
    // A process that ingests keeps the de-duplication table in memory, on either bus: no request
    // waits for a commit of its own besides the publish (see `ingest::dedup`).
    if role.ingests() {
        ingestor = ingestor.with_table_in_memory();
    }
    let ingestor = Arc::new(ingestor);
    let (applied, _) = tokio::sync::broadcast::channel(4096);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (stop, stopped) = tokio::sync::watch::channel(false);

    // An ingest instance has no projector: its status stays at the start (read by no route).
    let projector_status = Arc::new(ProjectorStatus::default());
    let mut tasks: Vec<(&str, tokio::task::JoinHandle<()>)> = Vec::new();
    let mut projector_task = None;
    if role.ingests() {
        tasks.push((
            "de-duplication table",
            tokio::spawn(ingestor.clone().run_table(stopped.clone())),
        ));
    }
    if let Some(ledger) = &ledger {
        let projector = Projector {
            ledger: ledger.clone(),
            bus: bus.clone(),
            shared: shared.clone(),
            applied: applied.clone(),
            status: projector_status.clone(),
            burst: settings.ledger.burst,
        };
        let projector_stop = stopped.clone();
        projector_task = Some(tokio::spawn(async move {
            projector.run(projector_stop, None, true).await
        }));
        let digest = settings
            .tracker
            .digest_time()
            .map_err(anyhow::Error::msg)?
            .map(|at| tracker::DigestSchedule {
                at,
                state: state.clone(),
            });
        tasks.push((
            "tracker",
            tokio::spawn(tracker::run(
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
            )),
        ));
        let deliverer = Deliverer::new(
            ledger.clone(),
            ingestor.clone(),
            shared.clone(),
            settings.delivery.clone(),
            clock.clone(),
        )?;
        tasks.push(("delivery", tokio::spawn(deliverer.run(stopped.clone()))));
        let notifier = crate::deliver::notify::Notifier::new(
            bus.clone(),
            ingestor.clone(),
            shared.clone(),
            settings.delivery.clone(),
        )?;
        tasks.push(("notifications", tokio::spawn(notifier.run(stopped.clone()))));
    }

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
    // Sources pull records in: ingest work.
    let no_sources = Vec::new();
    let source_tasks = crate::source::spawn_all(
        if role.ingests() {
            &settings.sources
        } else {
            &no_sources
        },
        source_ctx,
        kafka_servers,
        settings.bus.kafka.clone(),
        stopped.clone(),
    );
    let app_state = Arc::new(AppState {
        role,
        ingestor,
        ledger,
        shared,
        applied,
        projector: projector_status,
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
    tracing::info!(%addr, %role, bus = %bus.describe(), data_dir = %settings.data_dir.display(), "shenguan listening");
    let grace = Duration::from_secs(settings.server.shutdown_grace_seconds);
    // The console (/ui) is HTML for people, with its own sessions and CSRF protection; it is
    // described in the README, not in the OpenAPI document of the JSON API. It is the ledger's.
    let mut routes = api::router(app_state.clone());
    if role.keeps_ledger() {
        routes = routes.merge(crate::console::router(app_state));
    }
    axum::serve(listener, routes)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("stopped accepting requests; stopping the background tasks");
    let _ = stop.send(true);
    if let Some(task) = projector_task {
        match task.await {
            Ok(Ok(n)) => tracing::info!(applied = n, "projector stopped"),
            Ok(Err(e)) => tracing::error!(error = %e, "projector stopped with an error"),
            Err(e) => tracing::error!(error = %e, "projector task failed"),
        }
    }
    for (name, task) in tasks {
        if let Err(e) = task.await {
            tracing::error!(task = name, error = %e, "task failed");
        }
    }
    let _ = reload_task.await;
    for t in source_tasks {
        let _ = t.await;
    }
    tracing::info!("flushing the bus");
    bus.flush(grace).await?;
    tracing::info!("shutdown complete");
    Ok(())
}

/// The metric label values the definitions give, for the series exported from start-up: an
/// ingest instance exports the ingest series, a ledger instance the ledger's (its adapters'
/// series appear when a DLQ replay runs there).
fn known_labels(defs: &Definitions, shared: &Shared, role: crate::role::Role) -> telemetry::Known {
    let ledger = role.keeps_ledger();
    telemetry::Known {
        adapters: (defs.adapters.iter())
            .filter(|_| role.ingests())
            .map(|a| (a.name.clone(), a.kind.as_str().to_string()))
            .collect(),
        topics: shared.topics.all(),
        ledger: role.keeps_ledger(),
        ledger_topics: if ledger {
            shared.ledger_topics()
        } else {
            Vec::new()
        },
        departments: (defs.catalog.departments.iter())
            .filter(|_| ledger)
            .map(|d| (d.code.clone(), d.webhook.is_some()))
            .collect(),
        rules: (defs.policies.get(&defs.policy))
            .filter(|_| ledger)
            .map(|p| p.rules.keys().cloned().collect())
            .unwrap_or_default(),
    }
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
        if crate::stop::pause(
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
                    METRICS.register_adapter(&a.name, a.kind.as_str());
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

/// Prepares logging for a command.
pub fn init(settings: &Settings) {
    telemetry::init_logging(&settings.log.format, &settings.log.level);
}

/// Whether a path looks like a data directory created by the gateway.
pub fn has_data(dir: &Path) -> bool {
    crate::datadir::has_data(dir)
}
