//! Rule evaluation by aggregator processes on the broker: slow samples make a rule fire
//! on the breaches topic, recovery resolves it, and a SIGKILL of the aggregator while
//! the rule fires neither loses nor invents a transition.

use std::time::{Duration, Instant};

use serde_json::json;
use tidemark_schemas::{decode_breach, Breach, BreachState};

use crate::support::{free_addr, push, read_messages, unique, Pipeline};

const RULES: &str = r#"rules:
  - name: slow-api
    service: api
    metric: http.latency_ms
    tags: {region: eu}
    stat: max
    window: 10s
    op: ">"
    threshold: 500
    resolve_threshold: 400
    for: 0s
    severity: critical
    annotations:
      summary: "{{ service }} max {{ value }} ms > {{ threshold }}"
receivers: []
routes: []
"#;

/// A pipeline whose roles read `rules` from a file of their own (returned, to rewrite),
/// evaluated every `eval_interval` (the default when `None`).
async fn with_rules(rules: &str, eval_interval: Option<&str>) -> (Pipeline, std::path::PathBuf) {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("rules") + ".yaml");
    std::fs::write(&path, rules).unwrap();
    let mut env = vec![("TIDEMARK_RULES", path.to_str().unwrap())];
    env.extend(eval_interval.map(|i| ("TIDEMARK_EVAL_INTERVAL", i)));
    (Pipeline::new(&env).await, path)
}

/// Every breach on the pipeline's breaches topic, in log order.
fn breaches(p: &Pipeline) -> Vec<Breach> {
    let (brokers, topic) = (p.brokers.clone(), format!("{}.breaches", p.prefix));
    read_messages(&brokers, &topic)
        .into_iter()
        .map(|(_, _, payload)| decode_breach(&payload).expect("breaches decode"))
        .collect()
}

/// Pushes samples of `value` (and one of another region, which no rule watches) until
/// `done` holds of the breaches, or panics after `within`.
async fn push_until(
    p: &Pipeline,
    value: f64,
    within: Duration,
    done: impl Fn(&[Breach]) -> bool,
) -> Vec<Breach> {
    let deadline = Instant::now() + within;
    loop {
        let body = json!([
            {"service": "api", "metric": "http.latency_ms", "value": value, "tags": {"region": "eu"}},
            {"service": "api", "metric": "http.latency_ms", "value": 9000.0, "tags": {"region": "us"}},
        ]);
        let statuses = push(p.ingest, &p.token, vec![body], 1).await;
        assert_eq!(statuses[0].1, 202, "ingest refused: {statuses:?}");
        let seen = tokio::task::block_in_place(|| breaches(p));
        if done(&seen) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "breaches after {within:?}: {seen:#?}"
        );
    }
}

