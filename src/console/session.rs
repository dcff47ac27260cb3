//! Who is at the browser: the session cookie, the extractors that turn it into a clerk or an
//! operator, login, logout and the password change, the CSRF check every form passes, and the
//! security headers of every console response.
//!
//! Cookies are HttpOnly and SameSite=Strict, scoped to `/ui`, and Secure when the request came
//! over TLS through a proxy that says so (`X-Forwarded-Proto: https` or `Forwarded: proto=https`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::accounts::{self, unix_now};
use super::page::{render, ErrorPage, Layout, PersonView};
use crate::api::AppState;
use crate::state::UserRow;

pub const SESSION_COOKIE: &str = "sg_session";
pub const LOGIN_COOKIE: &str = "sg_login";
/// The largest form body the console reads.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// The Content-Security-Policy of every console response: scripts and styles only from the
/// gateway itself, no inline script, no framing.
pub const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The value of a cookie.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the browser reached the gateway over TLS (through a proxy that says so).
pub fn over_tls(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("https")
        });
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split([';', ','])
                .any(|p| p.trim().eq_ignore_ascii_case("proto=https"))
        });
    forwarded_proto || forwarded
}

/// A `Set-Cookie` value with the console's flags.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: i64, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("cookie values are hex and ASCII")
}

/// A person with a valid session.
pub struct Person {
    pub user: UserRow,
    pub session_id: String,
    /// The CSRF token of this session's forms.
    pub csrf: String,
}

impl Person {
    /// The actor in the audit log.
    pub fn actor(&self) -> String {
        format!("console:{}", self.user.login)
    }

    /// Who acted, in the ledger history: the person's name and login.
    pub fn signature(&self) -> String {
        format!("{}（{}）", self.user.name, self.user.login)
    }

    /// The page layout for this person.
    pub fn layout(
        &self,
        state: &AppState,
        title: impl Into<String>,
        section: &'static str,
    ) -> Layout {
        let department = self.user.department.as_ref().map(|code| {
            super::backend::catalog(state)
                .department(code)
                .map(|d| d.name.clone())
                .unwrap_or_else(|| code.clone())
        });
        Layout {
            title: title.into(),
            section,
            person: Some(PersonView {
                name: self.user.name.clone(),
                login: self.user.login.clone(),
                department,
                admin: self.user.role == "admin",
            }),
            csrf: self.csrf.clone(),
            flash: None,
        }
    }

    /// Writes the audit log entry of an action.
    pub async fn audit(
        &self,
        state: &AppState,
        action: &str,
        target: &str,
        mut detail: serde_json::Value,
    ) -> Result<(), super::backend::Failure> {
        detail["name"] = serde_json::json!(self.user.name);
        if let Some(d) = &self.user.department {
            detail["department"] = serde_json::json!(d);
        }
        state
            .ingestor
            .state
            .audit(&self.actor(), action, target, detail)
            .await
            .map_err(|e| {
                super::backend::Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("审计日志写入失败：{e}"),
                )
            })
    }
}

/// Not signed in (or no longer): to the login page.
fn to_login() -> Response {
    Redirect::to("/ui/login").into_response()
}

impl FromRequestParts<Arc<AppState>> for Person {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Some((id, secret)) =
            cookie(&parts.headers, SESSION_COOKIE).and_then(accounts::split_cookie)
        else {
            return Err(to_login());
        };
        let store = &state.ingestor.state;
        let found = store.session(id).await.map_err(|e| {
            ErrorPage::plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("状态库暂不可用：{e}"),
            )
        })?;
        let Some((row, user)) = found else {
            return Err(to_login());
        };
        if !accounts::secret_matches(secret, &row.secret_sha256) {
            return Err(to_login());
        }
        let now = unix_now();
        if row.expires_at < now || row.idle_until < now || user.disabled {
            let _ = store.delete_session(id).await;
            return Err(to_login());
        }
        // Moving the idle deadline costs a write; once a minute is enough.
        if row.idle_until - now < accounts::IDLE_SECONDS - 60 {
            if let Err(e) = store.touch_session(id, now + accounts::IDLE_SECONDS).await {
                tracing::warn!(error = %e, "cannot extend a console session");
            }
        }
        Ok(Person {
            user,
            session_id: row.id,
            csrf: accounts::csrf_token(secret),
        })
    }
}

/// A department clerk who has set their own password.
pub struct Clerk(pub Person);

impl Clerk {
    /// The clerk's department code.
    pub fn department(&self) -> &str {
        self.0.user.department.as_deref().unwrap_or("")
    }
}

/// An operator (admin account) who has set their own password.
pub struct Operator(pub Person);

fn must_change(person: &Person) -> Option<Response> {
    person
        .user
        .must_change
        .then(|| Redirect::to("/ui/password").into_response())
}

