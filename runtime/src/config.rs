//! Layered configuration: embedded defaults, then an optional `tidemark.toml`, then
//! `TIDEMARK_*` environment variables. A bad value stops start-up with a message naming
//! the variable.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

pub use tidemark_model::secret::Secret;
use tidemark_model::time::parse_duration;

pub const DEFAULT_INGEST_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:8081";
pub const DEFAULT_AGGREGATOR_ADDR: &str = "127.0.0.1:8082";
pub const DEFAULT_ALERTER_ADDR: &str = "127.0.0.1:8083";

/// Every key with its default value; `None` means "unset unless configured".
/// The environment variable of a key is `TIDEMARK_<KEY in upper case>`.
const DEFAULTS: &[(&str, Option<&str>)] = &[
    ("kafka_brokers", None),
    (
        "database_url",
        Some("postgres://postgres@127.0.0.1:5432/tidemark"),
    ),
    ("redis_url", Some("redis://127.0.0.1:6379")),
    ("ingest_addr", Some(DEFAULT_INGEST_ADDR)),
    ("api_addr", Some(DEFAULT_API_ADDR)),
    ("aggregator_addr", Some(DEFAULT_AGGREGATOR_ADDR)),
    ("alerter_addr", Some(DEFAULT_ALERTER_ADDR)),
    ("rules", None),
    ("topic_prefix", Some("tidemark")),
    ("metrics_token", None),
    ("status_page_public", Some("false")),
    ("log", Some("info")),
    ("partitions", Some("1")),
    ("linger", Some("0ms")),
    ("ack_timeout", Some("5s")),
    ("max_body_bytes", Some("1048576")),
    ("max_decompressed_bytes", Some("16777216")),
    ("max_sample_age", Some("7d")),
    ("max_sample_future", Some("5m")),
    ("max_series_per_service", Some("1000")),
    ("flush_interval", Some("3s")),
    ("db_max_connections", Some("10")),
    ("lease_ttl", Some("6s")),
    ("instance_id", None),
    ("latency_metric", Some("http.server.duration")),
    ("idempotency_retention", Some("24h")),
    ("max_inflight_samples", Some("200000")),
    ("header_read_timeout", Some("10s")),
    ("idle_timeout", Some("60s")),
    ("max_connections", None),
    ("shutdown_timeout", Some("10s")),
];

/// The environment variables Tidemark reads (the contract of SPEC §7 plus tuning knobs),
/// one per key of the defaults, in their order.
pub fn env_vars() -> Vec<String> {
    DEFAULTS.iter().map(|(k, _)| env_name(k)).collect()
}

/// Topic names derived from `TIDEMARK_TOPIC_PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub prefix: String,
    pub samples: String,
    pub breaches: String,
    pub alerts: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            samples: format!("{prefix}.samples"),
            breaches: format!("{prefix}.breaches"),
            alerts: format!("{prefix}.alerts"),
        }
    }
}

/// The validated configuration shared by every role.
#[derive(Debug, Clone)]
pub struct Config {
    /// `None` only in `standalone`, which then embeds a broker.
    pub kafka_brokers: Option<String>,
    pub database_url: Secret,
    pub redis_url: Secret,
    pub ingest_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub aggregator_addr: SocketAddr,
    pub alerter_addr: SocketAddr,
    pub rules: Option<String>,
    pub topics: Topics,
    pub metrics_token: Option<Secret>,
    pub status_page_public: bool,
    pub log: String,
    /// Partitions of the samples topic when Tidemark creates it.
    pub partitions: i32,
    pub linger: Duration,
    pub ack_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub max_sample_age: Duration,
    pub max_sample_future: Duration,
    pub max_series_per_service: u32,
    pub flush_interval: Duration,
    pub db_max_connections: u32,
    /// How long an aggregator's partition lease holds without renewal.
    pub lease_ttl: Duration,
    /// The aggregator's identity for partition leases (default: host and aggregator
    /// address, stable across restarts).
    pub instance_id: Option<String>,
    /// The metric whose quantiles a service's health view reports as its latency.
    pub latency_metric: String,
    /// How long a retry with the same Idempotency-Key is recognised.
    pub idempotency_retention: Duration,
    /// Samples ingest may hold awaiting the broker; past it requests get 503 at once.
    pub max_inflight_samples: u32,
    /// How long a client may take to send a request head.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Open connections per process; `None` leaves it to the open-file limit.
    pub max_connections: Option<usize>,
    /// How long shutdown waits for open connections before closing them.
    pub shutdown_timeout: Duration,
}

