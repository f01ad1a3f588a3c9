use chrono::TimeDelta;

use super::*;
use crate::test_support::{file, RULE};

/// A Wednesday noon, UTC.
const T0: &str = "2026-06-03T12:00:00Z";
const TEN_SECONDS: Duration = Duration::from_secs(10);

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn after(seconds: i64) -> DateTime<Utc> {
    at(T0) + TimeDelta::seconds(seconds)
}

/// The base rule (`p95 > 500`, warning, window 5m) with lines replaced and added.
fn rule(replace: &[(&str, &str)], extra: &str) -> Rule {
    let mut text = RULE.to_owned();
    for (from, to) in replace {
        assert!(text.contains(from), "{from}");
        text = text.replace(from, to);
    }
    let text = file(&[&format!("{text}\n{extra}")]);
    crate::parse(&text)
        .unwrap_or_else(|e| panic!("{e:?}\n{text}"))
        .remove(0)
}

/// `count` samples of `value`.
fn samples(value: f64, count: u64) -> Bucket {
    let mut window = Bucket::default();
    window.add(value, count, false, 0);
    window
}

fn empty() -> Bucket {
    Bucket::default()
}

/// One series under one rule, evaluated at instants the test gives.
struct Series {
    rule: Rule,
    state: SeriesState,
}

impl Series {
    fn new(rule: Rule) -> Self {
        Self {
            rule,
            state: SeriesState::default(),
        }
    }

    fn eval(&mut self, at: DateTime<Utc>, window: &Bucket) -> Option<Transition> {
        evaluate(&self.rule, &mut self.state, at, window)
    }

    fn kind(&mut self, at: DateTime<Utc>, window: &Bucket) -> Option<Kind> {
        self.eval(at, window).map(|t| t.kind)
    }

    /// Evaluates from `from` (included) to `until` (excluded) at the instants
    /// [`next_evaluation`] gives, with the window `window` gives for each instant.
    fn run(
        &mut self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        window: impl Fn(DateTime<Utc>) -> Bucket,
    ) -> Vec<Transition> {
        let mut transitions = Vec::new();
        let mut now = from;
        while now < until {
            transitions.extend(self.eval(now, &window(now)));
            now = next_evaluation(&self.rule, now, TEN_SECONDS);
        }
        transitions
    }
}

const RESOLVED: Option<Kind> = Some(Kind::Resolved(Reason::Recovered));

#[test]
fn ops_compare_with_the_threshold() {
    let cases = [
        (Op::Gt, [false, false, true]),
        (Op::Ge, [false, true, true]),
        (Op::Lt, [true, false, false]),
        (Op::Le, [true, true, false]),
    ];
    for (op, expected) in cases {
        let held = [499.0, 500.0, 501.0].map(|v| op.holds(v, 500.0));
        assert_eq!(held, expected, "{op:?}");
    }
}

#[test]
fn statistics_of_a_window() {
    let five_minutes = Duration::from_secs(300);
    let mut window = samples(10.0, 1);
    window.add(30.0, 3, true, 0);
    let stat = |s| statistic(s, &window, five_minutes);
    assert_eq!(stat(Stat::Count), Some(4.0));
    assert_eq!(stat(Stat::Avg), Some(25.0));
    assert_eq!(stat(Stat::Min), Some(10.0));
    assert_eq!(stat(Stat::Max), Some(30.0));
    assert_eq!(stat(Stat::P50), Some(30.0));
    assert_eq!(stat(Stat::ErrorRate), Some(0.75));

    // 300 samples in 5 minutes: one per second; 45 in a minute: 0.75 per second.
    let rate = |window: &Bucket, span| statistic(Stat::Rate, window, span);
    assert_eq!(rate(&samples(1.0, 300), five_minutes), Some(1.0));
    assert_eq!(rate(&samples(1.0, 45), Duration::from_secs(60)), Some(0.75));
    assert_eq!(rate(&samples(1.0, 45), Duration::ZERO), None);

    // 3 errors among 60 samples: 5 %, as a ratio.
    let mut errors = samples(1.0, 57);
    errors.add(1.0, 3, true, 0);
    assert_eq!(
        statistic(Stat::ErrorRate, &errors, five_minutes),
        Some(0.05)
    );

    // No samples: zero for the counting stats, nothing for the others.
    let none = |s| statistic(s, &empty(), five_minutes);
    for s in [Stat::Count, Stat::Rate, Stat::ErrorRate] {
        assert_eq!(none(s), Some(0.0), "{s:?}");
    }
    for s in [Stat::P50, Stat::P99, Stat::Avg, Stat::Min, Stat::Max] {
        assert_eq!(none(s), None, "{s:?}");
    }
}

