//! Layered configuration: embedded defaults, then an optional `tidemark.toml`, then
//! `TIDEMARK_*` environment variables. A bad value stops start-up with a message naming
//! the variable.
//!
//! Each setting is defined once, in [`settings!`] below: its key, the field and type it
//! parses into, its default, and the sentence that documents it. The README's table is
//! checked against these definitions by a test, and every error names the setting's
//! variable. Settings are grouped by the role that reads them; every role receives the
//! whole [`Config`] and reads its own section.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

pub use tidemark_model::secret::Secret;
use tidemark_model::time::parse_duration;

/// One setting as the README and the error messages show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The key in `tidemark.toml`; the variable is `TIDEMARK_<KEY>`.
    pub key: &'static str,
    /// The section of [`Config`] that holds it.
    pub section: &'static str,
    /// The embedded default; `None` leaves it unset.
    pub default: Option<&'static str>,
    /// What the README says in place of a default when there is none.
    pub unset: &'static str,
    /// What the setting means (the README's third column).
    pub doc: &'static str,
}

impl Setting {
    /// The environment variable that sets it.
    pub fn var(&self) -> String {
        env_name(self.key)
    }

    /// The README's default cell: the default in backticks, or the words for unset.
    pub fn default_cell(&self) -> String {
        match self.default {
            Some(v) => format!("`{v}`"),
            None => self.unset.to_owned(),
        }
    }
}

