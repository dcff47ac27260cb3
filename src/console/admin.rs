//! The operator's pages (admin accounts): warnings that need a person, the DLQ with replay, the
//! unrouted queue with 指派, adapters and what arrived through them, accounts, tokens, the
//! liaison registry and the monthly 通报 with its chart and CSV.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::accounts::{self, NewUser};
use super::backend;
use super::chart::{self, Chart};
use super::clerk::{department_name, entry_view, history_view, Choice, EntryView, HistoryView};
use super::labels::{self, FieldGroup};
use super::page::{done_flash, render, Flash, Layout};
use super::session::Operator;
use super::session::Person;
use crate::api::AppState;
use crate::telemetry::METRICS;

/// Calendar data left below which the overview warns, in days.
pub const CALENDAR_WARN_DAYS: i64 = 60;

#[derive(Deserialize, Default)]
pub struct DoneParams {
    done: Option<String>,
}

/// A condition a person has to act on.
pub struct Warning {
    /// `critical` or `warning`.
    pub level: &'static str,
    pub text: String,
    pub href: String,
}

#[derive(askama::Template)]
#[template(path = "admin_overview.html")]
struct OverviewPage {
    layout: Layout,
    warnings: Vec<Warning>,
    unrouted: usize,
    dlq_open: usize,
    adapters: usize,
    accounts: usize,
    calendar_last: String,
    calendar_version: String,
    policy: String,
    bus: String,
}

/// `GET /ui/admin`: what needs a person now.
pub async fn overview(
    State(state): State<Arc<AppState>>,
    op: Operator,
    Query(p): Query<DoneParams>,
) -> Response {
    let mut warnings = Vec::new();
    let bus = match backend::bus_ready(&state).await {
        Ok(()) => "正常".to_string(),
        Err(e) => {
            warnings.push(Warning {
                level: "critical",
                text: format!("消息总线不可用：{e}。接入的记录无法发布，认领等操作无法记录。"),
                href: "/ui/admin".into(),
            });
            "不可用".to_string()
        }
    };
    let calendar = backend::calendar(&state);
    let today = backend::now(&state)
        .with_timezone(&crate::adapter::convert::shanghai())
        .date_naive();
    let days = calendar.days_remaining(today);
    if days < CALENDAR_WARN_DAYS {
        warnings.push(Warning {
            level: if days < 15 { "critical" } else { "warning" },
            text: format!(
                "工作日历数据只覆盖到 {}（剩 {days} 天）：请将国务院公布的下一年节假日安排放入日历目录并重启。",
                calendar.last_covered_date()
            ),
            href: "/ui/admin".into(),
        });
    }
    let uncomputable = METRICS.deadline_uncomputable.get();
    if uncomputable > 0 {
        warnings.push(Warning {
            level: "warning",
            text: format!("自启动以来有 {uncomputable} 个期限因日历缺少数据无法计算。"),
            href: "/ui/admin".into(),
        });
    }
    let unrouted = match backend::unrouted(&state).await {
        Ok(list) => list.len(),
        Err(f) => return Person::failure_page(&op.0, &state, f),
    };
    if unrouted > 0 {
        warnings.push(Warning {
            level: "warning",
            text: format!("{unrouted} 条记录没有责任部门，正在未路由队列中等待指派。"),
            href: "/ui/admin/unrouted".into(),
        });
    }
    let dlq_open = match backend::dlq_entries(&state).await {
        Ok((entries, done)) => entries.iter().filter(|e| !done.contains(&e.id)).count(),
        Err(f) => return Person::failure_page(&op.0, &state, f),
    };
    if dlq_open > 0 {
        warnings.push(Warning {
            level: "warning",
            text: format!("死信队列中有 {dlq_open} 条未处理的拒收记录。"),
            href: "/ui/admin/dlq".into(),
        });
    }
    let adapters = state.adapters.read().expect("adapter set lock").len();
    let accounts = state.ingestor.state.users().await.map_or(0, |u| u.len());
    render(&OverviewPage {
        layout: op
            .0
            .layout(&state, "运维概览", "overview")
            .with_flash(done_flash(p.done.as_deref(), false)),
        warnings,
        unrouted,
        dlq_open,
        adapters,
        accounts,
        calendar_last: calendar.last_covered_date().to_string(),
        calendar_version: calendar.version().to_string(),
        policy: state.shared.policy.clone(),
        bus,
    })
}

