//! `GET /v1/dlq/{id}/original`: the original bytes of a DLQ entry, for an admin who must see
//! exactly what a source system sent (previews and listings mask personal data; these bytes do
//! not). Every read is written to the audit log with the actor before the bytes are sent.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::caller::AdminCaller;
use super::docs::ProblemResponse;
use super::error::ApiError;
use super::extract::Path;
use super::AppState;

/// The original bytes of a DLQ entry, with the entry's media type and charset. Personal data is
/// not masked here: the read is audited.
#[utoipa::path(get, path = "/v1/dlq/{id}/original", tag = "admin",
    params(("id" = String, Path, description = "DLQ entry id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The bytes as the source system sent them", content_type = "application/octet-stream"),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token: the original bytes may hold personal data", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 404, description = "No such DLQ entry", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The bus or the state store is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn original(
    State(state): State<Arc<AppState>>,
    caller: AdminCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let ingestor = &state.ingestor;
    let entries = crate::dlq::entries(ingestor.bus.as_ref(), &ingestor.topics).await?;
    let entry = entries
        .into_iter()
        .find(|e| e.id == id)
        .ok_or_else(|| ApiError::UnknownDlqEntry(id.clone()))?;
    crate::dlq::audit_original_read(ingestor.state.as_ref(), &caller.0.actor(), &entry).await?;
    let media = if entry.content_type.is_empty() {
        "application/octet-stream".to_string()
    } else {
        entry.content_type.clone()
    };
    let content_type = match entry.charset.as_deref() {
        Some(c) if c != "binary" && !media.contains("charset") => format!("{media}; charset={c}"),
        _ => media,
    };
    let mut response = entry.original.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{}\"", entry.id))
            .unwrap_or(HeaderValue::from_static("attachment")),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}
