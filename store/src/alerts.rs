//! The alert lifecycle's storage (tables of `migrations/0006_alerts.sql`): one alert per
//! episode of a fingerprint (rule × series), its transitions, the feed outbox, and the
//! alerter's consumed offsets of the breaches topic.
//!
//! [`apply_breach`] is the alerter's exactly-once step: in one [`Tx`] it advances the
//! partition's offset (or finds the message already applied), drops a breach whose seq
//! its fingerprint already had, opens, advances or closes the episode, and records the
//! transition with its feed row ([`feed`]). The offset row is upserted first, so it
//! row-locks the partition: two alerters can never both apply a message.
//!
//! A breach moves its fingerprint's open alert to its state (`ok` resolves it). A
//! pending or firing breach of a later episode (`active_since` after the open alert's
//! start) first resolves the open one as `superseded`: its ok was never seen. An ok
//! breach with no open alert changes nothing.
//!
//! An open alert is suppressed while an active silence ([`crate::silences`]) matches its
//! labels ([`Alert::silenced_by`]), or while a firing alert inhibits it
//! ([`Alert::inhibited_by`], by [`tidemark_rules::inhibit`]: the built-in rules and the
//! rules file's, which the caller passes, as the store has no rules file). As in
//! Alertmanager, a pending alert can be inhibited as well as a firing one, but only a
//! firing alert inhibits. Both are computed whenever an alert is read or changed (a
//! silence starts and ends, and another alert fires and resolves, with no breach of
//! this one), against the silences active on the process's clock and the alerts firing
//! then, fetched once per read or per applied breach.

pub mod feed;
pub mod lock;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use serde_json::{json, Value};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Row};
use tidemark_model::time::format_instant;
use tidemark_schemas::{Breach, BreachState};

use tidemark_rules::inhibit::{self, InhibitRule};
use tidemark_rules::silence::Silence;

use crate::buckets::{FlushError, StoredOffset, Tx};
use crate::silences;

/// Where an alert is in its episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    Pending,
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }

    /// The state a breach moves its alert to.
    fn of(breach: BreachState) -> Self {
        match breach {
            BreachState::Ok => Self::Resolved,
            BreachState::Pending => Self::Pending,
            BreachState::Firing => Self::Firing,
        }
    }
}

impl fmt::Display for AlertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AlertState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "firing" => Ok(Self::Firing),
            "resolved" => Ok(Self::Resolved),
            _ => Err("use pending, firing or resolved".to_owned()),
        }
    }
}

/// One episode of a fingerprint, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub id: i64,
    pub fingerprint: String,
    pub rule: String,
    pub service: String,
    pub metric: String,
    pub tags: BTreeMap<String, String>,
    pub state: AlertState,
    pub severity: String,
    pub value: Option<f64>,
    pub threshold: f64,
    pub op: String,
    pub stat: String,
    pub window_ms: i64,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub started_at_ms: i64,
    pub fired_at_ms: Option<i64>,
    pub resolved_at_ms: Option<i64>,
    pub resolve_reason: Option<String>,
    pub acknowledged_at_ms: Option<i64>,
    pub acknowledged_by: Option<String>,
    /// Its latest transition's seq (transitions are numbered from 1 per alert).
    pub seq: i64,
    pub updated_at_ms: i64,
    /// The active silences matching it while it is open, by id; empty once resolved.
    pub silenced_by: Vec<i64>,
    /// The firing alerts inhibiting it while it is open, by id; empty once resolved.
    pub inhibited_by: Vec<i64>,
}

/// One change of an alert: a breach applied, or an acknowledgement.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub seq: i64,
    /// The breach's seq; `None` for an acknowledgement.
    pub breach_seq: Option<i64>,
    /// The alert's state after the change.
    pub state: AlertState,
    /// The breach's reason (breached, escalated, recovered, missing_series,
    /// maintenance), `superseded`, or `acknowledged`.
    pub reason: String,
    pub severity: String,
    pub value: Option<f64>,
    pub threshold: f64,
    pub at_ms: i64,
    pub schedule: Option<String>,
    /// Who acknowledged.
    pub actor: Option<String>,
}

