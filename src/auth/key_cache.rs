//! Verified API keys, kept for a few seconds so a client that opens stream after stream
//! with one key costs one store query per [`TTL`] instead of one per request.
//!
//! A revoked key must stop working at once, so every path that learns of a revocation
//! (the revoke route, another hub's word on the control channel, the catch-up after the
//! control channel was cut off) calls [`KeyCache::forget_key`]; the key id is remembered
//! from then on, so a lookup that read the key as valid just before the revocation cannot
//! put it back. What the cache cannot hear of, a key revoked by hand in the database or by a
//! hub sharing the database without Redis, works here for at most [`TTL`] more.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::{key_digest, KeyOwner, Store};

/// How long a verified key is trusted without asking the store again.
pub const TTL: Duration = Duration::from_secs(10);
/// Far above the keys one hub sees in [`TTL`]; past it the cache starts over rather than
/// growing without bound under a flood of distinct valid keys.
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct KeyCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// By the key's SHA-256 digest: the raw key is never kept.
    verified: HashMap<[u8; 32], (KeyOwner, Instant)>,
    /// Keys revoked while this process runs (one id each; revoked keys never come back).
    revoked: HashSet<String>,
}

impl KeyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The owner of `presented`, from the cache while fresh, else from the store.
    pub async fn authenticate(
        &self,
        store: &Store,
        presented: &str,
    ) -> Result<Option<KeyOwner>, sqlx::Error> {
        let digest = key_digest(presented);
        if let Some(owner) = self.fresh(&digest, Instant::now()) {
            return Ok(Some(owner));
        }
        let owner = store.authenticate_digest(&digest).await?;
        Ok(owner.filter(|owner| self.remember(digest, owner, Instant::now())))
    }

    fn fresh(&self, digest: &[u8; 32], now: Instant) -> Option<KeyOwner> {
        let inner = self.lock();
        inner
            .verified
            .get(digest)
            .filter(|(_, at)| now.duration_since(*at) < TTL)
            .map(|(owner, _)| owner.clone())
    }

    /// Keeps a verified owner; false when its key was revoked meanwhile (the store's answer
    /// is older than the revocation, so the key is refused).
    fn remember(&self, digest: [u8; 32], owner: &KeyOwner, now: Instant) -> bool {
        let mut inner = self.lock();
        if inner.revoked.contains(&owner.key_id) {
            return false;
        }
        if inner.verified.len() >= MAX_ENTRIES {
            inner
                .verified
                .retain(|_, (_, at)| now.duration_since(*at) < TTL);
            if inner.verified.len() >= MAX_ENTRIES {
                inner.verified.clear();
            }
        }
        inner.verified.insert(digest, (owner.clone(), now));
        true
    }

    /// The key was revoked: it is not served from here again.
    pub fn forget_key(&self, key_id: &str) {
        let mut inner = self.lock();
        inner.revoked.insert(key_id.to_owned());
        inner
            .verified
            .retain(|_, (owner, _)| owner.key_id != key_id);
    }

    /// Revocations may have been missed (the control channel was cut off): every key is
    /// asked of the store again.
    pub fn clear(&self) {
        self.lock().verified.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(key_id: &str) -> KeyOwner {
        KeyOwner {
            key_id: key_id.into(),
            tenant_id: "t".into(),
            is_admin: false,
            is_operator: false,
            session: None,
        }
    }

    #[test]
    fn a_verified_key_is_served_until_its_ttl_runs_out() {
        let cache = KeyCache::default();
        let now = Instant::now();
        assert!(cache.remember([1; 32], &owner("k"), now));
        assert_eq!(cache.fresh(&[1; 32], now + TTL / 2), Some(owner("k")));
        assert_eq!(cache.fresh(&[1; 32], now + TTL), None);
        assert_eq!(cache.fresh(&[2; 32], now), None);
    }

    #[test]
    fn a_revoked_key_leaves_the_cache_and_a_late_lookup_cannot_put_it_back() {
        let cache = KeyCache::default();
        let now = Instant::now();
        cache.remember([1; 32], &owner("k"), now);
        cache.remember([2; 32], &owner("other"), now);
        cache.forget_key("k");
        assert_eq!(cache.fresh(&[1; 32], now), None);
        assert_eq!(cache.fresh(&[2; 32], now), Some(owner("other")));
        // A store read that started before the revocation and ends after it.
        assert!(!cache.remember([1; 32], &owner("k"), now));
        assert_eq!(cache.fresh(&[1; 32], now), None);
    }

    #[test]
    fn clearing_forgets_every_key_and_a_full_cache_starts_over() {
        let cache = KeyCache::default();
        let now = Instant::now();
        cache.remember([1; 32], &owner("k"), now);
        cache.clear();
        assert_eq!(cache.fresh(&[1; 32], now), None);
        for i in 0..MAX_ENTRIES {
            let mut digest = [0; 32];
            digest[..8].copy_from_slice(&(i as u64).to_le_bytes());
            cache.remember(digest, &owner("k"), now);
        }
        cache.remember([9; 32], &owner("k"), now);
        assert!(cache.lock().verified.len() <= MAX_ENTRIES);
        assert_eq!(cache.fresh(&[9; 32], now), Some(owner("k")));
    }
}