impl FromRequestParts<Arc<AppState>> for Clerk {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let person = Person::from_request_parts(parts, state).await?;
        if let Some(r) = must_change(&person) {
            return Err(r);
        }
        if person.user.role != "clerk" || person.user.department.is_none() {
            return Err(Person::error_page(
                &person,
                state,
                StatusCode::FORBIDDEN,
                "此页面供部门联络员使用；运维管理员请使用“运维”页面。",
            ));
        }
        Ok(Clerk(person))
    }
}

impl FromRequestParts<Arc<AppState>> for Operator {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let person = Person::from_request_parts(parts, state).await?;
        if let Some(r) = must_change(&person) {
            return Err(r);
        }
        if person.user.role != "admin" {
            return Err(Person::error_page(
                &person,
                state,
                StatusCode::FORBIDDEN,
                "此页面仅限运维管理员。",
            ));
        }
        Ok(Operator(person))
    }
}

/// Adds the security headers to every console response; pages are never cached.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Refuses a form post that is not from the console's own pages: a cross-site request, or a
/// `csrf` field that is missing or does not belong to the session (for the login form, to the
/// login cookie). Every POST under `/ui` passes here before its handler.
pub async fn csrf_guard(req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let path = req.uri().path().to_string();
    let refused = |why: &str| refuse(&path, why);
    let headers = req.headers();
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site")
    {
        return refused("cross-site request");
    }
    if let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        if origin_host != host {
            return refused("origin differs from host");
        }
    }
    let secret = if req.uri().path() == "/ui/login" {
        cookie(headers, LOGIN_COOKIE).map(str::to_string)
    } else {
        cookie(headers, SESSION_COOKIE)
            .and_then(accounts::split_cookie)
            .map(|(_, s)| s.to_string())
    };
    let Some(secret) = secret else {
        return refused("no session cookie");
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return ErrorPage::plain(StatusCode::PAYLOAD_TOO_LARGE, "提交的内容过大");
    };
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
    let token = fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    if !accounts::csrf_matches(&secret, token) {
        return refuse(&path, "CSRF token missing or wrong");
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn refuse(path: &str, why: &str) -> Response {
    tracing::warn!(path, why, "console form refused");
    ErrorPage::plain(
        StatusCode::FORBIDDEN,
        "表单已失效或来源不明（CSRF 校验未通过）。请刷新页面后重新提交。",
    )
}

#[derive(askama::Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    login: String,
    message: Option<String>,
}

/// `GET /ui/login`: the form, with a fresh login cookie its CSRF token is derived from.
pub async fn login_form(headers: HeaderMap) -> Response {
    login_page(&headers, String::new(), None, StatusCode::OK)
}

fn login_page(
    headers: &HeaderMap,
    login: String,
    message: Option<String>,
    status: StatusCode,
) -> Response {
    let secret = accounts::login_secret();
    let layout = Layout {
        title: "登录".into(),
        section: "login",
        person: None,
        csrf: accounts::csrf_token(&secret),
        flash: None,
    };
    let mut r = (
        status,
        render(&LoginPage {
            layout,
            login,
            message,
        }),
    )
        .into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &secret, "/ui/login", 3600, over_tls(headers)),
    );
    r
}

#[derive(Deserialize)]
pub struct LoginForm {
    login: String,
    password: String,
}

/// `POST /ui/login`: checks the password (argon2, off the async runtime), counts failures and
/// locks the account after [`accounts::MAX_FAILURES`] of them, starts a session; audited.
pub async fn login(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let store = &state.ingestor.state;
    // Whatever was typed goes into the audit log: a login is at most 64 characters.
    let login: String = form.login.trim().to_lowercase().chars().take(64).collect();
    let unavailable = |e: crate::state::StateError| {
        ErrorPage::plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("状态库暂不可用：{e}"),
        )
    };
    let user = match store.user(&login).await {
        Ok(u) => u,
        Err(e) => return unavailable(e),
    };
    let now = unix_now();
    let wrong = "登录名或密码不正确".to_string();
    if let Some(u) = &user {
        if let Some(until) = u.locked_until.filter(|t| *t > now) {
            let _ = store
                .audit(
                    &format!("console:{login}"),
                    "login.refused_locked",
                    &login,
                    serde_json::json!({}),
                )
                .await;
            return login_page(
                &headers,
                login,
                Some(format!(
                    "连续登录失败次数过多，账号已锁定至 {}，请稍后再试或联系管理员重置密码",
                    super::labels::local_unix(until)
                )),
                StatusCode::TOO_MANY_REQUESTS,
            );
        }
    }
    let hash = user
        .as_ref()
        .filter(|u| !u.disabled)
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| accounts::decoy_hash().to_string());
    let password = form.password.clone();
    let ok = tokio::task::spawn_blocking(move || accounts::verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|u| ok && !u.disabled) else {
        let mut locked = false;
        if let Err(e) = async {
            if store.user(&login).await?.is_some() {
                locked = store
                    .login_failed(&login, accounts::MAX_FAILURES, now + accounts::LOCK_SECONDS)
                    .await?;
            }
            store
                .audit(
                    &format!("console:{login}"),
                    "login.failed",
                    &login,
                    serde_json::json!({"locked": locked}),
                )
                .await
        }
        .await
        {
            return unavailable(e);
        }
        let message = if locked {
            format!(
                "连续 {} 次登录失败，账号已锁定 {} 分钟",
                accounts::MAX_FAILURES,
                accounts::LOCK_SECONDS / 60
            )
        } else {
            wrong
        };
        return login_page(&headers, login, Some(message), StatusCode::UNAUTHORIZED);
    };
    let (cookie_value, row) = accounts::new_session(&user.id, now);
    let started = async {
        store.login_succeeded(&user.login).await?;
        store.purge_sessions(now).await?;
        store.add_session(row).await?;
        store
            .audit(
                &format!("console:{}", user.login),
                "login",
                &user.login,
                serde_json::json!({"name": user.name}),
            )
            .await
    }
    .await;
    if let Err(e) = started {
        return unavailable(e);
    }
    let tls = over_tls(&headers);
    let target = if user.must_change {
        "/ui/password"
    } else {
        "/ui"
    };
    let mut r = Redirect::to(target).into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            &cookie_value,
            "/ui",
            accounts::SESSION_SECONDS,
            tls,
        ),
    );
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, "", "/ui/login", 0, tls),
    );
    r
}