fn instant(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| format_instant(ms).into())
}

impl Alert {
    /// The alert as the API shows it and the feed carries it (instants in RFC 3339).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "fingerprint": self.fingerprint,
            "rule": self.rule,
            "service": self.service,
            "metric": self.metric,
            "tags": self.tags,
            "state": self.state.as_str(),
            "severity": self.severity,
            "value": self.value,
            "threshold": self.threshold,
            "op": self.op,
            "stat": self.stat,
            "window_ms": self.window_ms,
            "labels": self.labels,
            "annotations": self.annotations,
            "started_at": format_instant(self.started_at_ms),
            "fired_at": instant(self.fired_at_ms),
            "resolved_at": instant(self.resolved_at_ms),
            "resolve_reason": self.resolve_reason,
            "acknowledged_at": instant(self.acknowledged_at_ms),
            "acknowledged_by": self.acknowledged_by,
            "seq": self.seq,
            "updated_at": format_instant(self.updated_at_ms),
            "silenced_by": self.silenced_by,
            "inhibited_by": self.inhibited_by,
        })
    }

    /// The labels silences, inhibition and routes match ([`tidemark_rules::labels::of`]).
    pub fn match_labels(&self) -> BTreeMap<String, String> {
        tidemark_rules::labels::of(
            &self.rule,
            &self.service,
            &self.metric,
            &self.severity,
            &self.tags,
            &self.labels,
        )
    }

    /// Sets [`Self::silenced_by`] and [`Self::inhibited_by`] from what suppresses now.
    fn mark(&mut self, now: &Suppressions, inhibit: &[InhibitRule]) {
        self.silenced_by.clear();
        self.inhibited_by.clear();
        if self.state == AlertState::Resolved {
            return;
        }
        let labels = self.match_labels();
        self.silenced_by = now
            .silences
            .iter()
            .filter(|s| s.matches(&labels))
            .map(|s| s.id)
            .collect();
        let firing = now.firing.iter().map(|(id, labels)| (*id, labels));
        self.inhibited_by = inhibit::inhibited_by(&self.id, &labels, firing, inhibit);
    }
}

/// What may suppress an open alert now: the active silences, and the firing alerts by
/// id with their labels.
struct Suppressions {
    silences: Vec<Silence>,
    firing: Vec<(i64, BTreeMap<String, String>)>,
}

/// Marks `alerts` with the silences active now and the alerts firing now, inhibiting by
/// the built-in rules and `inhibit`.
async fn mark_all(
    db: &mut PgConnection,
    alerts: &mut [Alert],
    inhibit: &[InhibitRule],
) -> sqlx::Result<()> {
    let silences = silences::active(&mut *db, now_ms()).await?;
    let rows = sqlx::query(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE state = 'firing'"
    ))
    .fetch_all(&mut *db)
    .await?;
    let firing = rows
        .iter()
        .map(|r| alert_from_row(r).map(|a| (a.id, a.match_labels())))
        .collect::<sqlx::Result<_>>()?;
    let now = Suppressions { silences, firing };
    for alert in alerts {
        alert.mark(&now, inhibit);
    }
    Ok(())
}

/// The process's clock, against which silences are active.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Transition {
    /// The transition as the API shows it and the feed carries it.
    pub fn to_json(&self) -> Value {
        json!({
            "seq": self.seq,
            "breach_seq": self.breach_seq,
            "state": self.state.as_str(),
            "reason": self.reason,
            "severity": self.severity,
            "value": self.value,
            "threshold": self.threshold,
            "at": format_instant(self.at_ms),
            "schedule": self.schedule,
            "actor": self.actor,
        })
    }
}

/// A message of the breaches topic: where the alerter read it.
#[derive(Debug, Clone, Copy)]
pub struct Position<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub cluster_id: &'a str,
}

