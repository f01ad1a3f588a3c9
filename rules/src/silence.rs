//! Silences (issue 15, SPEC §3), with Alertmanager's semantics: a silence mutes the
//! alerts whose labels ([`crate::labels::of`]) satisfy all of its matchers while it is
//! active, from `starts_at` (inclusive) to `ends_at` (exclusive). A matcher compares one
//! label with `=`, `!=`, `=~` or `!~`; a label the alert lacks reads as the empty string;
//! a regex must match the whole value (it is anchored at both ends). A silence whose
//! matchers all match the empty string would mute every alert, so it is refused.
//!
//! This module checks matchers and answers "does it match" and "what state at this
//! instant"; storing silences and the HTTP shapes live elsewhere.

use std::collections::BTreeMap;
use std::fmt;

use regex::{Regex, RegexBuilder};

/// The longest label name, label value or pattern a matcher may hold (in characters).
pub const MAX_NAME_CHARS: usize = 128;
pub const MAX_VALUE_CHARS: usize = 1024;
/// The most matchers one silence may have.
pub const MAX_MATCHERS: usize = 32;
/// The bound on a compiled pattern, so one silence cannot take the process's memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// How a matcher compares its label with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Equal => "=",
            Self::NotEqual => "!=",
            Self::Regex => "=~",
            Self::NotRegex => "!~",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Equal, Self::NotEqual, Self::Regex, Self::NotRegex]
            .into_iter()
            .find(|op| op.as_str() == text)
    }
}

/// One condition on one label.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: Op,
    /// The value, or the pattern as given (unanchored).
    pub value: String,
    /// The anchored pattern of `=~` and `!~`.
    regex: Option<Regex>,
}

/// A refusal, naming the field it is about (`matchers[1].value`, `ends_at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

fn refuse(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// Compiles `pattern` to match whole values only. It is compiled alone first, so that a
/// pattern such as `a)|(b` cannot escape the anchoring group.
fn anchored(pattern: &str) -> Result<Regex, String> {
    let compile = |p: &str| {
        RegexBuilder::new(p)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("invalid regex: {e}"))
    };
    compile(pattern)?;
    compile(&format!("^(?:{pattern})$"))
}

impl Matcher {
    /// A matcher of label `name` with operator `op` (`=`, `!=`, `=~`, `!~`) and `value`;
    /// a refusal names the part at fault (`name`, `op` or `value`) with no prefix.
    pub fn new(name: &str, op: &str, value: &str) -> Result<Self, FieldError> {
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(refuse(
                "name",
                format!("must be 1-{MAX_NAME_CHARS} characters, none of them a control character"),
            ));
        }
        let op = Op::parse(op).ok_or_else(|| refuse("op", "use =, !=, =~ or !~"))?;
        if value.chars().count() > MAX_VALUE_CHARS {
            return Err(refuse(
                "value",
                format!("at most {MAX_VALUE_CHARS} characters"),
            ));
        }
        let regex = match op {
            Op::Regex | Op::NotRegex => Some(anchored(value).map_err(|e| refuse("value", e))?),
            Op::Equal | Op::NotEqual => None,
        };
        Ok(Self {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            regex,
        })
    }

    /// Whether a label whose value is `value` satisfies the matcher.
    fn accepts(&self, value: &str) -> bool {
        let hit = match &self.regex {
            Some(regex) => regex.is_match(value),
            None => value == self.value,
        };
        hit == matches!(self.op, Op::Equal | Op::Regex)
    }

    /// Whether `labels` satisfy the matcher; a missing label reads as `""`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.accepts(labels.get(&self.name).map_or("", String::as_str))
    }
}

/// A matcher as a request or a stored row gives it.
#[derive(Debug, Clone, Copy)]
pub struct MatcherSpec<'a> {
    pub name: &'a str,
    pub op: &'a str,
    pub value: &'a str,
}

/// Checks a silence's matchers: 1 to [`MAX_MATCHERS`], each valid, not all matching the
/// empty string. Refusals name the field as `matchers[i].part`.
pub fn matchers(specs: &[MatcherSpec<'_>]) -> Result<Vec<Matcher>, FieldError> {
    if specs.is_empty() || specs.len() > MAX_MATCHERS {
        return Err(refuse(
            "matchers",
            format!("give 1 to {MAX_MATCHERS} matchers"),
        ));
    }
    let matchers = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Matcher::new(s.name, s.op, s.value).map_err(|e| FieldError {
                field: format!("matchers[{i}].{}", e.field),
                ..e
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if matchers.iter().all(|m| m.accepts("")) {
        return Err(refuse(
            "matchers",
            "at least one matcher must not match the empty string, or the silence would mute every alert",
        ));
    }
    Ok(matchers)
}

/// Where a silence is at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Before `starts_at`.
    Pending,
    /// From `starts_at` until `ends_at`, excluded.
    Active,
    /// From `ends_at` on.
    Expired,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Expired => "expired",
        }
    }
}

