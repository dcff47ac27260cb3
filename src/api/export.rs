//! `GET /v1/exports/sgs` (admin): the 双公示 file for the credit platform, as `shenguan export
//! sgs` writes it (see `ledger::export`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::caller::AdminCaller;
use super::docs::ProblemResponse;
use super::error::ApiError;
use super::extract::Query;
use super::AppState;
use crate::sgs::SgsKind;

/// Which 双公示 file.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SgsParams {
    /// `YYYY-MM`: decisions dated in that month.
    month: String,
    /// `xk` (行政许可) or `cf` (行政处罚).
    kind: String,
    /// `csv` (the default) or `xlsx`.
    format: Option<String>,
    /// A catalog department: approvals routed to it, penalties it pushed. Everyone by default.
    department: Option<String>,
}

/// The 双公示 file of a month (行政许可 or 行政处罚), as an attachment, in the columns the credit
/// platform reads.
#[utoipa::path(get, path = "/v1/exports/sgs", tag = "admin", params(SgsParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The file (CSV or .xlsx)", content(
            (String = "text/csv"),
            (Vec<u8> = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        )),
        (status = 400, description = "A bad month, kind, format or department", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn sgs(
    State(state): State<Arc<AppState>>,
    _admin: AdminCaller,
    Query(q): Query<SgsParams>,
) -> Result<Response, ApiError> {
    let bad = |slug: &'static str, detail: String| {
        ApiError::invalid(slug, "Invalid export request", detail)
    };
    let kind = SgsKind::parse(&q.kind).map_err(|e| bad("bad-kind", e))?;
    crate::ledger::report::month_bounds(&q.month).map_err(ApiError::BadMonth)?;
    let format = q.format.as_deref().unwrap_or("csv");
    if !["csv", "xlsx"].contains(&format) {
        return Err(bad(
            "bad-format",
            format!("format '{format}' is not csv or xlsx"),
        ));
    }
    if let Some(d) = &q.department {
        if state.shared.catalog.department(d).is_none() {
            return Err(bad(
                "unknown-department",
                format!("'{d}' is not in the routing catalog"),
            ));
        }
    }
    let file = crate::ledger::export::sgs_file(
        state.ledger()?,
        &q.month,
        kind,
        format,
        q.department.as_deref(),
    )
    .await
    .map_err(
        |e| match e.downcast::<crate::ledger::store::LedgerError>() {
            Ok(l) => ApiError::Ledger(l),
            Err(e) => bad("bad-export", e.to_string()),
        },
    )?;
    Ok((
        [
            (header::CONTENT_TYPE, file.content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", file.file_name),
            ),
        ],
        file.bytes,
    )
        .into_response())
}
