//! The flows of 审管联动 besides push and claim, each a message with a deadline that the ledger
//! tracks, alerts on and reports like a claim:
//!
//! - `POST /v1/inquiries` — 业务函询: either side asks another party; the receiver replies with
//!   feedback `reply`; under `yuanqu-2022` silence past the deadline is deemed agreement.
//! - `POST /v1/inspections` — 踏勘评审: the bureau announces a site inspection; for a joint one
//!   each department confirms who attends (`inspection_attendance`) and signs off the result
//!   (`inspection_result`).
//! - `GET /v1/commitments`, `/v1/inquiries`, `/v1/inspections` — what is open, soonest first.
//! - `POST /v1/records/{id}/forward` — 转交 to the upper-level or another department.
//! - `POST /v1/offline-pushes` — a push made outside the platform, entered afterwards.
//! - `GET /v1/departments`, `PUT /v1/departments/{code}/liaison` — the liaison registry.
//!
//! Each is an event on the bus topics, applied by the ledger's projector like everything else.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::actions;
use super::caller::{AdminCaller, Caller, DepartmentCaller};
use super::docs::ProblemResponse;
use super::error::ApiError;
use super::extract::{JsonBody, Path, Query};
use super::records::{answer, publish_and_wait};
use super::views::{EntryView, RecordEntries, RecordEntry, RecordView};
use super::AppState;
use crate::auth::Principal;
use crate::ledger::event::Channel;
use crate::ledger::{rfc3339, rules};
use crate::schema::RecordKind;

fn bad_request(slug: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::invalid(slug, "Invalid request", detail)
}

/// The department a request speaks for: a department token's own, the bureau for an admin.
fn sender(state: &AppState, caller: &Caller) -> Result<String, ApiError> {
    match &caller.principal {
        Principal::Department(d) => Ok(d.clone()),
        Principal::Admin => Ok(state.shared.catalog.bureau.clone()),
        Principal::Adapter(_) => Err(ApiError::Forbidden(
            "adapter tokens send records through /v1/ingest".into(),
        )),
    }
}

/// Checks that every receiver is a catalog department other than the sender.
pub(crate) fn receivers(state: &AppState, from: &str, to: &[String]) -> Result<(), ApiError> {
    if to.is_empty() {
        return Err(bad_request(
            "receiver-required",
            "name the receiving departments: \"to\": [\"…\"]",
        ));
    }
    for d in to {
        if state.shared.catalog.department(d).is_none() {
            return Err(bad_request(
                "unknown-department",
                format!("{d} is not a department in the catalog"),
            ));
        }
        if d == from {
            return Err(bad_request(
                "receiver-is-sender",
                format!("{d} cannot send to itself"),
            ));
        }
    }
    Ok(())
}

/// A notice record created through the API.
fn notice(
    state: &AppState,
    from: &str,
    notice_type: &str,
    key: &str,
    title: &str,
    to: &[String],
) -> (String, Value) {
    let now = state.clock.now();
    let record_id = crate::pipeline::record_id(notice_type_adapter(notice_type), key);
    let issuer = state
        .shared
        .catalog
        .department(from)
        .map(|d| d.name.clone())
        .unwrap_or_else(|| from.to_string());
    let data = json!({
        "record_id": record_id,
        "kind": "notice",
        "source": {
            "system": "shenguan",
            "adapter": notice_type_adapter(notice_type),
            "business_key": key,
            "received_at": rfc3339(now),
        },
        "notice_type": notice_type,
        "title": title,
        "issuer": issuer,
        "issuer_code": from,
        "issued_at": rfc3339(now),
        "audience": to,
    });
    (record_id, data)
}

fn notice_type_adapter(notice_type: &str) -> &'static str {
    if notice_type == "业务函询" {
        "inquiry"
    } else {
        "inspection"
    }
}

/// The same letter sent again: the record as it exists.
#[derive(Debug, Serialize, ToSchema)]
pub struct DuplicateAnswer {
    #[serde(flatten)]
    pub record: RecordView,
    /// Always true.
    pub duplicate: bool,
}

/// Published, but the ledger has not applied it yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingAnswer {
    pub id: String,
    pub applied: bool,
}

