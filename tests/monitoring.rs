//! The monitoring assets in `monitoring/` checked with the real tools and the real gateway:
//! `promtool check rules` / `test rules` / `check config`, `amtool check-config` and routing,
//! `promtool check metrics` on a live scrape, and the cross-check that every metric an alert,
//! a recording rule or a dashboard query reads is exported by the gateway — so a rename cannot
//! silently blind an alert or a panel. A missing `promtool` or `amtool` is a failure with
//! instructions, never a skip.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const RULES: &str = "monitoring/prometheus/rules.yml";
const RULE_TESTS: &str = "monitoring/prometheus/tests";
const PROMETHEUS_CONFIG: &str = "monitoring/prometheus/prometheus.yml";
const ALERTMANAGER_CONFIG: &str = "monitoring/alertmanager/alertmanager.yml";
const DASHBOARD: &str = "monitoring/grafana/dashboards/shenguan.json";
const RUNBOOK: &str = "docs/runbook.md";

/// The lint findings `promtool check metrics` may report on a live scrape, each with the reason
/// it is accepted. Anything else fails the test.
const ACCEPTED_METRIC_LINTS: &[(&str, &str)] = &[(
    r#"shenguan_calendar_days_remaining use base unit "seconds" instead of "days""#,
    "the name is fixed by the public contract (DESIGN.md §4, metric table): days of holiday data \
     left, the unit duty officers read; renaming it would break every user's dashboards",
)];

/// Series Prometheus writes itself for every target; rules may read them.
const PROMETHEUS_SYNTHETIC: &[&str] = &["up"];

// ------------------------------------------------------------------------------------------------
// Running the tools
// ------------------------------------------------------------------------------------------------

/// A monitoring tool on PATH, or a failure that says how to get it.
fn tool(name: &str) -> PathBuf {
    let package = if name == "amtool" {
        "prometheus-alertmanager"
    } else {
        "prometheus"
    };
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed, so the monitoring assets cannot be checked: run the \
                 tests with `bash scripts/test.sh`, which installs it, or `apt-get install {package}`"
            )
        })
}

/// Runs a tool in the repository root, optionally feeding `stdin`.
fn run(name: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(tool(name))
        .args(args)
        .current_dir(repo())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input).expect("write to the tool's stdin");
    }
    child.wait_with_output().expect("wait for the tool")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a tool and fails the test with its whole output unless it succeeds.
