//! What several hubs share through Redis (`REDIS_URL`): stream admission as expiring leases,
//! single-use tickets, key revocations and the control channel. Without `REDIS_URL` none of
//! this exists and a hub keeps everything in process.
//!
//! Every call is bounded by [`OP_TIMEOUT`]: a Redis that is down or slow turns into
//! [`ClusterError`] (503 `cluster_unavailable` for a new answer) instead of a hang, and the
//! connection manager reconnects on its own once Redis is back. Key layout: [`keys`].

mod admission;
pub mod control;
pub mod keys;
mod logs;
mod tickets;
pub mod views;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;

pub use admission::{Admission, LeaseMember};
pub use logs::{AnswerInfo, LogReader};

/// The longest one Redis round trip may take before the cluster counts as unavailable.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Redis did not answer within {OP_TIMEOUT:?}")]
    Timeout,
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// This hub's handle on the cluster; one per process, shared.
pub struct Cluster {
    hub_id: Arc<str>,
    /// Tells this run's leases from those a previous run under the same hub id left behind.
    boot: String,
    client: redis::Client,
    conn: ConnectionManager,
    lease_ttl: Duration,
}

impl Cluster {
    /// Opens the client without waiting for Redis: a hub starts (not ready) while Redis is
    /// down and becomes ready when it answers. Only a malformed URL fails here.
    pub fn connect(
        url: &str,
        hub_id: Option<&str>,
        lease_ttl: Duration,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let boot = uuid::Uuid::new_v4().simple().to_string();
        let hub_id: Arc<str> = match hub_id {
            Some(id) => id.into(),
            None => format!("hub-{}", &boot[..8]).into(),
        };
        Ok(Arc::new(Cluster {
            hub_id,
            boot: boot[..12].to_owned(),
            client,
            conn,
            lease_ttl,
        }))
    }

    pub fn hub_id(&self) -> &Arc<str> {
        &self.hub_id
    }

    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// One bounded round trip on a clone of the shared connection.
    async fn call<T, F, Fut>(&self, op: F) -> Result<T, ClusterError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        match tokio::time::timeout(OP_TIMEOUT, op(self.conn.clone())).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ClusterError::Timeout),
        }
    }

    /// For `/readyz`: Redis answers.
    pub async fn ping(&self) -> Result<(), ClusterError> {
        self.call(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }
}
