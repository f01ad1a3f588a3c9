//! The per-service series bound (SPEC §2): a sample that would open a series past the
//! limit is refused. Admitted series are kept in a Redis set per service, shared by all
//! ingest processes and checked-and-added atomically ([`SeriesSets`]); a process
//! remembers what it admitted so known series cost no round trip. With Redis down, each
//! process enforces the bound on its own view.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use tidemark_model::Sample;
use tidemark_store::cardinality::SeriesSets;
use tidemark_store::hot::Redis;

use crate::telemetry;

pub struct Cardinality {
    limit: u32,
    shared: SeriesSets,
    admitted: Mutex<HashMap<String, HashSet<i64>>>,
}

impl Cardinality {
    pub fn new(limit: u32, topic_prefix: &str, redis: Redis) -> Self {
        Self {
            limit,
            shared: SeriesSets::new(topic_prefix, redis),
            admitted: Mutex::new(HashMap::new()),
        }
    }

    /// The index of the first sample whose series is refused, with the reason.
    pub async fn check(&self, samples: &[Sample<'_>]) -> Option<(usize, String)> {
        let mut unknown: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        {
            let admitted = self.admitted.lock().expect("admitted lock");
            for s in samples {
                let id = s.series_id();
                if !admitted.get(s.service).is_some_and(|set| set.contains(&id)) {
                    unknown.entry(s.service).or_default().push(id);
                }
            }
        }
        if unknown.is_empty() {
            return None;
        }
        let mut refused: HashSet<i64> = HashSet::new();
        for (service, ids) in unknown {
            let outcome = match self.shared.admit(service, self.limit, &ids).await {
                Ok(r) => r,
                Err(e) => {
                    telemetry::series_checked_per_process(&e);
                    self.admit_local(service, &ids)
                }
            };
            self.remember(service, ids.iter().filter(|id| !outcome.contains(id)));
            refused.extend(outcome);
        }
        let index = samples
            .iter()
            .position(|s| refused.contains(&s.series_id()))?;
        telemetry::SERIES_REFUSED.increment(1);
        let service = &samples[index].service;
        Some((
            index,
            format!(
                "service {:?} has reached its limit of {} series",
                tidemark_runtime::http::quote(service),
                self.limit
            ),
        ))
    }

    fn admit_local(&self, service: &str, ids: &[i64]) -> Vec<i64> {
        let mut admitted = self.admitted.lock().expect("admitted lock");
        let set = admitted.entry(service.to_owned()).or_default();
        ids.iter()
            .copied()
            .filter(|id| !set.contains(id) && set.len() >= self.limit as usize)
            .collect()
    }

    fn remember<'a>(&self, service: &str, ids: impl Iterator<Item = &'a i64>) {
        let mut admitted = self.admitted.lock().expect("admitted lock");
        let set = admitted.entry(service.to_owned()).or_default();
        for id in ids {
            if set.len() < self.limit as usize {
                set.insert(*id);
            }
        }
    }
}