fn check(name: &str, args: &[&str]) -> String {
    let out = run(name, args, None);
    let output = text(&out);
    assert!(
        out.status.success(),
        "`{name} {}` failed ({}):\n{output}",
        args.join(" "),
        out.status
    );
    output
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn yaml(path: &str) -> serde_norway::Value {
    serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

fn rule_test_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo().join(RULE_TESTS))
        .expect("monitoring/prometheus/tests exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .map(|p| {
            p.strip_prefix(repo())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no promtool tests in {RULE_TESTS}");
    files
}

// ------------------------------------------------------------------------------------------------
// Reading the rules and the dashboard
// ------------------------------------------------------------------------------------------------

/// One rule of rules.yml.
struct Rule {
    alert: Option<String>,
    record: Option<String>,
    expr: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn string_map(v: &serde_norway::Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap().to_string(),
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| panic!("{k:?} is not a string in {RULES}")),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn rules() -> Vec<Rule> {
    let doc = yaml(RULES);
    let mut out = Vec::new();
    for group in doc["groups"].as_sequence().expect("groups") {
        for r in group["rules"].as_sequence().expect("rules") {
            out.push(Rule {
                alert: r["alert"].as_str().map(str::to_string),
                record: r["record"].as_str().map(str::to_string),
                expr: r["expr"].as_str().expect("expr").to_string(),
                labels: string_map(&r["labels"]),
                annotations: string_map(&r["annotations"]),
            });
        }
    }
    out
}

/// Every PromQL query of the dashboard: panel targets and `label_values(metric, label)` variables
/// (as the metric alone).
fn dashboard_queries() -> (Vec<String>, Vec<String>) {
    let dash: Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard is JSON");
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("expr", Value::String(s)) => out.push(s.clone()),
                        _ => walk(x, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(&dash["panels"], &mut exprs);
    let label_values = regex::Regex::new(r"^label_values\(\s*([^,]+?)\s*,\s*\w+\s*\)$").unwrap();
    let mut variable_metrics = Vec::new();
    for var in dash["templating"]["list"].as_array().expect("templating") {
        if var["type"] == "query" {
            let q = var["definition"].as_str().expect("variable definition");
            let m = label_values.captures(q).unwrap_or_else(|| {
                panic!("variable query `{q}` is not label_values(metric, label)")
            });
            variable_metrics.push(m[1].to_string());
        }
    }
    (exprs, variable_metrics)
}

/// Grafana's variables replaced by values that make the query plain PromQL.
fn without_grafana_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1h")
        .replace("$__range", "1d")
        .replace("$department", ".*")
        .replace("$adapter", ".*")
}

/// The metric and recording-rule names a PromQL expression reads. Label matchers, label lists
/// (`by`, `without`, `on`, `ignoring`, `group_left/right`), strings, ranges and numbers are
/// removed; of the identifiers left, those followed by `(` are functions or aggregations and a
/// few are keywords; the rest are series names.
fn series_names(expr: &str) -> BTreeSet<String> {
    let strip = [
        r#""(?:[^"\\]|\\.)*""#,
        r"'(?:[^'\\]|\\.)*'",
        r"\{[^}]*\}",
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)",
        r"\[[^\]]*\]",
        r"\$\{?\w+\}?",
    ];
    let mut e = expr.to_string();
    for s in strip {
        e = regex::Regex::new(s)
            .unwrap()
            .replace_all(&e, " ")
            .into_owned();
    }
    let token = regex::Regex::new(r"(?P<num>[0-9][0-9A-Za-z_.]*)|(?P<id>[A-Za-z_:][A-Za-z0-9_:]*)")
        .unwrap();
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "atan2",
    ];
    let mut names = BTreeSet::new();
    for c in token.captures_iter(&e) {
        let Some(id) = c.name("id") else { continue };
        let rest = e[id.end()..].trim_start();
        if rest.starts_with('(') || KEYWORDS.contains(&id.as_str().to_ascii_lowercase().as_str()) {
            continue;
        }
        names.insert(id.as_str().to_string());
    }
    names
}

/// GitHub's anchor for a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

// ------------------------------------------------------------------------------------------------
// Static checks: the tools
// ------------------------------------------------------------------------------------------------

#[test]
fn rules_pass_promtool_check_and_their_unit_tests_pass() {
    let out = check(
        "promtool",
        &["check", "rules", "--lint=all", "--lint-fatal", RULES],
    );
    assert!(out.contains("SUCCESS"), "{out}");

    let files = rule_test_files();
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let out = check("promtool", &args);
    assert_eq!(
        out.matches("SUCCESS").count(),
        files.len(),
        "every test file must succeed:\n{out}"
    );
}

#[test]
fn prometheus_configuration_passes_promtool_offline() {
    // Checks the scrape and alerting configuration and loads rule_files (relative to the file);
    // it resolves no host names, so it needs no network.
    let out = check("promtool", &["check", "config", PROMETHEUS_CONFIG]);
    assert!(out.contains("1 rule files found"), "{out}");
    let config = yaml(PROMETHEUS_CONFIG);
    assert_eq!(
        config["scrape_configs"][0]["static_configs"][0]["targets"][0].as_str(),
        Some("shenguan:8080")
    );
    assert_eq!(
        config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0].as_str(),
        Some("alertmanager:9093")
    );
}

