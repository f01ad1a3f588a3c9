//! What a rule compares, validated: its own `stat` over its `window` with `op` and
//! `threshold`, or, for an `absent` rule (a dead man's switch), `count < 1` over a window
//! of the absent duration. An absent rule names none of the fields it stands in for
//! (`stat`, `op`, `threshold`, `resolve_threshold`, `window`, `min_count`), nor does any of
//! its schedules override a threshold: each one that does is an error naming it.

use std::time::Duration;

use tidemark_model::time::parse_duration;

use super::{at_least_a_second, finite, hysteresis, Errors};
use crate::file::{Op, RawRule, RawSchedule, Stat};

/// What a rule compares, once valid.
pub(super) struct Condition {
    pub absent: Option<Duration>,
    pub stat: Stat,
    pub window: Duration,
    pub op: Op,
    pub threshold: f64,
}

/// Why an absent rule refuses a field.
fn not_absent(field: &str) -> String {
    format!(
        "an absent rule has no {field}; it fires when no sample arrived for its absent duration"
    )
}

/// The rule's condition, or `None` with its errors recorded. A rule's own `threshold` and
/// `resolve_threshold` are checked here; a stat rule whose only fault is a threshold that
/// is not finite still gives its condition, so that its schedules are checked against it.
pub(super) fn condition(raw: &RawRule, errors: &mut Errors<'_>) -> Option<Condition> {
    let Some(absent) = &raw.absent else {
        return compared(raw, errors);
    };
    let written = [
        ("stat", raw.stat.is_some()),
        ("op", raw.op.is_some()),
        ("threshold", raw.threshold.is_some()),
        ("resolve_threshold", raw.resolve_threshold.is_some()),
        ("window", raw.window.is_some()),
        ("min_count", raw.min_count.is_some()),
    ];
    for (field, _) in written.iter().filter(|(_, set)| *set) {
        errors.push(*field, not_absent(field));
    }
    let window = errors.check(
        "absent",
        parse_duration(&absent.text()).and_then(at_least_a_second),
    )?;
    Some(Condition {
        absent: Some(window),
        stat: Stat::Count,
        window,
        op: Op::Lt,
        threshold: 1.0,
    })
}

/// The condition of a rule with a stat, which needs a window, an op and a threshold.
fn compared(raw: &RawRule, errors: &mut Errors<'_>) -> Option<Condition> {
    if raw.stat.is_none() {
        errors.push(
            "stat",
            "missing: give a stat (p50, p90, p95, p99, avg, min, max, count, rate or error_rate), or absent: a duration for a rule that fires when samples stop",
        );
    }
    let mut required = |field: &str, present: bool| {
        if !present {
            errors.push(
                field,
                "missing: a rule with a stat needs a window, an op and a threshold",
            );
        }
    };
    required("window", raw.window.is_some());
    required("op", raw.op.is_some());
    required("threshold", raw.threshold.is_some());
    let window = raw.window.as_ref().map(|w| {
        errors.check(
            "window",
            parse_duration(&w.text()).and_then(at_least_a_second),
        )
    });
    if let Some(Err(e)) = raw.threshold.map(finite) {
        errors.push("threshold", e);
    }
    let (stat, op, threshold) = (raw.stat?, raw.op?, raw.threshold?);
    if let Some(resolve) = raw.resolve_threshold {
        if let Err(e) = finite(resolve).and_then(|r| hysteresis(op, threshold, r)) {
            errors.push("resolve_threshold", e);
        }
    }
    Some(Condition {
        absent: None,
        stat,
        window: window??,
        op,
        threshold,
    })
}

