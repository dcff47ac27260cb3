//! The web console at `/ui`: server-rendered zh-CN pages (askama templates in `templates/`) for
//! department clerks (the inbox, a record with its history, 认领/退回/反馈/转交, inquiries,
//! inspections and commitments) and for operators (warnings, the DLQ and its replay, the
//! unrouted queue, adapters, accounts, tokens, liaison officers, the monthly 通报 with its chart).
//!
//! Every action is a plain HTML form, so the console works without script; `assets/console.js`
//! only adds confirmations and guards against double submission. People log in with accounts
//! (`accounts`, `session`); every call into the ledger, the bus and the API's logic goes through
//! `backend`.

pub mod accounts;
pub mod admin;
pub mod backend;
pub mod chart;
pub mod clerk;
pub mod labels;
pub mod page;
pub mod session;

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::api::AppState;
use page::ErrorPage;
use session::Person;

/// The console's routes: `/` and `/ui…`, with the security headers on every response and the
/// CSRF check before every form post.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(home))
        .route("/ui/", get(home))
        .route("/ui/login", get(session::login_form).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route(
            "/ui/password",
            get(session::password_form).post(session::change_password),
        )
        .route("/ui/inbox", get(clerk::inbox))
        .route("/ui/records/{id}", get(clerk::record))
        .route("/ui/records/{id}/claim", post(clerk::claim))
        .route("/ui/records/{id}/return", post(clerk::give_back))
        .route("/ui/records/{id}/feedback", post(clerk::feedback))
        .route("/ui/records/{id}/forward", post(clerk::forward))
        .route("/ui/inquiries", get(clerk::inquiries))
        .route("/ui/inspections", get(clerk::inspections))
        .route("/ui/commitments", get(clerk::commitments))
        .route("/ui/admin", get(admin::overview))
        .route("/ui/admin/dlq", get(admin::dlq))
        .route("/ui/admin/dlq/replay", post(admin::replay))
        .route("/ui/admin/unrouted", get(admin::unrouted))
        .route("/ui/admin/unrouted/{id}/route", post(admin::route))
        .route("/ui/admin/records/{id}", get(admin::record))
        .route("/ui/admin/adapters", get(admin::adapters))
        .route(
            "/ui/admin/accounts",
            get(admin::accounts).post(admin::create_account),
        )
        .route(
            "/ui/admin/accounts/{login}/disable",
            post(admin::disable_account),
        )
        .route(
            "/ui/admin/accounts/{login}/reset",
            post(admin::reset_account),
        )
        .route(
            "/ui/admin/tokens",
            get(admin::tokens).post(admin::issue_token),
        )
        .route("/ui/admin/tokens/{id}/revoke", post(admin::revoke_token))
        .route("/ui/admin/liaisons", get(admin::liaisons))
        .route("/ui/admin/liaisons/{code}", post(admin::set_liaison))
        .route("/ui/admin/report", get(admin::report))
        .route("/ui/admin/report.csv", get(admin::report_csv))
        .route("/ui/assets/{file}", get(asset))
        .layer(axum::middleware::from_fn(session::csrf_guard))
        .layer(axum::middleware::from_fn(session::security_headers))
        .with_state(state)
}

/// `GET /ui`: a clerk's inbox, an operator's overview, or the login page.
async fn home(person: Person, uri: axum::http::Uri) -> Response {
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    if person.user.must_change {
        return Redirect::to("/ui/password").into_response();
    }
    if person.user.role == "admin" {
        Redirect::to(&format!("/ui/admin{query}")).into_response()
    } else {
        Redirect::to(&format!("/ui/inbox{query}")).into_response()
    }
}

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// `GET /ui/assets/{file}`: the stylesheet and the small script, compiled into the binary.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return ErrorPage::plain(StatusCode::NOT_FOUND, "没有这个文件"),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}
