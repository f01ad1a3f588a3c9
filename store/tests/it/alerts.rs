//! The alert lifecycle's storage ([`tidemark_store::alerts`]): breaches applied with
//! their offsets, repeats dropped, episodes, acknowledgements, the feed outbox (with the
//! alerts inhibiting the changed one), the list and the alerter's lock.

use std::collections::BTreeMap;

use sqlx::PgPool;
use tidemark_rules::InhibitRule;
use tidemark_schemas::{Breach, BreachState, Series, Severity};
use tidemark_store::alerts::feed::{mark_published, unpublished};
use tidemark_store::alerts::lock::AlerterLock;
use tidemark_store::alerts::{
    self, acknowledge, apply_breach, Ack, AlertFilter, AlertState, Applied, Position,
};
use tidemark_store::buckets::Tx;
use tidemark_store::db::fresh_test_database;

const TOPIC: &str = "t.breaches";
const T0: i64 = 1_790_000_000_000;

fn breach(fingerprint: &str, seq: i64, state: BreachState, reason: &str) -> Breach {
    Breach {
        rule: "api-latency".into(),
        fingerprint: fingerprint.into(),
        series: Series {
            service: "api".into(),
            metric: "http.latency_ms".into(),
            tags: BTreeMap::from([("region".into(), "eu".into())]),
        },
        state,
        reason: reason.into(),
        severity: Severity::Warning,
        value: Some(612.5),
        threshold: 500.0,
        op: ">".into(),
        stat: "p95".into(),
        window: 60_000,
        at: T0 + seq * 10_000,
        active_since: T0,
        seq,
        schedule: None,
        labels: BTreeMap::from([("team".into(), "web".into())]),
        annotations: BTreeMap::new(),
    }
}

fn at(offset: i64) -> Position<'static> {
    Position {
        topic: TOPIC,
        partition: 0,
        offset,
        cluster_id: "c1",
    }
}

/// Applies `b`, read at `offset`, in a transaction of its own.
async fn apply(pool: &PgPool, b: &Breach, offset: i64) -> Applied {
    let mut tx = Tx::begin(pool).await.unwrap();
    let applied = apply_breach(&mut tx, b, &at(offset), &[]).await.unwrap();
    tx.commit().await.unwrap();
    applied
}

