//! Admin endpoints for accounts: issue, rotate and revoke adapter, department and admin tokens
//! (a token is shown once; only its hash is kept), and read the audit log, which has no endpoint
//! that changes or deletes an entry.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::caller::AdminCaller;
use super::docs::ProblemResponse;
use super::error::ApiError;
use super::extract::{JsonBody, Path, Query};
use super::AppState;
use crate::auth::{self, ROLES};

/// An issued token as listed (never the token itself, nor its hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    /// `adapter`, `department` or `admin`.
    pub role: String,
    /// The adapter or department the token speaks for; empty for admin tokens.
    pub subject: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

impl From<crate::state::TokenInfo> for TokenView {
    fn from(t: crate::state::TokenInfo) -> Self {
        TokenView {
            id: t.id,
            role: t.role,
            subject: t.subject,
            created_at: t.created_at,
            revoked_at: t.revoked_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}

/// Every token ever issued, with its revocation if any.
#[utoipa::path(get, path = "/v1/admin/tokens", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = TokenList),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    _admin: AdminCaller,
) -> Result<Json<TokenList>, ApiError> {
    let tokens = state.ingestor.state.token_list().await?;
    Ok(Json(TokenList {
        tokens: tokens.into_iter().map(TokenView::from).collect(),
    }))
}

/// A token to issue.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// `adapter`, `department` or `admin`.
    role: String,
    /// The adapter or department (a loaded adapter, a catalog department); empty for admin.
    #[serde(default)]
    subject: String,
}

/// A new token, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedToken {
    pub id: String,
    pub role: String,
    pub subject: String,
    /// The bearer token: only its SHA-256 is kept.
    pub token: String,
    /// For a rotation: the id of the token it replaced, now revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

fn check_subject(state: &AppState, role: &str, subject: &str) -> Result<(), ApiError> {
    let bad = |detail: String| ApiError::invalid("bad-subject", "Unknown subject", detail);
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

/// Issues a token: `{"role": "department", "subject": "szs-scjg"}` → the token, once.
#[utoipa::path(post, path = "/v1/admin/tokens", tag = "admin", request_body = NewToken,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Issued; the token is shown this once", body = IssuedToken),
        (status = 400, description = "Unknown role or subject", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    JsonBody(body): JsonBody<NewToken>,
) -> Result<Response, ApiError> {
    check_subject(&state, &body.role, &body.subject)?;
    let (id, token) = auth::issue(
        state.ingestor.state.as_ref(),
        &body.role,
        &body.subject,
        &caller.actor(),
    )
    .await?;
    let issued = IssuedToken {
        id,
        role: body.role,
        subject: body.subject,
        token,
        revoked: None,
    };
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

/// A new token for the same role and subject; the old one is revoked.
#[utoipa::path(post, path = "/v1/admin/tokens/{id}/rotate", tag = "admin",
    params(("id" = String, Path, description = "Token id")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Issued; the token is shown this once", body = IssuedToken),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 404, description = "No such record, token or adapter", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn rotate(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.ingestor.state.as_ref();
    let old = store
        .token_list()
        .await?
        .into_iter()
        .find(|t| t.id == id && t.revoked_at.is_none())
        .ok_or_else(|| ApiError::UnknownTokenId(id.clone()))?;
    let actor = caller.actor();
    let (new_id, token) = auth::issue(store, &old.role, &old.subject, &actor).await?;
    auth::revoke(store, &id, &actor).await?;
    let issued = IssuedToken {
        id: new_id,
        role: old.role,
        subject: old.subject,
        token,
        revoked: Some(id),
    };
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

/// Revokes a token; every gateway sharing the state refuses it within 5 seconds.
#[utoipa::path(delete, path = "/v1/admin/tokens/{id}", tag = "admin",
    params(("id" = String, Path, description = "Token id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 404, description = "No such record, token or adapter", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if auth::revoke(state.ingestor.state.as_ref(), &id, &caller.actor()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::UnknownTokenId(id))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// At most this many entries, newest first (default 200, at most 10,000).
    limit: Option<usize>,
}

/// One audit log entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub at: String,
    /// `cli`, `api:admin`, or the person logged in.
    pub actor: String,
    /// `token_issued`, `token_revoked`, `liaison.set`, `dlq_replayed` …
    pub action: String,
    pub target: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditLog {
    pub entries: Vec<AuditView>,
}

/// The audit log, newest first; read-only.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", params(AuditParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = AuditLog),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn audit(
    State(state): State<Arc<AppState>>,
    _admin: AdminCaller,
    Query(q): Query<AuditParams>,
) -> Result<Json<AuditLog>, ApiError> {
    let entries = state
        .ingestor
        .state
        .audit_log(q.limit.unwrap_or(200).min(10_000))
        .await?;
    Ok(Json(AuditLog {
        entries: entries
            .into_iter()
            .map(|e| AuditView {
                at: e.at,
                actor: e.actor,
                action: e.action,
                target: e.target,
                detail: e.detail,
            })
            .collect(),
    }))
}
