//! The test file as YAML writes it, and its validation into a [`TestFile`]: instants
//! resolved in the file's time zone, repeated samples expanded, every error found named
//! by its test and field.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use tidemark_model::sample::{check_wire_series, check_wire_values};
use tidemark_model::time::parse_duration;
use tidemark_schemas::WireSample;

use crate::file::{DurationText, Severity};

/// The evaluation interval when the file does not set one (the aggregator's default).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// At most this many samples one `input` entry repeats into.
const MAX_REPEATS: i64 = 1_000_000;

/// A valid test file.
#[derive(Debug, Clone, PartialEq)]
pub struct TestFile {
    /// The rules files, as written (relative to the test file).
    pub rule_files: Vec<String>,
    pub timezone: Tz,
    pub tests: Vec<Test>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Test {
    pub id: TestId,
    pub interval: Duration,
    /// Every sample, repeats expanded, in order of event time.
    pub input: Vec<WireSample>,
    pub expect: Vec<Expectation>,
}

/// Which test an error or outcome is about: its place in `tests` and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestId {
    pub index: usize,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    /// Its place in the test's `expect`.
    pub index: usize,
    pub at: DateTime<Utc>,
    /// `None` when the expectation says nothing about the alerts.
    pub alerts: Option<Vec<ExpectedAlert>>,
    pub in_force: Option<ExpectedInForce>,
}

/// An alert as expected (the fields given) or as found (every field); `T` is how `since`
/// is written: as text in the file, as an instant once read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedAlert<T = DateTime<Utc>> {
    pub rule: Option<String>,
    pub state: Option<AlertState>,
    pub severity: Option<Severity>,
    pub service: Option<String>,
    pub metric: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub schedule: Option<String>,
    pub since: Option<T>,
    pub summary: Option<String>,
    pub runbook_url: Option<String>,
}

/// The states of an alert that is not inactive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// What a rule is expected to hold at an instant (the fields given).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedInForce {
    pub rule: String,
    pub schedule: Option<String>,
    pub threshold: Option<f64>,
    pub resolve_threshold: Option<f64>,
    pub severity: Option<Severity>,
    pub muted: Option<bool>,
}

/// One thing wrong with a test file, or with a test given its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// `None` for the file as a whole.
    pub test: Option<TestId>,
    /// The field at fault, such as `input[2].at`; empty when the message names the place.
    pub field: String,
    pub message: String,
}

impl Error {
    pub(crate) fn new(
        test: Option<&TestId>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let field = field.into();
        Self {
            test: test.cloned(),
            // serde_path_to_error writes the root as ".".
            field: if field == "." { String::new() } else { field },
            message: message.into(),
        }
    }
}

impl fmt::Display for TestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tests[{}]", self.index)?;
        match &self.name {
            Some(name) => write!(f, " {name:?}"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(test) = &self.test {
            write!(f, "{test}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    rule_files: Vec<String>,
    timezone: Option<String>,
    evaluation_interval: Option<DurationText>,
    /// Each test is read on its own, so that one malformed test does not hide the others.
    tests: Vec<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTest {
    name: String,
    evaluation_interval: Option<DurationText>,
    #[serde(default)]
    input: Vec<RawSample>,
    expect: Vec<RawExpectation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSample {
    at: String,
    every: Option<DurationText>,
    until: Option<String>,
    service: String,
    metric: String,
    value: f64,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default = "one")]
    count: i64,
    #[serde(default)]
    error: bool,
}

fn one() -> i64 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpectation {
    at: String,
    alerts: Option<Vec<ExpectedAlert<String>>>,
    in_force: Option<ExpectedInForce>,
}

/// Collects the errors of one test (or of the file, without a test).
struct Errors<'a> {
    test: Option<&'a TestId>,
    found: &'a mut Vec<Error>,
}

impl Errors<'_> {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.found.push(Error::new(self.test, field, message));
    }

    /// The value, or `None` after recording why it is not one.
    fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|e| self.push(field, e)).ok()
    }
}

