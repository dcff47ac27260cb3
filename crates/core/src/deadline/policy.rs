//! Deadline policy profiles: how many working days each step of 审管联动 may take.
//!
//! Jurisdictions set different periods (垣曲 gives 1 working day to claim approval information,
//! 济宁 gives 3), so the numbers are data: one TOML profile per regulation under `policies/`,
//! chosen by name in configuration. `yuanqu-2022` and `jining-2022` are compiled in; a site adds
//! its own profile, or replaces a built-in one, by dropping `<name>.toml` into a directory named
//! in its configuration. Every rule carries the citation of the article it comes from, and a
//! single record can override a rule's number (an inquiry letter that sets its own reply period).
//!
//! A rule absent from a profile is not tracked under that profile: 济宁 sets no advance notice
//! for joint site inspections, so `jining-2022` has no `inspection_notice`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::calendar::{line_of, Calendar, MissingYear};

/// The profiles shipped in the binary.
const BUILTIN: &[(&str, &str)] = &[
    (
        "policies/yuanqu-2022.toml",
        include_str!("../../../../policies/yuanqu-2022.toml"),
    ),
    (
        "policies/jining-2022.toml",
        include_str!("../../../../policies/jining-2022.toml"),
    ),
    (
        "policies/zichuan-2019.toml",
        include_str!("../../../../policies/zichuan-2019.toml"),
    ),
    (
        "policies/generic.toml",
        include_str!("../../../../policies/generic.toml"),
    ),
];

/// The rule names a profile may define. Other code refers to rules by these names; a profile
/// naming anything else is refused, so a typo cannot silently leave a deadline untracked.
pub mod rule_names {
    /// Approval information pushed to the supervision department, counted from the decision.
    pub const PUSH_APPROVAL: &str = "push_approval";
    /// The supervision department claims approval information, counted from the push.
    pub const CLAIM_APPROVAL: &str = "claim_approval";
    /// Supervision information pushed to the bureau, counted from the penalty or other decision.
    pub const PUSH_SUPERVISION: &str = "push_supervision";
    /// The bureau claims supervision information, counted from the push.
    pub const CLAIM_SUPERVISION: &str = "claim_supervision";
    /// A failed 告知承诺 pushed to the bureau, counted from the end of the commitment period.
    pub const PUSH_COMMITMENT_FAILURE: &str = "push_commitment_failure";
    /// Notice of a joint site inspection (联合踏勘), counted back from the inspection day.
    pub const INSPECTION_NOTICE: &str = "inspection_notice";
    /// Policy documents and training notices forwarded to the other side, counted from receipt.
    pub const FORWARD_NOTICE: &str = "forward_notice";
    /// The bureau's disposition of a 撤回/撤销/注销 request or failed commitment fed back,
    /// counted from the bureau's claim of the request.
    pub const DISPOSITION_FEEDBACK: &str = "disposition_feedback";
    /// Reply to a 业务函询 (business inquiry), counted from the inquiry's push.
    pub const REPLY_INQUIRY: &str = "reply_inquiry";
    /// A joint site inspection's result signed off by each attending department, counted from
    /// the inspection.
    pub const INSPECTION_SIGNOFF: &str = "inspection_signoff";
    /// A 告知承诺 approval's commitment verified by the supervision department, counted from the
    /// end of the commitment period.
    pub const VERIFY_COMMITMENT: &str = "verify_commitment";
    /// A training or policy-change notice (业务培训信息, 法律法规政策调整信息) claimed by each
    /// receiver, counted from the push.
    pub const CLAIM_NOTICE: &str = "claim_notice";
    /// The bureau's decision on a request (撤回/撤销/注销/变更, 异议复核, a failed 告知承诺) claimed
    /// by the department that asked, counted from the decision's push.
    pub const CLAIM_DECISION: &str = "claim_decision";
    /// A 联席会议's materials sent to the member units, counted back from the meeting.
    pub const MEETING_MATERIALS: &str = "meeting_materials";

    /// Every rule name, in the order of the process.
    pub const ALL: [&str; 14] = [
        PUSH_APPROVAL,
        CLAIM_APPROVAL,
        PUSH_SUPERVISION,
        CLAIM_SUPERVISION,
        PUSH_COMMITMENT_FAILURE,
        INSPECTION_NOTICE,
        FORWARD_NOTICE,
        DISPOSITION_FEEDBACK,
        REPLY_INQUIRY,
        INSPECTION_SIGNOFF,
        VERIFY_COMMITMENT,
        CLAIM_NOTICE,
        CLAIM_DECISION,
        MEETING_MATERIALS,
    ];
}

/// Which way a rule counts from its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// "Within N working days after the event": due at the end of the Nth working day after it.
    After,
    /// "At least N working days before the event": due at the end of the Nth working day
    /// before it.
    Before,
}

/// The direction a rule name is counted in; `inspection_notice` and `meeting_materials` count
/// backwards from the event they announce.
fn direction_of(rule: &str) -> Direction {
    if rule == rule_names::INSPECTION_NOTICE || rule == rule_names::MEETING_MATERIALS {
        Direction::Before
    } else {
        Direction::After
    }
}

/// One deadline rule of a profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// The number of working days. 0 with [`Direction::After`] means "immediately": by the end
    /// of the event's day if it is a working day, else of the next working day.
    pub within_working_days: u32,
    /// Whether the days are counted after or before the event.
    pub direction: Direction,
    /// Whether silence past the deadline counts as agreement (垣曲 第二十六条: 逾期不回复的视为同意).
    /// Only `reply_inquiry` may set it.
    pub deemed_agreed_when_late: bool,
    /// The article the rule comes from, or "profile default" and why.
    pub citation: String,
}