impl std::str::FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Active, Self::Pending, Self::Expired]
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| "use active, pending or expired".to_owned())
    }
}

/// A silence, as stored (instants in Unix milliseconds).
#[derive(Debug, Clone)]
pub struct Silence {
    pub id: i64,
    pub matchers: Vec<Matcher>,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub created_by: String,
    pub comment: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Silence {
    /// Its state at `at_ms`. An expired silence may have `starts_at == ends_at` (a
    /// pending one expired early), so expiry is decided first.
    pub fn state(&self, at_ms: i64) -> State {
        if at_ms >= self.ends_at_ms {
            State::Expired
        } else if at_ms < self.starts_at_ms {
            State::Pending
        } else {
            State::Active
        }
    }

    /// Whether `labels` satisfy all its matchers (whatever its state).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        matches_all(&self.matchers, labels)
    }
}

/// Whether `labels` satisfy every one of `matchers`.
pub fn matches_all(matchers: &[Matcher], labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// Checks a new silence's window at `now_ms`: `starts_at` (default and at least `now`:
/// a start in the past is taken as now, as in Alertmanager) before `ends_at`, which must
/// lie in the future. Returns `(starts_at, ends_at)`.
pub fn window(
    starts_at_ms: Option<i64>,
    ends_at_ms: i64,
    now_ms: i64,
) -> Result<(i64, i64), FieldError> {
    let starts = starts_at_ms.unwrap_or(now_ms).max(now_ms);
    if ends_at_ms <= now_ms {
        return Err(refuse("ends_at", "must be in the future"));
    }
    if ends_at_ms <= starts {
        return Err(refuse("ends_at", "must be after starts_at"));
    }
    Ok((starts, ends_at_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn m(name: &str, op: &str, value: &str) -> Matcher {
        Matcher::new(name, op, value).unwrap()
    }

    fn spec<'a>(name: &'a str, op: &'a str, value: &'a str) -> MatcherSpec<'a> {
        MatcherSpec { name, op, value }
    }

    fn refusal(specs: &[MatcherSpec<'_>]) -> String {
        matchers(specs).unwrap_err().to_string()
    }

    #[test]
    fn each_operator_compares_the_label_and_a_missing_label_is_empty() {
        let api = labels(&[("service", "api"), ("severity", "critical")]);
        let cases = [
            ("service", "=", "api", true),
            ("service", "=", "ap", false),
            ("service", "!=", "api", false),
            ("service", "!=", "db", true),
            ("service", "=~", "a.i|db", true),
            ("service", "=~", "db", false),
            ("service", "!~", "a.*", false),
            ("service", "!~", "db.*", true),
            // A missing label reads as "".
            ("region", "=", "", true),
            ("region", "!=", "", false),
            ("region", "=~", "eu|", true),
            ("region", "!~", ".+", true),
        ];
        for (name, op, value, want) in cases {
            assert_eq!(m(name, op, value).matches(&api), want, "{name}{op}{value}");
        }
    }

    #[test]
    fn regexes_match_whole_values_only() {
        let api = labels(&[("service", "api-gateway")]);
        assert!(!m("service", "=~", "api").matches(&api));
        assert!(!m("service", "=~", "gateway").matches(&api));
        assert!(m("service", "=~", "api.*").matches(&api));
        // An alternation stays inside the anchors: `^(?:api|x)$`, not `^api|x$`.
        assert!(!m("service", "=~", "api|x").matches(&api));
        assert!(m("service", "!~", "api").matches(&api));
    }

    #[test]
    fn invalid_matchers_are_refused_naming_the_field() {
        let ok = spec("service", "=", "api");
        let broken = refusal(&[ok, spec("service", "=~", "(api")]);
        assert!(
            broken.starts_with("matchers[1].value: invalid regex: "),
            "{broken}"
        );
        // A pattern that would escape the anchoring group alone.
        assert!(refusal(&[spec("service", "=~", "a)|(b")])
            .starts_with("matchers[0].value: invalid regex: "));
        assert_eq!(
            refusal(&[ok, ok, spec("service", "==", "api")]),
            "matchers[2].op: use =, !=, =~ or !~"
        );
        assert!(refusal(&[spec("", "=", "api")]).starts_with("matchers[0].name: "));
        assert!(refusal(&[spec("a\nb", "=", "api")]).starts_with("matchers[0].name: "));
        let long = "x".repeat(MAX_VALUE_CHARS + 1);
        assert!(refusal(&[spec("service", "=", &long)]).starts_with("matchers[0].value: "));
        assert!(refusal(&[]).starts_with("matchers: give 1 to"));
        assert!(refusal(&vec![ok; MAX_MATCHERS + 1]).starts_with("matchers: give 1 to"));
    }

    #[test]
    fn a_silence_matching_the_empty_string_everywhere_is_refused() {
        for everything in [
            vec![spec("service", "=~", ".*")],
            vec![spec("service", "=", "")],
            vec![spec("service", "!=", "api"), spec("team", "=~", "web|")],
            vec![spec("service", "!~", "x+")],
        ] {
            assert!(
                refusal(&everything).starts_with("matchers: at least one matcher"),
                "{everything:?}"
            );
        }
        // One matcher that needs a value is enough.
        let found = matchers(&[spec("service", "=~", ".*"), spec("team", "=", "web")]).unwrap();
        assert_eq!(found.len(), 2);
        assert!(matchers(&[spec("service", "!=", "")]).is_ok());
    }

    fn silence(starts_at_ms: i64, ends_at_ms: i64) -> Silence {
        Silence {
            id: 1,
            matchers: vec![m("service", "=", "api"), m("severity", "!=", "info")],
            starts_at_ms,
            ends_at_ms,
            created_by: "alice".into(),
            comment: "deploy".into(),
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn states_at_instants_and_ends_at_is_exclusive() {
        let s = silence(1_000, 2_000);
        assert_eq!(s.state(999), State::Pending);
        assert_eq!(s.state(1_000), State::Active);
        assert_eq!(s.state(1_999), State::Active);
        assert_eq!(s.state(2_000), State::Expired);
        // A pending silence expired early: both instants set to the expiry.
        assert_eq!(silence(1_500, 1_500).state(1_500), State::Expired);
        for state in [State::Pending, State::Active, State::Expired] {
            assert_eq!(state.as_str().parse::<State>(), Ok(state));
        }
        assert!("muted".parse::<State>().is_err());
    }

    #[test]
    fn a_silence_matches_when_all_its_matchers_do() {
        let s = silence(0, 1);
        assert!(s.matches(&labels(&[("service", "api"), ("severity", "critical")])));
        assert!(!s.matches(&labels(&[("service", "api"), ("severity", "info")])));
        assert!(!s.matches(&labels(&[("service", "db"), ("severity", "critical")])));
    }

    #[test]
    fn windows_default_to_now_and_end_after_they_start() {
        assert_eq!(window(None, 5_000, 1_000), Ok((1_000, 5_000)));
        assert_eq!(window(Some(2_000), 5_000, 1_000), Ok((2_000, 5_000)));
        assert_eq!(window(Some(0), 5_000, 1_000), Ok((1_000, 5_000)));
        assert_eq!(
            window(Some(5_000), 5_000, 1_000).unwrap_err().to_string(),
            "ends_at: must be after starts_at"
        );
        assert_eq!(
            window(None, 1_000, 1_000).unwrap_err().to_string(),
            "ends_at: must be in the future"
        );
    }

    fn label_sets() -> impl Strategy<Value = BTreeMap<String, String>> {
        proptest::collection::btree_map("[abc]", "[xy]{0,3}", 0..4)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn negated_operators_are_complements(
            set in label_sets(),
            name in "[abc]",
            value in "[xy]{0,3}",
            pattern in "[xy.*|]{0,4}",
        ) {
            let eq = m(&name, "=", &value);
            let ne = m(&name, "!=", &value);
            prop_assert_ne!(eq.matches(&set), ne.matches(&set));
            if let (Ok(re), Ok(nre)) = (Matcher::new(&name, "=~", &pattern), Matcher::new(&name, "!~", &pattern)) {
                prop_assert_ne!(re.matches(&set), nre.matches(&set));
            }
        }
    }
}
