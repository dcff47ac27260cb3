//! The dead-letter queue as an operator uses it to finish the job, from the outside: the real
//! gateway over HTTP and the real `shenguan dlq` commands on its data directory.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

const JSON: &str = "application/json";

/// A gateway on a private copy of the adapters (which the test may edit), and the arguments
/// that point the CLI at the same configuration and data.
struct Site {
    _dir: tempfile::TempDir,
    adapters: PathBuf,
    gw: Gateway,
    args: Vec<String>,
}

impl Site {
    async fn start() -> Site {
        Site::start_with(|_| {}).await
    }

    /// Starts the gateway after `prepare` changed the site's adapters.
    async fn start_with(prepare: impl FnOnce(&Path)) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let adapters = dir.path().join("adapters");
        copy_dir(&repo().join("adapters"), &adapters);
        prepare(&adapters);
        let config = dir.path().join("shenguan.toml");
        std::fs::write(
            &config,
            format!(
                "adapters_dir = {:?}\nschemas_dir = {:?}\n",
                adapters,
                repo().join("schemas")
            ),
        )
        .unwrap();
        let data = dir.path().join("data");
        let config_arg = config.display().to_string();
        let gw = Gateway::start(&data, &["--config", &config_arg]).await;
        let args = vec![
            "--config".to_string(),
            config_arg,
            "--data-dir".to_string(),
            data.display().to_string(),
        ];
        Site {
            _dir: dir,
            adapters,
            gw,
            args,
        }
    }

    /// Runs `shenguan dlq …` on the site: (success, stdout, stderr).
    fn dlq(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.dlq_raw(args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn dlq_raw(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["dlq"];
        all.extend(args);
        all.extend(self.args.iter().map(String::as_str));
        shenguan(&all)
    }

    /// `dlq list --format json` with a status filter: the entries.
    fn list(&self, status: &str) -> Vec<Value> {
        let (ok, out, err) = self.dlq(&["list", "--format", "json", "--status", status]);
        assert!(ok, "dlq list --status {status} failed: {err}");
        serde_json::from_str::<Value>(&out)
            .unwrap_or_else(|e| panic!("dlq list --format json: {e}\n{out}"))
            .as_array()
            .unwrap()
            .clone()
    }

    fn edit(&self, file: &str, from: &str, to: &str) {
        edit(&self.adapters, file, from, to);
    }
}

fn edit(adapters: &Path, file: &str, from: &str, to: &str) {
    let path = adapters.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} has no `{from}`");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

fn ids(entries: &[Value]) -> Vec<&str> {
    entries.iter().map(|e| e["id"].as_str().unwrap()).collect()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[tokio::test]
async fn an_undeclared_gb18030_csv_replays_once_the_adapter_is_given_its_charset() {
    // The site has not told the adapter that its department exports GB18030.
    let site = Site::start_with(|adapters| {
        edit(
            adapters,
            "selfbuilt/export.yaml",
            "charset: gb18030",
            "charset: utf-8",
        )
    })
    .await;
    let token = site.gw.token("adapter", "selfbuilt-export");
    let csv =
        read(&repo().join("adapters/selfbuilt/fixtures/selfbuilt-export/01-export.gb18030.csv"));
    // Sent without a charset: refused, with a hint, and kept in the DLQ.
    let (status, problem) = site
        .gw
        .ingest("selfbuilt-export", &token, "text/csv", csv.clone())
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["reason"], "invalid_encoding", "{problem}");
    let dlq_id = problem["dlq_id"].as_str().unwrap().to_string();
    let open = site.list("open");
    assert_eq!(ids(&open), [dlq_id.as_str()]);
    assert_eq!(
        open[0]["charset"],
        Value::Null,
        "the request declared no charset: {}",
        open[0]
    );

    // The operator sets the adapter's charset; the replay decodes with it and is accepted.
    site.edit(
        "selfbuilt/export.yaml",
        "charset: utf-8",
        "charset: gb18030",
    );
    let (ok, out, err) = site.dlq(&["replay", "--all"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("{dlq_id}: accepted as ")), "{out}");
    assert!(
        out.contains("replayed: 1 accepted, 0 duplicate, 0 rejected again, 0 left in the DLQ"),
        "{out}"
    );
    let records = embedded_topic(&site.gw.data_dir, "shenguan.approval.v1").await;
    assert!(!records.is_empty(), "the rows were published");
    assert!(
        records
            .iter()
            .all(|r| r["data"]["source"]["adapter"] == "selfbuilt-export"),
        "{records:?}"
    );
    // Nothing is left open; the entry is listed as replayed.
    assert!(site.list("open").is_empty());
    assert_eq!(ids(&site.list("replayed")), [dlq_id.as_str()]);
}

#[tokio::test]
async fn a_failed_replay_supersedes_its_entry_so_one_entry_stays_open() {
    let site = Site::start().await;
    let token = site.gw.token("adapter", "nx-zwfw-approval");
    let (_, body) = site
        .gw
        .ingest(
            "nx-zwfw-approval",
            &token,
            JSON,
            fixture("14-unknown-code.json"),
        )
        .await;
    let first = body["rejected"][0]["dlq_id"].as_str().unwrap().to_string();

    // Two replays before the fix: each fails, and each failure replaces the entry it replayed.
    for round in 0..2 {
        let (ok, out, _) = site.dlq(&["replay", "--all"]);
        assert!(!ok, "a rejected replay exits 1: {out}");
        assert!(out.contains("rejected again"), "{out}");
        assert!(out.contains("(now DLQ entry "), "{out}");
        let open = site.list("open");
        assert_eq!(open.len(), 1, "round {round}: one open entry: {open:?}");
        assert_ne!(open[0]["id"], first.as_str());
        assert!(open[0]["replay_of"].is_string(), "{}", open[0]);
    }
    let all = site.list("all");
    assert_eq!(all.len(), 3, "{all:?}");
    let superseded = site.list("superseded");
    assert_eq!(superseded.len(), 2);
    assert!(ids(&superseded).contains(&first.as_str()));
    let open_id = site.list("open")[0]["id"].as_str().unwrap().to_string();
    // The chain: the first entry is replaced by the second, the second by the open one.
    let second = all
        .iter()
        .find(|e| e["replay_of"] == first.as_str())
        .unwrap();
    assert_eq!(
        all.iter().find(|e| e["id"] == first.as_str()).unwrap()["replaced_by"],
        serde_json::json!([second["id"]])
    );
    assert_eq!(second["status"], "superseded");

    // The table lists the open one by default and says what else there is.
    let (ok, table, counts) = site.dlq(&["list"]);
    assert!(ok);
    assert!(
        table.contains(&open_id) && !table.contains(&first),
        "{table}"
    );
    assert!(table.contains("1 entries"), "{table}");
    assert!(
        counts.contains("1 open, 0 replayed, 2 superseded"),
        "{counts}"
    );
    // Replaying a superseded entry by id points at its successor and does nothing.
    let (_, out, _) = site.dlq(&["replay", "--id", &first]);
    assert!(out.contains(&format!("{first}: superseded by")), "{out}");
    assert_eq!(site.list("all").len(), 3);

    // The fix: the open entry replays, and nothing is open any more.
    site.edit(
        "nx-zwfw/tables/applicant-category.yaml",
        "\"1\": 法人及非法人组织",
        "\"1\": 法人及非法人组织\n\"7\": 法人及非法人组织",
    );
    let (ok, out, err) = site.dlq(&["replay", "--all"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("replayed: 1 accepted"), "{out}");
    assert!(site.list("open").is_empty());
    assert_eq!(ids(&site.list("replayed")), [open_id.as_str()]);
    assert_eq!(site.list("superseded").len(), 2);
    let (_, out, _) = site.dlq(&["replay", "--id", &open_id]);
    assert!(out.contains("already replayed"), "{out}");
}

#[tokio::test]
async fn previews_mask_personal_data_but_leave_case_numbers_readable() {
    let site = Site::start().await;
    let zwfw = site.gw.token("adapter", "nx-zwfw-approval");
    // A 自然人 (APPLY_PROPERTY 2) whose ID number fails its check digit.
    let (_, body) = site
        .gw
        .ingest(
            "nx-zwfw-approval",
            &zwfw,
            JSON,
            fixture("11-bad-id-number.json"),
        )
        .await;
    let json_id = body["rejected"][0]["dlq_id"].as_str().unwrap().to_string();
    // The same from the credit platform's CSV export: 海明, 自然人, an ID number with a typo.
    let credit = site.gw.token("adapter", "nx-credit-xk");
    let csv = read(&repo().join("adapters/nx-credit/fixtures/nx-credit-xk/11-bad-id-number.csv"));
    let (status, body) = site
        .gw
        .ingest("nx-credit-xk", &credit, "text/csv; charset=utf-8", csv)
        .await;
    assert_eq!(status, 202, "{body}");
    let csv_id = body["rejected"][0]["dlq_id"].as_str().unwrap().to_string();

    let entries = site.list("open");
    let preview = |id: &str| {
        entries
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {entries:?}"))["preview"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let json = preview(&json_id);
    // The 办件编号 names the record to fix in the source system: readable.
    assert!(
        json.contains("\"PROJID\": \"640200202601050011\""),
        "{json}"
    );
    // The natural person's name, ID number and phone are not.
    assert!(json.contains("\"APPLYNAME\": \"李*\""), "{json}");
    assert!(!json.contains("李明"), "{json}");
    assert!(json.contains("360426********009X"), "{json}");
    assert!(json.contains("137****0000"), "{json}");

    let csv = preview(&csv_id);
    assert!(csv.contains("XK_XDR_MC=海* | XK_XDR_LB=自然人"), "{csv}");
    assert!(!csv.contains("海明"), "{csv}");
    assert!(csv.contains("XK_XDR_ZJHM=640205********1216"), "{csv}");
    assert!(!csv.contains("640205198306171216"), "{csv}");
    assert!(
        csv.contains("XK_WSH=惠审服乡规许字〔2026〕第0011号"),
        "{csv}"
    );

    // Neither the listing nor the details show a personal number.
    let (_, table, _) = site.dlq(&["list"]);
    assert_eq!(
        unmasked_personal_numbers(&table),
        Vec::<String>::new(),
        "{table}"
    );
    let (ok, details, err) = site.dlq(&["show", &csv_id]);
    assert!(ok, "{err}");
    assert!(details.contains("status        open"), "{details}");
    assert!(
        details.contains("reason        invalid_identifier"),
        "{details}"
    );
    assert!(
        !details.contains("640205198306171216") && !details.contains("海明"),
        "{details}"
    );
}

#[tokio::test]
async fn an_admin_reads_the_original_bytes_of_an_entry_and_the_read_is_audited() {
    let site = Site::start().await;
    let adapter = site.gw.token("adapter", "nx-zwfw-approval");
    let (_, body) = site
        .gw
        .ingest(
            "nx-zwfw-approval",
            &adapter,
            JSON,
            fixture("11-bad-id-number.json"),
        )
        .await;
    let id = body["rejected"][0]["dlq_id"].as_str().unwrap().to_string();
    let original = fixture("11-bad-id-number.json");

    // The CLI: masked details by default, the exact bytes with --original.
    let out = site.dlq_raw(&["show", &id, "--original"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value, serde_json::from_slice::<Value>(&original).unwrap());
    assert!(text.contains("36042619910102009X") && text.contains("李明"));
    let (ok, _, err) = site.dlq(&["show", "no-such-entry"]);
    assert!(
        !ok && err.contains("no DLQ entry with id no-such-entry"),
        "{err}"
    );

    // HTTP: admin only.
    let url = site.gw.url(&format!("/v1/dlq/{id}/original"));
    let client = &site.gw.client;
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let scjg = site.gw.token("department", "szs-scjg");
    for token in [&scjg, &adapter] {
        let r = client.get(&url).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    let admin = site.gw.token("admin", "");
    let r = client.get(&url).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    let bytes = r.bytes().await.unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap(),
        serde_json::from_slice::<Value>(&original).unwrap()
    );
    let r = client
        .get(site.gw.url("/v1/dlq/no-such-entry/original"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["type"], "urn:shenguan:problem:unknown-dlq-entry");

    // Both reads are in the audit log, with who read what; the refused ones are not.
    let audit: Value = client
        .get(site.gw.url("/v1/admin/audit"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reads: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "dlq_original_read")
        .map(|e| (e["actor"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    assert_eq!(reads, [("api:admin", id.as_str()), ("cli", id.as_str())]);
}
