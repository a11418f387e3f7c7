use serde::Serialize;
use uuid::Uuid;

use super::Store;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

/// The tenant the bootstrap admin key belongs to.
pub const DEFAULT_TENANT: &str = "default";

impl Store {
    pub async fn create_tenant(&self, name: &str) -> Result<Tenant, sqlx::Error> {
        sqlx::query_as::<_, Tenant>(
            "INSERT INTO tenants (id, name) VALUES (?, ?) RETURNING id, name, created_at",
        )
        .bind(Uuid::new_v4().to_string())
        .bind(name)
        .fetch_one(&self.pool)
        .await
    }

    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, sqlx::Error> {
        sqlx::query_as::<_, Tenant>("SELECT id, name, created_at FROM tenants ORDER BY created_at")
            .fetch_all(&self.pool)
            .await
    }

    pub async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>, sqlx::Error> {
        sqlx::query_as::<_, Tenant>("SELECT id, name, created_at FROM tenants WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn tenant_exists(&self, id: &str) -> Result<bool, sqlx::Error> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM tenants WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// The `default` tenant, whose id is its name so it is stable across restarts.
    pub async fn ensure_default_tenant(&self) -> Result<String, sqlx::Error> {
        sqlx::query("INSERT OR IGNORE INTO tenants (id, name) VALUES (?, ?)")
            .bind(DEFAULT_TENANT)
            .bind(DEFAULT_TENANT)
            .execute(&self.pool)
            .await?;
        Ok(DEFAULT_TENANT.to_owned())
    }
}
