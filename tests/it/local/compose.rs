//! Checks the deployment files (docker-compose.yml, deploy/prometheus, deploy/grafana) against the binary's configuration contract in `tidemark_runtime::config`.
//!
//! No Docker engine is needed: the files are parsed and cross-checked. YAML anchors and
//! aliases are resolved by `serde_yaml`; `<<` merge keys are resolved with
//! `serde_yaml::Value::apply_merge`, as Compose itself does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml::Value;
use tidemark_runtime::config::{env_vars, DEFAULT_API_ADDR, DEFAULT_INGEST_ADDR};

/// The Tidemark role services and the variable each one listens on.
const ROLES: &[(&str, &str)] = &[
    ("ingest", "TIDEMARK_INGEST_ADDR"),
    ("aggregator", "TIDEMARK_AGGREGATOR_ADDR"),
    ("alerter", "TIDEMARK_ALERTER_ADDR"),
    ("api", "TIDEMARK_API_ADDR"),
];

/// Services the compose file must define.
const REQUIRED_SERVICES: &[&str] = &[
    "kafka",
    "postgres",
    "redis",
    "ingest",
    "aggregator",
    "alerter",
    "api",
    "prometheus",
    "grafana",
];

/// Connection variables every role needs.
const BACKING_VARS: &[&str] = &[
    "TIDEMARK_KAFKA_BROKERS",
    "TIDEMARK_DATABASE_URL",
    "TIDEMARK_REDIS_URL",
];

const PROMETHEUS_CONFIG_IN_CONTAINER: &str = "/etc/prometheus/prometheus.yml";
const GRAFANA_PROVISIONING_IN_CONTAINER: &str = "/etc/grafana/provisioning";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compose_path() -> PathBuf {
    root().join("docker-compose.yml")
}

/// Parses a YAML file and resolves `<<` merge keys.
fn load_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut value: Value = serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    value
        .apply_merge()
        .unwrap_or_else(|e| panic!("{}: cannot resolve `<<` merge keys: {e}", path.display()));
    value
}

fn compose() -> Value {
    load_yaml(&compose_path())
}

fn services(compose: &Value) -> &serde_yaml::Mapping {
    compose
        .get("services")
        .and_then(Value::as_mapping)
        .expect("docker-compose.yml has no `services:` mapping")
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    services(compose)
        .get(name)
        .unwrap_or_else(|| panic!("docker-compose.yml has no service `{name}`"))
}

