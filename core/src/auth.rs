//! API keys: bearer tokens with a role, stored only as SHA-256 hashes. Tokens carry 128
//! random bits, so a fast hash suffices (no password stretching needed).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

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
    sqlx::query("INSERT INTO api_keys (name, role, token_hash) VALUES ($1, $2, $3)")
        .bind(name)
        .bind(role.as_str())
        .bind(hash(&token))
        .execute(pool)
        .await?;
    Ok(token)
}

pub async fn key_count(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM api_keys")
        .fetch_one(pool)
        .await?)
}

/// Resolves tokens to roles, remembering answers (found or not) for a short while so a
/// busy ingest does not query Postgres per request.
pub struct KeyStore {
    pool: PgPool,
    ttl: Duration,
    cache: Mutex<HashMap<Vec<u8>, CachedRole>>,
}

const CACHE_LIMIT: usize = 10_000;

/// A lookup answer (a role, or unknown) and when it was made.
type CachedRole = (Option<Role>, Instant);

impl KeyStore {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            ttl: Duration::from_secs(30),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The role of `token`, `None` if unknown.
    pub async fn role_of(&self, token: &str) -> anyhow::Result<Option<Role>> {
        let key = hash(token);
        let cached = self.cache.lock().expect("cache lock").get(&key).copied();
        if let Some((role, at)) = cached {
            if at.elapsed() < self.ttl {
                return Ok(role);
            }
        }
        let looked_up =
            sqlx::query_scalar::<_, String>("SELECT role FROM api_keys WHERE token_hash = $1")
                .bind(&key)
                .fetch_optional(&self.pool)
                .await;
        let role = match (looked_up, cached) {
            (Ok(role), _) => role.and_then(|r| r.parse().ok()),
            // Postgres is down: a key known before keeps its last known answer.
            (Err(e), Some((role, _))) => {
                tracing::warn!(error = %e, "API key lookup failed; using the last known answer");
                return Ok(role);
            }
            (Err(e), None) => return Err(e.into()),
        };
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, (role, Instant::now()));
        Ok(role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_grants_everything_others_only_themselves() {
        assert!(Role::Admin.grants(Role::Read) && Role::Admin.grants(Role::Ingest));
        assert!(Role::Read.grants(Role::Read) && !Role::Read.grants(Role::Ingest));
        assert!(!Role::Ingest.grants(Role::Admin));
        assert_eq!("admin".parse::<Role>(), Ok(Role::Admin));
        assert!("root".parse::<Role>().is_err());
    }
}
