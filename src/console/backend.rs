//! The console's one door into the gateway's logic: every read of the ledger, every action
//! published on the bus, the DLQ, the report, tokens and the liaison registry go through this
//! file. Actions take the same path as the JSON API — the same checks, an event on the claim or
//! feedback topic through `api::records::publish_and_wait`, applied by the ledger's projector —
//! so a claim from the console is a claim like any other. When the actions move into a layer of
//! their own, only this file changes.

use std::collections::HashSet;

use axum::http::StatusCode;
use chrono::{DateTime, FixedOffset};
use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::api::problem::Problem;
use crate::api::{actions, AppState};
use crate::dlq;
use crate::ledger::event::Channel;
use crate::ledger::store::{InboxPage, InboxQuery};
use crate::ledger::{report, Entry, HistoryRow, RecordRow};
use crate::schema::RecordKind;

/// Why an action or a read did not happen, in the console's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: StatusCode,
    pub message: String,
}

impl Failure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    fn conflict(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::CONFLICT, message)
    }

    fn bad(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, message)
    }

    fn unavailable(e: impl std::fmt::Display) -> Failure {
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("台账或总线暂不可用，请稍后重试（{e}）"),
        )
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Failure {
        use crate::ledger::checks::DomainError as D;
        let (status, message) = match &e {
            ApiError::Domain(refusal) => match refusal {
                D::UnknownRecord { .. } => (StatusCode::NOT_FOUND, "没有这条记录".to_string()),
                D::NotArrived { waiting, .. } => (
                    StatusCode::NOT_FOUND,
                    format!("这条记录尚未到达；已有 {waiting} 条相关事件等待它到达后生效"),
                ),
                D::NotRouted { .. } => (
                    StatusCode::FORBIDDEN,
                    "该记录未推送给本部门，不能查看或办理".to_string(),
                ),
                D::Returned { .. } => (
                    StatusCode::CONFLICT,
                    "本部门已退回该记录，不能再认领".to_string(),
                ),
                D::Forwarded { note, .. } => {
                    (StatusCode::CONFLICT, format!("本部门已转交该记录：{note}"))
                }
                D::AlreadyHandled { state, .. } => (
                    StatusCode::CONFLICT,
                    format!(
                        "该记录已{}，不能再办理",
                        state_name_of(state).trim_start_matches('已')
                    ),
                ),
                D::NotClaimed { .. } => (StatusCode::CONFLICT, "请先认领，再反馈".to_string()),
                D::ReasonRequired { action } => (
                    StatusCode::BAD_REQUEST,
                    format!(
                        "{}须说明理由",
                        if *action == "forward" {
                            "转交"
                        } else {
                            "退回"
                        }
                    ),
                ),
                D::ReservedFeedback { .. } => (
                    StatusCode::BAD_REQUEST,
                    "逾期视为同意由网关在答复期限届满时记录，请以“函询答复”反馈".to_string(),
                ),
                D::FeedbackNotApplicable { why } => {
                    (StatusCode::CONFLICT, format!("该反馈不适用于本记录：{why}"))
                }
                D::ForwardRefused { why, .. } => (StatusCode::CONFLICT, format!("不能转交：{why}")),
                D::AlreadyRouted { .. } => {
                    (StatusCode::CONFLICT, "该记录已推送给接收部门".to_string())
                }
                D::UnknownDepartment { department } => (
                    StatusCode::BAD_REQUEST,
                    format!("部门 {department} 不在路由目录中"),
                ),
            },
            _ => return Failure::from(e.problem()),
        };
        Failure { status, message }
    }
}

/// A state's Chinese name, from its code.
fn state_name_of(state: &str) -> &'static str {
    crate::ledger::EntryState::parse(state)
        .map(crate::console::labels::state_name)
        .unwrap_or("已处理")
}

impl From<Problem> for Failure {
    fn from(p: Problem) -> Failure {
        let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match status {
            StatusCode::NOT_FOUND => "没有这条记录".to_string(),
            StatusCode::FORBIDDEN => "该记录未推送给本部门，不能查看或办理".to_string(),
            StatusCode::SERVICE_UNAVAILABLE => {
                format!(
                    "总线或台账暂不可用，本次操作未记录，请稍后重试（{}）",
                    p.detail
                )
            }
            _ => format!("提交的内容不符合规范：{}", p.detail),
        };
        Failure { status, message }
    }
}

/// The clock the ledger uses.
pub fn now(state: &AppState) -> DateTime<FixedOffset> {
    state.clock.now()
}

/// The routing catalog (departments, the bureau).
pub fn catalog(state: &AppState) -> &crate::route::Catalog {
    &state.shared.catalog
}