/// A configuration error, naming the variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: invalid value {value:?}: {reason}")]
    Invalid {
        var: String,
        value: String,
        reason: String,
    },
    #[error("{var} is required: {reason}")]
    Missing { var: String, reason: String },
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
}

fn env_name(key: &str) -> String {
    format!("TIDEMARK_{}", key.to_ascii_uppercase())
}

impl Config {
    /// Loads defaults, then `file` (if it exists), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut values = Self::defaults();
        if let Some(path) = file.filter(|p| p.exists()) {
            merge_file(&mut values, path)?;
        }
        for (key, _) in DEFAULTS {
            if let Ok(v) = std::env::var(env_name(key)) {
                values.insert((*key).to_owned(), v);
            }
        }
        Self::from_values(&values)
    }

    /// Builds a configuration from explicit key/value overrides on top of the defaults
    /// (keys without the `TIDEMARK_` prefix, lower case); used by tests and embedders.
    pub fn from_overrides<'a>(
        overrides: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ConfigError> {
        let mut values = Self::defaults();
        for (k, v) in overrides {
            if !DEFAULTS.iter().any(|(d, _)| *d == k) {
                return Err(ConfigError::Invalid {
                    var: env_name(k),
                    value: v.to_owned(),
                    reason: "unknown key".into(),
                });
            }
            values.insert(k.to_owned(), v.to_owned());
        }
        Self::from_values(&values)
    }

    fn defaults() -> BTreeMap<String, String> {
        DEFAULTS
            .iter()
            .filter_map(|(k, v)| v.map(|v| ((*k).to_owned(), v.to_owned())))
            .collect()
    }

    fn from_values(v: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let opt = |key: &str| v.get(key).filter(|s| !s.trim().is_empty()).cloned();
        let topic_prefix = get::<String>(v, "topic_prefix")?;
        if topic_prefix.is_empty()
            || !topic_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(invalid(
                "topic_prefix",
                &topic_prefix,
                "use letters, digits, '.', '_' or '-'",
            ));
        }
        let partitions: i32 = get(v, "partitions")?;
        if !(1..=1024).contains(&partitions) {
            return Err(invalid(
                "partitions",
                &partitions.to_string(),
                "must be 1..=1024",
            ));
        }
        let lease_ttl = get_duration(v, "lease_ttl")?;
        if lease_ttl < Duration::from_secs(1) {
            return Err(invalid("lease_ttl", &v["lease_ttl"], "must be at least 1s"));
        }
        let max_connections = opt("max_connections")
            .map(|_| get::<usize>(v, "max_connections"))
            .transpose()?;
        if max_connections == Some(0) {
            return Err(invalid("max_connections", "0", "must be at least 1"));
        }
        Ok(Self {
            kafka_brokers: opt("kafka_brokers"),
            database_url: Secret::new(get::<String>(v, "database_url")?),
            redis_url: Secret::new(get::<String>(v, "redis_url")?),
            ingest_addr: get(v, "ingest_addr")?,
            api_addr: get(v, "api_addr")?,
            aggregator_addr: get(v, "aggregator_addr")?,
            alerter_addr: get(v, "alerter_addr")?,
            rules: opt("rules"),
            topics: Topics::new(&topic_prefix),
            metrics_token: opt("metrics_token").map(Secret::new),
            status_page_public: get(v, "status_page_public")?,
            log: get(v, "log")?,
            partitions,
            linger: get_duration(v, "linger")?,
            ack_timeout: get_duration(v, "ack_timeout")?,
            max_body_bytes: get(v, "max_body_bytes")?,
            max_decompressed_bytes: get(v, "max_decompressed_bytes")?,
            max_sample_age: get_duration(v, "max_sample_age")?,
            max_sample_future: get_duration(v, "max_sample_future")?,
            max_series_per_service: get(v, "max_series_per_service")?,
            flush_interval: get_duration(v, "flush_interval")?,
            db_max_connections: get(v, "db_max_connections")?,
            lease_ttl,
            instance_id: opt("instance_id"),
            latency_metric: get(v, "latency_metric")?,
            idempotency_retention: get_duration(v, "idempotency_retention")?,
            max_inflight_samples: get(v, "max_inflight_samples")?,
            header_read_timeout: get_duration(v, "header_read_timeout")?,
            idle_timeout: get_duration(v, "idle_timeout")?,
            max_connections,
            shutdown_timeout: get_duration(v, "shutdown_timeout")?,
        })
    }

    /// The brokers, or an error naming the variable for roles that need an external one.
    pub fn require_brokers(&self) -> Result<&str, ConfigError> {
        self.kafka_brokers
            .as_deref()
            .ok_or_else(|| ConfigError::Missing {
                var: env_name("kafka_brokers"),
                reason: "set it to the Kafka bootstrap servers, e.g. 127.0.0.1:9092".into(),
            })
    }
}

