//! The alert rules a process runs with (`TIDEMARK_RULES`): read and validated at start
//! (an invalid file stops the process), read again on SIGHUP and whenever a process of
//! the deployment announces a reload (`POST /v1/admin/rules/reload`, through Postgres
//! `NOTIFY`). A reload that finds the file invalid keeps the rules in force, logs every
//! error and remembers them for `GET /v1/rules`.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tidemark_rules::{InhibitRule, Rule, RulesFile};
use tidemark_store::db::PgPool;
use tidemark_store::notify::RulesReloads;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The rules in force, the file's inhibit rules, and when they were read.
#[derive(Debug)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub inhibit: Vec<InhibitRule>,
    pub loaded_at: DateTime<Utc>,
}

impl RuleSet {
    fn new(file: RulesFile) -> Self {
        Self {
            rules: file.rules,
            inhibit: file.inhibit,
            loaded_at: Utc::now(),
        }
    }
}

/// The process's rules: the file, the set in force, and the last reload's errors.
#[derive(Clone)]
pub struct Rules {
    path: Option<String>,
    current: Arc<watch::Sender<Arc<RuleSet>>>,
    last_error: Arc<Mutex<Option<String>>>,
}

/// Reads and validates `path`; the error lists every problem, each naming rule and field.
fn read(path: &str) -> Result<RulesFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    tidemark_rules::parse_file(&text).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!("{path} is invalid:\n  {}", list.join("\n  "))
    })
}

impl Rules {
    /// The rules of `path` (none when `None`); an invalid file is an error naming
    /// `TIDEMARK_RULES`.
    pub fn load(path: Option<&str>) -> anyhow::Result<Self> {
        let file = match path {
            Some(path) => read(path).map_err(|e| anyhow::anyhow!("TIDEMARK_RULES: {e}"))?,
            None => RulesFile::default(),
        };
        let set = RuleSet::new(file);
        Ok(Self {
            path: path.map(str::to_owned),
            current: Arc::new(watch::channel(Arc::new(set)).0),
            last_error: Arc::default(),
        })
    }

    /// Whether a rules file is configured.
    pub fn configured(&self) -> bool {
        self.path.is_some()
    }

    /// The rules file, as configured.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    pub fn current(&self) -> Arc<RuleSet> {
        self.current.borrow().clone()
    }

    /// Changes whenever a reload succeeds.
    pub fn subscribe(&self) -> watch::Receiver<Arc<RuleSet>> {
        self.current.subscribe()
    }

    /// The errors of the last reload, if it failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("not poisoned").clone()
    }

    /// Reads the file again: the number of rules now in force, or the errors (the rules
    /// in force stay).
    pub fn reload(&self) -> Result<usize, String> {
        let Some(path) = &self.path else {
            return Err("TIDEMARK_RULES is not set: there is no rules file to reload".into());
        };
        let outcome = read(path);
        *self.last_error.lock().expect("not poisoned") = outcome.as_ref().err().cloned();
        match outcome {
            Ok(file) => {
                let n = file.rules.len();
                tracing::info!(path, rules = n, "rules reloaded");
                self.current.send_replace(Arc::new(RuleSet::new(file)));
                Ok(n)
            }
            Err(e) => {
                tracing::error!(error = %e, "rules not reloaded; the rules in force stay");
                Err(e)
            }
        }
    }

    /// Reloads on SIGHUP and on every reload announced for deployment `prefix`, until
    /// `shutdown`. Without a rules file there is nothing to do.
    pub fn spawn_reloader(&self, pool: PgPool, prefix: String, shutdown: CancellationToken) {
        if self.path.is_none() {
            return;
        }
        let rules = self.clone();
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::warn!("cannot watch SIGHUP; rules reload only when announced");
                return;
            };
            let mut announced = None;
            loop {
                if announced.is_none() {
                    match RulesReloads::listen(&pool, &prefix).await {
                        Ok(listener) => announced = Some(listener),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot listen for rules reloads yet; retrying")
                        }
                    }
                }
                let next_announcement = async {
                    match &mut announced {
                        Some(listener) => listener.next().await,
                        None => {
                            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                            Err(anyhow::anyhow!("not listening"))
                        }
                    }
                };
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = hup.recv() => { let _ = rules.reload(); }
                    heard = next_announcement => match heard {
                        Ok(()) => { let _ = rules.reload(); }
                        Err(_) => announced = None,
                    },
                }
            }
        });
    }
}

/// Asks every process of deployment `prefix` to reload its rules.
pub async fn announce_reload(pool: &PgPool, prefix: &str) -> anyhow::Result<()> {
    tidemark_store::notify::announce_rules_reload(pool, prefix).await
}