/// The working-day calendar.
pub fn calendar(state: &AppState) -> &crate::deadline::Calendar {
    &state.shared.calendar
}

/// One page of a department's inbox, filtered, searched, ordered and paginated by the ledger.
pub async fn inbox_page(
    state: &AppState,
    department: &str,
    query: &InboxQuery,
) -> Result<InboxPage, Failure> {
    state
        .ledger()
        .map_err(Failure::unavailable)?
        .inbox_page(department, query, now(state))
        .await
        .map_err(|e| {
            if e.message.contains("cursor") {
                Failure::bad("翻页参数无效，请从第一页重新查看")
            } else {
                Failure::unavailable(e)
            }
        })
}

/// A record as a person may see it: the entries and history lines visible to them.
pub struct RecordPage {
    pub record: RecordRow,
    pub entries: Vec<Entry>,
    pub history: Vec<HistoryRow>,
    /// The viewer's department's own entry, when the record was routed to it.
    pub mine: Option<Entry>,
}

/// A record for a department (`Some`) or an operator (`None`), by the API's visibility rule:
/// a department sees what was routed to it, and the department that sent a record follows it.
pub async fn record(
    state: &AppState,
    department: Option<&str>,
    id: &str,
) -> Result<RecordPage, Failure> {
    let found = state
        .ledger()
        .map_err(Failure::unavailable)?
        .record(id)
        .await
        .map_err(Failure::unavailable)?;
    let Some((record, entries, history)) = found else {
        return Err(Failure::new(StatusCode::NOT_FOUND, "没有这条记录"));
    };
    let Some(department) = department else {
        return Ok(RecordPage {
            record,
            entries,
            history,
            mine: None,
        });
    };
    let mine = entries.iter().find(|e| e.department == department).cloned();
    let source = record.source_department.as_deref() == Some(department);
    if mine.is_none() && !source {
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            "该记录未推送给本部门，不能查看或办理",
        ));
    }
    let entries = if source {
        entries
    } else {
        entries
            .into_iter()
            .filter(|e| e.department == department)
            .collect()
    };
    let history = history
        .into_iter()
        .filter(|h| source || h.department.as_deref().is_none_or(|d| d == department))
        .collect();
    Ok(RecordPage {
        record,
        entries,
        history,
        mine,
    })
}

fn actor(department: &str, signature: &str) -> actions::Actor {
    actions::Actor {
        department: department.to_string(),
        name: Some(signature.to_string()),
        channel: Channel::Console,
    }
}

/// 认领: idempotent for the department; refused once returned or forwarded.
pub async fn claim(
    state: &AppState,
    department: &str,
    id: &str,
    signature: &str,
) -> Result<bool, Failure> {
    let done = actions::claim(state, id, &actor(department, signature), None).await?;
    Ok(done.shown())
}

/// 退回 (非本部门) with a reason: the record goes back to routing.
pub async fn give_back(
    state: &AppState,
    department: &str,
    id: &str,
    reason: &str,
    signature: &str,
) -> Result<bool, Failure> {
    let done = actions::give_back(state, id, &actor(department, signature), Some(reason)).await?;
    Ok(done.shown())
}

/// What a feedback form says.
#[derive(Debug, Clone, Default)]
pub struct FeedbackInput {
    pub feedback_type: String,
    pub content: Option<String>,
    pub document_no: Option<String>,
    pub disposition: Option<String>,
    pub verification: Option<String>,
    pub attendees: Vec<String>,
    pub agreed: Option<bool>,
}

/// 反馈: supervision started, rectification, disposition, a reply, an attendance confirmation,
/// a sign-off or a verification. A reply or a confirmation may come first; the rest follow a
/// claim.
pub async fn feedback(
    state: &AppState,
    department: &str,
    id: &str,
    input: FeedbackInput,
    signature: &str,
) -> Result<bool, Failure> {
    let word = |w: &str| Value::String(w.to_string());
    let feedback_type = serde_json::from_value(word(&input.feedback_type))
        .map_err(|_| Failure::bad(format!("未知的反馈类型：{}", input.feedback_type)))?;
    let verification = match input.verification.as_deref().filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(
            serde_json::from_value(word(v))
                .map_err(|_| Failure::bad(format!("核查结论应为“已履行”或“未履行”：{v}")))?,
        ),
    };
    let mut details = serde_json::Map::new();
    for (k, v) in [
        ("content", input.content),
        ("document_no", input.document_no),
        ("disposition", input.disposition),
    ] {
        if let Some(v) = v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) {
            details.insert(k.into(), json!(v));
        }
    }
    if !input.attendees.is_empty() {
        details.insert("attendees".into(), json!(input.attendees));
    }
    if let Some(agreed) = input.agreed {
        details.insert("agreed".into(), json!(agreed));
    }
    let feedback = actions::Feedback {
        feedback_type,
        verification,
        details,
    };
    let done = actions::feedback(state, id, &actor(department, signature), feedback).await?;
    Ok(done.shown())
}

