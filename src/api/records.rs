//! Department and admin endpoints over the ledger: inbox, claim, return, feedback, a record with
//! its history, the unrouted queue and admin routing, the monthly report.
//!
//! A department sees and acts on only what was routed to it. Every change is published as an
//! event (claim.v1, feedback.v1) and applied by the ledger's projector, like a claim from a
//! department's own Kafka client; the handler waits for it to be applied and then answers with
//! the entry as it now stands.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::problem::Problem;
use super::{authenticate, AppState};
use crate::auth::Principal;
use crate::bus::Message;
use crate::ledger::{report, rfc3339, Entry, EntryState, RecordRow};
use crate::schema::RecordKind;

pub(super) fn entry_json(e: &Entry, now: chrono::DateTime<chrono::FixedOffset>) -> Value {
    json!({
        "department": e.department,
        "state": e.state.as_str(),
        "pushed_at": rfc3339(e.pushed_at),
        "delivered_at": e.delivered_at.map(rfc3339),
        "claimed_at": e.claimed_at.map(rfc3339),
        "returned_at": e.returned_at.map(rfc3339),
        "feedback_at": e.feedback_at.map(rfc3339),
        "closed_at": e.closed_at.map(rfc3339),
        "policy": e.policy,
        "claim_rule": e.claim_rule,
        "claim_due_at": e.claim_due_at.map(rfc3339),
        "feedback_rule": e.feedback_rule,
        "feedback_due_at": e.feedback_due_at.map(rfc3339),
        "overdue": e.overdue_at(now),
        "outcome": e.outcome,
        "via": e.via,
        "calendar_version": e.calendar_version,
        "deadline_problem": e.deadline_problem,
        "alert_level": e.alert_level.as_str(),
        "note": e.note,
        "version": e.version,
    })
}

pub(super) fn record_json(r: &RecordRow) -> Value {
    json!({
        "id": r.record_id,
        "kind": r.kind.as_str(),
        "published_at": rfc3339(r.published_at),
        "decided_at": r.decided_at.map(rfc3339),
        "push_rule": r.push_rule,
        "push_due_at": r.push_due_at.map(rfc3339),
        "push_late": r.push_late,
        "unrouted": r.unrouted,
        "linked_record_id": r.linked_record_id,
        "source_department": r.source_department,
        "data": r.data,
    })
}

fn department_of(p: &Principal) -> Result<&str, Problem> {
    match p {
        Principal::Department(d) => Ok(d),
        _ => Err(Problem::forbidden("this endpoint needs a department token")),
    }
}

fn require_admin(p: &Principal) -> Result<(), Problem> {
    match p {
        Principal::Admin => Ok(()),
        _ => Err(Problem::forbidden("this endpoint needs an admin token")),
    }
}

pub(super) fn ledger_unavailable(e: impl std::fmt::Display) -> Problem {
    Problem::unavailable(format!("ledger unavailable: {e}"), 5)
}