/// A scalar as a string (compose accepts numbers and booleans where strings are meant).
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Resolves the defaults of `${VAR:-default}` / `${VAR-default}` interpolations; a bare
/// `${VAR}` or `$VAR` is left as written (its value comes from the host).
fn interpolate_defaults(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &after[..end];
        if let Some((_, default)) = inner.split_once(":-").or_else(|| inner.split_once('-')) {
            out.push_str(default);
        } else {
            out.push_str(&rest[start..=start + 2 + end]);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A service's `environment`, in map or list form. A variable given without a value
/// (`- NAME` or `NAME:`) maps to `None`.
fn environment(compose: &Value, name: &str) -> BTreeMap<String, Option<String>> {
    let mut env = BTreeMap::new();
    match service(compose, name).get("environment") {
        None => {}
        Some(Value::Mapping(map)) => {
            for (k, v) in map {
                let key = scalar(k).unwrap_or_else(|| {
                    panic!("service `{name}`: non-scalar environment key {k:?}")
                });
                let val = match v {
                    Value::Null => None,
                    other => Some(interpolate_defaults(&scalar(other).unwrap_or_else(|| {
                        panic!("service `{name}`: environment `{key}` is not a scalar: {other:?}")
                    }))),
                };
                env.insert(key, val);
            }
        }
        Some(Value::Sequence(items)) => {
            for item in items {
                let item = scalar(item)
                    .unwrap_or_else(|| panic!("service `{name}`: bad environment entry {item:?}"));
                match item.split_once('=') {
                    Some((k, v)) => env.insert(k.to_string(), Some(interpolate_defaults(v))),
                    None => env.insert(item, None),
                };
            }
        }
        Some(other) => {
            panic!("service `{name}`: `environment` must be a map or a list, got {other:?}")
        }
    }
    env
}

/// The command of a service as a list of words (compose accepts a string or a list).
fn command(compose: &Value, name: &str) -> Vec<String> {
    match service(compose, name).get("command") {
        None => Vec::new(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|v| {
                scalar(v).unwrap_or_else(|| panic!("service `{name}`: bad command word {v:?}"))
            })
            .collect(),
        Some(other) => {
            panic!("service `{name}`: `command` must be a string or a list, got {other:?}")
        }
    }
}

/// `(published, target)` port pairs of a service, short or long syntax. A port
/// published on a random host port has `published == None`.
fn ports(compose: &Value, name: &str) -> Vec<(Option<u16>, u16)> {
    let parse = |s: &str| -> u16 {
        s.parse().unwrap_or_else(|_| {
            panic!("service `{name}`: cannot parse port `{s}` (ranges are not expected here)")
        })
    };
    let Some(list) = service(compose, name).get("ports") else {
        return Vec::new();
    };
    let list = list
        .as_sequence()
        .unwrap_or_else(|| panic!("service `{name}`: `ports` must be a list"));
    list.iter()
        .map(|entry| match entry {
            Value::Mapping(m) => {
                let target = m.get("target").and_then(scalar).unwrap_or_else(|| {
                    panic!("service `{name}`: port entry without `target`: {entry:?}")
                });
                let published = m.get("published").and_then(scalar);
                (published.as_deref().map(parse), parse(&target))
            }
            other => {
                let s = scalar(other)
                    .unwrap_or_else(|| panic!("service `{name}`: bad port entry {other:?}"));
                let s = s.split('/').next().unwrap_or_default(); // drop "/tcp"
                                                                 // [ip:]published:target  or just target. IPv6 hosts are bracketed.
                let parts: Vec<&str> = s.rsplitn(3, ':').collect();
                match parts.as_slice() {
                    [target] => (None, parse(target)),
                    [target, published] | [target, published, _] => {
                        (Some(parse(published)), parse(target))
                    }
                    _ => unreachable!(),
                }
            }
        })
        .collect()
}

/// The port of a `host:port` address.
fn port_of(addr: &str) -> u16 {
    let (_, port) = addr
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("address `{addr}` has no `:port`"));
    port.parse()
        .unwrap_or_else(|_| panic!("address `{addr}` has a bad port `{port}`"))
}

/// The address a role service listens on, from its own environment.
fn role_addr(compose: &Value, role: &str, var: &str) -> String {
    environment(compose, role)
        .get(var)
        .cloned()
        .flatten()
        .unwrap_or_else(|| {
            panic!("service `{role}` must set {var} (containers must listen on 0.0.0.0:<port>)")
        })
}

/// Host paths (relative to the project root) of a service's bind mounts, by container path.
fn bind_mounts(compose: &Value, name: &str) -> BTreeMap<String, PathBuf> {
    let mut mounts = BTreeMap::new();
    let Some(volumes) = service(compose, name)
        .get("volumes")
        .and_then(Value::as_sequence)
    else {
        return mounts;
    };
    for v in volumes {
        let (source, target) = match v {
            Value::String(s) => {
                let mut parts = s.splitn(3, ':');
                let source = parts.next().unwrap_or_default().to_string();
                let Some(target) = parts.next() else { continue };
                (source, target.to_string())
            }
            Value::Mapping(m) => {
                let (Some(source), Some(target)) = (
                    m.get("source").and_then(scalar),
                    m.get("target").and_then(scalar),
                ) else {
                    continue;
                };
                (source, target)
            }
            _ => continue,
        };
        // Only bind mounts of project files; named volumes have no `/` or `.` prefix.
        if source.starts_with("./") || source.starts_with("../") || source.starts_with('/') {
            let source = source.strip_prefix("./").unwrap_or(&source);
            mounts.insert(
                target.trim_end_matches('/').to_string(),
                root().join(source),
            );
        }
    }
    mounts
}

/// Adds every word of `s` that starts with `prefix` (e.g. `TIDEMARK_`) to `out`.
pub(super) fn scan_words(s: &str, prefix: &str, out: &mut BTreeSet<String>) {
    let bytes = s.as_bytes();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while let Some(pos) = s[i..].find(prefix) {
        let start = i + pos;
        let mut end = start + prefix.len();
        while end < bytes.len() && is_word(bytes[end]) {
            end += 1;
        }
        if start == 0 || !is_word(bytes[start - 1]) {
            out.insert(s[start..end].to_string());
        }
        i = end;
    }
}

/// Collects every `TIDEMARK_*` word used in keys or values anywhere in `value`.
fn collect_tidemark_names(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::String(s) => scan_words(s, "TIDEMARK_", out),
        Value::Mapping(m) => {
            for (k, v) in m {
                collect_tidemark_names(k, out);
                collect_tidemark_names(v, out);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|v| collect_tidemark_names(v, out)),
        Value::Tagged(t) => collect_tidemark_names(&t.value, out),
        _ => {}
    }
}

/// Collects the `uid` of every `"datasource"` object (or the name, for the legacy string form).
fn collect_datasource_uids(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                if key == "datasource" {
                    match v {
                        serde_json::Value::String(name) => out.push(name.clone()),
                        serde_json::Value::Object(ds) => {
                            out.extend(ds.get("uid").and_then(|u| u.as_str()).map(str::to_string));
                        }
                        _ => {}
                    }
                }
                collect_datasource_uids(v, out);
            }
        }
        serde_json::Value::Array(items) => {
            items.iter().for_each(|v| collect_datasource_uids(v, out))
        }
        _ => {}
    }
}

