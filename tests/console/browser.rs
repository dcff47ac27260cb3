//! The console in a real browser: headless Chromium (Debian's `chromium`) driven through
//! `chromedriver` against a running gateway. Each test saves screenshots under
//! `target/console-screenshots/`. Without a browser the tests fail, never skip.

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};

use crate::common::*;
use crate::support::*;

const PASSWORD: &str = "Shenguan-2026!";

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

async fn source(c: &Client) -> String {
    c.source().await.expect("page source")
}

/// Waits until the page's HTML contains `text`.
async fn wait_text(c: &Client, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let html = source(c).await;
        if html.contains(text) {
            return html;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed '{text}':\n{html}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fill(c: &Client, css: &str, text: &str) {
    let field = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"));
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
}

/// Accepts the confirmation the page's script asks for.
async fn accept_confirmation(c: &Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.accept_alert().await.is_err() {
        assert!(Instant::now() < deadline, "no confirmation was asked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Logs in with a one-time password and sets a new one, as a new user would.
async fn first_login(c: &Client, gw: &Gateway, login: &str, once: &str) {
    c.goto(&gw.url("/ui")).await.unwrap();
    wait_text(c, "登录名").await;
    fill(c, "input[name=login]", login).await;
    fill(c, "input[name=password]", once).await;
    click(c, "form[action='/ui/login'] button[type=submit]").await;
    wait_text(c, "一次性初始密码").await;
    fill(c, "input[name=current]", once).await;
    fill(c, "input[name=new]", PASSWORD).await;
    fill(c, "input[name=repeat]", PASSWORD).await;
    click(c, "form[action='/ui/password'] button[type=submit]").await;
    wait_text(c, "密码已修改").await;
}

#[tokio::test]
async fn a_clerk_logs_in_claims_and_returns_and_another_department_sees_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let gw = console_gateway(dir.path()).await;
    let ingest = gw.token("adapter", "nx-zwfw-approval");
    let scjg = gw.token("department", "szs-scjg");
    let ids = approvals(&gw, &ingest, 1..4).await;
    for id in &ids {
        wait_for_record(&gw, id, &scjg).await;
    }
    let (l1, p1) = add_user(&gw, &["--department", "szs-scjg", "--name", "张三"]);
    let (l2, p2) = add_user(&gw, &["--department", "szs-wjw", "--name", "李四"]);
    let driver = Driver::start();
    let c = driver
        .browser(&dir.path().join("profile-1"), 1280, 900)
        .await;

    first_login(&c, &gw, &l1, &p1).await;
    let inbox = wait_text(&c, "ul class=\"records\"").await;
    for n in 1..4 {
        assert!(inbox.contains(&format!("64020020260190000{n}")), "{inbox}");
    }
    assert!(inbox.contains("石嘴山市市场监督管理局"), "{inbox}");
    assert!(inbox.contains("截止"), "{inbox}");
    shot(&c, "clerk-inbox").await;

    // 认领: the JSON API then shows the record claimed by this person.
    click(&c, &format!("a[href='/ui/records/{}']", ids[0])).await;
    wait_text(&c, "事项名称").await;
    click(&c, "#claim").await;
    wait_text(&c, "已认领").await;
    shot(&c, "clerk-claimed").await;
    let (_, record) = api(&gw, "GET", &format!("/v1/records/{}", ids[0]), &scjg).await;
    assert_eq!(record["entries"][0]["state"], "claimed", "{record}");
    assert!(record["history"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["action"] == "claim" && h["actor"] == "张三（szs-scjg-1）"));

    // 退回 with a reason.
    c.goto(&gw.url(&format!("/ui/records/{}", ids[1])))
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::XPath("//summary[contains(., '退回')]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    fill(
        &c,
        "#return-form textarea[name=reason]",
        "该店为区级发证，由区局监管",
    )
    .await;
    click(&c, "#return-form button[type=submit]").await;
    accept_confirmation(&c).await;
    wait_text(&c, "已退回").await;
    let (status, record) = api(&gw, "GET", &format!("/v1/records/{}", ids[1]), &scjg).await;
    assert_eq!(status, 200);
    assert_eq!(record["entries"][0]["state"], "returned", "{record}");
    let html = source(&c).await;
    assert!(html.contains("该店为区级发证"), "{html}");
    shot(&c, "clerk-returned").await;
    c.close().await.unwrap();

    // A clerk of another department sees none of it.
    let c2 = driver
        .browser(&dir.path().join("profile-2"), 1280, 900)
        .await;
    first_login(&c2, &gw, &l2, &p2).await;
    let inbox = wait_text(&c2, "收件箱").await;
    assert!(inbox.contains("石嘴山市卫生健康委员会"), "{inbox}");
    for n in 1..4 {
        assert!(!inbox.contains(&format!("64020020260190000{n}")), "{inbox}");
    }
    c2.goto(&gw.url(&format!("/ui/records/{}", ids[2])))
        .await
        .unwrap();
    let page = wait_text(&c2, "未推送给本部门").await;
    assert!(!page.contains("事项名称"), "{page}");
    shot(&c2, "other-department").await;

    // Forged posts with that clerk's real session: another department's record, no token, a
    // wrong token — all refused, and the record stays unclaimed.
    let session = c2
        .get_all_cookies()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.name() == "sg_session")
        .expect("the browser holds the session cookie")
        .value()
        .to_string();
    c2.goto(&gw.url("/ui/inbox")).await.unwrap();
    let csrf = csrf_of(&source(&c2).await);
    let forged = |fields: Vec<(&'static str, String)>| {
        let session = session.clone();
        let url = gw.url(&format!("/ui/records/{}/claim", ids[2]));
        async move {
            http()
                .post(url)
                .header("cookie", format!("sg_session={session}"))
                .form(&fields)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(forged(vec![("csrf", csrf.clone())]).await, 403);
    assert_eq!(forged(vec![]).await, 403);
    assert_eq!(forged(vec![("csrf", "f".repeat(64))]).await, 403);
    let (_, record) = api(&gw, "GET", &format!("/v1/records/{}", ids[2]), &scjg).await;
    assert_eq!(record["entries"][0]["state"], "pushed", "{record}");
    c2.close().await.unwrap();
}

#[tokio::test]
async fn an_operator_replays_the_dlq_after_a_code_table_fix_routes_a_record_and_reads_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let gw = console_gateway(dir.path()).await;
    let ingest = gw.token("adapter", "nx-zwfw-approval");
    let admin = gw.token("admin", "");
    let (_, body) = gw
        .ingest(
            "nx-zwfw-approval",
            &ingest,
            JSON,
            fixture("14-unknown-code.json"),
        )
        .await;
    assert_eq!(body["rejected"].as_array().unwrap().len(), 1, "{body}");
    let (_, body) = gw
        .ingest("nx-zwfw-approval", &ingest, JSON, fixture("02-batch.json"))
        .await;
    let routed = body["accepted"][0]["id"].as_str().unwrap().to_string();
    let lost = body["accepted"][1]["id"].as_str().unwrap().to_string();
    wait_for_record(&gw, &lost, &admin).await;
    // 卫健委 claims its record in time, so the report has a rate to draw.
    let wjw = gw.token("department", "szs-wjw");
    wait_for_record(&gw, &routed, &wjw).await;
    let (status, _) = api(&gw, "POST", &format!("/v1/records/{routed}/claim"), &wjw).await;
    assert_eq!(status, 200);
    let (login, once) = add_user(&gw, &["--admin", "--name", "王五"]);
    let driver = Driver::start();
    let c = driver
        .browser(&dir.path().join("profile"), 1280, 1000)
        .await;

    first_login(&c, &gw, &login, &once).await;
    let overview = wait_text(&c, "运维概览").await;
    assert!(overview.contains("死信队列中有 1 条"), "{overview}");
    assert!(overview.contains("等待指派"), "{overview}");
    shot(&c, "operator-overview").await;

    c.goto(&gw.url("/ui/admin/dlq")).await.unwrap();
    let dlq = wait_text(&c, "applicant_category").await;
    assert!(dlq.contains("nx-zwfw-approval"), "{dlq}");
    assert!(!dlq.contains("360426199101010071"), "previews are masked");
    shot(&c, "operator-dlq").await;

    // The site adds the missing code to the adapter's code table; the gateway reloads it.
    let table = dir
        .path()
        .join("adapters/nx-zwfw/tables/applicant-category.yaml");
    let mut t = std::fs::read_to_string(&table).unwrap();
    t.push_str("\"7\": 法人及非法人组织\n");
    std::fs::write(&table, t).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !gw.logs().contains("adapters reloaded") {
        assert!(Instant::now() < deadline, "no reload:\n{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    click(&c, "button.replay").await;
    let result = wait_text(&c, "重放结果").await;
    assert!(result.contains("1 条已接收"), "{result}");
    let id = regex::Regex::new(r"accepted as ([0-9a-f-]{36})")
        .unwrap()
        .captures(&result)
        .unwrap_or_else(|| panic!("{result}"))[1]
        .to_string();
    let record = wait_for_record(&gw, &id, &admin).await;
    assert_eq!(record["data"]["case_no"], "640200202601050014", "{record}");
    shot(&c, "operator-replayed").await;

    // 指派 the unrouted record to a department.
    c.goto(&gw.url("/ui/admin/unrouted")).await.unwrap();
    wait_text(&c, "食品经营许可（告知承诺）").await;
    c.find(Locator::Css("select[name=department]"))
        .await
        .unwrap()
        .select_by_value("szs-scjg")
        .await
        .unwrap();
    click(&c, "form[action$='/route'] button[type=submit]").await;
    wait_text(&c, "已指派").await;
    let (_, unrouted) = api(&gw, "GET", "/v1/unrouted", &admin).await;
    assert_eq!(unrouted["count"], 0, "{unrouted}");
    let (_, record) = api(&gw, "GET", &format!("/v1/records/{lost}"), &admin).await;
    assert_eq!(record["entries"][0]["department"], "szs-scjg", "{record}");
    assert!(record["history"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["action"] == "route" && h["actor"] == "王五（admin-1）"));

    // The monthly 通报 renders its chart, drawn on the server.
    c.goto(&gw.url("/ui/admin/report")).await.unwrap();
    c.wait()
        .for_element(Locator::Css("svg#report-chart"))
        .await
        .unwrap();
    let bars = c
        .find_all(Locator::Css("svg#report-chart rect.rate"))
        .await
        .unwrap();
    assert!(bars.len() >= 2, "a bar per department");
    let mut drawn = 0;
    for bar in &bars {
        if bar.attr("width").await.unwrap().is_some_and(|w| w != "0") {
            drawn += 1;
        }
    }
    assert_eq!(drawn, 1, "卫健委's on-time rate is drawn");
    let (_, _, w, h) = c
        .find(Locator::Css("svg#report-chart"))
        .await
        .unwrap()
        .rectangle()
        .await
        .unwrap();
    assert!(w > 300.0 && h > 50.0, "the chart is drawn: {w}×{h}");
    let html = source(&c).await;
    assert!(html.contains("石嘴山市市场监督管理局"), "{html}");
    shot(&c, "operator-report").await;
    let href = c
        .find(Locator::Css("a[download]"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let session = c
        .get_all_cookies()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.name() == "sg_session")
        .unwrap()
        .value()
        .to_string();
    let csv = http()
        .get(gw.url(&href))
        .header("cookie", format!("sg_session={session}"))
        .send()
        .await
        .unwrap();
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert!(csv.text().await.unwrap().contains("szs-scjg"));
    c.close().await.unwrap();
}

#[tokio::test]
async fn the_inbox_is_usable_at_a_phones_width() {
    let dir = tempfile::tempdir().unwrap();
    let gw = console_gateway(dir.path()).await;
    let ingest = gw.token("adapter", "nx-zwfw-approval");
    let scjg = gw.token("department", "szs-scjg");
    let ids = approvals(&gw, &ingest, 1..6).await;
    for id in &ids {
        wait_for_record(&gw, id, &scjg).await;
    }
    let (login, once) = add_user(&gw, &["--department", "szs-scjg", "--name", "张三"]);
    let driver = Driver::start();
    let c = driver.browser(&dir.path().join("profile"), 390, 844).await;
    first_login(&c, &gw, &login, &once).await;
    wait_text(&c, "ul class=\"records\"").await;
    let width = |script: &'static str| {
        let c = &c;
        async move {
            c.execute(script, vec![])
                .await
                .unwrap()
                .as_f64()
                .unwrap_or_else(|| panic!("{script}"))
        }
    };
    let viewport = width("return window.innerWidth").await;
    assert!(viewport <= 390.0, "viewport {viewport}");
    let page = width("return document.documentElement.scrollWidth").await;
    assert!(
        page <= viewport,
        "the inbox scrolls sideways: {page} > {viewport}"
    );
    let (x, _, w, _) = c
        .find(Locator::Css("ul.records li .title"))
        .await
        .unwrap()
        .rectangle()
        .await
        .unwrap();
    assert!(
        x >= 0.0 && x + w <= viewport,
        "a record title overflows: {x}+{w}"
    );
    shot(&c, "phone-inbox").await;

    click(&c, "ul.records li .title").await;
    let claim = c.wait().for_element(Locator::Css("#claim")).await.unwrap();
    let (x, _, w, h) = claim.rectangle().await.unwrap();
    assert!(
        x + w <= viewport && h >= 40.0,
        "the claim button fits a thumb: {x}+{w}, {h}"
    );
    let page = width("return document.documentElement.scrollWidth").await;
    assert!(page <= viewport, "the record page scrolls sideways: {page}");
    claim.click().await.unwrap();
    wait_text(&c, "已认领").await;
    shot(&c, "phone-record").await;
    c.close().await.unwrap();
}
