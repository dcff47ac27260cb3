//! The data directory: one gateway process at a time, and commands that only read it refuse a
//! directory that holds no data instead of creating empty stores and answering "nothing".
//!
//! The lock is an advisory exclusive lock (`flock`) on `<data_dir>/shenguan.lock`, held for the
//! life of the process: the kernel releases it when the process ends, however it ends, so a
//! crashed gateway never leaves a stale lock behind. The file says which process holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use crate::config::Settings;

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "shenguan.lock";

/// Whether the gateway keeps anything in its data directory: the embedded bus, or the SQLite
/// ledger and state store.
pub fn in_use(settings: &Settings) -> bool {
    settings.bus.url == "embedded" || settings.ledger_url().starts_with("sqlite:")
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    pub path: PathBuf,
}

/// Takes the data directory for this process, or says which process holds it. `None` when the
/// gateway keeps nothing there (Kafka and PostgreSQL), where any number may run.
pub fn lock(settings: &Settings, what: &str) -> anyhow::Result<Option<DirLock>> {
    if !in_use(settings) {
        return Ok(None);
    }
    let dir = &settings.data_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create the data directory {}: {e}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            anyhow::bail!(
                "the data directory {} is in use by another shenguan process ({}); stop that one first, or give this one a directory of its own (--data-dir)",
                dir.display(),
                if holder.is_empty() { "pid unknown" } else { holder }
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("cannot lock {}: {e}", path.display())
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(
        file,
        "pid {} ({what}) since {}",
        std::process::id(),
        crate::ledger::rfc3339(crate::adapter::convert::now_shanghai())
    )?;
    file.flush()?;
    Ok(Some(DirLock { _file: file, path }))
}

/// Whether a directory holds a gateway's data: its embedded bus or its SQLite ledger.
pub fn has_data(dir: &Path) -> bool {
    dir.join("bus.db").exists() || dir.join("ledger.db").exists()
}

/// For commands that only read what a gateway wrote: an error naming the directory when it
/// holds no data (a mistyped `--data-dir` would otherwise get empty stores created and an
/// answer of "nothing").
pub fn require_data(settings: &Settings) -> anyhow::Result<()> {
    if in_use(settings) && !has_data(&settings.data_dir) {
        anyhow::bail!(
            "no shenguan data in {}: neither bus.db nor ledger.db is there. Give the directory the gateway runs with (--data-dir, SHENGUAN_DATA_DIR or data_dir in the configuration file)",
            settings.data_dir.display()
        );
    }
    Ok(())
}
