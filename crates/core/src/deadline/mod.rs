//! Deadlines: the working-day calendar and the policy profiles that say how many working days
//! each step of 审管联动 may take.
//!
//! The regulations count in working days (工作日): the State Council holiday arrangements,
//! including adjusted working days on weekends (调休/补班). "Within N working days" of an event
//! means by the end — 23:59:59 Asia/Shanghai (+08:00) — of the Nth working day after the
//! event's local date in Shanghai; the event's own day never counts. N = 0 ("即时",
//! immediately) means by the end of the event's day if it is a working day, else of the next
//! working day. "At least N working days before" an event means by the end of the Nth working
//! day before its local date.
//!
//! - [`calendar`]: which dates are working days ([`Calendar`]), from yearly holiday files
//!   compiled in or added by a site at run time. A date in a year without data is the error
//!   [`MissingYear`], never a weekend-only guess; the tracker makes it visible.
//! - [`policy`]: the deadline rules per jurisdiction ([`Policies`], [`Policy`], [`Rule`]),
//!   each with the article it comes from, overridable per item.
//!
//! Both are pure, synchronous and own their data. The tracker stores every computed deadline
//! with its rule and [`Calendar::version`], so a later calendar change never silently moves a
//! deadline already reported.

pub mod calendar;
pub mod policy;

pub use calendar::{Calendar, CalendarError, MissingYear};
pub use policy::{
    rule_names, Direction, MissingField, OverrideError, Period, Policies, Policy, PolicyError,
    RequiredFields, Rule,
};

/// (path, text) of a file, or (path, message) of a problem with it.
type FileText = (String, String);

/// The `.toml` files of a site directory as (path, text), sorted by name, and every problem
/// reading them as (path, message); `what` names the directory in messages.
fn toml_files(dir: &std::path::Path, what: &str) -> (Vec<FileText>, Vec<FileText>) {
    let mut problems = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            return (
                Vec::new(),
                vec![(
                    dir.display().to_string(),
                    format!("cannot read {what} directory: {e}"),
                )],
            )
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => paths.push(entry.path()),
            Err(e) => problems.push((
                dir.display().to_string(),
                format!("cannot list {what} directory: {e}"),
            )),
        }
    }
    paths.retain(|p| p.extension().is_some_and(|ext| ext == "toml"));
    paths.sort();
    let mut files = Vec::new();
    for path in paths {
        let file = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => files.push((file, text)),
            Err(e) => problems.push((file, format!("cannot read: {e}"))),
        }
    }
    (files, problems)
}
