//! Control messages between hubs on one pub/sub channel: each hub acts on those meant for
//! it (or for every hub). Pub/sub delivers to the hubs listening now; what must also hold
//! for a hub that was cut off (a revoked key) is kept in Redis as well (`{ragstream}:revoked`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{keys, Cluster, ClusterError};

/// Wait before subscribing again after the subscription broke (Redis restarting).
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Control {
    /// Every hub ends what the key holds open.
    RevokeKey { key_id: String },
    /// Every hub ends what a browser session opened (its name: the digest the store keeps,
    /// which does not open it).
    EndBrowserSession { session: String },
    /// The hub `hub` ends its stream (lease) `id`, if in the tenant's scope.
    EndStream {
        hub: String,
        id: u64,
        tenant: Option<String>,
    },
    /// The hub `hub` ends its connection `id`, if in the tenant's scope.
    EndConnection {
        hub: String,
        id: u64,
        tenant: Option<String>,
    },
    /// Whichever hub runs the answer stops it, if the key owns it.
    CancelAnswer { answer_id: String, key_id: String },
    /// A reader on another hub joined (or left) an answer the hub `hub` runs.
    Presence {
        answer_id: String,
        hub: String,
        joined: bool,
    },
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    from: String,
    #[serde(flatten)]
    control: Control,
}

impl Cluster {
    pub async fn publish(&self, control: Control) -> Result<(), ClusterError> {
        let payload = serde_json::to_string(&Envelope {
            from: self.hub_id.to_string(),
            control,
        })
        .map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Client, "encode", e.to_string()))
        })?;
        self.call(|mut c| async move {
            redis::cmd("PUBLISH")
                .arg(keys::CONTROL)
                .arg(payload)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// Delivers every control message another hub publishes, for as long as the process
    /// runs, subscribing again whenever the subscription breaks. `subscribed` runs after
    /// every (re)subscription: what was published meanwhile was missed.
    pub fn listen(
        self: &Arc<Self>,
        deliver: impl Fn(Control) + Send + Sync + 'static,
        subscribed: impl Fn() + Send + Sync + 'static,
    ) {
        let cluster = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = cluster.listen_once(&deliver, &subscribed).await {
                    log::warn!("control channel: {e}; subscribing again");
                }
                tokio::time::sleep(RESUBSCRIBE_DELAY).await;
            }
        });
    }

    async fn listen_once(
        &self,
        deliver: &impl Fn(Control),
        subscribed: &impl Fn(),
    ) -> Result<(), ClusterError> {
        let mut pubsub = tokio::time::timeout(super::OP_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| ClusterError::Timeout)??;
        pubsub.subscribe(keys::CONTROL).await?;
        subscribed();
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let envelope = match serde_json::from_slice::<Envelope>(message.get_payload_bytes()) {
                Ok(envelope) => envelope,
                Err(e) => {
                    log::warn!("control channel: a message that does not parse: {e}");
                    continue;
                }
            };
            if *envelope.from != *self.hub_id {
                deliver(envelope.control);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_shape_on_the_wire() {
        let json = serde_json::to_value(Envelope {
            from: "a".into(),
            control: Control::EndStream {
                hub: "b".into(),
                id: 3,
                tenant: None,
            },
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"from":"a","op":"end_stream","hub":"b","id":3,"tenant":null})
        );
    }
}
