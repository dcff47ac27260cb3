//! What the console tests share: a gateway with accounts, a console session over plain HTTP
//! (cookies handled by hand, so their flags can be checked), and a headless Chromium driven
//! through chromedriver.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

pub const JSON: &str = "application/json";

/// A gateway on a fresh data directory, with its own configuration file: a private copy of the
/// adapters (a test may edit a code table), reloaded every second, and a fast tracker.
pub async fn console_gateway(dir: &Path) -> Gateway {
    let adapters = dir.join("adapters");
    copy_dir(&repo().join("adapters"), &adapters);
    let config = dir.join("shenguan.toml");
    std::fs::write(
        &config,
        format!(
            "adapters_dir = {adapters:?}\nschemas_dir = {:?}\nadapters_reload_seconds = 1\n[tracker]\ndigest_at = \"\"\n",
            repo().join("schemas")
        ),
    )
    .unwrap();
    Gateway::start(
        &dir.join("data"),
        &["--config", &config.display().to_string()],
    )
    .await
}

/// `shenguan user add` against the gateway's state; returns (login, one-time password).
pub fn add_user(gw: &Gateway, args: &[&str]) -> (String, String) {
    let out = cli(gw, &[&["user", "add"], args].concat());
    assert!(
        out.status.success(),
        "user add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no '{name}' in {text}"))
            .trim()
            .to_string()
    };
    (field("login:"), field("password:"))
}

/// A `shenguan` command with the gateway's data directory and configuration.
pub fn cli(gw: &Gateway, args: &[&str]) -> std::process::Output {
    let mut all: Vec<&str> = args.to_vec();
    let dir = gw.data_dir.display().to_string();
    all.extend(["--data-dir", dir.as_str()]);
    if let Some(i) = gw.args.iter().position(|a| a == "--config") {
        all.extend(["--config", gw.args[i + 1].as_str()]);
    }
    shenguan(&all)
}

