//! Working-day calendar and deadline policies.

pub mod calendar;