fn states(breaches: &[Breach]) -> Vec<(i64, BreachState, String)> {
    breaches
        .iter()
        .map(|b| (b.seq, b.state, b.reason.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_samples_fire_a_rule_and_recovery_resolves_it_across_a_sigkill() {
    let (p, _) = with_rules(RULES, Some("1s")).await;
    let _ingest = p.start("ingest").await;
    let mut aggregator = p.start("aggregator").await;

    let fired = push_until(&p, 900.0, Duration::from_secs(60), |b| {
        b.iter().any(|b| b.state == BreachState::Firing)
    })
    .await;
    let firing = fired
        .iter()
        .find(|b| b.state == BreachState::Firing)
        .unwrap();
    assert_eq!(firing.rule, "slow-api");
    assert_eq!(firing.series.service, "api");
    assert_eq!(
        firing.series.tags.get("region").map(String::as_str),
        Some("eu")
    );
    assert_eq!(firing.seq, 1, "for: 0s fires without a pending transition");
    assert_eq!(firing.value, Some(900.0));
    assert_eq!(firing.threshold, 500.0);
    assert_eq!(firing.annotations["summary"], "api max 900 ms > 500");
    assert!(
        fired.iter().all(|b| b.series.tags["region"] == "eu"),
        "a series no rule watches gave a breach: {fired:#?}"
    );

    // Killed while firing: the next aggregator rebuilds its window from the log and
    // its state from Postgres, so it neither fires again nor resolves for lack of data.
    aggregator.sigkill();
    aggregator = p.start("aggregator").await;
    let until = Instant::now() + Duration::from_secs(4);
    let after_restart = push_until(&p, 900.0, Duration::from_secs(30), |_| {
        Instant::now() >= until
    })
    .await;
    assert!(
        after_restart
            .iter()
            .all(|b| b.seq == 1 && b.active_since == firing.active_since),
        "the restart caused a transition, or began the episode again: {:?}",
        states(&after_restart)
    );

    // 450 lies between the resolve threshold and the threshold: still firing.
    // Values of 100 resolve it once the 900s have left the 10 s window.
    let until = Instant::now() + Duration::from_secs(3);
    let _ = push_until(&p, 450.0, Duration::from_secs(30), |_| {
        Instant::now() >= until
    })
    .await;
    let resolved = push_until(&p, 100.0, Duration::from_secs(60), |b| {
        b.iter().any(|b| b.state == BreachState::Ok)
    })
    .await;
    let mut seqs = states(&resolved);
    seqs.dedup();
    assert_eq!(
        seqs,
        vec![
            (1, BreachState::Firing, "breached".to_owned()),
            (2, BreachState::Ok, "recovered".to_owned())
        ],
        "each transition once, in order (a repeat of a seq is allowed, a new one is not)"
    );
    drop(aggregator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_rules_and_an_invalid_file_keeps_those_in_force() {
    let (p, rules) = with_rules(
        &RULES.replace("threshold: 500", "threshold: 5000"),
        Some("1s"),
    )
    .await;
    let _ingest = p.start("ingest").await;
    let aggregator = p.start("aggregator").await;
    let hup = || {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &aggregator.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let until = Instant::now() + Duration::from_secs(4);
    let quiet = push_until(&p, 900.0, Duration::from_secs(30), |b| {
        assert!(b.is_empty(), "900 is under 5000: no breach, got {b:?}");
        Instant::now() >= until
    })
    .await;
    assert!(quiet.is_empty());

    // An invalid file keeps the rules in force (and the process running).
    std::fs::write(
        &rules,
        "rules: [{name: broken}]\nreceivers: []\nroutes: []\n",
    )
    .unwrap();
    hup();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = std::fs::read_dir(&p.log_dir)
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(
        log.contains("rules not reloaded") && log.contains("rules[0] \"broken\""),
        "the refused reload is logged with its errors:\n{log}"
    );

    std::fs::write(&rules, RULES).unwrap();
    hup();
    let fired = push_until(&p, 900.0, Duration::from_secs(60), |b| {
        b.iter().any(|b| b.state == BreachState::Firing)
    })
    .await;
    assert_eq!(fired[0].threshold, 500.0, "the reloaded threshold");
    drop(aggregator);
}

/// The alerts the API lists for `rule`.
async fn api_alerts(p: &Pipeline, rule: &str) -> Vec<serde_json::Value> {
    let url = format!("http://{}/v1/alerts?rule={rule}", p.api);
    let body = crate::support::get_json(&url, &p.token).await;
    body["alerts"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_page_through_every_role_then_recovery_resolves_the_alert() {
    // `api-p99` is the rule the detection latency is quoted for: window 1m, for 0s.
    let p99 = "  - {name: api-p99, service: api, metric: http.latency_ms, stat: p99, \
               window: 1m, op: '>', threshold: 500, for: 0s, severity: warning}\n";
    // The default evaluation interval (10 s): what detection costs as shipped.
    let (p, _) = with_rules(
        &RULES.replace("receivers:", &format!("{p99}receivers:")),
        None,
    )
    .await;
    let _ingest = p.start("ingest").await;
    let _aggregator = p.start("aggregator").await;
    let _alerter = p.start_at("alerter", free_addr()).await;
    let _api = p.start("api").await;

    let first_bad = Instant::now();
    let deadline = first_bad + Duration::from_secs(60);
    let firing = loop {
        let body = json!([{"service": "api", "metric": "http.latency_ms", "value": 900.0, "tags": {"region": "eu"}}]);
        assert_eq!(push(p.ingest, &p.token, vec![body], 1).await[0].1, 202);
        let p99 = api_alerts(&p, "api-p99").await;
        let alerts = api_alerts(&p, "slow-api").await;
        if p99.iter().any(|a| a["state"] == "firing") {
            println!(
                "detection latency (first bad sample acknowledged -> firing in the API; \
                 window 1m, for 0s, TIDEMARK_EVAL_INTERVAL 10s): {:?}",
                first_bad.elapsed()
            );
            if let Some(a) = alerts.iter().find(|a| a["state"] == "firing") {
                break a.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no firing alerts in the API: {p99:?} {alerts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(firing["service"], "api");
    assert_eq!(firing["severity"], "critical");
    assert_eq!(firing["annotations"]["summary"], "api max 900 ms > 500");
    // The aggregator records each evaluation; the API shows it with the rule.
    let rules = crate::support::get_json(&format!("http://{}/v1/rules", p.api), &p.token).await;
    let slow = rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "slow-api")
        .unwrap();
    let evaluations = slow["evaluations"].as_array().unwrap();
    assert_eq!(evaluations.len(), 1, "one aggregator: {slow}");
    assert_eq!(evaluations[0]["series"], 1, "{slow}");
    assert_eq!(evaluations[0]["error"], serde_json::Value::Null, "{slow}");
    assert_eq!(slow["firing"], 1, "{slow}");

    let deadline = Instant::now() + Duration::from_secs(90);
    let resolved = loop {
        let body = json!([{"service": "api", "metric": "http.latency_ms", "value": 100.0, "tags": {"region": "eu"}}]);
        assert_eq!(push(p.ingest, &p.token, vec![body], 1).await[0].1, 202);
        let alerts = api_alerts(&p, "slow-api").await;
        if let Some(a) = alerts.iter().find(|a| a["state"] == "resolved") {
            break a.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the alert did not resolve: {alerts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(resolved["id"], firing["id"], "the same alert resolves");
    assert_eq!(resolved["resolve_reason"], "recovered");

    // The on-call feed holds the alert's changes: firing, then resolved.
    let topic = format!("{}.alerts", p.prefix);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let feed: Vec<serde_json::Value> = tokio::task::block_in_place(|| {
            read_messages(&p.brokers, &topic)
                .into_iter()
                .map(|(_, _, payload)| serde_json::from_slice(&payload).unwrap())
                .collect()
        });
        let mut states: Vec<(i64, String)> = feed
            .iter()
            .filter(|m| m["alert_id"] == firing["id"])
            .map(|m| {
                (
                    m["seq"].as_i64().unwrap(),
                    m["transition"]["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        states.dedup();
        if states.last().is_some_and(|s| s.1 == "resolved") {
            assert_eq!(
                states,
                vec![(1, "firing".to_owned()), (2, "resolved".to_owned())],
                "each change once, in order"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the feed lacks the resolution: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_for_timer_survives_a_sigkill_of_the_aggregator() {
    let (p, _) = with_rules(&RULES.replace("for: 0s", "for: 8s"), Some("1s")).await;
    let _ingest = p.start("ingest").await;
    let mut aggregator = p.start("aggregator").await;

    let pending = push_until(&p, 900.0, Duration::from_secs(60), |b| {
        b.iter().any(|b| b.state == BreachState::Pending)
    })
    .await;
    assert!(
        pending.iter().all(|b| b.state == BreachState::Pending),
        "fired before `for` ran out: {:?}",
        states(&pending)
    );
    let since = pending[0].active_since;

    aggregator.sigkill();
    aggregator = p.start("aggregator").await;
    let fired = push_until(&p, 900.0, Duration::from_secs(60), |b| {
        b.iter().any(|b| b.state == BreachState::Firing)
    })
    .await;
    let mut seqs = states(&fired);
    seqs.dedup();
    assert_eq!(
        seqs,
        vec![
            (1, BreachState::Pending, "breached".to_owned()),
            (2, BreachState::Firing, "breached".to_owned())
        ],
        "the restart neither restarted nor repeated the episode"
    );
    let firing = fired
        .iter()
        .find(|b| b.state == BreachState::Firing)
        .unwrap();
    assert_eq!(
        firing.active_since, since,
        "the episode began before the kill"
    );
    assert!(
        firing.at - since >= 8_000,
        "fired {} ms after the breach began, before `for` (8 s) ran out",
        firing.at - since
    );
    drop(aggregator);
}
