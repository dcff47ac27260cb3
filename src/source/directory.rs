//! Directory drop: departments without an interface export files (CSV in GB18030, `.xlsx`, JSON,
//! XML) into a directory. A file is picked up only when it is complete — its size and
//! modification time unchanged for `settle_seconds`, and not named `*.tmp`, `*.part` or starting
//! with `.` — then moved to `done/` (with `<file>.report.json`: accepted, duplicates, rejected
//! rows with their reasons) or, when it cannot be read at all, to `failed/` (with the reason).
//! The format comes from the extension, the charset from `<name>.<charset>.<ext>` or the adapter.
//! A file is moved only after the bus acknowledged its records; after a crash it is read again
//! and its records are duplicates.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::json;

use super::{pause, SourceContext};
use crate::adapter::format::Format;
use crate::ingest::Payload;
use crate::pipeline::Unit;

fn d5() -> u64 {
    5
}
fn d2() -> u64 {
    2
}

/// `[[sources]] type = "directory"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    pub name: String,
    pub adapter: String,
    /// The drop directory; `done/` and `failed/` are created inside it.
    pub path: PathBuf,
    /// Seconds between scans. Default 5.
    #[serde(default = "d5")]
    pub interval_seconds: u64,
    /// Seconds a file must stay unchanged before it counts as complete. Default 2.
    #[serde(default = "d2")]
    pub settle_seconds: u64,
}

fn incomplete_name(name: &str) -> bool {
    name.starts_with('.')
        || [".tmp", ".part", ".partial", ".crdownload", ".filepart"]
            .iter()
            .any(|s| name.ends_with(s))
}

pub async fn run(
    config: DirectoryConfig,
    ctx: SourceContext,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    for sub in ["done", "failed"] {
        std::fs::create_dir_all(config.path.join(sub))
            .map_err(|e| format!("{}: {e}", config.path.join(sub).display()))?;
    }
    let mut seen: HashMap<PathBuf, (u64, SystemTime)> = HashMap::new();
    loop {
        match scan(&config, &mut seen) {
            Ok(ready) => {
                for file in ready {
                    if let Err(e) = handle(&config, &ctx, &file).await {
                        tracing::warn!(source = %config.name, file = %file.display(), error = %e, "file left for the next scan");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(source = %config.name, error = %e, "cannot scan the drop directory")
            }
        }
        if pause(Duration::from_secs(config.interval_seconds), &mut stop).await {
            return Ok(());
        }
    }
}

/// Files that are complete now.
fn scan(
    config: &DirectoryConfig,
    seen: &mut HashMap<PathBuf, (u64, SystemTime)>,
) -> Result<Vec<PathBuf>, String> {
    let mut ready = Vec::new();
    let mut present = HashMap::new();
    let entries =
        std::fs::read_dir(&config.path).map_err(|e| format!("{}: {e}", config.path.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() || incomplete_name(&name) {
            continue;
        }
        let stamp = (
            meta.len(),
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        );
        let settled = stamp
            .1
            .elapsed()
            .map(|age| age >= Duration::from_secs(config.settle_seconds))
            .unwrap_or(false);
        if seen.get(&path) == Some(&stamp) && settled {
            ready.push(path.clone());
        }
        present.insert(path, stamp);
    }
    *seen = present;
    ready.sort();
    Ok(ready)
}

async fn handle(config: &DirectoryConfig, ctx: &SourceContext, file: &Path) -> Result<(), String> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let body = std::fs::read(file).map_err(|e| e.to_string())?;
    let payload = Payload {
        body,
        format: Format::from_extension(&name),
        charset: Format::charset_from_name(&name),
        unit: Unit::Body,
    };
    let (target, report) = match ctx.ingest(&config.adapter, payload).await? {
        Ok(r) => (
            "done",
            json!({"file": name, "adapter": config.adapter, "accepted": r.accepted, "duplicates": r.duplicates, "rejected": r.rejected}),
        ),
        Err(reason) => (
            "failed",
            json!({"file": name, "adapter": config.adapter, "error": reason}),
        ),
    };
    let dir = config.path.join(target);
    let report_text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(format!("{name}.report.json")), report_text)
        .map_err(|e| e.to_string())?;
    std::fs::rename(file, dir.join(&name)).map_err(|e| e.to_string())?;
    tracing::info!(source = %config.name, file = %name, to = target, "file processed");
    Ok(())
}
