//! The working-day calendar: which dates are working days in mainland China.
//!
//! A date is a working day when it is a Monday–Friday not listed as `off`, or a Saturday/Sunday
//! listed as `work` (调休/补班). The lists come from the State Council General Office holiday
//! notices, one TOML file per year under `calendar/`. The shipped years are compiled in; a site
//! adds the next year (published in late autumn) by dropping `<year>.toml` into a directory named
//! in its configuration, without a rebuild, and a file for a year already built in replaces it.
//!
//! A date in a year without data is the error [`MissingYear`], never a weekend-only guess: the
//! arithmetic here is exact or it refuses. Everything in this module is pure and synchronous; the
//! only I/O is [`Calendar::load`] reading the site's directory once at start-up.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveTime, TimeDelta, TimeZone, Weekday};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::adapter::convert::shanghai;

/// The years shipped in the binary, converted from the State Council notices.
const BUILTIN: &[(&str, &str)] = &[
    (
        "calendar/2015.toml",
        include_str!("../../../../calendar/2015.toml"),
    ),
    (
        "calendar/2016.toml",
        include_str!("../../../../calendar/2016.toml"),
    ),
    (
        "calendar/2017.toml",
        include_str!("../../../../calendar/2017.toml"),
    ),
    (
        "calendar/2018.toml",
        include_str!("../../../../calendar/2018.toml"),
    ),
    (
        "calendar/2019.toml",
        include_str!("../../../../calendar/2019.toml"),
    ),
    (
        "calendar/2020.toml",
        include_str!("../../../../calendar/2020.toml"),
    ),
    (
        "calendar/2021.toml",
        include_str!("../../../../calendar/2021.toml"),
    ),
    (
        "calendar/2022.toml",
        include_str!("../../../../calendar/2022.toml"),
    ),
    (
        "calendar/2023.toml",
        include_str!("../../../../calendar/2023.toml"),
    ),
    (
        "calendar/2024.toml",
        include_str!("../../../../calendar/2024.toml"),
    ),
    (
        "calendar/2025.toml",
        include_str!("../../../../calendar/2025.toml"),
    ),
    (
        "calendar/2026.toml",
        include_str!("../../../../calendar/2026.toml"),
    ),
];

/// Years a calendar file may describe. A wider range would only let typos such as
/// `year = 20266` through.
const YEARS_ACCEPTED: std::ops::RangeInclusive<i32> = 2000..=2099;

/// A date falls in a year for which the calendar has no holiday data.
///
/// Deadlines that need such a date cannot be computed; callers surface this (metric + log) and
/// retry once the year's file has been added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error(
    "no holiday data for {year}: add calendar file {year}.toml once the State Council notice \
     for {year} is published"
)]
pub struct MissingYear {
    /// The calendar year without data.
    pub year: i32,
}

/// One problem found while loading calendar files, located by file and, where known, line.
///
/// Displayed as `file:line: message` (or `file: message` when no line applies, e.g. an
/// unreadable directory). The message starts with the offending field, e.g. `off[3].date`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarError {
    /// The file (or directory) the problem is in, as given to [`Calendar::load`].
    pub file: String,
    /// 1-based line of the offending value, when the problem is inside a file.
    pub line: Option<usize>,
    /// What is wrong, starting with the field path where there is one.
    pub message: String,
}

impl fmt::Display for CalendarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for CalendarError {}

/// Whether a listed date is a holiday or an adjusted working day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Off,
    Work,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Off => "off",
            Kind::Work => "work",
        }
    }
}

/// A date listed in a year file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    kind: Kind,
    holiday: String,
    /// The year of the notice that arranged it: the file's year, except for the first days of
    /// the next year's 元旦 holiday that fall in late December.
    notice_year: i32,
}

/// The validated data of one year.
#[derive(Debug, Clone, PartialEq, Eq)]
struct YearData {
    notice: String,
    /// Where the data came from: `calendar/2026.toml` (built in) or the site's file path.
    source: String,
    days: BTreeMap<NaiveDate, Listed>,
}

/// The working-day calendar: holiday data for a contiguous run of years.
///
/// Owned, immutable data; cheap to share behind an `Arc`. Construct it with
/// [`Calendar::builtin`] or [`Calendar::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    years: BTreeMap<i32, YearData>,
    version: String,
}

impl Calendar {
    /// The calendar compiled into the binary (2015–2026).
    pub fn builtin() -> Calendar {
        let sources = BUILTIN
            .iter()
            .map(|(file, text)| (file.to_string(), text.to_string()))
            .collect();
        match Self::from_sources(sources, "calendar") {
            Ok(calendar) => calendar,
            // The unit tests load the embedded files, so this is unreachable in a tested build.
            Err(errors) => panic!("embedded calendar data is invalid: {errors:?}"),
        }
    }

