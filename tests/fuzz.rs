//! Hostile and broken input, generated: arbitrary bytes and mutated fixtures go through every
//! shipped adapter's pipeline in every format. Nothing may panic, and every input gets an
//! answer — accepted records, or rejections that carry a reason. A bounded run here; raise
//! PROPTEST_CASES for a longer one (e.g. `PROPTEST_CASES=20000 cargo test --test fuzz`).

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use shenguan::adapter::format::Format;
use shenguan::adapter::{Adapter, AdapterSet};
use shenguan::pipeline::{self, Outcome, Unit};
use shenguan::schema::Schemas;

struct Corpus {
    schemas: Schemas,
    adapters: Vec<std::sync::Arc<Adapter>>,
    /// (adapter index, file name, bytes) of every shipped fixture input.
    inputs: Vec<(usize, String, Vec<u8>)>,
}

fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let schemas = Schemas::load(Some(&root.join("schemas"))).expect("schemas");
        let set = AdapterSet::load(&root.join("adapters"), &schemas).expect("adapters");
        let adapters: Vec<_> = set.iter().cloned().collect();
        let mut inputs = Vec::new();
        for (i, a) in adapters.iter().enumerate() {
            for file in shenguan::golden::fixture_inputs(a) {
                let name = file.file_name().unwrap().to_string_lossy().to_string();
                inputs.push((i, name, std::fs::read(PathBuf::from(&file)).unwrap()));
            }
        }
        assert!(
            inputs.len() > 50,
            "the fixture corpus is too small: {}",
            inputs.len()
        );
        Corpus {
            schemas,
            adapters,
            inputs,
        }
    })
}

/// Runs one input and checks that it got a complete answer.
fn answer(
    adapter: &Adapter,
    schemas: &Schemas,
    body: &[u8],
    format: Option<Format>,
    charset: Option<&str>,
) {
    let now = shenguan::adapter::convert::now_shanghai();
    match pipeline::process(
        adapter,
        schemas,
        body,
        format,
        charset,
        Unit::Body,
        now,
        10_000,
    ) {
        Ok(outcomes) => {
            for o in outcomes {
                if let Outcome::Rejected(r) = o {
                    assert!(
                        !r.errors.is_empty() && r.errors.iter().all(|e| !e.reason.is_empty()),
                        "a rejection without a reason"
                    );
                }
            }
        }
        Err(body) => {
            assert!(
                !body.rejection.errors.is_empty(),
                "a body rejection without a reason"
            );
            assert!(
                [400, 413, 415].contains(&body.status),
                "status {}",
                body.status
            );
        }
    }
}

const FORMATS: [Option<Format>; 5] = [
    None,
    Some(Format::Json),
    Some(Format::Xml),
    Some(Format::Csv),
    Some(Format::Xlsx),
];
const CHARSETS: [Option<&str>; 4] = [None, Some("utf-8"), Some("gb18030"), Some("latin1")];

/// Cases per property: 256, or `PROPTEST_CASES` for a longer run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

#[test]
fn the_log_scanner_finds_personal_numbers_but_not_digits_inside_ids() {
    assert_eq!(
        common::unmasked_personal_numbers("联系电话13995021234，身份证11010519491231002X。"),
        ["13995021234", "11010519491231002X"]
    );
    assert!(common::unmasked_personal_numbers(
        "dlq_id=\"ca672ec1-bee9-4a6c-b502-181858067884\" masked 139****1234"
    )
    .is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn arbitrary_bytes_get_an_answer_from_every_adapter(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        adapter in 0usize..16,
        format in 0usize..5,
        charset in 0usize..4,
    ) {
        let c = corpus();
        let a = &c.adapters[adapter % c.adapters.len()];
        answer(a, &c.schemas, &bytes, FORMATS[format], CHARSETS[charset]);
    }

    #[test]
    fn mutated_fixtures_get_an_answer(
        input in 0usize..1000,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..24),
        truncate in proptest::option::of(any::<usize>()),
    ) {
        let c = corpus();
        let (adapter, name, original) = &c.inputs[input % c.inputs.len()];
        let mut bytes = original.clone();
        for (at, b) in edits {
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] = b;
            }
        }
        if let Some(t) = truncate {
            let keep = t % (bytes.len() + 1);
            bytes.truncate(keep);
        }
        answer(&c.adapters[*adapter], &c.schemas, &bytes, Format::from_extension(name), None);
    }

    #[test]
    fn deep_nesting_and_huge_numbers_are_rejected_cleanly(depth in 1usize..400, digits in 1usize..400) {
        let c = corpus();
        let a = c.adapters.iter().find(|a| a.name == "nx-zwfw-approval").unwrap();
        let nested = "[".repeat(depth) + &"]".repeat(depth);
        answer(a, &c.schemas, nested.as_bytes(), Some(Format::Json), None);
        let huge = format!(r#"{{"PROJID": "x", "TRANSACT_TIME": {}}}"#, "9".repeat(digits));
        answer(a, &c.schemas, huge.as_bytes(), Some(Format::Json), None);
    }
}

