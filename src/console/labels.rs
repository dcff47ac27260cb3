//! The console's words: Chinese labels of the canonical fields, taken from the JSON Schemas
//! (the part of each field's description before " — ", else its title), names of entry states,
//! rules and history actions, and the working days left before a deadline.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use chrono::{DateTime, FixedOffset, NaiveDate};
use serde_json::Value;

use crate::deadline::Calendar;
use crate::ledger::EntryState;
use crate::schema::RecordKind;

/// The schema files the labels come from (the same copies the binary validates with when no
/// schema directory is configured).
const SCHEMAS: &[(&str, &str)] = &[
    (
        "common.v1",
        include_str!("../../schemas/common.v1.schema.json"),
    ),
    (
        "approval.v1",
        include_str!("../../schemas/approval.v1.schema.json"),
    ),
    (
        "supervision.v1",
        include_str!("../../schemas/supervision.v1.schema.json"),
    ),
    (
        "notice.v1",
        include_str!("../../schemas/notice.v1.schema.json"),
    ),
    (
        "feedback.v1",
        include_str!("../../schemas/feedback.v1.schema.json"),
    ),
];

/// Dotted field path → label, per record kind.
static LABELS: LazyLock<BTreeMap<String, BTreeMap<String, String>>> = LazyLock::new(|| {
    let docs: BTreeMap<&str, Value> = SCHEMAS
        .iter()
        .map(|(name, text)| (*name, serde_json::from_str(text).expect("schema JSON")))
        .collect();
    let mut out = BTreeMap::new();
    for (name, doc) in &docs {
        if *name == "common.v1" {
            continue;
        }
        let mut labels = BTreeMap::new();
        walk(&docs, doc, "", &mut labels, 0);
        out.insert(name.trim_end_matches(".v1").to_string(), labels);
    }
    out
});

/// The label a schema node gives itself.
fn own_label(node: &Value) -> Option<String> {
    let from_description = node
        .get("description")
        .and_then(Value::as_str)
        .and_then(|d| d.split_once(" — "))
        .map(|(head, _)| head.trim().to_string());
    from_description.or_else(|| {
        node.get("title")
            .and_then(Value::as_str)
            .map(|t| t.trim().to_string())
    })
}

/// The node a `$ref` into the common definitions points at.
fn resolve<'a>(docs: &'a BTreeMap<&str, Value>, node: &'a Value) -> &'a Value {
    let Some(reference) = node.get("$ref").and_then(Value::as_str) else {
        return node;
    };
    let Some((doc, pointer)) = reference
        .trim_start_matches("urn:shenguan:schema:")
        .split_once('#')
    else {
        return node;
    };
    docs.get(doc)
        .and_then(|d| d.pointer(pointer))
        .unwrap_or(node)
}

fn walk(
    docs: &BTreeMap<&str, Value>,
    node: &Value,
    path: &str,
    labels: &mut BTreeMap<String, String>,
    depth: usize,
) {
    if depth > 8 {
        return;
    }
    let target = resolve(docs, node);
    if !path.is_empty() {
        // The referencing site's description names the field in its context; fall back to the
        // definition's own.
        if let Some(label) = own_label(node).or_else(|| own_label(target)) {
            labels.insert(path.to_string(), label);
        }
    }
    let object = match target.get("items") {
        Some(items) if target.get("properties").is_none() => resolve(docs, items),
        _ => target,
    };
    if let Some(props) = object.get("properties").and_then(Value::as_object) {
        for (key, child) in props {
            let child_path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            walk(docs, child, &child_path, labels, depth + 1);
        }
    }
}

/// The Chinese label of a dotted field of a record kind, if the schema gives one.
pub fn field_label(kind: RecordKind, path: &str) -> Option<&'static str> {
    LABELS
        .get(kind.as_str())
        .and_then(|m| m.get(path))
        .map(String::as_str)
}

/// One labelled value of a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub label: String,
    pub value: String,
}

/// A group of fields: the record's own scalars, then one group per object member.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldGroup {
    pub title: String,
    pub fields: Vec<Field>,
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "是".into(),
        Value::Bool(false) => "否".into(),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

fn flatten(kind: RecordKind, path: &str, v: &Value, out: &mut Vec<Field>) {
    let label = || {
        field_label(kind, path)
            .map(str::to_string)
            .unwrap_or_else(|| path.to_string())
    };
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                flatten(kind, &format!("{path}.{k}"), child, out);
            }
        }
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            out.push(Field {
                label: label(),
                value: items.iter().map(scalar_text).collect::<Vec<_>>().join("、"),
            });
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let mut inner = Vec::new();
                flatten(kind, path, item, &mut inner);
                for f in inner {
                    out.push(Field {
                        label: format!("{} {}", f.label, i + 1),
                        value: f.value,
                    });
                }
            }
        }
        scalar => out.push(Field {
            label: label(),
            value: scalar_text(scalar),
        }),
    }
}

