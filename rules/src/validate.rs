//! Turns raw rules into [`Rule`]s, or into every error found, each naming the rule (its
//! place in the file and its name) and the field, e.g.
//! `rules[2] "api-latency": window: missing unit: use ms, s, m, h or d, e.g. 5m`; and
//! the inhibit rules into [`InhibitRule`]s, errors naming their place in `inhibit`, e.g.
//! `inhibit[0]: equal[1]: label names must match [a-zA-Z_][a-zA-Z0-9_]*`.
//!
//! Besides each value's own form it checks what spans fields: a rule either compares a
//! `stat` or is an `absent` rule, which names no stat, window, op or thresholds
//! (`condition.rs`); a `resolve_threshold` on the non-firing side of its threshold (for a
//! schedule, of the threshold in force with it), unique rule names, and no two override
//! schedules of a rule that may be in force at once. That last check is conservative:
//! two overrides in the same time zone whose weekdays-and-hours and whose dates intersect
//! are refused even when the combination never occurs on a real calendar. Overrides in
//! different zones, and maintenance windows, are not compared: file order decides (see
//! [`crate::schedule`]). Annotation templates are checked by [`crate::template::check`].

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use chrono::{Datelike, NaiveDate, NaiveTime, Timelike};
use chrono_tz::Tz;
use tidemark_model::sample::{check_metric, check_service, check_tag};
use tidemark_model::time::parse_duration;

use crate::file::{Day, DurationText, Op, RawInhibit, RawRule, RawSchedule, Severity};
use crate::inhibit::InhibitRule;
use crate::rule::{Effect, MonthDay, Rule, Schedule};
use crate::template;

use self::condition::Condition;

mod condition;

/// Which rule an error is about: its place in `rules` and, when it has one, its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleId {
    pub index: usize,
    pub name: Option<String>,
}

/// The entry of the file an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Rule(RuleId),
    /// An inhibit rule, by its index in `inhibit`.
    Inhibit(usize),
}

/// One thing wrong with a rules file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// `None` for the file as a whole (YAML syntax, top-level keys).
    pub place: Option<Place>,
    /// The field at fault, as a path such as `schedules[1].timezone`; empty when the
    /// message names the place itself.
    pub field: String,
    pub message: String,
}

impl Error {
    pub(crate) fn new(
        place: Option<Place>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let field = field.into();
        Self {
            place,
            // serde_path_to_error writes the root as ".".
            field: if field == "." { String::new() } else { field },
            message: message.into(),
        }
    }

    /// A YAML syntax error; serde_yaml's text carries the line and column.
    pub(crate) fn file(e: serde_yaml::Error) -> Self {
        Self::new(None, "", e.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.place {
            Some(Place::Rule(rule)) => {
                write!(f, "rules[{}]", rule.index)?;
                if let Some(name) = &rule.name {
                    write!(f, " {name:?}")?;
                }
                f.write_str(": ")?;
            }
            Some(Place::Inhibit(index)) => write!(f, "inhibit[{index}]: ")?,
            None => {}
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Collects the errors of one entry of the file under its [`Place`].
struct Errors<'a> {
    place: Place,
    found: &'a mut Vec<Error>,
}

impl Errors<'_> {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.found
            .push(Error::new(Some(self.place.clone()), field, message));
    }

    /// The value, or `None` after recording why it is not one.
    fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|e| self.push(field, e)).ok()
    }
}

/// Validates every rule and the names across them; all errors, in file order.
pub fn rules(raw: Vec<(RuleId, RawRule)>, found: &mut Vec<Error>) -> Vec<Rule> {
    let mut seen = HashSet::new();
    let mut valid = Vec::with_capacity(raw.len());
    for (id, raw) in raw {
        let mut errors = Errors {
            place: Place::Rule(id),
            found,
        };
        if !raw.name.is_empty() && !seen.insert(raw.name.clone()) {
            errors.push("name", "another rule already has this name");
        }
        if let Some(rule) = rule(raw, &mut errors) {
            valid.push(rule);
        }
    }
    valid
}