impl Rule {
    /// When the step is due for an event at `event`: the end (23:59:59 Asia/Shanghai) of the
    /// `within_working_days`th working day after the event, or before it for
    /// [`Direction::Before`].
    pub fn due_at(
        &self,
        calendar: &Calendar,
        event: DateTime<FixedOffset>,
    ) -> Result<DateTime<FixedOffset>, MissingYear> {
        match self.direction {
            Direction::After => calendar.deadline_after(event, self.within_working_days),
            Direction::Before => calendar.deadline_before(event, self.within_working_days),
        }
    }
}

/// A deadline policy profile, e.g. `yuanqu-2022`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// The profile name configuration refers to; equal to its file name without `.toml`.
    pub name: String,
    /// The regulation the profile implements.
    pub title: String,
    /// Raise a due-soon alert when this many working hours or fewer remain before a deadline
    /// (working hours as counted by [`Calendar::working_seconds_between`]).
    pub due_soon_working_hours: u32,
    /// Escalate a record still open this many working days after its deadline.
    pub escalate_after_working_days: u32,
    /// The rules by name (see [`rule_names`]); a rule absent here is not tracked.
    pub rules: BTreeMap<String, Rule>,
    /// The period the regulation is in force (济宁 第三十七条: 2022-12-10 to 2024-12-09); a record
    /// decided under the profile outside it is a visible condition, not silence.
    pub period: Period,
    /// Canonical fields a record must carry under this profile, beyond the schema's (垣曲
    /// 第二十二条（二）: 联系方式; 济宁 第二十条（二）: 联系方式、地址).
    pub required_fields: RequiredFields,
    /// Where the profile came from: `policies/<name>.toml` when built in, else the site's path.
    pub source: String,
}

/// The days a regulation is in force, both ends included; an open end is no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Period {
    pub from: Option<chrono::NaiveDate>,
    pub until: Option<chrono::NaiveDate>,
    /// The article that sets the period (济宁 第三十七条), or where the dates come from.
    pub citation: String,
}

impl Period {
    /// Whether `date` is inside the period.
    pub fn contains(&self, date: chrono::NaiveDate) -> bool {
        self.from.is_none_or(|f| date >= f) && self.until.is_none_or(|u| date <= u)
    }

    /// `2022-12-10 to 2024-12-09`, `from 2022-04-26`.
    pub fn describe(&self) -> String {
        match (self.from, self.until) {
            (Some(f), Some(u)) => format!("{f} to {u}"),
            (Some(f), None) => format!("from {f}"),
            (None, Some(u)) => format!("until {u}"),
            (None, None) => "without limit".into(),
        }
    }
}

/// The canonical fields a profile requires per record kind, and those a site relaxes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RequiredFields {
    /// Dotted canonical paths (`counterpart.contact_phone`) by kind (`approval` …).
    pub by_kind: BTreeMap<String, Vec<String>>,
    /// The article that requires them.
    pub citation: String,
    /// Fields the list names that a site does not require, and why (explicit, logged).
    pub relaxed: Vec<String>,
    pub relaxed_reason: Option<String>,
}

/// A required field a record lacks: its canonical path as a JSON pointer, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingField {
    pub pointer: String,
    pub reason: String,
}

/// How people name a canonical field in the regulations' words.
fn field_label(path: &str) -> &'static str {
    match path {
        "counterpart.contact_phone" => "联系方式",
        "counterpart.address" => "地址",
        "counterpart.uscc" => "统一社会信用代码",
        "counterpart.id_number" => "公民身份证号码",
        "license.valid_to" => "有效期",
        "license.content" => "审批内容",
        "license.document_no" => "许可文（编）号",
        "item.name" => "事项名称",
        _ => "",
    }
}

/// A dotted canonical path (`counterpart.address`) as a JSON pointer.
fn pointer_of(path: &str) -> String {
    format!("/{}", path.replace('.', "/"))
}

/// Whether a value is there: not absent, not null, not empty text.
fn present_in_value(data: &serde_json::Value, pointer: &str) -> bool {
    match data.pointer(pointer) {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::String(s)) => !s.trim().is_empty(),
        Some(_) => true,
    }
}

/// [`present_in_value`] over unparsed JSON: each object on the path is read as a map of
/// unparsed members, so the rest of the record is only scanned. An object whose member names
/// carry escapes is read whole.
fn present_in_raw(data: &serde_json::value::RawValue, path: &str) -> bool {
    let mut at = data;
    for name in path.split('.') {
        match serde_json::from_str::<BTreeMap<&str, &serde_json::value::RawValue>>(at.get()) {
            Ok(members) => match members.get(name) {
                Some(v) => at = v,
                None => return false,
            },
            Err(_) => {
                return serde_json::from_str::<serde_json::Value>(data.get())
                    .is_ok_and(|v| present_in_value(&v, &pointer_of(path)))
            }
        }
    }
    let text = at.get().trim_start();
    match text.as_bytes().first() {
        Some(b'n') | None => false,
        Some(b'"') => serde_json::from_str::<String>(text).is_ok_and(|s| !s.trim().is_empty()),
        Some(_) => true,
    }
}

