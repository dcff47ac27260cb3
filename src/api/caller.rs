//! Who is calling, as axum extractors: a handler names what it needs in its signature —
//! [`Caller`] (any valid token), [`DepartmentCaller`] (a department token), [`AdminCaller`] (an
//! admin token) — and the extractor checks the bearer token in constant time
//! ([`crate::auth::Authenticator`]), applies the token's rate limit, and refuses with the problem
//! (401, 403, 429) before the handler runs. Extractors run in argument order, so putting the
//! caller first keeps "who are you" ahead of "what did you send".

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::error::ApiError;
use super::AppState;
use crate::auth::Principal;

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// What the bearer token stands for.
    pub principal: Principal,
    /// The person acting, when a person is logged in (a console session) rather than a system
    /// holding a token; audits name them.
    pub person: Option<String>,
}

impl Caller {
    /// The caller's department code, or 403 for adapter and admin tokens.
    pub fn department(&self) -> Result<&str, ApiError> {
        match &self.principal {
            Principal::Department(d) => Ok(d),
            _ => Err(ApiError::Forbidden(
                "this endpoint needs a department token".into(),
            )),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.principal == Principal::Admin
    }

    /// `Ok` for an admin, 403 otherwise.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this endpoint needs an admin token".into(),
            ))
        }
    }

    /// The name audits record for this caller: the person when one is logged in, else the kind
    /// of token (`api:admin`, `api:department:szs-scjg`, `api:adapter:NAME`).
    pub fn actor(&self) -> String {
        if let Some(person) = &self.person {
            return person.clone();
        }
        match &self.principal {
            Principal::Admin => "api:admin".into(),
            Principal::Department(d) => format!("api:department:{d}"),
            Principal::Adapter(a) => format!("api:adapter:{a}"),
        }
    }

    /// Authenticates the bearer token of a request and applies its rate limit.
    pub async fn authenticate(state: &AppState, parts: &Parts) -> Result<Caller, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::NoToken)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(ApiError::NotBearer)?
            .trim();
        let principal = state
            .auth
            .authenticate(token)
            .await
            .ok_or(ApiError::UnknownToken)?;
        state
            .limiter
            .check(token)
            .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
        Ok(Caller {
            principal,
            person: None,
        })
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        Caller::authenticate(state, parts).await
    }
}

/// A caller with a department token, and its department.
#[derive(Debug, Clone)]
pub struct DepartmentCaller {
    pub code: String,
    pub caller: Caller,
}

impl FromRequestParts<Arc<AppState>> for DepartmentCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::authenticate(state, parts).await?;
        let code = caller.department()?.to_string();
        Ok(DepartmentCaller { code, caller })
    }
}

/// A caller with an admin token.
#[derive(Debug, Clone)]
pub struct AdminCaller(pub Caller);

impl FromRequestParts<Arc<AppState>> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::authenticate(state, parts).await?;
        caller.require_admin()?;
        Ok(AdminCaller(caller))
    }
}

/// May read `/metrics`: anyone while metrics are public (`auth.metrics_public`, the default),
/// else an admin token.
#[derive(Debug, Clone)]
pub struct MetricsReader;

impl FromRequestParts<Arc<AppState>> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if !state.metrics_public {
            let caller = Caller::authenticate(state, parts).await?;
            if !caller.is_admin() {
                return Err(ApiError::Forbidden("metrics need an admin token".into()));
            }
        }
        Ok(MetricsReader)
    }
}