#[test]
fn compose_defines_every_service() {
    let compose = compose();
    let defined: BTreeSet<String> = services(&compose).keys().filter_map(scalar).collect();
    let missing: Vec<&str> = REQUIRED_SERVICES
        .iter()
        .copied()
        .filter(|s| !defined.contains(*s))
        .collect();
    assert!(
        missing.is_empty(),
        "docker-compose.yml lacks services {missing:?} (it defines {defined:?})"
    );
}

#[test]
fn role_services_run_their_tidemark_subcommand() {
    let compose = compose();
    let image_of = |name: &str| service(&compose, name).get("image").and_then(scalar);
    let mut images = BTreeSet::new();
    let mut roles: Vec<&str> = ROLES.iter().map(|(role, _)| *role).collect();
    if services(&compose).contains_key("migrate") {
        roles.push("migrate");
    }
    for role in roles {
        let svc = service(&compose, role);
        assert!(
            svc.get("build").is_some(),
            "service `{role}` must be built from the project's Dockerfile (`build: .`)"
        );
        // The image's ENTRYPOINT is `tidemark`; an override must still run it.
        if let Some(entrypoint) = svc.get("entrypoint") {
            let first = match entrypoint {
                Value::Sequence(s) => s.first().and_then(scalar),
                other => {
                    scalar(other).and_then(|s| s.split_whitespace().next().map(str::to_string))
                }
            };
            assert!(
                first.as_deref().is_some_and(|e| e == "tidemark" || e.ends_with("/tidemark")),
                "service `{role}` overrides the entrypoint with {entrypoint:?}; it must run `tidemark`"
            );
        }
        let cmd = command(&compose, role);
        assert_eq!(
            cmd.first().map(String::as_str),
            Some(role),
            "service `{role}` must run `tidemark {role}` (command: [{role}]), got command {cmd:?}"
        );
        images.insert(image_of(role).unwrap_or_else(|| {
            panic!("service `{role}` needs an `image:` name so the Tidemark image is built once and shared")
        }));
    }
    assert_eq!(
        images.len(),
        1,
        "all Tidemark services must share one image name so it is built once, got {images:?}"
    );
}

#[test]
fn compose_only_uses_contract_env_vars() {
    let compose = compose();
    let mut used = BTreeSet::new();
    collect_tidemark_names(&compose, &mut used);
    assert!(
        !used.is_empty(),
        "docker-compose.yml names no TIDEMARK_* variable at all"
    );
    let known = env_vars();
    let unknown: Vec<&String> = used.iter().filter(|v| !known.contains(v)).collect();
    assert!(
        unknown.is_empty(),
        "docker-compose.yml uses {unknown:?}, which the binary does not read \
         (not in tidemark_runtime::config::env_vars() = {known:?})"
    );
}

#[test]
fn role_services_set_backing_service_urls() {
    let compose = compose();
    for (role, _) in ROLES {
        let env = environment(&compose, role);
        for var in BACKING_VARS {
            let value = env.get(*var).cloned().flatten();
            assert!(
                value.as_deref().is_some_and(|v| !v.trim().is_empty()),
                "service `{role}` must set {var} to a non-empty value, got {value:?}"
            );
        }
    }
}

