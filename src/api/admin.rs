//! Admin endpoints for accounts: issue, rotate and revoke adapter, department and admin tokens
//! (a token is shown once; only its hash is kept), and read the audit log, which has no endpoint
//! that changes or deletes an entry.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::problem::Problem;
use super::{authenticate, AppState};
use crate::auth::{self, Principal, ROLES};

async fn admin(state: &AppState, headers: &HeaderMap) -> Result<(), Problem> {
    match authenticate(state, headers).await? {
        Principal::Admin => Ok(()),
        _ => Err(Problem::forbidden("this endpoint needs an admin token")),
    }
}

fn unavailable(e: impl std::fmt::Display) -> Problem {
    Problem::unavailable(format!("state store unavailable: {e}"), 5)
}

/// `GET /v1/admin/tokens`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    admin(&state, &headers).await?;
    let tokens = state
        .ingestor
        .state
        .token_list()
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({"tokens": tokens})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    role: String,
    #[serde(default)]
    subject: String,
}

fn check_subject(state: &AppState, role: &str, subject: &str) -> Result<(), Problem> {
    let bad = |detail: String| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-subject",
            "Unknown subject",
            detail,
        )
    };
    match role {
        "department" if state.shared.catalog.department(subject).is_none() => Err(bad(format!(
            "department '{subject}' is not in the routing catalog"
        ))),
        "adapter"
            if state
                .adapters
                .read()
                .expect("adapter set lock")
                .get(subject)
                .is_none() =>
        {
            Err(bad(format!("no adapter named '{subject}' is loaded")))
        }
        "admin" | "department" | "adapter" => Ok(()),
        _ => Err(bad(format!("role must be one of {}", ROLES.join(", ")))),
    }
}

/// `POST /v1/admin/tokens` `{"role": "department", "subject": "szs-scjg"}` → the token, once.
pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Json(body): Json<NewToken>,
) -> Result<Response, Problem> {
    admin(&state, &headers).await?;
    check_subject(&state, &body.role, &body.subject)?;
    let (id, token) = auth::issue(
        state.ingestor.state.as_ref(),
        &body.role,
        &body.subject,
        "api:admin",
    )
    .await
    .map_err(unavailable)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "role": body.role, "subject": body.subject, "token": token})),
    )
        .into_response())
}

/// `POST /v1/admin/tokens/{id}/rotate`: a new token for the same role and subject; the old one
/// is revoked.
pub async fn rotate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    admin(&state, &headers).await?;
    let store = state.ingestor.state.as_ref();
    let old = store
        .token_list()
        .await
        .map_err(unavailable)?
        .into_iter()
        .find(|t| t.id == id && t.revoked_at.is_none())
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "unknown-token",
                "Unknown token",
                format!("no active token with id {id}"),
            )
        })?;
    let (new_id, token) = auth::issue(store, &old.role, &old.subject, "api:admin")
        .await
        .map_err(unavailable)?;
    auth::revoke(store, &id, "api:admin")
        .await
        .map_err(unavailable)?;
    Ok((StatusCode::CREATED, Json(json!({"id": new_id, "role": old.role, "subject": old.subject, "token": token, "revoked": id}))).into_response())
}

/// `DELETE /v1/admin/tokens/{id}`.
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    admin(&state, &headers).await?;
    if auth::revoke(state.ingestor.state.as_ref(), &id, "api:admin")
        .await
        .map_err(unavailable)?
    {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-token",
            "Unknown token",
            format!("no active token with id {id}"),
        ))
    }
}

#[derive(Deserialize)]
pub struct AuditQuery {
    limit: Option<usize>,
}

/// `GET /v1/admin/audit?limit=N`: newest first.
pub async fn audit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Result<Response, Problem> {
    admin(&state, &headers).await?;
    let entries = state
        .ingestor
        .state
        .audit_log(q.limit.unwrap_or(200).min(10_000))
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({"entries": entries})).into_response())
}
