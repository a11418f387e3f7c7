use serde::Serialize;
use uuid::Uuid;

use super::Store;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: String,
    /// Output tokens the tenant may use per calendar month (UTC); `null`: no budget.
    pub monthly_output_token_budget: Option<i64>,
}

/// The tenant the bootstrap admin key belongs to.
pub const DEFAULT_TENANT: &str = "default";

impl Store {
    pub async fn create_tenant(&self, name: &str) -> Result<Tenant, sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, Tenant>(
                "INSERT INTO tenants (id, name) VALUES ($1, $2) RETURNING id, name, created_at, monthly_output_token_budget",
            )
            .bind(Uuid::new_v4().to_string())
            .bind(name)
            .fetch_one(pool)
            .await
        })
    }

    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, Tenant>(
                "SELECT id, name, created_at, monthly_output_token_budget FROM tenants ORDER BY created_at",
            )
            .fetch_all(pool)
            .await
        })
    }

    pub async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>, sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, Tenant>("SELECT id, name, created_at, monthly_output_token_budget FROM tenants WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })
    }

    pub async fn tenant_exists(&self, id: &str) -> Result<bool, sqlx::Error> {
        let row: Option<(i64,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT CAST(1 AS BIGINT) FROM tenants WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.is_some())
    }

    /// The `default` tenant, whose id is its name so it is stable across restarts.
    pub async fn ensure_default_tenant(&self) -> Result<String, sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(DEFAULT_TENANT)
            .bind(DEFAULT_TENANT)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(DEFAULT_TENANT.to_owned())
    }
}