/// The canonical fields of a record under their Chinese labels, grouped.
pub fn record_fields(kind: RecordKind, data: &Value) -> Vec<FieldGroup> {
    let mut top = FieldGroup {
        title: "基本信息".into(),
        fields: Vec::new(),
    };
    let mut groups = Vec::new();
    let Some(map) = data.as_object() else {
        return groups;
    };
    for (key, v) in map {
        if v.is_object() || v.as_array().is_some_and(|a| a.iter().any(Value::is_object)) {
            let mut fields = Vec::new();
            if let Value::Object(inner) = v {
                for (k, child) in inner {
                    flatten(kind, &format!("{key}.{k}"), child, &mut fields);
                }
            } else {
                flatten(kind, key, v, &mut fields);
            }
            groups.push(FieldGroup {
                title: field_label(kind, key)
                    .map(str::to_string)
                    .unwrap_or_else(|| key.clone()),
                fields,
            });
        } else {
            flatten(kind, key, v, &mut top.fields);
        }
    }
    groups.insert(0, top);
    groups
}

/// A record's one-line description for lists: its 事项/title, counterpart and case number.
pub fn summary(data: &Value) -> (String, String, String) {
    let text = |p: &str| data.pointer(p).and_then(Value::as_str).map(str::to_string);
    let matter = text("/item/name")
        .or_else(|| text("/title"))
        .or_else(|| text("/action/type"))
        .or_else(|| text("/decision/type"))
        .unwrap_or_else(|| "—".into());
    let party = text("/counterpart/name")
        .or_else(|| text("/issuer"))
        .unwrap_or_else(|| "—".into());
    let case = text("/case_no")
        .or_else(|| text("/document_no"))
        .or_else(|| text("/license/number"))
        .or_else(|| text("/source/business_key"))
        .unwrap_or_else(|| "—".into());
    (matter, party, case)
}

/// The Chinese name of a record kind.
pub fn kind_name(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Approval => "审批信息",
        RecordKind::Supervision => "监管信息",
        RecordKind::Notice => "通知",
        RecordKind::Claim => "认领",
        RecordKind::Feedback => "反馈",
        RecordKind::Alert => "告警",
        RecordKind::Dlq => "死信",
    }
}

/// The Chinese name of an entry state.
pub fn state_name(state: EntryState) -> &'static str {
    match state {
        EntryState::Pushed => "待认领",
        EntryState::Delivered => "待认领（已送达）",
        EntryState::Claimed => "已认领",
        EntryState::Returned => "已退回",
        EntryState::Feedback => "已反馈",
        EntryState::Closed => "已办结",
        EntryState::Forwarded => "已转交",
    }
}

/// The Chinese name of a deadline rule.
pub fn rule_name(rule: &str) -> String {
    match rule {
        "push_approval" => "推送审批信息".into(),
        "claim_approval" => "认领审批信息".into(),
        "push_supervision" => "推送监管信息".into(),
        "claim_supervision" => "认领监管信息".into(),
        "push_commitment_failure" => "推送承诺未履行信息".into(),
        "inspection_notice" => "踏勘提前通知".into(),
        "forward_notice" => "转发通知".into(),
        "disposition_feedback" => "反馈处置决定".into(),
        "reply_inquiry" => "答复函询".into(),
        "inspection_signoff" => "踏勘结果签字确认".into(),
        "verify_commitment" => "核查告知承诺".into(),
        "confirm_inspection" => "确认踏勘参加人员".into(),
        other => other.to_string(),
    }
}

/// The Chinese name of a history action or feedback type.
pub fn action_name(action: &str) -> String {
    match action {
        "published" => "发布".into(),
        "updated" => "更新".into(),
        "routed" => "推送至部门".into(),
        "unrouted" => "进入未路由队列".into(),
        "route" => "人工指派".into(),
        "linked" => "关联许可".into(),
        "supervision" => "收到监管信息".into(),
        "claim" => "认领".into(),
        "return" => "退回（非本部门）".into(),
        "forward" => "转交".into(),
        "delivered" => "已送达".into(),
        "feedback" => "反馈".into(),
        "supervision_started" => "已开展监管".into(),
        "rectification" => "整改情况".into(),
        "disposition" => "处置决定".into(),
        "reply" => "函询答复".into(),
        "deemed_agreed" => "逾期视为同意".into(),
        "inspection_attendance" => "踏勘参加人员确认".into(),
        "inspection_result" => "踏勘结果签字确认".into(),
        "commitment_verified" => "告知承诺核查结果".into(),
        "other" => "其他".into(),
        "due_soon" => "即将到期提醒".into(),
        "overdue" => "逾期告警".into(),
        "escalated" => "升级督办".into(),
        "closed" => "办结".into(),
        "ignored" => "已忽略".into(),
        other => other.to_string(),
    }
}