/// One rule, or `None` with its errors recorded.
fn rule(mut raw: RawRule, errors: &mut Errors<'_>) -> Option<Rule> {
    let before = errors.found.len();
    if raw.name.is_empty() {
        errors.push("name", "must not be empty");
    }
    if raw.service != "*" {
        if let Err(e) = check_service(&raw.service) {
            errors.push("service", e.message);
        }
    }
    if let Err(e) = check_metric(&raw.metric) {
        errors.push("metric", e.message);
    }
    for (k, v) in &raw.tags {
        if let Err(e) = check_tag(k, v) {
            errors.push(e.field, e.message);
        }
    }
    let condition = condition::condition(&raw, errors);
    let for_ = errors.check("for", optional_duration(raw.for_.as_ref()));
    let keep_firing_for = errors.check(
        "keep_firing_for",
        optional_duration(raw.keep_firing_for.as_ref()),
    );
    for name in raw.labels.keys() {
        if let Err(e) = label_name(name) {
            errors.push(format!("labels.{name}"), e);
        }
    }
    for (field, text) in [
        ("summary", &raw.annotations.summary),
        ("runbook_url", &raw.annotations.runbook_url),
    ] {
        if let Some(Err(e)) = text.as_deref().map(template::check) {
            errors.push(format!("annotations.{field}"), e);
        }
    }
    let schedules: Vec<Schedule> = std::mem::take(&mut raw.schedules)
        .into_iter()
        .enumerate()
        .filter_map(|(i, s)| schedule(i, s, &raw, condition.as_ref(), errors))
        .collect();
    overlaps(&schedules, errors);
    if errors.found.len() > before {
        return None;
    }
    let condition = condition?;
    Some(Rule {
        name: raw.name,
        service: raw.service,
        metric: raw.metric,
        tags: raw.tags,
        absent: condition.absent,
        stat: condition.stat,
        window: condition.window,
        op: condition.op,
        threshold: condition.threshold,
        resolve_threshold: raw.resolve_threshold,
        for_: for_?,
        keep_firing_for: keep_firing_for?,
        severity: raw.severity,
        min_count: raw.min_count,
        labels: raw.labels,
        annotations: raw.annotations,
        schedules,
    })
}

fn schedule(
    index: usize,
    raw: RawSchedule,
    rule: &RawRule,
    condition: Option<&Condition>,
    errors: &mut Errors<'_>,
) -> Option<Schedule> {
    let field = |name: &str| format!("schedules[{index}].{name}");
    let before = errors.found.len();
    let days = raw.days.as_deref().map_or([true; 7], |list| {
        let mut days = [false; 7];
        list.iter().for_each(|d| days[day_index(*d)] = true);
        days
    });
    if days == [false; 7] {
        errors.push(field("days"), "selects no day: leave it out for every day");
    }
    let (start, end) = match raw.hours.as_deref() {
        None => Some((NaiveTime::MIN, NaiveTime::MIN)),
        Some(text) => errors.check(&field("hours"), parse_hours(text)),
    }?;
    let timezone = match raw.timezone.as_deref() {
        None => Some(Tz::UTC),
        Some(name) => errors.check(
            &field("timezone"),
            name.parse::<Tz>()
                .map_err(|_| format!("unknown time zone {name:?}")),
        ),
    };
    let dates = match raw.dates.as_deref() {
        None => Some(None),
        Some(text) => errors.check(&field("dates"), parse_dates(text).map(Some)),
    };
    let overrides =
        raw.threshold.is_some() || raw.resolve_threshold.is_some() || raw.severity.is_some();
    let effect = if raw.maintenance {
        if overrides {
            errors.push(
                field("maintenance"),
                "a maintenance window mutes the rule: it cannot also set threshold, resolve_threshold or severity",
            );
        }
        Effect::Maintenance
    } else {
        if !overrides {
            errors.push(
                format!("schedules[{index}]"),
                "sets nothing: give threshold, resolve_threshold or severity, or maintenance: true",
            );
        }
        condition::schedule_thresholds(index, &raw, rule.resolve_threshold, condition, errors);
        Effect::Override {
            threshold: raw.threshold,
            resolve_threshold: raw.resolve_threshold,
            severity: raw.severity,
        }
    };
    if errors.found.len() > before {
        return None;
    }
    Some(Schedule {
        name: raw.name,
        days,
        start,
        end,
        timezone: timezone?,
        dates: dates?,
        effect,
    })
}