/// 转交 to another department (by default the upper-level one in the catalog), with a reason.
pub async fn forward(
    state: &AppState,
    department: &str,
    id: &str,
    to: Option<&str>,
    reason: &str,
    signature: &str,
) -> Result<bool, Failure> {
    let done = actions::forward(state, id, &actor(department, signature), to, Some(reason)).await?;
    Ok(done.shown())
}

/// Open entries of a flow rule for a department (or all), soonest deadline first.
pub async fn obligations(
    state: &AppState,
    rule: &str,
    department: Option<&str>,
    limit: usize,
) -> Result<Vec<(Entry, RecordRow)>, Failure> {
    state
        .ledger()
        .map_err(Failure::unavailable)?
        .obligations(rule, department, limit)
        .await
        .map_err(Failure::unavailable)
}

/// Records waiting in the unrouted queue.
pub async fn unrouted(state: &AppState) -> Result<Vec<RecordRow>, Failure> {
    state
        .ledger()
        .map_err(Failure::unavailable)?
        .unrouted()
        .await
        .map_err(Failure::unavailable)
}

/// 指派: routes a record to catalog departments, as `POST /v1/records/{id}/route` does.
pub async fn route(
    state: &AppState,
    id: &str,
    departments: &[String],
    signature: &str,
) -> Result<bool, Failure> {
    if departments.is_empty() {
        return Err(Failure::bad("请选择至少一个部门"));
    }
    let done = actions::route(state, id, departments, Some(signature), Channel::Console).await?;
    Ok(done.shown())
}

/// Every DLQ entry (oldest first) and the ids that are no longer open (replayed, or superseded
/// by the entry their failed replay made).
pub async fn dlq_entries(state: &AppState) -> Result<(Vec<dlq::Entry>, HashSet<String>), Failure> {
    let entries = dlq::entries_with_status(
        state.ingestor.bus.as_ref(),
        &state.ingestor.topics,
        state.ingestor.state.as_ref(),
    )
    .await
    .map_err(Failure::unavailable)?;
    let done = entries
        .iter()
        .filter(|e| e.status != dlq::Status::Open)
        .map(|e| e.id.clone())
        .collect();
    Ok((entries, done))
}

/// Replays DLQ entries not replayed yet — the ones named, or all of an adapter — through the
/// adapters running now; marks and audits each as `actor`. Returns (entry id, what happened).
pub async fn replay(
    state: &AppState,
    ids: &[String],
    adapter: Option<&str>,
    actor: &str,
) -> Result<Vec<(String, dlq::Replayed)>, Failure> {
    if ids.is_empty() && adapter.is_none() {
        return Err(Failure::bad("请选择要重放的条目或适配器"));
    }
    let (entries, done) = dlq_entries(state).await?;
    for id in ids {
        if !entries.iter().any(|e| &e.id == id) {
            return Err(Failure::new(
                StatusCode::NOT_FOUND,
                format!("死信队列中没有条目 {id}"),
            ));
        }
        if done.contains(id) {
            return Err(Failure::conflict(format!("条目 {id} 已重放过")));
        }
    }
    let adapters = state.adapters.read().expect("adapter set lock").clone();
    let mut out = Vec::new();
    let mut marks = Vec::new();
    for e in entries
        .iter()
        .filter(|e| !done.contains(&e.id))
        .filter(|e| ids.is_empty() || ids.contains(&e.id))
        .filter(|e| adapter.is_none_or(|a| e.adapter == a))
    {
        let replayed = dlq::replay_entry(
            &state.ingestor,
            &adapters,
            Some(state.ledger().map_err(Failure::unavailable)?),
            e,
        )
        .await
        .map_err(Failure::unavailable)?;
        if !matches!(replayed, dlq::Replayed::Left(_)) {
            marks.push((e.id.clone(), replayed.outcome().to_string()));
        }
        out.push((e.id.clone(), replayed));
    }
    let store = &state.ingestor.state;
    for (id, outcome) in &marks {
        store
            .audit(actor, "dlq_replayed", id, json!({"outcome": outcome}))
            .await
            .map_err(Failure::unavailable)?;
    }
    store
        .mark_replayed(marks)
        .await
        .map_err(Failure::unavailable)?;
    Ok(out)
}

