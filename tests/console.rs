//! The web console from the outside: the real binary, plain HTTP for its security properties,
//! and headless Chromium for what a clerk and an operator do with it.

mod common;

#[path = "console/browser.rs"]
mod browser;
#[path = "console/http.rs"]
mod http;
#[path = "console/store.rs"]
mod store;
#[path = "console/support.rs"]
mod support;
