//! Inhibition (SPEC §6), modelled on Alertmanager's `inhibit_rules`: while a source
//! alert fires, the target alerts it inhibits are not notified. An inhibit rule says
//! which alerts may be sources (`source_match`), which may be targets (`target_match`),
//! and which labels (`equal`) a source and a target must share. A match is label
//! equality, `label: value`, over an alert's [`crate::labels`]; a label the alert lacks
//! never matches.
//!
//! Where Tidemark differs from Alertmanager: an `equal` label must be present on both
//! alerts, so a label missing on both sides is not equal (Alertmanager treats two missing
//! labels as equal, which lets a typo in `equal` inhibit everything). As in Alertmanager,
//! an alert that matches both sides of a rule cannot be inhibited by another that does
//! too, so that such a rule cannot mute a whole set of alerts like one another.
//!
//! Besides a file's rules, [`BUILT_IN`] always applies: a firing `critical` alert
//! inhibits the `warning` and `info` alerts of the same `rule` and `service`. A file's
//! rules, e.g. a failing ingest that inhibits the latency warnings of its region:
//!
//! ```yaml
//! inhibit:
//!   - source_match: {rule: ingest-errors, severity: critical}
//!     target_match: {rule: checkout-latency, severity: warning}
//!     equal: [region]
//! ```

use std::collections::BTreeMap;
use std::sync::LazyLock;

/// An alert's labels, as [`crate::labels::of`] gives them.
type Labels = BTreeMap<String, String>;

/// One inhibit rule, validated (see [`crate::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InhibitRule {
    /// The labels, with their values, that a source has.
    pub source_match: Labels,
    /// The labels, with their values, that a target has.
    pub target_match: Labels,
    /// The labels a source and a target both have, with the same value.
    pub equal: Vec<String>,
}

/// The inhibit rules that always apply: a `critical` alert inhibits the `warning` and
/// the `info` alerts of its `rule` and `service`.
pub static BUILT_IN: LazyLock<[InhibitRule; 2]> = LazyLock::new(|| {
    let severity = |value: &str| Labels::from([("severity".to_owned(), value.to_owned())]);
    ["warning", "info"].map(|target| InhibitRule {
        source_match: severity("critical"),
        target_match: severity(target),
        equal: vec!["rule".to_owned(), "service".to_owned()],
    })
});

impl InhibitRule {
    /// Whether `source`, firing, inhibits `target` by this rule.
    pub fn inhibits(&self, source: &Labels, target: &Labels) -> bool {
        let both_sides = |labels: &Labels| {
            matches(&self.source_match, labels) && matches(&self.target_match, labels)
        };
        matches(&self.source_match, source)
            && matches(&self.target_match, target)
            && self.equal.iter().all(
                |name| matches!((source.get(name), target.get(name)), (Some(s), Some(t)) if s == t),
            )
            && !(both_sides(source) && both_sides(target))
    }
}

/// Whether `labels` has every label of `wanted`, with its value.
fn matches(wanted: &Labels, labels: &Labels) -> bool {
    wanted
        .iter()
        .all(|(name, value)| labels.get(name) == Some(value))
}