    /// The built-in years plus every `<year>.toml` in `extra_dir`; a file for a year already
    /// built in replaces that year entirely. Other file types in the directory are ignored.
    ///
    /// Every problem is reported at once (bad dates, a date outside the file's year, a date both
    /// `off` and `work`, a `work` day that is not a weekend, duplicates, unknown fields, a gap
    /// between years), each with its file and line.
    pub fn load(extra_dir: Option<&Path>) -> Result<Calendar, Vec<CalendarError>> {
        let mut sources: BTreeMap<String, (String, String)> = BTreeMap::new();
        for (file, text) in BUILTIN {
            sources.insert(year_key(file), (file.to_string(), text.to_string()));
        }
        let mut errors = Vec::new();
        let origin = match extra_dir {
            Some(dir) => {
                for (file, text) in read_dir_files(dir, &mut errors) {
                    sources.insert(year_key(&file), (file, text));
                }
                dir.display().to_string()
            }
            None => "calendar".to_string(),
        };
        match Self::from_sources(sources.into_values().collect(), &origin) {
            Ok(calendar) if errors.is_empty() => Ok(calendar),
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(more);
                Err(errors)
            }
        }
    }

    /// Parses and validates `(file name, text)` pairs, one per year, and checks the years are
    /// contiguous. `origin` names the place in errors that belong to no single file.
    fn from_sources(
        sources: Vec<(String, String)>,
        origin: &str,
    ) -> Result<Calendar, Vec<CalendarError>> {
        let mut errors = Vec::new();
        let mut years = BTreeMap::new();
        for (file, text) in sources {
            // The year comes from the file name, so two sources never claim the same year.
            match parse_year(&file, &text) {
                Ok((year, data)) => {
                    years.insert(year, data);
                }
                Err(mut found) => errors.append(&mut found),
            }
        }
        let listed: Vec<i32> = years.keys().copied().collect();
        for pair in listed.windows(2) {
            if pair[1] != pair[0] + 1 {
                errors.push(CalendarError {
                    file: origin.to_string(),
                    line: None,
                    message: format!(
                        "no calendar data for {}..={} between {} and {}: years must be contiguous",
                        pair[0] + 1,
                        pair[1] - 1,
                        pair[0],
                        pair[1]
                    ),
                });
            }
        }
        if years.is_empty() && errors.is_empty() {
            errors.push(CalendarError {
                file: origin.to_string(),
                line: None,
                message: "no calendar years".to_string(),
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let version = version_of(&years);
        Ok(Calendar { years, version })
    }

    /// A short, stable identifier of the data in use, e.g. `cn-2015-2026-1a2b3c4d`: the covered
    /// years and the first 8 hex digits of the SHA-256 of the canonical data (every listed date
    /// with its kind). Holiday names and comments do not change it; any date that changes a
    /// computation does. Stored next to every computed deadline.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether `d` is a working day: a weekday unless listed `off`, a weekend day only if listed
    /// `work` (调休/补班).
    pub fn is_working_day(&self, d: NaiveDate) -> Result<bool, MissingYear> {
        let year = self
            .years
            .get(&d.year())
            .ok_or(MissingYear { year: d.year() })?;
        Ok(match year.days.get(&d) {
            Some(listed) => listed.kind == Kind::Work,
            None => !is_weekend(d),
        })
    }

    /// The name of the holiday arrangement `d` belongs to (`春节`, `国庆节` …), when it is a
    /// listed holiday or adjusted working day.
    pub fn holiday(&self, d: NaiveDate) -> Option<&str> {
        let year = self.years.get(&d.year())?;
        year.days.get(&d).map(|listed| listed.holiday.as_str())
    }

    /// The `N`th working day after `d`; `d` itself never counts. With `n = 0`: `d` if it is a
    /// working day, else the next working day.
    pub fn add_working_days(&self, d: NaiveDate, n: u32) -> Result<NaiveDate, MissingYear> {
        self.step_working_days(d, n, Step::Forward)
    }

    /// The `N`th working day before `d`; `d` itself never counts. For "notify at least N working
    /// days before" this is the latest allowed notice date. With `n = 0`: `d` if it is a working
    /// day, else the previous working day.
    pub fn sub_working_days(&self, d: NaiveDate, n: u32) -> Result<NaiveDate, MissingYear> {
        self.step_working_days(d, n, Step::Backward)
    }

    fn step_working_days(
        &self,
        d: NaiveDate,
        n: u32,
        step: Step,
    ) -> Result<NaiveDate, MissingYear> {
        let mut day = d;
        if n == 0 {
            while !self.is_working_day(day)? {
                day = step.apply(day)?;
            }
            return Ok(day);
        }
        let mut left = n;
        loop {
            day = step.apply(day)?;
            if self.is_working_day(day)? {
                left -= 1;
                if left == 0 {
                    return Ok(day);
                }
            }
        }
    }

    /// The deadline "within `n` working days" of `event`: 23:59:59 Asia/Shanghai (+08:00) of the
    /// `n`th working day after the event's Shanghai local date. With `n = 0` ("immediately"):
    /// the end of the event's own day if it is a working day, else of the next working day.
    pub fn deadline_after(
        &self,
        event: DateTime<FixedOffset>,
        n: u32,
    ) -> Result<DateTime<FixedOffset>, MissingYear> {
        let local = event.with_timezone(&shanghai()).date_naive();
        Ok(end_of_day(self.add_working_days(local, n)?))
    }

    /// The deadline "at least `n` working days before" `event` (e.g. notice of a joint site
    /// inspection): 23:59:59 Asia/Shanghai of the `n`th working day before the event's Shanghai
    /// local date, the latest moment the notice may be given.
    pub fn deadline_before(
        &self,
        event: DateTime<FixedOffset>,
        n: u32,
    ) -> Result<DateTime<FixedOffset>, MissingYear> {
        let local = event.with_timezone(&shanghai()).date_naive();
        Ok(end_of_day(self.sub_working_days(local, n)?))
    }

    /// Seconds between two instants that fall on working days (Shanghai local calendar days,
    /// 24 hours each; partial first and last days count proportionally). Negative when `to` is
    /// before `from`. Fails if any day in between is in a year without data.
    pub fn working_seconds_between(
        &self,
        from: DateTime<FixedOffset>,
        to: DateTime<FixedOffset>,
    ) -> Result<i64, MissingYear> {
        if to < from {
            return self.working_seconds_between(to, from).map(|s| -s);
        }
        let tz = shanghai();
        let start = from.with_timezone(&tz).naive_local();
        let end = to.with_timezone(&tz).naive_local();
        let mut total = TimeDelta::zero();
        let mut day = start.date();
        while day.and_time(NaiveTime::MIN) < end {
            let next = Step::Forward.apply(day)?;
            if self.is_working_day(day)? {
                let lo = start.max(day.and_time(NaiveTime::MIN));
                let hi = end.min(next.and_time(NaiveTime::MIN));
                total += hi - lo;
            }
            day = next;
        }
        Ok(total.num_seconds())
    }

    /// The latest instant `t` with `working_seconds_between(from, t) <= seconds`: where `seconds`
    /// of working time after `from` run out, moved past the days off that follow when they run
    /// out at the end of a working day. Every instant after it is more than `seconds` of working
    /// time away from `from`.
    pub fn last_within_working_seconds(
        &self,
        from: DateTime<FixedOffset>,
        seconds: u32,
    ) -> Result<DateTime<FixedOffset>, MissingYear> {
        let tz = shanghai();
        let start = from.with_timezone(&tz).naive_local();
        let mut left = TimeDelta::seconds(i64::from(seconds));
        let mut day = start.date();
        loop {
            let next = Step::Forward.apply(day)?;
            if self.is_working_day(day)? {
                let lo = start.max(day.and_time(NaiveTime::MIN));
                let rest_of_day = next.and_time(NaiveTime::MIN) - lo;
                if rest_of_day > left {
                    return Ok(tz
                        .from_local_datetime(&(lo + left))
                        .single()
                        .expect("a fixed offset maps every local time in range to one instant"));
                }
                left -= rest_of_day;
            }
            day = next;
        }
    }

    /// The last date with holiday data (31 December of the last covered year).
    pub fn last_covered_date(&self) -> NaiveDate {
        let last = self.years.keys().next_back().copied();
        // `from_sources` refuses an empty calendar and every year is within YEARS_ACCEPTED.
        last.and_then(|year| NaiveDate::from_ymd_opt(year, 12, 31))
            .expect("a calendar holds at least one valid year")
    }

    /// Days of holiday data left from `today` to [`Calendar::last_covered_date`]: 0 on the last
    /// covered day, negative once past it. Exported as `shenguan_calendar_days_remaining`.
    pub fn days_remaining(&self, today: NaiveDate) -> i64 {
        (self.last_covered_date() - today).num_days()
    }

    /// The covered years, ascending.
    pub fn years(&self) -> Vec<i32> {
        self.years.keys().copied().collect()
    }

    /// Where a year's data came from (`calendar/2026.toml` when built in, else the site's file
    /// path), for start-up logs.
    pub fn year_source(&self, year: i32) -> Option<&str> {
        self.years.get(&year).map(|data| data.source.as_str())
    }

    /// The notice(s) a year's data was taken from.
    pub fn year_notice(&self, year: i32) -> Option<&str> {
        self.years.get(&year).map(|data| data.notice.as_str())
    }
}

#[derive(Clone, Copy)]
enum Step {
    Forward,
    Backward,
}

impl Step {
    fn apply(self, d: NaiveDate) -> Result<NaiveDate, MissingYear> {
        // Only reachable at chrono's date limits, far outside any year a file may describe.
        let beyond = |year: i32| MissingYear { year };
        match self {
            Step::Forward => d.succ_opt().ok_or(beyond(d.year().saturating_add(1))),
            Step::Backward => d.pred_opt().ok_or(beyond(d.year().saturating_sub(1))),
        }
    }
}

fn is_weekend(d: NaiveDate) -> bool {
    matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

/// 23:59:59 Asia/Shanghai on `d`.
fn end_of_day(d: NaiveDate) -> DateTime<FixedOffset> {
    let last_second = NaiveTime::from_hms_opt(23, 59, 59).expect("23:59:59 is a valid time");
    shanghai()
        .from_local_datetime(&d.and_time(last_second))
        .single()
        .expect("a fixed offset maps every local time in range to one instant")
}

fn version_of(years: &BTreeMap<i32, YearData>) -> String {
    let mut canonical = String::new();
    for (year, data) in years {
        canonical.push_str(&format!("year {year}\n"));
        for (date, listed) in &data.days {
            canonical.push_str(&format!("{date} {}\n", listed.kind.as_str()));
        }
    }
    let digest = hex::encode(Sha256::digest(canonical.as_bytes()));
    let first = years.keys().next().copied().unwrap_or_default();
    let last = years.keys().next_back().copied().unwrap_or_default();
    format!("cn-{first}-{last}-{}", &digest[..8])
}

/// The key a source replaces another by: the file name (`2026.toml`), so a site file replaces
/// the built-in file for the same year.
fn year_key(file: &str) -> String {
    Path::new(file)
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.to_string())
}

/// The `.toml` files of a site directory, sorted by name.
fn read_dir_files(dir: &Path, errors: &mut Vec<CalendarError>) -> Vec<(String, String)> {
    let (files, problems) = super::toml_files(dir, "calendar");
    errors.extend(problems.into_iter().map(|(file, message)| CalendarError {
        file,
        line: None,
        message,
    }));
    files
}

/// The file format; see `calendar/README.md`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawYear {
    year: Spanned<i64>,
    notice: Spanned<String>,
    off: Vec<RawDay>,
    work: Vec<RawDay>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDay {
    date: Spanned<toml::value::Datetime>,
    holiday: Spanned<String>,
    notice_year: Option<Spanned<i64>>,
}

/// 1-based line of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The year a file name promises: `2027.toml` → 2027.
fn year_of_file_name(file: &str) -> Option<i32> {
    let stem = Path::new(file).file_stem()?.to_str()?;
    if stem.len() == 4 && stem.bytes().all(|b| b.is_ascii_digit()) {
        stem.parse().ok()
    } else {
        None
    }
}

fn parse_year(file: &str, text: &str) -> Result<(i32, YearData), Vec<CalendarError>> {
    let at = |span: std::ops::Range<usize>, message: String| CalendarError {
        file: file.to_string(),
        line: Some(line_of(text, span.start)),
        message,
    };
    let raw: RawYear = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            return Err(vec![CalendarError {
                file: file.to_string(),
                line: e.span().map(|span| line_of(text, span.start)),
                message: e.message().trim_end().to_string(),
            }])
        }
    };
    let mut errors = Vec::new();

    let year = match year_of_file_name(file) {
        Some(named) if i64::from(named) == *raw.year.get_ref() => named,
        Some(named) => {
            errors.push(at(
                raw.year.span(),
                format!(
                    "year: {} but the file is named {named}.toml",
                    raw.year.get_ref()
                ),
            ));
            named
        }
        None => {
            return Err(vec![CalendarError {
                file: file.to_string(),
                line: None,
                message: "a calendar file must be named <year>.toml, e.g. 2027.toml".to_string(),
            }])
        }
    };
    if !YEARS_ACCEPTED.contains(&year) {
        errors.push(at(
            raw.year.span(),
            format!(
                "year: {year} is outside {}..={}",
                YEARS_ACCEPTED.start(),
                YEARS_ACCEPTED.end()
            ),
        ));
    }
    if raw.notice.get_ref().trim().is_empty() {
        errors.push(at(
            raw.notice.span(),
            "notice: name the State Council notice the data comes from".to_string(),
        ));
    }
    if raw.off.is_empty() {
        errors.push(CalendarError {
            file: file.to_string(),
            line: None,
            message: "off: no holidays listed; every year has at least 元旦".to_string(),
        });
    }

    // date -> (kind, line) of its first listing, to report duplicates and conflicts.
    let mut seen: BTreeMap<NaiveDate, (Kind, usize)> = BTreeMap::new();
    let mut days = BTreeMap::new();
    let lists = [(Kind::Off, &raw.off), (Kind::Work, &raw.work)];
    for (kind, list) in lists {
        for (index, day) in list.iter().enumerate() {
            let path = format!("{}[{index}]", kind.as_str());
            let line = line_of(text, day.date.span().start);
            let date = match local_date(day.date.get_ref()) {
                Some(date) => date,
                None => {
                    errors.push(at(
                        day.date.span(),
                        format!(
                            "{path}.date: {} is not a local date like {year}-10-01",
                            day.date.get_ref()
                        ),
                    ));
                    continue;
                }
            };
            let mut ok = true;
            if date.year() != year {
                errors.push(at(
                    day.date.span(),
                    format!("{path}.date: {date} is outside {year}"),
                ));
                ok = false;
            }
            if kind == Kind::Work && !is_weekend(date) {
                errors.push(at(
                    day.date.span(),
                    format!(
                        "{path}.date: {date} is a {}; only a Saturday or Sunday can be an \
                         adjusted working day",
                        date.weekday()
                    ),
                ));
                ok = false;
            }
            match seen.get(&date) {
                Some((first_kind, first_line)) if *first_kind == kind => {
                    errors.push(at(
                        day.date.span(),
                        format!("{path}.date: {date} is listed twice (first at line {first_line})"),
                    ));
                    ok = false;
                }
                Some((first_kind, first_line)) => {
                    errors.push(at(
                        day.date.span(),
                        format!(
                            "{path}.date: {date} is both {} (line {first_line}) and {}",
                            first_kind.as_str(),
                            kind.as_str()
                        ),
                    ));
                    ok = false;
                }
                None => {
                    seen.insert(date, (kind, line));
                }
            }
            if day.holiday.get_ref().trim().is_empty() {
                errors.push(at(
                    day.holiday.span(),
                    format!("{path}.holiday: name the holiday, e.g. 春节"),
                ));
                ok = false;
            }
            let notice_year = match &day.notice_year {
                None => year,
                Some(given) => {
                    let value = *given.get_ref();
                    if value == i64::from(year) || value == i64::from(year) + 1 {
                        value as i32
                    } else {
                        errors.push(at(
                            given.span(),
                            format!(
                                "{path}.notice_year: {value} must be {year} or {} (a late-December \
                                 day of the next year's 元旦 holiday)",
                                year + 1
                            ),
                        ));
                        ok = false;
                        year
                    }
                }
            };
            if ok {
                days.insert(
                    date,
                    Listed {
                        kind,
                        holiday: day.holiday.get_ref().clone(),
                        notice_year,
                    },
                );
            }
        }
    }

    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(errors);
    }
    Ok((
        year,
        YearData {
            notice: raw.notice.into_inner(),
            source: file.to_string(),
            days,
        },
    ))
}

