//! `shenguan calendar add`: working-day arithmetic on the command line.

use crate::app::*;
use crate::config::Settings;

/// `shenguan calendar add DATE N`: the date of the Nth working day after DATE.
pub fn calendar_add(settings: &Settings, date: &str, n: u32) -> anyhow::Result<String> {
    let calendar = load_calendar(settings)?;
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map_err(|_| anyhow::anyhow!("'{date}' is not a date (YYYY-MM-DD)"))?;
    let result = calendar.add_working_days(day, n)?;
    Ok(result.format("%Y-%m-%d").to_string())
}
