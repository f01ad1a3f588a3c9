//! API keys: bearer tokens with a role, stored only as SHA-256 hashes. Tokens carry 128
//! random bits, so a fast hash suffices (no password stretching needed).
//!
//! Lookups are cached (known keys for [`KNOWN_TTL`], unknown tokens for [`UNKNOWN_TTL`],
//! so a key created after its token was tried works within that long), and a client
//! address presenting many unknown tokens is refused for a while without a lookup
//! ([`limit`]).

pub mod limit;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};
use tidemark_store::db::PgPool;
use tidemark_store::keys;

use crate::telemetry::serving::{AUTH_LIMITED, AUTH_UNKNOWN_KEYS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Ingest,
    Read,
    Admin,
}

impl Role {
    /// Whether a key with this role may use a route that needs `needed`.
    pub fn grants(self, needed: Role) -> bool {
        self == Role::Admin || self == needed
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ingest" => Ok(Role::Ingest),
            "read" => Ok(Role::Read),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?}: use ingest, read or admin")),
        }
    }
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Creates a key and returns its token: the only time the token exists in clear.
pub async fn create_key(pool: &PgPool, role: Role, name: &str) -> anyhow::Result<String> {
    let mut secret = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut secret);
    let token = format!("tm_{}", hex::encode(secret));
    keys::insert(pool, name, role.as_str(), &hash(&token)).await?;
    Ok(token)
}

pub async fn key_count(pool: &PgPool) -> anyhow::Result<i64> {
    keys::count(pool).await
}

/// Whether `given` equals `expected`, in time that depends on neither (both are hashed
/// first, and the digests compared in constant time): for secrets compared in clear,
/// such as `TIDEMARK_METRICS_TOKEN`.
pub fn same_token(given: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    Sha256::digest(given.as_bytes())
        .ct_eq(&Sha256::digest(expected.as_bytes()))
        .into()
}

/// How long an unknown token is remembered as unknown: a key created meanwhile works
/// after at most this long.
pub const UNKNOWN_TTL: Duration = Duration::from_secs(5);

/// How long a known token's role is remembered.
pub const KNOWN_TTL: Duration = Duration::from_secs(30);

/// Entries of each cache (known keys, unknown tokens).
const CACHE_LIMIT: usize = 10_000;

/// The outcome of [`KeyStore::authenticate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// A known key with this role.
    Known(Role),
    /// No such key.
    Unknown,
    /// The client presented too many unknown keys lately; it may try again after this
    /// long. Nothing was looked up.
    Limited { retry_after: Duration, limit: u32 },
}

/// Resolves tokens to roles, remembering answers for a while so a busy ingest does not
/// query Postgres per request: a known key for [`KNOWN_TTL`], an unknown token for
/// [`UNKNOWN_TTL`] (at most 10,000 of each, so a flood of unknown tokens cannot evict
/// known keys). A client address that presents too many unknown tokens is refused for a
/// while without a lookup ([`limit`]).
pub struct KeyStore {
    pool: PgPool,
    known: Remembered<Role>,
    unknown: Remembered<()>,
    failures: limit::FailureLimiter,
}

type Digest32 = [u8; 32];

/// Answers remembered for `ttl`, at most [`CACHE_LIMIT`] of them (expired ones are
/// dropped first when full, then all).
struct Remembered<V> {
    ttl: Duration,
    entries: Mutex<HashMap<Digest32, (V, Instant)>>,
}

impl<V: Copy> Remembered<V> {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The answer remembered for `key` and when it was made, however old.
    fn last(&self, key: &Digest32) -> Option<(V, Instant)> {
        self.entries.lock().expect("cache lock").get(key).copied()
    }

    /// The answer remembered for `key`, if younger than the ttl.
    fn fresh(&self, key: &Digest32) -> Option<V> {
        self.last(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(v, _)| v)
    }

    fn insert(&self, key: Digest32, value: V, now: Instant) {
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() >= CACHE_LIMIT && !entries.contains_key(&key) {
            entries.retain(|_, (_, at)| now.saturating_duration_since(*at) < self.ttl);
            if entries.len() >= CACHE_LIMIT {
                entries.clear();
            }
        }
        entries.insert(key, (value, now));
    }

