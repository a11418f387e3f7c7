use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::Store;

/// Who a valid key belongs to. Each key is one user for stream limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    pub key_id: String,
    pub tenant_id: String,
    /// Administers its own tenant (an operator administers every tenant).
    pub is_admin: bool,
    /// Creates tenants and administers every tenant; always an admin too.
    pub is_operator: bool,
    /// The browser session the request was authenticated with (its id's digest, hex, as
    /// the store keeps it), also through a ticket or SignalR token minted with it: what it
    /// opens ends when that session is signed out. None for an API key.
    pub session: Option<String>,
}

/// What a key may do, strongest last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Asks questions and manages the documents and conversations of its tenant.
    User,
    /// A user who also administers its own tenant: keys, streams, connections, stats.
    Admin,
    /// An admin of every tenant, who also creates tenants.
    Operator,
}

impl KeyOwner {
    pub fn role(&self) -> Role {
        match (self.is_operator, self.is_admin) {
            (true, _) => Role::Operator,
            (false, true) => Role::Admin,
            (false, false) => Role::User,
        }
    }

    /// Whether this key may administer `tenant_id`: an operator any, an admin its own.
    pub fn administers(&self, tenant_id: &str) -> bool {
        self.is_operator || (self.is_admin && self.tenant_id == tenant_id)
    }
}

/// What the start did about the bootstrap operator key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// An operator key exists: the configured one (registered now or earlier) or another.
    Ready,
    /// The configured key was revoked (at this time) and stays revoked.
    Revoked { at: String },
    /// No key was configured and no live operator key existed: this one was made now, and
    /// this is the only time its plain text exists.
    Generated(String),
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRecord {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub is_admin: bool,
    pub is_operator: bool,
    pub created_at: String,
    pub revoked_at: Option<String>,
    /// Output tokens the key may use per calendar month (UTC); `null`: no budget.
    pub monthly_output_token_budget: Option<i64>,
}

/// A key just created: the only time its plain text exists outside the client.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewKey {
    pub key: String,
    #[serde(flatten)]
    pub record: ApiKeyRecord,
}