/// The alerts of `firing` that inhibit the alert `target_id` with labels `target`, by
/// [`BUILT_IN`] or one of `rules` (a file's), in the order given; empty when it is not
/// inhibited. `firing` must hold only alerts that fire now: a pending or resolved alert
/// inhibits nothing, and its labels do not say which it is. The target itself, found
/// among them by its id, never inhibits itself.
pub fn inhibited_by<'a, Id: PartialEq>(
    target_id: &Id,
    target: &Labels,
    firing: impl IntoIterator<Item = (Id, &'a Labels)>,
    rules: &[InhibitRule],
) -> Vec<Id> {
    firing
        .into_iter()
        .filter(|(id, source)| {
            id != target_id
                && BUILT_IN
                    .iter()
                    .chain(rules)
                    .any(|rule| rule.inhibits(source, target))
        })
        .map(|(id, _)| id)
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::test_support::file;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// An alert's labels as the alerter builds them, with the series tags given.
    fn alert(rule: &str, service: &str, severity: &str, tags: &[(&str, &str)]) -> Labels {
        crate::labels::of(rule, service, "m", severity, &labels(tags), &Labels::new())
    }

    /// The ids among `firing` (numbered from 1) that inhibit `target` (id 0).
    fn inhibitors(target: &Labels, firing: &[&Labels], rules: &[InhibitRule]) -> Vec<i64> {
        let firing = (1..).zip(firing.iter().copied());
        inhibited_by(&0, target, firing, rules)
    }

    /// The inhibit rules of a file whose `inhibit` is `yaml`, after one valid rule.
    fn parsed(yaml: &str) -> Result<Vec<InhibitRule>, Vec<String>> {
        let text = file(&[crate::test_support::RULE]) + "inhibit:\n" + yaml;
        crate::parse_file(&text)
            .map(|f| f.inhibit)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_critical_alert_inhibits_warnings_and_infos_of_its_rule_and_service() {
        let critical = alert("slow", "api", "critical", &[("route", "/a")]);
        // Another series of the same rule and service.
        let warning = alert("slow", "api", "warning", &[("route", "/b")]);
        let info = alert("slow", "api", "info", &[]);
        assert_eq!(inhibitors(&warning, &[&critical], &[]), [1]);
        assert_eq!(inhibitors(&info, &[&critical], &[]), [1]);
        for not_inhibited in [
            alert("slow", "web", "warning", &[]),
            alert("other", "api", "warning", &[]),
            alert("slow", "api", "critical", &[("route", "/b")]),
        ] {
            assert!(
                inhibitors(&not_inhibited, &[&critical], &[]).is_empty(),
                "{not_inhibited:?}"
            );
        }
        // Only critical inhibits: a warning does not inhibit an info, nor an info a warning.
        assert!(inhibitors(&warning, &[&info], &[]).is_empty());
        assert!(inhibitors(&info, &[&warning], &[]).is_empty());
    }

    #[test]
    fn every_firing_inhibitor_is_returned_in_order() {
        let warning = alert("slow", "api", "warning", &[]);
        let a = alert("slow", "api", "critical", &[("route", "/a")]);
        let b = alert("slow", "web", "critical", &[]);
        let c = alert("slow", "api", "critical", &[("route", "/c")]);
        assert_eq!(inhibitors(&warning, &[&a, &b, &c], &[]), [1, 3]);
    }

    #[test]
    fn an_equal_label_must_be_present_on_both_sides() {
        let rules = parsed(
            "  - source_match: {rule: ingest-errors}\n    target_match: {rule: checkout-latency}\n    equal: [region]\n",
        )
        .unwrap();
        let source = |region: Option<&str>| {
            let tags: Vec<_> = region.map(|r| ("region", r)).into_iter().collect();
            alert("ingest-errors", "ingest", "critical", &tags)
        };
        let target = |region: Option<&str>| {
            let tags: Vec<_> = region.map(|r| ("region", r)).into_iter().collect();
            alert("checkout-latency", "checkout", "warning", &tags)
        };
        let (eu, us) = (Some("eu"), Some("us"));
        assert_eq!(inhibitors(&target(eu), &[&source(eu)], &rules), [1]);
        for (s, t) in [(eu, us), (eu, None), (None, eu), (None, None)] {
            assert!(
                inhibitors(&target(t), &[&source(s)], &rules).is_empty(),
                "source {s:?}, target {t:?}"
            );
        }
        // Without `equal`, a source anywhere inhibits every target.
        let anywhere = parsed(
            "  - source_match: {rule: ingest-errors}\n    target_match: {rule: checkout-latency}\n",
        )
        .unwrap();
        assert_eq!(inhibitors(&target(None), &[&source(us)], &anywhere), [1]);
    }

    #[test]
    fn an_alert_never_inhibits_itself_nor_one_like_it() {
        // A rule whose sides are alike is allowed, as in Alertmanager.
        let rules =
            parsed("  - source_match: {team: core}\n    target_match: {team: core}\n").unwrap();
        let one = alert("slow", "api", "warning", &[("team", "core")]);
        let other = alert("errors", "web", "warning", &[("team", "core")]);
        assert!(inhibited_by(&7, &one, [(7, &one)], &rules).is_empty());
        // Both match both sides: neither mutes the other.
        assert!(inhibited_by(&7, &one, [(7, &one), (8, &other)], &rules).is_empty());
        // An alert whose severity changed may be listed as it fired: still itself, by id.
        let critical = alert("slow", "api", "critical", &[]);
        let warning = alert("slow", "api", "warning", &[]);
        assert!(inhibited_by(&3, &warning, [(3, &critical)], &[]).is_empty());
        assert_eq!(inhibited_by(&3, &warning, [(4, &critical)], &[]), [4]);
    }

    #[test]
    fn inhibit_rules_are_validated() {
        assert_eq!(
            parsed("  - source_match: {severity: critical}\n    target_match: {severity: warning}\n    equal: [rule, service]\n").unwrap(),
            BUILT_IN[..1]
        );
        let found = parsed(
            "  - source_match: {severity: critical}\n    target_matchers: [x]\n  - source_match: {severity: critical}\n",
        )
        .unwrap_err();
        assert!(
            found[0].starts_with(
                "inhibit[0]: target_matchers: unknown field `target_matchers`, expected one of"
            ),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("inhibit[1]: missing field `target_match`"),
            "{found:?}"
        );
        assert_eq!(
            parsed(
                "  - source_match: {}
    target_match: {severity: crit, 0team: a, team: \"\"}
    equal: [region, \"bad label\", __name]
"
            )
            .unwrap_err(),
            [
                "inhibit[0]: source_match: must name at least one label: an empty match would match every alert",
                "inhibit[0]: target_match.0team: label names must match [a-zA-Z_][a-zA-Z0-9_]*",
                r#"inhibit[0]: target_match.severity: "crit" is not a severity: use critical, warning or info"#,
                "inhibit[0]: target_match.team: must not be empty: a match wants a label that is present",
                "inhibit[0]: equal[1]: label names must match [a-zA-Z_][a-zA-Z0-9_]*",
                "inhibit[0]: equal[2]: label names starting with __ are reserved",
            ]
        );
    }

    #[test]
    fn rule_errors_come_before_inhibit_errors() {
        let text = file(&[&crate::test_support::RULE.replace("window: 5m", "window: 5")])
            + "inhibit:\n  - source_match: {severity: bad}\n    target_match: {a: b}\n";
        let found: Vec<String> = crate::parse_file(&text)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                r#"rules[0] "api-latency": window: missing unit: use ms, s, m, h or d, e.g. 5m"#,
                r#"inhibit[0]: source_match.severity: "bad" is not a severity: use critical, warning or info"#,
            ]
        );
    }

    /// Labels over a few names and values, so that matches and misses both occur.
    fn some_labels() -> impl Strategy<Value = Labels> {
        prop::collection::btree_map(
            prop::sample::select(vec!["a", "b", "c", "severity"]).prop_map(str::to_owned),
            prop::sample::select(vec!["x", "y"]).prop_map(str::to_owned),
            0..4,
        )
    }

    fn some_rule() -> impl Strategy<Value = InhibitRule> {
        let names = || prop::sample::subsequence(vec!["a", "b", "c"], 0..=3);
        (some_labels(), some_labels(), names()).prop_map(|(source, target, equal)| InhibitRule {
            source_match: source,
            target_match: target,
            equal: equal.into_iter().map(str::to_owned).collect(),
        })
    }

    proptest! {
        #[test]
        fn another_equal_label_never_inhibits_more(
            rule in some_rule(),
            extra in prop::sample::select(vec!["a", "b", "c", "severity", "rule"]),
            target in some_labels(),
            firing in prop::collection::vec(some_labels(), 0..6),
        ) {
            let mut stricter = rule.clone();
            stricter.equal.push(extra.to_owned());
            let before = inhibitors(&target, &firing.iter().collect::<Vec<_>>(), &[rule]);
            let after = inhibitors(&target, &firing.iter().collect::<Vec<_>>(), &[stricter]);
            prop_assert!(after.iter().all(|id| before.contains(id)), "{before:?} {after:?}");
        }
    }
}
