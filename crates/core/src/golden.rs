//! Golden fixture tests for adapters (`shenguan adapters test`): each raw input file in
//! `adapters/<system>/fixtures/<adapter>/` is run through the real pipeline at a fixed receive
//! time and compared with `<case>.expected.json`; a mismatch prints a readable per-field diff.
//!
//! A fixture's charset comes from its name: `<case>.gb18030.json` is read as GB18030.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::adapter::format::Format;
use crate::adapter::Adapter;
use crate::pipeline::{self, Outcome, Unit};
use crate::schema::Schemas;

/// The receive time used for every fixture, so expected files are stable.
pub const FIXED_RECEIVED_AT: &str = "2026-01-05T09:00:00+08:00";

/// The result of one fixture.
#[derive(Debug)]
pub struct CaseResult {
    pub input: PathBuf,
    pub differences: Vec<String>,
}

/// The fixture inputs of an adapter: every file in its fixture directory that is not an
/// expectation.
pub fn fixture_inputs(adapter: &Adapter) -> Vec<PathBuf> {
    let dir = fixture_dir(adapter);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file() && !p.to_string_lossy().ends_with(".expected.json"));
    files.sort();
    files
}

pub fn fixture_dir(adapter: &Adapter) -> PathBuf {
    adapter
        .file
        .parent()
        .unwrap_or(Path::new("."))
        .join("fixtures")
        .join(&adapter.name)
}

fn expected_path(input: &Path) -> PathBuf {
    let name = input
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("input");
    let stem = name.split('.').next().unwrap_or(name);
    input.with_file_name(format!("{stem}.expected.json"))
}

/// Runs one input through the pipeline and renders what a user would see.
pub fn run_case(adapter: &Adapter, schemas: &Schemas, input: &Path) -> Result<Value, String> {
    let body = std::fs::read(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let received_at = chrono::DateTime::parse_from_rfc3339(FIXED_RECEIVED_AT).expect("fixed time");
    let charset = input
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(Format::charset_from_name);
    let format = input
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(Format::from_extension);
    let result = pipeline::process(
        adapter,
        schemas,
        &body,
        format,
        charset.as_deref(),
        Unit::Body,
        received_at,
        usize::MAX,
    );
    Ok(match result {
        Err(body) => json!({"body_rejected": {
            "status": body.status,
            "stage": body.rejection.stage,
            "reason": body.rejection.reason,
            "errors": body.rejection.errors,
        }}),
        Ok(outcomes) => Value::Array(
            outcomes
                .into_iter()
                .map(|o| match o {
                    Outcome::Accepted(c) => {
                        let event: Value = serde_json::from_slice(&c.event).expect("event is JSON");
                        json!({"accepted": event["data"]})
                    }
                    Outcome::Rejected(r) => json!({"rejected": {
                        "index": r.index,
                        "stage": r.stage,
                        "reason": r.reason,
                        "errors": r.errors,
                    }}),
                })
                .collect(),
        ),
    })
}

/// Runs every fixture of `adapter`; with `update`, writes the expectations instead of comparing.
pub fn test_adapter(adapter: &Adapter, schemas: &Schemas, update: bool) -> Vec<CaseResult> {
    fixture_inputs(adapter)
        .into_iter()
        .map(|input| {
            let differences = match run_case(adapter, schemas, &input) {
                Err(e) => vec![e],
                Ok(actual) => {
                    let expected_file = expected_path(&input);
                    if update {
                        let text = serde_json::to_string_pretty(&actual).expect("JSON") + "\n";
                        match std::fs::write(&expected_file, text) {
                            Ok(()) => Vec::new(),
                            Err(e) => vec![format!("{}: {e}", expected_file.display())],
                        }
                    } else {
                        match std::fs::read_to_string(&expected_file) {
                            Err(_) => vec![format!(
                                "no expectation file {} (run with --update to create it)",
                                expected_file.display()
                            )],
                            Ok(text) => match serde_json::from_str::<Value>(&text) {
                                Err(e) => {
                                    vec![format!("{}: not JSON: {e}", expected_file.display())]
                                }
                                Ok(expected) => {
                                    let mut out = Vec::new();
                                    diff("", &expected, &actual, &mut out);
                                    out
                                }
                            },
                        }
                    }
                }
            };
            CaseResult { input, differences }
        })
        .collect()
}

/// Field-by-field differences as JSON pointers.
pub fn diff(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let p = format!("{path}/{k}");
                match a.get(k) {
                    Some(av) => diff(&p, ev, av, out),
                    None => out.push(format!("{p}: expected {ev}, missing")),
                }
            }
            for (k, av) in a {
                if !e.contains_key(k) {
                    out.push(format!("{path}/{k}: unexpected {av}"));
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            for i in 0..e.len().max(a.len()) {
                let p = format!("{path}/{i}");
                match (e.get(i), a.get(i)) {
                    (Some(ev), Some(av)) => diff(&p, ev, av, out),
                    (Some(ev), None) => out.push(format!("{p}: expected {ev}, missing")),
                    (None, Some(av)) => out.push(format!("{p}: unexpected {av}")),
                    (None, None) => {}
                }
            }
        }
        _ if expected != actual => out.push(format!(
            "{}: expected {expected}, got {actual}",
            if path.is_empty() { "/" } else { path }
        )),
        _ => {}
    }
}
