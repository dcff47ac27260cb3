//! Department and admin endpoints over the ledger: inbox, claim, return, feedback, a record with
//! its history, the unrouted queue and admin routing, the monthly report.
//!
//! A department sees and acts on only what was routed to it. Every change is published as an
//! event (claim.v1, feedback.v1) and applied by the ledger's projector, like a claim from a
//! department's own Kafka client; the handler waits for it to be applied and then answers with
//! the entry as it now stands.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::caller::{AdminCaller, Caller, DepartmentCaller};
use super::docs::{MonthlyReport, ProblemResponse};
use super::error::ApiError;
use super::extract::{JsonBody, Path, Query};
use super::views::{EntryView, HistoryView, RecordEntries, RecordEntry, RecordHistory, RecordView};
use super::{actions, AppState};
use crate::auth::Principal;
use crate::ledger::checks::{DomainError, View};
use crate::ledger::event::Channel;
use crate::ledger::store::{decode_cursor, InboxOrder, InboxQuery, InboxStatus};
use crate::ledger::{report, Entry, FeedbackType, RecordRow};

/// Records per inbox page when the request says nothing.
pub const INBOX_DEFAULT_LIMIT: usize = 100;
/// The largest inbox page; a larger `limit` is refused, not capped.
pub const INBOX_MAX_LIMIT: usize = 1000;

/// Which of the caller's entries the inbox lists.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusParam {
    /// Waiting for the department to claim (待认领).
    Unclaimed,
    /// Claimed, with or without feedback since, or closed (已认领).
    Claimed,
    /// Unclaimed and past the claim deadline (已逾期).
    Overdue,
    /// Given back as 非本部门 (已退回).
    Returned,
}

impl From<StatusParam> for InboxStatus {
    fn from(s: StatusParam) -> Self {
        match s {
            StatusParam::Unclaimed => InboxStatus::Unclaimed,
            StatusParam::Claimed => InboxStatus::Claimed,
            StatusParam::Overdue => InboxStatus::Overdue,
            StatusParam::Returned => InboxStatus::Returned,
        }
    }
}

/// The order of the inbox.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderParam {
    /// Most recently pushed first.
    #[default]
    Newest,
    /// Soonest deadline of the open obligation first; entries with nothing due last.
    Urgency,
}