/// What [`apply_breach`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The message's offset was applied before (by this alerter or another).
    AlreadyApplied,
    /// Its fingerprint already had a breach of this seq or a later one.
    Repeat,
    /// An ok breach with no open alert: nothing to resolve.
    NoAlert,
    /// The alert changed (and, if superseded, the one before it was resolved).
    Changed { alert_id: i64 },
}

impl Applied {
    /// The outcome as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::AlreadyApplied => "already_applied",
            Self::Repeat => "repeat",
            Self::NoAlert => "no_alert",
            Self::Changed { .. } => "applied",
        }
    }
}

/// What a breach does, given the start of its fingerprint's open alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Ignore,
    Open(AlertState),
    Move(AlertState),
    /// Resolve the open alert as superseded, then open another in this state.
    Replace(AlertState),
}

fn plan(open_since_ms: Option<i64>, breach: &Breach) -> Plan {
    let to = AlertState::of(breach.state);
    match open_since_ms {
        None if to == AlertState::Resolved => Plan::Ignore,
        None => Plan::Open(to),
        Some(since) if to != AlertState::Resolved && breach.active_since > since => {
            Plan::Replace(to)
        }
        Some(_) => Plan::Move(to),
    }
}

/// Applies the breach read at `pos`, with its offset, in `tx` (see the module doc); the
/// feed row carries the alert suppressed by silences and by `inhibit` (a rules file's).
pub async fn apply_breach(
    tx: &mut Tx,
    breach: &Breach,
    pos: &Position<'_>,
    inhibit: &[InhibitRule],
) -> Result<Applied, FlushError> {
    if !skip(tx, pos).await? {
        return Ok(Applied::AlreadyApplied);
    }
    if !remember_seq(tx, breach).await? {
        return Ok(Applied::Repeat);
    }
    let open = lock_open(tx, &breach.fingerprint).await?;
    let change = Change {
        reason: &breach.reason,
        at_ms: breach.at,
        breach_seq: Some(breach.seq),
        schedule: breach.schedule.as_deref(),
        actor: None,
    };
    let mut alert = match (plan(open.map(|(_, since)| since), breach), open) {
        (Plan::Ignore, _) => return Ok(Applied::NoAlert),
        (Plan::Open(state), _) => insert(tx, breach, state).await?,
        (Plan::Move(state), Some((id, _))) => update(tx, id, breach, state).await?,
        (Plan::Replace(state), Some((id, _))) => {
            let closed = supersede(tx, id, breach.active_since).await?;
            let superseded = Change {
                reason: "superseded",
                at_ms: breach.active_since,
                schedule: None,
                ..change
            };
            record(tx, &closed, &superseded).await?;
            insert(tx, breach, state).await?
        }
        (Plan::Move(_) | Plan::Replace(_), None) => unreachable!("planned from an open alert"),
    };
    mark_all(&mut tx.0, std::slice::from_mut(&mut alert), inhibit).await?;
    record(tx, &alert, &change).await?;
    Ok(Applied::Changed { alert_id: alert.id })
}

/// Advances the partition's offset past `pos` without applying anything (a message
/// that cannot be applied); false when it was applied before. [`apply_breach`] starts
/// with it.
pub async fn skip(tx: &mut Tx, pos: &Position<'_>) -> Result<bool, FlushError> {
    let done = sqlx::query(
        "INSERT INTO alerter_offsets (topic, partition, next_offset, cluster_id) VALUES ($1, $2, $3 + 1, $4) \
         ON CONFLICT (topic, partition) DO UPDATE \
           SET next_offset = EXCLUDED.next_offset, cluster_id = EXCLUDED.cluster_id, updated_at = now() \
           WHERE alerter_offsets.next_offset <= $3 OR alerter_offsets.cluster_id <> EXCLUDED.cluster_id",
    )
    .bind(pos.topic)
    .bind(pos.partition)
    .bind(pos.offset)
    .bind(pos.cluster_id)
    .execute(&mut *tx.0)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The stored offsets of `topic`'s partitions.
pub async fn load_offsets(
    pool: &PgPool,
    topic: &str,
) -> anyhow::Result<HashMap<i32, StoredOffset>> {
    let rows = sqlx::query(
        "SELECT partition, next_offset, cluster_id FROM alerter_offsets WHERE topic = $1",
    )
    .bind(topic)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(crate::buckets::partition_offset).collect())
}

