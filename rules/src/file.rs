//! The rules file as YAML writes it (SPEC §6): the shapes serde reads, before any check
//! of meaning. Unknown keys are refused everywhere. Each rule and each inhibit rule is
//! read on its own, so one malformed entry does not hide the errors of the others.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::validate::{Error, Place, RuleId};

/// The whole file. `receivers`, `routes` and `protected_windows` belong to alert
/// delivery, which this crate does not do yet: they are accepted as they are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub rules: Vec<serde_yaml::Value>,
    pub receivers: Vec<serde_yaml::Value>,
    pub routes: Vec<serde_yaml::Value>,
    #[serde(default)]
    pub inhibit: Vec<serde_yaml::Value>,
    pub protected_windows: Option<serde_yaml::Value>,
}

/// One inhibit rule as written (see [`crate::inhibit`]): labels equal to values on each
/// side, and the labels both sides must share.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInhibit {
    pub source_match: BTreeMap<String, String>,
    pub target_match: BTreeMap<String, String>,
    #[serde(default)]
    pub equal: Vec<String>,
}

/// One rule as written; [`crate::validate`] turns it into a [`crate::Rule`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    pub service: String,
    pub metric: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// A rule that fires when its series sent no sample for this long (a dead man's
    /// switch); such a rule has no stat, window, op, threshold, resolve_threshold or
    /// min_count ([`crate::validate`] says so).
    pub absent: Option<DurationText>,
    pub stat: Option<Stat>,
    pub window: Option<DurationText>,
    pub op: Option<Op>,
    pub threshold: Option<f64>,
    pub resolve_threshold: Option<f64>,
    #[serde(rename = "for")]
    pub for_: Option<DurationText>,
    pub keep_firing_for: Option<DurationText>,
    pub severity: Severity,
    pub min_count: Option<u64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: Annotations,
    #[serde(default)]
    pub schedules: Vec<RawSchedule>,
}

/// A duration as written, such as `5m`. A bare number is read too, so that validation
/// can say which unit is missing rather than that a string was expected.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum DurationText {
    Text(String),
    Number(serde_yaml::Number),
}

impl DurationText {
    pub fn text(&self) -> String {
        match self {
            DurationText::Text(text) => text.clone(),
            DurationText::Number(n) => n.to_string(),
        }
    }
}

/// One schedule of a rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    pub name: Option<String>,
    pub days: Option<Vec<Day>>,
    pub hours: Option<String>,
    pub timezone: Option<String>,
    pub dates: Option<String>,
    pub threshold: Option<f64>,
    pub resolve_threshold: Option<f64>,
    pub severity: Option<Severity>,
    #[serde(default)]
    pub maintenance: bool,
}

/// The statistic a rule compares, over its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stat {
    P50,
    P90,
    P95,
    P99,
    Avg,
    Min,
    Max,
    Count,
    Rate,
    ErrorRate,
}

/// How the statistic is compared with the threshold; true means the rule is breached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Annotations {
    pub summary: Option<String>,
    pub runbook_url: Option<String>,
}

impl Stat {
    pub fn as_str(self) -> &'static str {
        match self {
            Stat::P50 => "p50",
            Stat::P90 => "p90",
            Stat::P95 => "p95",
            Stat::P99 => "p99",
            Stat::Avg => "avg",
            Stat::Min => "min",
            Stat::Max => "max",
            Stat::Count => "count",
            Stat::Rate => "rate",
            Stat::ErrorRate => "error_rate",
        }
    }
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One rule as serde read it, or why it could not.
pub type ReadRule = Result<(RuleId, RawRule), Error>;

/// One inhibit rule, with its index in `inhibit`, as serde read it, or why it could not.
pub type ReadInhibit = Result<(usize, RawInhibit), Error>;

/// The entries of a file, each still raw or with the error that kept serde from reading it.
pub struct ReadFile {
    pub rules: Vec<ReadRule>,
    pub inhibit: Vec<ReadInhibit>,
}

/// Reads the file into its entries. A YAML syntax error, or a top-level key that is not
/// in the contract, fails the whole file.
pub fn read(text: &str) -> Result<ReadFile, Error> {
    let document: serde_yaml::Value = serde_yaml::from_str(text).map_err(Error::file)?;
    let file: RawFile = serde_path_to_error::deserialize(document)
        .map_err(|e| Error::new(None, e.path().to_string(), e.into_inner().to_string()))?;
    let rules = file
        .rules
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            let id = RuleId {
                index,
                name: value
                    .get("name")
                    .and_then(|n| n.as_str())
                    .map(str::to_owned),
            };
            entry(Place::Rule(id.clone()), value).map(|rule| (id, rule))
        })
        .collect();
    let inhibit = file
        .inhibit
        .into_iter()
        .enumerate()
        .map(|(index, value)| entry(Place::Inhibit(index), value).map(|rule| (index, rule)))
        .collect();
    Ok(ReadFile { rules, inhibit })
}

/// One entry of a list, read on its own; an error names its place and the field.
fn entry<T: serde::de::DeserializeOwned>(
    place: Place,
    value: serde_yaml::Value,
) -> Result<T, Error> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        Error::new(
            Some(place),
            e.path().to_string(),
            e.into_inner().to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use crate::test_support::{errors, file, RULE};

    #[test]
    fn unknown_keys_and_bad_yaml_are_refused() {
        let found = errors(&file(&[&format!("{RULE}\nsummary: oops")]));
        assert!(
            found[0].starts_with(
                r#"rules[0] "api-latency": summary: unknown field `summary`, expected one of"#
            ),
            "{found:?}"
        );
        let found = errors(&file(&[&format!(
            "{RULE}\nschedules:\n  - days: [sat]\n    treshold: 1"
        )]));
        assert!(
            found[0].starts_with(
                r#"rules[0] "api-latency": schedules[0].treshold: unknown field `treshold`"#
            ),
            "{found:?}"
        );
        let found = errors(&(file(&[RULE]) + "silences: []\n"));
        assert!(
            found[0].starts_with("silences: unknown field `silences`"),
            "{found:?}"
        );
        let found = errors("rules: [\nreceivers: []\n");
        assert!(found[0].contains("at line 3 column 1"), "{found:?}");
        let found = errors(&(file(&[RULE]) + "inhibit:\n  - source: a\n"));
        assert!(
            found[0].starts_with("inhibit[0]: source: unknown field `source`, expected one of"),
            "{found:?}"
        );
        // The rest of the contract is accepted as it is.
        let full = file(&[RULE]) + "protected_windows: []\n";
        assert!(crate::parse(&full.replace("receivers: []", "receivers: [{name: ops}]")).is_ok());
    }
}
