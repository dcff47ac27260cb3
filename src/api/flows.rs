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

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::problem::Problem;
use super::records::{
    answer, entry_json, ledger_unavailable, parse_body, publish_and_wait, record_json, routed_entry,
};
use super::{authenticate, AppState};
use crate::auth::Principal;
use crate::ledger::{rfc3339, rules, EntryState};
use crate::schema::RecordKind;

fn bad_request(slug: &str, detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, slug, "Invalid request", detail)
}

/// The department a request speaks for: a department token's own, the bureau for an admin.
fn sender(state: &AppState, p: &Principal) -> Result<String, Problem> {
    match p {
        Principal::Department(d) => Ok(d.clone()),
        Principal::Admin => Ok(state.shared.catalog.bureau.clone()),
        Principal::Adapter(_) => Err(Problem::forbidden(
            "adapter tokens send records through /v1/ingest",
        )),
    }
}

/// Checks that every receiver is a catalog department other than the sender.
fn receivers(state: &AppState, from: &str, to: &[String]) -> Result<(), Problem> {
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

/// Publishes a record created through the API and answers 201 with it and its entries.
async fn create(
    state: &AppState,
    kind: RecordKind,
    id: &str,
    data: Value,
) -> Result<Response, Problem> {
    if let Some((record, _, _)) = state.ledger.record(id).await.map_err(ledger_unavailable)? {
        // The same letter sent again: answer with what exists.
        let mut body = record_json(&record);
        body["duplicate"] = json!(true);
        return Ok((StatusCode::OK, Json(body)).into_response());
    }
    let applied = publish_and_wait(state, kind, id, data).await?;
    let Some((record, entries, _)) = state.ledger.record(id).await.map_err(ledger_unavailable)?
    else {
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"id": id, "applied": applied})),
        )
            .into_response());
    };
    let now = state.clock.now();
    let mut body = record_json(&record);
    body["entries"] = entries.iter().map(|e| entry_json(e, now)).collect();
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InquiryBody {
    to: Vec<String>,
    title: String,
    subject_type: String,
    question: String,
    reply_within_working_days: Option<u32>,
    /// 函号: sending the same letter number again does not create a second inquiry.
    document_no: Option<String>,
}