/// Records the breach as the fingerprint's last; false when it had this one or a later
/// one, ordered by (episode start, seq).
async fn remember_seq(tx: &mut Tx, breach: &Breach) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO alert_fingerprints (fingerprint, last_active_since, last_seq) VALUES ($1, $2, $3) \
         ON CONFLICT (fingerprint) DO UPDATE SET last_active_since = EXCLUDED.last_active_since, \
           last_seq = EXCLUDED.last_seq, updated_at = now() \
           WHERE (alert_fingerprints.last_active_since, alert_fingerprints.last_seq) \
               < (EXCLUDED.last_active_since, EXCLUDED.last_seq)",
    )
    .bind(&breach.fingerprint)
    .bind(breach.active_since)
    .bind(breach.seq)
    .execute(&mut *tx.0)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The fingerprint's open alert, row-locked: its id and start.
async fn lock_open(tx: &mut Tx, fingerprint: &str) -> sqlx::Result<Option<(i64, i64)>> {
    let row = sqlx::query(
        "SELECT id, (extract(epoch FROM started_at) * 1000)::bigint FROM alerts \
         WHERE fingerprint = $1 AND state IN ('pending', 'firing') FOR UPDATE",
    )
    .bind(fingerprint)
    .fetch_optional(&mut *tx.0)
    .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// The columns of an alert row, in the order [`alert_from_row`] reads.
const ALERT_COLUMNS: &str = "id, fingerprint, rule, service, metric, tags, state, severity, value, \
     threshold, op, stat, window_ms, labels, annotations, \
     (extract(epoch FROM started_at) * 1000)::bigint, (extract(epoch FROM fired_at) * 1000)::bigint, \
     (extract(epoch FROM resolved_at) * 1000)::bigint, resolve_reason, \
     (extract(epoch FROM acknowledged_at) * 1000)::bigint, acknowledged_by, last_seq, \
     (extract(epoch FROM updated_at) * 1000)::bigint";

fn state_from(text: &str) -> sqlx::Result<AlertState> {
    text.parse()
        .map_err(|e: String| sqlx::Error::Decode(e.into()))
}

fn alert_from_row(r: &PgRow) -> sqlx::Result<Alert> {
    let map = |i: usize| -> sqlx::Result<BTreeMap<String, String>> {
        Ok(r.try_get::<Json<BTreeMap<String, String>>, _>(i)?.0)
    };
    Ok(Alert {
        id: r.try_get(0)?,
        fingerprint: r.try_get(1)?,
        rule: r.try_get(2)?,
        service: r.try_get(3)?,
        metric: r.try_get(4)?,
        tags: map(5)?,
        state: state_from(r.try_get(6)?)?,
        severity: r.try_get(7)?,
        value: r.try_get(8)?,
        threshold: r.try_get(9)?,
        op: r.try_get(10)?,
        stat: r.try_get(11)?,
        window_ms: r.try_get(12)?,
        labels: map(13)?,
        annotations: map(14)?,
        started_at_ms: r.try_get(15)?,
        fired_at_ms: r.try_get(16)?,
        resolved_at_ms: r.try_get(17)?,
        resolve_reason: r.try_get(18)?,
        acknowledged_at_ms: r.try_get(19)?,
        acknowledged_by: r.try_get(20)?,
        seq: r.try_get(21)?,
        updated_at_ms: r.try_get(22)?,
        silenced_by: Vec::new(),
        inhibited_by: Vec::new(),
    })
}

/// Opens an episode in `state`.
async fn insert(tx: &mut Tx, b: &Breach, state: AlertState) -> sqlx::Result<Alert> {
    let row = sqlx::query(&format!(
        "INSERT INTO alerts (fingerprint, rule, service, metric, tags, state, severity, value, threshold, \
           op, stat, window_ms, labels, annotations, started_at, fired_at, last_seq) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, to_timestamp($15 / 1000.0), \
           CASE WHEN $6 = 'firing' THEN to_timestamp($16 / 1000.0) END, 1) \
         RETURNING {ALERT_COLUMNS}"
    ))
    .bind(&b.fingerprint)
    .bind(&b.rule)
    .bind(&b.series.service)
    .bind(&b.series.metric)
    .bind(Json(&b.series.tags))
    .bind(state.as_str())
    .bind(b.severity.as_str())
    .bind(b.value)
    .bind(b.threshold)
    .bind(&b.op)
    .bind(&b.stat)
    .bind(b.window)
    .bind(Json(&b.labels))
    .bind(Json(&b.annotations))
    .bind(b.active_since)
    .bind(b.at)
    .fetch_one(&mut *tx.0)
    .await?;
    alert_from_row(&row)
}

/// Moves alert `id` to `state` with the breach's values; resolving takes only its value
/// and keeps the severity, threshold, labels and annotations the alert had while open
/// (what on-call saw, not the values of the recovery).
async fn update(tx: &mut Tx, id: i64, b: &Breach, state: AlertState) -> sqlx::Result<Alert> {
    let row = sqlx::query(&format!(
        "UPDATE alerts SET state = $2, value = $4, \
           severity = CASE WHEN $2 = 'resolved' THEN severity ELSE $3 END, \
           threshold = CASE WHEN $2 = 'resolved' THEN threshold ELSE $5 END, \
           labels = CASE WHEN $2 = 'resolved' THEN labels ELSE $6 END, \
           annotations = CASE WHEN $2 = 'resolved' THEN annotations ELSE $7 END, \
           fired_at = CASE WHEN $2 = 'firing' THEN coalesce(fired_at, to_timestamp($8 / 1000.0)) ELSE fired_at END, \
           resolved_at = CASE WHEN $2 = 'resolved' THEN to_timestamp($8 / 1000.0) END, \
           resolve_reason = CASE WHEN $2 = 'resolved' THEN $9 END, \
           last_seq = last_seq + 1, updated_at = now() \
         WHERE id = $1 RETURNING {ALERT_COLUMNS}"
    ))
    .bind(id)
    .bind(state.as_str())
    .bind(b.severity.as_str())
    .bind(b.value)
    .bind(b.threshold)
    .bind(Json(&b.labels))
    .bind(Json(&b.annotations))
    .bind(b.at)
    .bind(&b.reason)
    .fetch_one(&mut *tx.0)
    .await?;
    alert_from_row(&row)
}

/// Resolves alert `id` as superseded by an episode that began at `at_ms`.
async fn supersede(tx: &mut Tx, id: i64, at_ms: i64) -> sqlx::Result<Alert> {
    let row = sqlx::query(&format!(
        "UPDATE alerts SET state = 'resolved', resolved_at = to_timestamp($2 / 1000.0), \
           resolve_reason = 'superseded', last_seq = last_seq + 1, updated_at = now() \
         WHERE id = $1 RETURNING {ALERT_COLUMNS}"
    ))
    .bind(id)
    .bind(at_ms)
    .fetch_one(&mut *tx.0)
    .await?;
    alert_from_row(&row)
}

/// What made an alert change, besides its new values.
#[derive(Debug, Clone, Copy)]
struct Change<'a> {
    reason: &'a str,
    at_ms: i64,
    breach_seq: Option<i64>,
    schedule: Option<&'a str>,
    actor: Option<&'a str>,
}

