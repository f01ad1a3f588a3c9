//! Test support: a fresh database and topic prefix per test, the tidemark binary's roles
//! as child processes on free ports, a reader of a topic's batches, and generated
//! samples with their exact expected statistics; the API in process ([`api`]).

pub mod api;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use sqlx::PgPool;
use tidemark_schemas::SampleBatch;

pub fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The external broker started by `scripts/test.sh`; black-box tests need it.
pub fn external_brokers() -> String {
    std::env::var("TIDEMARK_TEST_BROKERS").expect("TIDEMARK_TEST_BROKERS is not set: run the suite with ./scripts/test.sh, which starts a tansu broker")
}

pub fn redis_url() -> String {
    env("TIDEMARK_TEST_REDIS_URL", "redis://127.0.0.1:6379")
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Creates an empty database and returns its URL and a pool on it, migrated.
pub async fn fresh_database() -> (String, PgPool) {
    tidemark_store::db::fresh_test_database().await
}

/// A free loopback address for a role to listen on, from ports 20000–32767. Those lie
/// below the kernel's ephemeral range (32768 and up), which `bind(0)` draws from: a port
/// found that way can be handed to a test running beside this one before the role binds
/// it, and the role's readiness probe then reaches the other test's process.
pub fn free_addr() -> SocketAddr {
    use std::hash::BuildHasher;
    loop {
        let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
        let port = 20_000 + (random % 12_768) as u16;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().unwrap();
        }
    }
}

/// A role running as a child process; killed when dropped.
pub struct RoleProcess {
    child: Child,
}

impl RoleProcess {
    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks for a graceful stop (SIGTERM) and waits for the exit status.
    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        self.child.wait().expect("wait for the child")
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// Topics with several partitions, for tests of routing and of aggregators sharing
/// them (Tidemark's default is one).
pub const SEVERAL_PARTITIONS: (&str, &str) = ("TIDEMARK_PARTITIONS", "6");

/// Ingest, aggregator and API of one deployment as separate processes on the external
/// broker, with their own database, topic prefix and ports.
pub struct Pipeline {
    pub env: Vec<(String, String)>,
    pub ingest: SocketAddr,
    pub api: SocketAddr,
    pub aggregator: SocketAddr,
    pub token: String,
    pub pool: PgPool,
    pub prefix: String,
    pub brokers: String,
    /// Where the processes of this test write their logs.
    pub log_dir: std::path::PathBuf,
}

impl Pipeline {
    /// Roles on the external broker.
    pub async fn new(extra_env: &[(&str, &str)]) -> Self {
        Self::build(Some(external_brokers()), extra_env).await
    }

    /// Roles on a broker of the test's own.
    pub async fn on_brokers(brokers: &str, extra_env: &[(&str, &str)]) -> Self {
        Self::build(Some(brokers.to_owned()), extra_env).await
    }

    /// `standalone` with its embedded broker.
    pub async fn embedded() -> Self {
        Self::build(None, &[]).await
    }

