//! `shenguan export sgs`: the 双公示 files for the credit platform — the approval (行政许可) and
//! penalty (行政处罚) decisions that passed through the gateway in a month, for one department or
//! all, as CSV or .xlsx in the columns the `nx-credit` adapters read (石嘴山 一（五）, 济宁
//! 第二十四条（二）: outcomes go into the credit record). The columns and the files are the
//! core's (`sgs`); this module reads the ledger.

use crate::config::Settings;
use crate::ledger::store::LedgerStore;
use crate::schema::RecordKind;
use crate::sgs::{self, SgsKind};

/// A 双公示 file: its bytes, media type and a file name.
pub struct SgsFile {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub file_name: String,
    /// How many records it holds.
    pub records: usize,
}

/// The 双公示 file of `kind` for `month` (decisions dated in it), in `format` (`csv` or `xlsx`),
/// for `department` (approvals routed to it, penalties it pushed) or everyone.
pub async fn sgs_file(
    ledger: &dyn LedgerStore,
    month: &str,
    kind: SgsKind,
    format: &str,
    department: Option<&str>,
) -> anyhow::Result<SgsFile> {
    let (from, to) = crate::ledger::report::month_bounds(month).map_err(anyhow::Error::msg)?;
    let record_kind = match kind {
        SgsKind::Xk => RecordKind::Approval,
        SgsKind::Cf => RecordKind::Supervision,
    };
    let records: Vec<serde_json::Value> = ledger
        .decided_between(record_kind, from, to, department)
        .await?
        .into_iter()
        .filter(|r| kind.includes(r.kind.as_str(), &r.data))
        .map(|r| r.data)
        .collect();
    let rows = sgs::table(kind, &records);
    let stem = format!(
        "sgs-{}-{month}{}",
        kind.as_str(),
        department.map(|d| format!("-{d}")).unwrap_or_default()
    );
    Ok(match format {
        "csv" => SgsFile {
            bytes: sgs::to_csv(kind, &rows).into_bytes(),
            content_type: "text/csv; charset=utf-8",
            file_name: format!("{stem}.csv"),
            records: rows.len(),
        },
        "xlsx" => SgsFile {
            bytes: sgs::to_xlsx(kind, &rows).map_err(anyhow::Error::msg)?,
            content_type: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            file_name: format!("{stem}.xlsx"),
            records: rows.len(),
        },
        other => anyhow::bail!("format '{other}' is not csv or xlsx"),
    })
}

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