async fn next_offset(pool: &PgPool) -> Option<i64> {
    alerts::load_offsets(pool, TOPIC)
        .await
        .unwrap()
        .get(&0)
        .map(|o| o.next_offset)
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// pending → firing → escalated → ok, as the aggregator publishes an episode.
fn episode(fingerprint: &str, first_seq: i64) -> Vec<Breach> {
    let mut escalated = breach(fingerprint, first_seq + 2, BreachState::Firing, "escalated");
    escalated.severity = Severity::Critical;
    escalated.threshold = 400.0;
    escalated.schedule = Some("saturday".into());
    let mut recovered = breach(fingerprint, first_seq + 3, BreachState::Ok, "recovered");
    recovered.value = Some(120.0);
    vec![
        breach(fingerprint, first_seq, BreachState::Pending, "breached"),
        breach(fingerprint, first_seq + 1, BreachState::Firing, "breached"),
        escalated,
        recovered,
    ]
}

#[tokio::test]
async fn an_episode_is_one_alert_with_each_transition() {
    let pool = fresh_test_database().await.1;
    let mut ids = Vec::new();
    for (offset, b) in episode("fp1", 1).iter().enumerate() {
        match apply(&pool, b, offset as i64).await {
            Applied::Changed { alert_id } => ids.push(alert_id),
            other => panic!("{b:?}: {other:?}"),
        }
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one alert for the episode");
    let (alert, transitions) = alerts::get(&pool, ids[0], &[]).await.unwrap().unwrap();
    assert_eq!(alert.state, AlertState::Resolved);
    assert_eq!(alert.resolve_reason.as_deref(), Some("recovered"));
    assert_eq!(alert.severity, "critical", "escalated");
    assert_eq!(
        (alert.started_at_ms, alert.fired_at_ms, alert.resolved_at_ms),
        (T0, Some(T0 + 20_000), Some(T0 + 40_000))
    );
    assert_eq!(alert.value, Some(120.0));
    assert_eq!(alert.tags["region"], "eu");
    assert_eq!(alert.labels["team"], "web");
    assert_eq!(alert.seq, 4);
    let seen: Vec<(i64, Option<i64>, AlertState, &str, &str)> = transitions
        .iter()
        .map(|t| {
            (
                t.seq,
                t.breach_seq,
                t.state,
                t.reason.as_str(),
                t.severity.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, Some(1), AlertState::Pending, "breached", "warning"),
            (2, Some(2), AlertState::Firing, "breached", "warning"),
            (3, Some(3), AlertState::Firing, "escalated", "critical"),
            (4, Some(4), AlertState::Resolved, "recovered", "critical"),
        ]
    );
    assert_eq!(transitions[2].schedule.as_deref(), Some("saturday"));
    assert_eq!(transitions[2].threshold, 400.0);
    assert_eq!(next_offset(&pool).await, Some(4));

    let feed = unpublished(&pool, 100).await.unwrap();
    let payloads: Vec<serde_json::Value> = feed
        .iter()
        .map(|r| serde_json::from_str(&r.payload).unwrap())
        .collect();
    let order: Vec<(i64, i64, &str)> = payloads
        .iter()
        .map(|p| {
            (
                p["alert_id"].as_i64().unwrap(),
                p["seq"].as_i64().unwrap(),
                p["alert"]["state"].as_str().unwrap(),
            )
        })
        .collect();
    let id = ids[0];
    assert_eq!(
        order,
        [
            (id, 1, "pending"),
            (id, 2, "firing"),
            (id, 3, "firing"),
            (id, 4, "resolved")
        ]
    );
    assert!(feed.iter().all(|r| r.fingerprint == "fp1"));
    assert_eq!(payloads[2]["transition"]["reason"], "escalated");
    assert_eq!(
        payloads[3]["alert"]["resolved_at"],
        "2026-09-21T14:14:00.000Z"
    );
    assert_eq!(payloads[3]["alert"]["tags"]["region"], "eu");
    mark_published(&pool, &[feed[0].id, feed[1].id])
        .await
        .unwrap();
    let left: Vec<i64> = unpublished(&pool, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, [feed[2].id, feed[3].id]);
}

#[tokio::test]
async fn repeats_are_dropped_by_seq_and_by_offset() {
    let pool = fresh_test_database().await.1;
    let [pending, firing, ..] = &episode("fp", 1)[..] else {
        unreachable!()
    };
    assert!(matches!(
        apply(&pool, pending, 0).await,
        Applied::Changed { .. }
    ));
    assert!(matches!(
        apply(&pool, firing, 1).await,
        Applied::Changed { .. }
    ));
    // The aggregator published seq 2 again after a crash: a new offset, the same seq.
    assert_eq!(apply(&pool, firing, 2).await, Applied::Repeat);
    assert_eq!(apply(&pool, pending, 3).await, Applied::Repeat);
    // The alerter read offset 1 again after a crash.
    assert_eq!(apply(&pool, firing, 1).await, Applied::AlreadyApplied);
    assert_eq!(count(&pool, "alert_transitions").await, 2);
    assert_eq!(count(&pool, "alert_feed").await, 2);
    assert_eq!(next_offset(&pool).await, Some(4));

    // An ok with no open alert (its fingerprint never opened one) changes nothing.
    let stray = breach("other", 7, BreachState::Ok, "recovered");
    assert_eq!(apply(&pool, &stray, 4).await, Applied::NoAlert);
    assert_eq!(count(&pool, "alerts").await, 1);
    assert_eq!(next_offset(&pool).await, Some(5));
}

#[tokio::test]
async fn a_new_episode_after_resolve_is_a_new_alert() {
    let pool = fresh_test_database().await.1;
    let mut offset = 0;
    for b in episode("fp", 1) {
        apply(&pool, &b, offset).await;
        offset += 1;
    }
    // An aggregator that forgot the idle series numbers its next episode from 1 again.
    let mut again = breach("fp", 1, BreachState::Firing, "breached");
    again.active_since = T0 + 3_600_000;
    let Applied::Changed { alert_id } = apply(&pool, &again, offset).await else {
        panic!("the second episode opens an alert")
    };
    assert_eq!(
        apply(&pool, &again, offset + 1).await,
        Applied::Repeat,
        "the same (episode, seq) again is a repeat"
    );
    let all = alerts::list(
        &pool,
        &AlertFilter {
            limit: 10,
            ..Default::default()
        },
        &[],
    )
    .await
    .unwrap();
    let states: Vec<(i64, AlertState)> = all.iter().map(|a| (a.id, a.state)).collect();
    assert_eq!(states.len(), 2);
    assert_eq!(
        states[0],
        (alert_id, AlertState::Firing),
        "newest first, open"
    );
    assert_eq!(states[1].1, AlertState::Resolved);
    assert_ne!(states[0].0, states[1].0);
    let (alert, transitions) = alerts::get(&pool, alert_id, &[]).await.unwrap().unwrap();
    assert_eq!(alert.started_at_ms, T0 + 3_600_000);
    assert_eq!(transitions.len(), 1);
    assert_eq!(
        transitions[0].seq, 1,
        "each alert numbers its own transitions"
    );
}

#[tokio::test]
async fn a_later_episode_supersedes_one_whose_ok_was_never_seen() {
    let pool = fresh_test_database().await.1;
    let Applied::Changed { alert_id: first } =
        apply(&pool, &breach("fp", 1, BreachState::Firing, "breached"), 0).await
    else {
        panic!()
    };
    let mut later = breach("fp", 3, BreachState::Pending, "breached");
    later.active_since = T0 + 60_000;
    let Applied::Changed { alert_id: second } = apply(&pool, &later, 1).await else {
        panic!()
    };
    assert_ne!(first, second);
    let (old, transitions) = alerts::get(&pool, first, &[]).await.unwrap().unwrap();
    assert_eq!(old.state, AlertState::Resolved);
    assert_eq!(old.resolve_reason.as_deref(), Some("superseded"));
    assert_eq!(old.resolved_at_ms, Some(T0 + 60_000));
    assert_eq!(transitions.last().unwrap().reason, "superseded");
    assert_eq!(count(&pool, "alert_feed").await, 3);
}

#[tokio::test]
async fn an_acknowledgement_records_who_and_when() {
    let pool = fresh_test_database().await.1;
    let Applied::Changed { alert_id } =
        apply(&pool, &breach("fp", 1, BreachState::Firing, "breached"), 0).await
    else {
        panic!()
    };
    let before = chrono::Utc::now().timestamp_millis();
    let Some(Ack::Done(alert)) = acknowledge(&pool, alert_id, "alice", &[]).await.unwrap() else {
        panic!("an open alert is acknowledged")
    };
    let after = chrono::Utc::now().timestamp_millis();
    assert_eq!(alert.acknowledged_by.as_deref(), Some("alice"));
    let when = alert.acknowledged_at_ms.unwrap();
    assert!((before - 1..=after + 1).contains(&when), "{when}");
    assert_eq!(
        alert.state,
        AlertState::Firing,
        "an acknowledgement keeps the state"
    );

    let Some(Ack::Already(again)) = acknowledge(&pool, alert_id, "bob", &[]).await.unwrap() else {
        panic!("a second acknowledgement changes nothing")
    };
    assert_eq!(again.acknowledged_by.as_deref(), Some("alice"));
    let (_, transitions) = alerts::get(&pool, alert_id, &[]).await.unwrap().unwrap();
    let last = transitions.last().unwrap();
    assert_eq!(
        (last.seq, last.reason.as_str(), last.actor.as_deref()),
        (2, "acknowledged", Some("alice"))
    );
    assert_eq!(last.at_ms, when);
    let feed = unpublished(&pool, 10).await.unwrap();
    assert_eq!(feed.len(), 2);
    let payload: serde_json::Value = serde_json::from_str(&feed[1].payload).unwrap();
    assert_eq!(payload["alert"]["acknowledged_by"], "alice");

    apply(&pool, &breach("fp", 2, BreachState::Ok, "recovered"), 1).await;
    let (resolved, _) = alerts::get(&pool, alert_id, &[]).await.unwrap().unwrap();
    assert_eq!(
        (resolved.state, resolved.seq),
        (AlertState::Resolved, 3),
        "the breach after the acknowledgement is the alert's third transition"
    );
    assert!(matches!(
        acknowledge(&pool, alert_id, "carol", &[]).await.unwrap(),
        Some(Ack::Resolved(_))
    ));
    assert_eq!(
        acknowledge(&pool, alert_id + 100, "x", &[]).await.unwrap(),
        None
    );
}

/// The alert id and `inhibited_by` of the newest feed row.
async fn last_fed_inhibited_by(pool: &PgPool) -> (i64, Vec<i64>) {
    let feed = unpublished(pool, 100).await.unwrap();
    let payload: serde_json::Value = serde_json::from_str(&feed.last().unwrap().payload).unwrap();
    let inhibited_by = serde_json::from_value(payload["alert"]["inhibited_by"].clone()).unwrap();
    (payload["alert_id"].as_i64().unwrap(), inhibited_by)
}

#[tokio::test]
async fn the_feed_carries_the_firing_alerts_inhibiting_the_changed_one() {
    let pool = fresh_test_database().await.1;
    let mut critical = breach("critical", 1, BreachState::Firing, "breached");
    critical.severity = Severity::Critical;
    let Applied::Changed { alert_id: source } = apply(&pool, &critical, 0).await else {
        panic!()
    };
    assert_eq!(last_fed_inhibited_by(&pool).await, (source, vec![]));

    // The built-in rule: a critical alert inhibits the warnings of its rule and
    // service, a pending one too.
    apply(
        &pool,
        &breach("warning", 1, BreachState::Pending, "breached"),
        1,
    )
    .await;
    let (warning, inhibited_by) = last_fed_inhibited_by(&pool).await;
    assert_eq!(inhibited_by, [source]);

    // A rules file's rule, given by the caller, with `equal`.
    let file_rule = InhibitRule {
        source_match: BTreeMap::from([("rule".into(), "api-latency".into())]),
        target_match: BTreeMap::from([("rule".into(), "errors".into())]),
        equal: vec!["region".into()],
    };
    let errors = |fingerprint: &str, region: &str| {
        let mut b = breach(fingerprint, 1, BreachState::Firing, "breached");
        b.rule = "errors".into();
        b.series.tags.insert("region".into(), region.into());
        b
    };
    let mut tx = Tx::begin(&pool).await.unwrap();
    let rules = [file_rule];
    apply_breach(&mut tx, &errors("errors-eu", "eu"), &at(2), &rules)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(last_fed_inhibited_by(&pool).await.1, [source]);
    let mut tx = Tx::begin(&pool).await.unwrap();
    apply_breach(&mut tx, &errors("errors-us", "us"), &at(3), &rules)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(last_fed_inhibited_by(&pool).await.1.is_empty());

    // Once the critical alert resolved, the warning's next change is not inhibited.
    let mut recovered = breach("critical", 2, BreachState::Ok, "recovered");
    recovered.severity = Severity::Critical;
    apply(&pool, &recovered, 4).await;
    apply(
        &pool,
        &breach("warning", 2, BreachState::Firing, "breached"),
        5,
    )
    .await;
    assert_eq!(last_fed_inhibited_by(&pool).await, (warning, vec![]));
}

#[tokio::test]
async fn offsets_and_alerts_commit_together() {
    let pool = fresh_test_database().await.1;
    // Rolled back after applying: neither the alert nor the offset moved.
    let mut tx = Tx::begin(&pool).await.unwrap();
    let applied = apply_breach(
        &mut tx,
        &breach("fp", 1, BreachState::Firing, "breached"),
        &at(0),
        &[],
    )
    .await
    .unwrap();
    assert!(matches!(applied, Applied::Changed { .. }));
    drop(tx);
    assert_eq!(next_offset(&pool).await, None);
    assert_eq!(count(&pool, "alerts").await, 0);

    // A statement failing midway (Postgres refuses U+0000 in text, after the offset and
    // the seq were written): the transaction fails as a whole.
    let mut bad = breach("fp", 1, BreachState::Firing, "breached");
    bad.series.service = "a\0b".into();
    let mut tx = Tx::begin(&pool).await.unwrap();
    let err = apply_breach(&mut tx, &bad, &at(0), &[]).await.unwrap_err();
    assert!(err.is_data(), "{err}");
    drop(tx);
    assert_eq!(next_offset(&pool).await, None);
    for table in [
        "alerts",
        "alert_fingerprints",
        "alert_transitions",
        "alert_feed",
    ] {
        assert_eq!(count(&pool, table).await, 0, "{table}");
    }

    // What the alerter then does: skip the message, and only it.
    let mut tx = Tx::begin(&pool).await.unwrap();
    assert!(alerts::skip(&mut tx, &at(0)).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(next_offset(&pool).await, Some(1));
    assert_eq!(
        apply(&pool, &breach("fp", 1, BreachState::Firing, "breached"), 0).await,
        Applied::AlreadyApplied
    );

    // Another cluster (a restarted embedded broker) starts its offsets again.
    let mut tx = Tx::begin(&pool).await.unwrap();
    let moved = Position {
        cluster_id: "c2",
        ..at(0)
    };
    assert!(alerts::skip(&mut tx, &moved).await.unwrap());
    tx.commit().await.unwrap();
    let stored = alerts::load_offsets(&pool, TOPIC).await.unwrap();
    assert_eq!(
        (stored[&0].next_offset, stored[&0].cluster_id.as_str()),
        (1, "c2")
    );
}

#[tokio::test]
async fn the_list_filters_and_the_stats_count() {
    let pool = fresh_test_database().await.1;
    let mut offset = 0;
    let mut apply_next = |b: Breach| {
        offset += 1;
        let pool = pool.clone();
        async move { apply(&pool, &b, offset).await }
    };
    for b in episode("resolved", 1) {
        apply_next(b).await;
    }
    let mut firing = breach("firing", 1, BreachState::Firing, "breached");
    firing.series.service = "db".into();
    apply_next(firing).await;
    let mut pending = breach("pending", 1, BreachState::Pending, "breached");
    pending.rule = "errors".into();
    pending.active_since = T0 + 86_400_000;
    apply_next(pending).await;

    let list = |filter: AlertFilter<'static>| {
        let pool = pool.clone();
        async move {
            alerts::list(&pool, &filter, &[])
                .await
                .unwrap()
                .into_iter()
                .map(|a| a.fingerprint)
                .collect::<Vec<_>>()
        }
    };
    let all = AlertFilter {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(list(all.clone()).await, ["pending", "firing", "resolved"]);
    let by_state = AlertFilter {
        state: Some(AlertState::Firing),
        ..all.clone()
    };
    assert_eq!(list(by_state).await, ["firing"]);
    let by_service = AlertFilter {
        service: Some("db"),
        ..all.clone()
    };
    assert_eq!(list(by_service).await, ["firing"]);
    let by_rule = AlertFilter {
        rule: Some("errors"),
        ..all.clone()
    };
    assert_eq!(list(by_rule).await, ["pending"]);
    // Open since then: resolved at T0 + 40 s or later, or not resolved.
    let since = |ms| AlertFilter {
        since_ms: Some(ms),
        ..all.clone()
    };
    assert_eq!(
        list(since(T0 + 40_000)).await,
        ["pending", "firing", "resolved"]
    );
    assert_eq!(list(since(T0 + 40_001)).await, ["pending", "firing"]);
    let limited = AlertFilter {
        limit: 1,
        ..all.clone()
    };
    assert_eq!(list(limited).await, ["pending"]);

    let stats = alerts::stats(&pool, None).await.unwrap();
    let rules: Vec<(&str, i64, i64, i64)> = stats
        .iter()
        .map(|s| (s.rule.as_str(), s.pending, s.firing, s.resolved))
        .collect();
    assert_eq!(rules, [("api-latency", 0, 1, 1), ("errors", 1, 0, 0)]);
    // Fired at T0 + 20 s, resolved at T0 + 40 s.
    assert_eq!(stats[0].mean_time_to_resolve_s, Some(20.0));
    assert_eq!(stats[0].mean_time_to_acknowledge_s, None);
    let recent = alerts::stats(&pool, Some(T0 + 1)).await.unwrap();
    assert_eq!(recent.len(), 1, "only the alert started since");
}

#[tokio::test]
async fn firing_alerts_are_counted_per_service_and_severity() {
    let pool = fresh_test_database().await.1;
    let on = |service: &str, fingerprint: &str, severity: Severity, state: BreachState| {
        let mut b = breach(fingerprint, 1, state, "breached");
        b.series.service = service.into();
        b.severity = severity;
        b
    };
    let breaches = [
        on("api", "c1", Severity::Critical, BreachState::Firing),
        on("api", "c2", Severity::Critical, BreachState::Firing),
        on("api", "w1", Severity::Warning, BreachState::Firing),
        on("api", "p1", Severity::Critical, BreachState::Pending),
        on("db", "i1", Severity::Info, BreachState::Firing),
        on("db", "r1", Severity::Critical, BreachState::Firing),
    ];
    for (offset, b) in (0..).zip(&breaches) {
        apply(&pool, b, offset).await;
    }
    let mut resolved = breaches[5].clone();
    (resolved.seq, resolved.state) = (2, BreachState::Ok);
    apply(&pool, &resolved, 6).await;

    let counts = |service: Option<&'static str>| {
        let pool = pool.clone();
        async move {
            alerts::firing_by_service(&pool, service)
                .await
                .unwrap()
                .into_iter()
                .map(|c| (c.service, c.severity, c.count))
                .collect::<Vec<_>>()
        }
    };
    let row = |service: &str, severity: &str, n: i64| (service.to_owned(), severity.to_owned(), n);
    assert_eq!(
        counts(None).await,
        [
            row("api", "critical", 2),
            row("api", "warning", 1),
            row("db", "info", 1)
        ],
        "pending and resolved alerts do not count"
    );
    assert_eq!(counts(Some("db")).await, [row("db", "info", 1)]);
    assert!(counts(Some("web")).await.is_empty());
}

#[tokio::test]
async fn one_alerter_holds_the_lock_at_a_time() {
    let pool = fresh_test_database().await.1;
    let mut first = AlerterLock::connect(&pool, TOPIC).await.unwrap();
    let mut second = AlerterLock::connect(&pool, TOPIC).await.unwrap();
    assert!(first.try_acquire().await.unwrap());
    assert!(!second.try_acquire().await.unwrap());
    let mut other = AlerterLock::connect(&pool, "other.breaches").await.unwrap();
    assert!(
        other.try_acquire().await.unwrap(),
        "another deployment's topic has a lock of its own"
    );
    first.check().await.unwrap();
    first.release().await.unwrap();
    assert!(
        second.try_acquire().await.unwrap(),
        "released with its connection"
    );
}
