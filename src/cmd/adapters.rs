//! `shenguan adapters new|lint|test`: writing and checking adapters.

use std::path::PathBuf;

use crate::adapter::{self, AdapterSet};
use crate::config::Settings;
use crate::golden;
use crate::schema::Schemas;

/// `shenguan adapters lint [PATH…]`: every error of every adapter; `Ok(false)` when any.
pub fn adapters_lint(settings: &Settings, paths: &[PathBuf]) -> anyhow::Result<bool> {
    let schemas =
        Schemas::load(Some(&settings.schemas_dir)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut errors = Vec::new();
    let files = if paths.is_empty() {
        adapter::adapter_files(&settings.adapters_dir, &mut errors)
    } else {
        expand(paths, &mut errors)
    };
    let mut checked = 0;
    for file in &files {
        checked += 1;
        if let Err(mut e) = adapter::compile_file(file, &schemas) {
            errors.append(&mut e);
        }
    }
    if paths.is_empty() {
        if let Err(set_errors) = AdapterSet::load(&settings.adapters_dir, &schemas) {
            for e in set_errors {
                if !errors.contains(&e) {
                    errors.push(e);
                }
            }
        }
    }
    for e in &errors {
        println!("{e}");
    }
    println!(
        "{checked} adapter file(s) checked, {} error(s)",
        errors.len()
    );
    Ok(errors.is_empty())
}

fn expand(paths: &[PathBuf], errors: &mut Vec<adapter::LintError>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut direct: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|f| {
                            f.is_file() && f.extension().is_some_and(|x| x == "yaml" || x == "yml")
                        })
                        .collect()
                })
                .unwrap_or_default();
            if direct.is_empty() {
                direct = adapter::adapter_files(p, errors);
            }
            direct.sort();
            files.extend(direct);
        } else {
            files.push(p.clone());
        }
    }
    files
}

/// `shenguan adapters test [PATH…] [--update]`: `Ok(false)` when any fixture differs.
pub fn adapters_test(settings: &Settings, paths: &[PathBuf], update: bool) -> anyhow::Result<bool> {
    let schemas =
        Schemas::load(Some(&settings.schemas_dir)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut errors = Vec::new();
    let files = if paths.is_empty() {
        adapter::adapter_files(&settings.adapters_dir, &mut errors)
    } else {
        expand(paths, &mut errors)
    };
    let (mut passed, mut failed) = (0, 0);
    for e in &errors {
        println!("{e}");
        failed += 1;
    }
    for file in files {
        let adapter = match adapter::compile_file(&file, &schemas) {
            Ok(a) => a,
            Err(errs) => {
                for e in errs {
                    println!("{e}");
                }
                failed += 1;
                continue;
            }
        };
        let results = golden::test_adapter(&adapter, &schemas, update);
        if results.is_empty() {
            println!(
                "FAIL {}: no fixtures in {}",
                adapter.name,
                golden::fixture_dir(&adapter).display()
            );
            failed += 1;
        }
        for r in results {
            if r.differences.is_empty() {
                passed += 1;
                println!("ok   {} {}", adapter.name, r.input.display());
            } else {
                failed += 1;
                println!("FAIL {} {}", adapter.name, r.input.display());
                for d in r.differences {
                    println!("       {d}");
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// `shenguan adapters new`: a skeleton that lints clean, with every field the schema requires.
pub fn adapters_new(
    settings: &Settings,
    name: &str,
    system: &str,
    kind: &str,
    format: &str,
) -> anyhow::Result<PathBuf> {
    use crate::schema::RecordKind;
    let schemas =
        Schemas::load(Some(&settings.schemas_dir)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let kind: RecordKind = kind.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    anyhow::ensure!(
        kind.is_source_kind(),
        "kind must be approval, supervision or notice"
    );
    anyhow::ensure!(
        ["json", "xml", "csv", "xlsx"].contains(&format),
        "format must be json, xml, csv or xlsx"
    );
    anyhow::ensure!(
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "adapter name must be a-z, 0-9 and '-'"
    );
    let dir = settings.adapters_dir.join(system);
    let file = dir.join(format!("{name}.yaml"));
    anyhow::ensure!(!file.exists(), "{} exists already", file.display());
    let mut fields = String::new();
    let mut targets = Vec::new();
    for top in schemas.required(kind, "") {
        if ["record_id", "kind", "source"].contains(&top.as_str()) {
            continue;
        }
        let children = schemas.required(kind, &top);
        if children.is_empty() {
            targets.push(top);
        } else {
            targets.extend(children.into_iter().map(|c| format!("{top}.{c}")));
        }
    }
    for t in &targets {
        let info = schemas.field(kind, t);
        let convert = match info.as_ref().and_then(|i| i.format.as_deref()) {
            Some("date") => "\n    convert: date",
            Some("date-time") => "\n    convert: datetime",
            _ => "",
        };
        let hint = info
            .as_ref()
            .and_then(|i| i.enum_values.as_ref())
            .map(|v| {
                format!(
                    "    # one of: {}\n",
                    v.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .unwrap_or_default();
        let column = t.replace('.', "_").to_ascii_uppercase();
        fields.push_str(&format!("  - to: {t}\n    from: $.{column}                 # SITE: the source field\n    required: true{convert}\n{hint}"));
    }
    let records = if matches!(format, "json" | "xml") {
        "# records: $.data[*]               # where the records are inside one payload\n"
    } else {
        ""
    };
    let text = format!(
        "# {system} — {name}: <what this system sends> → canonical {versioned}\n\
         #\n\
         # Modelled on <the national exchange table it follows>. Lines a site changes are marked  # SITE:\n\
         \n\
         adapter: {name}\n\
         system: {system}                       # SITE: the system's name\n\
         kind: {kind}\n\
         format: {format}\n\
         {records}\
         key: [\"$.{first}\"]                   # SITE: the field(s) that identify a record in its system\n\
         \n\
         fields:\n{fields}",
        versioned = kind.versioned(),
        kind = kind.as_str(),
        first = targets.first().map(|t| t.replace('.', "_").to_ascii_uppercase()).unwrap_or_else(|| "ID".into()),
    );
    std::fs::create_dir_all(dir.join("fixtures").join(name))?;
    std::fs::write(&file, text)?;
    adapter::compile_file(&file, &schemas).map_err(|errors| {
        anyhow::anyhow!(
            "the skeleton does not lint: {}",
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    Ok(file)
}
