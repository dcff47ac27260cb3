//! `GET /v1/exports/sgs?month=YYYY-MM&kind=xk|cf[&format=csv|xlsx][&department=CODE]` (admin):
//! the 双公示 file for the credit platform, as `shenguan export sgs` writes it (see
//! `cmd::export`).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::problem::Problem;
use super::{authenticate, AppState};
use crate::auth::Principal;
use crate::sgs::SgsKind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgsQuery {
    month: String,
    kind: String,
    format: Option<String>,
    department: Option<String>,
}

fn bad(slug: &str, detail: String) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        slug,
        "Invalid export request",
        detail,
    )
}

/// The 双公示 file, as an attachment.
pub async fn sgs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<SgsQuery>,
) -> Result<Response, Problem> {
    if !matches!(authenticate(&state, &headers).await?, Principal::Admin) {
        return Err(Problem::forbidden("the 双公示 export needs an admin token"));
    }
    let kind = SgsKind::parse(&q.kind).map_err(|e| bad("bad-kind", e))?;
    crate::ledger::report::month_bounds(&q.month).map_err(|e| bad("bad-month", e))?;
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
    let file = crate::cmd::export::sgs_file(
        state.ledger.as_ref(),
        &q.month,
        kind,
        format,
        q.department.as_deref(),
    )
    .await
    .map_err(|e| Problem::unavailable(format!("ledger unavailable: {e}"), 5))?;
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