pub(crate) fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// 244 random bits from two v4 UUIDs, prefixed so a leaked key is easy to recognise.
fn generate_key() -> String {
    format!("rsk_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

impl Store {
    /// Resolves a presented key. The lookup is by SHA-256 digest, so timing reveals nothing
    /// about the key itself; the final comparison is constant-time all the same.
    pub async fn authenticate(&self, presented: &str) -> Result<Option<KeyOwner>, sqlx::Error> {
        self.authenticate_digest(&digest(presented)).await
    }

    /// [`Store::authenticate`] for a key already digested ([`digest`]).
    pub async fn authenticate_digest(
        &self,
        hash: &[u8; 32],
    ) -> Result<Option<KeyOwner>, sqlx::Error> {
        crate::telemetry::timed("auth_key", async {
            let row: Option<(String, String, bool, bool, Vec<u8>)> = on_pool!(self, pool => {
                sqlx::query_as(
                    "SELECT id, tenant_id, is_admin, is_operator, key_hash FROM api_keys \
                     WHERE key_hash = $1 AND revoked_at IS NULL",
                )
                .bind(&hash[..])
                .fetch_optional(pool)
                .await?
            });
            Ok(
                row.and_then(|(key_id, tenant_id, is_admin, is_operator, stored)| {
                    bool::from(stored.ct_eq(&hash[..])).then_some(KeyOwner {
                        key_id,
                        tenant_id,
                        is_admin: is_admin || is_operator,
                        is_operator,
                        session: None,
                    })
                }),
            )
        })
        .await
    }

    pub async fn create_key(
        &self,
        tenant_id: &str,
        name: &str,
        role: Role,
    ) -> Result<NewKey, sqlx::Error> {
        let key = generate_key();
        let record = self.insert_key(tenant_id, name, role, &key).await?;
        Ok(NewKey { key, record })
    }

    async fn insert_key(
        &self,
        tenant_id: &str,
        name: &str,
        role: Role,
        key: &str,
    ) -> Result<ApiKeyRecord, sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, ApiKeyRecord>(
                "INSERT INTO api_keys (id, tenant_id, name, key_hash, is_admin, is_operator) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 RETURNING id, tenant_id, name, is_admin, is_operator, created_at, revoked_at, monthly_output_token_budget",
            )
            .bind(Uuid::new_v4().to_string())
            .bind(tenant_id)
            .bind(name)
            .bind(&digest(key)[..])
            .bind(role != Role::User)
            .bind(role == Role::Operator)
            .fetch_one(pool)
            .await
        })
    }

    /// One key's record, revoked or not.
    pub async fn get_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, ApiKeyRecord>(
                "SELECT id, tenant_id, name, is_admin, is_operator, created_at, revoked_at, monthly_output_token_budget \
                 FROM api_keys WHERE id = $1",
            )
            .bind(key_id)
            .fetch_optional(pool)
            .await
        })
    }

    pub async fn list_keys(
        &self,
        tenant_id: Option<&str>,
    ) -> Result<Vec<ApiKeyRecord>, sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, ApiKeyRecord>(
                "SELECT id, tenant_id, name, is_admin, is_operator, created_at, revoked_at, monthly_output_token_budget \
                 FROM api_keys WHERE $1 IS NULL OR tenant_id = $1 ORDER BY created_at",
            )
            .bind(tenant_id)
            .fetch_all(pool)
            .await
        })
    }

    /// Returns false when no live key has that id.
    pub async fn revoke_key(&self, key_id: &str) -> Result<bool, sqlx::Error> {
        let done = on_pool!(self, pool, d => {
            sqlx::query(&format!(
                "UPDATE api_keys SET revoked_at = {} WHERE id = $1 AND revoked_at IS NULL",
                d.now_text
            ))
            .bind(key_id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done > 0)
    }

    /// Makes sure an operator key exists. A configured key is registered once, as an
    /// operator of the `default` tenant; once revoked it stays revoked (a restart must not
    /// bring back a key an operator took away). Without one, a key is generated when no live
    /// operator key exists, and returned so the caller can show it.
    pub async fn bootstrap_admin(
        &self,
        tenant_id: &str,
        configured: Option<&str>,
    ) -> Result<Bootstrap, sqlx::Error> {
        if let Some(key) = configured {
            let known: Option<(String, Option<String>)> = on_pool!(self, pool => {
                sqlx::query_as("SELECT id, revoked_at FROM api_keys WHERE key_hash = $1")
                    .bind(&digest(key)[..])
                    .fetch_optional(pool)
                    .await?
            });
            match known {
                Some((_, Some(at))) => return Ok(Bootstrap::Revoked { at }),
                // Registered before roles existed, or made an ordinary key since: the
                // configured key is the operator's by definition.
                Some((id, None)) => {
                    on_pool!(self, pool => {
                        sqlx::query(
                            "UPDATE api_keys SET is_admin = TRUE, is_operator = TRUE \
                             WHERE id = $1",
                        )
                        .bind(&id)
                        .execute(pool)
                        .await?
                        .rows_affected()
                    });
                }
                None => {
                    let inserted = self
                        .insert_key(
                            tenant_id,
                            "bootstrap admin (RAGSTREAM_ADMIN_KEY)",
                            Role::Operator,
                            key,
                        )
                        .await;
                    match inserted {
                        Ok(_) => {}
                        // Another hub sharing the database registered it at the same moment.
                        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            return Ok(Bootstrap::Ready);
        }
        let existing: Option<(String,)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id FROM api_keys WHERE is_operator AND revoked_at IS NULL LIMIT 1",
            )
            .fetch_optional(pool)
            .await?
        });
        if existing.is_some() {
            return Ok(Bootstrap::Ready);
        }
        let created = self
            .create_key(tenant_id, "bootstrap admin", Role::Operator)
            .await?;
        Ok(Bootstrap::Generated(created.key))
    }
}
