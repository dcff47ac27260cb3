//! Schemas and adapters as a site sees them: the shipped examples and fixtures, `adapters lint`
//! on a broken adapter, and start-up refusing invalid definitions.

mod common;

use common::*;
use shenguan::schema::{RecordKind, Schemas};

#[test]
fn schema_examples_validate_and_invalid_examples_fail_for_their_reason() {
    let schemas = Schemas::load(Some(&repo().join("schemas"))).unwrap();
    let examples = repo().join("schemas/examples");
    for (file, kind) in [
        ("approval.json", RecordKind::Approval),
        ("approval-natural-person.json", RecordKind::Approval),
        ("approval-commitment.json", RecordKind::Approval),
        ("supervision-penalty.json", RecordKind::Supervision),
        ("supervision-revoke-request.json", RecordKind::Supervision),
        ("notice.json", RecordKind::Notice),
        ("claim.json", RecordKind::Claim),
        ("feedback.json", RecordKind::Feedback),
        ("alert.json", RecordKind::Alert),
        ("dlq.json", RecordKind::Dlq),
    ] {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(examples.join(file)).unwrap()).unwrap();
        assert_eq!(schemas.validate(kind, &v), vec![], "{file}");
    }
    let envelope: serde_json::Value =
        serde_json::from_slice(&std::fs::read(examples.join("cloudevent.json")).unwrap()).unwrap();
    assert_eq!(schemas.validate_envelope(&envelope), vec![]);

    let invalid = |file: &str, kind| {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(examples.join("invalid").join(file)).unwrap())
                .unwrap();
        let problems = schemas.validate(kind, &v);
        assert!(!problems.is_empty(), "{file} should be invalid");
        problems
    };
    let p = invalid("bad-uscc-check-digit.json", RecordKind::Approval);
    assert_eq!(p[0].path, "/counterpart/uscc");
    assert_eq!(
        p[0].reason,
        "统一社会信用代码 check digit is 'N', expected 'L'"
    );
    let p = invalid("bad-id-check-digit.json", RecordKind::Approval);
    assert!(
        p.iter()
            .any(|v| v.path == "/counterpart/id_number" && v.reason.contains("check digit")),
        "{p:?}"
    );
    assert!(
        p.iter().all(|v| !v.reason.contains("36042619910102009X")),
        "ID number must be masked: {p:?}"
    );
    let p = invalid("natural-person-without-id.json", RecordKind::Approval);
    assert!(p.iter().any(|v| v.reason.contains("id_number")), "{p:?}");
    let p = invalid("penalty-missing.json", RecordKind::Supervision);
    assert!(p.iter().any(|v| v.reason.contains("penalty")), "{p:?}");
    let p = invalid("revoke-without-evidence.json", RecordKind::Supervision);
    assert!(p.iter().any(|v| v.reason.contains("evidence")), "{p:?}");
    let p = invalid("unknown-field.json", RecordKind::Approval);
    assert!(p.iter().any(|v| v.reason.contains("email")), "{p:?}");
}

