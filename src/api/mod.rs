//! The HTTP API (axum): thin handlers that authenticate, move bytes and call the core.

// Problems are the cold path of a request; boxing them would only add noise.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod export;
pub mod flows;
pub mod problem;
pub mod records;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::StreamExt;

use crate::adapter::format::Format;
use crate::adapter::AdapterSet;
use crate::auth::{Authenticator, Principal};
use crate::ingest::{IngestError, Ingestor, Payload};
use crate::pipeline::Unit;
use crate::telemetry::METRICS;
use problem::Problem;

/// What the handlers share.
pub struct AppState {
    pub ingestor: Arc<Ingestor>,
    pub ledger: Arc<dyn crate::ledger::store::LedgerStore>,
    pub shared: Arc<crate::ledger::projector::Shared>,
    /// Ids of ledger events as the projector applies them.
    pub applied: tokio::sync::broadcast::Sender<String>,
    pub apply_wait: std::time::Duration,
    pub clock: Arc<dyn crate::ledger::tracker::Clock>,
    pub adapters: Arc<std::sync::RwLock<Arc<AdapterSet>>>,
    pub auth: Arc<Authenticator>,
    /// Requests per token.
    pub limiter: crate::auth::RateLimiter,
    pub max_body_bytes: usize,
    pub metrics_public: bool,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/ingest/{adapter}", post(ingest))
        .route("/v1/inbox", get(records::inbox))
        .route("/v1/records/{id}", get(records::record))
        .route("/v1/records/{id}/claim", post(records::claim))
        .route("/v1/records/{id}/return", post(records::give_back))
        .route("/v1/records/{id}/feedback", post(records::feedback))
        .route("/v1/records/{id}/route", post(records::route))
        .route("/v1/unrouted", get(records::unrouted))
        .route("/v1/records/{id}/forward", post(flows::forward))
        .route(
            "/v1/inquiries",
            get(flows::inquiries).post(flows::create_inquiry),
        )
        .route(
            "/v1/inspections",
            get(flows::inspections).post(flows::create_inspection),
        )
        .route("/v1/commitments", get(flows::commitments))
        .route("/v1/offline-pushes", post(flows::offline_push))
        .route("/v1/departments", get(flows::departments))
        .route("/v1/departments/{code}/liaison", put(flows::set_liaison))
        .route("/v1/admin/tokens", get(admin::list).post(admin::create))
        .route(
            "/v1/admin/tokens/{id}",
            axum::routing::delete(admin::revoke),
        )
        .route("/v1/admin/tokens/{id}/rotate", post(admin::rotate))
        .route("/v1/admin/audit", get(admin::audit))
        .route("/v1/reports/monthly", get(records::monthly))
        .route("/v1/exports/sgs", get(export::sgs))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Principal, Problem> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Problem::unauthorized("send 'Authorization: Bearer <token>'"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| {
            Problem::unauthorized("the Authorization header must use the Bearer scheme")
        })?;
    let principal = state
        .auth
        .authenticate(token.trim())
        .await
        .ok_or_else(|| Problem::unauthorized("the bearer token is not known or was revoked"))?;
    if let Err(wait) = state.limiter.check(token.trim()) {
        let mut p = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            "this token is over its request rate; retry later",
        );
        p.retry_after = Some(wait.max(1));
        return Err(p);
    }
    Ok(principal)
}

/// The format and charset of a request body, or the 415 problem: the media type must name a
/// format the adapter reads (JSON, XML, CSV or .xlsx).
fn body_format(
    headers: &HeaderMap,
    adapter: &crate::adapter::Adapter,
) -> Result<(Format, Option<String>), Problem> {
    let expected = adapter.format.media_type();
    let unsupported = |got: &str| {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            format!("Content-Type '{got}' is not accepted by adapter {}; send {expected} (with charset=utf-8 or gb18030 for text)", adapter.name),
        )
    };
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(unsupported("(none)"));
    };
    let mut parts = value.split(';');
    let format =
        Format::from_media_type(parts.next().unwrap_or("")).ok_or_else(|| unsupported(value))?;
    let fits =
        format == adapter.format || (adapter.format == Format::Xlsx && format == Format::Csv);
    if !fits {
        return Err(unsupported(value));
    }
    let charset = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches('"').to_string())
    });
    Ok((format, charset))
}

