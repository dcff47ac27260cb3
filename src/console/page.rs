//! What every console page is made of: the frame (the person, the navigation, the CSRF token,
//! a message after an action), rendering a template, and the error page.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// The signed-in person as the layout shows them.
#[derive(Debug, Clone)]
pub struct PersonView {
    pub name: String,
    pub login: String,
    /// The department's name, for a clerk.
    pub department: Option<String>,
    pub admin: bool,
}

/// A message at the top of a page after an action.
#[derive(Debug, Clone)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
}

/// What every page's frame needs.
#[derive(Debug, Clone)]
pub struct Layout {
    pub title: String,
    /// The navigation entry to highlight.
    pub section: &'static str,
    pub person: Option<PersonView>,
    /// The CSRF token every form of the page carries.
    pub csrf: String,
    pub flash: Option<Flash>,
}

impl Layout {
    pub fn with_flash(mut self, flash: Option<Flash>) -> Layout {
        self.flash = flash;
        self
    }
}

/// The message for a `?done=` code after a redirect: fixed texts, never reflected input.
pub fn done_flash(code: Option<&str>, pending: bool) -> Option<Flash> {
    let text = match code? {
        "claim" => "已认领",
        "return" => "已退回，记录回到待指派队列",
        "feedback" => "已反馈",
        "forward" => "已转交",
        "route" => "已指派",
        "password" => "密码已修改",
        "replay" => "已重放",
        "liaison" => "联络员已更新",
        "disabled" => "账号已停用",
        "revoked" => "令牌已吊销",
        _ => return None,
    };
    Some(Flash {
        ok: true,
        text: if pending {
            format!("{text}（已提交，台账稍后更新）")
        } else {
            text.to_string()
        },
    })
}

/// Renders a template, or the plain error page when rendering fails.
pub fn render<T: askama::Template>(page: &T) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>错误</title><p>页面生成失败</p>".to_string()),
            )
                .into_response()
        }
    }
}

/// A page that says why something could not be shown or done.
#[derive(askama::Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub layout: Layout,
    pub status: u16,
    pub message: String,
}

impl ErrorPage {
    /// Without the navigation (no session, or before one is known).
    pub fn plain(status: StatusCode, message: impl Into<String>) -> Response {
        let page = ErrorPage {
            layout: Layout {
                title: "无法完成".into(),
                section: "",
                person: None,
                csrf: String::new(),
                flash: None,
            },
            status: status.as_u16(),
            message: message.into(),
        };
        (status, render(&page)).into_response()
    }

    /// Within a page's frame.
    pub fn in_layout(layout: Layout, status: StatusCode, message: impl Into<String>) -> Response {
        let page = ErrorPage {
            layout,
            status: status.as_u16(),
            message: message.into(),
        };
        (status, render(&page)).into_response()
    }
}