    async fn build(brokers: Option<String>, extra_env: &[(&str, &str)]) -> Self {
        let (db_url, pool) = fresh_database().await;
        let prefix = unique("it");
        let log_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("logs")
            .join(&prefix);
        std::fs::create_dir_all(&log_dir).unwrap();
        println!("logs of this test's processes: {}", log_dir.display());
        let (ingest, api, aggregator) = (free_addr(), free_addr(), free_addr());
        let mut env: Vec<(String, String)> = [
            ("TIDEMARK_DATABASE_URL", db_url),
            ("TIDEMARK_REDIS_URL", redis_url()),
            ("TIDEMARK_TOPIC_PREFIX", prefix.clone()),
            ("TIDEMARK_INGEST_ADDR", ingest.to_string()),
            ("TIDEMARK_API_ADDR", api.to_string()),
            ("TIDEMARK_AGGREGATOR_ADDR", aggregator.to_string()),
            ("TIDEMARK_FLUSH_INTERVAL", "200ms".to_owned()),
            ("TIDEMARK_LOG", "warn".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(
            brokers
                .iter()
                .map(|b| ("TIDEMARK_KAFKA_BROKERS".to_owned(), b.clone())),
        );
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let token =
            tidemark_runtime::auth::create_key(&pool, tidemark_runtime::auth::Role::Admin, "it")
                .await
                .unwrap();
        Self {
            env,
            ingest,
            api,
            aggregator,
            token,
            pool,
            prefix,
            brokers: brokers.unwrap_or_default(),
            log_dir,
        }
    }

    /// Starts a role on its default address and waits until its `/readyz` answers 200.
    pub async fn start(&self, role: &'static str) -> RoleProcess {
        let addr = match role {
            "ingest" | "standalone" => self.ingest,
            "api" => self.api,
            "aggregator" => self.aggregator,
            other => panic!("no address for {other}"),
        };
        self.start_at(role, addr).await
    }

    /// Starts another instance of a role listening on `addr`.
    pub async fn start_at(&self, role: &'static str, addr: SocketAddr) -> RoleProcess {
        let addr_var = match role {
            "ingest" | "standalone" => "TIDEMARK_INGEST_ADDR",
            "api" => "TIDEMARK_API_ADDR",
            "aggregator" => "TIDEMARK_AGGREGATOR_ADDR",
            "alerter" => "TIDEMARK_ALERTER_ADDR",
            other => panic!("no address for {other}"),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .arg(role)
            .env_remove("TIDEMARK_KAFKA_BROKERS")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(addr_var, addr.to_string())
            .stdin(Stdio::null())
            .stderr(log_file(&self.log_dir, role, addr))
            .spawn()
            .expect("spawn tidemark");
        let mut process = RoleProcess { child };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // Exit first: a role that could not bind must not pass for ready because
            // some other process answers on its address.
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("{role} exited at start with {status}");
            }
            if let Ok(r) = client.get(format!("http://{addr}/readyz")).send().await {
                if r.status().is_success() {
                    return process;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{role} on {addr} did not become ready within 60s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn log_file(dir: &std::path::Path, role: &str, addr: SocketAddr) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{role}-{}.log", addr.port())))
        .expect("log file")
}

/// Every message on every partition of `topic` (partition, offset, payload), read from
/// the start to the end: until each
/// partition reached its reported high watermark and nothing more arrived for 2 s (tansu
/// 0.6.0 under-reports the high watermark when one produce request carried several
/// records for a partition, so the watermark alone cannot say where the end is).
pub fn read_messages(brokers: &str, topic: &str) -> Vec<(i32, i64, Vec<u8>)> {
    let consumer: BaseConsumer = tidemark_runtime::kafka::client_config(brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    let mut tpl = TopicPartitionList::new();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        tpl.add_partition_offset(topic, p, Offset::Offset(low))
            .unwrap();
        if high > low {
            remaining.insert(p, high);
        }
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Instant::now();
    while !remaining.is_empty() || last.elapsed() < Duration::from_secs(2) {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        if let Some(msg) = consumer.poll(Duration::from_millis(200)) {
            let msg = msg.unwrap();
            last = Instant::now();
            out.push((
                msg.partition(),
                msg.offset(),
                msg.payload().unwrap_or_default().to_vec(),
            ));
            if remaining
                .get(&msg.partition())
                .is_some_and(|&high| msg.offset() + 1 >= high)
            {
                remaining.remove(&msg.partition());
            }
        }
    }
    out
}

/// Every batch on every partition of `topic`, read as [`read_messages`] does.
pub fn read_topic(brokers: &str, topic: &str) -> Vec<(i32, SampleBatch)> {
    read_messages(brokers, topic)
        .into_iter()
        .map(|(p, _, payload)| (p, tidemark_schemas::decode_sample_batch(&payload).unwrap()))
        .collect()
}

/// Series key as the tests see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub service: String,
    pub metric: String,
    pub tags: BTreeMap<String, String>,
}

/// Exact statistics of what was sent, per series and hour.
#[derive(Debug, Default, Clone)]
pub struct Expected {
    /// `(value, count, error)` observations.
    pub observations: Vec<(f64, u64, bool)>,
}

impl Expected {
    pub fn count(&self) -> u64 {
        self.observations.iter().map(|o| o.1).sum()
    }
    pub fn errors(&self) -> u64 {
        self.observations.iter().filter(|o| o.2).map(|o| o.1).sum()
    }
    pub fn sum(&self) -> f64 {
        self.observations.iter().map(|o| o.0 * o.1 as f64).sum()
    }
    pub fn min(&self) -> f64 {
        self.observations
            .iter()
            .map(|o| o.0)
            .fold(f64::INFINITY, f64::min)
    }
    pub fn max(&self) -> f64 {
        self.observations
            .iter()
            .map(|o| o.0)
            .fold(f64::NEG_INFINITY, f64::max)
    }
    /// The weighted nearest-rank q-quantile, the definition the sketch approximates.
    pub fn quantile(&self, q: f64) -> f64 {
        let mut sorted: Vec<(f64, u64)> = self.observations.iter().map(|o| (o.0, o.1)).collect();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let rank = tidemark_sketch::nearest_rank(q, self.count());
        let mut seen = 0;
        for (v, c) in sorted {
            seen += c;
            if seen > rank {
                return v;
            }
        }
        unreachable!("rank below the total count")
    }
}

pub type Tally = BTreeMap<(SeriesKey, i64), Expected>;

/// How many samples (weighted by `count`) a tally holds.
pub fn total(tally: &Tally) -> u64 {
    tally.values().map(Expected::count).sum()
}

/// Adds `from`'s observations to `into`.
pub fn merge(into: &mut Tally, from: Tally) {
    for (k, e) in from {
        into.entry(k)
            .or_default()
            .observations
            .extend(e.observations);
    }
}

/// Generates `n` samples over `services` services, 2 metrics, 2 tag values and the 3 UTC
/// hours ending with the hour of `now_ms` (never later than `now_ms`), as request bodies
/// of 100 with the tally of each. Values are whole milliseconds, so sums are exact.
pub fn generate_requests(seed: u64, n: usize, services: usize, now_ms: i64) -> Vec<(Value, Tally)> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let current = tidemark_model::bucket::hour_start(now_ms);
    let hour_ms = tidemark_model::bucket::HOUR_MS;
    let mut requests = Vec::new();
    let mut left = n;
    while left > 0 {
        let size = left.min(100);
        left -= size;
        let mut tally = Tally::new();
        let mut samples = Vec::with_capacity(size);
        for _ in 0..size {
            let key = SeriesKey {
                service: format!("svc-{}", rng.gen_range(0..services)),
                metric: ["http.server.duration", "db.query.duration"][rng.gen_range(0..2)]
                    .to_owned(),
                tags: BTreeMap::from([(
                    "region".to_owned(),
                    ["eu", "us"][rng.gen_range(0..2)].to_owned(),
                )]),
            };
            let hour = current - hour_ms * rng.gen_range(0..3);
            let latest = if hour == current {
                now_ms
            } else {
                hour + hour_ms - 1
            };
            let ts = rng.gen_range(hour..=latest);
            // A long-tailed latency: mostly 1–200 ms, sometimes up to 5 s.
            let value = if rng.gen_bool(0.05) {
                rng.gen_range(200..5000)
            } else {
                rng.gen_range(1..200)
            } as f64;
            let count: u64 = if rng.gen_bool(0.1) { 3 } else { 1 };
            let error = rng.gen_bool(0.07);
            samples.push(json!({
                "service": key.service, "metric": key.metric, "value": value, "count": count,
                "error": error, "timestamp": ts, "tags": key.tags,
            }));
            tally
                .entry((key, hour))
                .or_default()
                .observations
                .push((value, count, error));
        }
        requests.push((Value::Array(samples), tally));
    }
    requests
}

/// [`generate_requests`] as bodies and one tally of them all.
pub fn generate(seed: u64, n: usize, services: usize, now_ms: i64) -> (Vec<Value>, Tally) {
    let mut all = Tally::new();
    let bodies = generate_requests(seed, n, services, now_ms)
        .into_iter()
        .map(|(body, tally)| {
            merge(&mut all, tally);
            body
        })
        .collect();
    (bodies, all)
}

/// Posts every body with `concurrency` requests in flight; returns how many samples were
/// acknowledged and the status of each request.
pub async fn push(
    ingest: SocketAddr,
    token: &str,
    bodies: Vec<Value>,
    concurrency: usize,
) -> Vec<(usize, u16)> {
    use futures::stream::{self, StreamExt};
    let client = reqwest::Client::new();
    stream::iter(bodies)
        .map(|body| {
            let client = client.clone();
            async move {
                let n = body.as_array().map_or(0, Vec::len);
                let status = client
                    .post(format!("http://{ingest}/v1/samples"))
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                (n, status)
            }
        })
        .buffered(concurrency)
        .collect()
        .await
}

/// GETs `url` with the bearer `token` and parses the JSON answer.
pub async fn get_json(url: &str, token: &str) -> Value {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Reads every series of the tally back through the API and compares exactly (and the
/// quantiles within the sketch's 1 %). Returns the total count the API reported.
pub async fn assert_api_matches(api: SocketAddr, token: &str, tally: &Tally) -> u64 {
    let mut by_series: BTreeMap<&SeriesKey, BTreeMap<i64, &Expected>> = BTreeMap::new();
    for ((key, hour), e) in tally {
        by_series.entry(key).or_default().insert(*hour, e);
    }
    let from = tally.keys().map(|k| k.1).min().unwrap();
    let mut total = 0;
    for (key, hours) in by_series {
        let tags: Vec<String> = key.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let query = [
            ("service", key.service.as_str()),
            ("metric", key.metric.as_str()),
            ("tags", &tags.join(",")),
            ("from", &from.to_string()),
        ];
        let url =
            reqwest::Url::parse_with_params(&format!("http://{api}/v1/series"), &query).unwrap();
        let body = get_json(url.as_str(), token).await;
        let series = body["series"].as_array().unwrap();
        assert_eq!(series.len(), 1, "one series for {key:?}: {body}");
        let buckets = series[0]["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), hours.len(), "hours of {key:?}");
        for b in buckets {
            let hour = b["start_ms"].as_i64().unwrap();
            let e = hours[&hour];
            let what = format!("{key:?} hour {hour}");
            assert_eq!(b["count"].as_u64().unwrap(), e.count(), "count of {what}");
            assert_eq!(
                b["error_count"].as_u64().unwrap(),
                e.errors(),
                "error_count of {what}"
            );
            assert_eq!(b["sum"].as_f64().unwrap(), e.sum(), "sum of {what}");
            assert_eq!(b["min"].as_f64().unwrap(), e.min(), "min of {what}");
            assert_eq!(b["max"].as_f64().unwrap(), e.max(), "max of {what}");
            for (name, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)] {
                let got = b[name].as_f64().unwrap();
                let exact = e.quantile(q);
                let rel = (got - exact).abs() / exact.abs();
                assert!(
                    rel <= tidemark_sketch::RELATIVE_ACCURACY + 1e-9,
                    "{name} of {what}: got {got}, exact {exact}"
                );
            }
            total += e.count();
        }
    }
    total
}

/// Total count stored in Postgres.
pub async fn stored_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar::<_, Option<i64>>("SELECT sum(count)::bigint FROM buckets")
        .fetch_one(pool)
        .await
        .unwrap()
        .unwrap_or(0)
}

/// Waits until Postgres holds `expected` samples (or fails after a generous deadline).
pub async fn wait_stored(pool: &PgPool, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stored = stored_count(pool).await;
        if stored == expected {
            return;
        }
        assert!(
            stored < expected,
            "stored {stored} > acknowledged {expected}: double counting"
        );
        assert!(
            Instant::now() < deadline,
            "only {stored} of {expected} samples stored after 120s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What Postgres holds for one series and hour.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub count: u64,
    pub errors: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub sketch_count: u64,
}

/// Every stored bucket, keyed like a [`Tally`].
pub async fn stored_buckets(pool: &PgPool) -> BTreeMap<(SeriesKey, i64), Stored> {
    use sqlx::Row;
    let rows = sqlx::query(&format!(
        "SELECT s.service, s.metric, s.tags::text, (extract(epoch FROM b.hour) * 1000)::bigint, {} \
         FROM buckets b JOIN series s ON s.id = b.series_id",
        tidemark_store::db::BUCKET_COLUMNS
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            let key = SeriesKey {
                service: r.get(0),
                metric: r.get(1),
                tags: serde_json::from_str(r.get::<&str, _>(2)).unwrap(),
            };
            let b = tidemark_store::db::bucket_from_row(r, 4).unwrap();
            let stored = Stored {
                count: b.count,
                errors: b.error_count,
                sum: b.sum,
                min: b.min,
                max: b.max,
                sketch_count: b.sketch.count(),
            };
            ((key, r.get(3)), stored)
        })
        .collect()
}

/// Compares Postgres with what was acknowledged; returns `(lost, duplicated)` samples and
/// a description of the first mismatch of any other statistic.
pub async fn compare_stored(pool: &PgPool, tally: &Tally) -> (u64, u64, Option<String>) {
    let stored = stored_buckets(pool).await;
    let (mut lost, mut duplicated, mut other) = (0, 0, None);
    for (key, e) in tally {
        let s = stored.get(key);
        let count = s.map_or(0, |s| s.count);
        lost += e.count().saturating_sub(count);
        duplicated += count.saturating_sub(e.count());
        if let Some(s) = s {
            let want = Stored {
                count: e.count(),
                errors: e.errors(),
                sum: e.sum(),
                min: e.min(),
                max: e.max(),
                sketch_count: e.count(),
            };
            if *s != want && other.is_none() {
                other = Some(format!("{key:?}: stored {s:?}, acknowledged {want:?}"));
            }
        }
    }
    for (key, s) in &stored {
        if !tally.contains_key(key) {
            duplicated += s.count;
        }
    }
    (lost, duplicated, other)
}
