//! The metric vocabulary (`src/vocabulary.rs`, every crate's `telemetry::METRICS`)
//! against Prometheus' naming conventions, the README's table of metrics, the Grafana
//! dashboard, and what a running `standalone` exports on `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use tidemark_runtime::telemetry::vocabulary::{Kind, Metric};

use super::compose::{panel_exprs, provisioned_dashboard, scan_words};
use crate::support::{generate, push, total, wait_stored, Pipeline};

// The binary's list of every crate's metrics; the binary has no library to import it from.
#[path = "../../../src/vocabulary.rs"]
mod vocabulary;

/// Suffixes of the series of one histogram (or summary) family.
const DISTRIBUTION_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// Every defined metric by name.
fn defined() -> BTreeMap<&'static str, &'static Metric> {
    vocabulary::all_metrics().map(|m| (m.name, m)).collect()
}

/// The defined metric a series or family name belongs to: its own, or a histogram's
/// whose `_bucket`, `_sum` or `_count` series it is.
fn family_of(series: &str) -> Option<&'static Metric> {
    let defined = defined();
    defined.get(series).copied().or_else(|| {
        DISTRIBUTION_SUFFIXES.iter().find_map(|suffix| {
            let metric = defined.get(series.strip_suffix(suffix)?)?;
            (metric.kind == Kind::Histogram).then_some(*metric)
        })
    })
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with("__")
}

