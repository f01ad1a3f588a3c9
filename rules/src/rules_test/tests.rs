use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::read::instant;
use super::*;
use crate::test_support::file;
use crate::Rule;

/// `count > 5` over a minute, for 30s; stricter and critical at weekends (UTC).
const BUSY: &str = "name: busy
service: api
metric: req
stat: count
window: 1m
op: \">\"
threshold: 5
for: 30s
severity: warning
annotations:
  summary: \"{{ value }} requests on {{ service }}\"
schedules:
  - name: weekend
    days: [sat, sun]
    threshold: 3
    severity: critical";

fn rules() -> Vec<Rule> {
    crate::parse(&file(&[BUSY])).unwrap()
}

fn utc(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// A test file over `rules.yaml` with the given `tests:` entries (YAML, indented by 2).
fn test_file(tests: &str) -> String {
    format!("rule_files: [rules.yaml]\ntests:\n{tests}")
}

/// The errors of a test file that must not parse, as printed.
fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(file) => panic!("parsed: {file:?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// Each test's failures as printed; an empty list for a test that passed.
fn outcomes(text: &str) -> Vec<Vec<String>> {
    let file = parse(text).unwrap_or_else(|e| panic!("{e:?}"));
    run(&file, &rules())
        .unwrap_or_else(|e| panic!("{e:?}"))
        .iter()
        .map(|o| o.failures.iter().map(ToString::to_string).collect())
        .collect()
}

/// Wednesday 12:00:00 to 12:05:00 UTC, a request every 5 s.
const TRAFFIC: &str = "    input:
      - {at: \"2026-06-03 12:00:00\", every: 5s, until: \"2026-06-03 12:05:00\", service: api, metric: req, value: 1}
";

#[test]
fn local_times_follow_the_schedules_dst_rule_and_rfc_3339_names_any_instant() {
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    let cases = [
        // Skipped by spring-forward: the end of the gap.
        ("2026-03-29 02:30:00", "2026-03-29T01:00:00Z"),
        // Repeated by fall-back: the first occurrence (CEST).
        ("2026-10-25 02:30:00", "2026-10-25T00:30:00Z"),
        ("2026-10-25T02:30", "2026-10-25T00:30:00Z"),
        ("2026-10-25T02:30:00+01:00", "2026-10-25T01:30:00Z"),
        ("2026-06-03 12:00:00.250", "2026-06-03T10:00:00.250Z"),
        ("2026-06-03 12:00", "2026-06-03T10:00:00Z"),
    ];
    for (text, expected) in cases {
        assert_eq!(instant(text, berlin), Ok(utc(expected)), "{text}");
    }
    assert_eq!(
        instant("2026-06-03 12:00:00", Tz::UTC),
        Ok(utc("2026-06-03T12:00:00Z"))
    );
    assert_eq!(
        instant("noon", Tz::UTC).unwrap_err(),
        r#""noon" is not a time: write a local time such as "2026-10-24 12:00:00" or RFC 3339 such as "2026-10-24T10:00:00Z""#
    );
}

#[test]
fn a_valid_file_reads_with_its_defaults_and_repeats_expanded() {
    let file = parse(
        "rule_files: [a.yaml, b.yaml]
timezone: Europe/Berlin
tests:
  - name: one
    input:
      - {at: \"2026-06-03 12:00:30\", service: api, metric: req, value: 2, count: 3, error: true, tags: {region: eu}}
      - {at: \"2026-06-03 12:00:00\", every: 20s, until: \"2026-06-03 12:01:00\", service: api, metric: req, value: 1}
    expect:
      - {at: \"2026-06-03 12:01:00\", alerts: [{rule: busy, since: \"2026-06-03 12:00:30\"}]}
  - name: two
    evaluation_interval: 1m
    expect:
      - {at: \"2026-06-03T10:00:00Z\", in_force: {rule: busy, threshold: 3}}
",
    )
    .unwrap();
    assert_eq!(file.rule_files, ["a.yaml", "b.yaml"]);
    assert_eq!(file.timezone, chrono_tz::Europe::Berlin);
    let [one, two] = &file.tests[..] else {
        panic!("{file:?}")
    };
    assert_eq!(one.interval, std::time::Duration::from_secs(10));
    assert_eq!(two.interval, std::time::Duration::from_secs(60));
    let input: Vec<_> = one
        .input
        .iter()
        .map(|s| (s.timestamp, s.value, s.count, s.error, s.tags.len()))
        .collect();
    let t0 = utc("2026-06-03T10:00:00Z").timestamp_millis();
    // Until is excluded; samples in order of event time.
    assert_eq!(
        input,
        [
            (t0, 1.0, 1, false, 0),
            (t0 + 20_000, 1.0, 1, false, 0),
            (t0 + 30_000, 2.0, 3, true, 1),
            (t0 + 40_000, 1.0, 1, false, 0),
        ]
    );
    let alert = &one.expect[0].alerts.as_ref().unwrap()[0];
    assert_eq!(alert.since, Some(utc("2026-06-03T10:00:30Z")));
    assert_eq!(alert.state, None);
    assert!(one.expect[0].in_force.is_none());
    assert_eq!(
        two.expect[0].in_force.as_ref().unwrap().threshold,
        Some(3.0)
    );
}

#[test]
fn every_error_names_its_test_and_field() {
    let found = errors(
        "rule_files: []
timezone: Mars/Base
evaluation_interval: 10
tests: []
",
    );
    assert_eq!(
        found,
        [
            "rule_files: name at least one rules file",
            "tests: no tests",
            r#"timezone: unknown time zone "Mars/Base""#,
            "evaluation_interval: missing unit: use ms, s, m, h or d, e.g. 5m",
        ]
    );
    let found = errors(&test_file(
        "  - name: first
    evaluation_interval: 500ms
    input:
      - {at: \"2026-06-03 25:00:00\", service: api, metric: req, value: 1}
      - {at: \"2026-06-03 12:00:00\", every: 5s, service: api, metric: req, value: 1}
      - {at: \"2026-06-03 12:00:00\", every: 0s, until: \"2026-06-03 12:00:00\", service: 'a b', metric: req, value: 1, count: 0, tags: {'k k': v}}
      - {at: \"2026-06-03 12:00:00\", every: 1ms, until: \"2026-06-04 12:00:00\", service: api, metric: req, value: 1}
    expect:
      - {at: \"2026-06-03 12:00:00\"}
      - {at: \"2026-06-03 12:00:00\", alerts: [{since: yesterday}]}
  - name: second
    expect: []
  - name: third
    expect:
      - {at: \"2026-06-03 12:00:00\", alerts: [{rule: busy, state: resolved}]}
  - name: fourth
    expect:
      - {at: \"2026-06-03 12:00:00\", in_force: {rule: busy, treshold: 3}}
",
    ));
    let expected = [
        r#"tests[0] "first": evaluation_interval: must be at least 1s"#,
        r#"tests[0] "first": input[0].at: "2026-06-03 25:00:00" is not a time: write a local time such as "2026-10-24 12:00:00" or RFC 3339 such as "2026-10-24T10:00:00Z""#,
        r#"tests[0] "first": input[1].until: `every` needs `until`"#,
        r#"tests[0] "first": input[2].every: must be more than 0"#,
        r#"tests[0] "first": input[2].service: may contain only [A-Za-z0-9._-]"#,
        r#"tests[0] "first": input[3].until: repeats the sample 86400000 times; at most 1000000"#,
        r#"tests[0] "first": expect[0]: give `alerts`, `in_force` or both"#,
        r#"tests[0] "first": expect[1].alerts[0].since: "yesterday" is not a time: write a local time such as "2026-10-24 12:00:00" or RFC 3339 such as "2026-10-24T10:00:00Z""#,
        r#"tests[1] "second": expect: no expectations: give at least one"#,
    ];
    assert_eq!(found[..expected.len()], expected);
    assert!(
        found[9].starts_with(
            r#"tests[2] "third": expect[0].alerts[0].state: unknown variant `resolved`, expected `pending` or `firing`"#
        ),
        "{found:?}"
    );
    assert!(
        found[10].starts_with(
            r#"tests[3] "fourth": expect[0].in_force.treshold: unknown field `treshold`, expected one of"#
        ),
        "{found:?}"
    );
    assert_eq!(found.len(), 11, "{found:?}");
    let found = errors("rule_files: [a.yaml]\ntests: []\nsilences: []\n");
    assert!(
        found[0].starts_with("silences: unknown field `silences`"),
        "{found:?}"
    );
    assert!(errors("tests: [\n")[0].contains("line 2"));
}

#[test]
fn expectations_about_rules_that_are_not_there_are_refused() {
    let file = parse(&test_file(
        "  - name: typo
    expect:
      - {at: \"2026-06-03 12:00:00\", alerts: [{state: firing}, {rule: bussy}], in_force: {rule: buys}}
",
    ))
    .unwrap();
    let found: Vec<String> = run(&file, &rules())
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        found,
        [
            r#"tests[0] "typo": expect[0].alerts[1].rule: no rule "bussy" in the rule files"#,
            r#"tests[0] "typo": expect[0].in_force.rule: no rule "buys" in the rule files"#,
        ]
    );
    let twice = [rules(), rules()].concat();
    let found: Vec<String> = run(&file, &twice)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        found[0],
        r#"rule_files: two rules are named "busy": names must be unique across the files"#
    );
}

#[test]
fn a_rule_pends_fires_and_resolves_at_the_evaluations_the_aggregator_makes() {
    // count over [at - 1m, at): 6 at 12:00:30 (pending), still above 5 at 12:01:00
    // (firing, 30 s later); the samples stop at 12:05: 4 left at 12:05:40 (resolved).
    let text = test_file(&format!(
        "  - name: lifecycle
{TRAFFIC}    expect:
      - at: \"2026-06-03 12:00:29\"
        alerts: []
      - at: \"2026-06-03 12:00:30\"
        alerts: [{{rule: busy, state: pending, since: \"2026-06-03 12:00:30\", summary: 6 requests on api}}]
      - at: \"2026-06-03 12:00:59\"
        alerts: [{{state: pending}}]
      - at: \"2026-06-03 12:01:00\"
        alerts: [{{rule: busy, state: firing, severity: warning, service: api, metric: req, tags: {{}}, schedule: default, since: \"2026-06-03 12:00:30\", summary: 12 requests on api}}]
      - at: \"2026-06-03 12:05:39\"
        alerts: [{{state: firing}}]
      - at: \"2026-06-03 12:05:40\"
        alerts: []
"
    ));
    assert_eq!(outcomes(&text), [Vec::<String>::new()]);
}

#[test]
fn a_failing_test_says_what_differs_at_which_instant() {
    let text = test_file(&format!(
        "  - name: wrong
{TRAFFIC}    expect:
      - at: \"2026-06-03 12:00:50\"
        alerts: [{{rule: busy, state: firing}}]
        in_force: {{rule: busy, schedule: weekend, threshold: 3, severity: warning, muted: false}}
      - at: \"2026-06-03 12:02:00\"
        alerts: []
      - at: \"2026-06-03 12:03:00\"
        alerts: [{{state: firing}}]
"
    ));
    assert_eq!(
        outcomes(&text),
        [vec![
            "expect[0] at 2026-06-03 12:00:50 +00:00:
  alerts: expected, not found: {rule: busy, state: firing}
  alerts: found, not expected: {rule: busy, state: pending, severity: warning, service: api, metric: req, tags: {}, schedule: default, since: 2026-06-03 12:00:30 +00:00, summary: \"6 requests on api\"}
  in_force \"busy\": schedule: expected weekend, got default
  in_force \"busy\": threshold: expected 3, got 5"
                .to_owned(),
            "expect[1] at 2026-06-03 12:02:00 +00:00:
  alerts: found, not expected: {rule: busy, state: firing, severity: warning, service: api, metric: req, tags: {}, schedule: default, since: 2026-06-03 12:00:30 +00:00, summary: \"12 requests on api\"}"
                .to_owned(),
        ]]
    );
}

#[test]
fn each_expected_alert_pairs_with_its_own_found_alert() {
    // {state: firing} fits both alerts, {service: a} only one: taking the first fit for
    // the first expectation would leave the second without a partner.
    let text = test_file(
        "  - name: two services
    input:
      - {at: \"2026-06-03 12:00:00\", every: 5s, until: \"2026-06-03 12:02:00\", service: a, metric: req, value: 1}
      - {at: \"2026-06-03 12:00:00\", every: 5s, until: \"2026-06-03 12:02:00\", service: b, metric: req, value: 1}
    expect:
      - at: \"2026-06-03 12:01:30\"
        alerts: [{state: firing}, {service: a}]
      - at: \"2026-06-03 12:01:30\"
        alerts: [{service: a}, {service: a}]
",
    );
    let everywhere =
        crate::parse(&file(&[&BUSY.replace("service: api", "service: \"*\"")])).unwrap();
    let outcome = run(&parse(&text).unwrap(), &everywhere).unwrap();
    let failures: Vec<String> = outcome[0]
        .failures
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        failures,
        ["expect[1] at 2026-06-03 12:01:30 +00:00:
  alerts: expected, not found: {service: a}
  alerts: found, not expected: {rule: busy, state: firing, severity: warning, service: b, metric: req, tags: {}, schedule: default, since: 2026-06-03 12:00:30 +00:00, summary: \"12 requests on b\"}"]
    );
}

#[test]
fn a_schedule_boundary_is_evaluated_even_between_intervals() {
    // Friday 23:59 to Saturday 00:01 UTC, evaluated every 7 s: midnight is not on that
    // grid, but the weekend's threshold and severity apply from exactly midnight.
    let text = test_file(
        "  - name: weekend
    evaluation_interval: 7s
    input:
      - {at: \"2026-06-05 23:50:00\", every: 5s, until: \"2026-06-06 00:10:00\", service: api, metric: req, value: 1}
    expect:
      - at: \"2026-06-05 23:59:59.999\"
        alerts: [{state: firing, severity: warning, schedule: default}]
        in_force: {rule: busy, schedule: default, threshold: 5, severity: warning}
      - at: \"2026-06-06 00:00:00\"
        alerts: [{state: firing, severity: critical, schedule: weekend}]
        in_force: {rule: busy, schedule: weekend, threshold: 3, severity: critical}
",
    );
    assert_eq!(outcomes(&text), [Vec::<String>::new()]);
}
