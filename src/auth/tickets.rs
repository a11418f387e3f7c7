//! Short-lived, single-use tokens that stand for an API key's owner.
//!
//! Browsers cannot put headers on `EventSource` or WebSocket requests, so they trade their
//! key for a ticket (`POST /api/v1/stream-tickets`) and pass `?ticket=`. SignalR's negotiate
//! step hands out connection tokens the same way ([`ConnectionGrant`]). Both live in memory
//! (a restart invalidates them, which a one-minute lifetime makes harmless), or in a cluster
//! in Redis, so that one issued by any hub is redeemed by any hub, once. (A
//! connection with SignalR stateful reconnect keeps its token valid for its own reconnects
//! while it lives: that is the hub's `LogicalConnections`, not this store.)

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cluster::{Cluster, ClusterError};
use crate::error::ApiError;
use crate::store::KeyOwner;

/// How long a ticket stays valid; DESIGN.md: tickets do not outlive a minute.
pub const TICKET_TTL: Duration = Duration::from_secs(60);

/// Purging on every issue would be O(n) per ticket; past this many entries it is worth it.
const PURGE_ABOVE: usize = 1024;

/// What a ticket stands for: an API key's owner, and whatever else its kind carries.
/// Encoded (as JSON) for a ticket kept in Redis.
pub trait Ticketed: Sized {
    fn owner(&self) -> &KeyOwner;
    fn encode(&self) -> String;
    fn decode(text: &str) -> Option<Self>;
}

/// [`KeyOwner`] on the wire to Redis (the store's type stays free of serde).
#[derive(Serialize, Deserialize)]
struct OwnerJson {
    key: String,
    tenant: String,
    admin: bool,
    operator: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stateful: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<String>,
}

impl OwnerJson {
    fn of(owner: &KeyOwner, stateful: Option<bool>) -> String {
        let json = OwnerJson {
            key: owner.key_id.clone(),
            tenant: owner.tenant_id.clone(),
            admin: owner.is_admin,
            operator: owner.is_operator,
            stateful,
            session: owner.session.clone(),
        };
        serde_json::to_string(&json).unwrap_or_default()
    }

    fn owner(self) -> (KeyOwner, Option<bool>) {
        let owner = KeyOwner {
            key_id: self.key,
            tenant_id: self.tenant,
            is_admin: self.admin,
            is_operator: self.operator,
            session: self.session,
        };
        (owner, self.stateful)
    }
}

impl Ticketed for KeyOwner {
    fn owner(&self) -> &KeyOwner {
        self
    }

    fn encode(&self) -> String {
        OwnerJson::of(self, None)
    }

    fn decode(text: &str) -> Option<Self> {
        let (owner, _) = serde_json::from_str::<OwnerJson>(text).ok()?.owner();
        Some(owner)
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

    fn encode(&self) -> String {
        OwnerJson::of(&self.owner, Some(self.stateful))
    }

    fn decode(text: &str) -> Option<Self> {
        let (owner, stateful) = serde_json::from_str::<OwnerJson>(text).ok()?.owner();
        Some(ConnectionGrant {
            owner,
            stateful: stateful.unwrap_or(false),
        })
    }
}

pub struct TicketStore<T = KeyOwner> {
    prefix: &'static str,
    ttl: Duration,
    entries: Mutex<Entries<T>>,
    /// In a cluster the tickets live in Redis instead of `entries`.
    cluster: Option<Arc<Cluster>>,
}

fn unavailable(e: ClusterError) -> ApiError {
    log::warn!("tickets: {e}");
    ApiError::ClusterUnavailable
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
            cluster: None,
        }
    }

    /// Tickets kept in Redis, shared by every hub.
    pub fn shared(prefix: &'static str, ttl: Duration, cluster: Arc<Cluster>) -> Self {
        TicketStore {
            cluster: Some(cluster),
            ..TicketStore::new(prefix, ttl)
        }
    }

    /// Issues a ticket for `owner`, in Redis when shared.
    pub async fn issue(&self, owner: T) -> Result<String, ApiError> {
        let Some(cluster) = &self.cluster else {
            return Ok(self.issue_local(owner));
        };
        let ticket = self.new_ticket();
        // The key id first: the redeem script checks its revocation without parsing JSON.
        let value = format!("{}\n{}", owner.owner().key_id, owner.encode());
        cluster
            .put_ticket(&ticket, &value, self.ttl)
            .await
            .map_err(unavailable)?;
        Ok(ticket)
    }

    /// Returns the owner once, on any hub; a second redeem, one after expiry, or one of a
    /// revoked key gets nothing.
    pub async fn redeem(&self, ticket: &str) -> Result<Option<T>, ApiError> {
        let Some(cluster) = &self.cluster else {
            return Ok(self.redeem_local(ticket));
        };
        let Some(value) = cluster.take_ticket(ticket).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let owner = value.split_once('\n').and_then(|(_, json)| T::decode(json));
        Ok(owner.filter(|o| !self.is_revoked_here(&o.owner().key_id)))
    }

    fn is_revoked_here(&self, key_id: &str) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.revoked_keys.contains(key_id)
    }

    fn new_ticket(&self) -> String {
        format!("{}{}", self.prefix, Uuid::new_v4().simple())
    }

    /// Ends every unused ticket of a revoked key, and any it is issued from now on.
    pub fn forget_key(&self, key_id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.revoked_keys.insert(key_id.to_owned());
        entries
            .tickets
            .retain(|_, (ticket, _)| ticket.owner().key_id != key_id);
    }

    fn issue_local(&self, owner: T) -> String {
        let ticket = self.new_ticket();
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

    fn redeem_local(&self, ticket: &str) -> Option<T> {
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
            session: None,
        }
    }

    #[test]
    fn a_ticket_is_redeemed_once() {
        let store = TicketStore::new("rst_", TICKET_TTL);
        let t = store.issue_local(owner());
        assert!(store.is_ticket(&t));
        assert_eq!(store.redeem_local(&t), Some(owner()));
        assert_eq!(store.redeem_local(&t), None);
        assert_eq!(store.redeem_local("rst_unknown"), None);
    }

    #[test]
    fn a_revoked_keys_tickets_die_even_those_issued_after_the_revocation() {
        let store = TicketStore::new("rst_", TICKET_TTL);
        let mut other = owner();
        other.key_id = "other".into();
        let before = store.issue_local(owner());
        let kept = store.issue_local(other.clone());
        store.forget_key("k");
        let after = store.issue_local(owner());
        assert_eq!(store.redeem_local(&before), None);
        assert_eq!(store.redeem_local(&after), None);
        assert_eq!(store.redeem_local(&kept), Some(other));
    }

    #[test]
    fn an_expired_ticket_is_refused() {
        let store = TicketStore::new("rst_", Duration::from_millis(0));
        let t = store.issue_local(owner());
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(store.redeem_local(&t), None);
    }
}