/// Publishes a record created through the API and answers 201 with it and its entries.
async fn create(
    state: &AppState,
    kind: RecordKind,
    id: &str,
    data: Value,
) -> Result<Response, ApiError> {
    if let Some((record, _, _)) = state.ledger()?.record(id).await? {
        // The same letter sent again: answer with what exists.
        let body = DuplicateAnswer {
            record: (&record).into(),
            duplicate: true,
        };
        return Ok((StatusCode::OK, Json(body)).into_response());
    }
    let applied = publish_and_wait(state, kind, id, data).await?;
    let Some((record, entries, _)) = state.ledger()?.record(id).await? else {
        let body = PendingAnswer {
            id: id.to_string(),
            applied,
        };
        return Ok((StatusCode::ACCEPTED, Json(body)).into_response());
    };
    let now = state.clock.now();
    let body = RecordEntries {
        record: (&record).into(),
        entries: entries.iter().map(|e| EntryView::new(e, now)).collect(),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// A 业务函询.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InquiryBody {
    /// Receiving department codes.
    to: Vec<String>,
    title: String,
    /// What the inquiry is about (行政许可事项办理标准, 产业规划 …).
    subject_type: String,
    question: String,
    /// The reply period, instead of the policy's `reply_inquiry`.
    reply_within_working_days: Option<u32>,
    /// 函号: sending the same letter number again does not create a second inquiry.
    document_no: Option<String>,
}

/// Sends a 业务函询 from the caller's department (the bureau for an admin).
#[utoipa::path(post, path = "/v1/inquiries", tag = "flows", request_body = InquiryBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Sent: the notice with the receivers' entries", body = RecordEntries),
        (status = 200, description = "The same letter number again: the existing inquiry", body = DuplicateAnswer),
        (status = 202, description = "Published; the ledger has not applied it yet", body = PendingAnswer),
        (status = 400, description = "The request is not one this endpoint takes (the problem names the field)", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn create_inquiry(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    JsonBody(b): JsonBody<InquiryBody>,
) -> Result<Response, ApiError> {
    let from = sender(&state, &caller)?;
    receivers(&state, &from, &b.to)?;
    let key = match &b.document_no {
        Some(no) => format!("{from}/{no}"),
        None => format!("{from}/{}", uuid::Uuid::new_v4()),
    };
    let (id, mut data) = notice(&state, &from, "业务函询", &key, &b.title, &b.to);
    data["inquiry"] = json!({"subject_type": b.subject_type, "question": b.question});
    if let Some(days) = b.reply_within_working_days {
        data["inquiry"]["reply_within_working_days"] = json!(days);
    }
    if let Some(no) = b.document_no {
        data["document_no"] = json!(no);
    }
    create(&state, RecordKind::Notice, &id, data).await
}

/// A 踏勘评审 announcement.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InspectionBody {
    /// Department codes to notify.
    to: Vec<String>,
    title: String,
    /// `独立踏勘评审`, `联合踏勘评审` or `委托踏勘评审`.
    mode: String,
    /// When the inspection starts (RFC 3339).
    scheduled_at: String,
    location: String,
    matter: String,
    approval_case_no: Option<String>,
    agency: Option<String>,
    document_no: Option<String>,
}

/// Announces a site inspection (the bureau's department token, or an admin).
#[utoipa::path(post, path = "/v1/inspections", tag = "flows", request_body = InspectionBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Announced: the notice with the receivers' entries", body = RecordEntries),
        (status = 200, description = "The same document number again: the existing notice", body = DuplicateAnswer),
        (status = 202, description = "Published; the ledger has not applied it yet", body = PendingAnswer),
        (status = 400, description = "The request is not one this endpoint takes (the problem names the field)", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not the approval bureau", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn create_inspection(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    JsonBody(b): JsonBody<InspectionBody>,
) -> Result<Response, ApiError> {
    let from = sender(&state, &caller)?;
    if from != state.shared.catalog.bureau {
        return Err(ApiError::Forbidden(
            "site inspections are announced by the approval bureau".into(),
        ));
    }
    receivers(&state, &from, &b.to)?;
    let key = match &b.document_no {
        Some(no) => format!("{from}/{no}"),
        None => format!("{from}/{}", uuid::Uuid::new_v4()),
    };
    let (id, mut data) = notice(&state, &from, "踏勘通知", &key, &b.title, &b.to);
    data["inspection"] = json!({
        "mode": b.mode, "scheduled_at": b.scheduled_at, "location": b.location, "matter": b.matter,
    });
    for (k, v) in [
        ("approval_case_no", b.approval_case_no),
        ("agency", b.agency),
    ] {
        if let Some(v) = v {
            data["inspection"][k] = json!(v);
        }
    }
    if let Some(no) = b.document_no {
        data["document_no"] = json!(no);
    }
    create(&state, RecordKind::Notice, &id, data).await
}

/// A 转交.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardBody {
    /// The receiving department; the catalog's `parent` of the caller when absent.
    to: Option<String>,
    /// Required: why the record is forwarded.
    reason: Option<String>,
    actor: Option<String>,
}