impl From<OrderParam> for InboxOrder {
    fn from(o: OrderParam) -> Self {
        match o {
            OrderParam::Newest => InboxOrder::Newest,
            OrderParam::Urgency => InboxOrder::Urgency,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InboxParams {
    /// Which entries; all of the caller's when absent.
    status: Option<StatusParam>,
    /// Finds records whose 办件编号 (`case_no`), 事项名称, 相对人 name, title or id contains this text.
    q: Option<String>,
    /// `newest` (default) or `urgency`.
    order: Option<OrderParam>,
    /// The `next_cursor` of the previous page; absent for the first page.
    cursor: Option<String>,
    /// Records per page: 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// One page of a department's inbox.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboxAnswer {
    pub department: String,
    pub status: Option<StatusParam>,
    pub order: OrderParam,
    /// How many records the whole filter matches, over every page.
    pub total: u64,
    /// Records on this page.
    pub count: usize,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    pub records: Vec<RecordEntry>,
}

/// Checks an inbox request's page size and cursor and turns it into the ledger's query.
fn inbox_query(p: InboxParams) -> Result<InboxQuery, ApiError> {
    let limit = p.limit.unwrap_or(INBOX_DEFAULT_LIMIT);
    if limit > INBOX_MAX_LIMIT {
        return Err(ApiError::LimitTooLarge {
            limit,
            max: INBOX_MAX_LIMIT,
        });
    }
    if limit == 0 {
        return Err(ApiError::BadQuery(format!(
            "limit must be 1 to {INBOX_MAX_LIMIT}"
        )));
    }
    if let Some(c) = &p.cursor {
        decode_cursor(c).map_err(ApiError::BadCursor)?;
    }
    Ok(InboxQuery {
        status: p.status.map(Into::into),
        search: p.q.filter(|q| !q.trim().is_empty()),
        order: p.order.unwrap_or_default().into(),
        cursor: p.cursor,
        limit,
    })
}

/// The records routed to the caller's department, a page at a time.
#[utoipa::path(get, path = "/v1/inbox", tag = "departments", params(InboxParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of the inbox", body = InboxAnswer),
        (status = 400, description = "A bad status, order, limit (over 1000: `limit-too-large`) or cursor (`bad-cursor`)", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not a department token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn inbox(
    State(state): State<Arc<AppState>>,
    caller: DepartmentCaller,
    Query(params): Query<InboxParams>,
) -> Result<Json<InboxAnswer>, ApiError> {
    let department = caller.code;
    let (status, order) = (params.status, params.order.unwrap_or_default());
    let query = inbox_query(params)?;
    let now = state.clock.now();
    let page = state
        .ledger()?
        .inbox_page(&department, &query, now)
        .await
        .map_err(|e| match &query.cursor {
            // The store names a cursor it cannot use (e.g. from another order).
            Some(c) if e.message.contains(&format!("cursor '{c}'")) => {
                ApiError::BadCursor(e.message)
            }
            _ => ApiError::Ledger(e),
        })?;
    let records: Vec<RecordEntry> = page
        .rows
        .iter()
        .map(|(e, r)| RecordEntry::new(r, e, now))
        .collect();
    Ok(Json(InboxAnswer {
        department,
        status,
        order,
        total: page.total,
        count: records.len(),
        next_cursor: page.next,
        records,
    }))
}

/// The record and its entries as the ledger holds them, or 404.
pub(super) use super::actions::view as ledger_view;

/// The record and the caller's entry, or the error: 404 unknown, 403 not routed to the caller.
pub(crate) async fn routed_entry(
    state: &AppState,
    id: &str,
    department: &str,
) -> Result<(RecordRow, Entry), ApiError> {
    let (record, entries) = ledger_view(state, id).await?;
    let view = View {
        record: &record,
        entries: &entries,
    };
    let entry = view.entry(department)?.clone();
    Ok((record, entry))
}

/// Publishes an event and waits until the ledger applied it (see [`super::actions::publish`]).
pub(crate) use super::actions::publish as publish_and_wait;

/// The record with the department's entry as it stands: 200 when the change was applied, 202
/// when the ledger has not caught up yet.
pub(super) async fn answer(
    state: &AppState,
    id: &str,
    department: &str,
    applied: bool,
) -> Result<Response, ApiError> {
    let (record, entry) = routed_entry(state, id, department).await?;
    let status = if applied {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let body = RecordEntry::new(&record, &entry, state.clock.now());
    Ok((status, Json(body)).into_response())
}

/// A claim; an admin enters one acknowledged in writing outside the platform with
/// `department` and `document_ref`.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// Who claims (a person's name), for the history.
    actor: Option<String>,
    /// Why (for a return: required).
    reason: Option<String>,
    /// Admin only: the department an offline claim is entered for.
    department: Option<String>,
    /// Admin only: the written acknowledgement an offline claim is entered from.
    document_ref: Option<String>,
    /// Admin only: when the offline acknowledgement was given (RFC 3339).
    at: Option<String>,
}

/// Claims a record for the caller's department; idempotent for the same department.
#[utoipa::path(post, path = "/v1/records/{id}/claim", tag = "departments",
    params(("id" = String, Path, description = "Record id")),
    request_body(content = Option<ClaimBody>, description = "Optional; an admin's offline claim names the department and the document"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Claimed (or already claimed): the entry as it stands", body = RecordEntry),
        (status = 202, description = "Published; the ledger has not applied it yet", body = RecordEntry),
        (status = 400, description = "The request is not one this endpoint takes (the problem names the field)", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not routed to the caller's department", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 404, description = "No such record, token or adapter", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 409, description = "Returned or forwarded before", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn claim(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ClaimBody>,
) -> Result<Response, ApiError> {
    // An admin enters a claim acknowledged in writing outside the platform (渠道 offline).
    let offline = caller.is_admin();
    let department = if offline {
        b.department.clone().ok_or_else(|| {
            ApiError::invalid(
                "department-required",
                "Department required",
                "an admin enters an offline claim for a department: {\"department\": \"…\", \"document_ref\": \"…\"}",
            )
        })?
    } else {
        caller.department()?.to_string()
    };
    if offline && b.document_ref.is_none() {
        return Err(ApiError::invalid(
            "document-ref-required",
            "Document reference required",
            "an offline claim names the written acknowledgement: {\"document_ref\": \"…\"}",
        ));
    }
    let offline_ack = match (offline, b.document_ref) {
        (true, Some(document_ref)) => Some(actions::OfflineAck {
            document_ref,
            at: match b.at.as_deref() {
                Some(at) => Some(chrono::DateTime::parse_from_rfc3339(at).map_err(|e| {
                    ApiError::invalid(
                        "bad-time",
                        "Bad time",
                        format!("at '{at}' is not an RFC 3339 time: {e}"),
                    )
                })?),
                None => None,
            },
        }),
        _ => None,
    };
    let who = actions::Actor {
        department: department.clone(),
        name: b.actor.or_else(|| caller.person.clone()),
        channel: Channel::Rest,
    };
    let done = actions::claim(&state, &id, &who, offline_ack).await?;
    answer(&state, &id, &department, done.shown()).await
}

/// Gives a record back as 非本部门, with a reason; it goes back to routing.
#[utoipa::path(post, path = "/v1/records/{id}/return", tag = "departments",
    params(("id" = String, Path, description = "Record id")),
    request_body(content = ClaimBody, description = "`reason` is required"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Returned: the entry as it stands", body = RecordEntry),
        (status = 202, description = "Published; the ledger has not applied it yet", body = RecordEntry),
        (status = 400, description = "No reason", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 404, description = "No such record, token or adapter", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 409, description = "Already handled", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn give_back(
    State(state): State<Arc<AppState>>,
    caller: DepartmentCaller,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ClaimBody>,
) -> Result<Response, ApiError> {
    let department = caller.code;
    let who = actions::Actor {
        department: department.clone(),
        name: b.actor,
        channel: Channel::Rest,
    };
    let done = actions::give_back(&state, &id, &who, b.reason.as_deref()).await?;
    answer(&state, &id, &department, done.shown()).await
}

/// Feedback on a record: supervision started, rectification, a disposition, a reply …
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackBody {
    /// `supervision_started`, `rectification`, `disposition`, `reply`, `inspection_attendance`,
    /// `inspection_result`, `commitment_verified` or `other`.
    feedback_type: Option<String>,
    content: Option<String>,
    document_no: Option<String>,
    decided_at: Option<String>,
    actor: Option<String>,
    #[schema(value_type = Option<Object>)]
    attachments: Option<Value>,
    /// For a reply to an inquiry: whether the receiver agrees.
    agreed: Option<bool>,
    /// For `inspection_attendance`: who attends.
    #[schema(value_type = Option<Vec<String>>)]
    attendees: Option<Value>,
    /// For `commitment_verified`: `fulfilled` or `unfulfilled`.
    verification: Option<String>,
    /// For `disposition`: 整改, 撤销许可, 信用记录 …
    disposition: Option<String>,
}

/// A snake_case word of the body as the core's enum, if it is one.
fn typed<T: serde::de::DeserializeOwned>(word: &Option<String>) -> Option<T> {
    let word = word.as_deref()?;
    serde_json::from_value(Value::String(word.to_string())).ok()
}

/// Records feedback: supervision started, rectification, disposition decision, a reply, an
/// inspection's attendance or result, a commitment verification.
#[utoipa::path(post, path = "/v1/records/{id}/feedback", tag = "departments",
    params(("id" = String, Path, description = "Record id")),
    request_body = FeedbackBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Recorded: the entry as it stands", body = RecordEntry),
        (status = 202, description = "Published; the ledger has not applied it yet", body = RecordEntry),
        (status = 400, description = "A body the feedback schema refuses", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 404, description = "No such record, token or adapter", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 409, description = "Not claimed yet, or already handled", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn feedback(
    State(state): State<Arc<AppState>>,
    caller: DepartmentCaller,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<FeedbackBody>,
) -> Result<Response, ApiError> {
    let department = caller.code;
    let feedback_type: FeedbackType = typed(&b.feedback_type).ok_or_else(|| {
        ApiError::invalid(
            "bad-feedback-type",
            "Unknown feedback type",
            format!(
                "feedback_type {} is not one of supervision_started, rectification, disposition, reply, inspection_attendance, inspection_result, commitment_verified, other",
                b.feedback_type.as_deref().map(|t| format!("'{t}'")).unwrap_or_else(|| "(missing)".into())
            ),
        )
    })?;
    let verification = match &b.verification {
        None => None,
        Some(v) => Some(
            typed::<crate::ledger::event::Verification>(&b.verification).ok_or_else(|| {
                ApiError::invalid(
                    "bad-verification",
                    "Unknown verification",
                    format!("verification '{v}' is not fulfilled or unfulfilled"),
                )
            })?,
        ),
    };
    let mut details = serde_json::Map::new();
    for (k, v) in [
        ("content", b.content),
        ("document_no", b.document_no),
        ("decided_at", b.decided_at),
        ("disposition", b.disposition),
    ] {
        if let Some(v) = v {
            details.insert(k.into(), json!(v));
        }
    }
    if let Some(a) = b.attachments {
        details.insert("attachments".into(), a);
    }
    if let Some(a) = b.attendees {
        details.insert("attendees".into(), a);
    }
    if let Some(agreed) = b.agreed {
        details.insert("agreed".into(), json!(agreed));
    }
    let who = actions::Actor {
        department: department.clone(),
        name: b.actor,
        channel: Channel::Rest,
    };
    let input = actions::Feedback {
        feedback_type,
        verification,
        details,
    };
    let done = actions::feedback(&state, &id, &who, input).await?;
    answer(&state, &id, &department, done.shown()).await
}

/// The record and its history, for the parties and admins.
#[utoipa::path(get, path = "/v1/records/{id}", tag = "departments",
    params(("id" = String, Path, description = "Record id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The record, the entries the caller may see, the history that concerns the caller", body = RecordHistory),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 404, description = "No such record, token or adapter", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn record(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RecordHistory>, ApiError> {
    let principal = &caller.principal;
    let Some((record, entries, history)) = state.ledger()?.record(&id).await? else {
        // An admin learns that events wait for the record; a department learns nothing about a
        // record that was not routed to it.
        if matches!(principal, Principal::Admin) {
            let waiting = state.ledger()?.waiting(&id).await?;
            if waiting > 0 {
                return Err(DomainError::NotArrived {
                    record_id: id,
                    waiting,
                }
                .into());
            }
        }
        return Err(DomainError::UnknownRecord { record_id: id }.into());
    };
    let visible: Vec<&Entry> = match principal {
        Principal::Admin => entries.iter().collect(),
        // The department that sent the record (e.g. a 撤销 request) follows what the bureau does with it.
        Principal::Department(d) if record.source_department.as_deref() == Some(d.as_str()) => {
            entries.iter().collect()
        }
        Principal::Department(d) => {
            let mine: Vec<&Entry> = entries.iter().filter(|e| &e.department == d).collect();
            if mine.is_empty() {
                return Err(DomainError::NotRouted {
                    record_id: id,
                    department: d.clone(),
                }
                .into());
            }
            mine
        }
        Principal::Adapter(_) => {
            return Err(ApiError::Forbidden(
                "adapter tokens cannot read the ledger".into(),
            ))
        }
    };
    let now = state.clock.now();
    let source = record.source_department.clone();
    let own = |dep: &Option<String>| match principal {
        Principal::Admin => true,
        Principal::Department(d) if source.as_deref() == Some(d.as_str()) => true,
        Principal::Department(d) => dep.as_deref().is_none_or(|x| x == d),
        Principal::Adapter(_) => false,
    };
    Ok(Json(RecordHistory {
        record: (&record).into(),
        entries: visible.iter().map(|e| EntryView::new(e, now)).collect(),
        history: history
            .iter()
            .filter(|h| own(&h.department))
            .map(HistoryView::from)
            .collect(),
    }))
}

/// The unrouted queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnroutedAnswer {
    pub count: usize,
    pub records: Vec<RecordView>,
}

/// Records waiting for a department (admin).
#[utoipa::path(get, path = "/v1/unrouted", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = UnroutedAnswer),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn unrouted(
    State(state): State<Arc<AppState>>,
    _admin: AdminCaller,
) -> Result<Json<UnroutedAnswer>, ApiError> {
    let rows = state.ledger()?.unrouted().await?;
    let records: Vec<RecordView> = rows.iter().map(RecordView::from).collect();
    Ok(Json(UnroutedAnswer {
        count: records.len(),
        records,
    }))
}

/// Departments to route a record to.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteBody {
    /// Department codes from the routing catalog.
    departments: Vec<String>,
    actor: Option<String>,
}

/// Routes a record to departments (admin).
#[utoipa::path(post, path = "/v1/records/{id}/route", tag = "admin",
    params(("id" = String, Path, description = "Record id")),
    request_body = RouteBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Routed: the record with its entries", body = RecordEntries),
        (status = 202, description = "Published; the ledger has not applied it yet", body = RecordEntries),
        (status = 400, description = "No or unknown departments", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 404, description = "No such record, token or adapter", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 409, description = "Already routed to one of the departments", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn route(
    State(state): State<Arc<AppState>>,
    _admin: AdminCaller,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<RouteBody>,
) -> Result<Response, ApiError> {
    let done = actions::route(
        &state,
        &id,
        &b.departments,
        b.actor.as_deref(),
        Channel::Rest,
    )
    .await?;
    let all_applied = done.shown();
    let (record, entries) = ledger_view(&state, &id).await?;
    let now = state.clock.now();
    let out = RecordEntries {
        record: (&record).into(),
        entries: entries.iter().map(|e| EntryView::new(e, now)).collect(),
    };
    let status = if all_applied {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(out)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// `YYYY-MM`.
    month: String,
}

/// The monthly report (每月通报), JSON or CSV (`Accept: text/csv`) (admin).
#[utoipa::path(get, path = "/v1/reports/monthly", tag = "admin", params(ReportParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The report", content(
            (MonthlyReport = "application/json"),
            (String = "text/csv", example = "department,kind,flow,pushed,claimed,…"),
        )),
        (status = 400, description = "Not a month", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn monthly(
    State(state): State<Arc<AppState>>,
    _admin: AdminCaller,
    headers: HeaderMap,
    Query(q): Query<ReportParams>,
) -> Result<Response, ApiError> {
    let (from, to) = report::month_bounds(&q.month).map_err(ApiError::BadMonth)?;
    let builder = report::Monthly::new(
        &q.month,
        state.shared.calendar.version(),
        state.clock.now(),
        report::department_names(&state.shared.catalog),
    );
    let r = state
        .ledger()?
        .report_month(from, to, builder)
        .await?
        .finish();
    let wants_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/csv"));
    if wants_csv {
        let disposition = format!("attachment; filename=\"shenguan-report-{}.csv\"", q.month);
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (header::CONTENT_DISPOSITION, disposition),
            ],
            report::to_csv(&r),
        )
            .into_response());
    }
    Ok(Json(r).into_response())
}

/// How long handlers wait for the projector by default.
pub const DEFAULT_APPLY_WAIT: Duration = Duration::from_secs(10);
