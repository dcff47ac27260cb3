//! The 双公示 files for the credit platform from what the ledger holds: the approval (行政许可)
//! and penalty (行政处罚) decisions of a month, in the columns the `nx-credit` adapters read
//! (the core's `sgs` writes them). `shenguan export sgs` and `GET /v1/exports/sgs` use it.

use super::store::LedgerStore;
use crate::schema::RecordKind;
use crate::sgs::{self, SgsKind};
use std::sync::Arc;

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
        .map(|r| Arc::unwrap_or_clone(r.data))
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
