//! `POST /v1/ingest/{adapter}`: a legacy system's raw payload through its adapter. The body is
//! read up to the limit, checked against the adapter's media type, and handed to the ingestor;
//! a request refused before decoding is dead-lettered with the start of its bytes, so an operator
//! sees every refused input.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;

use super::caller::Caller;
use super::docs::{IngestAnswer, ProblemResponse};
use super::error::ApiError;
use super::extract::Path;
use super::AppState;
use crate::adapter::format::Format;
use crate::auth::Principal;
use crate::ingest::Payload;
use crate::pipeline::Unit;

/// The format and charset of a request body, or the 415: the media type must name a format
/// the adapter reads (JSON, XML, CSV or .xlsx).
fn body_format(
    headers: &HeaderMap,
    adapter: &crate::adapter::Adapter,
) -> Result<(Format, Option<String>), ApiError> {
    let unsupported = |got: &str| ApiError::UnsupportedMediaType {
        got: got.to_string(),
        adapter: adapter.name.clone(),
        expected: adapter.format.media_type(),
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

/// Takes a legacy system's raw payload (JSON, XML, CSV or .xlsx; UTF-8 or GB18030) through the
/// adapter: every valid record is published, every rejection dead-lettered with its reason.
#[utoipa::path(post, path = "/v1/ingest/{adapter}", tag = "ingest",
    params(("adapter" = String, Path, description = "A loaded adapter, e.g. `nx-zwfw-approval`")),
    request_body(description = "The payload in the adapter's format; the charset from `Content-Type` or the adapter", content(
        (String = "application/json"), (String = "application/xml"), (String = "text/csv"),
        (Vec<u8> = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    )),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Acknowledged by the bus: accepted ids, duplicates and per-record errors", body = IngestAnswer),
        (status = 400, description = "A body that cannot be read (`malformed-body`, `undecodable-body`); it is in the DLQ", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Another adapter's token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 404, description = "No such adapter (for every token)", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 413, description = "Body or record count over the limit", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 415, description = "A media type the adapter does not read", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 429, description = "Over the token's request rate; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The bus is unavailable: nothing was accepted, send again", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn ingest(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(adapter_name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // An adapter that does not exist is 404 whoever asks: "may not" would send the operator
    // looking at the token instead of the name.
    let adapter = state
        .adapters
        .read()
        .expect("adapter set lock")
        .get(&adapter_name)
        .ok_or_else(|| ApiError::UnknownAdapter(adapter_name.clone()))?;
    match &caller.principal {
        Principal::Admin => {}
        Principal::Adapter(name) if *name == adapter_name => {}
        _ => {
            return Err(ApiError::Forbidden(format!(
                "this token may not ingest for adapter '{adapter_name}'"
            )))
        }
    }
    let (format, charset) = match body_format(&headers, &adapter) {
        Ok(f) => f,
        Err(e) => {
            return Err(dead_letter_refused(
                &state,
                &adapter_name,
                body,
                "unsupported_media_type",
                e,
            )
            .await)
        }
    };
    let too_large = |content_length| ApiError::BodyTooLarge {
        limit: state.max_body_bytes,
        content_length,
    };
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(len) = content_length {
        if len > state.max_body_bytes {
            // Refused before it is read: the DLQ entry records the refusal and the size.
            return Err(dead_letter(
                &state,
                &adapter_name,
                Vec::new(),
                "body_too_large",
                too_large(Some(len)),
            )
            .await);
        }
    }
    // Read up to the limit; a body that turns out larger is refused (its start is kept). A
    // declared length sizes the buffer once, so the body is copied once.
    let mut bytes = Vec::with_capacity(content_length.unwrap_or(0));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::BodyUnreadable(e.to_string()))?;
        if bytes.len() + chunk.len() > state.max_body_bytes {
            bytes.truncate(REFUSED_KEEP);
            return Err(dead_letter(
                &state,
                &adapter_name,
                bytes,
                "body_too_large",
                too_large(None),
            )
            .await);
        }
        bytes.extend_from_slice(&chunk);
    }
    let report = state
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
        .await?;
    Ok((StatusCode::ACCEPTED, Json(report)).into_response())
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
    refusal: ApiError,
) -> ApiError {
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
    dead_letter(state, adapter, kept, reason, refusal).await
}

async fn dead_letter(
    state: &AppState,
    adapter: &str,
    kept: Vec<u8>,
    reason: &'static str,
    refusal: ApiError,
) -> ApiError {
    let detail = refusal.problem().detail;
    let rejection = crate::pipeline::Rejection {
        index: None,
        stage: crate::pipeline::Stage::Decode,
        reason,
        errors: vec![crate::pipeline::RecordError {
            index: None,
            path: "/".into(),
            reason: detail.clone(),
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
                adapter, "decode", reason, None, &detail, &dlq_id,
            );
            ApiError::DeadLettered {
                cause: Box::new(refusal),
                dlq_id,
            }
        }
        Err(e) => {
            crate::telemetry::events::bus_error("publish", &e);
            refusal
        }
    }
}
