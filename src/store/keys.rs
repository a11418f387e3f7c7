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
    pub is_admin: bool,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRecord {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub is_admin: bool,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// A key just created: the only time its plain text exists outside the client.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewKey {
    pub key: String,
    #[serde(flatten)]
    pub record: ApiKeyRecord,
}

fn digest(key: &str) -> [u8; 32] {
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
        let hash = digest(presented);
        let row: Option<(String, String, bool, Vec<u8>)> = sqlx::query_as(
            "SELECT id, tenant_id, is_admin, key_hash FROM api_keys \
             WHERE key_hash = ? AND revoked_at IS NULL",
        )
        .bind(&hash[..])
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(key_id, tenant_id, is_admin, stored)| {
            bool::from(stored.ct_eq(&hash[..])).then_some(KeyOwner {
                key_id,
                tenant_id,
                is_admin,
            })
        }))
    }

    pub async fn create_key(
        &self,
        tenant_id: &str,
        name: &str,
        is_admin: bool,
    ) -> Result<NewKey, sqlx::Error> {
        let key = generate_key();
        let record = self.insert_key(tenant_id, name, is_admin, &key).await?;
        Ok(NewKey { key, record })
    }

    async fn insert_key(
        &self,
        tenant_id: &str,
        name: &str,
        is_admin: bool,
        key: &str,
    ) -> Result<ApiKeyRecord, sqlx::Error> {
        sqlx::query_as::<_, ApiKeyRecord>(
            "INSERT INTO api_keys (id, tenant_id, name, key_hash, is_admin) VALUES (?, ?, ?, ?, ?) \
             RETURNING id, tenant_id, name, is_admin, created_at, revoked_at",
        )
        .bind(Uuid::new_v4().to_string())
        .bind(tenant_id)
        .bind(name)
        .bind(&digest(key)[..])
        .bind(is_admin)
        .fetch_one(&self.pool)
        .await
    }

    pub async fn list_keys(
        &self,
        tenant_id: Option<&str>,
    ) -> Result<Vec<ApiKeyRecord>, sqlx::Error> {
        sqlx::query_as::<_, ApiKeyRecord>(
            "SELECT id, tenant_id, name, is_admin, created_at, revoked_at FROM api_keys \
             WHERE ?1 IS NULL OR tenant_id = ?1 ORDER BY created_at",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Returns false when no live key has that id.
    pub async fn revoke_key(&self, key_id: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
             WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(key_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Makes sure an admin key exists for the default tenant. With a configured key, that key
    /// is registered (once); without one, a key is generated on first start and returned so
    /// the caller can show it. Returns `None` when nothing new was generated.
    pub async fn bootstrap_admin(
        &self,
        tenant_id: &str,
        configured: Option<&str>,
    ) -> Result<Option<String>, sqlx::Error> {
        if let Some(key) = configured {
            if self.authenticate(key).await?.is_none() {
                self.insert_key(
                    tenant_id,
                    "bootstrap admin (RAGSTREAM_ADMIN_KEY)",
                    true,
                    key,
                )
                .await?;
            }
            return Ok(None);
        }
        let existing: Option<(String,)> = sqlx::query_as(
            "SELECT id FROM api_keys WHERE tenant_id = ? AND is_admin = 1 AND revoked_at IS NULL LIMIT 1",
        )
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?;
        if existing.is_some() {
            return Ok(None);
        }
        let created = self.create_key(tenant_id, "bootstrap admin", true).await?;
        Ok(Some(created.key))
    }
}