#[derive(Deserialize)]
pub struct InboxQuery {
    status: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/inbox?status=unclaimed|claimed|overdue`.
pub async fn inbox(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<InboxQuery>,
) -> Result<Response, Problem> {
    let principal = authenticate(&state, &headers).await?;
    let department = department_of(&principal)?;
    if let Some(s) = &q.status {
        if !["unclaimed", "claimed", "overdue"].contains(&s.as_str()) {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-query",
                "Bad status",
                "status must be unclaimed, claimed or overdue",
            ));
        }
    }
    let now = state.clock.now();
    let limit = q.limit.unwrap_or(500).min(5000);
    let query = crate::ledger::store::InboxQuery {
        status: q
            .status
            .as_deref()
            .and_then(|s| serde_json::from_value(json!(s)).ok()),
        limit,
        ..Default::default()
    };
    let page = state
        .ledger
        .inbox_page(department, &query, now)
        .await
        .map_err(ledger_unavailable)?;
    let records: Vec<Value> = page
        .rows
        .iter()
        .map(|(e, r)| {
            let mut v = record_json(r);
            v["entry"] = entry_json(e, now);
            v
        })
        .collect();
    Ok(Json(json!({"department": department, "status": q.status, "count": records.len(), "records": records})).into_response())
}

/// The record and the caller's entry, or the problem: 404 unknown, 403 not routed to the caller.
pub(super) async fn routed_entry(
    state: &AppState,
    id: &str,
    department: &str,
) -> Result<(RecordRow, Entry), Problem> {
    let found = state.ledger.record(id).await.map_err(ledger_unavailable)?;
    let Some((record, entries, _)) = found else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-record",
            "Unknown record",
            format!("no record {id}"),
        ));
    };
    match entries.into_iter().find(|e| e.department == department) {
        Some(e) => Ok((record, e)),
        None => Err(Problem::forbidden(format!(
            "record {id} was not routed to {department}"
        ))),
    }
}

/// Publishes an event and waits until the ledger applied it.
pub(super) async fn publish_and_wait(
    state: &AppState,
    kind: RecordKind,
    record_id: &str,
    data: Value,
) -> Result<bool, Problem> {
    let violations = state.ingestor.schemas.validate(kind, &data);
    if !violations.is_empty() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-body",
            "Invalid request body",
            violations[0].reason.clone(),
        )
        .with("errors", &violations));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let now = state.clock.now();
    let event = crate::pipeline::envelope(kind, &id, "/shenguan/api", record_id, now, data);
    let mut applied = state.applied.subscribe();
    let message = Message {
        topic: state.shared.topics.name(kind),
        key: record_id.to_string(),
        payload: serde_json::to_vec(&event).expect("JSON"),
    };
    state
        .ingestor
        .bus
        .publish(vec![message])
        .await
        .map_err(|e| {
            Problem::unavailable(
                format!("{e}; nothing was recorded, send the request again"),
                5,
            )
        })?;
    let wait = tokio::time::timeout(state.apply_wait, async {
        loop {
            match applied.recv().await {
                Ok(x) if x == id => return true,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return false,
            }
        }
    })
    .await;
    Ok(matches!(wait, Ok(true)))
}

pub(super) async fn answer(
    state: &AppState,
    id: &str,
    department: &str,
    applied: bool,
) -> Result<Response, Problem> {
    let (record, entry) = routed_entry(state, id, department).await?;
    let status = if applied {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut body = record_json(&record);
    body["entry"] = entry_json(&entry, state.clock.now());
    Ok((status, Json(body)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    actor: Option<String>,
    reason: Option<String>,
    /// Admin only: the department an offline claim is entered for.
    department: Option<String>,
    /// Admin only: the written acknowledgement an offline claim is entered from.
    document_ref: Option<String>,
    /// Admin only: when the offline acknowledgement was given.
    at: Option<String>,
}

pub(super) fn parse_body<T: for<'de> Deserialize<'de> + Default>(
    body: &[u8],
) -> Result<T, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-body",
            "Malformed JSON",
            e.to_string(),
        )
    })
}

/// `POST /v1/records/{id}/claim`: idempotent for the same department.
pub async fn claim(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let principal = authenticate(&state, &headers).await?;
    let b: ClaimBody = parse_body(&body)?;
    // An admin enters a claim acknowledged in writing outside the platform (渠道 offline).
    let offline = matches!(principal, Principal::Admin);
    let department = if offline {
        b.department.clone().ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "department-required",
                "Department required",
                "an admin enters an offline claim for a department: {\"department\": \"…\", \"document_ref\": \"…\"}",
            )
        })?
    } else {
        department_of(&principal)?.to_string()
    };
    if offline && b.document_ref.is_none() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "document-ref-required",
            "Document reference required",
            "an offline claim names the written acknowledgement: {\"document_ref\": \"…\"}",
        ));
    }
    let (_, entry) = routed_entry(&state, &id, &department).await?;
    match entry.state {
        EntryState::Claimed | EntryState::Feedback | EntryState::Closed => {
            return answer(&state, &id, &department, true).await
        }
        EntryState::Returned => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "returned",
                "Record was returned",
                format!("{department} returned record {id}; it cannot be claimed any more"),
            ))
        }
        EntryState::Forwarded => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "forwarded",
                "Record was forwarded",
                format!(
                    "{department} forwarded record {id}: {}",
                    entry.note.as_deref().unwrap_or("")
                ),
            ))
        }
        _ => {}
    }
    let mut data = json!({"record_id": id, "department": department, "action": "claim", "at": crate::ledger::event_time(state.clock.now()), "channel": "rest"});
    if let Some(a) = b.actor {
        data["actor"] = json!(a);
    }
    if offline {
        data["channel"] = json!("offline");
        data["document_ref"] = json!(b.document_ref);
        if let Some(at) = b.at {
            data["at"] = json!(at);
        }
    }
    let applied = publish_and_wait(&state, RecordKind::Claim, &id, data).await?;
    answer(&state, &id, &department, applied).await
}

/// `POST /v1/records/{id}/return`: 非本部门, with a reason; the record goes back to routing.
pub async fn give_back(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let principal = authenticate(&state, &headers).await?;
    let department = department_of(&principal)?.to_string();
    let b: ClaimBody = parse_body(&body)?;
    let reason = b.reason.filter(|r| !r.trim().is_empty()).ok_or_else(|| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "reason-required",
            "A reason is required",
            "say why the record is not your department's business: {\"reason\": \"…\"}",
        )
    })?;
    let (_, entry) = routed_entry(&state, &id, &department).await?;
    if entry.state == EntryState::Returned {
        return answer(&state, &id, &department, true).await;
    }
    if matches!(
        entry.state,
        EntryState::Feedback | EntryState::Closed | EntryState::Forwarded
    ) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "already-handled",
            "Record already handled",
            format!("record {id} is {}", entry.state.as_str()),
        ));
    }
    let mut data = json!({"record_id": id, "department": department, "action": "return", "reason": reason, "at": crate::ledger::event_time(state.clock.now()), "channel": "rest"});
    if let Some(a) = b.actor {
        data["actor"] = json!(a);
    }
    let applied = publish_and_wait(&state, RecordKind::Claim, &id, data).await?;
    answer(&state, &id, &department, applied).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FeedbackBody {
    feedback_type: Option<String>,
    content: Option<String>,
    document_no: Option<String>,
    decided_at: Option<String>,
    actor: Option<String>,
    attachments: Option<Value>,
    agreed: Option<bool>,
    attendees: Option<Value>,
    verification: Option<String>,
    disposition: Option<String>,
}

/// `POST /v1/records/{id}/feedback`: supervision started, rectification, disposition decision.
pub async fn feedback(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let principal = authenticate(&state, &headers).await?;
    let department = department_of(&principal)?.to_string();
    let b: FeedbackBody = parse_body(&body)?;
    let (_, entry) = routed_entry(&state, &id, &department).await?;
    let kind = b.feedback_type.clone().unwrap_or_default();
    if kind == "deemed_agreed" {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "reserved-feedback-type",
            "Recorded by the gateway",
            "deemed_agreed is recorded by the gateway when a reply deadline passes; reply with feedback_type reply",
        ));
    }
    // A reply or an attendance confirmation is the first answer; everything else follows a claim.
    let first_answer = matches!(
        kind.as_str(),
        "reply" | "inspection_attendance" | "attendance"
    );
    let open = if first_answer {
        entry.state.is_unclaimed()
            || matches!(entry.state, EntryState::Claimed | EntryState::Feedback)
    } else {
        matches!(entry.state, EntryState::Claimed | EntryState::Feedback)
    };
    if !open {
        let why = match entry.outcome.as_deref() {
            Some(outcome) => format!(
                "record {id} is {} ({outcome}) for {department}",
                entry.state.as_str()
            ),
            None => format!("record {id} is {} for {department}", entry.state.as_str()),
        };
        return Err(Problem::new(
            StatusCode::CONFLICT,
            if entry.state.is_unclaimed() {
                "not-claimed"
            } else {
                "already-handled"
            },
            if entry.state.is_unclaimed() {
                "Claim the record first"
            } else {
                "Record already handled"
            },
            why,
        ));
    }
    let mut data = json!({
        "record_id": id,
        "department": department,
        "feedback_type": b.feedback_type.unwrap_or_default(),
        "at": crate::ledger::event_time(state.clock.now()),
    });
    for (k, v) in [
        ("content", b.content),
        ("document_no", b.document_no),
        ("decided_at", b.decided_at),
        ("actor", b.actor),
    ] {
        if let Some(v) = v {
            data[k] = json!(v);
        }
    }
    if let Some(a) = b.attachments {
        data["attachments"] = a;
    }
    if let Some(a) = b.attendees {
        data["attendees"] = a;
    }
    for (k, v) in [
        ("verification", b.verification),
        ("disposition", b.disposition),
    ] {
        if let Some(v) = v {
            data[k] = json!(v);
        }
    }
    if let Some(agreed) = b.agreed {
        data["agreed"] = json!(agreed);
    }
    let applied = publish_and_wait(&state, RecordKind::Feedback, &id, data).await?;
    answer(&state, &id, &department, applied).await
}

/// `GET /v1/records/{id}`: the record and its history, for the parties and admins.
pub async fn record(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let principal = authenticate(&state, &headers).await?;
    let found = state.ledger.record(&id).await.map_err(ledger_unavailable)?;
    let Some((record, entries, history)) = found else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-record",
            "Unknown record",
            format!("no record {id}"),
        ));
    };
    let visible: Vec<&Entry> = match &principal {
        Principal::Admin => entries.iter().collect(),
        // The department that sent the record (e.g. a 撤销 request) follows what the bureau does with it.
        Principal::Department(d) if record.source_department.as_deref() == Some(d.as_str()) => {
            entries.iter().collect()
        }
        Principal::Department(d) => {
            let mine: Vec<&Entry> = entries.iter().filter(|e| &e.department == d).collect();
            if mine.is_empty() {
                return Err(Problem::forbidden(format!(
                    "record {id} was not routed to {d}"
                )));
            }
            mine
        }
        Principal::Adapter(_) => {
            return Err(Problem::forbidden("adapter tokens cannot read the ledger"))
        }
    };
    let now = state.clock.now();
    let source = record.source_department.clone();
    let own = |dep: &Option<String>| match &principal {
        Principal::Admin => true,
        Principal::Department(d) if source.as_deref() == Some(d.as_str()) => true,
        Principal::Department(d) => dep.as_deref().is_none_or(|x| x == d),
        Principal::Adapter(_) => false,
    };
    let mut body = record_json(&record);
    body["entries"] = visible.iter().map(|e| entry_json(e, now)).collect();
    body["history"] = history
        .iter()
        .filter(|h| own(&h.department))
        .map(|h| {
            json!({
                "at": rfc3339(h.at), "action": h.action, "department": h.department, "actor": h.actor,
                "channel": h.channel, "event_id": h.event_id, "detail": h.detail,
            })
        })
        .collect();
    Ok(Json(body).into_response())
}

/// `GET /v1/unrouted` (admin): records waiting for a department.
pub async fn unrouted(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    require_admin(&authenticate(&state, &headers).await?)?;
    let rows = state.ledger.unrouted().await.map_err(ledger_unavailable)?;
    let records: Vec<Value> = rows.iter().map(record_json).collect();
    Ok(Json(json!({"count": records.len(), "records": records})).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteBody {
    departments: Vec<String>,
    actor: Option<String>,
}

/// `POST /v1/records/{id}/route` (admin): routes a record to departments.
pub async fn route(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    require_admin(&authenticate(&state, &headers).await?)?;
    let b: RouteBody = parse_body(&body)?;
    if b.departments.is_empty() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "departments-required",
            "Departments required",
            "{\"departments\": [\"code\", …]}",
        ));
    }
    for d in &b.departments {
        if state.shared.catalog.department(d).is_none() {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "unknown-department",
                "Unknown department",
                format!("'{d}' is not in the routing catalog"),
            ));
        }
    }
    if state
        .ledger
        .record(&id)
        .await
        .map_err(ledger_unavailable)?
        .is_none()
    {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-record",
            "Unknown record",
            format!("no record {id}"),
        ));
    }
    let mut all_applied = true;
    for d in &b.departments {
        let mut data = json!({"record_id": id, "department": d, "action": "route", "at": crate::ledger::event_time(state.clock.now()), "channel": "rest"});
        if let Some(a) = &b.actor {
            data["actor"] = json!(a);
        }
        all_applied &= publish_and_wait(&state, RecordKind::Claim, &id, data).await?;
    }
    let (record, entries, _) = state
        .ledger
        .record(&id)
        .await
        .map_err(ledger_unavailable)?
        .expect("record exists");
    let now = state.clock.now();
    let mut out = record_json(&record);
    out["entries"] = entries.iter().map(|e| entry_json(e, now)).collect();
    Ok((
        if all_applied {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        },
        Json(out),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct ReportQuery {
    month: String,
}

/// `GET /v1/reports/monthly?month=YYYY-MM` (admin): JSON, or CSV with `Accept: text/csv`.
pub async fn monthly(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<ReportQuery>,
) -> Result<Response, Problem> {
    require_admin(&authenticate(&state, &headers).await?)?;
    let (from, to) = report::month_bounds(&q.month)
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "bad-month", "Bad month", e))?;
    let builder = report::Monthly::new(
        &q.month,
        state.shared.calendar.version(),
        state.clock.now(),
        report::department_names(&state.shared.catalog),
    );
    let r = state
        .ledger
        .report_month(from, to, builder)
        .await
        .map_err(ledger_unavailable)?
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