fn invalid(key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        var: env_name(key),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn get<T: FromStr>(v: &BTreeMap<String, String>, key: &str) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    let raw = v.get(key).map(String::as_str).unwrap_or_default();
    raw.trim()
        .parse()
        .map_err(|e: T::Err| invalid(key, raw, &e.to_string()))
}

fn get_duration(v: &BTreeMap<String, String>, key: &str) -> Result<Duration, ConfigError> {
    let raw = v.get(key).map(String::as_str).unwrap_or_default();
    parse_duration(raw).map_err(|e| invalid(key, raw, &e))
}

fn merge_file(values: &mut BTreeMap<String, String>, path: &Path) -> Result<(), ConfigError> {
    let file_err = |reason: String| ConfigError::File {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_err(e.to_string()))?;
    for (key, value) in table {
        if !DEFAULTS.iter().any(|(d, _)| *d == key) {
            return Err(file_err(format!("unknown key `{key}`")));
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(file_err(format!(
                    "`{key}`: unsupported value {}",
                    other.type_str()
                )))
            }
        };
        values.insert(key, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_overrides([]).unwrap();
        assert_eq!(c.ingest_addr.to_string(), DEFAULT_INGEST_ADDR);
        assert_eq!(c.topics.samples, "tidemark.samples");
        assert_eq!(c.max_sample_age, Duration::from_secs(7 * 86_400));
        assert!(c.kafka_brokers.is_none());
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert!(c.max_connections.is_none(), "left to the open-file limit");
    }

    /// The README's configuration table lists every variable once, with its default
    /// (`unset`, or words, where there is none), and nothing else.
    #[test]
    fn the_readme_documents_every_setting_with_its_default() {
        let readme = include_str!("../../README.md");
        let table = readme
            .split("## Configuration")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("a configuration section");
        let rows: Vec<(String, String)> = table
            .lines()
            .filter(|l| l.starts_with("| `TIDEMARK_"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells[1].trim_matches('`').to_owned(), cells[2].to_owned())
            })
            .collect();
        let documented: Vec<&str> = rows.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(
            documented,
            env_vars(),
            "one row per variable, in this order"
        );
        for ((var, default), (_, value)) in rows.iter().zip(DEFAULTS) {
            match value {
                Some(v) => assert_eq!(default, &format!("`{v}`"), "{var}"),
                None => assert!(!default.starts_with('`'), "{var} has no default: {default}"),
            }
        }
    }

    #[test]
    fn bad_value_names_the_variable() {
        let err = Config::from_overrides([("ingest_addr", "nowhere")]).unwrap_err();
        assert!(err.to_string().starts_with("TIDEMARK_INGEST_ADDR"), "{err}");
        let err = Config::from_overrides([("linger", "5 parsecs")]).unwrap_err();
        assert!(err.to_string().starts_with("TIDEMARK_LINGER"), "{err}");
        let err = Config::from_overrides([("max_connections", "0")]).unwrap_err();
        assert!(
            err.to_string().starts_with("TIDEMARK_MAX_CONNECTIONS"),
            "{err}"
        );
        let err = Config::from_overrides([("topic_prefix", "a b")]).unwrap_err();
        assert!(
            err.to_string().starts_with("TIDEMARK_TOPIC_PREFIX"),
            "{err}"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let c = Config::from_overrides([("database_url", "postgres://u:hunter2@h/db")]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn file_rejects_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("tidemark-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tidemark.toml");
        std::fs::write(&path, "partitions = 3\nnot_a_key = 1\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err();
        assert!(err.to_string().contains("not_a_key"), "{err}");
        std::fs::write(&path, "partitions = 3\n").unwrap();
        assert_eq!(Config::load(Some(&path)).unwrap().partitions, 3);
    }
}