async fn ingest(
    State(state): State<Arc<AppState>>,
    Path(adapter_name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match ingest_inner(&state, &adapter_name, &headers, body).await {
        Ok(r) => r,
        Err(p) => p.into_response(),
    }
}

async fn ingest_inner(
    state: &AppState,
    adapter_name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let principal = authenticate(state, headers).await?;
    match &principal {
        Principal::Admin => {}
        Principal::Adapter(name) if name == adapter_name => {}
        _ => {
            return Err(Problem::forbidden(format!(
                "this token may not ingest for adapter '{adapter_name}'"
            )))
        }
    }
    let adapter = state
        .adapters
        .read()
        .expect("adapter set lock")
        .get(adapter_name)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "unknown-adapter",
                "Unknown adapter",
                format!("no adapter named '{adapter_name}' is loaded"),
            )
        })?;
    let (format, charset) = match body_format(headers, &adapter) {
        Ok(f) => f,
        Err(p) => {
            return Err(
                dead_letter_refused(state, adapter_name, body, "unsupported_media_type", p).await,
            )
        }
    };
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request body too large",
            format!(
                "the body exceeds {} bytes; split the batch",
                state.max_body_bytes
            ),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > state.max_body_bytes {
            // Refused before it is read: the DLQ entry records the refusal and the size.
            let problem = too_large().with("content_length", len);
            return Err(
                dead_letter(state, adapter_name, Vec::new(), "body_too_large", problem).await,
            );
        }
    }
    // Read up to the limit; a body that turns out larger is refused (its start is kept).
    let mut bytes = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "body-unreadable",
                "Request body unreadable",
                e.to_string(),
            )
        })?;
        if bytes.len() + chunk.len() > state.max_body_bytes {
            bytes.truncate(REFUSED_KEEP);
            return Err(
                dead_letter(state, adapter_name, bytes, "body_too_large", too_large()).await,
            );
        }
        bytes.extend_from_slice(&chunk);
    }
    match state
        .ingestor
        .ingest(
            adapter,
            Payload {
                body: bytes,
                format: Some(format),
                charset,
                unit: Unit::Body,
            },
            None,
        )
        .await
    {
        Ok(report) => Ok((StatusCode::ACCEPTED, Json(report)).into_response()),
        Err(IngestError::Body(rejection, dlq_id)) => {
            let status = StatusCode::from_u16(rejection.status).unwrap_or(StatusCode::BAD_REQUEST);
            let slug = match rejection.rejection.reason {
                "too_many_records" => "too-many-records",
                "malformed_json" | "malformed_xml" | "malformed_csv" | "malformed_xlsx" => {
                    "malformed-body"
                }
                "unsupported_format" => "unsupported-media-type",
                _ => "undecodable-body",
            };
            let detail = rejection
                .rejection
                .errors
                .first()
                .map(|e| e.reason.clone())
                .unwrap_or_default();
            Err(Problem::new(status, slug, rejection.title, detail)
                .with("dlq_id", dlq_id)
                .with("stage", rejection.rejection.stage)
                .with("reason", rejection.rejection.reason))
        }
        Err(IngestError::Bus(e)) => Err(Problem::unavailable(
            format!("{e}; nothing was accepted, send the request again"),
            5,
        )),
        Err(IngestError::State(e)) => Err(Problem::unavailable(
            format!("{e}; nothing was accepted, send the request again"),
            5,
        )),
    }
}

/// Bytes of a refused body kept in the DLQ: enough to see what was sent and by whom.
const REFUSED_KEEP: usize = 64 * 1024;

/// Dead-letters a request refused before decoding (a media type the adapter does not read, a
/// body over the limit) with the first [`REFUSED_KEEP`] bytes of it, so that an operator sees
/// every refused input; the problem then names the DLQ entry.
async fn dead_letter_refused(
    state: &AppState,
    adapter: &str,
    body: Body,
    reason: &'static str,
    problem: Problem,
) -> Problem {
    let mut kept = Vec::new();
    let mut stream = body.into_data_stream();
    while kept.len() < REFUSED_KEEP {
        match stream.next().await {
            Some(Ok(chunk)) => {
                let take = (REFUSED_KEEP - kept.len()).min(chunk.len());
                kept.extend_from_slice(&chunk[..take]);
            }
            _ => break,
        }
    }
    dead_letter(state, adapter, kept, reason, problem).await
}

async fn dead_letter(
    state: &AppState,
    adapter: &str,
    kept: Vec<u8>,
    reason: &'static str,
    problem: Problem,
) -> Problem {
    let rejection = crate::pipeline::Rejection {
        index: None,
        stage: crate::pipeline::Stage::Decode,
        reason,
        errors: vec![crate::pipeline::RecordError {
            index: None,
            path: "/".into(),
            reason: problem.detail.clone(),
        }],
        original: kept,
        charset: "utf-8".into(),
        content_type: "application/octet-stream",
        unit: Unit::Body,
        business_key: None,
    };
    let now = crate::adapter::convert::now_shanghai();
    let (dlq_id, message) = state.ingestor.dlq_message(adapter, &rejection, now, None);
    match state.ingestor.bus.publish(vec![message]).await {
        Ok(()) => {
            crate::telemetry::events::record_rejected(
                adapter,
                "decode",
                reason,
                None,
                &problem.detail,
                &dlq_id,
            );
            problem.with("dlq_id", dlq_id)
        }
        Err(e) => {
            crate::telemetry::events::bus_error("publish", &e);
            problem
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.ingestor.bus.ready().await {
        // Ready; a profile outside its period is a detail to see, not a reason to stop traffic.
        Ok(()) => match state
            .shared
            .policies
            .get(&state.shared.policy)
            .and_then(|p| crate::ledger::machine::out_of_period(p, state.clock.now()))
        {
            Some(why) => (
                StatusCode::OK,
                format!("ready\npolicy_out_of_period: {why}\n"),
            )
                .into_response(),
            None => (StatusCode::OK, "ready\n").into_response(),
        },
        Err(e) => Problem::unavailable(e.to_string(), 5).into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !state.metrics_public {
        match authenticate(&state, &headers).await {
            Ok(Principal::Admin) => {}
            Ok(_) => return Problem::forbidden("metrics need an admin token").into_response(),
            Err(p) => return p.into_response(),
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        METRICS.render(),
    )
        .into_response()
}

async fn not_found() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        "no such endpoint",
    )
}