#[test]
fn alertmanager_configuration_passes_amtool_and_routes_by_department_and_severity() {
    check("amtool", &["check-config", ALERTMANAGER_CONFIG]);

    let routes = |labels: &[&str], receivers: &str| {
        let mut args = vec![
            "config",
            "routes",
            "test",
            "--config.file",
            ALERTMANAGER_CONFIG,
        ];
        let verify = format!("--verify.receivers={receivers}");
        args.push(&verify);
        args.extend(labels);
        check("amtool", &args);
    };
    // A department's own alert reaches it and the platform team.
    routes(
        &[
            "alertname=ShenguanRecordsOverdue",
            "severity=warning",
            "department=szs-scjg",
            "kind=approval",
        ],
        "dept-szs-scjg,platform-team",
    );
    // Pages go to the on-call, with the department's contacts where one is named.
    routes(
        &["alertname=ShenguanBusDown", "severity=page"],
        "platform-oncall",
    );
    routes(
        &[
            "alertname=ShenguanOldestUnclaimedAge",
            "severity=page",
            "department=szs-wjw",
            "kind=approval",
        ],
        "dept-szs-wjw,platform-oncall",
    );
    routes(
        &[
            "alertname=ShenguanIngestionStopped",
            "severity=warning",
            "adapter=nx-zwfw-approval",
        ],
        "platform-team",
    );
    routes(&["alertname=Anything", "severity=info"], "platform-email");

    // Grouping that pages once: per alert and department, reminders hours apart.
    let am = yaml(ALERTMANAGER_CONFIG);
    let root = &am["route"];
    let group_by: Vec<&str> = root["group_by"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(group_by, ["alertname", "department"]);
    for route in std::iter::once(root).chain(root["routes"].as_sequence().unwrap()) {
        if let Some(repeat) = route["repeat_interval"].as_str() {
            let hours: u32 = repeat
                .trim_end_matches('h')
                .parse()
                .unwrap_or_else(|_| panic!("repeat_interval {repeat} should be whole hours"));
            assert!(hours >= 4, "repeat_interval {repeat} repeats too often");
        }
    }

    // Every department of the shipped routing catalog has its own route.
    let catalog = yaml("catalog/routing.yaml");
    let routed: BTreeSet<String> = root["routes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|r| r["matchers"][0].as_str())
        .filter_map(|m| m.strip_prefix("department=\""))
        .map(|m| m.trim_end_matches('"').to_string())
        .collect();
    for d in catalog["departments"].as_sequence().unwrap() {
        let code = d["code"].as_str().unwrap();
        assert!(
            routed.contains(code),
            "catalog department {code} has no route in {ALERTMANAGER_CONFIG}"
        );
    }
}

#[test]
fn every_alert_has_a_severity_bilingual_annotations_a_runbook_section_and_unit_tests() {
    let runbook = read(RUNBOOK);
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    let cjk = regex::Regex::new(r"\p{Han}").unwrap();

    // What the promtool tests cover: per alert, which severities fire somewhere and whether
    // some case expects silence.
    let mut fires: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut quiet: BTreeSet<String> = BTreeSet::new();
    for file in rule_test_files() {
        let doc = yaml(&file);
        for t in doc["tests"].as_sequence().unwrap() {
            for case in t["alert_rule_test"].as_sequence().into_iter().flatten() {
                let name = case["alertname"].as_str().unwrap().to_string();
                let expected = case["exp_alerts"]
                    .as_sequence()
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                if expected.is_empty() {
                    quiet.insert(name);
                } else {
                    for a in expected {
                        let severity = a["exp_labels"]["severity"].as_str().unwrap_or_default();
                        fires
                            .entry(name.clone())
                            .or_default()
                            .insert(severity.to_string());
                        assert!(
                            a["exp_annotations"]
                                .as_mapping()
                                .is_some_and(|m| !m.is_empty()),
                            "{file}: a firing case of {name} must state its annotations"
                        );
                    }
                }
            }
        }
    }

    let alerts: Vec<Rule> = rules().into_iter().filter(|r| r.alert.is_some()).collect();
    assert!(
        alerts.len() >= 15,
        "expected the full alert set, found {}",
        alerts.len()
    );
    let mut problems = Vec::new();
    for r in &alerts {
        let name = r.alert.as_deref().unwrap();
        let severity = r.labels.get("severity").map(String::as_str).unwrap_or("");
        if !["page", "warning", "info"].contains(&severity) {
            problems.push(format!(
                "{name}: severity `{severity}` is not page, warning or info"
            ));
        }
        for key in [
            "summary",
            "summary_zh",
            "description",
            "description_zh",
            "runbook_url",
        ] {
            if r.annotations.get(key).is_none_or(|v| v.trim().is_empty()) {
                problems.push(format!("{name}: annotation `{key}` missing"));
            }
        }
        for key in ["summary_zh", "description_zh"] {
            if !r.annotations.get(key).is_some_and(|v| cjk.is_match(v)) {
                problems.push(format!("{name}: `{key}` is not in Chinese"));
            }
        }
        let expected_url = format!("{RUNBOOK}#{}", name.to_lowercase());
        match r.annotations.get("runbook_url") {
            Some(url) if *url == expected_url => {}
            other => problems.push(format!(
                "{name}: runbook_url {other:?}, expected {expected_url}"
            )),
        }
        if !anchors.contains(&name.to_lowercase()) {
            problems.push(format!("{name}: no section `## {name}` in {RUNBOOK}"));
        }
        // Labels are fixed strings: the rule must not invent unbounded label values.
        for (k, v) in &r.labels {
            if v.contains("{{") {
                problems.push(format!("{name}: label {k} is templated ({v})"));
            }
        }
        if !fires.get(name).is_some_and(|s| s.contains(severity)) {
            problems.push(format!(
                "{name}: no promtool test where the {severity} tier fires"
            ));
        }
        if !quiet.contains(name) {
            problems.push(format!("{name}: no promtool test where it stays quiet"));
        }
    }
    // An alert about one department carries its label, so Alertmanager can route it.
    for r in &alerts {
        let name = r.alert.as_deref().unwrap();
        let per_department = r.expr.contains("by (department");
        let tested_with_department = yaml_tests_mention_department(name);
        if per_department && !tested_with_department {
            problems.push(format!(
                "{name}: aggregates by department but no test expects the label"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "alert rule problems:\n{}",
        problems.join("\n")
    );
}

fn yaml_tests_mention_department(alert: &str) -> bool {
    rule_test_files().iter().any(|file| {
        let doc = yaml(file);
        doc["tests"].as_sequence().unwrap().iter().any(|t| {
            t["alert_rule_test"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|case| {
                    case["alertname"].as_str() == Some(alert)
                        && case["exp_alerts"]
                            .as_sequence()
                            .into_iter()
                            .flatten()
                            .any(|a| a["exp_labels"]["department"].as_str().is_some())
                })
        })
    })
}

#[test]
fn dashboard_queries_are_valid_promql_over_defined_recording_rules() {
    let dash: Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard is JSON");
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36);
    let variables: BTreeSet<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for v in ["DS_PROMETHEUS", "department", "adapter"] {
        assert!(variables.contains(v), "dashboard variable {v} missing");
    }
    // Every panel and query reads the data source through the variable.
    let raw = read(DASHBOARD);
    let uids = regex::Regex::new(r#""uid":\s*"([^"]*)""#).unwrap();
    for c in uids.captures_iter(&raw) {
        assert!(
            ["${DS_PROMETHEUS}", "-- Grafana --", "shenguan-overview"].contains(&&c[1]),
            "data source uid {} is not the variable",
            &c[1]
        );
    }
    let kinds: BTreeSet<&str> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert!(kinds.contains("heatmap"), "{kinds:?}");

    // promtool parses PromQL when it checks rules: each query becomes a recording rule.
    let (exprs, _) = dashboard_queries();
    assert!(exprs.len() >= 20, "only {} dashboard queries", exprs.len());
    let checks: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"record": format!("dashboard:query_{i}:check"), "expr": without_grafana_variables(e)}))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(
        &file,
        serde_norway::to_string(&json!({"groups": [{"name": "dashboard", "rules": checks}]}))
            .unwrap(),
    )
    .unwrap();
    let out = run(
        "promtool",
        &["check", "rules", file.to_str().unwrap()],
        None,
    );
    assert!(
        out.status.success(),
        "a dashboard query is not valid PromQL:\n{}",
        text(&out)
    );

    // Recording rules the dashboard reads exist.
    let records: BTreeSet<String> = rules().into_iter().filter_map(|r| r.record).collect();
    for e in &exprs {
        for name in series_names(e).into_iter().filter(|n| n.contains(':')) {
            assert!(
                records.contains(&name),
                "dashboard reads {name}, which {RULES} does not record"
            );
        }
    }
}

#[test]
fn grafana_provisioning_points_at_the_dashboard_and_the_data_source() {
    let ds = yaml("monitoring/grafana/provisioning/datasources/prometheus.yml");
    let source = &ds["datasources"][0];
    assert_eq!(source["type"].as_str(), Some("prometheus"));
    assert_eq!(source["uid"].as_str(), Some("prometheus"));
    assert_eq!(source["url"].as_str(), Some("http://prometheus:9090"));
    let dashboards = yaml("monitoring/grafana/provisioning/dashboards/shenguan.yml");
    let provider = &dashboards["providers"][0];
    assert_eq!(provider["type"].as_str(), Some("file"));
    assert_eq!(
        provider["options"]["path"].as_str(),
        Some("/var/lib/grafana/dashboards/shenguan")
    );
}

#[test]
fn series_names_are_found_in_promql() {
    let names = series_names(
        r#"sum by (adapter, le) (rate(shenguan_push_latency_seconds_bucket{adapter=~"$adapter",le!="1"}[$__rate_interval])) > 3 * 86400
           or (x_total unless x_total offset 1h) and on (instance, job) (up offset 1h == 1)
           / ignoring (kind) group_left () department:shenguan_claims:increase7d and on () (hour() >= 5 <= 9)"#,
    );
    let expected: BTreeSet<String> = [
        "shenguan_push_latency_seconds_bucket",
        "x_total",
        "up",
        "department:shenguan_claims:increase7d",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(names, expected);
}

// ------------------------------------------------------------------------------------------------
// The live gateway
// ------------------------------------------------------------------------------------------------

/// Metric families of a scrape: name → type, from the `# TYPE` lines.
fn families(scrape: &str) -> BTreeMap<String, String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

/// Samples of one metric in a scrape: (labels, value).
fn samples<'a>(scrape: &'a str, metric: &str) -> Vec<(&'a str, f64)> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = match series.find('{') {
                Some(i) => (&series[..i], &series[i..]),
                None => (series, ""),
            };
            (name == metric).then(|| (labels, value.parse().unwrap_or(f64::NAN)))
        })
        .collect()
}

