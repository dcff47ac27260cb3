//! `shenguan report`: the monthly 通报 of push and claim performance (垣曲 第二十一条).

use crate::app::*;
use crate::config::Settings;
use crate::ledger::report;

/// `shenguan report --month YYYY-MM`: a table with Chinese headers, CSV, or JSON with stable
/// English keys.
pub async fn report(settings: &Settings, month: &str, format: &str) -> anyhow::Result<String> {
    check_month(month).map_err(anyhow::Error::msg)?;
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

/// A month exactly as `YYYY-MM` (`2026-01`, not `2026-1`): a report names its month in one form,
/// so that two reports of one month are never filed under two names.
pub fn check_month(month: &str) -> Result<(), String> {
    let b = month.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let ok = b.len() == 7
        && b[4] == b'-'
        && digits(0..4)
        && digits(5..7)
        && (1..=12).contains(&month[5..7].parse::<u32>().unwrap_or(0));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--month '{month}': give the month as YYYY-MM, with two digits for the month (e.g. 2026-01)"
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn months_are_yyyy_mm() {
        for ok in ["2026-01", "2025-12"] {
            assert!(super::check_month(ok).is_ok(), "{ok}");
        }
        for bad in [
            "2026-1",
            "2026-13",
            "2026-00",
            "26-01",
            "2026/01",
            "2026-011",
            "２０２６-01",
        ] {
            assert!(super::check_month(bad).is_err(), "{bad}");
        }
    }
}