/// Reads and validates a test file: the file, or every error found, in file order.
pub fn parse(text: &str) -> Result<TestFile, Vec<Error>> {
    let mut found = Vec::new();
    let document: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| vec![Error::new(None, "", e.to_string())])?;
    let raw: RawFile =
        serde_path_to_error::deserialize(document).map_err(|e| vec![unreadable(None, e)])?;
    let mut errors = Errors {
        test: None,
        found: &mut found,
    };
    if raw.rule_files.is_empty() {
        errors.push("rule_files", "name at least one rules file");
    }
    if raw.tests.is_empty() {
        errors.push("tests", "no tests");
    }
    let timezone = match raw.timezone.as_deref() {
        None => Some(Tz::UTC),
        Some(name) => errors.check(
            "timezone",
            name.parse::<Tz>()
                .map_err(|_| format!("unknown time zone {name:?}")),
        ),
    };
    let interval = errors.check(
        "evaluation_interval",
        interval(raw.evaluation_interval.as_ref(), DEFAULT_INTERVAL),
    );
    let (Some(timezone), Some(interval)) = (timezone, interval) else {
        return Err(found);
    };
    let mut tests = Vec::with_capacity(raw.tests.len());
    for (index, value) in raw.tests.into_iter().enumerate() {
        let id = TestId {
            index,
            name: value
                .get("name")
                .and_then(|n| n.as_str())
                .map(str::to_owned),
        };
        match serde_path_to_error::deserialize::<_, RawTest>(value) {
            Ok(raw) => {
                let mut errors = Errors {
                    test: Some(&id),
                    found: &mut found,
                };
                if let Some(test) = test(raw, &id, timezone, interval, &mut errors) {
                    tests.push(test);
                }
            }
            Err(e) => found.push(unreadable(Some(&id), e)),
        }
    }
    if found.is_empty() {
        Ok(TestFile {
            rule_files: raw.rule_files,
            timezone,
            tests,
        })
    } else {
        Err(found)
    }
}

/// What kept serde from reading the file or a test, at the field it stopped at.
fn unreadable(test: Option<&TestId>, e: serde_path_to_error::Error<serde_yaml::Error>) -> Error {
    Error::new(test, e.path().to_string(), e.into_inner().to_string())
}

/// One test, or `None` with its errors recorded.
fn test(
    raw: RawTest,
    id: &TestId,
    timezone: Tz,
    default_interval: Duration,
    errors: &mut Errors<'_>,
) -> Option<Test> {
    let before = errors.found.len();
    if raw.name.is_empty() {
        errors.push("name", "must not be empty");
    }
    if raw.expect.is_empty() {
        errors.push("expect", "no expectations: give at least one");
    }
    let interval = errors.check(
        "evaluation_interval",
        interval(raw.evaluation_interval.as_ref(), default_interval),
    );
    let mut input = Vec::new();
    for (i, sample) in raw.input.into_iter().enumerate() {
        input.extend(samples(sample, &format!("input[{i}]"), timezone, errors));
    }
    input.sort_by_key(|s| s.timestamp);
    let expect: Vec<Expectation> = raw
        .expect
        .into_iter()
        .enumerate()
        .filter_map(|(i, e)| expectation(e, i, timezone, errors))
        .collect();
    let interval = interval.filter(|_| errors.found.len() == before)?;
    Some(Test {
        id: id.clone(),
        interval,
        input,
        expect,
    })
}

/// The samples one `input` entry stands for; none, with the errors recorded, when it is
/// invalid.
fn samples(raw: RawSample, field: &str, timezone: Tz, errors: &mut Errors<'_>) -> Vec<WireSample> {
    let before = errors.found.len();
    let at = errors.check(&format!("{field}.at"), instant(&raw.at, timezone));
    let repeats = match (&raw.every, &raw.until) {
        (None, None) => Some((Duration::ZERO, 1)),
        (Some(every), Some(until)) => {
            let every = errors.check(
                &format!("{field}.every"),
                parse_duration(&every.text()).and_then(|d| {
                    if d.is_zero() {
                        Err("must be more than 0".to_owned())
                    } else {
                        Ok(d)
                    }
                }),
            );
            let until = errors.check(&format!("{field}.until"), instant(until, timezone));
            match (at, every, until) {
                (Some(at), Some(every), Some(until)) => {
                    errors.check(&format!("{field}.until"), repeats(at, every, until))
                }
                _ => None,
            }
        }
        (Some(_), None) => {
            errors.push(format!("{field}.until"), "`every` needs `until`");
            None
        }
        (None, Some(_)) => {
            errors.push(format!("{field}.every"), "`until` needs `every`");
            None
        }
    };
    let tags: Vec<(&str, &str)> = raw
        .tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let first = at.map_or(0, |t| t.timestamp_millis());
    if let Err(e) = check_wire_series(&raw.service, &raw.metric, &tags)
        .and_then(|()| check_wire_values(raw.value, raw.count, first))
    {
        errors.push(format!("{field}.{}", e.field), e.message);
    }
    let (Some((every, n)), true) = (repeats, errors.found.len() == before) else {
        return Vec::new();
    };
    let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
    (0..n)
        .map(|k| WireSample {
            service: raw.service.clone(),
            metric: raw.metric.clone(),
            value: raw.value,
            count: raw.count,
            error: raw.error,
            timestamp: first + k * every_ms,
            tags: raw.tags.clone(),
        })
        .collect()
}

