//! The monthly report's chart, drawn on the server as inline SVG (no script): per department,
//! the on-time claim rate as a bar from 0 to 100 % and the overdue count as a bar scaled to the
//! largest one. Pure: report lines in, geometry out; the template only prints it.

use crate::ledger::report::ClaimLine;

/// Width of the whole chart, in SVG units.
pub const WIDTH: u32 = 760;
/// Height of one department's row.
pub const ROW: u32 = 34;
/// Where the bars start (the department names are left of it).
pub const LABELS: u32 = 230;
/// Length of a full (100 %) on-time bar.
pub const RATE_BAR: u32 = 300;
/// Where the overdue bars start, and their longest length.
pub const OVERDUE_AT: u32 = LABELS + RATE_BAR + 40;
pub const OVERDUE_BAR: u32 = WIDTH - OVERDUE_AT - 50;
/// Room above the rows for the column headings.
pub const TOP: u32 = 28;

/// One department's totals over the month and its bars.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub department: String,
    pub name: String,
    pub pushed: u64,
    pub claimed_on_time: u64,
    pub overdue: u64,
    /// Claimed on time out of what was due (its deadline passed, or it was claimed), in percent.
    pub rate: Option<u32>,
    pub y: u32,
    pub text_y: u32,
    pub rate_width: u32,
    pub overdue_x: u32,
    pub overdue_width: u32,
    pub rate_text_x: u32,
    pub overdue_text_x: u32,
}

/// The chart's rows and its height.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub bars: Vec<Bar>,
    pub height: u32,
    pub width: u32,
    pub rate_x: u32,
    pub rate_end: u32,
    pub rate_mid: u32,
    pub overdue_x: u32,
    pub heading_y: u32,
}

/// Totals per department over every kind and flow of the report, in catalog order where the
/// name function knows the department.
pub fn chart(lines: &[ClaimLine], name: impl Fn(&str) -> String) -> Chart {
    let mut totals: Vec<(String, u64, u64, u64, u64)> = Vec::new();
    // Flows without a deadline count nothing here: no rate, nothing overdue.
    for l in lines.iter().filter(|l| l.due.is_some()) {
        let counted = l.due.unwrap_or(0);
        let on_time = l.claimed_on_time.unwrap_or(0);
        let overdue = l.claimed_late.unwrap_or(0) + l.open_overdue.unwrap_or(0);
        match totals.iter_mut().find(|t| t.0 == l.department) {
            Some(t) => {
                t.1 += l.pushed;
                t.2 += on_time;
                t.3 += overdue;
                t.4 += counted;
            }
            None => totals.push((l.department.clone(), l.pushed, on_time, overdue, counted)),
        }
    }
    totals.sort_by(|a, b| a.0.cmp(&b.0));
    let max_overdue = totals.iter().map(|t| t.3).max().unwrap_or(0).max(1);
    let bars = totals
        .into_iter()
        .enumerate()
        .map(|(i, (department, pushed, on_time, overdue, counted))| {
            let rate = (counted > 0)
                .then(|| ((on_time.min(counted) * 100 + counted / 2) / counted) as u32);
            let y = TOP + i as u32 * ROW;
            let rate_width = rate.map_or(0, |r| RATE_BAR * r / 100);
            let overdue_width = (OVERDUE_BAR as u64 * overdue / max_overdue) as u32;
            Bar {
                name: name(&department),
                department,
                pushed,
                claimed_on_time: on_time,
                overdue,
                rate,
                y: y + 6,
                text_y: y + 22,
                rate_width,
                overdue_x: OVERDUE_AT,
                overdue_width,
                rate_text_x: LABELS + rate_width + 6,
                overdue_text_x: OVERDUE_AT + overdue_width + 6,
            }
        })
        .collect::<Vec<_>>();
    Chart {
        height: TOP + bars.len().max(1) as u32 * ROW + 8,
        bars,
        width: WIDTH,
        rate_x: LABELS,
        rate_end: LABELS + RATE_BAR,
        rate_mid: LABELS + RATE_BAR / 2,
        overdue_x: OVERDUE_AT,
        heading_y: 18,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A claim line: `pushed` records, all due, `on_time` claimed in time, `overdue` late.
    fn line(department: &str, pushed: u64, on_time: u64, overdue: u64) -> ClaimLine {
        ClaimLine {
            department: department.into(),
            department_name: None,
            kind: "approval".into(),
            flow: "claim".into(),
            pushed,
            claimed: on_time + overdue,
            claimed_on_time: Some(on_time),
            claimed_late: Some(overdue),
            open: 0,
            open_overdue: Some(0),
            returned: 0,
            forwarded: 0,
            offline: 0,
            updates: 0,
            due: Some(on_time + overdue),
            on_time_rate: None,
            median_claim_hours: None,
            p90_claim_hours: None,
            replied: 0,
            deemed_agreed: 0,
            attending: 0,
            signed_off: 0,
            verified: 0,
            unfulfilled: 0,
            follow_up_overdue: 0,
        }
    }

    #[test]
    fn each_department_gets_its_rate_and_overdue_bars() {
        let lines = vec![line("b", 4, 3, 1), line("a", 2, 2, 0), line("b", 4, 1, 3)];
        let c = chart(&lines, |d| format!("部门{d}"));
        assert_eq!(c.bars.len(), 2);
        assert_eq!(c.bars[0].name, "部门a");
        assert_eq!(c.bars[0].rate, Some(100));
        assert_eq!(c.bars[0].rate_width, RATE_BAR);
        assert_eq!(c.bars[1].rate, Some(50));
        assert_eq!(c.bars[1].overdue, 4);
        assert_eq!(c.bars[1].overdue_width, OVERDUE_BAR);
        assert_eq!(c.bars[0].overdue_width, 0);
        assert_eq!(c.height, TOP + 2 * ROW + 8);
    }

    #[test]
    fn an_empty_month_draws_an_empty_chart() {
        let c = chart(&[], |d| d.to_string());
        assert!(c.bars.is_empty());
        assert_eq!(c.height, TOP + ROW + 8);
    }
}
