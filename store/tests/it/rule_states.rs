//! `rule_states` and `rule_evaluations`: what the aggregator stores of its rule
//! evaluation, and what `GET /v1/rules` reads of it.

use chrono::{TimeZone, Utc};
use serde_json::json;
use tidemark_store::db::fresh_test_database;
use tidemark_store::rule_states::{
    evaluations, load, mark_sent, record_evaluations, save, summaries, Evaluation, Stored,
};

fn stored(rule: &str, fingerprint: &str, phase: &str) -> Stored {
    Stored {
        rule: rule.into(),
        fingerprint: fingerprint.into(),
        series: json!({"service": "api", "metric": "lat", "tags": {}}),
        state: json!({"phase": phase, "missing": 0, "seq": 1}),
        unsent: Some(format!("{rule}/{fingerprint}/{phase}").into_bytes()),
    }
}

#[tokio::test]
async fn states_are_per_partition_and_a_save_replaces_them() {
    let pool = fresh_test_database().await.1;
    save(
        &pool,
        "t.samples",
        0,
        &[stored("a", "f1", "pending"), stored("b", "f2", "firing")],
    )
    .await
    .unwrap();
    save(&pool, "t.samples", 1, &[stored("a", "f3", "firing")])
        .await
        .unwrap();
    save(&pool, "t.samples", 0, &[stored("a", "f1", "firing")])
        .await
        .unwrap();
    let p0 = load(&pool, "t.samples", 0).await.unwrap();
    assert_eq!(
        p0,
        vec![stored("a", "f1", "firing"), stored("b", "f2", "firing")]
    );
    let counts: Vec<(String, i64, i64, i64)> = summaries(&pool, "t.samples")
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.rule, s.series, s.pending, s.firing))
        .collect();
    assert_eq!(counts, vec![("a".into(), 2, 0, 2), ("b".into(), 1, 0, 1)]);
    assert!(summaries(&pool, "other.samples").await.unwrap().is_empty());

    // Acknowledged: f1's breach is forgotten; f2's acknowledgement came for a breach a
    // later one replaced meanwhile, which stays unsent.
    let sent = |fp: &str, s: &str| (fp.to_owned(), s.as_bytes().to_vec());
    mark_sent(
        &pool,
        "t.samples",
        0,
        &[sent("f1", "a/f1/firing"), sent("f2", "b/f2/pending")],
    )
    .await
    .unwrap();
    let unsent: Vec<Option<Vec<u8>>> = load(&pool, "t.samples", 0)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.unsent)
        .collect();
    assert_eq!(unsent, vec![None, Some(b"b/f2/firing".to_vec())]);
}

#[tokio::test]
async fn an_aggregators_latest_evaluations_replace_its_earlier_ones() {
    let pool = fresh_test_database().await.1;
    let at = |s: i64| Utc.timestamp_opt(1_790_000_000 + s, 0).unwrap();
    let eval = |rule: &str, owner: &str, s: i64, error: Option<&str>| Evaluation {
        rule: rule.into(),
        owner: owner.into(),
        at: at(s),
        series: 3,
        frozen: 0,
        error: error.map(str::to_owned),
    };
    record_evaluations(
        &pool,
        "t",
        "agg-1",
        &[eval("a", "agg-1", 0, None), eval("b", "agg-1", 0, None)],
    )
    .await
    .unwrap();
    record_evaluations(&pool, "t", "agg-2", &[eval("a", "agg-2", 5, None)])
        .await
        .unwrap();
    // agg-1 evaluates again after a reload removed rule b; the broker refused its breaches.
    record_evaluations(
        &pool,
        "t",
        "agg-1",
        &[eval("a", "agg-1", 10, Some("not acknowledged"))],
    )
    .await
    .unwrap();
    assert_eq!(
        evaluations(&pool, "t").await.unwrap(),
        vec![
            eval("a", "agg-1", 10, Some("not acknowledged")),
            eval("a", "agg-2", 5, None)
        ]
    );
}
