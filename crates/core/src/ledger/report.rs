//! The monthly report (每月通报, 垣曲 第二十一条: 每月通报审批信息、监管信息上传认领情况; 济宁 第十九条:
//! 定期通报). Two sides:
//!
//! - **推送 (push)**, per pushing party and kind: the bureau for approval information, each
//!   department for the supervision information and notices it sends. Records pushed in the
//!   month, how many had a push deadline, on time, late, and the push latency (decision or
//!   receipt → push) p50/p90 in working hours.
//! - **认领 (claim)**, per receiving department, kind and flow: pushed, claimed, claimed on time,
//!   claimed late, still open, of those past their deadline, returned, forwarded, the on-time
//!   rate over the records that were **due** (an open record not yet due does not count against
//!   a department), and the claim time p50/p90 in working hours; next to it the other flows'
//!   outcomes (replied, deemed agreed, attending, signed off, verified, unfulfilled, follow-ups
//!   overdue). A flow without a deadline shows `—`, never 0.
//!
//! The store aggregates: the counts come from one `GROUP BY` over the month's entries and one over
//! its records, the percentiles from a narrow stream of one number per entry sorted by the
//! database (working hours the state machine computed with the calendar when the claim or the
//! push happened). This module defines the figures, gathers the store's rows and writes the
//! report: JSON with stable English keys, a table and CSV with Chinese headers, department names
//! next to their codes, and a footnote that says how each figure is counted.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone};
use serde::Serialize;

use crate::adapter::convert::shanghai;

/// One group of the month's entries as the store counts them (`GROUP BY department, kind,
/// flow`). `with_deadline` is how many had a claim deadline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimCounts {
    pub department: String,
    pub kind: String,
    pub flow: String,
    pub pushed: u64,
    pub with_deadline: u64,
    pub claimed: u64,
    pub claimed_on_time: u64,
    pub claimed_late: u64,
    pub open: u64,
    pub missed: u64,
    pub returned: u64,
    pub forwarded: u64,
    pub offline: u64,
    pub updates: u64,
    pub replied: u64,
    pub deemed_agreed: u64,
    pub attending: u64,
    pub signed_off: u64,
    pub verified: u64,
    pub unfulfilled: u64,
    pub follow_up_overdue: u64,
}

/// One group of the month's records as the store counts them (`GROUP BY pusher, kind`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushCounts {
    /// The pushing party's code; empty when not known.
    pub pusher: String,
    pub kind: String,
    pub pushed: u64,
    pub with_deadline: u64,
    pub late: u64,
}

/// A receiving department's line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClaimLine {
    pub department: String,
    /// The catalog's name for the department.
    pub department_name: Option<String>,
    pub kind: String,
    /// `claim`, `commitment`, `decision`, `notice`, `attendance`, `inquiry` or `inspection`.
    pub flow: String,
    /// Entries pushed to the department in the month (an update of a record is a push).
    pub pushed: u64,
    /// Claimed (answered, confirmed) by the report time.
    pub claimed: u64,
    /// Claimed no later than the deadline; `null` when no entry of the line had one.
    pub claimed_on_time: Option<u64>,
    /// Claimed after the deadline; `null` without deadlines.
    pub claimed_late: Option<u64>,
    /// Not claimed yet (pushed or delivered).
    pub open: u64,
    /// Not claimed and past the deadline at the report time (open, or closed unanswered: an
    /// inquiry deemed agreed); `null` without deadlines.
    pub open_overdue: Option<u64>,
    /// Returned as 非本部门.
    pub returned: u64,
    /// Forwarded (转交) before claiming; the receiver's line counts the record.
    pub forwarded: u64,
    /// Pushed outside the platform (书面公函, 案卷移送, 协调会议) and entered afterwards.
    pub offline: u64,
    /// Of the pushed, updates: a new version of a record pushed after a change.
    pub updates: u64,
    /// Entries that were due: claimed, or past the deadline unclaimed; `null` without deadlines.
    pub due: Option<u64>,
    /// claimed_on_time ÷ due, 0..1 to two decimals; `null` when nothing was due or there is no
    /// deadline.
    pub on_time_rate: Option<f64>,
    /// Median working hours from push to claim.
    pub median_claim_hours: Option<f64>,
    /// 90th percentile (nearest rank) working hours from push to claim.
    pub p90_claim_hours: Option<f64>,
    pub replied: u64,
    pub deemed_agreed: u64,
    pub attending: u64,
    pub signed_off: u64,
    pub verified: u64,
    pub unfulfilled: u64,
    /// The follow-up (disposition, sign-off, verification) done late or still open past its
    /// deadline.
    pub follow_up_overdue: u64,
}

