//! The HTTP API (axum): thin handlers that move bytes and call the core. Who is calling is an
//! extractor ([`caller`]), every failure becomes a problem document in one place ([`error`]),
//! and the OpenAPI document is generated from the handlers ([`openapi`]).

pub mod actions;
pub mod admin;
pub mod caller;
pub mod dlq;
pub mod docs;
pub mod error;
pub mod export;
pub mod extract;
pub mod flows;
pub mod ingest;
pub mod openapi;
pub mod problem;
pub mod records;
pub mod served;
pub mod views;

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::adapter::AdapterSet;
use crate::auth::Authenticator;
use crate::ingest::Ingestor;
use crate::ledger::store::{LedgerError, LedgerStore};
use crate::role::Role;
use crate::telemetry::METRICS;
use caller::MetricsReader;
use docs::ProblemResponse;
use error::ApiError;

/// What the handlers share.
pub struct AppState {
    /// What this instance does: which routes it serves and what `/readyz` checks.
    pub role: Role,
    pub ingestor: Arc<Ingestor>,
    /// The ledger; `None` in an ingest instance, which serves no route that reads it.
    pub ledger: Option<Arc<dyn crate::ledger::store::LedgerStore>>,
    pub shared: Arc<crate::ledger::projector::Shared>,
    /// Ids of ledger events as the projector applies them.
    pub applied: tokio::sync::broadcast::Sender<String>,
    /// How the projector is doing (for `/readyz`).
    pub projector: Arc<crate::ledger::projector::ProjectorStatus>,
    pub apply_wait: std::time::Duration,
    pub clock: Arc<dyn crate::ledger::tracker::Clock>,
    pub adapters: Arc<std::sync::RwLock<Arc<AdapterSet>>>,
    pub auth: Arc<Authenticator>,
    /// Requests per token.
    pub limiter: crate::auth::RateLimiter,
    pub max_body_bytes: usize,
    pub metrics_public: bool,
}

impl AppState {
    /// The ledger, or why this instance has none.
    pub fn ledger(&self) -> Result<&dyn LedgerStore, LedgerError> {
        self.ledger.as_deref().ok_or_else(|| {
            LedgerError::new(
                "none",
                format!(
                    "this is an instance with --role {}, which holds no ledger",
                    self.role
                ),
            )
        })
    }
}

/// Every endpoint of the API, once: `method "path" => handler`. The router registers exactly
/// these, and [`ROUTES`] lists them for the OpenAPI document's check (`tests/api.rs` fetches
/// `/openapi.json` from a running gateway and finds each one there with its methods).
macro_rules! endpoints {
    ($($method:ident $path:literal => $handler:path),* $(,)?) => {
        /// (method, path) of every endpoint the router serves, methods in lower case.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        /// The endpoints `role` serves (see [`served::served_by`]).
        fn endpoints(mut router: Router<Arc<AppState>>, role: Role) -> Router<Arc<AppState>> {
            $(
                if serves(role, $path) {
                    router = router.route($path, axum::routing::$method($handler));
                }
            )*
            router
        }
    };
}

endpoints! {
    post "/v1/ingest/{adapter}" => ingest::ingest,
    get "/v1/inbox" => records::inbox,
    get "/v1/records/{id}" => records::record,
    post "/v1/records/{id}/claim" => records::claim,
    post "/v1/records/{id}/return" => records::give_back,
    post "/v1/records/{id}/feedback" => records::feedback,
    post "/v1/records/{id}/route" => records::route,
    get "/v1/unrouted" => records::unrouted,
    post "/v1/records/{id}/forward" => flows::forward,
    get "/v1/inquiries" => flows::inquiries,
    post "/v1/inquiries" => flows::create_inquiry,
    get "/v1/inspections" => flows::inspections,
    post "/v1/inspections" => flows::create_inspection,
    get "/v1/commitments" => flows::commitments,
    post "/v1/offline-pushes" => flows::offline_push,
    get "/v1/departments" => flows::departments,
    put "/v1/departments/{code}/liaison" => flows::set_liaison,
    get "/v1/admin/tokens" => admin::list,
    post "/v1/admin/tokens" => admin::create,
    delete "/v1/admin/tokens/{id}" => admin::revoke,
    post "/v1/admin/tokens/{id}/rotate" => admin::rotate,
    get "/v1/admin/audit" => admin::audit,
    get "/v1/dlq/{id}/original" => dlq::original,
    get "/v1/reports/monthly" => records::monthly,
    get "/v1/exports/sgs" => export::sgs,
    get "/healthz" => healthz,
    get "/readyz" => readyz,
    get "/metrics" => metrics,
    get "/openapi.json" => openapi::document,
}

/// The JSON API's router: the endpoints of [`ROUTES`] that the instance's role serves, and
/// problem documents for the rest.
pub fn router(state: Arc<AppState>) -> Router {
    let role = state.role;
    endpoints(Router::new(), role)
        .fallback(not_found)
        .with_state(state)
}

/// Whether an instance of `role` serves `path`.
fn serves(role: Role, path: &str) -> bool {
    match served::served_by(path) {
        None => true,
        Some(Role::Ingest) => role.ingests(),
        Some(_) => role.keeps_ledger(),
    }
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness, for the instance's role: the bus is reachable; an ingesting instance that keeps
/// its de-duplication table in memory has loaded it and caught up with the bus; a ledger
/// instance's ledger answers. Details an operator should see without it being a reason to stop
/// traffic follow on their own lines (ledger instances): how far the projector is behind the
/// ledger topics and whether it stalled, a policy profile decided outside its period.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "`ready`, then a line per condition to look at (`projector_lag: …`, `projector_stalled: …`, `policy_out_of_period: …`)", body = String, content_type = "text/plain"),
        (status = 503, description = "The bus is not reachable, the de-duplication table in memory is still loading, or the ledger does not answer", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
async fn readyz(State(state): State<Arc<AppState>>) -> Result<String, ApiError> {
    state
        .ingestor
        .bus
        .ready()
        .await
        .map_err(ApiError::NotReady)?;
    if state.role.ingests() && !state.ingestor.is_warm() {
        return Err(ApiError::Starting(
            "the de-duplication table is catching up with the bus".into(),
        ));
    }
    let mut out = String::from("ready\n");
    if let Some(ledger) = &state.ledger {
        ledger.positions().await?;
        let lag = crate::ledger::projector::lag(
            state.ingestor.bus.as_ref(),
            ledger.as_ref(),
            &state.shared,
        )
        .await
        .ok();
        for line in state.projector.readiness(lag) {
            out.push_str(&line);
            out.push('\n');
        }
        if let Some(why) = state
            .shared
            .policies
            .get(&state.shared.policy)
            .and_then(|p| crate::ledger::machine::out_of_period(p, state.clock.now()))
        {
            out.push_str(&format!("policy_out_of_period: {why}\n"));
        }
    }
    Ok(out)
}

/// Prometheus metrics (public unless `auth.metrics_public = false`, then an admin token).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this token", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
async fn metrics(_reader: MetricsReader) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        METRICS.render(),
    )
        .into_response()
}

/// No route matched: a path the other role serves is named as such (404 `wrong-role`), anything
/// else is 404 `not-found`.
async fn not_found(State(state): State<Arc<AppState>>, uri: axum::http::Uri) -> ApiError {
    match served::served_by(uri.path()) {
        Some(owner) if !serves(state.role, uri.path()) => ApiError::WrongRole {
            role: state.role,
            served_by: owner,
        },
        _ => ApiError::NoEndpoint,
    }
}
