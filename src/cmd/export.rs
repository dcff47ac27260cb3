//! `shenguan export sgs`: the 双公示 files for the credit platform — the approval (行政许可) and
//! penalty (行政处罚) decisions that passed through the gateway in a month, for one department or
//! all, as CSV or .xlsx in the columns the `nx-credit` adapters read (石嘴山 一（五）, 济宁
//! 第二十四条（二）: outcomes go into the credit record). The columns and the files are the
//! core's (`sgs`); this module reads the ledger.

use crate::config::Settings;
use crate::sgs::SgsKind;

pub use crate::ledger::export::{sgs_file, SgsFile};

/// `shenguan export sgs --month YYYY-MM --kind xk|cf [--format csv|xlsx] [--department CODE]`.
pub async fn export_sgs(
    settings: &Settings,
    month: &str,
    kind: &str,
    format: &str,
    department: Option<&str>,
) -> anyhow::Result<SgsFile> {
    let kind = SgsKind::parse(kind).map_err(anyhow::Error::msg)?;
    if let Some(d) = department {
        let catalog = crate::route::Catalog::load(&settings.catalog_file).map_err(|errors| {
            let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
            anyhow::anyhow!(
                "{} routing catalog error(s):\n{}",
                errors.len(),
                list.join("\n")
            )
        })?;
        anyhow::ensure!(
            catalog.department(d).is_some(),
            "department '{d}' is not in the routing catalog"
        );
    }
    let ledger = crate::ledger::store::open(&settings.ledger_url()).await?;
    sgs_file(ledger.as_ref(), month, kind, format, department).await
}
