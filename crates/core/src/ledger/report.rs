//! The monthly report (每月通报): per department, kind and flow, how many records were pushed in
//! the month, how many were claimed and how many on time, how many missed the deadline, how many
//! are still open, the on-time rate, and the median and 90th-percentile claim time in working
//! hours; next to the claims, the other flows with their outcomes — inquiries (replied, deemed
//! agreed), joint inspections (confirmed, signed off), 告知承诺 verifications (verified,
//! unfulfilled) — and the records forwarded or pushed offline. For an inquiry "claimed" means
//! answered, for an inspection "confirmed". Pure: a function of the month's entries, the calendar
//! and the report time.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone};
use serde::Serialize;

use super::{flow_of, Entry, EntryState};
use crate::adapter::convert::shanghai;
use crate::deadline::Calendar;

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    pub department: String,
    pub kind: String,
    /// `claim`, `inquiry`, `inspection` or `commitment` (see [`super::flow_of`]).
    pub flow: String,
    /// Records pushed to the department in the month.
    pub pushed: u64,
    /// Of those, claimed (by the report time).
    pub claimed: u64,
    /// Claimed no later than the claim deadline.
    pub claimed_on_time: u64,
    /// Missed the deadline: claimed late, or unclaimed past it.
    pub overdue: u64,
    /// Not claimed yet (pushed or delivered).
    pub still_open: u64,
    /// Returned as 非本部门.
    pub returned: u64,
    /// claimed_on_time / (pushed − returned), 0..1; null when nothing counts.
    pub on_time_rate: Option<f64>,
    /// Median working hours from push to claim.
    pub median_claim_hours: Option<f64>,
    /// 90th percentile (nearest rank) working hours from push to claim.
    pub p90_claim_hours: Option<f64>,
    /// Forwarded (转交) to another department, which has its own line.
    pub forwarded: u64,
    /// Pushed outside the platform (书面公函, 案卷移送, 协调会议) and entered afterwards.
    pub offline: u64,
    /// Inquiries answered by a reply.
    pub replied: u64,
    /// Inquiries left unanswered past the deadline under a profile that deems that agreement.
    pub deemed_agreed: u64,
    /// Joint inspections whose result the department signed off.
    pub signed_off: u64,
    /// 告知承诺 commitments verified (fulfilled or not).
    pub verified: u64,
    /// Of those, found unfulfilled.
    pub unfulfilled: u64,
    /// The follow-up (disposition, sign-off, verification) done late or still open past its
    /// deadline.
    pub follow_up_overdue: u64,
}

/// The report of one month.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub month: String,
    pub generated_at: String,
    pub calendar_version: String,
    pub lines: Vec<Line>,
}