/// Ingests approval records routed to szs-scjg (numbers `from..to`); returns their ids.
pub async fn approvals(gw: &Gateway, token: &str, numbers: std::ops::Range<u32>) -> Vec<String> {
    let batch: Vec<serde_json::Value> = numbers
        .map(|n| approval_record(n, "2026-11-20 10:00:00"))
        .collect();
    let (status, body) = gw
        .ingest(
            "nx-zwfw-approval",
            token,
            JSON,
            serde_json::to_vec(&batch).unwrap(),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    body["accepted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

/// A JSON API call with a bearer token: (status, body).
pub async fn api(gw: &Gateway, method: &str, path: &str, token: &str) -> (u16, serde_json::Value) {
    let r = match method {
        "GET" => gw.client.get(gw.url(path)),
        _ => gw.client.post(gw.url(path)),
    }
    .bearer_auth(token)
    .send()
    .await
    .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Waits until a record is in the ledger (the API answers for it).
pub async fn wait_for_record(gw: &Gateway, id: &str, token: &str) -> serde_json::Value {
    for _ in 0..300 {
        let (status, body) = api(gw, "GET", &format!("/v1/records/{id}"), token).await;
        if status == 200 {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("record {id} never reached the ledger:\n{}", gw.logs());
}

/// An HTTP client that does not follow redirects, so every answer can be inspected.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The `Set-Cookie` header of a cookie in an answer.
pub fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

/// The value part of a `Set-Cookie` header.
pub fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string()
}

/// The CSRF token of the first form of a page.
pub fn csrf_of(html: &str) -> String {
    let re = regex::Regex::new(r#"name="csrf" value="([0-9a-f]+)""#).unwrap();
    re.captures(html)
        .unwrap_or_else(|| panic!("no CSRF field in:\n{html}"))[1]
        .to_string()
}

/// A console session over HTTP.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

/// What a login attempt gave: the answer's status and body, and the session when it worked.
pub struct LoginAttempt {
    pub status: u16,
    pub location: String,
    pub body: String,
    pub set_cookie: Option<String>,
}

/// Posts the login form as a browser would (login cookie and its CSRF token first).
pub async fn try_login(gw: &Gateway, login: &str, password: &str) -> LoginAttempt {
    let c = http();
    let form = c.get(gw.url("/ui/login")).send().await.unwrap();
    let login_cookie = cookie_value(&set_cookie(&form, "sg_login").expect("login cookie"));
    let csrf = csrf_of(&form.text().await.unwrap());
    let r = c
        .post(gw.url("/ui/login"))
        .header("cookie", format!("sg_login={login_cookie}"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("login", login),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    LoginAttempt {
        status: r.status().as_u16(),
        location: r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default(),
        set_cookie: set_cookie(&r, "sg_session"),
        body: r.text().await.unwrap(),
    }
}

impl Session {
    /// Logs in with a one-time password and sets `new_password`.
    pub async fn first_login(gw: &Gateway, login: &str, once: &str, new_password: &str) -> Session {
        let a = try_login(gw, login, once).await;
        assert_eq!(a.status, 303, "{}", a.body);
        assert_eq!(a.location, "/ui/password");
        let mut s = Session {
            cookie: cookie_value(&a.set_cookie.expect("session cookie")),
            csrf: String::new(),
        };
        let (_, page) = s.get(gw, "/ui/password").await;
        s.csrf = csrf_of(&page);
        let (status, _, location) = s
            .post(
                gw,
                "/ui/password",
                &[
                    ("current", once),
                    ("new", new_password),
                    ("repeat", new_password),
                ],
            )
            .await;
        assert_eq!(status, 303);
        assert_eq!(location, "/ui?done=password");
        s
    }

    /// GET with the session cookie: (status, body).
    pub async fn get(&self, gw: &Gateway, path: &str) -> (u16, String) {
        let r = http()
            .get(gw.url(path))
            .header("cookie", format!("sg_session={}", self.cookie))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// POST a form with the session's CSRF token: (status, body, location).
    pub async fn post(
        &self,
        gw: &Gateway,
        path: &str,
        fields: &[(&str, &str)],
    ) -> (u16, String, String) {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(gw, path, &all).await
    }

    /// POST exactly these fields (no token added).
    pub async fn post_raw(
        &self,
        gw: &Gateway,
        path: &str,
        fields: &[(&str, &str)],
    ) -> (u16, String, String) {
        let r = http()
            .post(gw.url(path))
            .header("cookie", format!("sg_session={}", self.cookie))
            .form(fields)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, r.text().await.unwrap(), location)
    }
}

/// Where test screenshots go (kept as artefacts of the run).
pub fn screenshots() -> PathBuf {
    let dir = repo().join("target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// chromedriver on a loopback port; killed on drop.
pub struct Driver {
    child: Child,
    pub port: u16,
}

impl Driver {
    pub fn start() -> Driver {
        for (path, package) in [
            ("/usr/bin/chromium", "chromium"),
            ("/usr/bin/chromedriver", "chromium-driver"),
        ] {
            assert!(
                Path::new(path).is_file(),
                "{path} is missing: run the tests with `bash scripts/test.sh`, which installs \
                 Debian's {package} (apt-get install chromium chromium-driver)"
            );
        }
        let port = free_port();
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { child, port }
    }

    /// A headless Chromium of its own (fresh profile) at `width`×`height`.
    pub async fn browser(&self, profile: &Path, width: u32, height: u32) -> fantoccini::Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-dev-shm-usage", "--lang=zh-CN",
                    format!("--user-data-dir={}", profile.display()),
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        if width < 500 {
            // Headless windows are at least 500 px wide: a phone's viewport is emulated.
            caps.get_mut("goog:chromeOptions").unwrap()["mobileEmulation"] = serde_json::json!({
                "deviceMetrics": {"width": width, "height": height, "pixelRatio": 3.0, "touch": true},
            });
        }
        let client = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", self.port))
        .await
        .expect("a Chromium session through chromedriver");
        client
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
