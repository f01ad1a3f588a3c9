//! The labels of an alert, which silences, inhibition and routes match on: the alert's
//! own (`rule`, `service`, `metric`, `severity`), then its series's tags, then the
//! rule's `labels`; a later source never overrides an earlier one, so a tag called
//! `severity` cannot make a critical alert look like a warning.

use std::collections::BTreeMap;

/// The labels of an alert of rule `rule` over the series `(service, metric, tags)`.
pub fn of(
    rule: &str,
    service: &str,
    metric: &str,
    severity: &str,
    tags: &BTreeMap<String, String>,
    rule_labels: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = [
        ("rule", rule),
        ("service", service),
        ("metric", metric),
        ("severity", severity),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in tags.iter().chain(rule_labels) {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn own_labels_win_over_tags_and_tags_over_rule_labels() {
        let labels = of(
            "slow",
            "api",
            "lat",
            "critical",
            &map(&[("region", "eu"), ("severity", "info")]),
            &map(&[("team", "web"), ("region", "us")]),
        );
        assert_eq!(
            labels,
            map(&[
                ("metric", "lat"),
                ("region", "eu"),
                ("rule", "slow"),
                ("service", "api"),
                ("severity", "critical"),
                ("team", "web"),
            ])
        );
    }
}