/// A pushing party's line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PushLine {
    /// The pushing party's code (`unknown` when the ledger cannot tell).
    pub pusher: String,
    pub pusher_name: Option<String>,
    pub kind: String,
    /// Records pushed in the month.
    pub pushed: u64,
    /// Of those, with a push deadline.
    pub with_deadline: u64,
    /// Pushed by the deadline; `null` without deadlines.
    pub on_time: Option<u64>,
    /// Pushed after the deadline; `null` without deadlines.
    pub late: Option<u64>,
    /// on_time ÷ with_deadline; `null` without deadlines.
    pub on_time_rate: Option<f64>,
    /// Median working hours from the decision (or receipt) to the push.
    pub median_push_hours: Option<f64>,
    pub p90_push_hours: Option<f64>,
}

/// The report of one month.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub month: String,
    pub generated_at: String,
    pub calendar_version: String,
    pub pushes: Vec<PushLine>,
    pub claims: Vec<ClaimLine>,
    /// How each figure is counted.
    pub notes: String,
}

/// The footnote: how each figure is counted.
pub const NOTES: &str = "注：推送侧按推送时间计入当月，推送方为审批信息的行政审批局、监管信息和通知的发送部门；按时/逾期推送按该类信息的推送时限（自决定、收到之日起算，踏勘、联席会议为提前时限）判断，无时限者记“—”。认领侧按推送时间计入当月（记录变更后再次推送的计为一次推送）；按时率＝按时认领÷已到期，已到期＝已认领＋逾期未认领，尚未到期的未认领记录不计入；逾期认领与逾期未认领分列，逾期未认领含已逾期仍未认领及逾期视为同意的函询；退回、转交的记录不计入按时率。用时为工作小时（按国务院节假日安排，含调休上班日），取中位数与第90百分位（最近秩）；函询的“认领”为答复，踏勘、会议、培训的“认领”为参会确认。";