/// The monthly report (每月通报) of `YYYY-MM`.
pub async fn monthly_report(state: &AppState, month: &str) -> Result<report::Report, Failure> {
    let (from, to) = report::month_bounds(month)
        .map_err(|_| Failure::bad(format!("月份“{month}”无效，格式为 YYYY-MM")))?;
    let builder = report::Monthly::new(
        month,
        state.shared.calendar.version(),
        now(state),
        report::department_names(&state.shared.catalog),
    );
    Ok(state
        .ledger()
        .map_err(Failure::unavailable)?
        .report_month(from, to, builder)
        .await
        .map_err(Failure::unavailable)?
        .finish())
}

/// The report as CSV, as `GET /v1/reports/monthly` gives it.
pub fn report_csv(r: &report::Report) -> String {
    report::to_csv(r)
}

/// Whether the bus answers.
pub async fn bus_ready(state: &AppState) -> Result<(), String> {
    state.ingestor.bus.ready().await.map_err(|e| e.to_string())
}

/// One loaded adapter with what arrived through it.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    pub name: String,
    pub system: String,
    pub kind: RecordKind,
    pub format: String,
    /// Records accepted, duplicates and rejects since the gateway started.
    pub accepted: u64,
    pub duplicate: u64,
    pub rejected: u64,
    /// Distinct records published ever, and when the last one was.
    pub records: u64,
    pub last_at: Option<String>,
}

/// The adapters running now with their counts.
pub async fn adapters(state: &AppState) -> Result<Vec<AdapterSummary>, Failure> {
    let activity = state
        .ingestor
        .state
        .adapter_activity()
        .await
        .map_err(Failure::unavailable)?;
    let set = state.adapters.read().expect("adapter set lock").clone();
    let counter = |name: &str, outcome: &str| {
        crate::telemetry::METRICS
            .ingested
            .with_label_values(&[name, outcome])
            .get()
    };
    Ok(set
        .iter()
        .map(|a| {
            let seen = activity.iter().find(|x| x.adapter == a.name);
            AdapterSummary {
                name: a.name.clone(),
                system: a.system.clone(),
                kind: a.kind,
                format: format!("{:?}", a.format).to_lowercase(),
                accepted: counter(&a.name, "accepted"),
                duplicate: counter(&a.name, "duplicate"),
                rejected: counter(&a.name, "rejected"),
                records: seen.map_or(0, |x| x.records),
                last_at: seen.and_then(|x| x.last_at.clone()),
            }
        })
        .collect())
}

/// Whether an adapter of that name runs now.
pub fn adapter_loaded(state: &AppState, name: &str) -> bool {
    state
        .adapters
        .read()
        .expect("adapter set lock")
        .get(name)
        .is_some()
}

/// Issues a bearer token for a system; returns (id, token), shown once.
pub async fn issue_token(
    state: &AppState,
    role: &str,
    subject: &str,
    actor: &str,
) -> Result<(String, String), Failure> {
    let known = match role {
        "admin" => subject.is_empty(),
        "department" => catalog(state).department(subject).is_some(),
        "adapter" => adapter_loaded(state, subject),
        _ => return Err(Failure::bad("角色须为 adapter、department 或 admin")),
    };
    if !known {
        return Err(Failure::bad(format!(
            "“{subject}”不是已知的{}",
            match role {
                "department" => "部门",
                "adapter" => "适配器",
                _ => "主体（管理员令牌不带主体）",
            }
        )));
    }
    crate::auth::issue(state.ingestor.state.as_ref(), role, subject, actor)
        .await
        .map_err(Failure::unavailable)
}

/// Revokes a token; `false` when no active token has that id.
pub async fn revoke_token(state: &AppState, id: &str, actor: &str) -> Result<bool, Failure> {
    crate::auth::revoke(state.ingestor.state.as_ref(), id, actor)
        .await
        .map_err(Failure::unavailable)
}

/// Sets a department's liaison officer, checked as `PUT /v1/departments/{code}/liaison` checks
/// it; audited with the phone number masked.
pub async fn set_liaison(
    state: &AppState,
    code: &str,
    officer: String,
    phone: String,
    leader: Option<String>,
    email: Option<String>,
    actor: &str,
) -> Result<(), Failure> {
    let body = crate::api::flows::LiaisonBody::new(officer, phone, leader, email);
    crate::api::flows::set_liaison_in(
        &state.shared,
        state.ingestor.state.as_ref(),
        code,
        body,
        now(state),
        actor,
    )
    .await
    .map(|_| ())
    .map_err(|e| match e {
        crate::api::flows::LiaisonError::Invalid(detail) => Failure::bad(detail),
        crate::api::flows::LiaisonError::State(e) => Failure::unavailable(e),
    })
}