/// Records `alert`'s latest change (its `seq`) as a transition and a feed row.
async fn record(tx: &mut Tx, alert: &Alert, change: &Change<'_>) -> sqlx::Result<()> {
    let transition = Transition {
        seq: alert.seq,
        breach_seq: change.breach_seq,
        state: alert.state,
        reason: change.reason.to_owned(),
        severity: alert.severity.clone(),
        value: alert.value,
        threshold: alert.threshold,
        at_ms: change.at_ms,
        schedule: change.schedule.map(str::to_owned),
        actor: change.actor.map(str::to_owned),
    };
    sqlx::query(
        "INSERT INTO alert_transitions (alert_id, seq, breach_seq, state, reason, severity, value, \
           threshold, at, schedule, actor) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, to_timestamp($9 / 1000.0), $10, $11)",
    )
    .bind(alert.id)
    .bind(transition.seq)
    .bind(transition.breach_seq)
    .bind(transition.state.as_str())
    .bind(&transition.reason)
    .bind(&transition.severity)
    .bind(transition.value)
    .bind(transition.threshold)
    .bind(transition.at_ms)
    .bind(&transition.schedule)
    .bind(&transition.actor)
    .execute(&mut *tx.0)
    .await?;
    feed::insert(tx, alert, &transition).await
}