/// How many samples `every` from `at` up to `until` (excluded) makes.
fn repeats(
    at: DateTime<Utc>,
    every: Duration,
    until: DateTime<Utc>,
) -> Result<(Duration, i64), String> {
    let span = (until - at).num_milliseconds();
    if span <= 0 {
        return Err("must be after `at`".to_owned());
    }
    let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
    let n = span / every_ms + i64::from(span % every_ms != 0);
    if n > MAX_REPEATS {
        return Err(format!(
            "repeats the sample {n} times; at most {MAX_REPEATS}"
        ));
    }
    Ok((every, n))
}

fn expectation(
    raw: RawExpectation,
    index: usize,
    timezone: Tz,
    errors: &mut Errors<'_>,
) -> Option<Expectation> {
    let field = format!("expect[{index}]");
    let before = errors.found.len();
    if raw.alerts.is_none() && raw.in_force.is_none() {
        errors.push(field.as_str(), "give `alerts`, `in_force` or both");
    }
    let at = errors.check(&format!("{field}.at"), instant(&raw.at, timezone));
    let alerts = raw.alerts.map(|alerts| {
        alerts
            .into_iter()
            .enumerate()
            .filter_map(|(i, alert)| {
                let since = format!("{field}.alerts[{i}].since");
                errors.check(&since, alert.resolve(timezone))
            })
            .collect()
    });
    let at = at.filter(|_| errors.found.len() == before)?;
    Some(Expectation {
        index,
        at,
        alerts,
        in_force: raw.in_force,
    })
}

impl ExpectedAlert<String> {
    /// The alert with `since` read in `timezone`.
    fn resolve(self, timezone: Tz) -> Result<ExpectedAlert, String> {
        let since = self
            .since
            .map(|text| instant(&text, timezone))
            .transpose()?;
        Ok(ExpectedAlert {
            rule: self.rule,
            state: self.state,
            severity: self.severity,
            service: self.service,
            metric: self.metric,
            tags: self.tags,
            schedule: self.schedule,
            since,
            summary: self.summary,
            runbook_url: self.runbook_url,
        })
    }
}

/// The evaluation interval written, or `default`; at least a second, as
/// `TIDEMARK_EVAL_INTERVAL`.
fn interval(text: Option<&DurationText>, default: Duration) -> Result<Duration, String> {
    let interval = text.map_or(Ok(default), |t| parse_duration(&t.text()))?;
    if interval < Duration::from_secs(1) {
        return Err("must be at least 1s".to_owned());
    }
    Ok(interval)
}

/// Local date-and-time forms read in the file's time zone, most common first.
const LOCAL_FORMS: [&str; 4] = [
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
];

/// The instant `text` names: a local time in `timezone` (a skipped one is the end of the
/// gap, a repeated one its first occurrence) or RFC 3339 with an offset.
pub(crate) fn instant(text: &str, timezone: Tz) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Some(local) = LOCAL_FORMS
        .iter()
        .find_map(|form| NaiveDateTime::parse_from_str(text, form).ok())
    {
        return Ok(crate::schedule::instant(timezone, local));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            format!(
                "{text:?} is not a time: write a local time such as \"2026-10-24 12:00:00\" or RFC 3339 such as \"2026-10-24T10:00:00Z\""
            )
        })
}

/// `at` as the file writes local times, with its offset so that a repeated hour reads
/// unambiguously: `2026-10-25 02:30:00 +02:00`.
pub(crate) fn local(at: DateTime<Utc>, timezone: Tz) -> String {
    at.with_timezone(&timezone)
        .format("%Y-%m-%d %H:%M:%S%.f %:z")
        .to_string()
}
