//! The ChatHub actor and the per-connection session actors.
//!
//! The hub decides (admission, registry, stats) and never touches a token; sessions own
//! their sockets and turn answer events into frames of their protocol.

mod chat_hub;
mod connection_slots;
pub mod history;
mod key_watch;
mod lease;
pub mod messages;
mod sse_session;
mod ws_session;

pub use chat_hub::{ChatHub, HubStats, Limits};
pub use connection_slots::{ConnectionSlot, ConnectionSlots};
pub use key_watch::KeyWatch;
pub use lease::Lease;
pub use sse_session::{SseSession, SseTiming};
pub use ws_session::{
    pump, LogicalConnections, Reattach, ReconnectGrant, Socket, WsSession, WsSettings,
};

use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// Sessions name themselves, so registering needs no round trip to the hub.
pub fn next_session_id() -> u64 {
    NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed)
}

use actix::Addr;

use crate::error::ApiError;
use crate::store::KeyOwner;

/// Asks the hub for a stream slot on behalf of a key's owner.
pub async fn admit(
    hub: &Addr<ChatHub>,
    owner: &KeyOwner,
    session_id: Option<u64>,
    transport: &'static str,
) -> Result<Lease, ApiError> {
    hub.send(messages::Admit {
        user: owner.key_id.clone(),
        tenant: owner.tenant_id.clone(),
        session_id,
        transport,
    })
    .await
    .map_err(|_| ApiError::Unavailable)?
    .map_err(ApiError::from)
}