/// What [`acknowledge`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack {
    /// Acknowledged now.
    Done(Alert),
    /// Acknowledged before; unchanged.
    Already(Alert),
    /// Resolved: there is nothing to acknowledge.
    Resolved(Alert),
}

/// Acknowledges the open alert `id` for `by`, with a transition and a feed row; `None`
/// when there is no such alert. The alert is marked as [`list`] marks.
pub async fn acknowledge(
    pool: &PgPool,
    id: i64,
    by: &str,
    inhibit: &[InhibitRule],
) -> anyhow::Result<Option<Ack>> {
    let mut tx = Tx::begin(pool).await?;
    let row = sqlx::query(&format!(
        "UPDATE alerts SET acknowledged_at = now(), acknowledged_by = $2, last_seq = last_seq + 1, \
           updated_at = now() \
         WHERE id = $1 AND state IN ('pending', 'firing') AND acknowledged_at IS NULL \
         RETURNING {ALERT_COLUMNS}"
    ))
    .bind(id)
    .bind(by)
    .fetch_optional(&mut *tx.0)
    .await?;
    let Some(row) = row else {
        drop(tx);
        let Some(mut alert) = get_alert(pool, id).await? else {
            return Ok(None);
        };
        mark_all(
            &mut *pool.acquire().await?,
            std::slice::from_mut(&mut alert),
            inhibit,
        )
        .await?;
        return Ok(Some(if alert.state == AlertState::Resolved {
            Ack::Resolved(alert)
        } else {
            Ack::Already(alert)
        }));
    };
    let mut alert = alert_from_row(&row)?;
    mark_all(&mut tx.0, std::slice::from_mut(&mut alert), inhibit).await?;
    let change = Change {
        reason: "acknowledged",
        at_ms: alert.acknowledged_at_ms.unwrap_or(alert.updated_at_ms),
        breach_seq: None,
        schedule: None,
        actor: Some(by),
    };
    record(&mut tx, &alert, &change).await?;
    tx.commit().await?;
    Ok(Some(Ack::Done(alert)))
}

/// Which alerts [`list`] returns.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter<'a> {
    pub state: Option<AlertState>,
    pub service: Option<&'a str>,
    pub rule: Option<&'a str>,
    /// Only alerts open at some instant from this one on (resolved at or after it, or
    /// not resolved).
    pub since_ms: Option<i64>,
    pub limit: i64,
}