#[test]
fn shipped_adapters_pass_their_golden_fixtures() {
    let out = shenguan(&["adapters", "test"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(" 0 failed"), "{text}");
    let out = shenguan(&["adapters", "lint"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn lint_reports_every_error_of_a_broken_adapter_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(
        &file,
        r#"adapter: Broken_Name
system: 测试系统
kind: approval
key: ["$.ID"]
tables:
  known: { values: { "1": 普通 } }
fields:
  - to: case_no
    from: $.ID
  - to: counterpart.nmae
    from: $.NAME
  - to: license.category
    from: $.LB
    table: missing_table
  - to: license.decision_date
    from: $.DATE
  - to: commitment.is_commitment
    from: $.PROMISE
    convert: date
  - to: item.name
    from: "$.[broken"
  - to: license.status
    value: 正常
"#,
    )
    .unwrap();
    let path = file.display().to_string();
    let out = shenguan(&["adapters", "lint", &path]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let expect = [
        format!("{path}:1: adapter: adapter name must be"),
        format!("{path}:10: counterpart.nmae: the approval.v1 schema has no field 'counterpart.nmae'"),
        format!("{path}:12: license.category: unknown code table 'missing_table'"),
        format!("{path}:15: license.decision_date: type mismatch: the schema wants a date; add `convert: date`"),
        format!("{path}:17: commitment.is_commitment: type mismatch: `convert: date` produces a string, the schema wants boolean"),
        format!("{path}:20: item.name: invalid JSONPath '$.[broken'"),
        format!("{path}:22: license.status: value \"正常\" is not one the schema allows"),
        format!("{path}:7: counterpart.name: the approval.v1 schema requires 'counterpart.name' but no field maps it"),
        format!("{path}:7: counterpart.category: the approval.v1 schema requires 'counterpart.category' but no field maps it"),
        format!("{path}:7: license.document_no: the approval.v1 schema requires 'license.document_no' but no field maps it"),
        format!("{path}:7: license.valid_to: the approval.v1 schema requires 'license.valid_to' but no field maps it"),
        format!("{path}:7: decided_at: the approval.v1 schema requires 'decided_at' but no field maps it"),
    ];
    for e in &expect {
        assert!(text.contains(e.as_str()), "missing «{e}» in:\n{text}");
    }
    assert!(
        text.contains("1 adapter file(s) checked, 16 error(s)"),
        "{text}"
    );

    // A YAML typo is reported with its line too.
    std::fs::write(
        &file,
        "adapter: x\nsystem: y\nkind: approval\nkey: [\"$.A\"]\nfeilds: []\n",
    )
    .unwrap();
    let out = shenguan(&["adapters", "lint", &path]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{path}:5")) && text.contains("feilds"),
        "{text}"
    );
}

#[test]
fn start_up_refuses_an_invalid_schema_or_adapter_and_lists_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let schemas = dir.path().join("schemas");
    std::fs::create_dir_all(&schemas).unwrap();
    for e in std::fs::read_dir(repo().join("schemas")).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), schemas.join(e.file_name())).unwrap();
        }
    }
    std::fs::write(
        schemas.join("notice.v1.schema.json"),
        r#"{"$id": "urn:shenguan:schema:notice.v1", "type": "objekt"}"#,
    )
    .unwrap();
    std::fs::write(schemas.join("claim.v1.schema.json"), "{ not json").unwrap();
    let config = dir.path().join("shenguan.toml");
    std::fs::write(&config, format!("schemas_dir = {schemas:?}\n")).unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "run",
            "--config",
            &config.display().to_string(),
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--listen",
            "127.0.0.1:0",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 schema error(s)"), "{err}");
    assert!(
        err.contains("notice.v1.schema.json") && err.contains("claim.v1.schema.json"),
        "{err}"
    );

    let adapters = dir.path().join("adapters/site");
    std::fs::create_dir_all(&adapters).unwrap();
    std::fs::write(adapters.join("a.yaml"), "adapter: a\nsystem: s\nkind: approval\nkey: [\"$.A\"]\nfields:\n  - to: nope\n    from: $.A\n").unwrap();
    std::fs::write(
        &config,
        format!("adapters_dir = {:?}\n", dir.path().join("adapters")),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "run",
            "--config",
            &config.display().to_string(),
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--listen",
            "127.0.0.1:0",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("adapter error(s)") && err.contains("a.yaml:6: nope"),
        "{err}"
    );
}

#[test]
fn adapters_new_writes_a_skeleton_that_lints_clean() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shenguan.toml");
    let adapters = dir.path().join("adapters");
    std::fs::write(&config, format!("adapters_dir = {adapters:?}\n")).unwrap();
    let c = config.display().to_string();
    let out = shenguan(&[
        "adapters",
        "new",
        "site-penalty",
        "--system",
        "site-sys",
        "--kind",
        "supervision",
        "--format",
        "csv",
        "--config",
        &c,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = adapters.join("site-sys/site-penalty.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    for required in [
        "to: action",
        "to: counterpart.name",
        "to: document_no",
        "to: decision_date",
        "convert: date",
        "to: authority",
    ] {
        assert!(text.contains(required), "{required} missing:\n{text}");
    }
    assert!(adapters.join("site-sys/fixtures/site-penalty").is_dir());
    let out = shenguan(&["adapters", "lint", "--config", &c]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // No fixtures yet: the test run says so and fails.
    let out = shenguan(&["adapters", "test", "--config", &c]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no fixtures"));
    // It refuses to overwrite.
    let out = shenguan(&[
        "adapters",
        "new",
        "site-penalty",
        "--system",
        "site-sys",
        "--config",
        &c,
    ]);
    assert!(!out.status.success());
}