/// Forwards (转交) a record to the upper-level department (the default, from the catalog's
/// `parent`) or to another department, with a reason.
#[utoipa::path(post, path = "/v1/records/{id}/forward", tag = "flows",
    params(("id" = String, Path, description = "Record id")),
    request_body = ForwardBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Forwarded: the caller's entry as it stands", body = RecordEntry),
        (status = 202, description = "Published; the ledger has not applied it yet", body = RecordEntry),
        (status = 400, description = "The request is not one this endpoint takes (the problem names the field)", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 404, description = "No such record, token or adapter", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 409, description = "Already handled, or already routed to the receiver", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn forward(
    State(state): State<Arc<AppState>>,
    caller: DepartmentCaller,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ForwardBody>,
) -> Result<Response, ApiError> {
    let department = caller.code;
    let who = actions::Actor {
        department: department.clone(),
        name: b.actor,
        channel: Channel::Rest,
    };
    let done = actions::forward(&state, &id, &who, b.to.as_deref(), b.reason.as_deref()).await?;
    answer(&state, &id, &department, done.shown()).await
}

/// A push made outside the platform.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfflineBody {
    /// `approval`, `supervision` or `notice`.
    kind: String,
    /// 书面公函, 案卷移送 or 协调会议.
    channel: String,
    /// The document the push was made with.
    document_ref: String,
    /// When the push was made (RFC 3339); deadlines count from then.
    pushed_at: String,
    recorded_by: Option<String>,
    /// The department that made the push (catalog code); required for supervision information,
    /// whose decision goes back to it.
    issuer: Option<String>,
    /// The canonical record without `record_id`, `kind`, `source` and `offline_push`.
    #[schema(value_type = Object)]
    record: Value,
}

/// Enters a push made by 书面公函, 案卷移送 or 协调会议 with its document reference (admin). The
/// record is routed and tracked like any other, its deadlines counted from `pushed_at`.
#[utoipa::path(post, path = "/v1/offline-pushes", tag = "flows", request_body = OfflineBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Entered: the record with its entries", body = RecordEntries),
        (status = 200, description = "The same document again: the existing record", body = DuplicateAnswer),
        (status = 202, description = "Published; the ledger has not applied it yet", body = PendingAnswer),
        (status = 400, description = "The request is not one this endpoint takes (the problem names the field)", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn offline_push(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    JsonBody(b): JsonBody<OfflineBody>,
) -> Result<Response, ApiError> {
    if !caller.is_admin() {
        return Err(ApiError::Forbidden(
            "offline pushes are entered with an admin token".into(),
        ));
    }
    let kind = match b.kind.as_str() {
        "approval" => RecordKind::Approval,
        "supervision" => RecordKind::Supervision,
        "notice" => RecordKind::Notice,
        other => {
            return Err(bad_request(
                "bad-kind",
                format!("kind must be approval, supervision or notice, not '{other}'"),
            ))
        }
    };
    let Value::Object(mut data) = b.record else {
        return Err(bad_request("bad-record", "record must be a JSON object"));
    };
    // The bureau's decision on a request goes back to whoever made it: name it.
    if kind == RecordKind::Supervision && b.issuer.is_none() {
        return Err(bad_request(
            "issuer-required",
            "an offline push of supervision information names the department that made it: \"issuer\": \"szs-scjg\"",
        ));
    }
    if let Some(d) = b.issuer.as_deref() {
        if state.shared.catalog.department(d).is_none() {
            return Err(bad_request(
                "unknown-department",
                format!("issuer {d} is not a department in the catalog"),
            ));
        }
    }
    let now = state.clock.now();
    let key = format!("{}/{}", b.channel, b.document_ref);
    let id = crate::pipeline::record_id("offline", &key);
    data.insert("record_id".into(), json!(id));
    data.insert("kind".into(), json!(kind.as_str()));
    data.insert(
        "source".into(),
        json!({"system": "线下推送", "adapter": "offline", "business_key": key, "received_at": rfc3339(now)}),
    );
    let mut offline =
        json!({"channel": b.channel, "document_ref": b.document_ref, "pushed_at": b.pushed_at});
    if let Some(who) = b.recorded_by {
        offline["recorded_by"] = json!(who);
    }
    if let Some(issuer) = b.issuer {
        offline["issuer"] = json!(issuer);
    }
    data.insert("offline_push".into(), offline);
    create(&state, kind, &id, Value::Object(data)).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OpenParams {
    /// Admin only: one department's (all when absent). A department sees its own.
    department: Option<String>,
    /// At most this many, soonest due first (default 500, at most 5000).
    limit: Option<usize>,
}

/// What is open under a flow rule.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenObligation {
    pub rule: Option<String>,
    pub due_at: Option<String>,
    pub overdue: bool,
}

/// A record with the caller's entry and what is open on it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenItem {
    #[serde(flatten)]
    pub record: RecordView,
    pub entry: EntryView,
    pub open: OpenObligation,
}