/// `POST /ui/logout`: ends the session; audited.
pub async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    person: Person,
) -> Response {
    let _ = state
        .ingestor
        .state
        .delete_session(&person.session_id)
        .await;
    let _ = person
        .audit(&state, "logout", &person.user.login, serde_json::json!({}))
        .await;
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", "/ui", 0, over_tls(&headers)),
    );
    r
}

#[derive(askama::Template)]
#[template(path = "password.html")]
struct PasswordPage {
    layout: Layout,
    forced: bool,
    message: Option<String>,
}

/// `GET /ui/password`: the change form (the only page open while a one-time password is in use).
pub async fn password_form(State(state): State<Arc<AppState>>, person: Person) -> Response {
    render(&PasswordPage {
        forced: person.user.must_change,
        layout: person.layout(&state, "修改密码", "password"),
        message: None,
    })
    .into_response()
}

#[derive(Deserialize)]
pub struct PasswordForm {
    current: String,
    new: String,
    repeat: String,
}

/// `POST /ui/password`: checks the current password, sets the new one, ends the person's other
/// sessions; audited.
pub async fn change_password(
    State(state): State<Arc<AppState>>,
    person: Person,
    Form(form): Form<PasswordForm>,
) -> Response {
    let fail = |message: String, status: StatusCode| {
        (
            status,
            render(&PasswordPage {
                forced: person.user.must_change,
                layout: person.layout(&state, "修改密码", "password"),
                message: Some(message),
            }),
        )
            .into_response()
    };
    let hash = person.user.password_hash.clone();
    let current = form.current.clone();
    let ok = tokio::task::spawn_blocking(move || accounts::verify_password(&current, &hash))
        .await
        .unwrap_or(false);
    if !ok {
        return fail("当前密码不正确".into(), StatusCode::UNAUTHORIZED);
    }
    if let Some(problem) =
        accounts::password_problem(&form.new, &form.repeat, &person.user.login, &form.current)
    {
        return fail(problem, StatusCode::BAD_REQUEST);
    }
    let new = form.new.clone();
    let hash = match tokio::task::spawn_blocking(move || accounts::hash_password(&new)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return fail(e.to_string(), StatusCode::INTERNAL_SERVER_ERROR),
        Err(e) => return fail(e.to_string(), StatusCode::INTERNAL_SERVER_ERROR),
    };
    let store = &state.ingestor.state;
    let done = async {
        store.set_password(&person.user.login, &hash, false).await?;
        store
            .delete_sessions_of(&person.user.id, Some(&person.session_id))
            .await
    }
    .await;
    if let Err(e) = done {
        return fail(
            format!("状态库暂不可用：{e}"),
            StatusCode::SERVICE_UNAVAILABLE,
        );
    }
    if let Err(f) = person
        .audit(
            &state,
            "password.changed",
            &person.user.login,
            serde_json::json!({}),
        )
        .await
    {
        return fail(f.message, f.status);
    }
    Redirect::to("/ui?done=password").into_response()
}

impl Person {
    /// A page within the person's frame that says why something could not be shown or done.
    pub fn error_page(
        &self,
        state: &AppState,
        status: StatusCode,
        message: impl Into<String>,
    ) -> Response {
        ErrorPage::in_layout(self.layout(state, "无法完成", ""), status, message)
    }

    /// The state store did not answer, as a page (503).
    pub fn state_unavailable(&self, state: &AppState, e: impl std::fmt::Display) -> Response {
        self.error_page(
            state,
            StatusCode::SERVICE_UNAVAILABLE,
            format!("状态库暂不可用：{e}"),
        )
    }

    /// A backend failure as a page.
    pub fn failure_page(&self, state: &AppState, f: super::backend::Failure) -> Response {
        self.error_page(state, f.status, f.message)
    }
}