/// The ingest endpoint itself, on a running gateway: mutated fixtures with right, wrong and
/// mislabelled media types and charsets. Every request gets a problem or a 202; every rejection
/// names its DLQ entry and is in the DLQ; the gateway stays healthy. `SHENGUAN_FUZZ_REQUESTS`
/// (default 150) sets how many requests.
#[tokio::test(flavor = "multi_thread")]
async fn the_ingest_endpoint_answers_every_hostile_request_and_loses_no_rejection() {
    let cases: usize = std::env::var("SHENGUAN_FUZZ_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let c = corpus();
    let dir = tempfile::tempdir().unwrap();
    let gw = common::Gateway::start(&dir.path().join("data"), &[]).await;
    let mut tokens = std::collections::HashMap::new();
    let types = [
        "application/json",
        "application/json; charset=gb18030",
        "application/xml",
        "text/xml; charset=utf-8",
        "text/csv",
        "text/csv; charset=gb18030",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "text/plain",
        "application/json; charset=no-such-charset",
    ];
    let mut rng = 0x5eed_u64;
    let mut next = |n: usize| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((rng >> 33) as usize) % n.max(1)
    };
    let mut dlq_ids = Vec::new();
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..cases {
        let (adapter, name, original) = &c.inputs[next(c.inputs.len())];
        let adapter = &c.adapters[*adapter].name;
        let token = tokens
            .entry(adapter.clone())
            .or_insert_with(|| gw.token("adapter", adapter))
            .clone();
        let mut body = original.clone();
        for _ in 0..next(12) {
            if !body.is_empty() {
                let i = next(body.len());
                body[i] = next(256) as u8;
            }
        }
        if next(4) == 0 {
            let keep = next(body.len() + 1);
            body.truncate(keep);
        }
        // Mostly the fixture's own media type, sometimes a wrong or mislabelled one.
        let own = Format::from_extension(name)
            .map(|f| f.media_type())
            .unwrap_or("application/octet-stream");
        let content_type = if next(3) == 0 {
            types[next(types.len())]
        } else {
            own
        };
        let (status, answer) = gw.ingest(adapter, &token, content_type, body).await;
        *statuses.entry(status).or_insert(0) += 1;
        match status {
            202 => {
                let n = |k: &str| answer[k].as_array().map_or(0, Vec::len);
                assert!(
                    answer["received"].as_u64().is_some(),
                    "a 202 says what it received: {answer}"
                );
                assert!(
                    n("accepted") + n("duplicates") + n("rejected") > 0 || answer["received"] == 0,
                    "{answer}"
                );
                for r in answer["rejected"].as_array().into_iter().flatten() {
                    let id = r["dlq_id"]
                        .as_str()
                        .expect("every rejection names its DLQ entry");
                    assert!(
                        r["reason"].is_string() && !r["errors"].as_array().unwrap().is_empty(),
                        "{r}"
                    );
                    dlq_ids.push(id.to_string());
                }
            }
            400 | 413 | 415 | 422 => {
                assert!(
                    answer["type"].is_string() && answer["detail"].is_string(),
                    "problem details: {answer}"
                );
                let id = answer["dlq_id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a refused body is dead-lettered too: {answer}"));
                dlq_ids.push(id.to_string());
            }
            other => panic!(
                "status {other} for a hostile request: {answer}\n{}",
                gw.logs()
            ),
        }
    }
    let health = gw.client.get(gw.url("/healthz")).send().await.unwrap();
    assert!(health.status().is_success());
    let dlq = common::embedded_topic(&gw.data_dir, "shenguan.dlq.v1").await;
    let in_dlq: std::collections::HashSet<String> = dlq
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect();
    let missing: Vec<_> = dlq_ids.iter().filter(|id| !in_dlq.contains(*id)).collect();
    assert!(missing.is_empty(), "rejections not in the DLQ: {missing:?}");
    let logs = gw.logs();
    let unmasked = common::unmasked_personal_numbers(&logs);
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| unmasked.iter().any(|n| l.contains(n.as_str())))
        .take(5)
        .collect();
    assert!(
        unmasked.is_empty(),
        "unmasked in the logs: {unmasked:?}\n{lines:#?}"
    );
    eprintln!(
        "{cases} requests: {statuses:?}; {} rejections, all in the DLQ",
        dlq_ids.len()
    );
}