#[test]
fn role_services_listen_on_all_interfaces() {
    let compose = compose();
    for (role, var) in ROLES {
        let addr = role_addr(&compose, role, var);
        let (host, _) = addr.rsplit_once(':').unwrap_or_default();
        assert!(
            host == "0.0.0.0" || host == "[::]",
            "service `{role}`: {var}={addr} must bind all interfaces (0.0.0.0:<port>) inside a container"
        );
        port_of(&addr);
    }
}

#[test]
fn published_ports_match_default_addresses() {
    let compose = compose();
    for (role, var, default_addr) in [
        ("ingest", "TIDEMARK_INGEST_ADDR", DEFAULT_INGEST_ADDR),
        ("api", "TIDEMARK_API_ADDR", DEFAULT_API_ADDR),
    ] {
        let default_port = port_of(default_addr);
        let listen_port = port_of(&role_addr(&compose, role, var));
        let ports = ports(&compose, role);
        assert!(
            ports.contains(&(Some(default_port), listen_port)),
            "service `{role}` must publish host port {default_port} (the port of the default \
             {var} {default_addr}) to the port it listens on ({listen_port}); ports are {ports:?}"
        );
    }
}

#[test]
fn prometheus_scrapes_every_role() {
    let compose = compose();
    let mounts = bind_mounts(&compose, "prometheus");
    let config_path = mounts.get(PROMETHEUS_CONFIG_IN_CONTAINER).unwrap_or_else(|| {
        panic!(
            "service `prometheus` must mount its config at {PROMETHEUS_CONFIG_IN_CONTAINER}; bind mounts are {mounts:?}"
        )
    });
    let config = load_yaml(config_path);
    let jobs = config
        .get("scrape_configs")
        .and_then(Value::as_sequence)
        .unwrap_or_else(|| panic!("{} has no `scrape_configs` list", config_path.display()));

    for (role, var) in ROLES {
        let want = format!("{role}:{}", port_of(&role_addr(&compose, role, var)));
        let job = jobs.iter().find(|job| {
            job.get("static_configs")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
                .filter_map(|sc| sc.get("targets").and_then(Value::as_sequence))
                .flatten()
                .any(|t| scalar(t).as_deref() == Some(want.as_str()))
        });
        let job = job.unwrap_or_else(|| {
            panic!(
                "{} has no scrape target `{want}` for role `{role}` (its port comes from {var} in docker-compose.yml)",
                config_path.display()
            )
        });
        let job_name = job.get("job_name").and_then(scalar);
        assert_eq!(
            job_name.as_deref(),
            Some(*role),
            "the Prometheus job scraping `{want}` should be named after the role"
        );
        let path = job.get("metrics_path").and_then(scalar);
        assert!(
            path.as_deref().is_none_or(|p| p == "/metrics"),
            "job `{role}` must scrape /metrics, has metrics_path {path:?}"
        );
        let scheme = job.get("scheme").and_then(scalar);
        assert!(
            scheme.as_deref().is_none_or(|s| s == "http"),
            "job `{role}`: the roles serve plain HTTP, scheme is {scheme:?}"
        );
    }
}

#[test]
fn grafana_datasource_points_at_prometheus_service() {
    let compose = compose();
    let prometheus = service(&compose, "prometheus");
    let image = prometheus.get("image").and_then(scalar).unwrap_or_default();
    assert!(
        image.starts_with("prom/prometheus"),
        "service `prometheus` should run prom/prometheus, runs `{image}`"
    );

    let mounts = bind_mounts(&compose, "grafana");
    let provisioning = mounts.get(GRAFANA_PROVISIONING_IN_CONTAINER).unwrap_or_else(|| {
        panic!(
            "service `grafana` must mount provisioning at {GRAFANA_PROVISIONING_IN_CONTAINER}; bind mounts are {mounts:?}"
        )
    });
    let ds_file = provisioning.join("datasources/prometheus.yml");
    let ds = load_yaml(&ds_file);
    let sources = ds
        .get("datasources")
        .and_then(Value::as_sequence)
        .unwrap_or_else(|| panic!("{} has no `datasources` list", ds_file.display()));
    let prom = sources
        .iter()
        .find(|d| d.get("type").and_then(scalar).as_deref() == Some("prometheus"))
        .unwrap_or_else(|| {
            panic!(
                "{} has no data source of type prometheus",
                ds_file.display()
            )
        });

    let url = prom.get("url").and_then(scalar).unwrap_or_default();
    let authority = url
        .strip_prefix("http://")
        .unwrap_or_else(|| {
            panic!("Grafana's Prometheus url must be http://prometheus:9090, got `{url}`")
        })
        .trim_end_matches('/');
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "80"));
    assert_eq!(
        host, "prometheus",
        "Grafana's Prometheus url `{url}` must name the compose service `prometheus`"
    );
    assert_eq!(
        port, "9090",
        "Grafana's Prometheus url `{url}` must use Prometheus' port 9090"
    );
    assert_eq!(
        prom.get("uid").and_then(scalar).as_deref(),
        Some("prometheus"),
        "the Prometheus data source must have uid `prometheus` (the dashboard refers to it)"
    );
    assert_eq!(
        prom.get("isDefault").and_then(Value::as_bool),
        Some(true),
        "the Prometheus data source should be the default"
    );
}

