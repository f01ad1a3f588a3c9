//! Which of a rule's schedules is in force at an instant, what that makes the rule's
//! threshold, resolve threshold and severity, and when that next changes.
//!
//! Precedence: a maintenance window in force mutes the rule, whatever else is in force;
//! otherwise the first override schedule in force, in file order, replaces the values it
//! names (the others keep the rule's own); otherwise the rule's own values hold.
//! Validation refuses override schedules of one rule that may meet, so file order only
//! decides between zones it cannot compare.
//!
//! Local time: a schedule is read in its time zone. Each local day its `days` and `dates`
//! select opens one window, from `start` on that day to `end` on the same day, or on the
//! next day when the hours cross midnight (`days: [fri]` with `22:00-06:00` is Friday
//! night until Saturday 06:00). A window includes its start and excludes its end. Each
//! boundary is the instant of that local time: a local time that a DST change skips
//! (02:30 on a spring-forward day in Europe/Berlin) is the first instant after the gap
//! (03:00 local), one that occurs twice (02:30 on a fall-back day) is its first
//! occurrence. So a window never opens twice on one day, and a window whose both ends
//! fall into one gap is empty.

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use crate::rule::{Effect, Rule, Schedule, Severity};

/// How far [`Rule::next_change`] looks ahead.
pub const LOOKAHEAD: TimeDelta = TimeDelta::days(8);

/// What a rule holds at an instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InForce {
    pub threshold: f64,
    pub resolve_threshold: Option<f64>,
    pub severity: Severity,
    /// A maintenance window is in force: the rule gives no alerts.
    pub muted: bool,
    /// The index of the schedule in force, if any (the maintenance window when muted).
    pub schedule: Option<usize>,
}

impl Rule {
    pub fn in_force(&self, at: DateTime<Utc>) -> InForce {
        let own = InForce {
            threshold: self.threshold,
            resolve_threshold: self.resolve_threshold,
            severity: self.severity,
            muted: false,
            schedule: None,
        };
        let active = || {
            self.schedules
                .iter()
                .enumerate()
                .filter(move |(_, s)| s.contains(at))
        };
        if let Some((i, _)) = active().find(|(_, s)| s.effect == Effect::Maintenance) {
            return InForce {
                muted: true,
                schedule: Some(i),
                ..own
            };
        }
        match active().next() {
            Some((
                i,
                Schedule {
                    effect:
                        Effect::Override {
                            threshold,
                            resolve_threshold,
                            severity,
                        },
                    ..
                },
            )) => InForce {
                threshold: threshold.unwrap_or(own.threshold),
                resolve_threshold: resolve_threshold.or(own.resolve_threshold),
                severity: severity.unwrap_or(own.severity),
                muted: false,
                schedule: Some(i),
            },
            _ => own,
        }
    }

    /// The first instant after `after`, at most [`LOOKAHEAD`] later, at which
    /// [`Rule::in_force`] gives something else than at `after`.
    pub fn next_change(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let horizon = after + LOOKAHEAD;
        let mut boundaries: Vec<DateTime<Utc>> = self
            .schedules
            .iter()
            .flat_map(|s| s.boundaries(after, horizon))
            .filter(|t| *t > after && *t <= horizon)
            .collect();
        boundaries.sort_unstable();
        boundaries.dedup();
        let now = self.in_force(after);
        boundaries.into_iter().find(|&t| self.in_force(t) != now)
    }
}

impl Schedule {
    fn contains(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.timezone).date_naive();
        // The window of the day before may run into today; the next day's only opens
        // earlier where a zone's clock goes back across midnight.
        let days = local
            .pred_opt()
            .into_iter()
            .chain([local])
            .chain(local.succ_opt());
        days.filter_map(|day| self.window(day))
            .any(|(start, end)| start <= at && at < end)
    }

    /// The starts and ends of the windows that may lie between `from` and `to`.
    fn boundaries(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let local = |t: DateTime<Utc>| t.with_timezone(&self.timezone).date_naive();
        let first = local(from).pred_opt().unwrap_or(NaiveDate::MIN);
        let last = local(to);
        first
            .iter_days()
            .take_while(move |d| *d <= last)
            .filter_map(|day| self.window(day))
            .flat_map(|(start, end)| [start, end])
    }

    /// The window that `day` (local) opens, if the schedule selects that day.
    fn window(&self, day: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if !self.selects(day) {
            return None;
        }
        let end_day = if self.crosses_midnight() {
            day.checked_add_days(Days::new(1))?
        } else {
            day
        };
        Some((
            instant(self.timezone, day.and_time(self.start)),
            instant(self.timezone, end_day.and_time(self.end)),
        ))
    }

    fn selects(&self, day: NaiveDate) -> bool {
        let weekday = day.weekday().num_days_from_monday() as usize;
        let date = (day.month(), day.day());
        self.days[weekday]
            && self.dates.is_none_or(|(from, to)| {
                if from <= to {
                    from <= date && date <= to
                } else {
                    date >= from || date <= to
                }
            })
    }
}