/// Refuses two override schedules of one rule that may be in force at the same time.
fn overlaps(schedules: &[Schedule], errors: &mut Errors<'_>) {
    let overrides: Vec<(usize, &Schedule)> = schedules
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s.effect, Effect::Override { .. }))
        .collect();
    for (n, &(i, a)) in overrides.iter().enumerate() {
        for &(j, b) in &overrides[n + 1..] {
            if a.timezone == b.timezone
                && intersect(&week_minutes(a), &week_minutes(b))
                && intersect(&year_days(a), &year_days(b))
            {
                errors.push(
                    format!("schedules[{j}]"),
                    format!(
                        "may be in force at the same time as {}: give override windows of one rule days, hours or dates that do not meet",
                        a.label(i)
                    ),
                );
            }
        }
    }
}

/// Validates every inhibit rule; all errors, in file order.
pub fn inhibit(raw: Vec<(usize, RawInhibit)>, found: &mut Vec<Error>) -> Vec<InhibitRule> {
    raw.into_iter()
        .filter_map(|(index, raw)| {
            let mut errors = Errors {
                place: Place::Inhibit(index),
                found: &mut *found,
            };
            inhibit_rule(raw, &mut errors)
        })
        .collect()
}

/// One inhibit rule, or `None` with its errors recorded. A match must name a label, or it
/// would match every alert; an empty `equal` is allowed: the source then inhibits its
/// targets wherever they are.
fn inhibit_rule(raw: RawInhibit, errors: &mut Errors<'_>) -> Option<InhibitRule> {
    let before = errors.found.len();
    for (field, matches) in [
        ("source_match", &raw.source_match),
        ("target_match", &raw.target_match),
    ] {
        if matches.is_empty() {
            errors.push(
                field,
                "must name at least one label: an empty match would match every alert",
            );
        }
        for (name, value) in matches {
            if let Err(e) = label_name(name).and_then(|()| match_value(name, value)) {
                errors.push(format!("{field}.{name}"), e);
            }
        }
    }
    for (i, name) in raw.equal.iter().enumerate() {
        if let Err(e) = label_name(name) {
            errors.push(format!("equal[{i}]"), e);
        }
    }
    (errors.found.len() == before).then_some(InhibitRule {
        source_match: raw.source_match,
        target_match: raw.target_match,
        equal: raw.equal,
    })
}

/// The value a match wants of a label: never empty, since only a label that is present
/// matches, and for `severity` one that exists.
fn match_value(name: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty: a match wants a label that is present".to_owned());
    }
    let severities = [Severity::Critical, Severity::Warning, Severity::Info].map(Severity::as_str);
    if name == "severity" && !severities.contains(&value) {
        return Err(format!(
            "{value:?} is not a severity: use critical, warning or info"
        ));
    }
    Ok(())
}

const MINUTES_PER_DAY: usize = 1440;
const MINUTES_PER_WEEK: usize = 7 * MINUTES_PER_DAY;

/// The minutes of the week (Monday 00:00 first) a schedule covers, a window that crosses
/// midnight running into the next weekday.
fn week_minutes(s: &Schedule) -> Vec<bool> {
    let minute = |t: NaiveTime| (t.num_seconds_from_midnight() / 60) as usize;
    let start = minute(s.start);
    let end = minute(s.end)
        + if s.crosses_midnight() {
            MINUTES_PER_DAY
        } else {
            0
        };
    let mut covered = vec![false; MINUTES_PER_WEEK];
    for day in (0..7).filter(|&d| s.days[d]) {
        for m in start..end {
            covered[(day * MINUTES_PER_DAY + m) % MINUTES_PER_WEEK] = true;
        }
    }
    covered
}

