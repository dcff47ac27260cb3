//! The clerk's pages: the inbox by status, a record with its fields and history and the forms
//! that act on it (认领, 退回, 反馈, 转交), and the department's open inquiries, inspections and
//! commitments. A clerk sees and acts on only what was routed to their department; the checks
//! are the API's, in `backend`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::backend::{self, FeedbackInput};
use super::labels::{self, FieldGroup, Left};
use super::page::{done_flash, render, Layout};
use super::session::Clerk;
use super::session::Person;
use crate::api::AppState;
use crate::ledger::store::{InboxOrder, InboxQuery, InboxStatus};
use crate::ledger::{rules, Entry, EntryState, HistoryRow, RecordRow};

/// Records on one inbox page.
pub const PAGE_SIZE: usize = 25;

/// One inbox tab.
pub struct Tab {
    pub key: &'static str,
    pub name: &'static str,
    /// How many records the tab holds (not counted while searching).
    pub total: Option<u64>,
    pub active: bool,
    pub href: String,
}

/// One line of a list of records.
pub struct Row {
    pub id: String,
    pub case_no: String,
    pub matter: String,
    pub party: String,
    pub kind: &'static str,
    pub state: &'static str,
    pub pushed: String,
    pub rule: String,
    pub due: String,
    pub left: String,
    pub urgency: &'static str,
}

fn row(state: &AppState, e: &Entry, r: &RecordRow) -> Row {
    let (matter, party, case_no) = labels::summary(&r.data);
    let now = backend::now(state);
    let (rule, due, left, urgency) = match e.obligation() {
        Some((rule, due)) => {
            let left = labels::working_days_left(backend::calendar(state), now, due);
            (
                labels::rule_name(rule),
                labels::local_time(due),
                left.text(),
                left.class(),
            )
        }
        None => (
            String::new(),
            "—".into(),
            e.deadline_problem.clone().unwrap_or_default(),
            "none",
        ),
    };
    Row {
        id: r.record_id.clone(),
        case_no,
        matter,
        party,
        kind: labels::kind_name(r.kind),
        state: labels::state_name(e.state),
        pushed: labels::local_time(e.pushed_at),
        rule,
        due,
        left,
        urgency,
    }
}