async fn scrape(gw: &Gateway) -> String {
    let r = gw
        .client
        .get(gw.url("/metrics"))
        .send()
        .await
        .expect("scrape /metrics");
    assert!(r.status().is_success(), "/metrics answered {}", r.status());
    r.text().await.unwrap()
}

/// A department system that accepts every webhook delivery; its URL.
async fn accepting_receiver() -> String {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async { axum::http::StatusCode::NO_CONTENT }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A gateway whose tracker refreshes its gauges every second and whose 卫健委 (szs-wjw) receives
/// signed webhooks, with a few records through it: accepted, routed, delivered, rejected to the
/// DLQ, one claimed, others left unclaimed.
async fn busy_gateway(dir: &std::path::Path) -> Gateway {
    let hook = accepting_receiver().await;
    // The child inherits the test process environment.
    std::env::set_var("MONITORING_TEST_HOOK_SECRET", "monitoring-test-secret");
    let catalog = read("catalog/routing.yaml").replace(
        "  - code: szs-wjw\n    name: 石嘴山市卫生健康委员会\n",
        &format!(
            "  - code: szs-wjw\n    name: 石嘴山市卫生健康委员会\n    webhook: {{ url: \"{hook}\", secret_env: MONITORING_TEST_HOOK_SECRET }}\n"
        ),
    );
    assert!(
        catalog.contains(&hook),
        "the catalog's szs-wjw entry changed shape"
    );
    let catalog_file = dir.join("routing.yaml");
    std::fs::write(&catalog_file, catalog).unwrap();
    let config = dir.join("shenguan.toml");
    std::fs::write(
        &config,
        format!(
            "catalog_file = {catalog_file:?}\n[tracker]\ninterval_seconds = 1\n[delivery]\ninterval_ms = 50\n"
        ),
    )
    .unwrap();
    let gw = Gateway::start(
        &dir.join("data"),
        &["--config", &config.display().to_string()],
    )
    .await;
    let adapter = gw.token("adapter", "nx-zwfw-approval");
    let scjg = gw.token("department", "szs-scjg");
    let json_type = "application/json";

    let (status, body) = gw
        .ingest(
            "nx-zwfw-approval",
            &adapter,
            json_type,
            fixture("01-company.json"),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let claimed_id = body["accepted"][0]["id"]
        .as_str()
        .expect("accepted id")
        .to_string();
    for f in ["02-batch.json", "10-bad-uscc.json"] {
        let (status, body) = gw
            .ingest("nx-zwfw-approval", &adapter, json_type, fixture(f))
            .await;
        assert_eq!(status, 202, "{f}: {body}");
    }

    // Claim one record once the ledger has routed it, so the claim histogram has a series.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = gw
            .client
            .post(gw.url(&format!("/v1/records/{claimed_id}/claim")))
            .bearer_auth(&scjg)
            .send()
            .await
            .unwrap();
        if r.status().is_success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "claiming {claimed_id} kept failing ({}): {}\n{}",
            r.status(),
            r.text().await.unwrap_or_default(),
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gw
}

/// Scrapes until the tracker has refreshed the gauges after the traffic: the claim is counted,
/// the ledger lag series exist and are all zero (the ledger caught up), the bus is up.
async fn settled_scrape(gw: &Gateway) -> String {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let s = scrape(gw).await;
        let lag = samples(&s, "shenguan_consumer_lag_messages");
        let ready = !samples(&s, "shenguan_claim_latency_seconds_count").is_empty()
            && !samples(&s, "shenguan_unclaimed_records").is_empty()
            && !samples(&s, "shenguan_delivery_attempts_total").is_empty()
            && !samples(&s, "shenguan_unrouted_records").is_empty()
            && !lag.is_empty()
            && lag.iter().all(|(_, v)| *v == 0.0)
            && samples(&s, "shenguan_bus_up") == [("", 1.0)];
        if ready {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never settled (claim counted, unclaimed records in the gauges, a webhook \
             delivered, ledger lag 0 on every topic, bus up); \
             ShenguanLedgerLagGrowing would fire on a healthy gateway if the lag stays above 0.\n\
             lag: {lag:?}\nscrape:\n{s}\nlogs:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `promtool check metrics` on an exposition: only the accepted lints may be reported.
fn assert_promtool_accepts(scrape: &str) {
    let out = run("promtool", &["check", "metrics"], Some(scrape.as_bytes()));
    let report = text(&out);
    if !out.status.success() {
        let unexpected: Vec<&str> = report
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .filter(|l| !ACCEPTED_METRIC_LINTS.iter().any(|(lint, _)| l == lint))
            .collect();
        assert!(
            out.status.code() == Some(3) && unexpected.is_empty(),
            "promtool check metrics failed ({}) on the scrape:\n{report}\nscrape:\n{scrape}",
            out.status
        );
    }
}

/// Every metric an alert, a recording rule or a dashboard query reads is a family of the scrape
/// (with its `# TYPE` line); names with a `:` must be recording rules instead. Returns the
/// exported families that were read, so callers can see the check was not vacuous.
fn assert_exports_what_rules_and_dashboard_read(scrape: &str) -> BTreeSet<String> {
    let exported = families(scrape);
    let records: BTreeSet<String> = rules().into_iter().filter_map(|r| r.record).collect();
    let (dashboard_exprs, variable_metrics) = dashboard_queries();
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in rules() {
        let who = r
            .alert
            .or(r.record)
            .map(|n| format!("{RULES}: {n}"))
            .unwrap();
        for name in series_names(&r.expr) {
            used.entry(name).or_default().insert(who.clone());
        }
    }
    for e in &dashboard_exprs {
        for name in series_names(e) {
            used.entry(name)
                .or_default()
                .insert(format!("{DASHBOARD}: {e}"));
        }
    }
    for m in &variable_metrics {
        used.entry(m.clone())
            .or_default()
            .insert(format!("{DASHBOARD}: variable"));
    }

    let mut missing = Vec::new();
    let mut checked = BTreeSet::new();
    for (name, users) in &used {
        if name.contains(':') {
            if !records.contains(name) {
                missing.push(format!("{name} (no recording rule) — read by {users:?}"));
            }
            continue;
        }
        if PROMETHEUS_SYNTHETIC.contains(&name.as_str()) {
            continue;
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (exported.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(name);
        if exported.contains_key(family) {
            checked.insert(family.to_string());
        } else {
            missing.push(format!("{name} — read by {users:?}"));
        }
    }
    assert!(
        missing.is_empty(),
        "metrics read by the rules or the dashboard that the gateway does not export:\n{}\n\n\
         A family must be in every scrape from start-up, before its first event: the prometheus \
         crate leaves a *Vec family out of the exposition until one label set exists, so the \
         gateway creates its bounded label sets at zero when it starts (operations, catalog \
         departments × kinds, outcomes) — which also lets increase() see the first event.\n\
         exported: {:?}",
        missing.join("\n"),
        exported.keys().collect::<Vec<_>>()
    );
    // The extraction found the contract's metrics, so the check is not vacuous.
    for must in [
        "shenguan_push_latency_seconds",
        "shenguan_claim_latency_seconds",
        "shenguan_overdue_records",
        "shenguan_oldest_unclaimed_age_seconds",
        "shenguan_unrouted_records",
        "shenguan_dlq_records_total",
        "shenguan_records_ingested_total",
        "shenguan_delivery_attempts_total",
        "shenguan_deadline_breaches_total",
        "shenguan_calendar_days_remaining",
        "shenguan_deadline_uncomputable_total",
        "shenguan_bus_up",
        "shenguan_bus_errors_total",
        "shenguan_consumer_lag_messages",
    ] {
        assert!(
            checked.contains(must),
            "no rule or panel reads {must}: {checked:?}"
        );
    }
    checked
}

#[tokio::test]
async fn a_live_scrape_passes_promtool_and_exports_every_metric_the_rules_and_dashboard_read() {
    let dir = tempfile::tempdir().unwrap();
    let gw = busy_gateway(dir.path()).await;
    let scrape = settled_scrape(&gw).await;
    assert_promtool_accepts(&scrape);
    assert_exports_what_rules_and_dashboard_read(&scrape);
}

/// The metric table of the public contract (DESIGN.md §4) with each metric's type.
const CONTRACT_METRICS: [(&str, &str); 13] = [
    ("shenguan_records_ingested_total", "counter"),
    ("shenguan_records_published_total", "counter"),
    ("shenguan_dlq_records_total", "counter"),
    ("shenguan_pipeline_latency_seconds", "histogram"),
    ("shenguan_push_latency_seconds", "histogram"),
    ("shenguan_claim_latency_seconds", "histogram"),
    ("shenguan_unclaimed_records", "gauge"),
    ("shenguan_overdue_records", "gauge"),
    ("shenguan_oldest_unclaimed_age_seconds", "gauge"),
    ("shenguan_deadline_breaches_total", "counter"),
    ("shenguan_unrouted_records", "gauge"),
    ("shenguan_delivery_attempts_total", "counter"),
    ("shenguan_calendar_days_remaining", "gauge"),
];

/// The label sets of one metric in a scrape, each as a map.
fn label_sets(scrape: &str, metric: &str) -> Vec<BTreeMap<String, String>> {
    let pair = regex::Regex::new(r#"(\w+)="((?:[^"\\]|\\.)*)""#).unwrap();
    samples(scrape, metric)
        .into_iter()
        .map(|(labels, _)| {
            pair.captures_iter(labels)
                .map(|c| (c[1].to_string(), c[2].to_string()))
                .collect()
        })
        .collect()
}

/// Whether some series of `metric` has all of `labels`.
fn has_series(scrape: &str, metric: &str, labels: &[(&str, &str)]) -> bool {
    label_sets(scrape, metric).iter().any(|set| {
        labels
            .iter()
            .all(|(k, v)| set.get(*k).map(String::as_str) == Some(*v))
    })
}

#[tokio::test]
async fn a_fresh_gateway_exports_every_contract_metric_before_any_traffic() {
    let dir = tempfile::tempdir().unwrap();
    // A fresh gateway: no token issued, no request sent; scraped the moment it answers. Its
    // daily digest is off: on a working day after 08:30 it goes out at the first tick, and the
    // alert topic's counter would count it.
    let gw = Gateway::configured(dir.path(), "[tracker]\ndigest_at = \"\"\n").await;
    let scrape = scrape(&gw).await;
    assert_promtool_accepts(&scrape);
    let exported = families(&scrape);
    for (metric, kind) in CONTRACT_METRICS {
        assert_eq!(
            exported.get(metric).map(String::as_str),
            Some(kind),
            "{metric} has no `# TYPE {metric} {kind}` line on a fresh gateway:\n{scrape}"
        );
    }
    assert_exports_what_rules_and_dashboard_read(&scrape);

    // Every label value known at start has its series, at zero.
    let catalog = yaml("catalog/routing.yaml");
    let departments: Vec<String> = catalog["departments"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap().to_string())
        .collect();
    let mut missing = Vec::new();
    let mut expect = |metric: &str, labels: &[(&str, &str)]| {
        if !has_series(&scrape, metric, labels) {
            missing.push(format!("{metric}{labels:?}"));
        }
    };
    for topic in [
        "approval",
        "supervision",
        "notice",
        "claim",
        "feedback",
        "alert",
        "dlq",
    ] {
        expect(
            "shenguan_records_published_total",
            &[("topic", &format!("shenguan.{topic}.v1"))],
        );
    }
    for adapter in [
        "nx-zwfw-approval",
        "nx-scjg-supervision",
        "selfbuilt-export",
    ] {
        for outcome in ["accepted", "rejected", "duplicate"] {
            expect(
                "shenguan_records_ingested_total",
                &[("adapter", adapter), ("outcome", outcome)],
            );
        }
        expect(
            "shenguan_pipeline_latency_seconds_count",
            &[("adapter", adapter)],
        );
        for (stage, reason) in [
            ("decode", "invalid_encoding"),
            ("parse", "malformed_json"),
            ("map", "mapping_failed"),
            ("validate", "invalid_identifier"),
            ("validate", "schema_violation"),
        ] {
            expect(
                "shenguan_dlq_records_total",
                &[("adapter", adapter), ("stage", stage), ("reason", reason)],
            );
        }
    }
    expect(
        "shenguan_push_latency_seconds_count",
        &[("adapter", "nx-zwfw-approval"), ("kind", "approval")],
    );
    expect(
        "shenguan_push_latency_seconds_count",
        &[("adapter", "nx-scjg-supervision"), ("kind", "supervision")],
    );
    for department in &departments {
        for outcome in ["ok", "failed", "dead_lettered"] {
            expect(
                "shenguan_delivery_attempts_total",
                &[("department", department), ("outcome", outcome)],
            );
        }
        for kind in ["approval", "supervision", "notice"] {
            let labels = [("department", department.as_str()), ("kind", kind)];
            expect("shenguan_claim_latency_seconds_count", &labels);
            expect("shenguan_unclaimed_records", &labels);
            expect("shenguan_overdue_records", &labels);
            expect("shenguan_oldest_unclaimed_age_seconds", &labels);
            // The shipped catalog's profile (yuanqu-2022) defines these rules.
            for rule in ["claim_approval", "claim_supervision", "reply_inquiry"] {
                expect(
                    "shenguan_deadline_breaches_total",
                    &[("department", department), ("kind", kind), ("rule", rule)],
                );
            }
        }
    }
    for kind in ["approval", "supervision", "notice"] {
        expect("shenguan_unrouted_records", &[("kind", kind)]);
    }
    for topic in ["approval", "supervision", "notice", "claim", "feedback"] {
        expect(
            "shenguan_consumer_lag_messages",
            &[
                ("consumer", "ledger"),
                ("topic", &format!("shenguan.{topic}.v1")),
            ],
        );
    }
    assert!(
        missing.is_empty(),
        "series missing from a fresh gateway's scrape:\n{}\n\nscrape:\n{scrape}",
        missing.join("\n")
    );
    // Labels stay bounded: no series names a record.
    let uuid = regex::Regex::new(r"[0-9a-f]{8}-[0-9a-f]{4}-").unwrap();
    for line in scrape.lines().filter(|l| !l.starts_with('#')) {
        assert!(!uuid.is_match(line), "a record id in a label: {line}");
    }
    // Nothing happened yet: every counter of the contract is 0.
    for (metric, kind) in CONTRACT_METRICS {
        if kind == "counter" {
            for (labels, value) in samples(&scrape, metric) {
                assert_eq!(value, 0.0, "{metric}{labels} on a fresh gateway");
            }
        }
    }
}