/// One DLQ entry as the page shows it.
pub struct DlqRow {
    pub id: String,
    pub time: String,
    pub adapter: String,
    pub stage: String,
    pub reason: String,
    pub error: String,
    pub preview: String,
    pub replayed: bool,
    pub replay_of: String,
}

#[derive(askama::Template)]
#[template(path = "dlq.html")]
struct DlqPage {
    layout: Layout,
    open: Vec<DlqRow>,
    done: Vec<DlqRow>,
    adapters: Vec<(String, usize)>,
    filter: String,
    results: Vec<(String, String, String)>,
}

#[derive(Deserialize, Default)]
pub struct DlqParams {
    adapter: Option<String>,
}

async fn dlq_page(
    state: &AppState,
    op: &Operator,
    filter: Option<&str>,
    flash: Option<Flash>,
    results: Vec<(String, String, String)>,
) -> Response {
    let (entries, done) = match backend::dlq_entries(state).await {
        Ok(x) => x,
        Err(f) => return Person::failure_page(&op.0, state, f),
    };
    let mut adapters: Vec<(String, usize)> = Vec::new();
    let mut open = Vec::new();
    let mut replayed = Vec::new();
    for e in entries.iter().rev() {
        let is_done = done.contains(&e.id);
        if !is_done {
            match adapters.iter_mut().find(|(a, _)| a == &e.adapter) {
                Some(a) => a.1 += 1,
                None => adapters.push((e.adapter.clone(), 1)),
            }
        }
        if filter.is_some_and(|f| f != e.adapter) {
            continue;
        }
        let error = e
            .errors
            .iter()
            .map(|err| {
                format!(
                    "{} {}",
                    err.get("path").and_then(|v| v.as_str()).unwrap_or(""),
                    err.get("reason").and_then(|v| v.as_str()).unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("；");
        let row = DlqRow {
            id: e.id.clone(),
            time: labels::local_text(&e.time),
            adapter: e.adapter.clone(),
            stage: e.stage.clone(),
            reason: e.reason.clone(),
            error: crate::mask::mask(&error),
            preview: e.preview.clone(),
            replayed: is_done,
            replay_of: e.replay_of.clone().unwrap_or_default(),
        };
        if is_done {
            replayed.push(row);
        } else {
            open.push(row);
        }
    }
    adapters.sort();
    replayed.truncate(100);
    render(&DlqPage {
        layout: op.0.layout(state, "死信队列", "dlq").with_flash(flash),
        open,
        done: replayed,
        adapters,
        filter: filter.unwrap_or("").to_string(),
        results,
    })
}

/// `GET /ui/admin/dlq[?adapter=]`: open entries first, newest first, previews masked.
pub async fn dlq(
    State(state): State<Arc<AppState>>,
    op: Operator,
    Query(p): Query<DlqParams>,
) -> Response {
    let filter = p.adapter.filter(|a| !a.is_empty());
    dlq_page(&state, &op, filter.as_deref(), None, Vec::new()).await
}

#[derive(Deserialize)]
pub struct ReplayForm {
    #[serde(default)]
    id: String,
    #[serde(default)]
    adapter: String,
}

/// `POST /ui/admin/dlq/replay`: one entry (`id`) or every open entry of an adapter (`adapter`),
/// through the adapters running now; each outcome is shown and audited.
pub async fn replay(
    State(state): State<Arc<AppState>>,
    op: Operator,
    Form(form): Form<ReplayForm>,
) -> Response {
    let ids: Vec<String> = Some(form.id.trim().to_string())
        .filter(|i| !i.is_empty())
        .into_iter()
        .collect();
    let adapter = Some(form.adapter.trim()).filter(|a| !a.is_empty() && ids.is_empty());
    let outcomes = match backend::replay(&state, &ids, adapter, &op.0.actor()).await {
        Ok(o) => o,
        Err(f) => return Person::failure_page(&op.0, &state, f),
    };
    let count = |k: &str| outcomes.iter().filter(|(_, r)| r.outcome() == k).count();
    let (accepted, duplicate, rejected, left) = (
        count("accepted"),
        count("duplicate"),
        count("rejected"),
        count("left"),
    );
    let flash = Flash {
        ok: rejected == 0 && left == 0,
        text: format!(
            "重放 {} 条：{accepted} 条已接收，{duplicate} 条重复，{rejected} 条再次被拒收，{left} 条留在死信队列",
            outcomes.len()
        ),
    };
    let results = outcomes
        .into_iter()
        .map(|(id, r)| {
            let outcome = match r.outcome() {
                "accepted" => "已接收",
                "duplicate" => "重复",
                "rejected" => "再次拒收",
                _ => "未重放",
            };
            (id, outcome.to_string(), crate::mask::mask(r.message()))
        })
        .collect();
    dlq_page(&state, &op, adapter, Some(flash), results).await
}

/// One unrouted record.
pub struct UnroutedRow {
    pub id: String,
    pub kind: &'static str,
    pub matter: String,
    pub party: String,
    pub case_no: String,
    pub reason: String,
    pub published: String,
}

#[derive(askama::Template)]
#[template(path = "unrouted.html")]
struct UnroutedPage {
    layout: Layout,
    rows: Vec<UnroutedRow>,
    departments: Vec<Choice>,
}

fn department_choices(state: &AppState) -> Vec<Choice> {
    backend::catalog(state)
        .departments
        .iter()
        .map(|d| Choice {
            value: d.code.clone(),
            label: d.name.clone(),
        })
        .collect()
}

/// `GET /ui/admin/unrouted`: records no department is responsible for, with a 指派 form each.
pub async fn unrouted(
    State(state): State<Arc<AppState>>,
    op: Operator,
    Query(p): Query<DoneParams>,
) -> Response {
    let list = match backend::unrouted(&state).await {
        Ok(list) => list,
        Err(f) => return Person::failure_page(&op.0, &state, f),
    };
    let rows = list
        .iter()
        .map(|r| {
            let (matter, party, case_no) = labels::summary(&r.data);
            UnroutedRow {
                id: r.record_id.clone(),
                kind: labels::kind_name(r.kind),
                matter,
                party,
                case_no,
                reason: r.unrouted.clone().unwrap_or_default(),
                published: labels::local_time(r.published_at),
            }
        })
        .collect();
    render(&UnroutedPage {
        layout: op
            .0
            .layout(&state, "未路由队列", "unrouted")
            .with_flash(done_flash(p.done.as_deref(), false)),
        rows,
        departments: department_choices(&state),
    })
}

#[derive(Deserialize)]
pub struct RouteForm {
    #[serde(default)]
    department: String,
}

/// `POST /ui/admin/unrouted/{id}/route`: 指派 to a department.
pub async fn route(
    State(state): State<Arc<AppState>>,
    op: Operator,
    Path(id): Path<String>,
    Form(form): Form<RouteForm>,
) -> Response {
    let departments: Vec<String> = Some(form.department.trim().to_string())
        .filter(|d| !d.is_empty())
        .into_iter()
        .collect();
    match backend::route(&state, &id, &departments, &op.0.signature()).await {
        Ok(applied) => {
            if let Err(f) =
                op.0.audit(
                    &state,
                    "record.route",
                    &id,
                    serde_json::json!({"to": departments, "applied": applied}),
                )
                .await
            {
                return Person::failure_page(&op.0, &state, f);
            }
            Redirect::to("/ui/admin/unrouted?done=route").into_response()
        }
        Err(f) => Person::failure_page(&op.0, &state, f),
    }
}

#[derive(askama::Template)]
#[template(path = "admin_record.html")]
struct AdminRecordPage {
    layout: Layout,
    id: String,
    kind: &'static str,
    title: String,
    unrouted: String,
    groups: Vec<FieldGroup>,
    entries: Vec<EntryView>,
    history: Vec<HistoryView>,
}

/// `GET /ui/admin/records/{id}`: a record with every entry and the whole history.
pub async fn record(
    State(state): State<Arc<AppState>>,
    op: Operator,
    Path(id): Path<String>,
) -> Response {
    let page = match backend::record(&state, None, &id).await {
        Ok(page) => page,
        Err(f) => return Person::failure_page(&op.0, &state, f),
    };
    let (matter, party, _) = labels::summary(&page.record.data);
    render(&AdminRecordPage {
        layout: op.0.layout(&state, matter.clone(), "unrouted"),
        id: page.record.record_id.clone(),
        kind: labels::kind_name(page.record.kind),
        title: format!("{matter} — {party}"),
        unrouted: page.record.unrouted.clone().unwrap_or_default(),
        groups: labels::record_fields(page.record.kind, &page.record.data),
        entries: page.entries.iter().map(|e| entry_view(&state, e)).collect(),
        history: page
            .history
            .iter()
            .map(|h| history_view(&state, h))
            .collect(),
    })
}

#[derive(askama::Template)]
#[template(path = "adapters.html")]
struct AdaptersPage {
    layout: Layout,
    rows: Vec<AdapterRow>,
}

/// One adapter as the page shows it.
pub struct AdapterRow {
    pub name: String,
    pub system: String,
    pub kind: &'static str,
    pub format: String,
    pub accepted: u64,
    pub duplicate: u64,
    pub rejected: u64,
    pub records: u64,
    pub last: String,
    pub dlq_open: usize,
}

/// `GET /ui/admin/adapters`: each adapter running now, its last record and its counts.
pub async fn adapters(State(state): State<Arc<AppState>>, op: Operator) -> Response {
    let list = match backend::adapters(&state).await {
        Ok(list) => list,
        Err(f) => return Person::failure_page(&op.0, &state, f),
    };
    let (entries, done) = match backend::dlq_entries(&state).await {
        Ok(x) => x,
        Err(f) => return Person::failure_page(&op.0, &state, f),
    };
    let rows = list
        .into_iter()
        .map(|a| AdapterRow {
            dlq_open: entries
                .iter()
                .filter(|e| e.adapter == a.name && !done.contains(&e.id))
                .count(),
            last: a
                .last_at
                .as_deref()
                .map(labels::local_text)
                .unwrap_or_else(|| "—".into()),
            name: a.name,
            system: a.system,
            kind: labels::kind_name(a.kind),
            format: a.format,
            accepted: a.accepted,
            duplicate: a.duplicate,
            rejected: a.rejected,
            records: a.records,
        })
        .collect();
    render(&AdaptersPage {
        layout: op.0.layout(&state, "适配器", "adapters"),
        rows,
    })
}

/// One account as the page shows it.
pub struct AccountRow {
    pub login: String,
    pub name: String,
    pub role: &'static str,
    pub department: String,
    pub status: String,
    pub created: String,
    pub disabled: bool,
}

#[derive(askama::Template)]
#[template(path = "accounts.html")]
struct AccountsPage {
    layout: Layout,
    rows: Vec<AccountRow>,
    departments: Vec<Choice>,
    message: Option<String>,
}

async fn accounts_page(
    state: &AppState,
    op: &Operator,
    flash: Option<Flash>,
    message: Option<String>,
    status: StatusCode,
) -> Response {
    let users = match state.ingestor.state.users().await {
        Ok(u) => u,
        Err(e) => return op.0.state_unavailable(state, e),
    };
    let now = accounts::unix_now();
    let rows = users
        .into_iter()
        .map(|u| AccountRow {
            status: if u.disabled {
                "已停用".into()
            } else if u.locked_until.is_some_and(|t| t > now) {
                format!(
                    "已锁定至 {}",
                    labels::local_unix(u.locked_until.unwrap_or(0))
                )
            } else if u.must_change {
                "待首次登录改密".into()
            } else {
                "正常".into()
            },
            role: if u.role == "admin" {
                "运维管理员"
            } else {
                "部门联络员"
            },
            department: u
                .department
                .as_deref()
                .map(|d| department_name(state, d))
                .unwrap_or_default(),
            created: labels::local_unix(u.created_at),
            disabled: u.disabled,
            login: u.login,
            name: u.name,
        })
        .collect();
    (
        status,
        render(&AccountsPage {
            layout: op.0.layout(state, "账号", "accounts").with_flash(flash),
            rows,
            departments: department_choices(state),
            message,
        }),
    )
        .into_response()
}

/// `GET /ui/admin/accounts`.
pub async fn accounts(
    State(state): State<Arc<AppState>>,
    op: Operator,
    Query(p): Query<DoneParams>,
) -> Response {
    accounts_page(
        &state,
        &op,
        done_flash(p.done.as_deref(), false),
        None,
        StatusCode::OK,
    )
    .await
}

#[derive(askama::Template)]
#[template(path = "secret.html")]
struct SecretPage {
    layout: Layout,
    heading: String,
    what: String,
    secret: String,
    back: &'static str,
}

#[derive(Deserialize)]
pub struct AccountForm {
    #[serde(default)]
    login: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    department: String,
}

/// `POST /ui/admin/accounts`: creates an account and shows its one-time password once.
pub async fn create_account(
    State(state): State<Arc<AppState>>,
    op: Operator,
    Form(form): Form<AccountForm>,
) -> Response {
    let new = NewUser {
        login: form.login.trim().to_lowercase(),
        name: form.name,
        role: form.role,
        department: Some(form.department),
    };
    let new = NewUser {
        department: if new.role == "admin" {
            None
        } else {
            new.department.clone()
        },
        ..new
    };
    match accounts::create_user(
        state.ingestor.state.as_ref(),
        backend::catalog(&state),
        new,
        &op.0.actor(),
    )
    .await
    {
        Ok((user, password)) => render(&SecretPage {
            layout: op.0.layout(&state, "账号已创建", "accounts"),
            heading: format!("账号 {} 已创建", user.login),
            what: format!(
                "{} 的一次性初始密码（只显示这一次；首次登录后必须修改）：",
                user.name
            ),
            secret: password,
            back: "/ui/admin/accounts",
        }),
        Err(accounts::AccountError::State(e)) => op.0.state_unavailable(&state, e),
        Err(e) => {
            accounts_page(
                &state,
                &op,
                None,
                Some(account_error(&e)),
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    }
}

fn account_error(e: &accounts::AccountError) -> String {
    use accounts::AccountError as E;
    match e {
        E::BadLogin(_) => "登录名须为 2–64 个小写字母、数字或 . _ -，以字母或数字开头".into(),
        E::Taken(l) => format!("登录名 {l} 已被使用"),
        E::Unknown(l) => format!("没有登录名为 {l} 的账号"),
        E::NoName => "请填写姓名".into(),
        E::BadRole(_) => "角色须为部门联络员或运维管理员".into(),
        E::NoDepartment => "部门联络员须选择所属部门".into(),
        E::UnknownDepartment(d) => format!("部门 {d} 不在路由目录中"),
        E::AdminWithDepartment => "运维管理员账号不属于部门".into(),
        E::Hash(m) => format!("密码处理失败：{m}"),
        E::State(e) => format!("状态库暂不可用：{e}"),
    }
}

/// `POST /ui/admin/accounts/{login}/disable`.
pub async fn disable_account(
    State(state): State<Arc<AppState>>,
    op: Operator,
    Path(login): Path<String>,
) -> Response {
    if login == op.0.user.login {
        return accounts_page(
            &state,
            &op,
            None,
            Some("不能停用自己的账号".into()),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    match accounts::disable_user(state.ingestor.state.as_ref(), &login, &op.0.actor()).await {
        Ok(_) => Redirect::to("/ui/admin/accounts?done=disabled").into_response(),
        Err(e) => {
            accounts_page(
                &state,
                &op,
                None,
                Some(account_error(&e)),
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    }
}

/// `POST /ui/admin/accounts/{login}/reset`: a new one-time password, shown once.
pub async fn reset_account(
    State(state): State<Arc<AppState>>,
    op: Operator,
    Path(login): Path<String>,
) -> Response {
    match accounts::reset_password(state.ingestor.state.as_ref(), &login, &op.0.actor()).await {
        Ok(password) => render(&SecretPage {
            layout: op.0.layout(&state, "密码已重置", "accounts"),
            heading: format!("账号 {login} 的密码已重置"),
            what: "新的一次性密码（只显示这一次；登录后必须修改）：".into(),
            secret: password,
            back: "/ui/admin/accounts",
        }),
        Err(e) => {
            accounts_page(
                &state,
                &op,
                None,
                Some(account_error(&e)),
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    }
}

/// One token as the page shows it (never the token itself).
pub struct TokenRow {
    pub id: String,
    pub role: String,
    pub subject: String,
    pub created: String,
    pub revoked: String,
}

#[derive(askama::Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    layout: Layout,
    rows: Vec<TokenRow>,
}

/// `GET /ui/admin/tokens`: bearer tokens of systems.
pub async fn tokens(
    State(state): State<Arc<AppState>>,
    op: Operator,
    Query(p): Query<DoneParams>,
) -> Response {
    let list = match state.ingestor.state.token_list().await {
        Ok(l) => l,
        Err(e) => return op.0.state_unavailable(&state, e),
    };
    let rows = list
        .into_iter()
        .rev()
        .map(|t| TokenRow {
            created: labels::local_text(&t.created_at),
            revoked: t
                .revoked_at
                .as_deref()
                .map(labels::local_text)
                .unwrap_or_default(),
            id: t.id,
            role: t.role,
            subject: t.subject,
        })
        .collect();
    render(&TokensPage {
        layout: op
            .0
            .layout(&state, "令牌", "tokens")
            .with_flash(done_flash(p.done.as_deref(), false)),
        rows,
    })
}

#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    role: String,
    #[serde(default)]
    subject: String,
}

/// `POST /ui/admin/tokens`: issues a token and shows it once.
pub async fn issue_token(
    State(state): State<Arc<AppState>>,
    op: Operator,
    Form(form): Form<TokenForm>,
) -> Response {
    match backend::issue_token(&state, &form.role, form.subject.trim(), &op.0.actor()).await {
        Ok((id, token)) => render(&SecretPage {
            layout: op.0.layout(&state, "令牌已签发", "tokens"),
            heading: format!("令牌 {id} 已签发"),
            what: format!(
                "{} {} 的令牌（只显示这一次，网关只保存其哈希）：",
                form.role,
                form.subject.trim()
            ),
            secret: token,
            back: "/ui/admin/tokens",
        }),
        Err(f) => Person::failure_page(&op.0, &state, f),
    }
}

/// `POST /ui/admin/tokens/{id}/revoke`.
pub async fn revoke_token(
    State(state): State<Arc<AppState>>,
    op: Operator,
    Path(id): Path<String>,
) -> Response {
    match backend::revoke_token(&state, &id, &op.0.actor()).await {
        Ok(true) => Redirect::to("/ui/admin/tokens?done=revoked").into_response(),
        Ok(false) => Person::error_page(
            &op.0,
            &state,
            StatusCode::NOT_FOUND,
            format!("没有有效的令牌 {id}"),
        ),
        Err(f) => Person::failure_page(&op.0, &state, f),
    }
}

/// One department with its liaison officer.
pub struct LiaisonRow {
    pub code: String,
    pub name: String,
    pub officer: String,
    pub phone: String,
    pub leader: String,
    pub email: String,
    pub updated: String,
}

#[derive(askama::Template)]
#[template(path = "liaisons.html")]
struct LiaisonsPage {
    layout: Layout,
    rows: Vec<LiaisonRow>,
}

/// `GET /ui/admin/liaisons`: the liaison registry (联络员), one form per department.
pub async fn liaisons(
    State(state): State<Arc<AppState>>,
    op: Operator,
    Query(p): Query<DoneParams>,
) -> Response {
    let stored = match state.ingestor.state.liaisons().await {
        Ok(l) => l,
        Err(e) => return op.0.state_unavailable(&state, e),
    };
    let rows = backend::catalog(&state)
        .departments
        .iter()
        .map(|d| {
            let v = stored
                .iter()
                .find(|(c, _)| c == &d.code)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let text = |k: &str| v[k].as_str().unwrap_or("").to_string();
            LiaisonRow {
                code: d.code.clone(),
                name: d.name.clone(),
                officer: text("officer"),
                phone: text("phone"),
                leader: text("leader"),
                email: text("email"),
                updated: labels::local_text(&text("updated_at")),
            }
        })
        .collect();
    render(&LiaisonsPage {
        layout: op
            .0
            .layout(&state, "联络员", "liaisons")
            .with_flash(done_flash(p.done.as_deref(), false)),
        rows,
    })
}

#[derive(Deserialize)]
pub struct LiaisonForm {
    #[serde(default)]
    officer: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    leader: String,
    #[serde(default)]
    email: String,
}

/// `POST /ui/admin/liaisons/{code}`: sets a department's liaison officer; audited.
pub async fn set_liaison(
    State(state): State<Arc<AppState>>,
    op: Operator,
    Path(code): Path<String>,
    Form(form): Form<LiaisonForm>,
) -> Response {
    let opt = |s: String| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    match backend::set_liaison(
        &state,
        &code,
        form.officer.trim().to_string(),
        form.phone.trim().to_string(),
        opt(form.leader),
        opt(form.email),
        &op.0.actor(),
    )
    .await
    {
        Ok(()) => Redirect::to("/ui/admin/liaisons?done=liaison").into_response(),
        Err(f) => Person::failure_page(&op.0, &state, f),
    }
}

/// One line of the report table.
pub struct ReportRow {
    pub department: String,
    pub kind: String,
    pub flow: String,
    pub pushed: u64,
    pub claimed: u64,
    /// Counts and rates of a flow without a deadline are "—".
    pub on_time: String,
    pub overdue: String,
    pub open: u64,
    pub returned: u64,
    pub rate: String,
    pub median: String,
}

/// One line of the push side: who pushed, how many, how many in time.
pub struct PushRow {
    pub pusher: String,
    pub kind: String,
    pub pushed: u64,
    pub on_time: String,
    pub late: String,
    pub rate: String,
    pub median: String,
}

#[derive(askama::Template)]
#[template(path = "report.html")]
struct ReportPage {
    layout: Layout,
    month: String,
    months: Vec<String>,
    rows: Vec<ReportRow>,
    pushes: Vec<PushRow>,
    chart: Chart,
    csv_href: String,
    generated: String,
    notes: String,
}

#[derive(Deserialize, Default)]
pub struct MonthParams {
    month: Option<String>,
}

fn month_or_now(state: &AppState, month: Option<String>) -> String {
    month.filter(|m| !m.is_empty()).unwrap_or_else(|| {
        backend::now(state)
            .with_timezone(&crate::adapter::convert::shanghai())
            .format("%Y-%m")
            .to_string()
    })
}

/// `GET /ui/admin/report?month=YYYY-MM`: the monthly 通报 with its chart.
pub async fn report(
    State(state): State<Arc<AppState>>,
    op: Operator,
    Query(p): Query<MonthParams>,
) -> Response {
    let month = month_or_now(&state, p.month);
    let r = match backend::monthly_report(&state, &month).await {
        Ok(r) => r,
        Err(f) => return Person::failure_page(&op.0, &state, f),
    };
    let flow_name = |f: &str| match f {
        "claim" => "推送认领",
        "inquiry" => "业务函询",
        "inspection" => "联合踏勘",
        "commitment" => "告知承诺",
        _ => "其他",
    };
    let kind_name = |k: &str| {
        k.parse::<crate::schema::RecordKind>()
            .ok()
            .map(labels::kind_name)
            .unwrap_or("—")
            .to_string()
    };
    let count = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_else(|| "—".into());
    let percent = |x: Option<f64>| {
        x.map(|x| format!("{:.0}%", x * 100.0))
            .unwrap_or_else(|| "—".into())
    };
    let hours = |h: Option<f64>| h.map(|h| format!("{h:.1}")).unwrap_or_else(|| "—".into());
    let rows = r
        .claims
        .iter()
        .map(|l| ReportRow {
            department: department_name(&state, &l.department),
            kind: kind_name(&l.kind),
            flow: flow_name(&l.flow).to_string(),
            pushed: l.pushed,
            claimed: l.claimed,
            on_time: count(l.claimed_on_time),
            overdue: count(
                l.claimed_late
                    .map(|late| late + l.open_overdue.unwrap_or(0)),
            ),
            open: l.open,
            returned: l.returned,
            rate: percent(l.on_time_rate),
            median: hours(l.median_claim_hours),
        })
        .collect();
    let pushes = r
        .pushes
        .iter()
        .map(|p| PushRow {
            pusher: department_name(&state, &p.pusher),
            kind: kind_name(&p.kind),
            pushed: p.pushed,
            on_time: count(p.on_time),
            late: count(p.late),
            rate: percent(p.on_time_rate),
            median: hours(p.median_push_hours),
        })
        .collect();
    let chart = chart::chart(&r.claims, |d| department_name(&state, d));
    let now = backend::now(&state).with_timezone(&crate::adapter::convert::shanghai());
    let months = (0..12)
        .map(|i| {
            let first = now.date_naive().with_day(1).expect("day 1");
            let d = first
                .checked_sub_months(chrono::Months::new(i))
                .unwrap_or(first);
            d.format("%Y-%m").to_string()
        })
        .collect();
    render(&ReportPage {
        layout: op.0.layout(&state, format!("{month} 月度通报"), "report"),
        csv_href: format!("/ui/admin/report.csv?month={}", month),
        generated: labels::local_text(&r.generated_at),
        month,
        months,
        rows,
        pushes,
        chart,
        notes: r.notes.clone(),
    })
}

/// `GET /ui/admin/report.csv?month=YYYY-MM`: the same CSV as the API's.
pub async fn report_csv(
    State(state): State<Arc<AppState>>,
    op: Operator,
    Query(p): Query<MonthParams>,
) -> Response {
    let month = month_or_now(&state, p.month);
    match backend::monthly_report(&state, &month).await {
        Ok(r) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"shenguan-report-{month}.csv\""),
                ),
            ],
            backend::report_csv(&r),
        )
            .into_response(),
        Err(f) => Person::failure_page(&op.0, &state, f),
    }
}

use chrono::Datelike as _;
