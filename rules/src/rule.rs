//! A rule once it passed validation: durations, time zones and time windows parsed, and
//! every value known to be within the contract.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::NaiveTime;
use chrono_tz::Tz;

pub use crate::file::{Annotations, Op, Severity, Stat};

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    /// A service name, or `*` for every service.
    pub service: String,
    pub metric: String,
    /// Tags a series must carry, exactly.
    pub tags: BTreeMap<String, String>,
    /// For an absent rule (a dead man's switch), how long its series may send no sample
    /// before it fires. Such a rule is `count < 1` over a window of that duration: its
    /// `stat`, `op`, `threshold` and `window` say so (see [`crate::eval`]).
    pub absent: Option<Duration>,
    pub stat: Stat,
    pub window: Duration,
    pub op: Op,
    pub threshold: f64,
    /// Where a firing rule resolves (hysteresis); the threshold itself when absent.
    pub resolve_threshold: Option<f64>,
    pub for_: Duration,
    pub keep_firing_for: Duration,
    pub severity: Severity,
    /// Fewer samples in the window than this give no verdict.
    pub min_count: Option<u64>,
    pub labels: BTreeMap<String, String>,
    pub annotations: Annotations,
    pub schedules: Vec<Schedule>,
}

/// A date of every year: (month, day).
pub type MonthDay = (u32, u32);

/// A recurring time window of a rule, in its own time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub name: Option<String>,
    /// Selected weekdays, Monday first.
    pub days: [bool; 7],
    /// Start of the window on each selected day.
    pub start: NaiveTime,
    /// End of the window: on the same day when after `start`, else on the next day
    /// (midnight included: `00:00` ends the window at the end of the day).
    pub end: NaiveTime,
    pub timezone: Tz,
    /// Selected dates of every year, both ends included; `None` is every date.
    pub dates: Option<(MonthDay, MonthDay)>,
    pub effect: Effect,
}

/// What a schedule does while it is in force.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Effect {
    /// Mutes the rule.
    Maintenance,
    /// Replaces the values it names.
    Override {
        threshold: Option<f64>,
        resolve_threshold: Option<f64>,
        severity: Option<Severity>,
    },
}

impl Schedule {
    /// The name people know the schedule by: its own, or its place in the rule.
    pub fn label(&self, index: usize) -> String {
        match &self.name {
            Some(name) => format!("{name:?}"),
            None => format!("schedules[{index}]"),
        }
    }

    /// Whether the window runs past midnight into the next day.
    pub fn crosses_midnight(&self) -> bool {
        self.end <= self.start
    }
}
