//! Every Redis key and channel the hubs use. All carry the `{ragstream}` hash tag, so they
//! live in one slot of a Redis Cluster and every Lua script touches keys of one slot.
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `{ragstream}:leases:all` | sorted set | every running answer's lease, scored by expiry (ms) |
//! | `{ragstream}:leases:user:<key id>` | sorted set | one key's leases, scored the same |
//! | `{ragstream}:revoked` | set | key ids revoked (refused admission, tickets) |
//! | `{ragstream}:ticket:<token>` | string, TTL | a stream ticket or SignalR connection token |
//! | `{ragstream}:answer:<id>` | hash, TTL | a running answer: key, tenant, hub, ticket |
//! | `{ragstream}:log:<id>` | stream, TTL | its events, entry id `0-<seq>`, field `e` |
//! | `{ragstream}:hubs` | sorted set | live hubs, scored by when their view expires |
//! | `{ragstream}:views` | hash | hub → its streams and connections (JSON) |
//! | `{ragstream}:control` | pub/sub channel | control messages between hubs |

pub const ALL_LEASES: &str = "{ragstream}:leases:all";
pub const REVOKED: &str = "{ragstream}:revoked";
pub const CONTROL: &str = "{ragstream}:control";
pub const HUBS: &str = "{ragstream}:hubs";
pub const VIEWS: &str = "{ragstream}:views";

pub fn user_leases(key_id: &str) -> String {
    format!("{{ragstream}}:leases:user:{key_id}")
}

pub fn ticket(token: &str) -> String {
    format!("{{ragstream}}:ticket:{token}")
}

pub fn answer(id: &str) -> String {
    format!("{{ragstream}}:answer:{id}")
}

pub fn answer_log(id: &str) -> String {
    format!("{{ragstream}}:log:{id}")
}
