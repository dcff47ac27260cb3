//! `shenguan report`: the monthly 通报 of push and claim performance (垣曲 第二十一条).

use crate::app::*;
use crate::config::Settings;
use crate::ledger::report;

/// `shenguan report --month YYYY-MM`: a table with Chinese headers, CSV, or JSON with stable
/// English keys.
pub async fn report(settings: &Settings, month: &str, format: &str) -> anyhow::Result<String> {
    let calendar = load_calendar(settings)?;
    let catalog = crate::route::Catalog::load(&settings.catalog_file).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow::anyhow!(
            "{} routing catalog error(s):\n{}",
            errors.len(),
            list.join("\n")
        )
    })?;
    let (from, to) = report::month_bounds(month).map_err(|e| anyhow::anyhow!(e))?;
    let ledger = crate::ledger::store::open(&settings.ledger_url()).await?;
    let builder = report::Monthly::new(
        month,
        calendar.version(),
        crate::adapter::convert::now_shanghai(),
        report::department_names(&catalog),
    );
    let r = ledger.report_month(from, to, builder).await?.finish();
    Ok(match format {
        "csv" => report::to_csv(&r),
        "json" => serde_json::to_string_pretty(&r)? + "\n",
        _ => report::to_table(&r),
    })
}
