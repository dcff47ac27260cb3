//! The console's security properties over plain HTTP, against the real binary: cookie flags,
//! the Content-Security-Policy, CSRF refusal, lock-out, a department never seeing another's
//! record, admin pages refusing clerks, the one-time password, and the inbox's speed.

use std::time::{Duration, Instant};

use crate::support::*;

const PASSWORD: &str = "Shenguan-2026!";

#[tokio::test]
async fn session_cookies_are_httponly_and_strict_and_every_page_has_a_csp_without_inline_script() {
    let dir = tempfile::tempdir().unwrap();
    let gw = console_gateway(dir.path()).await;
    let (login, once) = add_user(&gw, &["--department", "szs-scjg", "--name", "张三"]);
    assert_eq!(login, "szs-scjg-1");

    // `/` leads to the console, and the console to its login page.
    let r = http().get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui");
    let r = http().get(gw.url("/ui")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/ui/login");

    let page = http().get(gw.url("/ui/login")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    let inline = regex::Regex::new(r"<script(?:\s[^>]*)?>").unwrap();
    for tag in inline.find_iter(&html) {
        assert!(
            tag.as_str().contains("src="),
            "inline script: {}",
            tag.as_str()
        );
    }
    assert!(!html.contains(" onclick="), "{html}");

    let a = try_login(&gw, &login, &once).await;
    assert_eq!(a.status, 303, "{}", a.body);
    let cookie = a.set_cookie.unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");

    // Behind a TLS-terminating proxy the cookie is Secure.
    let c = http();
    let form = c
        .get(gw.url("/ui/login"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let login_cookie = set_cookie(&form, "sg_login").unwrap();
    assert!(login_cookie.contains("; Secure"), "{login_cookie}");
    let csrf = csrf_of(&form.text().await.unwrap());
    let r = c
        .post(gw.url("/ui/login"))
        .header("x-forwarded-proto", "https")
        .header(
            "cookie",
            format!("sg_login={}", cookie_value(&login_cookie)),
        )
        .form(&[
            ("csrf", csrf.as_str()),
            ("login", login.as_str()),
            ("password", once.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let secure = set_cookie(&r, "sg_session").unwrap();
    assert!(
        secure.contains("; Secure") && secure.contains("HttpOnly"),
        "{secure}"
    );

    // Only a hash of the session secret is stored.
    let db = std::fs::read(gw.data_dir.join("ledger.db")).unwrap_or_default();
    let wal = std::fs::read(gw.data_dir.join("ledger.db-wal")).unwrap_or_default();
    let secret = cookie_value(&cookie).split_once('.').unwrap().1.to_string();
    for bytes in [db, wal] {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }
}

#[tokio::test]
async fn the_one_time_password_must_be_changed_before_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    let gw = console_gateway(dir.path()).await;
    let (login, once) = add_user(&gw, &["--department", "szs-scjg", "--name", "张三"]);
    let a = try_login(&gw, &login, &once).await;
    let s = Session {
        cookie: cookie_value(&a.set_cookie.unwrap()),
        csrf: String::new(),
    };
    let r = http()
        .get(gw.url("/ui/inbox"))
        .header("cookie", format!("sg_session={}", s.cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/password");
    // A weak new password is refused with the reason.
    let (_, page) = s.get(&gw, "/ui/password").await;
    let s = Session {
        csrf: csrf_of(&page),
        ..s
    };
    let (status, body, _) = s
        .post(
            &gw,
            "/ui/password",
            &[("current", &once), ("new", "short"), ("repeat", "short")],
        )
        .await;
    assert_eq!(status, 400);
    assert!(body.contains("至少 10 个字符"), "{body}");
    let (status, _, _) = s
        .post(
            &gw,
            "/ui/password",
            &[("current", &once), ("new", PASSWORD), ("repeat", PASSWORD)],
        )
        .await;
    assert_eq!(status, 303);
    let (status, body) = s.get(&gw, "/ui/inbox").await;
    assert_eq!(status, 200);
    assert!(body.contains("收件箱") && body.contains("张三"), "{body}");
    // The one-time password works no more; the new one does.
    assert_eq!(try_login(&gw, &login, &once).await.status, 401);
    let again = try_login(&gw, &login, PASSWORD).await;
    assert_eq!((again.status, again.location.as_str()), (303, "/ui"));
    let list = String::from_utf8(cli(&gw, &["user", "list"]).stdout).unwrap();
    assert!(
        list.contains("szs-scjg-1") && list.contains("active"),
        "{list}"
    );
    assert!(!list.contains("argon2"), "{list}");
}

#[tokio::test]
async fn repeated_failed_logins_lock_the_account() {
    let dir = tempfile::tempdir().unwrap();
    let gw = console_gateway(dir.path()).await;
    let (login, once) = add_user(&gw, &["--department", "szs-wjw", "--name", "李四"]);
    for _ in 0..4 {
        let a = try_login(&gw, &login, "wrong password").await;
        assert_eq!(a.status, 401);
        assert!(a.body.contains("登录名或密码不正确"), "{}", a.body);
    }
    let a = try_login(&gw, &login, "wrong again").await;
    assert!(a.body.contains("账号已锁定"), "{}", a.body);
    // Now even the right password is refused until the lock runs out.
    let a = try_login(&gw, &login, &once).await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(a.set_cookie.is_none());
    assert!(a.body.contains("已锁定至"), "{}", a.body);
    // An unknown login is answered like a wrong password.
    assert!(try_login(&gw, "nobody", "x")
        .await
        .body
        .contains("登录名或密码不正确"));
    let list = String::from_utf8(cli(&gw, &["user", "list"]).stdout).unwrap();
    assert!(list.contains("locked until"), "{list}");
    // Every attempt is in the audit log.
    let admin = gw.token("admin", "");
    let (_, audit) = api(&gw, "GET", "/v1/admin/audit", &admin).await;
    let failed = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "login.failed" && e["target"] == login.as_str())
        .count();
    assert_eq!(failed, 5, "{audit}");
    // A disabled account cannot log in at all.
    let (l2, p2) = add_user(&gw, &["--department", "szs-wjw", "--name", "王二"]);
    assert!(cli(&gw, &["user", "disable", &l2]).status.success());
    assert_eq!(try_login(&gw, &l2, &p2).await.status, 401);
}

#[tokio::test]
async fn forms_without_the_sessions_csrf_token_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gw = console_gateway(dir.path()).await;
    let ingest = gw.token("adapter", "nx-zwfw-approval");
    let scjg = gw.token("department", "szs-scjg");
    let ids = approvals(&gw, &ingest, 1..2).await;
    wait_for_record(&gw, &ids[0], &scjg).await;
    let (login, once) = add_user(&gw, &["--department", "szs-scjg", "--name", "张三"]);
    let s = Session::first_login(&gw, &login, &once, PASSWORD).await;
    let path = format!("/ui/records/{}/claim", ids[0]);

    let (status, body, _) = s.post_raw(&gw, &path, &[]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("CSRF"), "{body}");
    let (status, _, _) = s.post_raw(&gw, &path, &[("csrf", "0123abcd")]).await;
    assert_eq!(status, 403);
    // Another session's token does not fit this session.
    let (l2, p2) = add_user(&gw, &["--department", "szs-scjg", "--name", "赵六"]);
    let other = Session::first_login(&gw, &l2, &p2, PASSWORD).await;
    let (status, _, _) = s.post_raw(&gw, &path, &[("csrf", &other.csrf)]).await;
    assert_eq!(status, 403);
    // A cross-site post is refused even with the token.
    let r = http()
        .post(gw.url(&path))
        .header("cookie", format!("sg_session={}", s.cookie))
        .header("origin", "http://evil.example")
        .form(&[("csrf", s.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The login form needs its own cookie and token too.
    let r = http()
        .post(gw.url("/ui/login"))
        .form(&[("login", login.as_str()), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Nothing was claimed by the refused posts.
    let (_, record) = api(&gw, "GET", &format!("/v1/records/{}", ids[0]), &scjg).await;
    assert_eq!(record["entries"][0]["state"], "pushed", "{record}");
    // With the right token the claim goes through the bus and the ledger, like the API's.
    let (status, _, location) = s.post(&gw, &path, &[]).await;
    assert_eq!(status, 303);
    assert!(location.contains("done=claim"), "{location}");
    let (_, record) = api(&gw, "GET", &format!("/v1/records/{}", ids[0]), &scjg).await;
    assert_eq!(record["entries"][0]["state"], "claimed", "{record}");
    let claim = record["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["action"] == "claim")
        .unwrap();
    assert_eq!(claim["actor"], "张三（szs-scjg-1）");
    assert_eq!(claim["channel"], "console");
    // Logged out, the session is gone.
    let (status, _, _) = s.post(&gw, "/ui/logout", &[]).await;
    assert_eq!(status, 303);
    let (status, _) = s.get(&gw, "/ui/inbox").await;
    assert_eq!(status, 303);
}

#[tokio::test]
async fn a_department_never_sees_or_acts_on_another_departments_record() {
    let dir = tempfile::tempdir().unwrap();
    let gw = console_gateway(dir.path()).await;
    let ingest = gw.token("adapter", "nx-zwfw-approval");
    let scjg = gw.token("department", "szs-scjg");
    let ids = approvals(&gw, &ingest, 1..3).await;
    for id in &ids {
        wait_for_record(&gw, id, &scjg).await;
    }
    let (l1, p1) = add_user(&gw, &["--department", "szs-scjg", "--name", "张三"]);
    let (l2, p2) = add_user(&gw, &["--department", "szs-wjw", "--name", "李四"]);
    let mine = Session::first_login(&gw, &l1, &p1, PASSWORD).await;
    let theirs = Session::first_login(&gw, &l2, &p2, PASSWORD).await;

    let (_, inbox) = mine.get(&gw, "/ui/inbox").await;
    assert!(inbox.contains("640200202601900001"), "{inbox}");
    assert!(
        inbox.contains("待认领 <span class=\"count\">2</span>"),
        "{inbox}"
    );
    let (status, page) = mine.get(&gw, &format!("/ui/records/{}", ids[0])).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("事项名称") && page.contains("食品经营许可"),
        "{page}"
    );

    let (_, inbox) = theirs.get(&gw, "/ui/inbox").await;
    assert!(!inbox.contains("640200202601900001"), "{inbox}");
    for status in ["unclaimed", "claimed", "overdue", "returned"] {
        let (_, page) = theirs
            .get(&gw, &format!("/ui/inbox?status={status}&q=6402002026019"))
            .await;
        assert!(!page.contains("640200202601900001"), "{page}");
    }
    let (status, page) = theirs.get(&gw, &format!("/ui/records/{}", ids[0])).await;
    assert_eq!(status, 403);
    assert!(page.contains("未推送给本部门"), "{page}");
    for action in ["claim", "return", "feedback", "forward"] {
        let (status, body, _) = theirs
            .post(
                &gw,
                &format!("/ui/records/{}/{action}", ids[0]),
                &[
                    ("reason", "不是我们的"),
                    ("feedback_type", "other"),
                    ("content", "x"),
                ],
            )
            .await;
        assert_eq!(status, 403, "{action}: {body}");
    }
    let (_, record) = api(&gw, "GET", &format!("/v1/records/{}", ids[0]), &scjg).await;
    assert_eq!(record["entries"][0]["state"], "pushed", "{record}");
    assert_eq!(record["entries"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn operator_pages_refuse_clerks_and_clerk_pages_refuse_operators() {
    let dir = tempfile::tempdir().unwrap();
    let gw = console_gateway(dir.path()).await;
    let (l1, p1) = add_user(&gw, &["--department", "szs-scjg", "--name", "张三"]);
    let (l2, p2) = add_user(&gw, &["--admin", "--name", "王五"]);
    assert_eq!(l2, "admin-1");
    let clerk = Session::first_login(&gw, &l1, &p1, PASSWORD).await;
    let admin = Session::first_login(&gw, &l2, &p2, PASSWORD).await;
    for path in [
        "/ui/admin",
        "/ui/admin/dlq",
        "/ui/admin/unrouted",
        "/ui/admin/adapters",
        "/ui/admin/accounts",
        "/ui/admin/tokens",
        "/ui/admin/liaisons",
        "/ui/admin/report",
        "/ui/admin/report.csv",
    ] {
        let (status, body) = clerk.get(&gw, path).await;
        assert_eq!(status, 403, "{path}: {body}");
        let (status, _) = admin.get(&gw, path).await;
        assert_eq!(status, 200, "{path}");
    }
    let (status, _, _) = clerk
        .post(
            &gw,
            "/ui/admin/accounts",
            &[("login", "x1"), ("name", "x"), ("role", "admin")],
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = admin.get(&gw, "/ui/inbox").await;
    assert_eq!(status, 403);
    // The operator creates a clerk in the page; the one-time password is shown once.
    let (status, page, _) = admin
        .post(
            &gw,
            "/ui/admin/accounts",
            &[
                ("login", "wjw.li"),
                ("name", "李四"),
                ("role", "clerk"),
                ("department", "szs-wjw"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let once = regex::Regex::new(r#"<code id="secret">([A-Z0-9]{12})</code>"#)
        .unwrap()
        .captures(&page)
        .unwrap_or_else(|| panic!("{page}"))[1]
        .to_string();
    Session::first_login(&gw, "wjw.li", &once, PASSWORD).await;
    let (_, audit) = api(&gw, "GET", "/v1/admin/audit", &gw.token("admin", "")).await;
    assert!(audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "user.added" && e["actor"] == "console:admin-1"));
}

#[tokio::test]
async fn the_inbox_pages_without_reading_all_of_10_000_records() {
    let dir = tempfile::tempdir().unwrap();
    let gw = console_gateway(dir.path()).await;
    let ingest = gw.token("adapter", "nx-zwfw-approval");
    for start in (0..10_000).step_by(1000) {
        approvals(&gw, &ingest, start..start + 1000).await;
    }
    let (login, once) = add_user(&gw, &["--department", "szs-scjg", "--name", "张三"]);
    let s = Session::first_login(&gw, &login, &once, PASSWORD).await;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let (_, page) = s.get(&gw, "/ui/inbox").await;
        if page.contains("共 10000 条") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ledger never held 10,000 records:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The second page, as the first page links it.
    let (_, first) = s.get(&gw, "/ui/inbox").await;
    let next = regex::Regex::new(r#"<a href="([^"]+)" rel="next">"#)
        .unwrap()
        .captures(&first)
        .unwrap_or_else(|| panic!("no next page:\n{first}"))[1]
        .replace("&amp;", "&")
        .replace("&#38;", "&");
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    for path in [
        "/ui/inbox",
        "/ui/inbox?status=overdue",
        "/ui/inbox?status=claimed",
        next.as_str(),
    ] {
        let mut times = Vec::new();
        for _ in 0..7 {
            let t = Instant::now();
            let (status, _) = s.get(&gw, path).await;
            times.push(t.elapsed());
            assert_eq!(status, 200);
        }
        let m = median(&mut times);
        eprintln!(
            "{path} over 10,000 records: median {m:?}, max {:?}",
            times.last().unwrap()
        );
        // The target is 50 ms for the release build; this test drives the debug build on a
        // machine that may be busy (30–53 ms medians seen), so it guards against what would be
        // a regression of another order — a page that reads the whole inbox — not a timing.
        assert!(
            m < Duration::from_millis(250),
            "{path}: median {m:?} of {times:?}"
        );
    }
    // A search reads every entry of the department in the ledger (json_extract per row); it is
    // measured and bounded, and its time is the store's query.
    for path in [
        "/ui/inbox?status=unclaimed&q=640200202601900123",
        "/ui/inbox?status=unclaimed&q=食品经营许可",
    ] {
        let mut times = Vec::new();
        for _ in 0..7 {
            let t = Instant::now();
            let (status, _) = s.get(&gw, path).await;
            times.push(t.elapsed());
            assert_eq!(status, 200);
        }
        let m = median(&mut times);
        eprintln!(
            "{path} over 10,000 records: median {m:?}, max {:?}",
            times.last().unwrap()
        );
        assert!(
            m < Duration::from_millis(250),
            "{path}: median {m:?} of {times:?}"
        );
    }
    let (_, page) = s
        .get(&gw, "/ui/inbox?status=unclaimed&q=640200202601900123")
        .await;
    assert!(page.contains("640200202601900123"), "{page}");
    assert!(page.contains("共 1 条"), "{page}");
}