/// The dates of a leap year a schedule covers, with the day after each when its window
/// runs into the next day.
fn year_days(s: &Schedule) -> Vec<bool> {
    let Some((from, to)) = s.dates else {
        return vec![true; 366];
    };
    let (from, to) = (day_of_year(from), day_of_year(to));
    let spills = s.crosses_midnight() && s.end != NaiveTime::MIN;
    let length = (to + 366 - from) % 366 + 1 + usize::from(spills);
    let mut covered = vec![false; 366];
    for d in 0..length.min(366) {
        covered[(from + d) % 366] = true;
    }
    covered
}

fn intersect(a: &[bool], b: &[bool]) -> bool {
    a.iter().zip(b).any(|(x, y)| *x && *y)
}

/// The day of a leap year, from 0, of a month and day already validated.
fn day_of_year((month, day): MonthDay) -> usize {
    NaiveDate::from_ymd_opt(2000, month, day).map_or(0, |d| d.ordinal0() as usize)
}

pub(crate) fn day_index(day: Day) -> usize {
    match day {
        Day::Mon => 0,
        Day::Tue => 1,
        Day::Wed => 2,
        Day::Thu => 3,
        Day::Fri => 4,
        Day::Sat => 5,
        Day::Sun => 6,
    }
}

fn at_least_a_second(d: Duration) -> Result<Duration, String> {
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".to_owned());
    }
    Ok(d)
}

fn optional_duration(text: Option<&DurationText>) -> Result<Duration, String> {
    text.map_or(Ok(Duration::ZERO), |t| parse_duration(&t.text()))
}

fn finite(value: f64) -> Result<f64, String> {
    if !value.is_finite() {
        return Err("must be a finite number".to_owned());
    }
    Ok(value)
}

/// A resolve threshold must lie where the rule is not breached.
fn hysteresis(op: Op, threshold: f64, resolve: f64) -> Result<(), String> {
    let (ok, side) = match op {
        Op::Gt | Op::Ge => (resolve <= threshold, "<="),
        Op::Lt | Op::Le => (resolve >= threshold, ">="),
    };
    if !ok {
        return Err(format!(
            "{resolve} must be {side} the threshold {threshold} for op {}",
            op.as_str()
        ));
    }
    Ok(())
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with the reserved `__`.
fn label_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let valid = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err("label names must match [a-zA-Z_][a-zA-Z0-9_]*".to_owned());
    }
    if name.starts_with("__") {
        return Err("label names starting with __ are reserved".to_owned());
    }
    Ok(())
}

/// `HH:MM-HH:MM`; `24:00` may end a window.
fn parse_hours(text: &str) -> Result<(NaiveTime, NaiveTime), String> {
    let usage = || format!("{text:?} is not HH:MM-HH:MM, e.g. 22:00-06:00");
    let (start, end) = text.split_once('-').ok_or_else(usage)?;
    let start = clock_time(start).ok_or_else(usage)?;
    let end = match end {
        "24:00" => NaiveTime::MIN,
        _ => clock_time(end).ok_or_else(usage)?,
    };
    Ok((start, end))
}

fn clock_time(text: &str) -> Option<NaiveTime> {
    let (h, m) = text.split_once(':')?;
    if !two_digits(h) || !two_digits(m) {
        return None;
    }
    NaiveTime::from_hms_opt(h.parse().ok()?, m.parse().ok()?, 0)
}

/// `MM-DD..MM-DD`, both ends included, every year; the range may cross the year end.
fn parse_dates(text: &str) -> Result<(MonthDay, MonthDay), String> {
    let (from, to) = text
        .split_once("..")
        .ok_or_else(|| format!("{text:?} is not MM-DD..MM-DD, e.g. 04-01..10-31"))?;
    Ok((month_day(from)?, month_day(to)?))
}

fn month_day(text: &str) -> Result<MonthDay, String> {
    let parsed = text.split_once('-').and_then(|(m, d)| {
        (two_digits(m) && two_digits(d)).then(|| (m.parse().ok(), d.parse().ok()))
    });
    match parsed {
        Some((Some(month), Some(day))) if NaiveDate::from_ymd_opt(2000, month, day).is_some() => {
            Ok((month, day))
        }
        _ => Err(format!("{text:?} is not a valid MM-DD date")),
    }
}