/// `YYYY-MM` → the first instants of the month and of the next, Asia/Shanghai.
pub fn month_bounds(month: &str) -> Result<(DateTime<FixedOffset>, DateTime<FixedOffset>), String> {
    let first = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d")
        .map_err(|_| format!("month '{month}' is not YYYY-MM"))?;
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .ok_or("month out of range")?;
    let tz = shanghai();
    let at = |d: NaiveDate| {
        tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
            .single()
            .expect("fixed offset")
    };
    Ok((at(first), at(next)))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// Builds the report from the entries pushed in the month.
pub fn monthly(
    month: &str,
    entries: &[Entry],
    calendar: &Calendar,
    now: DateTime<FixedOffset>,
) -> Report {
    let mut m = Monthly::new(month, Arc::new(calendar.clone()), now);
    for e in entries {
        m.add(e);
    }
    m.finish()
}

/// What one line has gathered so far.
#[derive(Default)]
struct Acc {
    line: Option<Line>,
    /// Working hours from push to claim, one per claimed entry.
    hours: Vec<f64>,
    /// Forwarded before claiming: the receiver's line counts the record.
    passed_on: u64,
}

/// The report built one entry at a time, so a month of millions of entries is read as a stream:
/// what it keeps is the counts per line and one number per claimed entry.
pub struct Monthly {
    month: String,
    calendar: Arc<Calendar>,
    now: DateTime<FixedOffset>,
    groups: BTreeMap<(String, String, &'static str), Acc>,
    /// Entries added.
    pub entries: u64,
}

impl Monthly {
    pub fn new(month: &str, calendar: Arc<Calendar>, now: DateTime<FixedOffset>) -> Monthly {
        Monthly {
            month: month.to_string(),
            calendar,
            now,
            groups: BTreeMap::new(),
            entries: 0,
        }
    }

    /// Counts one entry pushed in the month.
    pub fn add(&mut self, e: &Entry) {
        self.entries += 1;
        let flow = flow_of(e);
        let acc = self
            .groups
            .entry((e.department.clone(), e.kind.as_str().to_string(), flow))
            .or_default();
        let line = acc.line.get_or_insert_with(|| Line {
            department: e.department.clone(),
            kind: e.kind.as_str().to_string(),
            flow: flow.to_string(),
            pushed: 0,
            claimed: 0,
            claimed_on_time: 0,
            overdue: 0,
            still_open: 0,
            returned: 0,
            on_time_rate: None,
            median_claim_hours: None,
            p90_claim_hours: None,
            forwarded: 0,
            offline: 0,
            replied: 0,
            deemed_agreed: 0,
            signed_off: 0,
            verified: 0,
            unfulfilled: 0,
            follow_up_overdue: 0,
        });
        let now = self.now;
        line.pushed += 1;
        line.offline += u64::from(e.via.is_some());
        line.forwarded += u64::from(e.state == EntryState::Forwarded);
        match e.outcome.as_deref() {
            Some("replied") => line.replied += 1,
            Some("deemed_agreed") => line.deemed_agreed += 1,
            Some("signed_off") => line.signed_off += 1,
            Some("commitment_fulfilled") => line.verified += 1,
            Some("commitment_unfulfilled") => {
                line.verified += 1;
                line.unfulfilled += 1;
            }
            _ => {}
        }
        if let Some(due) = e.feedback_due_at.filter(|_| e.claimed_at.is_some()) {
            let done = matches!(e.state, EntryState::Closed)
                .then_some(e.closed_at)
                .flatten();
            // For an inquiry the reply is the follow-up as well as the answer; counted once.
            if flow != "inquiry" && done.map_or(now > due, |at| at > due) {
                line.follow_up_overdue += 1;
            }
        }
        match (e.claimed_at, e.claim_due_at) {
            (Some(claimed), due) => {
                line.claimed += 1;
                if due.is_none_or(|d| claimed <= d) {
                    line.claimed_on_time += 1;
                } else {
                    line.overdue += 1;
                }
                if let Ok(s) = self.calendar.working_seconds_between(e.pushed_at, claimed) {
                    acc.hours.push(s as f64 / 3600.0);
                }
            }
            (None, due) => match e.state {
                EntryState::Returned => line.returned += 1,
                EntryState::Forwarded => acc.passed_on += 1,
                // Closed unanswered: an inquiry deemed agreed after its deadline.
                EntryState::Closed => line.overdue += 1,
                _ => {
                    line.still_open += 1;
                    if due.is_some_and(|d| now > d) {
                        line.overdue += 1;
                    }
                }
            },
        }
    }

    /// The report: rates and claim-time percentiles per line.
    pub fn finish(self) -> Report {
        let lines = self
            .groups
            .into_values()
            .filter_map(|mut acc| {
                let mut line = acc.line.take()?;
                let counted = line.pushed - line.returned - acc.passed_on;
                line.on_time_rate = (counted > 0)
                    .then(|| round2(line.claimed_on_time as f64 / counted as f64 * 100.0) / 100.0);
                acc.hours.sort_by(f64::total_cmp);
                line.median_claim_hours = median(&acc.hours).map(round2);
                line.p90_claim_hours = percentile(&acc.hours, 0.9).map(round2);
                Some(line)
            })
            .collect();
        Report {
            month: self.month,
            generated_at: super::rfc3339(self.now),
            calendar_version: self.calendar.version().to_string(),
            lines,
        }
    }
}

/// Text that a spreadsheet would run as a formula gets a leading apostrophe.
pub fn excel_safe(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

fn opt(x: Option<f64>) -> String {
    x.map(|v| v.to_string()).unwrap_or_default()
}

/// CSV with a header, Excel-safe, UTF-8 with BOM so Excel opens Chinese text correctly.
pub fn to_csv(report: &Report) -> String {
    let mut w = csv_writer();
    w.push_str("\u{FEFF}month,department,kind,flow,pushed,claimed,claimed_on_time,overdue,still_open,returned,on_time_rate,median_claim_hours,p90_claim_hours,forwarded,offline,replied,deemed_agreed,signed_off,verified,unfulfilled,follow_up_overdue\r\n");
    for l in &report.lines {
        let cells = [
            report.month.clone(),
            l.department.clone(),
            l.kind.clone(),
            l.flow.clone(),
            l.pushed.to_string(),
            l.claimed.to_string(),
            l.claimed_on_time.to_string(),
            l.overdue.to_string(),
            l.still_open.to_string(),
            l.returned.to_string(),
            opt(l.on_time_rate),
            opt(l.median_claim_hours),
            opt(l.p90_claim_hours),
            l.forwarded.to_string(),
            l.offline.to_string(),
            l.replied.to_string(),
            l.deemed_agreed.to_string(),
            l.signed_off.to_string(),
            l.verified.to_string(),
            l.unfulfilled.to_string(),
            l.follow_up_overdue.to_string(),
        ];
        let row: Vec<String> = cells.iter().map(|c| csv_cell(&excel_safe(c))).collect();
        w.push_str(&row.join(","));
        w.push_str("\r\n");
    }
    w
}

fn csv_writer() -> String {
    String::new()
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The flow-specific counts of a line that are not zero, e.g. `replied 2, deemed_agreed 1`.
fn other(l: &Line) -> String {
    let parts: Vec<String> = [
        ("forwarded", l.forwarded),
        ("offline", l.offline),
        ("replied", l.replied),
        ("deemed_agreed", l.deemed_agreed),
        ("signed_off", l.signed_off),
        ("verified", l.verified),
        ("unfulfilled", l.unfulfilled),
        ("follow_up_overdue", l.follow_up_overdue),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{k} {n}"))
    .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// A fixed-width table for the terminal.
pub fn to_table(report: &Report) -> String {
    let mut out = format!(
        "每月通报 {} (calendar {})\n",
        report.month, report.calendar_version
    );
    out.push_str(&format!(
        "{:<20} {:<12} {:<11} {:>7} {:>8} {:>8} {:>8} {:>6} {:>9} {:>8} {:>10} {:>9}  {}\n",
        "DEPARTMENT",
        "KIND",
        "FLOW",
        "PUSHED",
        "CLAIMED",
        "ON_TIME",
        "OVERDUE",
        "OPEN",
        "RETURNED",
        "RATE",
        "MEDIAN_H",
        "P90_H",
        "OTHER"
    ));
    for l in &report.lines {
        out.push_str(&format!(
            "{:<20} {:<12} {:<11} {:>7} {:>8} {:>8} {:>8} {:>6} {:>9} {:>8} {:>10} {:>9}  {}\n",
            l.department,
            l.kind,
            l.flow,
            l.pushed,
            l.claimed,
            l.claimed_on_time,
            l.overdue,
            l.still_open,
            l.returned,
            l.on_time_rate
                .map(|r| format!("{:.0}%", r * 100.0))
                .unwrap_or_else(|| "-".into()),
            l.median_claim_hours
                .map(|h| format!("{h:.2}"))
                .unwrap_or_else(|| "-".into()),
            l.p90_claim_hours
                .map(|h| format!("{h:.2}"))
                .unwrap_or_else(|| "-".into()),
            other(l),
        ));
    }
    if report.lines.is_empty() {
        out.push_str("(nothing was pushed in this month)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_characters_are_escaped() {
        assert_eq!(excel_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(excel_safe("+1"), "'+1");
        assert_eq!(excel_safe("-1"), "'-1");
        assert_eq!(excel_safe("@SUM"), "'@SUM");
        assert_eq!(excel_safe("市场监管局"), "市场监管局");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&v, 0.9), Some(9.0));
        assert_eq!(median(&v), Some(5.5));
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(percentile(&[], 0.9), None);
    }

    #[test]
    fn month_bounds_are_shanghai_midnights() {
        let (a, b) = month_bounds("2026-02").unwrap();
        assert_eq!(a.to_rfc3339(), "2026-02-01T00:00:00+08:00");
        assert_eq!(b.to_rfc3339(), "2026-03-01T00:00:00+08:00");
        assert!(month_bounds("2026-13").is_err());
    }
}