/// `POST /v1/inquiries`: 业务函询 from the caller's department (the bureau for an admin).
pub async fn create_inquiry(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let principal = authenticate(&state, &headers).await?;
    let from = sender(&state, &principal)?;
    let b: InquiryBody = parse_body(&body)?;
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InspectionBody {
    to: Vec<String>,
    title: String,
    mode: String,
    scheduled_at: String,
    location: String,
    matter: String,
    approval_case_no: Option<String>,
    agency: Option<String>,
    document_no: Option<String>,
}

/// `POST /v1/inspections`: the bureau (its department token, or an admin) announces a site
/// inspection to the departments in `to`.
pub async fn create_inspection(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let principal = authenticate(&state, &headers).await?;
    let from = sender(&state, &principal)?;
    if from != state.shared.catalog.bureau {
        return Err(Problem::forbidden(
            "site inspections are announced by the approval bureau",
        ));
    }
    let b: InspectionBody = parse_body(&body)?;
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ForwardBody {
    to: Option<String>,
    reason: Option<String>,
    actor: Option<String>,
}

/// `POST /v1/records/{id}/forward`: 转交 to the upper-level department (the default, from the
/// catalog's `parent`) or to another department, with a reason.
pub async fn forward(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let principal = authenticate(&state, &headers).await?;
    let Principal::Department(department) = principal else {
        return Err(Problem::forbidden("this endpoint needs a department token"));
    };
    let b: ForwardBody = parse_body(&body)?;
    let reason = b.reason.filter(|r| !r.trim().is_empty()).ok_or_else(|| {
        bad_request(
            "reason-required",
            "say why the record is forwarded: {\"reason\": \"…\"}",
        )
    })?;
    let to = match b.to {
        Some(to) => to,
        None => state
            .shared
            .catalog
            .department(&department)
            .and_then(|d| d.parent.clone())
            .ok_or_else(|| {
                bad_request(
                    "receiver-required",
                    format!("{department} has no upper-level department in the catalog; name one in \"to\""),
                )
            })?,
    };
    receivers(&state, &department, std::slice::from_ref(&to))?;
    let (_, entry) = routed_entry(&state, &id, &department).await?;
    if entry.state == EntryState::Forwarded {
        return answer(&state, &id, &department, true).await;
    }
    if !(entry.state.is_unclaimed() || entry.state == EntryState::Claimed) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "already-handled",
            "Record already handled",
            format!("record {id} is {} for {department}", entry.state.as_str()),
        ));
    }
    if let Some((_, entries, _)) = state.ledger.record(&id).await.map_err(ledger_unavailable)? {
        if entries
            .iter()
            .any(|e| e.department == to && e.state != EntryState::Returned)
        {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "already-routed",
                "Already routed there",
                format!("record {id} is already routed to {to}"),
            ));
        }
    }
    let mut data = json!({
        "record_id": id, "department": department, "action": "forward", "to": to,
        "reason": reason, "at": crate::ledger::event_time(state.clock.now()), "channel": "rest",
    });
    if let Some(a) = b.actor {
        data["actor"] = json!(a);
    }
    let applied = publish_and_wait(&state, RecordKind::Claim, &id, data).await?;
    answer(&state, &id, &department, applied).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OfflineBody {
    kind: String,
    channel: String,
    document_ref: String,
    pushed_at: String,
    recorded_by: Option<String>,
    /// The department that made the push (catalog code); required for supervision information,
    /// whose decision goes back to it.
    issuer: Option<String>,
    /// The canonical record without `record_id`, `kind`, `source` and `offline_push`.
    record: Value,
}

/// `POST /v1/offline-pushes` (admin): a push made by 书面公函, 案卷移送 or 协调会议, entered with its
/// document reference. The record is routed and tracked like any other, its deadlines counted
/// from `pushed_at`.
pub async fn offline_push(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let principal = authenticate(&state, &headers).await?;
    if !matches!(principal, Principal::Admin) {
        return Err(Problem::forbidden(
            "offline pushes are entered with an admin token",
        ));
    }
    let b: OfflineBody = parse_body(&body)?;
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

#[derive(Deserialize)]
pub struct OpenQuery {
    department: Option<String>,
    limit: Option<usize>,
}

/// Lists what is open under a flow rule: a department sees its own, an admin all (or one).
async fn list_open(
    state: &AppState,
    headers: &HeaderMap,
    q: OpenQuery,
    rule: &str,
    name: &str,
) -> Result<Response, Problem> {
    let principal = authenticate(state, headers).await?;
    let department = match &principal {
        Principal::Department(d) => Some(d.clone()),
        Principal::Admin => q.department.clone(),
        Principal::Adapter(_) => {
            return Err(Problem::forbidden("adapter tokens cannot read the ledger"))
        }
    };
    let rows = state
        .ledger
        .obligations(
            rule,
            department.as_deref(),
            q.limit.unwrap_or(500).min(5000),
        )
        .await
        .map_err(ledger_unavailable)?;
    let now = state.clock.now();
    let items: Vec<Value> = rows
        .iter()
        .map(|(e, r)| {
            let (open_rule, due) = e
                .obligation()
                .map(|(r, d)| (Some(r.to_string()), Some(rfc3339(d))))
                .unwrap_or((None, None));
            let mut v = record_json(r);
            v["entry"] = entry_json(e, now);
            v["open"] = json!({"rule": open_rule, "due_at": due, "overdue": e.overdue_at(now)});
            v
        })
        .collect();
    Ok(Json(json!({"department": department, "count": items.len(), name: items})).into_response())
}

/// `GET /v1/commitments`: 告知承诺 verifications not done yet, with their due dates.
pub async fn commitments(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<OpenQuery>,
) -> Result<Response, Problem> {
    list_open(&state, &headers, q, rules::VERIFY_COMMITMENT, "commitments").await
}

/// `GET /v1/inquiries`: inquiries waiting for a reply.
pub async fn inquiries(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<OpenQuery>,
) -> Result<Response, Problem> {
    list_open(&state, &headers, q, rules::REPLY_INQUIRY, "inquiries").await
}

/// `GET /v1/inspections`: joint inspections waiting for a confirmation or a sign-off.
pub async fn inspections(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<OpenQuery>,
) -> Result<Response, Problem> {
    list_open(
        &state,
        &headers,
        q,
        rules::CONFIRM_INSPECTION,
        "inspections",
    )
    .await
}

/// `GET /v1/departments`: the catalog's departments with their liaison officers. Contacts are
/// shown to admins and to the department itself; others see names only.
pub async fn departments(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let principal = authenticate(&state, &headers).await?;
    let liaisons = state
        .ingestor
        .state
        .liaisons()
        .await
        .map_err(|e| Problem::unavailable(e.to_string(), 5))?;
    let list: Vec<Value> = state
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
            let full = match &principal {
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
            json!({
                "code": d.code, "name": d.name, "parent": d.parent,
                "bureau": d.code == state.shared.catalog.bureau,
                "webhook": d.webhook.is_some(), "liaison": liaison,
            })
        })
        .collect();
    Ok(Json(json!({"departments": list})).into_response())
}