#[test]
fn pending_fires_exactly_when_for_has_passed() {
    let mut series = Series::new(rule(&[], "for: 1m"));
    let slow = samples(600.0, 10);
    let pending = series.eval(after(0), &slow).unwrap();
    assert_eq!(
        (
            pending.kind,
            pending.seq,
            pending.value,
            pending.active_since
        ),
        (Kind::Pending, 1, Some(600.0), after(0))
    );
    for s in (10..60).step_by(10) {
        assert_eq!(series.kind(after(s), &slow), None, "{s}s");
    }
    let almost = after(60) - TimeDelta::milliseconds(1);
    assert_eq!(series.kind(almost, &slow), None);
    let firing = series.eval(after(60), &slow).unwrap();
    assert_eq!(
        (firing.kind, firing.seq, firing.active_since),
        (Kind::Firing, 2, after(0))
    );
    assert_eq!(firing.in_force.severity, Severity::Warning);
    let resolved = series.eval(after(70), &samples(400.0, 10)).unwrap();
    assert_eq!(
        (resolved.kind, resolved.seq, resolved.active_since),
        (Kind::Resolved(Reason::Recovered), 3, after(0))
    );
    assert_eq!(series.state.phase, Phase::Inactive);
}

#[test]
fn a_pending_breach_that_clears_resolves_and_the_next_one_starts_for_afresh() {
    let mut series = Series::new(rule(&[], "for: 1m"));
    let (slow, fast) = (samples(600.0, 10), samples(400.0, 10));
    assert_eq!(series.kind(after(0), &slow), Some(Kind::Pending));
    assert_eq!(series.kind(after(50), &fast), RESOLVED);
    let again = series.eval(after(60), &slow).unwrap();
    assert_eq!((again.kind, again.active_since), (Kind::Pending, after(60)));
    assert_eq!(series.kind(after(110), &slow), None);
    assert_eq!(series.kind(after(120), &slow), Some(Kind::Firing));
}

#[test]
fn for_zero_fires_at_once_without_pending() {
    let mut series = Series::new(rule(&[], "for: 0s"));
    let firing = series.eval(after(0), &samples(600.0, 1)).unwrap();
    assert_eq!(
        (firing.kind, firing.seq, firing.active_since),
        (Kind::Firing, 1, after(0))
    );
    assert_eq!(series.kind(after(10), &samples(600.0, 1)), None);
}

#[test]
fn hysteresis_keeps_a_value_between_the_thresholds_from_flapping() {
    let values = [510.0, 470.0, 505.0, 460.0, 499.0, 451.0, 501.0];
    let kinds = |rule| {
        let mut series = Series::new(rule);
        let kinds: Vec<Option<Kind>> = (0..)
            .zip(values)
            .map(|(i, v)| series.kind(after(10 * i), &samples(v, 5)))
            .collect();
        (kinds, series)
    };
    let (with, mut series) = kinds(rule(&[], "resolve_threshold: 450"));
    let mut expected = vec![None; values.len()];
    expected[0] = Some(Kind::Firing);
    assert_eq!(with, expected);
    assert_eq!(series.kind(after(100), &samples(450.0, 5)), RESOLVED);
    // Below the threshold but above the resolve threshold does not start an alert.
    assert_eq!(series.kind(after(110), &samples(470.0, 5)), None);

    // Without a resolve threshold the same values flap at every crossing.
    let (without, _) = kinds(rule(&[], ""));
    assert_eq!(without.iter().flatten().count(), 5);
}