fn two_digits(text: &str) -> bool {
    text.len() == 2 && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use crate::test_support::{errors, file, rule, RULE};

    /// The errors of the base rule with `extra` lines added.
    fn rule_errors(extra: &str) -> Vec<String> {
        errors(&file(&[&format!("{RULE}\n{extra}")]))
    }

    /// The base rule with one of its lines replaced.
    fn with(line: &str, replacement: &str) -> String {
        assert!(RULE.contains(line), "{line}");
        RULE.replace(line, replacement)
    }

    #[test]
    fn errors_name_the_rule_and_the_field() {
        assert_eq!(
            errors(&file(&[&with("window: 5m", "window: 5")])),
            [r#"rules[0] "api-latency": window: missing unit: use ms, s, m, h or d, e.g. 5m"#]
        );
        let text = file(&[&(with("name: api-latency", "name: x")
            + "\nschedules:\n  - days: [sat]\n    threshold: 300\n  - timezone: Mars/Base\n    maintenance: true")]);
        assert_eq!(
            errors(&text),
            [r#"rules[0] "x": schedules[1].timezone: unknown time zone "Mars/Base""#]
        );
    }

    #[test]
    fn every_error_is_reported_not_only_the_first() {
        let text = file(&[
            RULE,
            &with("window: 5m", "window: 500ms"),
            &(with("name: api-latency", "name: \"\"")
                .replace("service: api", "service: \"a b\"")
                .replace("metric: http.latency_ms", "metric: \"m/s\"")
                + "\ntags:\n  \"bad key\": v\nlabels:\n  team: core\n  0team: core\n  __name: x"),
            &with("stat: p95", "stat: p42").replace("api-latency", "other"),
        ]);
        let found = errors(&text);
        let expected = [
            r#"rules[1] "api-latency": name: another rule already has this name"#,
            r#"rules[1] "api-latency": window: must be at least 1s"#,
            r#"rules[2] "": name: must not be empty"#,
            r#"rules[2] "": service: may contain only [A-Za-z0-9._-]"#,
            r#"rules[2] "": metric: may contain only [A-Za-z0-9._:-]"#,
            r#"rules[2] "": tags.bad key: tag keys must be 1-64 characters of [A-Za-z0-9._-]"#,
            r#"rules[2] "": labels.0team: label names must match [a-zA-Z_][a-zA-Z0-9_]*"#,
            r#"rules[2] "": labels.__name: label names starting with __ are reserved"#,
        ];
        assert_eq!(found.len(), expected.len() + 1, "{found:#?}");
        // serde's error (reported while reading) comes before the checks of meaning.
        assert!(
            found[0].starts_with(r#"rules[3] "other": stat: unknown variant `p42`"#),
            "{found:#?}"
        );
        assert_eq!(found[1..], expected);
    }

    #[test]
    fn any_service_and_defaults() {
        let rule = rule("min_count: 20\nlabels:\n  team: core\nannotations:\n  summary: slow");
        assert_eq!(rule.min_count, Some(20));
        assert_eq!(rule.labels["team"], "core");
        assert_eq!(rule.annotations.summary.as_deref(), Some("slow"));
        assert_eq!(rule.for_, std::time::Duration::ZERO);
        assert_eq!(rule.keep_firing_for, std::time::Duration::ZERO);
        assert_eq!(rule.window, std::time::Duration::from_secs(300));
        assert!(crate::parse(&file(&[&with("service: api", "service: \"*\"")])).is_ok());
    }

    #[test]
    fn resolve_threshold_lies_on_the_non_firing_side() {
        assert_eq!(
            rule("resolve_threshold: 450").resolve_threshold,
            Some(450.0)
        );
        assert_eq!(
            rule_errors("resolve_threshold: 550"),
            [
                r#"rules[0] "api-latency": resolve_threshold: 550 must be <= the threshold 500 for op >"#
            ]
        );
        let below = with("op: \">\"", "op: \"<\"");
        assert!(crate::parse(&file(&[&format!("{below}\nresolve_threshold: 550")])).is_ok());
        assert_eq!(
            errors(&file(&[&format!("{below}\nresolve_threshold: 450")])),
            [
                r#"rules[0] "api-latency": resolve_threshold: 450 must be >= the threshold 500 for op <"#
            ]
        );
        // An override's threshold with the rule's resolve threshold must hold too.
        assert_eq!(
            rule_errors("resolve_threshold: 450\nschedules:\n  - days: [sat]\n    threshold: 300"),
            [
                r#"rules[0] "api-latency": schedules[0].resolve_threshold: 450 must be <= the threshold 300 for op >"#
            ]
        );
        assert_eq!(
            errors(&file(&[&with("threshold: 500", "threshold: .inf")])),
            [r#"rules[0] "api-latency": threshold: must be a finite number"#]
        );
    }

    #[test]
    fn schedule_fields_are_checked() {
        let found = rule_errors(
            "schedules:
  - hours: \"25:00-01:00\"
    threshold: 1
  - hours: \"2200-0600\"
    threshold: 1
  - dates: 02-30..03-01
    threshold: 1
  - dates: 04-01
    threshold: 1
  - days: []
    maintenance: true
    severity: info
  - name: empty",
        );
        assert_eq!(
            found,
            [
                r#"rules[0] "api-latency": schedules[0].hours: "25:00-01:00" is not HH:MM-HH:MM, e.g. 22:00-06:00"#,
                r#"rules[0] "api-latency": schedules[1].hours: "2200-0600" is not HH:MM-HH:MM, e.g. 22:00-06:00"#,
                r#"rules[0] "api-latency": schedules[2].dates: "02-30" is not a valid MM-DD date"#,
                r#"rules[0] "api-latency": schedules[3].dates: "04-01" is not MM-DD..MM-DD, e.g. 04-01..10-31"#,
                r#"rules[0] "api-latency": schedules[4].days: selects no day: leave it out for every day"#,
                r#"rules[0] "api-latency": schedules[4].maintenance: a maintenance window mutes the rule: it cannot also set threshold, resolve_threshold or severity"#,
                r#"rules[0] "api-latency": schedules[5]: sets nothing: give threshold, resolve_threshold or severity, or maintenance: true"#,
            ]
        );
        let rule = rule(
            "schedules:\n  - hours: \"08:00-24:00\"\n    dates: 02-29..03-01\n    severity: info",
        );
        assert_eq!(rule.schedules[0].end, chrono::NaiveTime::MIN);
        assert_eq!(rule.schedules[0].dates, Some(((2, 29), (3, 1))));
    }

    #[test]
    fn override_schedules_that_may_meet_are_refused() {
        let overlap = "schedules:
  - name: weekend
    days: [sat, sun]
    threshold: 300
  - name: saturday-night
    days: [sat]
    hours: \"20:00-23:00\"
    threshold: 200";
        assert_eq!(
            rule_errors(overlap),
            [
                r#"rules[0] "api-latency": schedules[1]: may be in force at the same time as "weekend": give override windows of one rule days, hours or dates that do not meet"#
            ]
        );
        // Friday night runs into Saturday.
        assert_eq!(
            rule_errors(
                "schedules:
  - days: [fri]
    hours: \"22:00-06:00\"
    threshold: 300
  - days: [sat]
    hours: \"05:00-07:00\"
    threshold: 200"
            )
            .len(),
            1
        );
        // Apart in hours, in dates, or in time zones; or a maintenance window.
        for apart in [
            "  - days: [sat]\n    hours: \"00:00-20:00\"\n    threshold: 200",
            "  - days: [sat]\n    dates: 01-01..01-31\n    threshold: 200\n  - days: [sat]\n    dates: 02-01..02-10\n    threshold: 100",
            "  - days: [sat]\n    timezone: Europe/Berlin\n    threshold: 200",
            "  - days: [sat]\n    maintenance: true",
        ] {
            let text = format!(
                "schedules:\n  - days: [sat]\n    hours: \"20:00-23:00\"\n    dates: 03-01..12-31\n    threshold: 300\n{apart}"
            );
            assert!(crate::parse(&file(&[&format!("{RULE}\n{text}")])).is_ok(), "{text}");
        }
    }
}
