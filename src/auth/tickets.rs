//! Short-lived, single-use tokens that stand for an API key's owner.
//!
//! Browsers cannot put headers on `EventSource` or WebSocket requests, so they trade their
//! key for a ticket (`POST /api/v1/stream-tickets`) and pass `?ticket=`. SignalR's negotiate
//! step hands out connection tokens the same way ([`ConnectionGrant`]). Both live in memory
//! only: a restart invalidates them, which a one-minute lifetime makes harmless. (A
//! connection with SignalR stateful reconnect keeps its token valid for its own reconnects
//! while it lives: that is the hub's `LogicalConnections`, not this store.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::store::KeyOwner;

/// How long a ticket stays valid; DESIGN.md: tickets do not outlive a minute.
pub const TICKET_TTL: Duration = Duration::from_secs(60);

/// Purging on every issue would be O(n) per ticket; past this many entries it is worth it.
const PURGE_ABOVE: usize = 1024;

/// What a SignalR connection token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionGrant {
    pub owner: KeyOwner,
    /// Negotiate agreed to stateful reconnect.
    pub stateful: bool,
}

pub struct TicketStore<T = KeyOwner> {
    prefix: &'static str,
    ttl: Duration,
    entries: Mutex<HashMap<String, (T, Instant)>>,
}

impl<T> TicketStore<T> {
    pub fn new(prefix: &'static str, ttl: Duration) -> Self {
        TicketStore {
            prefix,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn issue(&self, owner: T) -> String {
        let ticket = format!("{}{}", self.prefix, Uuid::new_v4().simple());
        let now = Instant::now();
        // A poisoned lock only means another thread panicked mid-insert; the map is still
        // a valid map, so keep serving.
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() > PURGE_ABOVE {
            entries.retain(|_, (_, expires)| *expires > now);
        }
        entries.insert(ticket.clone(), (owner, now + self.ttl));
        ticket
    }

    /// Returns the owner once; a second redeem, or one after expiry, gets nothing.
    pub fn redeem(&self, ticket: &str) -> Option<T> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (owner, expires) = entries.remove(ticket)?;
        (expires > Instant::now()).then_some(owner)
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
    fn an_expired_ticket_is_refused() {
        let store = TicketStore::new("rst_", Duration::from_millis(0));
        let t = store.issue(owner());
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(store.redeem(&t), None);
    }
}