#[test]
fn names_are_unique_and_follow_prometheus_conventions() {
    let mut seen = BTreeSet::new();
    for m in vocabulary::all_metrics() {
        let name = m.name;
        assert!(seen.insert(name), "`{name}` is defined twice");
        assert!(
            name.strip_prefix("tidemark_")
                .is_some_and(|rest| !rest.is_empty()
                    && rest
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')),
            "`{name}`: a name is `tidemark_` and lower-case snake case"
        );
        assert_eq!(
            m.kind == Kind::Counter,
            name.ends_with("_total"),
            "`{name}`: counters, and only counters, end in `_total`"
        );
        assert_eq!(
            m.unit.is_some_and(|u| u.as_str() == "seconds"),
            name.ends_with("_seconds"),
            "`{name}`: durations are in seconds, and their names end in `_seconds`"
        );
        assert!(
            !DISTRIBUTION_SUFFIXES.iter().any(|s| name.ends_with(s)),
            "`{name}` ends like a histogram's series"
        );
        assert!(
            !m.help.is_empty() && m.help.ends_with('.'),
            "`{name}`: the help text is a sentence"
        );
        let labels: BTreeSet<&str> = m.labels.iter().copied().collect();
        assert_eq!(labels.len(), m.labels.len(), "`{name}` repeats a label");
        for label in m.labels {
            assert!(is_label_name(label), "`{name}`: bad label name `{label}`");
            assert_ne!(*label, "le", "`{name}`: `le` is the histograms' label");
            assert!(
                m.kind != Kind::Histogram || *label != "quantile",
                "`{name}`: `quantile` is the summaries' label"
            );
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The rows of the README's table of metrics: name, type, labels, meaning.
fn readme_rows(readme: &str) -> Vec<[String; 4]> {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Metrics\n"))
        .expect("README.md has no `## Metrics` section");
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|line| {
            let cells: Vec<String> = line
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect();
            cells
                .try_into()
                .unwrap_or_else(|c| panic!("README: a metric row has 4 cells: {c:?}"))
        })
        .collect()
}

#[test]
fn readme_lists_every_metric_and_nothing_else() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let defined = defined();
    let mut listed = BTreeSet::new();
    for [name, kind, labels, meaning] in readme_rows(&readme) {
        let name = name.trim_matches('`');
        let metric = defined
            .get(name)
            .unwrap_or_else(|| panic!("README lists `{name}`, which no crate defines"));
        assert!(
            listed.insert(name.to_owned()),
            "README lists `{name}` twice"
        );
        let want_labels: Vec<String> = metric.labels.iter().map(|l| format!("`{l}`")).collect();
        assert_eq!(
            (kind.as_str(), labels, meaning.as_str()),
            (
                format!("{:?}", metric.kind).to_lowercase().as_str(),
                want_labels.join(", "),
                metric.help
            ),
            "README: the row of `{name}` differs from its definition (type, labels, help)"
        );
    }
    let unlisted: Vec<&&str> = defined.keys().filter(|n| !listed.contains(**n)).collect();
    assert!(unlisted.is_empty(), "README does not list {unlisted:?}");

    // Elsewhere (the fault table) the README names metrics too, and crates as log
    // targets (`TIDEMARK_LOG=info,tidemark_aggregator=debug`).
    let crates: BTreeSet<String> = std::fs::read_dir(root())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| format!("tidemark_{}", e.file_name().to_string_lossy()))
        .collect();
    let mut words = BTreeSet::new();
    scan_words(&readme, "tidemark_", &mut words);
    let unknown: Vec<&String> = words
        .iter()
        .filter(|w| !defined.contains_key(w.as_str()) && !crates.contains(*w))
        .collect();
    assert!(
        unknown.is_empty(),
        "README names {unknown:?}, neither a defined metric nor a crate"
    );
}

#[test]
fn grafana_dashboard_queries_only_defined_metrics() {
    let (file, dashboard) = provisioned_dashboard();
    let mut queried = BTreeSet::new();
    for expr in panel_exprs(&file, &dashboard) {
        scan_words(expr, "tidemark_", &mut queried);
    }
    assert!(
        !queried.is_empty(),
        "{} queries no tidemark_ metric",
        file.display()
    );
    let unknown: Vec<&String> = queried.iter().filter(|s| family_of(s).is_none()).collect();
    assert!(
        unknown.is_empty(),
        "{} queries {unknown:?}, which no crate defines",
        file.display()
    );
}

/// One series line of the Prometheus text format: its name and label names.
fn series_line(line: &str) -> (&str, Vec<&str>) {
    let Some((name, rest)) = line.split_once('{') else {
        return (line.split(' ').next().unwrap_or_default(), Vec::new());
    };
    let mut labels = Vec::new();
    let mut rest = rest;
    while let Some((label, value)) = rest.split_once("=\"") {
        labels.push(label.trim_start_matches(','));
        // The value ends at the first quote that no backslash escapes.
        let mut escaped = false;
        let end = value
            .char_indices()
            .find(|&(_, c)| {
                let end = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                end
            })
            .map(|(i, _)| i)
            .expect("a label value ends with a quote");
        rest = &value[end + 1..];
        if rest.starts_with('}') {
            break;
        }
    }
    (name, labels)
}

/// Checks one `/metrics` page against the vocabulary; returns the families on it.
fn check_exported(page: &str, source: &str) -> BTreeSet<String> {
    let mut help = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in page.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help.insert(name, text);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            types.insert(name, kind);
        } else {
            let (series, labels) = series_line(line);
            let metric = family_of(series)
                .unwrap_or_else(|| panic!("{source} exports `{series}`, which no crate defines"));
            let type_line = types.get(metric.name).copied();
            assert!(
                type_line.is_some(),
                "{source}: `{series}` comes before the # TYPE line of `{}`",
                metric.name
            );
            let own_labels: Vec<&str> = match type_line {
                Some("histogram" | "summary") => labels
                    .into_iter()
                    .filter(|l| !matches!(*l, "le" | "quantile"))
                    .collect(),
                _ => labels,
            };
            assert_eq!(
                own_labels, metric.labels,
                "{source}: `{series}` has other labels than its definition"
            );
        }
    }
    for (name, kind) in &types {
        let metric = family_of(name)
            .filter(|m| m.name == *name)
            .unwrap_or_else(|| {
                panic!("{source} exports the family `{name}`, which no crate defines")
            });
        let kinds: &[&str] = match metric.kind {
            Kind::Counter => &["counter"],
            Kind::Gauge => &["gauge"],
            Kind::Histogram => &["histogram", "summary"],
        };
        assert!(
            kinds.contains(kind),
            "{source}: `{name}` is exported as a {kind}"
        );
        assert_eq!(
            help.get(name).copied(),
            Some(metric.help),
            "{source}: `{name}` needs its help text on a # HELP line"
        );
    }
    types.keys().map(|n| (*n).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_exports_only_defined_metrics() {
    let p = Pipeline::embedded().await;
    let _standalone = p.start("standalone").await;
    let (bodies, tally) = generate(31, 500, 2, chrono::Utc::now().timestamp_millis());
    assert!(push(p.ingest, &p.token, bodies, 4)
        .await
        .iter()
        .all(|r| r.1 == 202));
    wait_stored(&p.pool, total(&tally) as i64).await;

    let client = reqwest::Client::new();
    for (role, addr) in [("ingest", p.ingest), ("api", p.api)] {
        let page = client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let families = check_exported(&page, &format!("{role} /metrics"));
        // What this run did must show, or the check above proved nothing.
        for expected in [
            "tidemark_http_requests_total",
            "tidemark_ingest_samples_accepted_total",
            "tidemark_aggregator_samples_committed_total",
            "tidemark_aggregator_flush_duration_seconds",
        ] {
            assert!(
                families.contains(expected),
                "{role} /metrics lacks `{expected}`:\n{page}"
            );
        }
    }
}
