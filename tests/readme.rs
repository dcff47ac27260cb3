//! The README's walk-throughs run as written. Every ```sh block after a `<!-- readme-test -->`
//! line (the first run and the other flows) is run with bash, in order, against a fresh gateway
//! this test starts: the address `127.0.0.1:8080` becomes the test's, `./target/release/shenguan`
//! (and `cargo run --release --`) the binary under test, the data directory the gateway's
//! (`SHENGUAN_DATA_DIR`), and `curl -s` fails on an HTTP error (`--fail-with-body`). Variables a
//! block sets are there for the blocks after it, as in one terminal; an unset one is an error
//! (`set -u`). A failing block fails the test with its text and its output.

mod common;

use std::process::Command;

use common::*;

const MARKER: &str = "<!-- readme-test -->";

/// A runnable block: where it is and what it says.
struct Block {
    line: usize,
    section: String,
    code: String,
}

fn runnable_blocks(readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut section = String::new();
    let mut i = 0;
    while i < lines.len() {
        if let Some(h) = lines[i].strip_prefix("## ") {
            section = h.trim().to_string();
        }
        if lines[i].trim() == MARKER {
            let open = i + 1;
            assert!(
                lines.get(open).is_some_and(|l| l.trim() == "```sh"),
                "README.md:{}: {MARKER} must stand right before a ```sh block",
                i + 1
            );
            let end = (open + 1..lines.len())
                .find(|&j| lines[j].trim() == "```")
                .unwrap_or_else(|| panic!("README.md:{}: the block is not closed", open + 1));
            blocks.push(Block {
                line: open + 1,
                section: section.clone(),
                code: lines[open + 1..end].join("\n"),
            });
            i = end;
        }
        i += 1;
    }
    blocks
}

/// The block with the test's gateway and binary in place of the README's.
fn substitute(code: &str, addr: &str) -> String {
    let bin = BIN;
    let command_position = regex::Regex::new(r"(?m)(^|\$\(|[|;&]\s*)shenguan(\s)").expect("regex");
    let code = code
        .replace("127.0.0.1:8080", addr)
        .replace("./target/release/shenguan", bin)
        .replace("cargo run --release --", bin)
        .replace("curl -s ", "curl -s --fail-with-body ");
    command_position
        .replace_all(&code, |c: &regex::Captures| {
            format!("{}{bin}{}", &c[1], &c[2])
        })
        .into_owned()
}

/// The names of the shell variables the blocks assign, to carry from one block to the next.
fn assigned_variables(blocks: &[Block]) -> Vec<String> {
    let re = regex::Regex::new(r"(?m)^\s*([A-Za-z_][A-Za-z0-9_]*)=").expect("regex");
    let mut names: Vec<String> = blocks
        .iter()
        .flat_map(|b| re.captures_iter(&b.code).map(|c| c[1].to_string()))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_walk_throughs_run_as_written() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let blocks = runnable_blocks(&readme);
    let in_section = |s: &str| blocks.iter().filter(|b| b.section == s).count();
    assert!(
        in_section("A first run") >= 7,
        "the first run has fewer runnable blocks than it should: {MARKER} markers lost?"
    );
    // (The 告知承诺 walk-through of that section runs in tests/rules.rs, from a fresh gateway.)
    assert!(
        in_section("The other flows") >= 6,
        "the other flows have fewer runnable blocks than they should: {MARKER} markers lost?"
    );

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let gw = Gateway::start(&data, &[]).await;
    let vars = dir.path().join("vars.sh");
    std::fs::write(&vars, "").unwrap();
    let names = assigned_variables(&blocks).join(" ");
    let addr = gw.addr.to_string();
    let mut ran = 0;
    for block in &blocks {
        let code = substitute(&block.code, &addr);
        let script = format!(
            "set -euo pipefail\nsource {vars:?}\n{code}\n\
             for v in {names}; do if [ -n \"${{!v+x}}\" ]; then declare -p \"$v\"; fi; done > {vars:?}\n"
        );
        let out = Command::new("bash")
            .args(["-c", &script])
            .current_dir(repo())
            .env("SHENGUAN_DATA_DIR", &data)
            .env_remove("RUST_LOG")
            .output()
            .expect("run bash");
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "README.md:{} ({}) failed with {}:\n{}\n--- output ---\n{output}\n--- gateway log ---\n{}",
            block.line,
            block.section,
            out.status,
            block.code,
            gw.logs()
        );
        ran += 1;
    }
    assert_eq!(ran, blocks.len());

    // What the walk-throughs did is in the ledger: the first run's record was claimed, then
    // forwarded up; the commitment failure has the bureau's disposition.
    let admin = gw.token("admin", "");
    let record: serde_json::Value = gw
        .client
        .get(gw.url("/v1/records/d69aa059-648d-5e96-a555-204f5ba0bd26"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let states: Vec<(&str, &str)> = record["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["department"].as_str().unwrap(),
                e["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(states.contains(&("szs-scjg", "forwarded")), "{states:?}");
    assert!(states.iter().any(|(d, _)| *d == "nx-scjg"), "{states:?}");
}

#[test]
fn the_substitution_reaches_every_command_form() {
    let code = "TOKEN=$(./target/release/shenguan token issue --role admin)\n\
                shenguan liaison list\ncurl -s http://127.0.0.1:8080/healthz | shenguan x\n\
                echo shenguan.toml";
    let out = substitute(code, "127.0.0.1:9");
    assert_eq!(
        out,
        format!(
            "TOKEN=$({BIN} token issue --role admin)\n{BIN} liaison list\n\
             curl -s --fail-with-body http://127.0.0.1:9/healthz | {BIN} x\necho shenguan.toml"
        )
    );
}