impl RequiredFields {
    /// What a canonical record of `kind` lacks of the fields `policy` requires (a value that is
    /// absent, null or empty text). Pure; the ingest path calls it right after the pipeline
    /// accepted a record and sends a record that lacks any to the DLQ with these reasons.
    pub fn missing(&self, policy: &str, kind: &str, data: &serde_json::Value) -> Vec<MissingField> {
        self.report(policy, self.of(kind), |path| {
            present_in_value(data, &pointer_of(path))
        })
    }

    /// The same, read from a published CloudEvent's bytes (the canonical record is its `data`):
    /// only the members on the required paths are parsed, and a kind the profile requires
    /// nothing of reads nothing.
    pub fn missing_in_event(&self, policy: &str, kind: &str, event: &[u8]) -> Vec<MissingField> {
        let fields = self.of(kind);
        if fields.is_empty() {
            return Vec::new();
        }
        #[derive(serde::Deserialize)]
        struct Event<'a> {
            #[serde(borrow)]
            data: &'a serde_json::value::RawValue,
        }
        let data = serde_json::from_slice::<Event>(event).ok().map(|e| e.data);
        self.report(policy, fields, |path| {
            data.is_some_and(|d| present_in_raw(d, path))
        })
    }

    fn report(
        &self,
        policy: &str,
        fields: Vec<&str>,
        present: impl Fn(&str) -> bool,
    ) -> Vec<MissingField> {
        fields
            .into_iter()
            .filter_map(|path| {
                let pointer = pointer_of(path);
                let present = present(path);
                let label = field_label(path);
                (!present).then(|| MissingField {
                    reason: format!(
                        "{}{path} is required under policy {policy} ({}); the record has none",
                        if label.is_empty() {
                            String::new()
                        } else {
                            format!("{label} ")
                        },
                        self.citation
                    ),
                    pointer,
                })
            })
            .collect()
    }

    /// The fields required of a record of `kind`, relaxed ones left out.
    pub fn of(&self, kind: &str) -> Vec<&str> {
        self.by_kind
            .get(kind)
            .into_iter()
            .flatten()
            .filter(|f| !self.relaxed.contains(f))
            .map(String::as_str)
            .collect()
    }
}

impl Policy {
    /// The rule with this name, if the profile defines it.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.get(name)
    }

    /// A copy with per-item overrides of `within_working_days`, e.g. the reply period an
    /// inquiry letter sets for itself. Naming a rule the profile does not define is an error,
    /// as is 0 for a rule counted before its event.
    pub fn with_overrides(
        &self,
        overrides: &BTreeMap<String, u32>,
    ) -> Result<Policy, OverrideError> {
        let mut policy = self.clone();
        for (name, days) in overrides {
            let Some(rule) = policy.rules.get_mut(name) else {
                return Err(OverrideError::UnknownRule {
                    policy: self.name.clone(),
                    rule: name.clone(),
                    known: self.rules.keys().cloned().collect::<Vec<_>>().join(", "),
                });
            };
            if rule.direction == Direction::Before && *days == 0 {
                return Err(OverrideError::ZeroBefore { rule: name.clone() });
            }
            rule.within_working_days = *days;
        }
        Ok(policy)
    }
}

/// An override that cannot be applied; see [`Policy::with_overrides`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    /// The profile defines no rule of that name.
    #[error("policy {policy} has no rule `{rule}` to override (it has: {known})")]
    UnknownRule {
        /// The profile's name.
        policy: String,
        /// The rule named in the override.
        rule: String,
        /// The rules the profile has, comma-separated.
        known: String,
    },
    /// "At least 0 working days before" is not a deadline.
    #[error("rule `{rule}` counts working days before its event and needs at least 1")]
    ZeroBefore {
        /// The rule named in the override.
        rule: String,
    },
}

/// One problem found while loading policy files, located by file and, where known, line.
///
/// Displayed as `file:line: message` (or `file: message` when no line applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file (or directory) the problem is in.
    pub file: String,
    /// 1-based line of the offending value, when the problem is inside a file.
    pub line: Option<usize>,
    /// What is wrong, starting with the field path where there is one.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for PolicyError {}

/// The available profiles, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policies {
    by_name: BTreeMap<String, Policy>,
}

impl Policies {
    /// The profiles compiled into the binary: `yuanqu-2022` and `jining-2022`.
    pub fn builtin() -> Policies {
        let sources = BUILTIN
            .iter()
            .map(|(file, text)| (file.to_string(), text.to_string()))
            .collect();
        match Self::from_sources(sources) {
            Ok(policies) => policies,
            // The unit tests load the embedded files, so this is unreachable in a tested build.
            Err(errors) => panic!("embedded policy profiles are invalid: {errors:?}"),
        }
    }

    /// The built-in profiles plus every `<name>.toml` in `extra_dir`; a file with the name of a
    /// built-in profile replaces it. Other file types in the directory are ignored. Every
    /// problem is reported at once, with file and line.
    pub fn load(extra_dir: Option<&Path>) -> Result<Policies, Vec<PolicyError>> {
        let mut sources: BTreeMap<String, (String, String)> = BTreeMap::new();
        for (file, text) in BUILTIN {
            sources.insert(stem(file), (file.to_string(), text.to_string()));
        }
        let mut errors = Vec::new();
        if let Some(dir) = extra_dir {
            for (file, text) in read_dir_files(dir, &mut errors) {
                sources.insert(stem(&file), (file, text));
            }
        }
        match Self::from_sources(sources.into_values().collect()) {
            Ok(policies) if errors.is_empty() => Ok(policies),
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(more);
                Err(errors)
            }
        }
    }

    fn from_sources(sources: Vec<(String, String)>) -> Result<Policies, Vec<PolicyError>> {
        let mut errors = Vec::new();
        let mut by_name = BTreeMap::new();
        for (file, text) in sources {
            match parse_policy(&file, &text) {
                // Sources are keyed by file name and the name must match it: no collisions.
                Ok(policy) => {
                    by_name.insert(policy.name.clone(), policy);
                }
                Err(mut found) => errors.append(&mut found),
            }
        }
        if errors.is_empty() {
            Ok(Policies { by_name })
        } else {
            Err(errors)
        }
    }

    /// The profile with this name.
    pub fn get(&self, name: &str) -> Option<&Policy> {
        self.by_name.get(name)
    }

    /// The profile names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }
}

