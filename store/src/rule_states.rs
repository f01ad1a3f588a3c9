//! `rule_states`: where each (rule, series) of a partition stands in the aggregator's rule
//! evaluation, kept as JSON documents the evaluator defines. This crate reads only their
//! `phase` (`inactive`, `pending`, `firing`), to count a rule's series in each.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// One stored (rule, series) state.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Stored {
    pub rule: String,
    pub fingerprint: String,
    pub series: serde_json::Value,
    pub state: serde_json::Value,
    /// The encoded breach announcing `state`, until the broker acknowledged it.
    pub unsent: Option<Vec<u8>>,
}

/// The states of a partition's series.
pub async fn load(pool: &PgPool, topic: &str, partition: i32) -> anyhow::Result<Vec<Stored>> {
    Ok(sqlx::query_as(
        "SELECT rule, fingerprint, series, state, unsent FROM rule_states
         WHERE topic = $1 AND partition = $2 ORDER BY fingerprint",
    )
    .bind(topic)
    .bind(partition)
    .fetch_all(pool)
    .await?)
}

/// Writes the states of a partition's series with the breaches announcing them, all or
/// none.
pub async fn save(
    pool: &PgPool,
    topic: &str,
    partition: i32,
    states: &[Stored],
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    for s in states {
        sqlx::query(
            "INSERT INTO rule_states (topic, partition, rule, fingerprint, series, state, unsent)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (topic, partition, fingerprint)
             DO UPDATE SET state = EXCLUDED.state, unsent = EXCLUDED.unsent, updated_at = now()",
        )
        .bind(topic)
        .bind(partition)
        .bind(&s.rule)
        .bind(&s.fingerprint)
        .bind(&s.series)
        .bind(&s.state)
        .bind(&s.unsent)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Forgets the unsent breaches of these fingerprints once the broker acknowledged them,
/// unless a later one replaced them meanwhile (`sent` holds the acknowledged payloads).
pub async fn mark_sent(
    pool: &PgPool,
    topic: &str,
    partition: i32,
    sent: &[(String, Vec<u8>)],
) -> anyhow::Result<()> {
    let (fingerprints, payloads): (Vec<&str>, Vec<&[u8]>) =
        sent.iter().map(|(f, p)| (f.as_str(), p.as_slice())).unzip();
    sqlx::query(
        "UPDATE rule_states r SET unsent = NULL
         FROM UNNEST($3::text[], $4::bytea[]) AS s(fingerprint, payload)
         WHERE r.topic = $1 AND r.partition = $2 AND r.fingerprint = s.fingerprint
           AND r.unsent = s.payload",
    )
    .bind(topic)
    .bind(partition)
    .bind(&fingerprints)
    .bind(&payloads)
    .execute(pool)
    .await?;
    Ok(())
}

/// What the stored states of one rule's series say. A state is written only with a
/// transition, so `last_transition_at` is when the latest of them was stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSummary {
    pub rule: String,
    /// Series that have a stored state (they had a transition at some point).
    pub series: i64,
    pub pending: i64,
    pub firing: i64,
    pub last_transition_at: DateTime<Utc>,
}

/// Per rule, its series with a state among the partitions of samples topic `topic`.
pub async fn summaries(pool: &PgPool, topic: &str) -> anyhow::Result<Vec<RuleSummary>> {
    let rows: Vec<(String, i64, i64, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT rule, count(*),
                count(*) FILTER (WHERE state->>'phase' = 'pending'),
                count(*) FILTER (WHERE state->>'phase' = 'firing'),
                max(updated_at)
         FROM rule_states WHERE topic = $1 GROUP BY rule ORDER BY rule",
    )
    .bind(topic)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(rule, series, pending, firing, last_transition_at)| RuleSummary {
                rule,
                series,
                pending,
                firing,
                last_transition_at,
            },
        )
        .collect())
}

/// One aggregator's latest evaluation of one rule.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Evaluation {
    pub rule: String,
    pub owner: String,
    pub at: DateTime<Utc>,
    pub series: i32,
    pub frozen: i32,
    pub error: Option<String>,
}

/// Records `owner`'s evaluations of the rules (the latest per rule replaces the one
/// before), and forgets those of rules no longer evaluated.
pub async fn record_evaluations(
    pool: &PgPool,
    topic: &str,
    owner: &str,
    evaluations: &[Evaluation],
) -> anyhow::Result<()> {
    let rules: Vec<&str> = evaluations.iter().map(|e| e.rule.as_str()).collect();
    let at: Vec<DateTime<Utc>> = evaluations.iter().map(|e| e.at).collect();
    let series: Vec<i32> = evaluations.iter().map(|e| e.series).collect();
    let frozen: Vec<i32> = evaluations.iter().map(|e| e.frozen).collect();
    let errors: Vec<Option<&str>> = evaluations.iter().map(|e| e.error.as_deref()).collect();
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM rule_evaluations WHERE topic = $1 AND owner = $2 AND rule <> ALL($3)")
        .bind(topic)
        .bind(owner)
        .bind(&rules)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO rule_evaluations (topic, owner, rule, evaluated_at, series, frozen, error)
         SELECT $1, $2, * FROM UNNEST($3::text[], $4::timestamptz[], $5::int[], $6::int[], $7::text[])
         ON CONFLICT (topic, rule, owner) DO UPDATE SET evaluated_at = EXCLUDED.evaluated_at,
             series = EXCLUDED.series, frozen = EXCLUDED.frozen, error = EXCLUDED.error",
    )
    .bind(topic)
    .bind(owner)
    .bind(&rules)
    .bind(&at)
    .bind(&series)
    .bind(&frozen)
    .bind(&errors)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Every aggregator's latest evaluation of each rule, by rule then owner.
pub async fn evaluations(pool: &PgPool, topic: &str) -> anyhow::Result<Vec<Evaluation>> {
    Ok(sqlx::query_as(
        "SELECT rule, owner, evaluated_at AS at, series, frozen, error FROM rule_evaluations
         WHERE topic = $1 ORDER BY rule, owner",
    )
    .bind(topic)
    .fetch_all(pool)
    .await?)
}