/// The catalog's department names by code, for the report.
pub fn department_names(catalog: &crate::route::Catalog) -> BTreeMap<String, String> {
    catalog
        .departments
        .iter()
        .map(|d| (d.code.clone(), d.name.clone()))
        .collect()
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

type ClaimKey = (String, String, String);

/// The median and 90th percentile of a group's hours.
fn group_hours<K: Ord>(map: &mut BTreeMap<K, Vec<f64>>, key: &K) -> (Option<f64>, Option<f64>) {
    let mut v = map.remove(key).unwrap_or_default();
    // The store sorts; sorting sorted values costs one pass.
    v.sort_by(f64::total_cmp);
    (median(&v).map(round2), percentile(&v, 0.9).map(round2))
}
type PushKey = (String, String);

/// The report being gathered from the store's rows: counts per group, and the working hours of
/// each group as the store streams them, sorted.
pub struct Monthly {
    month: String,
    now: DateTime<FixedOffset>,
    calendar_version: String,
    names: BTreeMap<String, String>,
    claims: BTreeMap<ClaimKey, ClaimCounts>,
    claim_hours: BTreeMap<ClaimKey, Vec<f64>>,
    pushes: BTreeMap<PushKey, PushCounts>,
    push_hours: BTreeMap<PushKey, Vec<f64>>,
    /// Entries counted.
    pub entries: u64,
}

impl Monthly {
    /// A report of `month` as it stands at `now`; `names` gives department names by code.
    pub fn new(
        month: &str,
        calendar_version: &str,
        now: DateTime<FixedOffset>,
        names: BTreeMap<String, String>,
    ) -> Monthly {
        Monthly {
            month: month.to_string(),
            now,
            calendar_version: calendar_version.to_string(),
            names,
            claims: BTreeMap::new(),
            claim_hours: BTreeMap::new(),
            pushes: BTreeMap::new(),
            push_hours: BTreeMap::new(),
            entries: 0,
        }
    }

    /// The report time: what "past the deadline" is measured against.
    pub fn now(&self) -> DateTime<FixedOffset> {
        self.now
    }

    /// One group of the month's entries.
    pub fn claim_counts(&mut self, c: ClaimCounts) {
        self.entries += c.pushed;
        self.claims
            .insert((c.department.clone(), c.kind.clone(), c.flow.clone()), c);
    }

    /// One entry's working hours from push to claim, in the store's order.
    pub fn claim_hours(&mut self, department: &str, kind: &str, flow: &str, hours: f64) {
        self.claim_hours
            .entry((department.into(), kind.into(), flow.into()))
            .or_default()
            .push(hours);
    }

    /// One group of the month's records.
    pub fn push_counts(&mut self, p: PushCounts) {
        self.pushes.insert((p.pusher.clone(), p.kind.clone()), p);
    }

    /// One record's working hours from its decision (or receipt) to its push.
    pub fn push_hours(&mut self, pusher: &str, kind: &str, hours: f64) {
        self.push_hours
            .entry((pusher.into(), kind.into()))
            .or_default()
            .push(hours);
    }

    /// The report: rates and percentiles per line.
    pub fn finish(mut self) -> Report {
        let name = |code: &str| self.names.get(code).cloned();
        let mut claims = Vec::new();
        for (key, c) in &self.claims {
            let (median_claim_hours, p90_claim_hours) = group_hours(&mut self.claim_hours, key);
            let timed = c.with_deadline > 0;
            let due = c.claimed_on_time + c.claimed_late + c.missed;
            claims.push(ClaimLine {
                department: c.department.clone(),
                department_name: name(&c.department),
                kind: c.kind.clone(),
                flow: c.flow.clone(),
                pushed: c.pushed,
                claimed: c.claimed,
                claimed_on_time: timed.then_some(c.claimed_on_time),
                claimed_late: timed.then_some(c.claimed_late),
                open: c.open,
                open_overdue: timed.then_some(c.missed),
                returned: c.returned,
                forwarded: c.forwarded,
                offline: c.offline,
                updates: c.updates,
                due: timed.then_some(due),
                on_time_rate: (timed && due > 0)
                    .then(|| round2(c.claimed_on_time as f64 / due as f64)),
                median_claim_hours,
                p90_claim_hours,
                replied: c.replied,
                deemed_agreed: c.deemed_agreed,
                attending: c.attending,
                signed_off: c.signed_off,
                verified: c.verified,
                unfulfilled: c.unfulfilled,
                follow_up_overdue: c.follow_up_overdue,
            });
        }
        let mut pushes = Vec::new();
        for (key, p) in &self.pushes {
            let (median_push_hours, p90_push_hours) = group_hours(&mut self.push_hours, key);
            let timed = p.with_deadline > 0;
            let pusher = if p.pusher.is_empty() {
                "unknown".to_string()
            } else {
                p.pusher.clone()
            };
            pushes.push(PushLine {
                pusher_name: name(&p.pusher),
                pusher,
                kind: p.kind.clone(),
                pushed: p.pushed,
                with_deadline: p.with_deadline,
                on_time: timed.then_some(p.with_deadline - p.late),
                late: timed.then_some(p.late),
                on_time_rate: timed
                    .then(|| round2((p.with_deadline - p.late) as f64 / p.with_deadline as f64)),
                median_push_hours,
                p90_push_hours,
            });
        }
        Report {
            month: self.month,
            generated_at: super::rfc3339(self.now),
            calendar_version: self.calendar_version,
            pushes,
            claims,
            notes: NOTES.to_string(),
        }
    }
}

/// 审批信息, 监管信息, 通知 for a kind.
pub fn kind_label(kind: &str) -> &str {
    match kind {
        "approval" => "审批信息",
        "supervision" => "监管信息",
        "notice" => "通知",
        other => other,
    }
}

/// The Chinese name of a flow.
pub fn flow_label(flow: &str) -> &str {
    match flow {
        "claim" => "认领",
        "commitment" => "认领及告知承诺核查",
        "decision" => "处理决定认领",
        "notice" => "通知认领",
        "attendance" => "参会确认",
        "inquiry" => "函询答复",
        "inspection" => "踏勘确认",
        other => other,
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

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A count, or `—` where the line has no deadline.
fn dash(x: Option<u64>) -> String {
    x.map(|v| v.to_string()).unwrap_or_else(|| "—".into())
}

fn rate(x: Option<f64>, timed: bool) -> String {
    match x {
        Some(r) => format!("{:.0}%", r * 100.0),
        None if timed => String::new(),
        None => "—".into(),
    }
}

fn hours(x: Option<f64>) -> String {
    x.map(|h| format!("{h:.2}")).unwrap_or_default()
}

fn with_name(code: &str, name: &Option<String>) -> String {
    match name {
        Some(n) => format!("{n}（{code}）"),
        None => code.to_string(),
    }
}

/// The flow-specific counts of a line that are not zero, e.g. `答复 2，视为同意 1`.
fn other(l: &ClaimLine) -> String {
    let parts: Vec<String> = [
        ("线下推送", l.offline),
        ("变更再推送", l.updates),
        ("答复", l.replied),
        ("视为同意", l.deemed_agreed),
        ("参会", l.attending),
        ("签字确认", l.signed_off),
        ("已核查", l.verified),
        ("未履行承诺", l.unfulfilled),
        ("后续办理逾期", l.follow_up_overdue),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{k} {n}"))
    .collect();
    parts.join("，")
}

const CSV_HEADER: [&str; 19] = [
    "月份",
    "方向",
    "单位代码",
    "单位名称",
    "信息类别",
    "流程",
    "推送数",
    "已认领",
    "按时",
    "逾期",
    "未认领",
    "逾期未认领",
    "退回",
    "转交",
    "按时率",
    "用时中位数（工作小时）",
    "用时P90（工作小时）",
    "其他",
    "有时限",
];

/// CSV with Chinese headers, one row per push line (方向 推送) and per claim line (方向 认领),
/// then the footnote; Excel-safe, UTF-8 with a BOM so Excel opens Chinese text correctly.
pub fn to_csv(report: &Report) -> String {
    let mut out = String::from("\u{FEFF}");
    let mut row = |cells: Vec<String>| {
        let cells: Vec<String> = cells.iter().map(|c| csv_cell(&excel_safe(c))).collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    };
    row(CSV_HEADER.iter().map(|s| s.to_string()).collect());
    for p in &report.pushes {
        let timed = p.with_deadline > 0;
        row(vec![
            report.month.clone(),
            "推送".into(),
            p.pusher.clone(),
            p.pusher_name.clone().unwrap_or_default(),
            kind_label(&p.kind).into(),
            "推送".into(),
            p.pushed.to_string(),
            String::new(),
            dash(p.on_time),
            dash(p.late),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            rate(p.on_time_rate, timed),
            hours(p.median_push_hours),
            hours(p.p90_push_hours),
            String::new(),
            p.with_deadline.to_string(),
        ]);
    }
    for l in &report.claims {
        row(vec![
            report.month.clone(),
            "认领".into(),
            l.department.clone(),
            l.department_name.clone().unwrap_or_default(),
            kind_label(&l.kind).into(),
            flow_label(&l.flow).into(),
            l.pushed.to_string(),
            l.claimed.to_string(),
            dash(l.claimed_on_time),
            dash(l.claimed_late),
            l.open.to_string(),
            dash(l.open_overdue),
            l.returned.to_string(),
            l.forwarded.to_string(),
            rate(l.on_time_rate, l.due.is_some()),
            hours(l.median_claim_hours),
            hours(l.p90_claim_hours),
            other(l),
            dash(l.due.map(|_| l.pushed)),
        ]);
    }
    row(vec![report.notes.clone()]);
    out
}

/// A table for the terminal, in two parts (推送情况, 认领情况), then the footnote.
pub fn to_table(report: &Report) -> String {
    let mut out = format!(
        "每月通报 {}（生成于 {}，工作日历 {}）\n\n一、推送情况（审批信息、监管信息上传）\n",
        report.month, report.generated_at, report.calendar_version
    );
    out.push_str("| 推送方 | 信息类别 | 推送数 | 有时限 | 按时推送 | 逾期推送 | 按时率 | 用时中位数(工作小时) | 用时P90 |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for p in &report.pushes {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            with_name(&p.pusher, &p.pusher_name),
            kind_label(&p.kind),
            p.pushed,
            p.with_deadline,
            dash(p.on_time),
            dash(p.late),
            rate(p.on_time_rate, p.with_deadline > 0),
            hours(p.median_push_hours),
            hours(p.p90_push_hours),
        ));
    }
    if report.pushes.is_empty() {
        out.push_str("（本月没有推送）\n");
    }
    out.push_str("\n二、认领情况\n");
    out.push_str("| 部门 | 信息类别 | 流程 | 推送数 | 已认领 | 按时认领 | 逾期认领 | 未认领 | 逾期未认领 | 退回 | 转交 | 按时率 | 用时中位数(工作小时) | 用时P90 | 其他 |\n");
    out.push_str("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for l in &report.claims {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            with_name(&l.department, &l.department_name),
            kind_label(&l.kind),
            flow_label(&l.flow),
            l.pushed,
            l.claimed,
            dash(l.claimed_on_time),
            dash(l.claimed_late),
            l.open,
            dash(l.open_overdue),
            l.returned,
            l.forwarded,
            rate(l.on_time_rate, l.due.is_some()),
            hours(l.median_claim_hours),
            hours(l.p90_claim_hours),
            other(l),
        ));
    }
    if report.claims.is_empty() {
        out.push_str("（本月没有推送到部门的记录）\n");
    }
    out.push('\n');
    out.push_str(&report.notes);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

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

    #[test]
    fn open_records_not_yet_due_do_not_count_against_a_department() {
        let names = BTreeMap::from([("szs-wjw".to_string(), "石嘴山市卫生健康委员会".to_string())]);
        let mut m = Monthly::new("2026-03", "v", t("2026-03-31T12:00:00+08:00"), names);
        m.claim_counts(ClaimCounts {
            department: "szs-wjw".into(),
            kind: "approval".into(),
            flow: "claim".into(),
            pushed: 2,
            with_deadline: 2,
            open: 2,
            ..ClaimCounts::default()
        });
        m.claim_counts(ClaimCounts {
            department: "szs-wjw".into(),
            kind: "notice".into(),
            flow: "attendance".into(),
            pushed: 1,
            claimed: 1,
            ..ClaimCounts::default()
        });
        let r = m.finish();
        let l = &r.claims[0];
        assert_eq!(
            (l.due, l.on_time_rate, l.open_overdue),
            (Some(0), None, Some(0))
        );
        assert_eq!(l.department_name.as_deref(), Some("石嘴山市卫生健康委员会"));
        // A flow without a deadline shows — for its deadline figures, not 0.
        let n = &r.claims[1];
        assert_eq!(
            (n.claimed_on_time, n.on_time_rate, n.due),
            (None, None, None)
        );
        let table = to_table(&r);
        assert!(
            table.contains("石嘴山市卫生健康委员会（szs-wjw）"),
            "{table}"
        );
        assert!(
            table.contains("| 通知 | 参会确认 | 1 | 1 | — | — | 0 | — |"),
            "{table}"
        );
        let csv = to_csv(&r);
        assert!(
            csv.starts_with("\u{FEFF}月份,方向,单位代码,单位名称"),
            "{csv}"
        );
        assert!(csv.trim_end().ends_with(NOTES), "{csv}");
    }
}