/// `policies/yuanqu-2022.toml` → `yuanqu-2022`.
fn stem(file: &str) -> String {
    Path::new(file)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.to_string())
}

/// The `.toml` files of a site directory, sorted by name.
fn read_dir_files(dir: &Path, errors: &mut Vec<PolicyError>) -> Vec<(String, String)> {
    let (files, problems) = super::toml_files(dir, "policy");
    errors.extend(problems.into_iter().map(|(file, message)| PolicyError {
        file,
        line: None,
        message,
    }));
    files
}

/// The file format; see `policies/yuanqu-2022.toml` for an annotated example.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: Spanned<String>,
    title: Spanned<String>,
    due_soon_working_hours: u32,
    escalate_after_working_days: u32,
    rules: BTreeMap<Spanned<String>, RawRule>,
    #[serde(default)]
    in_force: Option<RawPeriod>,
    #[serde(default)]
    required_fields: Option<RawRequired>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeriod {
    from: Option<Spanned<String>>,
    until: Option<Spanned<String>>,
    citation: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequired {
    citation: Spanned<String>,
    #[serde(default)]
    approval: Vec<Spanned<String>>,
    #[serde(default)]
    supervision: Vec<Spanned<String>>,
    #[serde(default)]
    notice: Vec<Spanned<String>>,
    #[serde(default)]
    relaxed: Vec<Spanned<String>>,
    relaxed_reason: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    within_working_days: Spanned<u32>,
    direction: Option<Spanned<Direction>>,
    deemed_agreed_when_late: Option<Spanned<bool>>,
    citation: Spanned<String>,
}

fn parse_policy(file: &str, text: &str) -> Result<Policy, Vec<PolicyError>> {
    let at = |span: std::ops::Range<usize>, message: String| PolicyError {
        file: file.to_string(),
        line: Some(line_of(text, span.start)),
        message,
    };
    let raw: RawPolicy = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            return Err(vec![PolicyError {
                file: file.to_string(),
                line: e.span().map(|span| line_of(text, span.start)),
                message: e.message().trim_end().to_string(),
            }])
        }
    };
    let mut errors = Vec::new();

    let name = raw.name.get_ref();
    let expected = stem(file);
    if *name != expected {
        errors.push(at(
            raw.name.span(),
            format!("name: `{name}` but the file is named {expected}.toml"),
        ));
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        errors.push(at(
            raw.name.span(),
            format!("name: `{name}` must be lowercase letters, digits and '-', e.g. yuanqu-2022"),
        ));
    }
    if raw.title.get_ref().trim().is_empty() {
        errors.push(at(
            raw.title.span(),
            "title: name the regulation the profile implements".to_string(),
        ));
    }
    if raw.rules.is_empty() {
        errors.push(PolicyError {
            file: file.to_string(),
            line: None,
            message: "rules: the profile defines no rules".to_string(),
        });
    }

    let mut rules = BTreeMap::new();
    for (key, rule) in &raw.rules {
        let rule_name = key.get_ref().as_str();
        let path = format!("rules.{rule_name}");
        if !rule_names::ALL.contains(&rule_name) {
            errors.push(at(
                key.span(),
                format!(
                    "{path}: unknown rule `{rule_name}` (known: {})",
                    rule_names::ALL.join(", ")
                ),
            ));
            continue;
        }
        let expected = direction_of(rule_name);
        let direction = match &rule.direction {
            Some(given) if *given.get_ref() != expected => {
                errors.push(at(
                    given.span(),
                    format!(
                        "{path}.direction: `{rule_name}` is counted {} its event",
                        match expected {
                            Direction::After => "after",
                            Direction::Before => "before",
                        }
                    ),
                ));
                expected
            }
            _ => expected,
        };
        let days = *rule.within_working_days.get_ref();
        if direction == Direction::Before && days == 0 {
            errors.push(at(
                rule.within_working_days.span(),
                format!("{path}.within_working_days: a notice \"at least 0 working days before\" is no deadline; use 1 or more"),
            ));
        }
        let deemed_agreed = match &rule.deemed_agreed_when_late {
            Some(flag) if *flag.get_ref() && rule_name != rule_names::REPLY_INQUIRY => {
                errors.push(at(
                    flag.span(),
                    format!(
                        "{path}.deemed_agreed_when_late: only `{}` can be deemed agreed when late",
                        rule_names::REPLY_INQUIRY
                    ),
                ));
                false
            }
            Some(flag) => *flag.get_ref(),
            None => false,
        };
        if rule.citation.get_ref().trim().is_empty() {
            errors.push(at(
                rule.citation.span(),
                format!("{path}.citation: cite the article, or say \"profile default\" and why"),
            ));
        }
        rules.insert(
            rule_name.to_string(),
            Rule {
                within_working_days: days,
                direction,
                deemed_agreed_when_late: deemed_agreed,
                citation: rule.citation.get_ref().clone(),
            },
        );
    }

    let mut period = Period::default();
    if let Some(p) = &raw.in_force {
        let date = |v: &Option<Spanned<String>>, key: &str, errors: &mut Vec<PolicyError>| {
            let v = v.as_ref()?;
            match chrono::NaiveDate::parse_from_str(v.get_ref(), "%Y-%m-%d") {
                Ok(d) => Some(d),
                Err(_) => {
                    errors.push(at(
                        v.span(),
                        format!(
                            "in_force.{key}: `{}` is not a date (YYYY-MM-DD)",
                            v.get_ref()
                        ),
                    ));
                    None
                }
            }
        };
        period.from = date(&p.from, "from", &mut errors);
        period.until = date(&p.until, "until", &mut errors);
        if let (Some(f), Some(u)) = (period.from, period.until) {
            if u < f {
                errors.push(at(
                    p.until.as_ref().map(Spanned::span).unwrap_or(0..0),
                    format!("in_force.until: {u} is before in_force.from {f}"),
                ));
            }
        }
        if p.citation.get_ref().trim().is_empty() {
            errors.push(at(
                p.citation.span(),
                "in_force.citation: cite the article that sets the period".to_string(),
            ));
        }
        period.citation = p.citation.get_ref().clone();
    }
    let mut required = RequiredFields::default();
    if let Some(r) = &raw.required_fields {
        for (kind, list) in [
            ("approval", &r.approval),
            ("supervision", &r.supervision),
            ("notice", &r.notice),
        ] {
            let mut fields = Vec::new();
            for f in list {
                let name = f.get_ref();
                let valid = !name.is_empty()
                    && name.split('.').all(|part| {
                        !part.is_empty()
                            && part.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    });
                if !valid {
                    errors.push(at(
                        f.span(),
                        format!("required_fields.{kind}: `{name}` is not a canonical field path like counterpart.contact_phone"),
                    ));
                }
                fields.push(name.clone());
            }
            if !fields.is_empty() {
                required.by_kind.insert(kind.to_string(), fields);
            }
        }
        if r.citation.get_ref().trim().is_empty() {
            errors.push(at(
                r.citation.span(),
                "required_fields.citation: cite the article that requires the fields".to_string(),
            ));
        }
        required.citation = r.citation.get_ref().clone();
        for f in &r.relaxed {
            if !required
                .by_kind
                .values()
                .flatten()
                .any(|x| x == f.get_ref())
            {
                errors.push(at(
                    f.span(),
                    format!(
                        "required_fields.relaxed: `{}` is not a required field of this profile",
                        f.get_ref()
                    ),
                ));
            }
            required.relaxed.push(f.get_ref().clone());
        }
        required.relaxed_reason = r.relaxed_reason.as_ref().map(|s| s.get_ref().clone());
        if !r.relaxed.is_empty()
            && required
                .relaxed_reason
                .as_deref()
                .is_none_or(|s| s.trim().is_empty())
        {
            errors.push(at(
                r.relaxed[0].span(),
                "required_fields.relaxed_reason: say why the site relaxes what its regulation requires".to_string(),
            ));
        }
    }

    if !errors.is_empty() {
        // Rules are visited by name; report in the order of the file.
        errors.sort_by_key(|e| e.line);
        return Err(errors);
    }
    Ok(Policy {
        name: raw.name.into_inner(),
        title: raw.title.into_inner(),
        due_soon_working_hours: raw.due_soon_working_hours,
        escalate_after_working_days: raw.escalate_after_working_days,
        rules,
        period,
        required_fields: required,
        source: file.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::rule_names::*;
    use super::*;
    use std::path::PathBuf;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let path =
                std::env::temp_dir().join(format!("shenguan-policy-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        fn write(&self, file: &str, text: &str) -> String {
            let path = self.0.join(file);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// `(rule, days)` of a profile, absent rules left out.
    fn numbers(policy: &Policy) -> Vec<(&str, u32)> {
        rule_names::ALL
            .iter()
            .filter_map(|name| policy.rule(name).map(|r| (*name, r.within_working_days)))
            .collect()
    }

    #[test]
    fn both_builtin_profiles_load() {
        let policies = Policies::builtin();
        assert_eq!(
            policies.names(),
            ["generic", "jining-2022", "yuanqu-2022", "zichuan-2019"]
        );
        assert_eq!(Policies::load(None).unwrap(), policies);
        for name in policies.names() {
            let policy = policies.get(name).unwrap();
            assert_eq!(policy.due_soon_working_hours, 8);
            assert_eq!(policy.escalate_after_working_days, 2);
            assert!(policy.rules.values().all(|r| !r.citation.is_empty()));
        }
        assert!(policies.get("shizuishan-2020").is_none());
    }

    #[test]
    fn yuanqu_2022_has_the_numbers_of_its_regulation() {
        let policies = Policies::builtin();
        let yuanqu = policies.get("yuanqu-2022").unwrap();
        assert_eq!(
            numbers(yuanqu),
            [
                (PUSH_APPROVAL, 1),            // 第二十二条（一）
                (CLAIM_APPROVAL, 1),           // 第二十二条（一）
                (PUSH_SUPERVISION, 1),         // 第二十三条（一）
                (CLAIM_SUPERVISION, 1),        // 第二十三条（一）
                (PUSH_COMMITMENT_FAILURE, 10), // 第二十四条第三款
                (INSPECTION_NOTICE, 1),        // 第二十五条
                (FORWARD_NOTICE, 1),           // 第二十二条（二）、第二十三条（二）
                (DISPOSITION_FEEDBACK, 20),    // profile default
                (REPLY_INQUIRY, 5),            // profile default
                (INSPECTION_SIGNOFF, 3),       // profile default
                (VERIFY_COMMITMENT, 10),       // 第二十四条第三款
                (CLAIM_NOTICE, 1),             // 第二十二条（一）（二）
                (CLAIM_DECISION, 1),           // 第二十三条末段
                (MEETING_MATERIALS, 1),        // 附件 三（四）
            ]
        );
        assert_eq!(yuanqu.rules[INSPECTION_NOTICE].direction, Direction::Before);
        assert_eq!(yuanqu.rules[MEETING_MATERIALS].direction, Direction::Before);
        assert!(yuanqu.rules[REPLY_INQUIRY].deemed_agreed_when_late);
        assert!(yuanqu.rules[PUSH_COMMITMENT_FAILURE]
            .citation
            .contains("第二十四条"));
        let after = yuanqu
            .rules
            .iter()
            .filter(|(n, _)| *n != INSPECTION_NOTICE && *n != MEETING_MATERIALS);
        assert!(after.clone().all(|(_, r)| r.direction == Direction::After));
        assert!(after
            .filter(|(n, _)| *n != REPLY_INQUIRY)
            .all(|(_, r)| !r.deemed_agreed_when_late));
    }

    #[test]
    fn jining_2022_has_the_numbers_of_its_regulation() {
        let policies = Policies::builtin();
        let jining = policies.get("jining-2022").unwrap();
        assert_eq!(
            numbers(jining),
            [
                (PUSH_APPROVAL, 0),         // 第二十条（一）: 即时
                (CLAIM_APPROVAL, 3),        // 第二十条（一）
                (PUSH_SUPERVISION, 7),      // 第二十一条（二）
                (CLAIM_SUPERVISION, 3),     // 第二十一条（二）
                (DISPOSITION_FEEDBACK, 20), // profile default
                (REPLY_INQUIRY, 5),         // profile default
                (INSPECTION_SIGNOFF, 3),    // profile default
                (VERIFY_COMMITMENT, 10),    // profile default
                (CLAIM_NOTICE, 3),          // profile default
                (CLAIM_DECISION, 3),        // 第二十一条（三）, claim as 第二十条（一）
            ]
        );
        assert!(!jining.rules[REPLY_INQUIRY].deemed_agreed_when_late);
        assert!(jining.rules[PUSH_APPROVAL].citation.contains("即时"));
        assert!(jining
            .rules
            .values()
            .all(|r| r.direction == Direction::After));
    }

    #[test]
    fn profiles_carry_the_period_they_are_in_force() {
        let policies = Policies::builtin();
        let day = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        // 济宁 第三十七条: 2022-12-10 to 2024-12-09, both days included.
        let jining = &policies.get("jining-2022").unwrap().period;
        assert!(!jining.contains(day("2022-12-09")));
        assert!(jining.contains(day("2022-12-10")));
        assert!(jining.contains(day("2024-12-09")));
        assert!(!jining.contains(day("2024-12-10")));
        assert_eq!(jining.describe(), "2022-12-10 to 2024-12-09");
        assert!(jining.citation.contains("第三十七条"));
        // 垣曲 第三十条: from its publication, no end.
        let yuanqu = &policies.get("yuanqu-2022").unwrap().period;
        assert!(yuanqu.contains(day("2030-01-01")));
        assert!(!yuanqu.contains(day("2022-04-25")));
        // The generic profile is no regulation: never out of force.
        assert!(policies
            .get("generic")
            .unwrap()
            .period
            .contains(day("2000-01-01")));
    }

    #[test]
    fn profiles_that_say_so_require_contact_and_address() {
        let policies = Policies::builtin();
        // 垣曲 第二十二条（二） asks for 联系方式 only; 济宁 第二十条（二） for 联系方式 and 地址.
        assert_eq!(
            policies
                .get("yuanqu-2022")
                .unwrap()
                .required_fields
                .of("approval"),
            ["counterpart.contact_phone"]
        );
        assert_eq!(
            policies
                .get("jining-2022")
                .unwrap()
                .required_fields
                .of("approval"),
            ["counterpart.contact_phone", "counterpart.address"]
        );
        for name in ["generic", "zichuan-2019"] {
            assert!(policies
                .get(name)
                .unwrap()
                .required_fields
                .of("approval")
                .is_empty());
        }
    }

    #[test]
    fn a_record_without_the_required_contact_and_address_is_named_missing() {
        let policies = Policies::builtin();
        let jining = policies.get("jining-2022").unwrap();
        let record = serde_json::json!({"counterpart": {"name": "某公司", "contact_phone": "  ", "address": null}});
        let missing = jining
            .required_fields
            .missing("jining-2022", "approval", &record);
        let pointers: Vec<&str> = missing.iter().map(|m| m.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            ["/counterpart/contact_phone", "/counterpart/address"]
        );
        assert_eq!(
            missing[1].reason,
            "地址 counterpart.address is required under policy jining-2022 (济宁 2022 第二十条（二）); the record has none"
        );
        let complete =
            serde_json::json!({"counterpart": {"contact_phone": "0952-1", "address": "石嘴山市"}});
        assert!(jining
            .required_fields
            .missing("jining-2022", "approval", &complete)
            .is_empty());
        assert!(jining
            .required_fields
            .missing("jining-2022", "supervision", &record)
            .is_empty());
    }

    #[test]
    fn the_event_bytes_are_read_as_the_record_is() {
        let policies = Policies::builtin();
        let jining = &policies.get("jining-2022").unwrap().required_fields;
        let records = [
            serde_json::json!({"counterpart": {"contact_phone": "  ", "address": null}}),
            serde_json::json!({"counterpart": {"contact_phone": "0952-1", "address": "石嘴山市"}}),
            serde_json::json!({"counterpart": {"contact_phone": 952, "address": ["x"]}}),
            serde_json::json!({"counterpart": {"contact_phone": "\u{3000}"}}),
            serde_json::json!({"counterpart": {"con\"tact": 1, "address": "a"}}),
            serde_json::json!({"counterpart": "text"}),
            serde_json::json!({"title": "no counterpart"}),
        ];
        for record in records {
            let event = serde_json::to_vec(
                &serde_json::json!({"id": "e1", "type": "approval", "data": &record}),
            )
            .unwrap();
            let from_value = jining.missing("jining-2022", "approval", &record);
            let from_event = jining.missing_in_event("jining-2022", "approval", &event);
            assert_eq!(from_event, from_value, "{record}");
        }
        assert!(jining
            .missing_in_event("jining-2022", "supervision", b"not json")
            .is_empty());
        assert_eq!(
            jining
                .missing_in_event("jining-2022", "approval", b"not json")
                .len(),
            2
        );
    }

    #[test]
    fn a_site_relaxes_a_required_field_only_with_a_reason() {
        let dir = TempDir::new("relax");
        let text = include_str!("../../../../policies/jining-2022.toml");
        dir.write(
            "jining-2022.toml",
            &text.replace(
                "citation = \"济宁 2022 第二十条（二）\"",
                "citation = \"济宁 2022 第二十条（二）\"\nrelaxed = [\"counterpart.address\"]\nrelaxed_reason = \"政务服务网 2026 版接口未提供地址，2027 年升级后恢复\"",
            ),
        );
        let policies = Policies::load(Some(&dir.0)).unwrap();
        let jining = policies.get("jining-2022").unwrap();
        assert_eq!(
            jining.required_fields.of("approval"),
            ["counterpart.contact_phone"]
        );
        assert_eq!(jining.required_fields.relaxed, ["counterpart.address"]);

        let file = dir.write(
            "jining-2022.toml",
            &text.replace(
                "citation = \"济宁 2022 第二十条（二）\"",
                "citation = \"济宁 2022 第二十条（二）\"\nrelaxed = [\"counterpart.address\", \"counterpart.fax\"]",
            ),
        );
        let shown: Vec<String> = Policies::load(Some(&dir.0))
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with(&file)
                    && e.contains("`counterpart.fax` is not a required field")),
            "{shown:?}"
        );
        assert!(
            shown.iter().any(|e| e.contains("relaxed_reason: say why")),
            "{shown:?}"
        );
    }

    #[test]
    fn zichuan_copies_within_one_working_day_and_labels_its_defaults() {
        let policies = Policies::builtin();
        let zichuan = policies.get("zichuan-2019").unwrap();
        assert_eq!(zichuan.rules[FORWARD_NOTICE].within_working_days, 1);
        assert!(zichuan.rules[FORWARD_NOTICE].citation.contains("三（二）2"));
        for (name, rule) in &zichuan.rules {
            if name != FORWARD_NOTICE {
                assert!(
                    rule.citation.starts_with("default ("),
                    "{name}: {}",
                    rule.citation
                );
            }
        }
        assert!(!zichuan.rules[REPLY_INQUIRY].deemed_agreed_when_late);
        let generic = policies.get("generic").unwrap();
        assert!(generic
            .rules
            .values()
            .all(|r| r.citation.starts_with("default (")));
    }

    #[test]
    fn immediately_means_by_the_end_of_the_decisions_working_day() {
        let calendar = Calendar::builtin();
        let push = Policies::builtin().get("jining-2022").unwrap().rules[PUSH_APPROVAL].clone();
        let decided = |s: &str| DateTime::parse_from_rfc3339(s).unwrap();
        assert_eq!(
            push.due_at(&calendar, decided("2026-09-30T10:00:00+08:00"))
                .unwrap(),
            decided("2026-09-30T23:59:59+08:00")
        );
        // Decided on a holiday: by the end of the next working day.
        assert_eq!(
            push.due_at(&calendar, decided("2026-10-02T10:00:00+08:00"))
                .unwrap(),
            decided("2026-10-08T23:59:59+08:00")
        );
    }

    #[test]
    fn inspection_notice_is_due_before_the_inspection() {
        let calendar = Calendar::builtin();
        let notice =
            Policies::builtin().get("yuanqu-2022").unwrap().rules[INSPECTION_NOTICE].clone();
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap();
        // Inspection on Tuesday 2026-02-24, right after 春节: notice due by 补班 Saturday 02-14.
        assert_eq!(
            notice
                .due_at(&calendar, t("2026-02-24T09:00:00+08:00"))
                .unwrap(),
            t("2026-02-14T23:59:59+08:00")
        );
    }

    #[test]
    fn overrides_change_one_rule_and_refuse_unknown_names() {
        let policies = Policies::builtin();
        let yuanqu = policies.get("yuanqu-2022").unwrap();
        let overrides = BTreeMap::from([(REPLY_INQUIRY.to_string(), 3)]);
        let item = yuanqu.with_overrides(&overrides).unwrap();
        assert_eq!(item.rules[REPLY_INQUIRY].within_working_days, 3);
        assert!(item.rules[REPLY_INQUIRY].deemed_agreed_when_late);
        assert_eq!(item.rules[CLAIM_APPROVAL], yuanqu.rules[CLAIM_APPROVAL]);
        assert_eq!(yuanqu.rules[REPLY_INQUIRY].within_working_days, 5);

        let typo = BTreeMap::from([("reply_inquery".to_string(), 3)]);
        let err = yuanqu.with_overrides(&typo).unwrap_err();
        assert!(matches!(&err, OverrideError::UnknownRule { rule, .. } if rule == "reply_inquery"));
        assert!(err
            .to_string()
            .starts_with("policy yuanqu-2022 has no rule `reply_inquery`"));

        // A rule the profile does not define cannot be overridden into existence.
        let jining = policies.get("jining-2022").unwrap();
        let absent = BTreeMap::from([(INSPECTION_NOTICE.to_string(), 2)]);
        assert!(matches!(
            jining.with_overrides(&absent),
            Err(OverrideError::UnknownRule { .. })
        ));

        let zero = BTreeMap::from([(INSPECTION_NOTICE.to_string(), 0)]);
        assert_eq!(
            yuanqu.with_overrides(&zero),
            Err(OverrideError::ZeroBefore {
                rule: INSPECTION_NOTICE.to_string()
            })
        );
    }

    const SITE_PROFILE: &str = r#"name = "zichuan-2019"
title = "淄川区人民政府办公室关于建立行政审批与行政监管衔接机制的通知"
due_soon_working_hours = 4
escalate_after_working_days = 1

[rules.forward_notice]
within_working_days = 1
citation = "三（二）2"
"#;

    #[test]
    fn a_site_directory_adds_and_replaces_profiles() {
        let dir = TempDir::new("site");
        let file = dir.write("zichuan-2019.toml", SITE_PROFILE);
        dir.write(
            "jining-2022.toml",
            &include_str!("../../../../policies/jining-2022.toml")
                .replace("within_working_days = 3", "within_working_days = 2"),
        );
        dir.write("notes.md", "ignored");
        let policies = Policies::load(Some(&dir.0)).unwrap();
        assert_eq!(
            policies.names(),
            ["generic", "jining-2022", "yuanqu-2022", "zichuan-2019"]
        );
        let zichuan = policies.get("zichuan-2019").unwrap();
        assert_eq!(zichuan.source, file);
        assert_eq!(numbers(zichuan), [(FORWARD_NOTICE, 1)]);
        let jining = policies.get("jining-2022").unwrap();
        assert_eq!(jining.rules[CLAIM_APPROVAL].within_working_days, 2);
    }

    #[test]
    fn unknown_keys_and_bad_rules_are_reported_with_lines() {
        let dir = TempDir::new("invalid");
        let unknown = dir.write(
            "a-site.toml",
            "name = \"a-site\"\ntitle = \"t\"\ndue_soon_working_hours = 8\nescalate_after_working_days = 2\nescalate_hours = 3\n\n[rules.push_approval]\nwithin_working_days = 1\ncitation = \"x\"\n",
        );
        let unknown_rule_key = dir.write(
            "b-site.toml",
            "name = \"b-site\"\ntitle = \"t\"\ndue_soon_working_hours = 8\nescalate_after_working_days = 2\n\n[rules.push_approval]\nwithin_working_days = 1\nwithin_hours = 3\ncitation = \"x\"\n",
        );
        let semantic = dir.write(
            "c-site.toml",
            r#"name = "c-site2"
title = "t"
due_soon_working_hours = 8
escalate_after_working_days = 2

[rules.push_aproval]
within_working_days = 1
citation = "x"

[rules.inspection_notice]
within_working_days = 0
direction = "after"
citation = ""

[rules.claim_approval]
within_working_days = 1
deemed_agreed_when_late = true
citation = "x"
"#,
        );
        let negative = dir.write(
            "d-site.toml",
            "name = \"d-site\"\ntitle = \"t\"\ndue_soon_working_hours = 8\nescalate_after_working_days = 2\n\n[rules.push_approval]\nwithin_working_days = -1\ncitation = \"x\"\n",
        );
        let errors = Policies::load(Some(&dir.0)).unwrap_err();
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            shown[0].starts_with(&format!("{unknown}:5: unknown field `escalate_hours`")),
            "{shown:?}"
        );
        assert!(
            shown[1].starts_with(&format!(
                "{unknown_rule_key}:8: unknown field `within_hours`"
            )),
            "{shown:?}"
        );
        assert_eq!(
            shown[2..8],
            [
                format!("{semantic}:1: name: `c-site2` but the file is named c-site.toml"),
                format!("{semantic}:6: rules.push_aproval: unknown rule `push_aproval` (known: {})", rule_names::ALL.join(", ")),
                format!("{semantic}:11: rules.inspection_notice.within_working_days: a notice \"at least 0 working days before\" is no deadline; use 1 or more"),
                format!("{semantic}:12: rules.inspection_notice.direction: `inspection_notice` is counted before its event"),
                format!("{semantic}:13: rules.inspection_notice.citation: cite the article, or say \"profile default\" and why"),
                format!("{semantic}:17: rules.claim_approval.deemed_agreed_when_late: only `reply_inquiry` can be deemed agreed when late"),
            ]
        );
        assert!(
            shown[8].starts_with(&format!("{negative}:7: ")),
            "{shown:?}"
        );
        assert_eq!(shown.len(), 9, "{shown:?}");
    }
}
