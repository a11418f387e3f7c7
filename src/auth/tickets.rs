//! Short-lived, single-use tokens that stand for an API key's owner.
//!
//! Browsers cannot put headers on `EventSource` or WebSocket requests, so they trade their
//! key for a ticket (`POST /api/v1/stream-tickets`) and pass `?ticket=`. SignalR's negotiate
//! step hands out connection tokens the same way ([`ConnectionGrant`]). Both live in memory
//! only: a restart invalidates them, which a one-minute lifetime makes harmless. (A
//! connection with SignalR stateful reconnect keeps its token valid for its own reconnects
//! while it lives: that is the hub's `LogicalConnections`, not this store.)

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::store::KeyOwner;

/// How long a ticket stays valid; DESIGN.md: tickets do not outlive a minute.
pub const TICKET_TTL: Duration = Duration::from_secs(60);

/// Purging on every issue would be O(n) per ticket; past this many entries it is worth it.
const PURGE_ABOVE: usize = 1024;

/// What a ticket stands for: an API key's owner, and whatever else its kind carries.
pub trait Ticketed {
    fn owner(&self) -> &KeyOwner;
}

impl Ticketed for KeyOwner {
    fn owner(&self) -> &KeyOwner {
        self
    }
}

/// What a SignalR connection token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionGrant {
    pub owner: KeyOwner,
    /// Negotiate agreed to stateful reconnect.
    pub stateful: bool,
}

impl Ticketed for ConnectionGrant {
    fn owner(&self) -> &KeyOwner {
        &self.owner
    }
}

pub struct TicketStore<T = KeyOwner> {
    prefix: &'static str,
    ttl: Duration,
    entries: Mutex<Entries<T>>,
}

struct Entries<T> {
    tickets: HashMap<String, (T, Instant)>,
    /// Keys revoked while this process runs. A request that authenticated just before a
    /// revocation may issue its ticket just after it; this is what keeps that ticket dead.
    /// Small: one id per revocation, and revoked keys never authenticate again.
    revoked_keys: HashSet<String>,
}

impl<T> Default for Entries<T> {
    fn default() -> Self {
        Entries {
            tickets: HashMap::new(),
            revoked_keys: HashSet::new(),
        }
    }
}

impl<T: Ticketed> TicketStore<T> {
    pub fn new(prefix: &'static str, ttl: Duration) -> Self {
        TicketStore {
            prefix,
            ttl,
            entries: Mutex::new(Entries::default()),
        }
    }

    /// Ends every unused ticket of a revoked key, and any it is issued from now on.
    pub fn forget_key(&self, key_id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.revoked_keys.insert(key_id.to_owned());
        entries
            .tickets
            .retain(|_, (ticket, _)| ticket.owner().key_id != key_id);
    }

    pub fn issue(&self, owner: T) -> String {
        let ticket = format!("{}{}", self.prefix, Uuid::new_v4().simple());
        let now = Instant::now();
        // A poisoned lock only means another thread panicked mid-insert; the map is still
        // a valid map, so keep serving.
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.tickets.len() > PURGE_ABOVE {
            entries.tickets.retain(|_, (_, expires)| *expires > now);
        }
        entries
            .tickets
            .insert(ticket.clone(), (owner, now + self.ttl));
        ticket
    }

    /// Returns the owner once; a second redeem, or one after expiry, gets nothing.
    pub fn redeem(&self, ticket: &str) -> Option<T> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (owner, expires) = entries.tickets.remove(ticket)?;
        let revoked = entries.revoked_keys.contains(&owner.owner().key_id);
        (expires > Instant::now() && !revoked).then_some(owner)
    }

    pub fn is_ticket(&self, value: &str) -> bool {
        value.starts_with(self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> KeyOwner {
        KeyOwner {
            key_id: "k".into(),
            tenant_id: "t".into(),
            is_admin: false,
            is_operator: false,
        }
    }

    #[test]
    fn a_ticket_is_redeemed_once() {
        let store = TicketStore::new("rst_", TICKET_TTL);
        let t = store.issue(owner());
        assert!(store.is_ticket(&t));
        assert_eq!(store.redeem(&t), Some(owner()));
        assert_eq!(store.redeem(&t), None);
        assert_eq!(store.redeem("rst_unknown"), None);
    }

    #[test]
    fn a_revoked_keys_tickets_die_even_those_issued_after_the_revocation() {
        let store = TicketStore::new("rst_", TICKET_TTL);
        let mut other = owner();
        other.key_id = "other".into();
        let before = store.issue(owner());
        let kept = store.issue(other.clone());
        store.forget_key("k");
        let after = store.issue(owner());
        assert_eq!(store.redeem(&before), None);
        assert_eq!(store.redeem(&after), None);
        assert_eq!(store.redeem(&kept), Some(other));
    }

    #[test]
    fn an_expired_ticket_is_refused() {
        let store = TicketStore::new("rst_", Duration::from_millis(0));
        let t = store.issue(owner());
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(store.redeem(&t), None);
    }
}