/// Lists what is open under a flow rule: a department sees its own, an admin all (or one).
async fn list_open(
    state: &AppState,
    caller: &Caller,
    q: OpenParams,
    rule: &str,
) -> Result<(Option<String>, Vec<OpenItem>), ApiError> {
    let department = match &caller.principal {
        Principal::Department(d) => Some(d.clone()),
        Principal::Admin => q.department.clone(),
        Principal::Adapter(_) => {
            return Err(ApiError::Forbidden(
                "adapter tokens cannot read the ledger".into(),
            ))
        }
    };
    let rows = state
        .ledger()?
        .obligations(
            rule,
            department.as_deref(),
            q.limit.unwrap_or(500).min(5000),
        )
        .await?;
    let now = state.clock.now();
    let items = rows
        .iter()
        .map(|(e, r)| {
            let (open_rule, due_at) = e
                .obligation()
                .map(|(r, d)| (Some(r.to_string()), Some(rfc3339(d))))
                .unwrap_or((None, None));
            let RecordEntry { record, entry } = RecordEntry::new(r, e, now);
            OpenItem {
                record,
                entry,
                open: OpenObligation {
                    rule: open_rule,
                    due_at,
                    overdue: e.overdue_at(now),
                },
            }
        })
        .collect();
    Ok((department, items))
}

/// 告知承诺 verifications not done yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommitmentList {
    pub department: Option<String>,
    pub count: usize,
    pub commitments: Vec<OpenItem>,
}

/// 告知承诺 verifications not done yet, with their due dates, soonest first.
#[utoipa::path(get, path = "/v1/commitments", tag = "flows", params(OpenParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = CommitmentList),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn commitments(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<OpenParams>,
) -> Result<Json<CommitmentList>, ApiError> {
    let (department, items) = list_open(&state, &caller, q, rules::VERIFY_COMMITMENT).await?;
    Ok(Json(CommitmentList {
        department,
        count: items.len(),
        commitments: items,
    }))
}

/// Inquiries waiting for a reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct InquiryList {
    pub department: Option<String>,
    pub count: usize,
    pub inquiries: Vec<OpenItem>,
}

/// Inquiries waiting for a reply, soonest due first.
#[utoipa::path(get, path = "/v1/inquiries", tag = "flows", params(OpenParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = InquiryList),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn inquiries(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<OpenParams>,
) -> Result<Json<InquiryList>, ApiError> {
    let (department, items) = list_open(&state, &caller, q, rules::REPLY_INQUIRY).await?;
    Ok(Json(InquiryList {
        department,
        count: items.len(),
        inquiries: items,
    }))
}

/// Joint inspections waiting for a confirmation or a sign-off.
#[derive(Debug, Serialize, ToSchema)]
pub struct InspectionList {
    pub department: Option<String>,
    pub count: usize,
    pub inspections: Vec<OpenItem>,
}

/// Joint inspections waiting for a confirmation or a sign-off, soonest due first.
#[utoipa::path(get, path = "/v1/inspections", tag = "flows", params(OpenParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = InspectionList),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn inspections(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<OpenParams>,
) -> Result<Json<InspectionList>, ApiError> {
    let (department, items) = list_open(&state, &caller, q, rules::CONFIRM_INSPECTION).await?;
    Ok(Json(InspectionList {
        department,
        count: items.len(),
        inspections: items,
    }))
}

/// A department's liaison officer (联络员), as stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct Liaison {
    /// 联络员.
    pub officer: String,
    /// 联系电话 (masked for other departments).
    pub phone: String,
    /// 联络负责人.
    pub leader: Option<String>,
    /// (masked for other departments).
    pub email: Option<String>,
    pub updated_at: String,
}

