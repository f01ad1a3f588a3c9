//! The admitted series of each service, shared by every ingest process: a Redis set per
//! service, `<prefix>:series:<service>`, of series ids, checked and added to atomically
//! by a script so that concurrent processes never admit past a limit together.

use crate::hot::Redis;

/// Checks, and adds if there is room, each series id; returns the ids refused.
const ADMIT: &str = r"
local refused = {}
for i = 2, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 0 then
    if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[1]) then
      redis.call('SADD', KEYS[1], ARGV[i])
    else
      table.insert(refused, ARGV[i])
    end
  end
end
return refused
";

/// The sets of admitted series of one deployment (one topic prefix).
pub struct SeriesSets {
    key_prefix: String,
    redis: Redis,
    script: redis::Script,
}

impl SeriesSets {
    /// The sets of the deployment whose topics start with `topic_prefix`.
    pub fn new(topic_prefix: &str, redis: Redis) -> Self {
        Self {
            key_prefix: format!("{topic_prefix}:series:"),
            redis,
            script: redis::Script::new(ADMIT),
        }
    }

    /// Adds each of `ids` to the set of `service` while it holds fewer than `limit`;
    /// returns the ids refused (those not in the set and without room).
    pub async fn admit(&self, service: &str, limit: u32, ids: &[i64]) -> anyhow::Result<Vec<i64>> {
        let mut invocation = self.script.key(format!("{}{service}", self.key_prefix));
        invocation.arg(limit);
        for id in ids {
            invocation.arg(id);
        }
        self.redis
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await
    }
}