/// A TOML local date (no time, no offset) as a calendar date.
fn local_date(value: &toml::value::Datetime) -> Option<NaiveDate> {
    if value.time.is_some() || value.offset.is_some() {
        return None;
    }
    let date = value.date?;
    NaiveDate::from_ymd_opt(
        i32::from(date.year),
        u32::from(date.month),
        u32::from(date.day),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn at(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let path = std::env::temp_dir()
                .join(format!("shenguan-calendar-{}-{name}", std::process::id()));
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

    /// Test data only: a plausible 2027 元旦 arrangement (1 January 2027 is a Friday), not the
    /// published notice.
    const TEST_2027: &str = r#"year = 2027
notice = "test data"
off = [
  { date = 2027-01-01, holiday = "元旦" },
]
work = []
"#;

    #[test]
    fn embedded_data_loads_and_covers_2015_to_2026() {
        let calendar = Calendar::builtin();
        assert_eq!(calendar.years(), (2015..=2026).collect::<Vec<_>>());
        assert_eq!(calendar.last_covered_date(), date("2026-12-31"));
        assert_eq!(Calendar::load(None).unwrap(), calendar);
    }

    #[test]
    fn version_names_the_years_and_a_digest_of_the_data() {
        let version = Calendar::builtin().version().to_string();
        let (prefix, digest) = version.rsplit_once('-').unwrap();
        assert_eq!(prefix, "cn-2015-2026");
        assert_eq!(digest.len(), 8);
        assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()));
        // Pinned: any edit to the shipped dates must change this deliberately.
        assert_eq!(version, "cn-2015-2026-498c7206");
        // Stable across loads, and changes when a year is added.
        assert_eq!(Calendar::builtin().version(), version);
        let dir = TempDir::new("version");
        dir.write("2027.toml", TEST_2027);
        let extended = Calendar::load(Some(&dir.0)).unwrap();
        assert!(extended.version().starts_with("cn-2015-2027-"));
    }

    #[test]
    fn weekends_are_off_and_weekdays_work_unless_listed() {
        let calendar = Calendar::builtin();
        assert!(calendar.is_working_day(date("2026-03-02")).unwrap()); // Monday
        assert!(!calendar.is_working_day(date("2026-03-07")).unwrap()); // Saturday
        assert!(!calendar.is_working_day(date("2026-10-01")).unwrap()); // 国庆节, Thursday
        assert!(calendar.is_working_day(date("2026-10-10")).unwrap()); // 补班, Saturday
        assert!(calendar.is_working_day(date("2026-01-04")).unwrap()); // 补班, Sunday
        assert_eq!(calendar.holiday(date("2026-10-10")), Some("国庆节"));
        assert_eq!(calendar.holiday(date("2026-03-02")), None);
    }

    #[test]
    fn national_day_2026_pushes_a_deadline_to_8_october() {
        // 中秋 9-25..27, 国庆 10-01..07 off; 补班 9-20 (Sun) and 10-10 (Sat).
        let calendar = Calendar::builtin();
        assert_eq!(
            calendar.add_working_days(date("2026-09-30"), 1).unwrap(),
            date("2026-10-08")
        );
        assert_eq!(
            calendar.add_working_days(date("2026-09-24"), 1).unwrap(),
            date("2026-09-28")
        );
        assert_eq!(
            calendar.add_working_days(date("2026-10-09"), 1).unwrap(),
            date("2026-10-10")
        );
        assert_eq!(
            calendar.add_working_days(date("2026-09-18"), 1).unwrap(),
            date("2026-09-20")
        );
    }

    #[test]
    fn friday_before_spring_festival_2026_plus_one_is_the_make_up_saturday() {
        // 春节 2026: off 02-15..02-23, 补班 Saturday 02-14 and Saturday 02-28.
        let calendar = Calendar::builtin();
        assert_eq!(
            calendar.add_working_days(date("2026-02-13"), 1).unwrap(),
            date("2026-02-14")
        );
        assert_eq!(
            calendar.add_working_days(date("2026-02-13"), 2).unwrap(),
            date("2026-02-24")
        );
        assert_eq!(
            calendar.add_working_days(date("2026-02-13"), 3).unwrap(),
            date("2026-02-25")
        );
    }

    #[test]
    fn national_day_2025_plus_one_is_9_october() {
        let calendar = Calendar::builtin();
        assert_eq!(
            calendar.add_working_days(date("2025-09-30"), 1).unwrap(),
            date("2025-10-09")
        );
    }

    #[test]
    fn a_claim_on_a_make_up_saturday_counts_as_a_working_day() {
        let calendar = Calendar::builtin();
        // Pushed Friday 2026-02-13 10:00, claimed on 补班 Saturday 02-14 09:00.
        let pushed = at("2026-02-13T10:00:00+08:00");
        let claimed = at("2026-02-14T09:00:00+08:00");
        assert_eq!(
            calendar.working_seconds_between(pushed, claimed).unwrap(),
            23 * 3600
        );
        assert!(claimed <= calendar.deadline_after(pushed, 1).unwrap());
    }

    #[test]
    fn working_seconds_skip_days_off_and_count_partial_days() {
        let calendar = Calendar::builtin();
        // Wednesday 2026-09-30 18:00 → Thursday 10-08 06:00: 6 h of 09-30, nothing 10-01..07
        // (holiday), 6 h of 10-08.
        let from = at("2026-09-30T18:00:00+08:00");
        let to = at("2026-10-08T06:00:00+08:00");
        assert_eq!(
            calendar.working_seconds_between(from, to).unwrap(),
            12 * 3600
        );
        assert_eq!(
            calendar.working_seconds_between(to, from).unwrap(),
            -12 * 3600
        );
        assert_eq!(calendar.working_seconds_between(from, from).unwrap(), 0);
        // Instants in another offset are read in Shanghai time: 10:00Z = 18:00+08:00.
        let from_utc = at("2026-09-30T10:00:00Z");
        assert_eq!(
            calendar.working_seconds_between(from_utc, to).unwrap(),
            12 * 3600
        );
        // A whole weekend counts nothing.
        let saturday = at("2026-03-07T00:00:00+08:00");
        let monday = at("2026-03-09T00:00:00+08:00");
        assert_eq!(
            calendar.working_seconds_between(saturday, monday).unwrap(),
            0
        );
    }

    #[test]
    fn the_last_instant_within_working_time_skips_days_off_and_is_the_bound_of_working_seconds() {
        let calendar = Calendar::builtin();
        let within = |from: &str, hours: u32| {
            calendar
                .last_within_working_seconds(at(from), hours * 3600)
                .unwrap()
        };
        // Inside the same working day.
        assert_eq!(
            within("2026-12-09T10:00:00+08:00", 8),
            at("2026-12-09T18:00:00+08:00")
        );
        // Running out at the end of a Friday: every instant of the weekend is as far, so the
        // bound is Monday's start.
        assert_eq!(
            within("2026-12-11T16:00:00+08:00", 8),
            at("2026-12-14T00:00:00+08:00")
        );
        // 国庆节: 12 h from 30 September 18:00 run out at 8 October 06:00 (as the working
        // seconds above count them); from a day off, the count starts on the next working day.
        assert_eq!(
            within("2026-09-30T18:00:00+08:00", 12),
            at("2026-10-08T06:00:00+08:00")
        );
        assert_eq!(
            within("2026-10-03T09:00:00+08:00", 4),
            at("2026-10-08T04:00:00+08:00")
        );
        assert_eq!(
            within("2026-10-03T09:00:00+08:00", 0),
            at("2026-10-08T00:00:00+08:00")
        );
        // It is the bound of `working_seconds_between`: at it the time is used up, past it over.
        for (from, hours) in [
            ("2026-12-11T16:00:00+08:00", 8),
            ("2026-09-30T18:00:00+08:00", 12),
            ("2026-04-30T20:30:00+08:00", 30),
        ] {
            let last = within(from, hours);
            let limit = i64::from(hours) * 3600;
            assert!(calendar.working_seconds_between(at(from), last).unwrap() <= limit);
            let past = last + chrono::Duration::seconds(1);
            assert!(calendar.working_seconds_between(at(from), past).unwrap() > limit);
        }
        // Past the data: an error, not a guess.
        assert!(calendar
            .last_within_working_seconds(at("2026-12-31T20:00:00+08:00"), 8 * 3600)
            .is_err());
    }

    #[test]
    fn deadline_is_end_of_the_nth_working_day_in_shanghai() {
        let calendar = Calendar::builtin();
        let decided = at("2026-09-30T16:20:00+08:00");
        assert_eq!(
            calendar.deadline_after(decided, 1).unwrap(),
            at("2026-10-08T23:59:59+08:00")
        );
        // 2026-09-29T17:00Z is already 09-30 01:00 in Shanghai: counted from 09-30, not 09-29.
        let late_utc = at("2026-09-29T17:00:00Z");
        assert_eq!(
            calendar.deadline_after(late_utc, 1).unwrap(),
            at("2026-10-08T23:59:59+08:00")
        );
        // An event on a holiday: the first working day after it is the 1st.
        let on_holiday = at("2026-10-03T11:00:00+08:00");
        assert_eq!(
            calendar.deadline_after(on_holiday, 1).unwrap(),
            at("2026-10-08T23:59:59+08:00")
        );
        assert_eq!(
            calendar.deadline_after(on_holiday, 3).unwrap(),
            at("2026-10-10T23:59:59+08:00")
        );
        assert_eq!(
            calendar.deadline_after(decided, 0).unwrap(),
            at("2026-09-30T23:59:59+08:00")
        );
        assert_eq!(
            calendar.deadline_after(decided, 0).unwrap().offset(),
            &shanghai()
        );
    }

    #[test]
    fn deadline_before_is_the_end_of_the_latest_notice_day() {
        let calendar = Calendar::builtin();
        // Inspection on Thursday 2026-10-08 at 09:00: notify by the end of Wednesday 09-30.
        assert_eq!(
            calendar
                .deadline_before(at("2026-10-08T09:00:00+08:00"), 1)
                .unwrap(),
            at("2026-09-30T23:59:59+08:00")
        );
    }

    #[test]
    fn zero_working_days_is_the_same_day_or_the_next_working_day() {
        let calendar = Calendar::builtin();
        assert_eq!(
            calendar.add_working_days(date("2026-09-30"), 0).unwrap(),
            date("2026-09-30")
        );
        assert_eq!(
            calendar.add_working_days(date("2026-10-01"), 0).unwrap(),
            date("2026-10-08")
        );
        assert_eq!(
            calendar.sub_working_days(date("2026-10-07"), 0).unwrap(),
            date("2026-09-30")
        );
        assert_eq!(
            calendar.sub_working_days(date("2026-10-10"), 0).unwrap(),
            date("2026-10-10")
        );
    }

    #[test]
    fn sub_working_days_crosses_a_holiday() {
        let calendar = Calendar::builtin();
        // Inspection on Thursday 2026-10-08: notify by Wednesday 09-30 at the latest.
        assert_eq!(
            calendar.sub_working_days(date("2026-10-08"), 1).unwrap(),
            date("2026-09-30")
        );
        // Tuesday 2026-02-24 after 春节: the previous working day is 补班 Saturday 02-14.
        assert_eq!(
            calendar.sub_working_days(date("2026-02-24"), 1).unwrap(),
            date("2026-02-14")
        );
        assert_eq!(
            calendar.sub_working_days(date("2026-02-24"), 2).unwrap(),
            date("2026-02-13")
        );
    }

    #[test]
    fn a_year_without_data_is_an_error_not_a_guess() {
        let calendar = Calendar::builtin();
        assert_eq!(
            calendar.add_working_days(date("2026-12-31"), 1),
            Err(MissingYear { year: 2027 })
        );
        assert_eq!(
            calendar.is_working_day(date("2027-03-01")),
            Err(MissingYear { year: 2027 })
        );
        assert_eq!(
            calendar.sub_working_days(date("2015-01-01"), 1),
            Err(MissingYear { year: 2014 })
        );
        let late = at("2026-12-31T12:00:00+08:00");
        assert_eq!(
            calendar.working_seconds_between(late, at("2027-01-01T12:00:00+08:00")),
            Err(MissingYear { year: 2027 })
        );
        // Ending exactly at midnight needs no data for the next day.
        assert_eq!(
            calendar
                .working_seconds_between(late, at("2027-01-01T00:00:00+08:00"))
                .unwrap(),
            12 * 3600
        );
        assert!(MissingYear { year: 2027 }.to_string().contains("2027.toml"));
    }

    #[test]
    fn a_site_file_adds_the_next_year_without_a_rebuild() {
        let dir = TempDir::new("add-2027");
        let file = dir.write("2027.toml", TEST_2027);
        dir.write("README.txt", "ignored");
        let calendar = Calendar::load(Some(&dir.0)).unwrap();
        assert_eq!(calendar.years().last(), Some(&2027));
        assert_eq!(calendar.year_source(2027), Some(file.as_str()));
        // 2027-01-01 (Friday) is off; 01-02/03 are the weekend.
        assert_eq!(
            calendar.add_working_days(date("2026-12-31"), 1).unwrap(),
            date("2027-01-04")
        );
        assert_eq!(calendar.last_covered_date(), date("2027-12-31"));
    }

    #[test]
    fn a_site_file_replaces_a_built_in_year() {
        let dir = TempDir::new("replace-2026");
        // Only 元旦: every other 2026 holiday is gone, so 10-01 becomes a working day.
        dir.write(
            "2026.toml",
            "year = 2026\nnotice = \"replacement\"\noff = [ { date = 2026-01-01, holiday = \"元旦\" } ]\nwork = []\n",
        );
        let calendar = Calendar::load(Some(&dir.0)).unwrap();
        assert!(calendar.is_working_day(date("2026-10-01")).unwrap());
        assert!(!calendar.is_working_day(date("2026-10-10")).unwrap());
        assert_eq!(calendar.year_notice(2026), Some("replacement"));
        assert_ne!(calendar.version(), Calendar::builtin().version());
    }

    #[test]
    fn days_remaining_counts_to_the_end_of_the_last_year() {
        let calendar = Calendar::builtin();
        assert_eq!(calendar.days_remaining(date("2026-12-31")), 0);
        assert_eq!(calendar.days_remaining(date("2026-12-01")), 30);
        assert_eq!(calendar.days_remaining(date("2027-01-10")), -10);
    }

    #[test]
    fn validation_reports_every_error_with_file_and_line() {
        let dir = TempDir::new("invalid");
        let file = dir.write(
            "2027.toml",
            r#"year = 2027
notice = "test data"
off = [
  { date = 2027-01-01, holiday = "元旦" },
  { date = 2026-12-31, holiday = "元旦" },
  { date = 2027-01-01, holiday = "元旦" },
  { date = 2027-02-06, holiday = "春节" },
  { date = 2027-02-07T08:00:00, holiday = "春节" },
  { date = 2027-02-09, holiday = "" },
]
work = [
  { date = 2027-02-06, holiday = "春节" },
  { date = 2027-02-08, holiday = "春节" },
  { date = 2027-02-20, holiday = "春节", notice_year = 2029 },
]
"#,
        );
        let errors = Calendar::load(Some(&dir.0)).unwrap_err();
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let expected = [
            format!("{file}:5: off[1].date: 2026-12-31 is outside 2027"),
            format!("{file}:6: off[2].date: 2027-01-01 is listed twice (first at line 4)"),
            format!(
                "{file}:8: off[4].date: 2027-02-07T08:00:00 is not a local date like 2027-10-01"
            ),
            format!("{file}:9: off[5].holiday: name the holiday, e.g. 春节"),
            format!("{file}:12: work[0].date: 2027-02-06 is both off (line 7) and work"),
            format!(
                "{file}:13: work[1].date: 2027-02-08 is a Mon; only a Saturday or Sunday can be \
                 an adjusted working day"
            ),
            format!(
                "{file}:14: work[2].notice_year: 2029 must be 2027 or 2028 (a late-December day \
                 of the next year's 元旦 holiday)"
            ),
        ];
        assert_eq!(shown, expected);
    }

    #[test]
    fn an_impossible_date_is_reported_with_its_line() {
        let dir = TempDir::new("bad-date");
        let file = dir.write(
            "2027.toml",
            "year = 2027\nnotice = \"x\"\noff = [\n  { date = 2027-02-30, holiday = \"春节\" },\n]\nwork = []\n",
        );
        let errors = Calendar::load(Some(&dir.0)).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().starts_with(&format!("{file}:4: ")),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn unknown_fields_wrong_names_and_gaps_are_errors() {
        let dir = TempDir::new("misc");
        let typo = dir.write(
            "2027.toml",
            "year = 2027\nnotice = \"x\"\noff = [\n  { date = 2027-01-01, holday = \"元旦\" },\n]\nwork = []\n",
        );
        let misnamed = dir.write("2029.toml", &TEST_2027.replace("2027", "2028"));
        let errors = Calendar::load(Some(&dir.0)).unwrap_err();
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            shown[0].starts_with(&format!("{typo}:4: unknown field `holday`")),
            "{shown:?}"
        );
        assert_eq!(
            shown[1..],
            [
                format!("{misnamed}:1: year: 2028 but the file is named 2029.toml"),
                format!("{misnamed}:4: off[0].date: 2028-01-01 is outside 2029"),
            ]
        );

        let gap = TempDir::new("gap");
        gap.write("2028.toml", &TEST_2027.replace("2027", "2028"));
        let errors = Calendar::load(Some(&gap.0)).unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            format!(
                "{}: no calendar data for 2027..=2027 between 2026 and 2028: years must be contiguous",
                gap.0.display()
            )
        );

        let stray = TempDir::new("stray");
        let notes = stray.write("notes.toml", TEST_2027);
        let errors = Calendar::load(Some(&stray.0)).unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            format!("{notes}: a calendar file must be named <year>.toml, e.g. 2027.toml")
        );

        let missing =
            Calendar::load(Some(Path::new("/nonexistent/shenguan-calendar"))).unwrap_err();
        assert!(missing[0]
            .to_string()
            .starts_with("/nonexistent/shenguan-calendar: cannot read"));
    }

    /// The 2026 arrangement as published (国务院办公厅关于2026年部分节假日安排的通知), written out
    /// by hand so this check runs wherever the crate is built.
    #[test]
    fn embedded_2026_matches_the_published_arrangement() {
        let off = [
            "2026-01-01",
            "2026-01-02",
            "2026-01-03",
            "2026-02-15",
            "2026-02-16",
            "2026-02-17",
            "2026-02-18",
            "2026-02-19",
            "2026-02-20",
            "2026-02-21",
            "2026-02-22",
            "2026-02-23",
            "2026-04-04",
            "2026-04-05",
            "2026-04-06",
            "2026-05-01",
            "2026-05-02",
            "2026-05-03",
            "2026-05-04",
            "2026-05-05",
            "2026-06-19",
            "2026-06-20",
            "2026-06-21",
            "2026-09-25",
            "2026-09-26",
            "2026-09-27",
            "2026-10-01",
            "2026-10-02",
            "2026-10-03",
            "2026-10-04",
            "2026-10-05",
            "2026-10-06",
            "2026-10-07",
        ];
        let work = [
            "2026-01-04",
            "2026-02-14",
            "2026-02-28",
            "2026-05-09",
            "2026-09-20",
            "2026-10-10",
        ];
        let calendar = Calendar::builtin();
        let listed = &calendar.years[&2026].days;
        let listed_off: Vec<String> = listed
            .iter()
            .filter(|(_, l)| l.kind == Kind::Off)
            .map(|(d, _)| d.to_string())
            .collect();
        let listed_work: Vec<String> = listed
            .iter()
            .filter(|(_, l)| l.kind == Kind::Work)
            .map(|(d, _)| d.to_string())
            .collect();
        assert_eq!(listed_off, off);
        assert_eq!(listed_work, work);
        // Every day of 2026 follows from those lists and the week.
        let mut day = date("2026-01-01");
        while day.year() == 2026 {
            let s = day.to_string();
            let expected = if off.contains(&s.as_str()) {
                false
            } else if work.contains(&s.as_str()) {
                true
            } else {
                !is_weekend(day)
            };
            assert_eq!(calendar.is_working_day(day).unwrap(), expected, "{day}");
            day = day.succ_opt().unwrap();
        }
    }

    /// The shipped files against the holiday table they were converted from (kept in
    /// `calendar/source/`), row for row.
    #[test]
    fn embedded_data_equals_the_source_table() {
        let text = include_str!("../../../../calendar/source/cn-holidays.tsv");
        let calendar = Calendar::builtin();
        let mut expected: BTreeMap<NaiveDate, Listed> = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 4, "{line}");
            let day = date(fields[0]);
            let kind = match fields[1] {
                "off" => Kind::Off,
                "work" => Kind::Work,
                other => panic!("unknown kind {other} in {line}"),
            };
            // A weekday "work" row says nothing a weekday does not already mean (2020-02-03,
            // the first day after the extended 2020 Spring Festival); the files omit it.
            if kind == Kind::Work && !is_weekend(day) {
                assert!(calendar.is_working_day(day).unwrap(), "{line}");
                continue;
            }
            let listed = Listed {
                kind,
                holiday: fields[2].to_string(),
                notice_year: fields[3].parse().unwrap(),
            };
            assert!(
                expected.insert(day, listed).is_none(),
                "duplicate row {line}"
            );
        }
        let shipped: BTreeMap<NaiveDate, Listed> = calendar
            .years
            .values()
            .flat_map(|year| year.days.iter().map(|(d, l)| (*d, l.clone())))
            .collect();
        assert_eq!(shipped.len(), expected.len());
        for (day, listed) in &expected {
            assert_eq!(shipped.get(day), Some(listed), "{day}");
        }
        let first = *expected.keys().next().unwrap();
        assert_eq!(first.year(), 2015);
        assert_eq!(expected.keys().next_back().unwrap().year(), 2026);
    }
}