#[derive(Deserialize, Default, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LiaisonBody {
    /// 联络员: name of the liaison officer.
    officer: String,
    /// 联系电话.
    phone: String,
    /// 联络负责人: the deputy head in charge (淄川 三(二)1).
    leader: Option<String>,
    email: Option<String>,
}

/// `PUT /v1/departments/{code}/liaison` (admin): sets a department's liaison officer; audited.
pub async fn set_liaison(
    State(state): State<Arc<AppState>>,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let principal = authenticate(&state, &headers).await?;
    if !matches!(principal, Principal::Admin) {
        return Err(Problem::forbidden("this endpoint needs an admin token"));
    }
    let b: LiaisonBody = parse_body(&body)?;
    let value = liaison_value(&state.shared, &code, b, state.clock.now())
        .map_err(|e| bad_request("bad-liaison", e))?;
    let store = &state.ingestor.state;
    let unavailable = |e: crate::state::StateError| Problem::unavailable(e.to_string(), 5);
    store
        .set_liaison(&code, value.clone())
        .await
        .map_err(unavailable)?;
    let masked = json!({"officer": value["officer"], "phone": crate::mask::mask(value["phone"].as_str().unwrap_or(""))});
    store
        .audit("admin-api", "liaison.set", &code, masked)
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({"code": code, "liaison": value})).into_response())
}

/// Checks a liaison entry and stamps it.
pub fn liaison_value(
    shared: &crate::ledger::projector::Shared,
    code: &str,
    b: LiaisonBody,
    now: chrono::DateTime<chrono::FixedOffset>,
) -> Result<Value, String> {
    if shared.catalog.department(code).is_none() {
        return Err(format!("{code} is not a department in the catalog"));
    }
    if b.officer.trim().is_empty() {
        return Err("officer: the liaison officer's name is required".into());
    }
    let digits = b.phone.chars().filter(char::is_ascii_digit).count();
    if !(7..=15).contains(&digits)
        || !b
            .phone
            .chars()
            .all(|c| c.is_ascii_digit() || "+- ()".contains(c))
    {
        return Err("phone: a telephone number of 7 to 15 digits".into());
    }
    let mut v = serde_json::to_value(&b).map_err(|e| e.to_string())?;
    v["updated_at"] = json!(rfc3339(now));
    Ok(v)
}

impl LiaisonBody {
    pub fn new(
        officer: String,
        phone: String,
        leader: Option<String>,
        email: Option<String>,
    ) -> Self {
        LiaisonBody {
            officer,
            phone,
            leader,
            email,
        }
    }
}