/// The dashboard Grafana is provisioned with, found through the compose file's mounts
/// and the dashboard provider: its file and its JSON.
pub(super) fn provisioned_dashboard() -> (PathBuf, serde_json::Value) {
    let compose = compose();
    let mounts = bind_mounts(&compose, "grafana");
    let provisioning = mounts
        .get(GRAFANA_PROVISIONING_IN_CONTAINER)
        .unwrap_or_else(|| {
            panic!("service `grafana` must mount {GRAFANA_PROVISIONING_IN_CONTAINER}")
        });
    let provider_file = provisioning.join("dashboards/tidemark.yml");
    let providers = load_yaml(&provider_file);
    let provider = providers
        .get("providers")
        .and_then(Value::as_sequence)
        .and_then(|p| {
            p.iter()
                .find(|p| p.get("type").and_then(scalar).as_deref() == Some("file"))
        })
        .unwrap_or_else(|| panic!("{} has no file dashboard provider", provider_file.display()));
    let container_dir = provider
        .get("options")
        .and_then(|o| o.get("path"))
        .and_then(scalar)
        .unwrap_or_else(|| {
            panic!(
                "{}: the provider has no options.path",
                provider_file.display()
            )
        });
    let host_dir = mounts
        .get(container_dir.trim_end_matches('/'))
        .unwrap_or_else(|| {
            panic!("service `grafana` must mount the dashboards folder at {container_dir}; bind mounts are {mounts:?}")
        });

    let dashboard_file = host_dir.join("tidemark.json");
    let text = std::fs::read_to_string(&dashboard_file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dashboard_file.display()));
    let dashboard: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", dashboard_file.display()));
    (dashboard_file, dashboard)
}

/// The query of every panel target of the dashboard in `file`.
pub(super) fn panel_exprs<'a>(file: &Path, dashboard: &'a serde_json::Value) -> Vec<&'a str> {
    dashboard["panels"]
        .as_array()
        .unwrap_or_else(|| panic!("{} has no panels", file.display()))
        .iter()
        .flat_map(|panel| panel["targets"].as_array().into_iter().flatten())
        .filter_map(|target| target["expr"].as_str())
        .collect()
}

#[test]
fn grafana_dashboards_are_mounted_and_use_the_provisioned_datasource() {
    let (dashboard_file, dashboard) = provisioned_dashboard();

    // Every data source reference (panels, targets, variables) must be the provisioned
    // uid, except Grafana's built-in ones (annotations), whose uids start with "-- ".
    let mut uids = Vec::new();
    collect_datasource_uids(&dashboard, &mut uids);
    let foreign: Vec<&String> = uids
        .iter()
        .filter(|uid| uid.as_str() != "prometheus" && !uid.starts_with("-- "))
        .collect();
    assert!(
        foreign.is_empty(),
        "{} refers to data source uids {foreign:?}; only the provisioned `prometheus` exists",
        dashboard_file.display()
    );

    let exprs = panel_exprs(&dashboard_file, &dashboard);
    for metric in [
        "tidemark_ingest_samples_accepted_total",
        "tidemark_http_requests_total",
        "tidemark_aggregator_samples_folded_total",
        "tidemark_aggregator_flush_duration_seconds_bucket",
        "tidemark_service_health_status",
        "tidemark_service_latency",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(metric)),
            "{} has no panel querying `{metric}`",
            dashboard_file.display()
        );
    }
}