/// The alerts `filter` matches, newest first, at most `filter.limit`, marked by the
/// silences and the alerts firing now, inhibiting by the built-in rules and `inhibit`.
pub async fn list(
    pool: &PgPool,
    filter: &AlertFilter<'_>,
    inhibit: &[InhibitRule],
) -> anyhow::Result<Vec<Alert>> {
    let rows = sqlx::query(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts \
         WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR service = $2) \
           AND ($3::text IS NULL OR rule = $3) \
           AND ($4::bigint IS NULL OR coalesce(resolved_at, 'infinity') >= to_timestamp($4 / 1000.0)) \
         ORDER BY id DESC LIMIT $5"
    ))
    .bind(filter.state.map(AlertState::as_str))
    .bind(filter.service)
    .bind(filter.rule)
    .bind(filter.since_ms)
    .bind(filter.limit)
    .fetch_all(pool)
    .await?;
    let mut alerts = rows
        .iter()
        .map(alert_from_row)
        .collect::<sqlx::Result<Vec<_>>>()?;
    mark_all(&mut *pool.acquire().await?, &mut alerts, inhibit).await?;
    Ok(alerts)
}

/// Every open (pending or firing) alert, newest first, marked as [`list`] marks: what a
/// silence is previewed against.
pub async fn open(pool: &PgPool, inhibit: &[InhibitRule]) -> anyhow::Result<Vec<Alert>> {
    let rows = sqlx::query(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE state IN ('pending', 'firing') ORDER BY id DESC"
    ))
    .fetch_all(pool)
    .await?;
    let mut alerts = rows
        .iter()
        .map(alert_from_row)
        .collect::<sqlx::Result<Vec<_>>>()?;
    mark_all(&mut *pool.acquire().await?, &mut alerts, inhibit).await?;
    Ok(alerts)
}

/// How many alerts of one severity fire for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiringCount {
    pub service: String,
    /// `critical`, `warning` or `info`.
    pub severity: String,
    pub count: i64,
}

/// The firing alerts of every service (or of `service`) counted by severity, in one
/// query: what a service's health status reflects. Silenced and inhibited alerts
/// count, as they still fire (silences and inhibition mute notifications).
pub async fn firing_by_service(
    pool: &PgPool,
    service: Option<&str>,
) -> anyhow::Result<Vec<FiringCount>> {
    let rows = sqlx::query(
        "SELECT service, severity, count(*) FROM alerts \
         WHERE state = 'firing' AND ($1::text IS NULL OR service = $1) \
         GROUP BY service, severity ORDER BY service, severity",
    )
    .bind(service)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| FiringCount {
            service: r.get(0),
            severity: r.get(1),
            count: r.get(2),
        })
        .collect())
}