/// The instant of a local time: the first one after the gap when a DST change skips it,
/// the first of the two when it occurs twice. Zones change offset on whole minutes, so
/// stepping a minute at a time finds the end of a gap exactly.
pub(crate) fn instant(timezone: Tz, mut local: NaiveDateTime) -> DateTime<Utc> {
    loop {
        if let Some(t) = timezone.from_local_datetime(&local).earliest() {
            return t.with_timezone(&Utc);
        }
        local += TimeDelta::minutes(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::rule;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    /// The threshold in force at an instant, or `None` while muted.
    fn threshold(rule: &Rule, instant: &str) -> Option<f64> {
        let in_force = rule.in_force(at(instant));
        (!in_force.muted).then_some(in_force.threshold)
    }

    /// `next_change` after `from` is `boundary`, and in force changes exactly there.
    fn changes_at(rule: &Rule, from: &str, boundary: &str) {
        let boundary = at(boundary);
        assert_eq!(rule.next_change(at(from)), Some(boundary));
        let before = boundary - TimeDelta::milliseconds(1);
        assert_ne!(rule.in_force(before), rule.in_force(boundary));
    }

    const SATURDAY_IN_BERLIN: &str = "schedules:
  - name: weekend
    days: [sat]
    timezone: Europe/Berlin
    threshold: 300
    severity: critical";

    #[test]
    fn saturday_is_stricter_in_berlin_time() {
        let rule = rule(SATURDAY_IN_BERLIN);
        // Friday 23:59:59.999 and Saturday 00:00 in Berlin (CEST, UTC+2).
        assert_eq!(threshold(&rule, "2026-06-05T21:59:59.999Z"), Some(500.0));
        let saturday = rule.in_force(at("2026-06-05T22:00:00Z"));
        assert_eq!(saturday.threshold, 300.0);
        assert_eq!(saturday.severity, Severity::Critical);
        assert_eq!(saturday.schedule, Some(0));
        assert_eq!(threshold(&rule, "2026-06-06T21:59:59.999Z"), Some(300.0));
        assert_eq!(rule.in_force(at("2026-06-06T22:00:00Z")).schedule, None);
        changes_at(&rule, "2026-06-05T12:00:00Z", "2026-06-05T22:00:00Z");
        changes_at(&rule, "2026-06-05T22:00:00Z", "2026-06-06T22:00:00Z");
    }

    #[test]
    fn hours_may_cross_midnight_and_belong_to_the_day_they_start() {
        let nightly = rule("schedules:\n  - hours: \"22:00-06:00\"\n    threshold: 900");
        assert_eq!(threshold(&nightly, "2026-06-03T21:59:59.999Z"), Some(500.0));
        assert_eq!(threshold(&nightly, "2026-06-03T22:00:00Z"), Some(900.0));
        assert_eq!(threshold(&nightly, "2026-06-04T05:59:59.999Z"), Some(900.0));
        assert_eq!(threshold(&nightly, "2026-06-04T06:00:00Z"), Some(500.0));
        changes_at(&nightly, "2026-06-04T01:00:00Z", "2026-06-04T06:00:00Z");

        let friday_night =
            rule("schedules:\n  - days: [fri]\n    hours: \"22:00-06:00\"\n    threshold: 900");
        // 2026-06-05 is a Friday: its night runs into Saturday; Friday's early hours
        // belong to Thursday night, which is not selected.
        assert_eq!(
            threshold(&friday_night, "2026-06-05T03:00:00Z"),
            Some(500.0)
        );
        assert_eq!(
            threshold(&friday_night, "2026-06-06T03:00:00Z"),
            Some(900.0)
        );
        changes_at(
            &friday_night,
            "2026-06-01T00:00:00Z",
            "2026-06-05T22:00:00Z",
        );
    }

    #[test]
    fn date_ranges_recur_every_year_and_may_cross_its_end() {
        let peak = rule("schedules:\n  - dates: 04-01..10-31\n    threshold: 400");
        assert_eq!(threshold(&peak, "2026-03-31T23:59:59.999Z"), Some(500.0));
        assert_eq!(threshold(&peak, "2026-04-01T00:00:00Z"), Some(400.0));
        assert_eq!(threshold(&peak, "2027-10-31T23:59:59.999Z"), Some(400.0));
        assert_eq!(threshold(&peak, "2027-11-01T00:00:00Z"), Some(500.0));
        changes_at(&peak, "2026-03-28T00:00:00Z", "2026-04-01T00:00:00Z");
        // Eight days of look-ahead do not reach the season's end.
        assert_eq!(peak.next_change(at("2026-06-01T00:00:00Z")), None);

        let winter = rule("schedules:\n  - dates: 11-15..02-15\n    threshold: 400");
        assert_eq!(threshold(&winter, "2026-11-14T23:59:59Z"), Some(500.0));
        assert_eq!(threshold(&winter, "2026-11-15T00:00:00Z"), Some(400.0));
        assert_eq!(threshold(&winter, "2026-12-31T23:59:59Z"), Some(400.0));
        assert_eq!(threshold(&winter, "2027-01-10T12:00:00Z"), Some(400.0));
        assert_eq!(threshold(&winter, "2027-02-15T23:59:59Z"), Some(400.0));
        assert_eq!(threshold(&winter, "2027-02-16T00:00:00Z"), Some(500.0));
    }

    const NIGHT_IN_BERLIN: &str = "schedules:
  - hours: \"02:30-05:00\"
    timezone: Europe/Berlin
    threshold: 900";

    #[test]
    fn a_start_skipped_by_spring_forward_is_the_end_of_the_gap() {
        // 2026-03-29: Berlin's clocks go from 02:00 CET to 03:00 CEST (01:00Z); 02:30
        // does not exist, so the window opens at 03:00 CEST.
        let rule = rule(NIGHT_IN_BERLIN);
        assert_eq!(threshold(&rule, "2026-03-29T00:59:59.999Z"), Some(500.0));
        assert_eq!(threshold(&rule, "2026-03-29T01:00:00Z"), Some(900.0));
        changes_at(&rule, "2026-03-28T23:00:00Z", "2026-03-29T01:00:00Z");
        // 05:00 CEST.
        changes_at(&rule, "2026-03-29T01:00:00Z", "2026-03-29T03:00:00Z");
    }

    #[test]
    fn a_start_repeated_by_fall_back_is_its_first_occurrence() {
        // 2026-10-25: Berlin's clocks go from 03:00 CEST back to 02:00 CET (01:00Z);
        // 02:30 is 00:30Z and again 01:30Z. The window opens at the first and stays open
        // through the repeated hour.
        let rule = rule(NIGHT_IN_BERLIN);
        assert_eq!(threshold(&rule, "2026-10-25T00:29:59.999Z"), Some(500.0));
        assert_eq!(threshold(&rule, "2026-10-25T00:30:00Z"), Some(900.0));
        assert_eq!(threshold(&rule, "2026-10-25T01:10:00Z"), Some(900.0));
        changes_at(&rule, "2026-10-24T23:00:00Z", "2026-10-25T00:30:00Z");
        // 05:00 CET.
        changes_at(&rule, "2026-10-25T00:30:00Z", "2026-10-25T04:00:00Z");
    }

    #[test]
    fn maintenance_mutes_over_an_override() {
        let rule = rule(&format!(
            "{SATURDAY_IN_BERLIN}
  - name: backups
    hours: \"01:00-02:00\"
    timezone: Europe/Berlin
    maintenance: true"
        ));
        // Saturday 01:30 in Berlin: both in force, maintenance wins.
        let muted = rule.in_force(at("2026-06-05T23:30:00Z"));
        assert!(muted.muted);
        assert_eq!(muted.schedule, Some(1));
        assert_eq!(threshold(&rule, "2026-06-06T00:00:00Z"), Some(300.0));
        changes_at(&rule, "2026-06-05T23:30:00Z", "2026-06-06T00:00:00Z");
        // A weekday's maintenance window mutes the rule's own values too.
        assert_eq!(threshold(&rule, "2026-06-03T23:30:00Z"), None);
    }

    #[test]
    fn the_first_override_in_force_applies_and_a_rule_without_schedules_never_changes() {
        let rule = rule(
            "schedules:
  - days: [sat]
    threshold: 300
  - days: [sat]
    timezone: Europe/Berlin
    threshold: 200",
        );
        assert_eq!(threshold(&rule, "2026-06-06T12:00:00Z"), Some(300.0));
        // Saturday in Berlin, still Friday in UTC.
        assert_eq!(threshold(&rule, "2026-06-05T23:00:00Z"), Some(200.0));
        let plain = crate::test_support::rule("");
        assert_eq!(plain.next_change(at("2026-06-06T12:00:00Z")), None);
    }
}