/// Defines the settings: one section struct per role with one field per setting, the
/// [`SETTINGS`] table in definition order, and each section's parser.
macro_rules! settings {
    ($(
        $(#[doc = $section_doc:literal])*
        $section:ident: $Section:ident {
            $( $key:literal => $field:ident: $ty:ty = $default:expr, $unset:literal, $doc:literal; )*
        }
    )*) => {
        $(
            $(#[doc = $section_doc])*
            #[derive(Debug, Clone)]
            pub struct $Section {
                $( #[doc = $doc] pub $field: $ty, )*
            }

            impl $Section {
                fn parse(values: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
                    Ok(Self { $( $field: parse_setting(values, $key)?, )* })
                }
            }
        )*

        /// Every setting, in the order the README lists them.
        pub const SETTINGS: &[Setting] = &[
            $($( Setting {
                key: $key,
                section: stringify!($section),
                default: $default,
                unset: $unset,
                doc: $doc,
            }, )*)*
        ];

        /// The validated configuration: one section per role, plus what they share.
        #[derive(Debug, Clone)]
        pub struct Config {
            $( pub $section: $Section, )*
        }

        impl Config {
            fn parse_sections(values: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
                Ok(Self { $( $section: $Section::parse(values)?, )* })
            }
        }
    };
}

pub const DEFAULT_INGEST_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:8081";
pub const DEFAULT_AGGREGATOR_ADDR: &str = "127.0.0.1:8082";
pub const DEFAULT_ALERTER_ADDR: &str = "127.0.0.1:8083";

settings! {
    /// Connections and names every role shares.
    common: Common {
        "kafka_brokers" => kafka_brokers: Option<String> = None, "unset",
            "bootstrap servers; required except for `standalone`, which then embeds a broker";
        "database_url" => database_url: Secret = Some("postgres://postgres@127.0.0.1:5432/tidemark"), "",
            "PostgreSQL";
        "redis_url" => redis_url: Secret = Some("redis://127.0.0.1:6379"), "",
            "Redis";
        "topic_prefix" => topics: Topics = Some("tidemark"), "",
            "topics `<prefix>.samples`, `.breaches`, `.alerts` (created when missing); also namespaces Redis keys and the group id under which aggregators commit offsets for lag tools";
        "partitions" => partitions: Partitions = Some("1"), "",
            "partitions of the topics Tidemark creates: as many as aggregators you mean to run side by side (each partition has one owner; a spare aggregator waits as a standby). Each partition costs ingest a produce request per batch (docs/decisions.md)";
        "db_max_connections" => db_max_connections: u32 = Some("10"), "",
            "Postgres pool size per process";
        "metrics_token" => metrics_token: Option<Secret> = None, "unset",
            "when set, `/metrics` needs `Authorization: Bearer <token>`";
        "rules" => rules: Option<String> = None, "unset",
            "alert rules file (YAML, SPEC §6; check it with `tidemark rules check FILE`): the aggregator evaluates its rules, the alerter turns their breaches into alerts, the API lists them; unset: no rules";
        "log" => log: String = Some("info"), "",
            "log filter, e.g. `info,tidemark_aggregator=debug`";
    }

    /// How every HTTP listener treats its connections.
    serving: Serving {
        "header_read_timeout" => header_read_timeout: Duration = Some("10s"), "",
            "a request head must be complete this long after the connection opened (or after its first bytes on a kept-alive connection); otherwise the connection is closed";
        "idle_timeout" => idle_timeout: Duration = Some("60s"), "",
            "a kept-alive connection on which nothing arrives for this long after a response is closed";
        "max_connections" => max_connections: Option<AtLeastOne> = None, "unset",
            "open HTTP connections per process, all listeners together; past it a new connection gets `503` with `Retry-After` at once. Never more than the soft open-file limit minus 128, which is kept for Postgres, Redis and Kafka (half the limit if that is more); that is the cap when unset";
        "shutdown_timeout" => shutdown_timeout: Duration = Some("10s"), "",
            "on SIGTERM, how long requests in flight may take to finish before their connections are closed";
    }

    /// The ingest role.
    ingest: IngestSettings {
        "ingest_addr" => addr: SocketAddr = Some(DEFAULT_INGEST_ADDR), "",
            "ingest listener";
        "linger" => linger: Duration = Some("0ms"), "",
            "how long a partly filled batch may wait for more samples; it goes out once full, or once no more samples are waiting and this has passed";
        "ack_timeout" => ack_timeout: Duration = Some("5s"), "",
            "how long ingest waits for the broker before answering `503`";
        "max_body_bytes" => max_body_bytes: usize = Some("1048576"), "",
            "request body limit (`413` above)";
        "max_decompressed_bytes" => max_decompressed_bytes: usize = Some("16777216"), "",
            "limit after gzip/zstd decoding";
        "max_sample_age" => max_sample_age: Duration = Some("7d"), "",
            "how old a sample's timestamp may be";
        "max_sample_future" => max_sample_future: Duration = Some("5m"), "",
            "how far ahead of the time of receipt a sample's timestamp may be";
        "max_series_per_service" => max_series_per_service: u32 = Some("1000"), "",
            "series cardinality bound per service";
        "max_inflight_samples" => max_inflight_samples: u32 = Some("200000"), "",
            "samples ingest may hold awaiting the broker before answering 503 at once";
    }

    /// The aggregator role.
    aggregator: AggregatorSettings {
        "aggregator_addr" => addr: SocketAddr = Some(DEFAULT_AGGREGATOR_ADDR), "",
            "aggregator ops listener";
        "flush_interval" => flush_interval: Duration = Some("3s"), "",
            "how often the aggregator commits buckets and offsets (and updates the hot copy that health views read)";
        "lease_ttl" => lease_ttl: AtLeastASecond = Some("6s"), "",
            "how long an aggregator's partition lease holds without renewal; a standby takes a killed owner's partitions within about this time plus a third of it";
        "instance_id" => instance_id: Option<String> = None, "host and aggregator address",
            "an aggregator's identity for partition leases; a restart with the same identity resumes its partitions at once";
        "eval_interval" => eval_interval: AtLeastASecond = Some("10s"), "",
            "how often the aggregator evaluates the alert rules over its rolling windows (and at every schedule boundary, where thresholds switch)";
        "idempotency_retention" => idempotency_retention: Duration = Some("24h"), "",
            "how long a retry with the same `Idempotency-Key` is recognised (the aggregator keeps the ids of applied chunks this long)";
    }

    /// The read API role.
    api: ApiSettings {
        "api_addr" => addr: SocketAddr = Some(DEFAULT_API_ADDR), "",
            "API listener";
        "api_request_timeout" => request_timeout: Duration = Some("30s"), "",
            "how long an API request may take before it is answered `408`";
        "latency_metric" => latency_metric: String = Some("http.server.duration"), "",
            "the metric whose quantiles a service's health reports";
        "status_page_public" => status_page_public: bool = Some("false"), "",
            "(status page not built yet)";
    }

    /// The alerter role.
    alerter: AlerterSettings {
        "alerter_addr" => addr: SocketAddr = Some(DEFAULT_ALERTER_ADDR), "",
            "alerter ops listener";
    }
}

/// The environment variables Tidemark reads (the contract of SPEC §7 plus tuning knobs),
/// one per setting, in definition order.
pub fn env_vars() -> Vec<String> {
    SETTINGS.iter().map(Setting::var).collect()
}

/// How a setting's text becomes its value; the error is a reason, to which the caller
/// adds the variable and the value.
pub trait FromSetting: Sized {
    /// `raw` is `None` when the setting is unset or blank.
    fn from_setting(raw: Option<&str>) -> Result<Self, String>;
}

/// Parses with [`FromStr`]; a missing value is an error (only `Option`s may be unset).
macro_rules! from_str_setting {
    ($($ty:ty),*) => {$(
        impl FromSetting for $ty {
            fn from_setting(raw: Option<&str>) -> Result<Self, String> {
                raw.ok_or_else(|| "must be set".to_owned())?
                    .parse()
                    .map_err(|e: <$ty as FromStr>::Err| e.to_string())
            }
        }
    )*};
}

from_str_setting!(String, SocketAddr, bool, u32, usize, i32);

impl FromSetting for Duration {
    fn from_setting(raw: Option<&str>) -> Result<Self, String> {
        parse_duration(raw.ok_or_else(|| "must be set".to_owned())?)
    }
}

impl FromSetting for Secret {
    fn from_setting(raw: Option<&str>) -> Result<Self, String> {
        String::from_setting(raw).map(Secret::new)
    }
}

impl<T: FromSetting> FromSetting for Option<T> {
    fn from_setting(raw: Option<&str>) -> Result<Self, String> {
        raw.map(|r| T::from_setting(Some(r))).transpose()
    }
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

impl FromSetting for Topics {
    fn from_setting(raw: Option<&str>) -> Result<Self, String> {
        let prefix = String::from_setting(raw)?;
        let valid = !prefix.is_empty()
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err("use letters, digits, '.', '_' or '-'".into());
        }
        Ok(Self::new(&prefix))
    }
}

/// A partition count Tidemark will create topics with: 1 to 1024.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitions(pub i32);

impl FromSetting for Partitions {
    fn from_setting(raw: Option<&str>) -> Result<Self, String> {
        match i32::from_setting(raw)? {
            n @ 1..=1024 => Ok(Self(n)),
            _ => Err("must be 1..=1024".into()),
        }
    }
}

/// A duration of at least a second: shorter leases expire between two renewals on a busy
/// host, and shorter evaluation intervals spin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtLeastASecond(pub Duration);

impl FromSetting for AtLeastASecond {
    fn from_setting(raw: Option<&str>) -> Result<Self, String> {
        match Duration::from_setting(raw)? {
            d if d >= Duration::from_secs(1) => Ok(Self(d)),
            _ => Err("must be at least 1s".into()),
        }
    }
}

/// A count that must be at least one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtLeastOne(pub usize);

impl FromSetting for AtLeastOne {
    fn from_setting(raw: Option<&str>) -> Result<Self, String> {
        match usize::from_setting(raw)? {
            0 => Err("must be at least 1".into()),
            n => Ok(Self(n)),
        }
    }
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

fn is_setting(key: &str) -> bool {
    SETTINGS.iter().any(|s| s.key == key)
}

fn parse_setting<T: FromSetting>(
    values: &BTreeMap<String, String>,
    key: &str,
) -> Result<T, ConfigError> {
    let raw = values.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
    T::from_setting(raw).map_err(|reason| ConfigError::Invalid {
        var: env_name(key),
        value: raw.unwrap_or_default().to_owned(),
        reason,
    })
}

impl Config {
    /// Loads defaults, then `file` (if it exists), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut values = defaults();
        if let Some(path) = file.filter(|p| p.exists()) {
            merge_file(&mut values, path)?;
        }
        for s in SETTINGS {
            if let Ok(v) = std::env::var(s.var()) {
                values.insert(s.key.to_owned(), v);
            }
        }
        Self::parse_sections(&values)
    }

    /// Builds a configuration from explicit key/value overrides on top of the defaults
    /// (keys without the `TIDEMARK_` prefix, lower case); used by tests and embedders.
    pub fn from_overrides<'a>(
        overrides: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ConfigError> {
        let mut values = defaults();
        for (k, v) in overrides {
            if !is_setting(k) {
                return Err(ConfigError::Invalid {
                    var: env_name(k),
                    value: v.to_owned(),
                    reason: "unknown key".into(),
                });
            }
            values.insert(k.to_owned(), v.to_owned());
        }
        Self::parse_sections(&values)
    }

    /// The brokers, or an error naming the variable for roles that need an external one.
    pub fn require_brokers(&self) -> Result<&str, ConfigError> {
        self.common
            .kafka_brokers
            .as_deref()
            .ok_or_else(|| ConfigError::Missing {
                var: env_name("kafka_brokers"),
                reason: "set it to the Kafka bootstrap servers, e.g. 127.0.0.1:9092".into(),
            })
    }
}

fn defaults() -> BTreeMap<String, String> {
    SETTINGS
        .iter()
        .filter_map(|s| s.default.map(|v| (s.key.to_owned(), v.to_owned())))
        .collect()
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
        if !is_setting(&key) {
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

/// The README's configuration table, generated from [`SETTINGS`].
pub fn markdown_table() -> String {
    let mut table =
        String::from("| variable | section | default | meaning |\n| --- | --- | --- | --- |\n");
    for s in SETTINGS {
        table.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            s.var(),
            s.section,
            s.default_cell(),
            s.doc
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_overrides([]).unwrap();
        assert_eq!(c.ingest.addr.to_string(), DEFAULT_INGEST_ADDR);
        assert_eq!(c.common.topics.samples, "tidemark.samples");
        assert_eq!(c.ingest.max_sample_age, Duration::from_secs(7 * 86_400));
        assert!(c.common.kafka_brokers.is_none());
        assert_eq!(c.serving.header_read_timeout, Duration::from_secs(10));
        assert!(
            c.serving.max_connections.is_none(),
            "left to the open-file limit"
        );
    }

    #[test]
    fn every_setting_is_defined_once_with_a_default_or_words_for_unset() {
        let mut keys: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), SETTINGS.len(), "a key defined twice");
        for s in SETTINGS {
            assert!(
                s.default.is_some() == s.unset.is_empty(),
                "{}: a default, or words for unset, not both",
                s.key
            );
            assert!(!s.doc.is_empty(), "{} is undocumented", s.key);
        }
    }

    /// The README's configuration table is exactly the one the definitions generate.
    #[test]
    fn the_readme_table_is_the_generated_one() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("## Configuration")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("a configuration section");
        let documented: String = section
            .lines()
            .filter(|l| l.starts_with('|'))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(
            documented == markdown_table(),
            "the README's configuration table differs from the definitions; put this in it:\n{}",
            markdown_table()
        );
    }

    #[test]
    fn bad_value_names_the_variable() {
        for (key, value) in [
            ("ingest_addr", "nowhere"),
            ("linger", "5 parsecs"),
            ("max_connections", "0"),
            ("topic_prefix", "a b"),
            ("partitions", "0"),
            ("lease_ttl", "500ms"),
            ("database_url", " "),
        ] {
            let err = Config::from_overrides([(key, value)]).unwrap_err();
            let var = env_name(key);
            assert!(err.to_string().starts_with(&var), "{key}: {err}");
        }
        let err = Config::from_overrides([("no_such_key", "1")]).unwrap_err();
        assert!(err.to_string().starts_with("TIDEMARK_NO_SUCH_KEY"), "{err}");
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
        assert_eq!(
            Config::load(Some(&path)).unwrap().common.partitions,
            Partitions(3)
        );
    }
}