#[test]
fn keep_firing_for_counts_from_the_last_evaluation_that_held() {
    let mut series = Series::new(rule(&[], "keep_firing_for: 30s"));
    let (slow, fast) = (samples(600.0, 5), samples(400.0, 5));
    assert_eq!(series.kind(after(0), &slow), Some(Kind::Firing));
    assert_eq!(series.kind(after(10), &fast), None);
    assert_eq!(series.kind(after(20), &slow), None);
    for s in [30, 40] {
        assert_eq!(series.kind(after(s), &fast), None, "{s}s");
    }
    let resolved = series.eval(after(50), &fast).unwrap();
    assert_eq!(
        (resolved.kind, resolved.active_since),
        (Kind::Resolved(Reason::Recovered), after(0))
    );
}

#[test]
fn too_few_samples_give_no_verdict_and_are_not_missing_data() {
    let mut series = Series::new(rule(&[], "min_count: 5"));
    assert_eq!(series.kind(after(0), &samples(600.0, 4)), None);
    assert_eq!(series.state, SeriesState::default());
    assert_eq!(
        series.kind(after(10), &samples(600.0, 5)),
        Some(Kind::Firing)
    );
    assert_eq!(series.kind(after(20), &samples(100.0, 4)), None);
    // Three evaluations without data, then a few samples: the series is there.
    for s in [30, 40, 50] {
        assert_eq!(series.kind(after(s), &empty()), None);
    }
    assert_eq!(series.kind(after(60), &samples(100.0, 2)), None);
    for s in [70, 80, 90] {
        assert_eq!(series.kind(after(s), &empty()), None);
    }
    assert!(matches!(series.state.phase, Phase::Firing { .. }));
    assert_eq!(series.kind(after(100), &samples(100.0, 5)), RESOLVED);
}

#[test]
fn no_samples_count_as_zero_for_count_rate_and_error_rate() {
    let quiet = [
        rule(
            &[("stat: p95", "stat: count"), ("op: \">\"", "op: \"<\"")],
            "",
        ),
        rule(
            &[
                ("stat: p95", "stat: rate"),
                ("op: \">\"", "op: \"<=\""),
                ("threshold: 500", "threshold: 0.5"),
            ],
            "",
        ),
    ];
    for rule in quiet {
        let stat = rule.stat;
        let firing = Series::new(rule).eval(after(0), &empty()).unwrap();
        assert_eq!(
            (firing.kind, firing.value),
            (Kind::Firing, Some(0.0)),
            "{stat:?}"
        );
    }

    let mut errors = Series::new(rule(
        &[
            ("stat: p95", "stat: error_rate"),
            ("threshold: 500", "threshold: 0.05"),
        ],
        "min_count: 20",
    ));
    let mut failing = samples(1.0, 10);
    failing.add(1.0, 10, true, 0);
    assert_eq!(errors.kind(after(0), &failing), Some(Kind::Firing));
    // No traffic: no errors, whatever min_count says about a few samples.
    let resolved = errors.eval(after(10), &empty()).unwrap();
    assert_eq!(
        (resolved.kind, resolved.value),
        (Kind::Resolved(Reason::Recovered), Some(0.0))
    );
}

#[test]
fn a_quantile_without_data_keeps_its_state_then_resolves_as_missing() {
    let mut series = Series::new(rule(&[], ""));
    assert_eq!(
        series.kind(after(0), &samples(600.0, 5)),
        Some(Kind::Firing)
    );
    for n in 1..=MISSING_EVALUATIONS {
        assert_eq!(series.kind(after(10 * i64::from(n)), &empty()), None);
        assert_eq!(series.state.missing, n);
    }
    let missing = series.eval(after(40), &empty()).unwrap();
    assert_eq!(
        (missing.kind, missing.value, missing.active_since),
        (Kind::Resolved(Reason::MissingSeries), None, after(0))
    );
    assert_eq!(series.kind(after(50), &empty()), None);

    // Data coming back within the bound resets the count.
    let mut series = Series::new(rule(&[("stat: p95", "stat: max")], ""));
    series.kind(after(0), &samples(600.0, 5));
    for s in [10, 20, 30, 40, 50, 60, 70] {
        let window = if s == 40 { samples(600.0, 5) } else { empty() };
        assert_eq!(series.kind(after(s), &window), None, "{s}s");
    }
    assert!(matches!(series.state.phase, Phase::Firing { .. }));
}

