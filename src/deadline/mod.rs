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
pub use policy::{rule_names, Direction, OverrideError, Policies, Policy, PolicyError, Rule};
