//! `shenguan report`: the monthly 通报 of push and claim performance.

use std::sync::Arc;

use crate::app::*;
use crate::config::Settings;

/// `shenguan report --month YYYY-MM`.
pub async fn report(settings: &Settings, month: &str, format: &str) -> anyhow::Result<String> {
    check_month(month).map_err(anyhow::Error::msg)?;
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
