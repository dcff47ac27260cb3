//! `GET /v1/dlq/{id}/original`: the original bytes of a DLQ entry, for an admin who must see
//! exactly what a source system sent (previews and listings mask personal data; these bytes do
//! not). Every read is written to the audit log with the actor before the bytes are sent.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::problem::Problem;
use super::{authenticate, AppState};
use crate::auth::Principal;

/// `GET /v1/dlq/{id}/original` (admin): the bytes with the entry's media type and charset.
pub async fn original(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    if authenticate(&state, &headers).await? != Principal::Admin {
        return Err(Problem::forbidden(
            "the original bytes of a DLQ entry may hold personal data: this endpoint needs an admin token",
        ));
    }
    let ingestor = &state.ingestor;
    let entries = crate::dlq::entries(ingestor.bus.as_ref(), &ingestor.topics)
        .await
        .map_err(|e| Problem::unavailable(format!("cannot read the DLQ: {e}"), 5))?;
    let entry = entries.into_iter().find(|e| e.id == id).ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-dlq-entry",
            "Unknown DLQ entry",
            format!("no DLQ entry {id}"),
        )
    })?;
    crate::dlq::audit_original_read(ingestor.state.as_ref(), "api:admin", &entry)
        .await
        .map_err(|e| Problem::unavailable(format!("state store unavailable: {e}"), 5))?;
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