/// A catalog department.
#[derive(Debug, Serialize, ToSchema)]
pub struct DepartmentView {
    pub code: String,
    pub name: String,
    /// The upper-level department (for 转交).
    pub parent: Option<String>,
    /// Whether this is the approval bureau.
    pub bureau: bool,
    /// Whether records reach it by webhook.
    pub webhook: bool,
    /// Null when none is registered.
    #[schema(value_type = Option<Liaison>)]
    pub liaison: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DepartmentList {
    pub departments: Vec<DepartmentView>,
}

/// The catalog's departments with their liaison officers. Contacts are shown to admins and to
/// the department itself; others see them masked.
#[utoipa::path(get, path = "/v1/departments", tag = "flows",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = DepartmentList),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn departments(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<DepartmentList>, ApiError> {
    let liaisons = state.ingestor.state.liaisons().await?;
    let departments = state
        .shared
        .catalog
        .departments
        .iter()
        .map(|d| {
            let mut liaison = liaisons
                .iter()
                .find(|(code, _)| code == &d.code)
                .map(|(_, v)| v.clone())
                .unwrap_or(Value::Null);
            let full = match &caller.principal {
                Principal::Admin => true,
                Principal::Department(own) => own == &d.code,
                Principal::Adapter(_) => false,
            };
            if !full {
                if let Some(o) = liaison.as_object_mut() {
                    for k in ["phone", "email"] {
                        if let Some(v) = o.get(k).and_then(Value::as_str) {
                            let masked = crate::mask::mask(v);
                            o.insert(k.into(), json!(masked));
                        }
                    }
                }
            }
            DepartmentView {
                code: d.code.clone(),
                name: d.name.clone(),
                parent: d.parent.clone(),
                bureau: d.code == state.shared.catalog.bureau,
                webhook: d.webhook.is_some(),
                liaison,
            }
        })
        .collect();
    Ok(Json(DepartmentList { departments }))
}

/// A change to a department's liaison entry. Fields left out keep what is stored; `leader` or
/// `email` given as null or "" are removed. The first entry of a department needs `officer` and
/// `phone`.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LiaisonBody {
    /// 联络员: name of the liaison officer.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    officer: Option<Option<String>>,
    /// 联系电话: 7 to 15 digits, with + - ( ) and spaces.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    phone: Option<Option<String>>,
    /// 联络负责人: the deputy head in charge (淄川 三(二)1).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    leader: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    email: Option<Option<String>>,
}

/// A field that is in the body, null or not (`None` is a field left out).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl LiaisonBody {
    /// A change from the command line: officer and phone, and leader and email when given.
    pub fn new(
        officer: String,
        phone: String,
        leader: Option<String>,
        email: Option<String>,
    ) -> Self {
        LiaisonBody {
            officer: Some(Some(officer)),
            phone: Some(Some(phone)),
            leader: leader.map(Some),
            email: email.map(Some),
        }
    }

    /// The names of the fields this change sets or removes.
    fn fields(&self) -> Vec<&'static str> {
        [
            ("officer", &self.officer),
            ("phone", &self.phone),
            ("leader", &self.leader),
            ("email", &self.email),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k)
        .collect()
    }
}

/// The answer to a liaison change.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiaisonAnswer {
    pub code: String,
    #[schema(value_type = Liaison)]
    pub liaison: Value,
}

/// Sets a department's liaison officer (admin); fields left out keep what is stored. Audited.
#[utoipa::path(put, path = "/v1/departments/{code}/liaison", tag = "flows",
    params(("code" = String, Path, description = "Department code from the routing catalog")),
    request_body = LiaisonBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The entry as now stored", body = LiaisonAnswer),
        (status = 400, description = "Unknown department, or a missing officer or a bad phone number", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 401, description = "No, unknown or revoked bearer token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this token", body = ProblemResponse, content_type = "application/problem+json"),
        (status = 503, description = "The ledger, the state store or the bus is unavailable; retry after `Retry-After` seconds", body = ProblemResponse, content_type = "application/problem+json"),
    ))]
pub async fn set_liaison(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    Path(code): Path<String>,
    JsonBody(b): JsonBody<LiaisonBody>,
) -> Result<Json<LiaisonAnswer>, ApiError> {
    let value = set_liaison_in(
        &state.shared,
        state.ingestor.state.as_ref(),
        &code,
        b,
        state.clock.now(),
        &caller.actor(),
    )
    .await?;
    Ok(Json(LiaisonAnswer {
        code,
        liaison: value,
    }))
}

