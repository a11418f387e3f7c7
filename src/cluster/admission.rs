//! Stream admission across hubs: a lease is a member of two sorted sets (the key's and the
//! global one) scored by its expiry. One Lua script per admission purges expired members,
//! checks both limits and adds the lease atomically, on Redis' clock, so hubs with skewed
//! clocks agree. The hub running an answer renews its leases in one batch; a dead hub's
//! leases expire within the lease TTL and are purged by the next admission.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use redis::Script;

use super::{keys, Cluster, ClusterError};

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('SISMEMBER', KEYS[3], ARGV[5]) == 1 then return -3 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return -2 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
local expiry = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], expiry, ARGV[1])
redis.call('ZADD', KEYS[2], expiry, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
",
    )
});

/// KEYS[1] is the global set, KEYS[i] (i > 1) the key set of the lease in ARGV[i]. Only
/// leases still present are extended (XX): a renewal racing a release must not revive it.
/// Returns how many were no longer there (expired while Redis was unreachable).
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local lost = 0
for i = 2, #ARGV do
  if redis.call('ZADD', KEYS[1], 'XX', 'CH', expiry, ARGV[i]) == 0
     and not redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    lost = lost + 1
  else
    redis.call('ZADD', KEYS[i], 'XX', expiry, ARGV[i])
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
  end
end
return lost
",
    )
});

static NEXT_LEASE: AtomicU64 = AtomicU64::new(1);

/// A lease held in Redis: its member name and the key it counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseMember {
    pub member: String,
    pub user: String,
}

/// What the admission script decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Admitted(LeaseMember),
    PerUser,
    Global,
    KeyRevoked,
}

impl Cluster {
    /// One atomic round trip: purge expired leases, check the limits and the revocation,
    /// add the lease.
    pub async fn acquire(
        &self,
        user: &str,
        per_user: usize,
        global: usize,
    ) -> Result<Admission, ClusterError> {
        let member = format!(
            "{}:{}:{}",
            self.hub_id,
            self.boot,
            NEXT_LEASE.fetch_add(1, Ordering::Relaxed)
        );
        let ttl_ms = self.lease_ttl.as_millis() as u64;
        let user_key = keys::user_leases(user);
        let verdict: i64 = self
            .call(|mut c| {
                let mut call = ACQUIRE.prepare_invoke();
                call.key(&user_key)
                    .key(keys::ALL_LEASES)
                    .key(keys::REVOKED)
                    .arg(&member)
                    .arg(ttl_ms)
                    .arg(per_user)
                    .arg(global)
                    .arg(user);
                async move { call.invoke_async(&mut c).await }
            })
            .await?;
        Ok(match verdict {
            1 => Admission::Admitted(LeaseMember {
                member,
                user: user.to_owned(),
            }),
            -1 => Admission::PerUser,
            -3 => Admission::KeyRevoked,
            _ => Admission::Global,
        })
    }

    /// Extends every given lease by the TTL in one round trip; returns how many were lost.
    pub async fn renew(&self, leases: &[LeaseMember]) -> Result<u64, ClusterError> {
        if leases.is_empty() {
            return Ok(0);
        }
        let ttl_ms = self.lease_ttl.as_millis() as u64;
        self.call(|mut c| {
            let mut call = RENEW.prepare_invoke();
            call.key(keys::ALL_LEASES).arg(ttl_ms);
            for lease in leases {
                call.key(keys::user_leases(&lease.user)).arg(&lease.member);
            }
            async move { call.invoke_async(&mut c).await }
        })
        .await
    }

    /// Frees a lease at once (it would expire on its own within the TTL otherwise).
    pub async fn release(&self, lease: &LeaseMember) -> Result<(), ClusterError> {
        let user_key = keys::user_leases(&lease.user);
        self.call(|mut c| {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .zrem(&user_key, &lease.member)
                .ignore()
                .zrem(keys::ALL_LEASES, &lease.member)
                .ignore();
            async move { pipe.query_async::<()>(&mut c).await }
        })
        .await
    }

    /// Which of `key_ids` were revoked (a hub catching up on revocations it missed).
    pub async fn revoked_among(&self, key_ids: &[String]) -> Result<Vec<String>, ClusterError> {
        if key_ids.is_empty() {
            return Ok(Vec::new());
        }
        let flags: Vec<bool> = self
            .call(|mut c| async move {
                redis::cmd("SMISMEMBER")
                    .arg(keys::REVOKED)
                    .arg(key_ids)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(key_ids
            .iter()
            .zip(flags)
            .filter(|(_, revoked)| *revoked)
            .map(|(key, _)| key.clone())
            .collect())
    }

    /// Refuses the key admissions and tickets on every hub from now on.
    pub async fn mark_revoked(&self, key_id: &str) -> Result<(), ClusterError> {
        self.call(|mut c| async move {
            redis::cmd("SADD")
                .arg(keys::REVOKED)
                .arg(key_id)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }
}