#[test]
fn a_pending_timer_runs_through_missing_data_but_only_data_fires_it() {
    let mut series = Series::new(rule(&[("stat: p95", "stat: avg")], "for: 20s"));
    let slow = samples(600.0, 5);
    assert_eq!(series.kind(after(0), &slow), Some(Kind::Pending));
    for s in [10, 20, 30] {
        assert_eq!(series.kind(after(s), &empty()), None, "{s}s");
    }
    let firing = series.eval(after(40), &slow).unwrap();
    assert_eq!((firing.kind, firing.active_since), (Kind::Firing, after(0)));

    let mut series = Series::new(rule(&[("stat: p95", "stat: min")], "for: 1h"));
    assert_eq!(series.kind(after(0), &slow), Some(Kind::Pending));
    for s in [10, 20, 30] {
        series.kind(after(s), &empty());
    }
    assert_eq!(
        series.kind(after(40), &empty()),
        Some(Kind::Resolved(Reason::MissingSeries))
    );
}

const BACKUPS: &str = "for: 1m
schedules:
  - name: backups
    hours: \"02:00-03:00\"
    maintenance: true";

#[test]
fn maintenance_resolves_at_its_start_and_evaluation_starts_afresh_after_it() {
    let slow = |_| samples(600.0, 5);
    let mut series = Series::new(rule(&[], BACKUPS));
    let start = at("2026-06-03T01:58:07Z");
    let transitions = series.run(start, at("2026-06-03T03:02:00Z"), slow);
    let seen: Vec<(Kind, DateTime<Utc>, DateTime<Utc>)> = transitions
        .iter()
        .map(|t| (t.kind, t.at, t.active_since))
        .collect();
    let resolved_at = at("2026-06-03T02:00:00Z");
    let restart = at("2026-06-03T03:00:00Z");
    assert_eq!(
        seen,
        [
            (Kind::Pending, start, start),
            (Kind::Firing, start + TimeDelta::minutes(1), start),
            (Kind::Resolved(Reason::Maintenance), resolved_at, start),
            (Kind::Pending, restart, restart),
            (Kind::Firing, restart + TimeDelta::minutes(1), restart),
        ]
    );
    assert!(transitions[2].in_force.muted);
    assert_eq!(transitions[2].in_force.schedule, Some(0));

    // A pending series is resolved too; an inactive one has nothing to resolve.
    let mut series = Series::new(rule(&[], BACKUPS));
    assert_eq!(
        series.kind(at("2026-06-03T01:59:30Z"), &samples(600.0, 5)),
        Some(Kind::Pending)
    );
    assert_eq!(
        series.kind(resolved_at, &samples(600.0, 5)),
        Some(Kind::Resolved(Reason::Maintenance))
    );
    assert_eq!(series.kind(resolved_at, &samples(600.0, 5)), None);
}

const SATURDAY: &str = "resolve_threshold: 450
schedules:
  - name: saturday
    days: [sat]
    timezone: Europe/Berlin
    threshold: 300
    resolve_threshold: 250
    severity: critical";

#[test]
fn a_saturday_schedule_escalates_and_switches_thresholds_exactly_at_its_boundaries() {
    // Saturday in Berlin (CEST) is Friday 22:00Z to Saturday 22:00Z.
    let (friday, saturday_start) = (at("2026-06-05T21:50:07Z"), at("2026-06-05T22:00:00Z"));
    let saturday_end = at("2026-06-06T22:00:00Z");
    let until = saturday_end + TimeDelta::minutes(1);

    let mut slow = Series::new(rule(&[], SATURDAY));
    let transitions = slow.run(friday, until, |_| samples(600.0, 5));
    let seen: Vec<(u64, Kind, DateTime<Utc>, Severity)> = transitions
        .iter()
        .map(|t| (t.seq, t.kind, t.at, t.in_force.severity))
        .collect();
    assert_eq!(
        seen,
        [
            (1, Kind::Firing, friday, Severity::Warning),
            (2, Kind::Escalated, saturday_start, Severity::Critical),
            (3, Kind::Escalated, saturday_end, Severity::Warning),
        ]
    );
    assert!(transitions[1..].iter().all(|t| t.active_since == friday));
    assert_eq!(transitions[1].in_force.threshold, 300.0);

    // 400 breaches only Saturday's threshold: it fires at the first instant of Saturday
    // and resolves at the first instant after it.
    let mut moderate = Series::new(rule(&[], SATURDAY));
    let transitions = moderate.run(friday, until, |_| samples(400.0, 5));
    let seen: Vec<(Kind, DateTime<Utc>, f64)> = transitions
        .iter()
        .map(|t| (t.kind, t.at, t.in_force.threshold))
        .collect();
    assert_eq!(
        seen,
        [
            (Kind::Firing, saturday_start, 300.0),
            (Kind::Resolved(Reason::Recovered), saturday_end, 500.0),
        ]
    );
}

