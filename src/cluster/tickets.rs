//! Tickets and SignalR connection tokens in Redis: any hub issues, any hub redeems, once.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{keys, Cluster, ClusterError};

/// Takes the ticket (GETDEL: a second redeem on any hub finds nothing) and refuses it when
/// its key was revoked, even if it was issued after the revocation. The value starts with
/// the key id and a newline.
static REDEEM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GETDEL', KEYS[1])
if not v then return false end
local key = string.match(v, '^([^\n]*)\n')
if key and redis.call('SISMEMBER', KEYS[2], key) == 1 then return false end
return v
",
    )
});

impl Cluster {
    /// Stores a ticket for `ttl`; `value` must start with its key id and a newline.
    pub async fn put_ticket(
        &self,
        token: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), ClusterError> {
        let key = keys::ticket(token);
        let ms = ttl.as_millis().max(1) as u64;
        self.call(|mut c| async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(value)
                .arg("PX")
                .arg(ms)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// The ticket's value, once; nothing when unknown, spent, expired or revoked.
    pub async fn take_ticket(&self, token: &str) -> Result<Option<String>, ClusterError> {
        let key = keys::ticket(token);
        self.call(|mut c| {
            let mut call = REDEEM.prepare_invoke();
            call.key(&key).key(keys::REVOKED);
            async move { call.invoke_async(&mut c).await }
        })
        .await
    }
}