/// Why a liaison change was not stored.
#[derive(Debug, thiserror::Error)]
pub enum LiaisonError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

impl From<LiaisonError> for ApiError {
    fn from(e: LiaisonError) -> Self {
        match e {
            LiaisonError::Invalid(detail) => bad_request("bad-liaison", detail),
            LiaisonError::State(e) => ApiError::State(e),
        }
    }
}

/// Merges a change into a department's stored liaison entry, checks the result, stores it and
/// audits the change (phone masked). The API and `shenguan liaison set` both use it.
pub async fn set_liaison_in(
    shared: &crate::ledger::projector::Shared,
    store: &dyn crate::state::StateStore,
    code: &str,
    change: LiaisonBody,
    now: chrono::DateTime<chrono::FixedOffset>,
    actor: &str,
) -> Result<Value, LiaisonError> {
    if shared.catalog.department(code).is_none() {
        return Err(LiaisonError::Invalid(format!(
            "{code} is not a department in the catalog"
        )));
    }
    let stored = store
        .liaisons()
        .await?
        .into_iter()
        .find(|(c, _)| c == code)
        .map(|(_, v)| v);
    let fields = change.fields();
    let value = merge_liaison(stored, change, now).map_err(LiaisonError::Invalid)?;
    store.set_liaison(code, value.clone()).await?;
    let masked = json!({
        "officer": value["officer"],
        "phone": crate::mask::mask(value["phone"].as_str().unwrap_or("")),
        "fields": fields,
    });
    store.audit(actor, "liaison.set", code, masked).await?;
    Ok(value)
}

/// The stored entry (if any) with the change applied and stamped, or why it would not be a
/// valid entry.
pub fn merge_liaison(
    stored: Option<Value>,
    change: LiaisonBody,
    now: chrono::DateTime<chrono::FixedOffset>,
) -> Result<Value, String> {
    let mut entry = match stored {
        Some(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    for (key, field) in [
        ("officer", change.officer),
        ("phone", change.phone),
        ("leader", change.leader),
        ("email", change.email),
    ] {
        match field {
            None => {}
            Some(Some(v)) if !v.trim().is_empty() => {
                entry.insert(key.into(), json!(v.trim()));
            }
            Some(_) => {
                entry.remove(key);
            }
        }
    }
    let text = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or("");
    if text("officer").is_empty() {
        return Err("officer: the liaison officer's name is required".into());
    }
    let phone = text("phone");
    let digits = phone.chars().filter(char::is_ascii_digit).count();
    if !(7..=15).contains(&digits)
        || !phone
            .chars()
            .all(|c| c.is_ascii_digit() || "+- ()".contains(c))
    {
        return Err("phone: a telephone number of 7 to 15 digits".into());
    }
    entry.insert("updated_at".into(), json!(rfc3339(now)));
    Ok(Value::Object(entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> chrono::DateTime<chrono::FixedOffset> {
        chrono::DateTime::parse_from_rfc3339("2026-11-23T10:00:00+08:00").unwrap()
    }

    fn change(json: &str) -> LiaisonBody {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_partial_liaison_change_keeps_what_it_does_not_name() {
        let first = merge_liaison(
            None,
            change(r#"{"officer":"马丽","phone":"13995027788","leader":"副局长 周某","email":"a@b.cn"}"#),
            now(),
        )
        .unwrap();
        let second = merge_liaison(
            Some(first),
            change(r#"{"officer":"杨帆","phone":"0952-2011234"}"#),
            now(),
        )
        .unwrap();
        assert_eq!(second["officer"], "杨帆");
        assert_eq!(second["phone"], "0952-2011234");
        assert_eq!(second["leader"], "副局长 周某");
        assert_eq!(second["email"], "a@b.cn");
        let third = merge_liaison(Some(second), change(r#"{"email":null}"#), now()).unwrap();
        assert!(third.get("email").is_none(), "{third}");
        assert_eq!(third["leader"], "副局长 周某");
    }

    #[test]
    fn a_first_liaison_entry_needs_an_officer_and_a_phone() {
        let e = merge_liaison(None, change(r#"{"leader":"副局长 周某"}"#), now()).unwrap_err();
        assert!(e.starts_with("officer:"), "{e}");
        let e = merge_liaison(
            None,
            change(r#"{"officer":"马丽","phone":"call me"}"#),
            now(),
        )
        .unwrap_err();
        assert!(e.starts_with("phone:"), "{e}");
    }
}