#[test]
fn a_firing_series_escalates_even_without_a_verdict() {
    let mut series = Series::new(rule(&[], SATURDAY));
    assert_eq!(
        series.kind(at("2026-06-05T21:59:00Z"), &samples(600.0, 5)),
        Some(Kind::Firing)
    );
    let escalated = series.eval(at("2026-06-05T22:00:00Z"), &empty()).unwrap();
    assert_eq!(
        (escalated.kind, escalated.value, escalated.in_force.severity),
        (Kind::Escalated, None, Severity::Critical)
    );
}

const BERLIN_NIGHT: &str = "schedules:
  - name: night
    hours: \"00:00-06:00\"
    timezone: Europe/Berlin
    threshold: 900";

#[test]
fn thresholds_switch_at_local_boundaries_across_dst_changes() {
    // 700 breaches only the day's threshold: firing from 06:00 to 00:00 Berlin time.
    let recovered = Kind::Resolved(Reason::Recovered);
    let cases = [
        // The day before spring forward: 06:00 CET is 05:00Z, midnight 23:00Z.
        (
            "2026-03-28T04:50:07Z",
            vec![
                (Kind::Firing, "2026-03-28T05:00:00Z"),
                (recovered, "2026-03-28T23:00:00Z"),
            ],
        ),
        // Spring forward at 02:00 CET: 06:00 CEST is 04:00Z, midnight 22:00Z.
        (
            "2026-03-29T03:50:07Z",
            vec![
                (Kind::Firing, "2026-03-29T04:00:00Z"),
                (recovered, "2026-03-29T22:00:00Z"),
            ],
        ),
        // Fall back at 03:00 CEST: the night starts at 00:00 CEST (22:00Z the day
        // before) and ends at 06:00 CET (05:00Z); the next one starts at 00:00 CET.
        (
            "2026-10-24T21:50:07Z",
            vec![
                (Kind::Firing, "2026-10-24T21:50:07Z"),
                (recovered, "2026-10-24T22:00:00Z"),
                (Kind::Firing, "2026-10-25T05:00:00Z"),
                (recovered, "2026-10-25T23:00:00Z"),
            ],
        ),
    ];
    for (from, expected) in cases {
        let expected: Vec<(Kind, DateTime<Utc>)> =
            expected.into_iter().map(|(k, t)| (k, at(t))).collect();
        let until = expected.last().unwrap().1 + TimeDelta::minutes(1);
        let mut series = Series::new(rule(&[], BERLIN_NIGHT));
        let transitions = series.run(at(from), until, |_| samples(700.0, 5));
        let seen: Vec<(Kind, DateTime<Utc>)> = transitions.iter().map(|t| (t.kind, t.at)).collect();
        assert_eq!(seen, expected, "from {from}");
    }
}

#[test]
fn next_evaluation_is_the_interval_or_an_earlier_schedule_change() {
    let rule = rule(&[], SATURDAY);
    let friday = at("2026-06-05T21:59:55Z");
    assert_eq!(
        next_evaluation(&rule, friday, TEN_SECONDS),
        at("2026-06-05T22:00:00Z")
    );
    let wednesday = at(T0);
    assert_eq!(next_evaluation(&rule, wednesday, TEN_SECONDS), after(10));
    assert_eq!(
        next_evaluation(&rule, wednesday, Duration::MAX),
        at("2026-06-05T22:00:00Z")
    );
}