async fn get_alert(pool: &PgPool, id: i64) -> sqlx::Result<Option<Alert>> {
    let row = sqlx::query(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(alert_from_row).transpose()
}

/// Alert `id`, marked as [`list`] marks, with its transitions in order; `None` when
/// there is no such alert.
pub async fn get(
    pool: &PgPool,
    id: i64,
    inhibit: &[InhibitRule],
) -> anyhow::Result<Option<(Alert, Vec<Transition>)>> {
    let Some(mut alert) = get_alert(pool, id).await? else {
        return Ok(None);
    };
    mark_all(
        &mut *pool.acquire().await?,
        std::slice::from_mut(&mut alert),
        inhibit,
    )
    .await?;
    let rows = sqlx::query(
        "SELECT seq, breach_seq, state, reason, severity, value, threshold, \
           (extract(epoch FROM at) * 1000)::bigint, schedule, actor \
         FROM alert_transitions WHERE alert_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let transitions = rows
        .iter()
        .map(|r| {
            Ok(Transition {
                seq: r.try_get(0)?,
                breach_seq: r.try_get(1)?,
                state: state_from(r.try_get(2)?)?,
                reason: r.try_get(3)?,
                severity: r.try_get(4)?,
                value: r.try_get(5)?,
                threshold: r.try_get(6)?,
                at_ms: r.try_get(7)?,
                schedule: r.try_get(8)?,
                actor: r.try_get(9)?,
            })
        })
        .collect::<sqlx::Result<_>>()?;
    Ok(Some((alert, transitions)))
}

/// One rule's alerts: how many are in each state, and how long on-call took.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleStats {
    pub rule: String,
    pub pending: i64,
    pub firing: i64,
    pub resolved: i64,
    pub acknowledged: i64,
    /// Mean seconds from firing to acknowledgement (0 for one acknowledged while still
    /// pending), over the alerts that fired and were acknowledged.
    pub mean_time_to_acknowledge_s: Option<f64>,
    /// Mean seconds from firing to resolution, over the alerts that fired and resolved.
    pub mean_time_to_resolve_s: Option<f64>,
}

impl RuleStats {
    pub fn to_json(&self) -> Value {
        json!({
            "rule": self.rule,
            "pending": self.pending,
            "firing": self.firing,
            "resolved": self.resolved,
            "acknowledged": self.acknowledged,
            "mean_time_to_acknowledge_s": self.mean_time_to_acknowledge_s,
            "mean_time_to_resolve_s": self.mean_time_to_resolve_s,
        })
    }
}

/// Per-rule statistics of the alerts started at or after `since_ms` (all when `None`),
/// by rule name.
pub async fn stats(pool: &PgPool, since_ms: Option<i64>) -> anyhow::Result<Vec<RuleStats>> {
    let rows = sqlx::query(
        "SELECT rule, \
           count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'firing'), \
           count(*) FILTER (WHERE state = 'resolved'), count(acknowledged_at), \
           (avg(greatest(extract(epoch FROM acknowledged_at - fired_at), 0)) \
             FILTER (WHERE acknowledged_at IS NOT NULL AND fired_at IS NOT NULL))::float8, \
           avg(extract(epoch FROM resolved_at - fired_at))::float8 \
         FROM alerts WHERE ($1::bigint IS NULL OR started_at >= to_timestamp($1 / 1000.0)) \
         GROUP BY rule ORDER BY rule",
    )
    .bind(since_ms)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            Ok(RuleStats {
                rule: r.try_get(0)?,
                pending: r.try_get(1)?,
                firing: r.try_get(2)?,
                resolved: r.try_get(3)?,
                acknowledged: r.try_get(4)?,
                mean_time_to_acknowledge_s: r.try_get(5)?,
                mean_time_to_resolve_s: r.try_get(6)?,
            })
        })
        .collect::<sqlx::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_schemas::{Series, Severity};

    fn breach(state: BreachState, active_since: i64) -> Breach {
        Breach {
            rule: "r".into(),
            fingerprint: "f".into(),
            series: Series {
                service: "s".into(),
                metric: "m".into(),
                tags: BTreeMap::new(),
            },
            state,
            reason: "breached".into(),
            severity: Severity::Warning,
            value: Some(1.0),
            threshold: 0.5,
            op: ">".into(),
            stat: "p95".into(),
            window: 60_000,
            at: active_since,
            active_since,
            seq: 1,
            schedule: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn a_breach_opens_moves_or_replaces_the_open_alert() {
        use AlertState::*;
        use BreachState as B;
        let cases = [
            (None, B::Pending, 10, Plan::Open(Pending)),
            (None, B::Firing, 10, Plan::Open(Firing)),
            (None, B::Ok, 10, Plan::Ignore),
            (Some(10), B::Firing, 10, Plan::Move(Firing)),
            (Some(10), B::Pending, 10, Plan::Move(Pending)),
            (Some(10), B::Ok, 10, Plan::Move(Resolved)),
            // The ok of the open episode was never seen.
            (Some(10), B::Pending, 20, Plan::Replace(Pending)),
            (Some(10), B::Firing, 20, Plan::Replace(Firing)),
            // An ok resolves whatever is open.
            (Some(10), B::Ok, 20, Plan::Move(Resolved)),
        ];
        for (open, state, since, want) in cases {
            assert_eq!(
                plan(open, &breach(state, since)),
                want,
                "{open:?} {state:?} {since}"
            );
        }
    }

    #[test]
    fn states_read_back_what_they_write() {
        for s in [
            AlertState::Pending,
            AlertState::Firing,
            AlertState::Resolved,
        ] {
            assert_eq!(s.as_str().parse::<AlertState>(), Ok(s));
        }
        assert!("ok".parse::<AlertState>().is_err());
    }
}
