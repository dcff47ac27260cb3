//! `shenguan report`: the monthly 通报 of push and claim performance.

use std::sync::Arc;

use crate::app::*;
use crate::config::Settings;

/// `shenguan report --month YYYY-MM`.
pub async fn report(settings: &Settings, month: &str, format: &str) -> anyhow::Result<String> {
    let calendar = load_calendar(settings)?;
    let (from, to) = crate::ledger::report::month_bounds(month).map_err(|e| anyhow::anyhow!(e))?;
    let ledger = crate::ledger::store::open(&settings.ledger_url()).await?;
    let builder = crate::ledger::report::Monthly::new(
        month,
        Arc::new(calendar),
        crate::adapter::convert::now_shanghai(),
    );
    let r = ledger.report_month(from, to, builder).await?.finish();
    Ok(match format {
        "csv" => crate::ledger::report::to_csv(&r),
        "json" => serde_json::to_string_pretty(&r)? + "\n",
        _ => crate::ledger::report::to_table(&r),
    })
}