#[test]
fn every_transition_takes_the_next_seq_and_the_state_survives_a_restart() {
    let mut series = Series::new(rule(&[], "for: 30s"));
    let (slow, fast) = (samples(600.0, 5), samples(400.0, 5));
    series.kind(after(0), &slow);
    // The aggregator persists the state; a new process restores it.
    let saved = serde_yaml::to_string(&series.state).unwrap();
    assert!(saved.starts_with("phase: pending\nsince: "), "{saved}");
    series.state = serde_yaml::from_str(&saved).unwrap();
    let seqs: Vec<u64> = [
        (30, &slow),
        (40, &fast),
        (50, &slow),
        (60, &fast),
        (70, &slow),
        (100, &slow),
    ]
    .into_iter()
    .filter_map(|(s, window)| series.eval(after(s), window))
    .map(|t| t.seq)
    .collect();
    assert_eq!(seqs, [2, 3, 4, 5, 6, 7]);
    assert_eq!(series.state.seq, 7);
    let saved = serde_yaml::to_string(&series.state).unwrap();
    assert!(saved.contains("severity: warning"), "{saved}");
    assert_eq!(
        serde_yaml::from_str::<SeriesState>(&saved).unwrap(),
        series.state
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// A window: no samples, or `count` samples of a value around the thresholds.
    fn window() -> impl Strategy<Value = Bucket> {
        prop_oneof![
            1 => Just(empty()),
            6 => (prop_oneof![Just(450.0), Just(500.0), 0.0..1000.0], 1..20u64)
                .prop_map(|(v, n)| samples(v, n)),
        ]
    }

    /// A rule with hysteresis, a Saturday override and a maintenance window, and random
    /// `for`, `keep_firing_for`, `min_count` and stat.
    fn any_rule() -> impl Strategy<Value = Rule> {
        (
            0..4u64,
            0..4u64,
            0..8u64,
            prop::sample::select(vec!["p95", "max", "count"]),
        )
            .prop_map(|(for_, keep, min_count, stat)| {
                rule(
                    &[("stat: p95", &format!("stat: {stat}"))],
                    &format!(
                        "for: {}s\nkeep_firing_for: {}s\nmin_count: {min_count}\n{SATURDAY}
  - days: [fri]
    hours: \"23:00-23:30\"
    maintenance: true",
                        for_ * 10,
                        keep * 10
                    ),
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn transitions_follow_the_lifecycle(
            rule in any_rule(),
            steps in prop::collection::vec((window(), 1..600i64), 1..80),
        ) {
            let mut state = SeriesState::default();
            // Friday evening UTC: Saturday in Berlin and the maintenance window are near.
            let mut now = at("2026-06-05T21:40:00Z");
            let mut open: Option<DateTime<Utc>> = None;
            let mut firing = false;
            let mut seq = 0;
            for (window, seconds) in steps {
                now += TimeDelta::seconds(seconds);
                if let Some(t) = evaluate(&rule, &mut state, now, &window) {
                    prop_assert_eq!(t.seq, seq + 1);
                seq = t.seq;
                match t.kind {
                    Kind::Pending => {
                        prop_assert!(open.is_none());
                        prop_assert_eq!(t.active_since, now);
                        open = Some(now);
                    }
                    Kind::Firing => {
                        prop_assert!(!firing, "fired twice");
                        prop_assert_eq!(t.active_since, open.unwrap_or(now));
                        prop_assert!(!t.in_force.muted);
                        open = Some(t.active_since);
                        firing = true;
                    }
                    Kind::Escalated => {
                        prop_assert!(firing);
                        prop_assert_eq!(Some(t.active_since), open);
                    }
                    Kind::Resolved(_) => {
                        prop_assert_eq!(Some(t.active_since), open, "resolved nothing");
                        open = None;
                        firing = false;
                    }
                }
                }
                prop_assert_eq!(state.seq, seq);
                prop_assert_eq!(matches!(state.phase, Phase::Firing { .. }), firing);
                prop_assert_eq!(state.phase == Phase::Inactive, open.is_none());
            }
        }
    }
}
