//! Hostile and broken input, generated: arbitrary bytes and mutated fixtures go through every
//! shipped adapter's pipeline in every format. Nothing may panic, and every input gets an
//! answer — accepted records, or rejections that carry a reason. A bounded run here; raise
//! PROPTEST_CASES for a longer one (e.g. `PROPTEST_CASES=20000 cargo test --test fuzz`).

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

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

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