#[derive(askama::Template)]
#[template(path = "inbox.html")]
struct InboxPage {
    layout: Layout,
    tabs: Vec<Tab>,
    status: &'static str,
    status_name: &'static str,
    search: String,
    rows: Vec<Row>,
    total: u64,
    next: Option<String>,
    first: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct InboxParams {
    status: Option<String>,
    q: Option<String>,
    cursor: Option<String>,
    done: Option<String>,
    pending: Option<String>,
}

const STATUSES: [(&str, &str, InboxStatus); 4] = [
    ("unclaimed", "待认领", InboxStatus::Unclaimed),
    ("claimed", "已认领", InboxStatus::Claimed),
    ("overdue", "已逾期", InboxStatus::Overdue),
    ("returned", "已退回", InboxStatus::Returned),
];

fn inbox_href(status: &str, search: &str, cursor: Option<&str>) -> String {
    let mut params = vec![("status", status)];
    if !search.is_empty() {
        params.push(("q", search));
    }
    if let Some(c) = cursor {
        params.push(("cursor", c));
    }
    format!(
        "/ui/inbox?{}",
        serde_urlencoded::to_string(params).unwrap_or_default()
    )
}

/// `GET /ui/inbox?status=&q=&cursor=`: most urgent first, a page at a time.
pub async fn inbox(
    State(state): State<Arc<AppState>>,
    clerk: Clerk,
    Query(p): Query<InboxParams>,
) -> Response {
    let department = clerk.department().to_string();
    let (status, status_name, which) = STATUSES
        .iter()
        .find(|(k, _, _)| Some(*k) == p.status.as_deref())
        .copied()
        .unwrap_or(STATUSES[0]);
    let search = p.q.clone().unwrap_or_default().trim().to_string();
    let query = InboxQuery {
        status: Some(which),
        search: (!search.is_empty()).then(|| search.clone()),
        order: InboxOrder::Urgency,
        cursor: p.cursor.clone().filter(|c| !c.is_empty()),
        limit: PAGE_SIZE,
    };
    let page = match backend::inbox_page(&state, &department, &query).await {
        Ok(page) => page,
        Err(f) => return Person::failure_page(&clerk.0, &state, f),
    };
    // The other tabs' counts cost a query each; while searching, the tabs show none.
    let mut tabs = Vec::new();
    for (key, name, s) in STATUSES {
        let total = if s == which {
            Some(page.total)
        } else if query.search.is_some() {
            None
        } else {
            let count = InboxQuery {
                status: Some(s),
                search: query.search.clone(),
                order: InboxOrder::Urgency,
                cursor: None,
                limit: 1,
            };
            match backend::inbox_page(&state, &department, &count).await {
                Ok(p) => Some(p.total),
                Err(f) => return Person::failure_page(&clerk.0, &state, f),
            }
        };
        tabs.push(Tab {
            key,
            name,
            total,
            active: s == which,
            href: inbox_href(key, &search, None),
        });
    }
    let rows = page.rows.iter().map(|(e, r)| row(&state, e, r)).collect();
    let layout = clerk
        .0
        .layout(&state, "收件箱", "inbox")
        .with_flash(done_flash(p.done.as_deref(), p.pending.is_some()));
    render(&InboxPage {
        layout,
        tabs,
        status,
        status_name,
        rows,
        total: page.total,
        next: page
            .next
            .as_deref()
            .map(|c| inbox_href(status, &search, Some(c))),
        first: query
            .cursor
            .is_some()
            .then(|| inbox_href(status, &search, None)),
        search,
    })
}

/// An entry of a record as the record page shows it.
pub struct EntryView {
    pub department: String,
    pub state: &'static str,
    pub pushed: String,
    pub claimed: String,
    pub rule: String,
    pub due: String,
    pub left: String,
    pub urgency: &'static str,
    pub note: String,
}

pub fn entry_view(state: &AppState, e: &Entry) -> EntryView {
    let now = backend::now(state);
    let (rule, due, left, urgency) = match e.obligation() {
        Some((rule, due)) => {
            let left: Left = labels::working_days_left(backend::calendar(state), now, due);
            (
                labels::rule_name(rule),
                labels::local_time(due),
                left.text(),
                left.class(),
            )
        }
        None => (String::new(), "—".into(), String::new(), "none"),
    };
    EntryView {
        department: department_name(state, &e.department),
        state: labels::state_name(e.state),
        pushed: labels::local_time(e.pushed_at),
        claimed: e.claimed_at.map(labels::local_time).unwrap_or_default(),
        rule,
        due,
        left,
        urgency,
        note: e
            .note
            .clone()
            .or_else(|| e.deadline_problem.clone())
            .unwrap_or_default(),
    }
}

/// A department's name from the catalog, else its code.
pub fn department_name(state: &AppState, code: &str) -> String {
    backend::catalog(state)
        .department(code)
        .map(|d| d.name.clone())
        .unwrap_or_else(|| code.to_string())
}

/// One line of a record's history.
pub struct HistoryView {
    pub at: String,
    pub action: String,
    pub department: String,
    pub actor: String,
    pub channel: String,
    pub detail: String,
}

pub fn history_view(state: &AppState, h: &HistoryRow) -> HistoryView {
    let detail = [
        "reason",
        "content",
        "to",
        "feedback_type",
        "why",
        "level",
        "disposition",
    ]
    .iter()
    .filter_map(|k| {
        h.detail.get(*k).and_then(|v| v.as_str()).map(|v| match *k {
            "to" => format!("接收部门：{}", department_name(state, v)),
            "feedback_type" => labels::action_name(v),
            "reason" => format!("理由：{v}"),
            _ => v.to_string(),
        })
    })
    .collect::<Vec<_>>()
    .join("；");
    HistoryView {
        at: labels::local_time(h.at),
        action: labels::action_name(&h.action),
        department: h
            .department
            .as_deref()
            .map(|d| department_name(state, d))
            .unwrap_or_default(),
        actor: h.actor.clone().unwrap_or_default(),
        channel: h.channel.clone().unwrap_or_default(),
        detail: crate::mask::mask(&detail),
    }
}

/// A choice in a select.
pub struct Choice {
    pub value: String,
    pub label: String,
}

#[derive(askama::Template)]
#[template(path = "record.html")]
struct RecordPage {
    layout: Layout,
    id: String,
    kind: &'static str,
    title: String,
    groups: Vec<FieldGroup>,
    entries: Vec<EntryView>,
    history: Vec<HistoryView>,
    can_claim: bool,
    can_return: bool,
    can_forward: bool,
    feedback_types: Vec<Choice>,
    forward_to: Vec<Choice>,
    push_late: bool,
}

/// The feedback types open to a department's entry now.
fn feedback_types(e: &Entry) -> Vec<Choice> {
    let rules = [e.claim_rule.as_deref(), e.feedback_rule.as_deref()];
    let has = |r: &str| rules.contains(&Some(r));
    let mut types: Vec<&str> = Vec::new();
    let claimed = matches!(e.state, EntryState::Claimed | EntryState::Feedback);
    if has(rules::REPLY_INQUIRY) && (claimed || e.state.is_unclaimed()) {
        types.push("reply");
    }
    if has(rules::CONFIRM_INSPECTION) && (claimed || e.state.is_unclaimed()) {
        types.push("inspection_attendance");
    }
    if claimed {
        if has(rules::INSPECTION_SIGNOFF) {
            types.push("inspection_result");
        }
        if has(rules::VERIFY_COMMITMENT) {
            types.push("commitment_verified");
        }
        types.extend([
            "supervision_started",
            "rectification",
            "disposition",
            "other",
        ]);
    }
    types
        .into_iter()
        .map(|t| Choice {
            value: t.to_string(),
            label: labels::action_name(t),
        })
        .collect()
}

#[derive(Deserialize, Default)]
pub struct DoneParams {
    done: Option<String>,
    pending: Option<String>,
}

/// `GET /ui/records/{id}`: the record under Chinese labels, the department's entry, the history
/// and the forms that apply.
pub async fn record(
    State(state): State<Arc<AppState>>,
    clerk: Clerk,
    Path(id): Path<String>,
    Query(p): Query<DoneParams>,
) -> Response {
    let department = clerk.department().to_string();
    let page = match backend::record(&state, Some(&department), &id).await {
        Ok(page) => page,
        Err(f) => return Person::failure_page(&clerk.0, &state, f),
    };
    let (matter, party, case_no) = labels::summary(&page.record.data);
    let mine = page.mine.as_ref();
    let st = mine.map(|e| e.state);
    let can_claim = st.is_some_and(EntryState::is_unclaimed);
    let can_return = st.is_some_and(|s| s.is_unclaimed() || s == EntryState::Claimed);
    let forward_to = backend::catalog(&state)
        .departments
        .iter()
        .filter(|d| d.code != department)
        .map(|d| Choice {
            value: d.code.clone(),
            label: d.name.clone(),
        })
        .collect();
    let layout = clerk
        .0
        .layout(&state, format!("{matter} · {case_no}"), "inbox")
        .with_flash(done_flash(p.done.as_deref(), p.pending.is_some()));
    render(&RecordPage {
        layout,
        id: page.record.record_id.clone(),
        kind: labels::kind_name(page.record.kind),
        title: format!("{matter} — {party}"),
        groups: labels::record_fields(page.record.kind, &page.record.data),
        entries: page.entries.iter().map(|e| entry_view(&state, e)).collect(),
        history: page
            .history
            .iter()
            .map(|h| history_view(&state, h))
            .collect(),
        can_claim,
        can_return,
        can_forward: can_return,
        feedback_types: mine.map(feedback_types).unwrap_or_default(),
        forward_to,
        push_late: page.record.push_late,
    })
}

/// After an action: back to the record with what happened.
fn done(id: &str, what: &str, applied: bool) -> Response {
    let pending = if applied { "" } else { "&pending=1" };
    Redirect::to(&format!(
        "/ui/records/{}?done={what}{pending}",
        urlencode(id)
    ))
    .into_response()
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .unwrap_or_default()
        .trim_start_matches('=')
        .to_string()
}

async fn acted(
    state: &AppState,
    clerk: &Clerk,
    id: &str,
    what: &str,
    result: Result<bool, backend::Failure>,
    detail: serde_json::Value,
) -> Response {
    match result {
        Ok(applied) => {
            let mut detail = detail;
            detail["applied"] = serde_json::json!(applied);
            if let Err(f) = clerk
                .0
                .audit(state, &format!("record.{what}"), id, detail)
                .await
            {
                return Person::failure_page(&clerk.0, state, f);
            }
            done(id, what, applied)
        }
        Err(f) => Person::failure_page(&clerk.0, state, f),
    }
}

/// `POST /ui/records/{id}/claim`.
pub async fn claim(
    State(state): State<Arc<AppState>>,
    clerk: Clerk,
    Path(id): Path<String>,
) -> Response {
    let result = backend::claim(&state, clerk.department(), &id, &clerk.0.signature()).await;
    acted(&state, &clerk, &id, "claim", result, serde_json::json!({})).await
}

#[derive(Deserialize)]
pub struct ReasonForm {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    to: String,
}

/// `POST /ui/records/{id}/return`: 非本部门, with a reason.
pub async fn give_back(
    State(state): State<Arc<AppState>>,
    clerk: Clerk,
    Path(id): Path<String>,
    Form(form): Form<ReasonForm>,
) -> Response {
    let result = backend::give_back(
        &state,
        clerk.department(),
        &id,
        &form.reason,
        &clerk.0.signature(),
    )
    .await;
    acted(
        &state,
        &clerk,
        &id,
        "return",
        result,
        serde_json::json!({"reason": form.reason}),
    )
    .await
}

/// `POST /ui/records/{id}/forward`: 转交, with a reason.
pub async fn forward(
    State(state): State<Arc<AppState>>,
    clerk: Clerk,
    Path(id): Path<String>,
    Form(form): Form<ReasonForm>,
) -> Response {
    let to = form.to.trim();
    let result = backend::forward(
        &state,
        clerk.department(),
        &id,
        (!to.is_empty()).then_some(to),
        &form.reason,
        &clerk.0.signature(),
    )
    .await;
    acted(
        &state,
        &clerk,
        &id,
        "forward",
        result,
        serde_json::json!({"to": to, "reason": form.reason}),
    )
    .await
}

#[derive(Deserialize)]
pub struct FeedbackForm {
    feedback_type: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    document_no: String,
    #[serde(default)]
    disposition: String,
    #[serde(default)]
    verification: String,
    #[serde(default)]
    attendees: String,
    #[serde(default)]
    agreed: String,
}

/// `POST /ui/records/{id}/feedback`.
pub async fn feedback(
    State(state): State<Arc<AppState>>,
    clerk: Clerk,
    Path(id): Path<String>,
    Form(form): Form<FeedbackForm>,
) -> Response {
    let some = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let needs = |what: &str| {
        Person::error_page(&clerk.0, &state, StatusCode::BAD_REQUEST, what.to_string())
    };
    match form.feedback_type.as_str() {
        "reply" if form.content.trim().is_empty() => return needs("函询答复须填写答复内容"),
        "inspection_attendance" if form.attendees.trim().is_empty() => {
            return needs("请填写参加踏勘的人员（每行一人）")
        }
        "commitment_verified" if form.verification.is_empty() => {
            return needs("请选择承诺核查结果")
        }
        "disposition" if form.disposition.is_empty() => return needs("请选择处置方式"),
        _ => {}
    }
    let input = FeedbackInput {
        feedback_type: form.feedback_type.clone(),
        content: some(&form.content),
        document_no: some(&form.document_no),
        disposition: some(&form.disposition),
        verification: some(&form.verification),
        attendees: form
            .attendees
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        agreed: match form.agreed.as_str() {
            "yes" => Some(true),
            "no" => Some(false),
            _ => None,
        },
    };
    let result =
        backend::feedback(&state, clerk.department(), &id, input, &clerk.0.signature()).await;
    acted(
        &state,
        &clerk,
        &id,
        "feedback",
        result,
        serde_json::json!({"feedback_type": form.feedback_type}),
    )
    .await
}

#[derive(askama::Template)]
#[template(path = "obligations.html")]
struct ObligationsPage {
    layout: Layout,
    heading: &'static str,
    explain: &'static str,
    rows: Vec<Row>,
}

async fn obligations(
    state: Arc<AppState>,
    clerk: Clerk,
    rule: &str,
    section: &'static str,
    heading: &'static str,
    explain: &'static str,
) -> Response {
    let department = clerk.department().to_string();
    let list = match backend::obligations(&state, rule, Some(&department), 500).await {
        Ok(list) => list,
        Err(f) => return Person::failure_page(&clerk.0, &state, f),
    };
    let rows = list.iter().map(|(e, r)| row(&state, e, r)).collect();
    render(&ObligationsPage {
        layout: clerk.0.layout(&state, heading, section),
        heading,
        explain,
        rows,
    })
}

/// `GET /ui/inquiries`: 业务函询 waiting for the department's reply.
pub async fn inquiries(State(state): State<Arc<AppState>>, clerk: Clerk) -> Response {
    obligations(
        state,
        clerk,
        rules::REPLY_INQUIRY,
        "inquiries",
        "业务函询",
        "待本部门答复的函询，按答复期限排序。逾期未答复的，按所适用的规定可能视为同意。",
    )
    .await
}

/// `GET /ui/inspections`: joint inspections waiting for attendance or a sign-off.
pub async fn inspections(State(state): State<Arc<AppState>>, clerk: Clerk) -> Response {
    obligations(
        state,
        clerk,
        rules::CONFIRM_INSPECTION,
        "inspections",
        "联合踏勘",
        "需确认参加人员（踏勘开始前）或签字确认踏勘结果的踏勘通知。",
    )
    .await
}

/// `GET /ui/commitments`: 告知承诺 commitments the department still has to verify.
pub async fn commitments(State(state): State<Arc<AppState>>, clerk: Clerk) -> Response {
    obligations(
        state,
        clerk,
        rules::VERIFY_COMMITMENT,
        "commitments",
        "告知承诺核查",
        "承诺期届满后须核查的告知承诺审批，按核查期限排序。",
    )
    .await
}
