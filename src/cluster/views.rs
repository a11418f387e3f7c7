//! Each hub's live view (its streams and connections), published to Redis every second
//! with an expiry, so an admin on any hub lists every hub's. A hub that stops publishing
//! (dead) drops out of the lists within [`VIEW_TTL`].

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use serde_json::Value;

use super::{keys, Cluster, ClusterError};

/// How often a hub publishes its view.
pub const VIEW_INTERVAL: Duration = Duration::from_secs(1);
/// A view not refreshed for this long is dropped.
const VIEW_TTL: Duration = Duration::from_secs(3);

/// KEYS: the hubs' sorted set (scored by expiry), the views hash. ARGV: hub, view, ttl ms.
static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
",
    )
});

/// Drops the views of hubs that stopped publishing, returns the others' as a flat list
/// (hub, view, hub, view, ...).
static ALL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, hub in ipairs(gone) do redis.call('HDEL', KEYS[2], hub) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('HGETALL', KEYS[2])
",
    )
});

impl Cluster {
    /// Publishes this hub's view (JSON with `streams` and `connections`).
    pub async fn put_view(&self, view: String) -> Result<(), ClusterError> {
        let hub = self.hub_id.to_string();
        self.call(|mut c| {
            let mut call = PUT.prepare_invoke();
            call.key(keys::HUBS)
                .key(keys::VIEWS)
                .arg(hub)
                .arg(view)
                .arg(VIEW_TTL.as_millis() as u64);
            async move { call.invoke_async::<()>(&mut c).await }
        })
        .await
    }

    /// The `list` (`streams` or `connections`) of every other live hub, as published.
    pub async fn other_hubs(&self, list: &str) -> Result<Vec<Value>, ClusterError> {
        let flat: Vec<String> = self
            .call(|mut c| {
                let mut call = ALL.prepare_invoke();
                call.key(keys::HUBS).key(keys::VIEWS);
                async move { call.invoke_async(&mut c).await }
            })
            .await?;
        let mut out = Vec::new();
        for pair in flat.chunks(2) {
            let [hub, view] = pair else { continue };
            if **hub == *self.hub_id {
                continue;
            }
            if let Ok(mut view) = serde_json::from_str::<Value>(view) {
                if let Some(items) = view.get_mut(list).and_then(Value::as_array_mut) {
                    out.append(items);
                }
            }
        }
        Ok(out)
    }
}