/// Where a deadline stands in working days, for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// Working days after today up to and including the deadline's day (0: due today).
    Days(i64),
    /// Past the deadline by this many working days (0: past it, no working day since).
    Overdue(i64),
    /// The calendar has no data for a day in between.
    Unknown,
}

impl Left {
    /// The words for it: 剩 3 个工作日, 今日到期, 已逾期 2 个工作日.
    pub fn text(self) -> String {
        match self {
            Left::Days(0) => "今日到期".into(),
            Left::Days(n) => format!("剩 {n} 个工作日"),
            Left::Overdue(0) => "已逾期".into(),
            Left::Overdue(n) => format!("已逾期 {n} 个工作日"),
            Left::Unknown => "日历缺少数据".into(),
        }
    }

    /// A CSS class for the urgency: overdue, today, soon or later.
    pub fn class(self) -> &'static str {
        match self {
            Left::Overdue(_) => "overdue",
            Left::Days(0) => "today",
            Left::Days(1) => "soon",
            _ => "later",
        }
    }
}

fn working_days_in(calendar: &Calendar, after: NaiveDate, upto: NaiveDate) -> Option<i64> {
    let mut n = 0;
    let mut day = after;
    // A deadline years away is not a working-day count anyone reads.
    for _ in 0..800 {
        day = day.succ_opt()?;
        if day > upto {
            return Some(n);
        }
        if calendar.is_working_day(day).ok()? {
            n += 1;
        }
    }
    Some(n)
}

/// The working days left at `now` before `due` (both read in Asia/Shanghai).
pub fn working_days_left(
    calendar: &Calendar,
    now: DateTime<FixedOffset>,
    due: DateTime<FixedOffset>,
) -> Left {
    let tz = crate::adapter::convert::shanghai();
    let today = now.with_timezone(&tz).date_naive();
    let due_day = due.with_timezone(&tz).date_naive();
    if now > due {
        working_days_in(calendar, due_day, today).map_or(Left::Unknown, Left::Overdue)
    } else {
        working_days_in(calendar, today, due_day).map_or(Left::Unknown, Left::Days)
    }
}

/// A time for a person: `2026-11-24 23:59` in Asia/Shanghai.
pub fn local_time(t: DateTime<FixedOffset>) -> String {
    t.with_timezone(&crate::adapter::convert::shanghai())
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

/// An RFC 3339 text as a local time, or the text itself when it is not one.
pub fn local_text(t: &str) -> String {
    DateTime::parse_from_rfc3339(t).map_or_else(|_| t.to_string(), local_time)
}

/// Unix seconds as a local time.
pub fn local_unix(secs: i64) -> String {
    DateTime::from_timestamp(secs, 0)
        .map(|t| local_time(t.fixed_offset()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_come_from_the_schema_descriptions() {
        assert_eq!(
            field_label(RecordKind::Approval, "item.name"),
            Some("事项名称")
        );
        assert_eq!(
            field_label(RecordKind::Approval, "case_no"),
            Some("办件编号")
        );
        assert_eq!(
            field_label(RecordKind::Approval, "counterpart.uscc"),
            Some("统一社会信用代码")
        );
        assert_eq!(
            field_label(RecordKind::Approval, "counterpart"),
            Some("行政相对人")
        );
    }

    #[test]
    fn a_record_is_shown_as_labelled_groups() {
        let data = json!({"case_no": "640200202601050001", "item": {"name": "食品经营许可"},
                          "counterpart": {"name": "某某餐饮有限公司"}});
        let groups = record_fields(RecordKind::Approval, &data);
        assert_eq!(groups[0].title, "基本信息");
        assert_eq!(groups[0].fields[0].label, "办件编号");
        assert_eq!(groups[1].title, "审批事项");
        assert_eq!(groups[1].fields[0].label, "事项名称");
        assert_eq!(groups[1].fields[0].value, "食品经营许可");
    }

    #[test]
    fn working_days_left_skip_weekends_and_holidays() {
        let cal = Calendar::builtin();
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap();
        // Wednesday 30 September 2026; 1–7 October are 国庆 and 中秋 holidays.
        let now = t("2026-09-30T10:00:00+08:00");
        assert_eq!(
            working_days_left(&cal, now, t("2026-09-30T23:59:59+08:00")),
            Left::Days(0)
        );
        assert_eq!(
            working_days_left(&cal, now, t("2026-10-08T23:59:59+08:00")),
            Left::Days(1)
        );
        assert_eq!(
            working_days_left(
                &cal,
                t("2026-10-09T10:00:00+08:00"),
                t("2026-09-30T23:59:59+08:00")
            ),
            Left::Overdue(2)
        );
        assert_eq!(Left::Days(1).text(), "剩 1 个工作日");
    }
}