/// An override schedule's threshold and resolve threshold: the pair in force with it must
/// still hold; an absent rule has neither. `rule_resolve` is the rule's own resolve
/// threshold; without a `condition` (the rule's is invalid) only finiteness is checked.
pub(super) fn schedule_thresholds(
    index: usize,
    raw: &RawSchedule,
    rule_resolve: Option<f64>,
    condition: Option<&Condition>,
    errors: &mut Errors<'_>,
) {
    let field = |name: &str| format!("schedules[{index}].{name}");
    if condition.is_some_and(|c| c.absent.is_some()) {
        for (name, set) in [
            ("threshold", raw.threshold.is_some()),
            ("resolve_threshold", raw.resolve_threshold.is_some()),
        ] {
            if set {
                errors.push(field(name), not_absent(name));
            }
        }
        return;
    }
    if let Some(Err(e)) = raw.threshold.map(finite) {
        errors.push(field("threshold"), e);
        return;
    }
    let Some(condition) = condition else { return };
    let threshold = raw.threshold.unwrap_or(condition.threshold);
    if let Some(resolve) = raw.resolve_threshold.or(rule_resolve) {
        if let Err(e) = finite(resolve).and_then(|r| hysteresis(condition.op, threshold, r)) {
            errors.push(field("resolve_threshold"), e);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::rule::{Op, Stat};
    use crate::test_support::{errors, file};

    const HEARTBEAT: &str = "name: heartbeat
service: checkout
metric: heartbeat
absent: 2m
severity: critical";

    fn heartbeat_errors(extra: &str) -> Vec<String> {
        errors(&file(&[&format!("{HEARTBEAT}\n{extra}")]))
    }

    #[test]
    fn an_absent_rule_is_count_below_one_over_its_duration() {
        let text = file(&[&format!(
            "{HEARTBEAT}\nfor: 1m\nschedules:\n  - days: [sat]\n    severity: warning\n  - hours: \"02:00-02:30\"\n    maintenance: true"
        )]);
        let rule = crate::parse(&text).unwrap().remove(0);
        assert_eq!(rule.absent, Some(Duration::from_secs(120)));
        assert_eq!(
            (rule.stat, rule.op, rule.threshold, rule.window),
            (Stat::Count, Op::Lt, 1.0, Duration::from_secs(120))
        );
        assert_eq!(rule.resolve_threshold, None);
        assert_eq!(rule.min_count, None);
        assert_eq!(rule.for_, Duration::from_secs(60));
        assert_eq!(rule.schedules.len(), 2);
        assert_eq!(crate::test_support::rule("").absent, None);
    }

    #[test]
    fn an_absent_rule_refuses_each_field_it_stands_in_for() {
        for (line, field) in [
            ("stat: count", "stat"),
            ("op: \"<\"", "op"),
            ("threshold: 1", "threshold"),
            ("resolve_threshold: 2", "resolve_threshold"),
            ("window: 5m", "window"),
            ("min_count: 3", "min_count"),
        ] {
            assert_eq!(
                heartbeat_errors(line),
                [format!(
                    r#"rules[0] "heartbeat": {field}: an absent rule has no {field}; it fires when no sample arrived for its absent duration"#
                )],
                "{line}"
            );
        }
        let found = heartbeat_errors("stat: p95\nwindow: 5m\nop: \">\"\nthreshold: 500");
        assert_eq!(found.len(), 4, "{found:#?}");
    }

    #[test]
    fn an_absent_rule_schedule_overrides_no_threshold() {
        assert_eq!(
            heartbeat_errors(
                "schedules:\n  - name: saturday\n    days: [sat]\n    threshold: 0\n    resolve_threshold: 1\n    severity: warning"
            ),
            [
                r#"rules[0] "heartbeat": schedules[0].threshold: an absent rule has no threshold; it fires when no sample arrived for its absent duration"#,
                r#"rules[0] "heartbeat": schedules[0].resolve_threshold: an absent rule has no resolve_threshold; it fires when no sample arrived for its absent duration"#,
            ]
        );
    }

    #[test]
    fn the_absent_duration_is_checked() {
        assert_eq!(
            errors(&file(&[&HEARTBEAT.replace("absent: 2m", "absent: 2")])),
            [r#"rules[0] "heartbeat": absent: missing unit: use ms, s, m, h or d, e.g. 5m"#]
        );
        assert_eq!(
            errors(&file(&[&HEARTBEAT.replace("absent: 2m", "absent: 10ms")])),
            [r#"rules[0] "heartbeat": absent: must be at least 1s"#]
        );
    }

    #[test]
    fn a_rule_without_absent_needs_a_stat_window_op_and_threshold() {
        assert_eq!(
            errors(&file(&[&HEARTBEAT.replace("absent: 2m\n", "")])),
            [
                r#"rules[0] "heartbeat": stat: missing: give a stat (p50, p90, p95, p99, avg, min, max, count, rate or error_rate), or absent: a duration for a rule that fires when samples stop"#,
                r#"rules[0] "heartbeat": window: missing: a rule with a stat needs a window, an op and a threshold"#,
                r#"rules[0] "heartbeat": op: missing: a rule with a stat needs a window, an op and a threshold"#,
                r#"rules[0] "heartbeat": threshold: missing: a rule with a stat needs a window, an op and a threshold"#,
            ]
        );
        let stat_only = HEARTBEAT.replace("absent: 2m", "stat: max\nwindow: 1m\nop: \">\"");
        assert_eq!(
            errors(&file(&[&stat_only])),
            [
                r#"rules[0] "heartbeat": threshold: missing: a rule with a stat needs a window, an op and a threshold"#
            ]
        );
    }
}
