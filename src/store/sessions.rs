//! Browser sign-in sessions (`sessions` table): an opaque cookie value that stands for one
//! API key until the session is idle too long, reaches its absolute end, is signed out, or
//! its key is revoked.
//!
//! Only the SHA-256 digest of the value is stored. Every lookup joins the key and checks
//! `revoked_at`, so revoking a key ends its sessions with no other step. The sliding expiry
//! moves `last_seen_at` at most once per [`SessionTimes::refresh_after`], so a busy page does
//! not write on every request.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{KeyOwner, Store};

/// How long sessions last. Both bounds hold: the earlier one ends the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimes {
    /// A session unused for this long ends (sliding).
    pub idle: Duration,
    /// A session ends this long after sign-in, however busy (absolute).
    pub max: Duration,
}

impl SessionTimes {
    /// How stale `last_seen_at` may be before a request moves it: a minute, or a quarter of
    /// a short idle timeout, so the idle timeout is off by at most that much.
    pub fn refresh_after(&self) -> Duration {
        Duration::from_secs(60).min(self.idle / 4)
    }
}

/// A live session: whose it is, and what `GET /api/v1/session` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub owner: KeyOwner,
    pub key_name: String,
    pub tenant_name: String,
    /// The absolute end, RFC 3339 in UTC.
    pub expires_at: String,
}

/// The cookie value: 244 random bits (two v4 UUIDs, from the OS's generator), prefixed so a
/// leaked one is easy to recognise.
fn generate_token() -> String {
    format!("rss_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The session's name outside the table (hub connections, the cluster's control channel):
/// the digest the table keys it by, in hex. It does not open the session; the cookie does.
pub fn session_name(token: &str) -> String {
    use std::fmt::Write;
    digest(token)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn now_ms() -> i64 {
    // A clock before 1970 is a broken clock; treating it as 1970 ends every session early,
    // which is the safe side.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

impl Store {
    /// Starts a session for a key and returns the cookie value (the only time it exists
    /// outside the browser). Sessions that have ended are deleted on the way, so the table
    /// holds only live ones plus those that ended since the last sign-in.
    pub async fn create_session(
        &self,
        key_id: &str,
        times: SessionTimes,
    ) -> Result<String, sqlx::Error> {
        let now = now_ms();
        let token = generate_token();
        on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at <= $1 - $2 \
                 OR key_id IN (SELECT id FROM api_keys WHERE revoked_at IS NOT NULL)",
            )
            .bind(now)
            .bind(millis(times.idle))
            .execute(pool)
            .await?;
            sqlx::query(
                "INSERT INTO sessions (id_hash, key_id, created_at, last_seen_at, expires_at) \
                 VALUES ($1, $2, $3, $3, $4)",
            )
            .bind(&digest(&token)[..])
            .bind(key_id)
            .bind(now)
            .bind(now.saturating_add(millis(times.max)))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(token)
    }

    /// The live session behind a cookie value, or None (unknown, ended, or its key revoked).
    /// Moves the idle expiry forward when it is older than [`SessionTimes::refresh_after`].
    pub async fn session(
        &self,
        token: &str,
        times: SessionTimes,
    ) -> Result<Option<SessionInfo>, sqlx::Error> {
        crate::telemetry::timed("auth_session", async {
            let now = now_ms();
            let hash = digest(token);
            type Row = (String, String, bool, bool, String, String, i64, String);
            let row: Option<Row> = on_pool!(self, pool, d => {
                sqlx::query_as(&format!(
                    "SELECT k.id, k.tenant_id, k.is_admin, k.is_operator, k.name, t.name, \
                            s.last_seen_at, {} \
                     FROM sessions s \
                     JOIN api_keys k ON k.id = s.key_id \
                     JOIN tenants t ON t.id = k.tenant_id \
                     WHERE s.id_hash = $1 AND k.revoked_at IS NULL \
                       AND s.expires_at > $2 AND s.last_seen_at > $2 - $3",
                    d.session_expiry_text
                ))
                .bind(&hash[..])
                .bind(now)
                .bind(millis(times.idle))
                .fetch_optional(pool)
                .await?
            });
            let Some((
                key_id,
                tenant_id,
                is_admin,
                is_operator,
                key_name,
                tenant_name,
                last_seen,
                expires_at,
            )) = row
            else {
                return Ok(None);
            };
            if now.saturating_sub(last_seen) >= millis(times.refresh_after()) {
                on_pool!(self, pool => {
                    sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2")
                        .bind(now)
                        .bind(&hash[..])
                        .execute(pool)
                        .await?
                        .rows_affected()
                });
            }
            Ok(Some(SessionInfo {
                owner: KeyOwner {
                    key_id,
                    tenant_id,
                    is_admin,
                    is_operator,
                    session: Some(session_name(token)),
                },
                key_name,
                tenant_name,
                expires_at,
            }))
        })
        .await
    }

    /// Signs a session out; false when no session had that value.
    pub async fn delete_session(&self, token: &str) -> Result<bool, sqlx::Error> {
        let done = on_pool!(self, pool => {
            sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
                .bind(&digest(token)[..])
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_expiry_moves_at_most_once_a_minute() {
        let times = |idle| SessionTimes {
            idle: Duration::from_secs(idle),
            max: Duration::from_secs(86_400),
        };
        assert_eq!(times(28_800).refresh_after(), Duration::from_secs(60));
        assert_eq!(times(120).refresh_after(), Duration::from_secs(30));
    }

    #[test]
    fn tokens_are_long_random_and_recognisable() {
        let a = generate_token();
        assert!(a.starts_with("rss_"));
        assert_eq!(a.len(), 4 + 64);
        assert_ne!(a, generate_token());
    }
}