    fn remove(&self, key: &Digest32) {
        self.entries.lock().expect("cache lock").remove(key);
    }
}

fn digest(token: &str) -> Digest32 {
    Sha256::digest(token.as_bytes()).into()
}

impl KeyStore {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            known: Remembered::new(KNOWN_TTL),
            unknown: Remembered::new(UNKNOWN_TTL),
            failures: limit::FailureLimiter::default(),
        }
    }

    /// Remembers unknown tokens for `ttl` instead of [`UNKNOWN_TTL`].
    pub fn with_unknown_ttl(mut self, ttl: Duration) -> Self {
        self.unknown = Remembered::new(ttl);
        self
    }

    /// Allows `max_failures` unknown tokens per client address per `window` instead of
    /// [`limit::MAX_FAILURES`] per [`limit::WINDOW`].
    pub fn with_failure_limit(mut self, max_failures: u32, window: Duration) -> Self {
        self.failures = limit::FailureLimiter::new(max_failures, window);
        self
    }

    /// The role of `token` presented by `client` (its address, when known): a client
    /// over its limit of unknown tokens gets [`Auth::Limited`] unless the token is a
    /// known key remembered already; an unknown token counts against its client.
    pub async fn authenticate(&self, token: &str, client: Option<IpAddr>) -> anyhow::Result<Auth> {
        let key = digest(token);
        if let Some(role) = self.known.fresh(&key) {
            return Ok(Auth::Known(role));
        }
        let now = Instant::now();
        if let Some(client) = client {
            if let Some(retry_after) = self.failures.blocked(client, now) {
                AUTH_LIMITED.increment(1);
                return Ok(Auth::Limited {
                    retry_after,
                    limit: self.failures.max_failures(),
                });
            }
        }
        Ok(match self.lookup(key).await? {
            Some(role) => Auth::Known(role),
            None => {
                AUTH_UNKNOWN_KEYS.increment(1);
                if let Some(client) = client {
                    self.failures.record_failure(client, now);
                }
                Auth::Unknown
            }
        })
    }

    /// The role of the token with digest `key` (not remembered as known), `None` if
    /// unknown.
    async fn lookup(&self, key: Digest32) -> anyhow::Result<Option<Role>> {
        if self.unknown.fresh(&key).is_some() {
            return Ok(None);
        }
        let looked_up = keys::role_of(&self.pool, &key).await;
        let role = match looked_up {
            Ok(role) => role.and_then(|r| r.parse().ok()),
            Err(e) => {
                // Postgres is down: a token looked up before keeps its last known answer.
                let last = self.known.last(&key).map(|(role, _)| role);
                if last.is_some() || self.unknown.last(&key).is_some() {
                    tracing::warn!(error = %e, "API key lookup failed; using the last known answer");
                    return Ok(last);
                }
                return Err(e);
            }
        };
        let now = Instant::now();
        match role {
            Some(role) => {
                self.known.insert(key, role, now);
                self.unknown.remove(&key);
            }
            None => self.unknown.insert(key, (), now),
        }
        Ok(role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_token_compares_whole_tokens() {
        assert!(same_token("s3cret", "s3cret"));
        assert!(!same_token("s3cret", "s3cre"));
        assert!(!same_token("s3cret!", "s3cret"));
        assert!(!same_token("", "s3cret"));
        assert!(!same_token("S3cret", "s3cret"));
    }

    #[test]
    fn admin_grants_everything_others_only_themselves() {
        assert!(Role::Admin.grants(Role::Read) && Role::Admin.grants(Role::Ingest));
        assert!(Role::Read.grants(Role::Read) && !Role::Read.grants(Role::Ingest));
        assert!(!Role::Ingest.grants(Role::Admin));
        assert_eq!("admin".parse::<Role>(), Ok(Role::Admin));
        assert!("root".parse::<Role>().is_err());
    }
}
