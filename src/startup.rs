//! Builds the application: store (migrated), providers, the ChatHub, the HTTP server.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::dev::Server;
use actix_web::middleware::{from_fn, Condition};
use actix_web::{web, App, HttpServer};

use crate::answer::{Answers, Pipeline};
use crate::auth::key_cache::KeyCache;
use crate::auth::tickets::{ConnectionGrant, TicketStore, TICKET_TTL};
use crate::cluster::{Cluster, ClusterError};
use crate::config::{ConfigError, Settings};
use crate::drain::{self, DrainTargets, Draining};
use crate::hub::{ChatHub, ConnectionSlots, Limits, LogicalConnections};
use crate::listener;
use crate::providers::Providers;
use crate::rag::ingest::UploadGate;
use crate::rate_limit::{RateLimits, RETAIN_EVERY};
use crate::store::{Bootstrap, HubPresence, Store, StoreWriter};
use crate::usage::UsageRecorder;
use crate::{request_id, routes};

/// How long a stopping hub waits for the final writes of the answers the stop cut short.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Shared by every handler (one instance for all workers).
pub struct AppState {
    pub store: Store,
    pub pipeline: Pipeline,
    pub hub: Addr<ChatHub>,
    pub settings: Settings,
    /// Single-use stream tickets for browsers (`?ticket=`).
    pub tickets: TicketStore,
    /// SignalR connection tokens handed out by negotiate, redeemed by `?id=`.
    pub connection_tokens: TicketStore<ConnectionGrant>,
    /// API keys verified in the last few seconds (cleared of a key when it is revoked).
    pub key_cache: KeyCache,
    /// The per-key cap on open WebSocket connections.
    pub connection_slots: ConnectionSlots,
    /// SignalR connections with stateful reconnect, which a `?id=` may come back to.
    pub signalr_connections: Arc<LogicalConnections>,
    /// Admission for document uploads (`RAGSTREAM_MAX_CONCURRENT_UPLOADS`).
    pub uploads: UploadGate,
    /// Set when a shutdown begins: not ready, no new answers.
    pub draining: Draining,
    /// Request-rate limits per key (answers are checked at admission, by the hub).
    pub rate_limits: Arc<RateLimits>,
    /// This hub's heartbeat in the store, and the clean-up after dead hubs.
    pub presence: HubPresence,
    /// What the hubs of a cluster share (`REDIS_URL`); `None` for one hub on its own.
    pub cluster: Option<Arc<Cluster>>,
    /// Usage accounting and budgets (off: records nothing, refuses nothing).
    pub usage: UsageRecorder,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("bad setting {0}")]
    Config(#[from] ConfigError),
    #[error("the database could not be opened or migrated: {0}")]
    Database(#[from] sqlx::Error),
    #[error("REDIS_URL: {0}")]
    Cluster(#[from] ClusterError),
    #[error("the address could not be bound: {0}")]
    Bind(#[from] std::io::Error),
}

pub struct Application {
    port: u16,
    server: Server,
    generated_admin_key: Option<String>,
    state: web::Data<AppState>,
}

impl Application {
    /// Opens and migrates the store (failing now, not at the first request), makes sure the
    /// bootstrap admin key exists, builds the providers, starts the hub and binds the
    /// listener.
    pub async fn build(settings: Settings) -> Result<Application, StartError> {
        let store = Store::connect(&settings.database_url).await?;
        crate::telemetry::install();
        log::info!("store: {} (hub {})", store.backend(), store.hub_id());
        // Beats this hub's heartbeat, and cleans up (now, then every beat) after hubs whose
        // heartbeat lapsed: the answers a crash or a kill left `streaming`, the uploads it
        // left `loading`. A live hub's rows are never touched.
        let presence = HubPresence::start(store.clone(), settings.lease_ttl);
        let tenant = store.ensure_default_tenant().await?;
        let generated_admin_key = match store
            .bootstrap_admin(&tenant, settings.admin_key.as_deref())
            .await?
        {
            Bootstrap::Ready => None,
            Bootstrap::Generated(key) => Some(key),
            Bootstrap::Revoked { at } => {
                log::warn!(
                    "RAGSTREAM_ADMIN_KEY was revoked at {at} and stays revoked; \
                     set a new value to register a new operator key"
                );
                None
            }
        };

        let providers = Arc::new(Providers::from_settings(&settings)?);
        log::info!(
            "providers: {} (failover in this order)",
            providers.names().join(", ")
        );
        // One slot per answer that can run at once: a running conversation answer holds
        // one from its start until its final write is queued, so slots run out only when
        // the database falls behind, and then new answers wait at their start instead of
        // the queue growing without bound.
        let writer = StoreWriter::start(store.clone(), settings.max_streams_global);
        let cluster = match &settings.redis_url {
            Some(url) => {
                let cluster =
                    Cluster::connect(url.expose(), settings.hub_id.as_deref(), settings.lease_ttl)?;
                log::info!("cluster mode: hub {} on Redis", cluster.hub_id());
                Some(cluster)
            }
            None => None,
        };
        let pipeline = Pipeline::new(
            store.clone(),
            providers,
            writer,
            settings.history_budget_chars,
            Answers::new(settings.resume_grace),
            settings.answer_log_max_bytes,
        )
        .with_cluster(cluster.clone());
        let rate_limits = Arc::new(RateLimits::new(
            settings.rate_per_minute,
            settings.upload_rate_per_minute,
        ));
        if !rate_limits.is_off() {
            let limits = Arc::downgrade(&rate_limits);
            actix_web::rt::spawn(async move {
                let mut every = actix_web::rt::time::interval(RETAIN_EVERY);
                while let Some(limits) = {
                    every.tick().await;
                    limits.upgrade()
                } {
                    limits.retain_recent();
                }
            });
        }
        let usage = if settings.usage_accounting {
            UsageRecorder::start(store.clone()).await
        } else {
            UsageRecorder::off()
        };
        let hub = ChatHub::spawn_with_usage(
            Limits {
                per_user: settings.max_streams_per_user,
                global: settings.max_streams_global,
                rate: rate_limits.clone(),
                sample_interval: settings.admin_sample_interval,
            },
            cluster.clone(),
            usage.clone(),
        );
        let (tickets, connection_tokens) = match &cluster {
            Some(c) => (
                TicketStore::shared("rst_", TICKET_TTL, c.clone()),
                TicketStore::shared("rsc_", TICKET_TTL, c.clone()),
            ),
            None => (
                TicketStore::new("rst_", TICKET_TTL),
                TicketStore::new("rsc_", TICKET_TTL),
            ),
        };

        let listener = listener::bind(settings.addr, settings.tcp_notsent_lowat)?;
        let port = listener.local_addr()?.port();
        let workers = settings.workers;
        let connection_slots = ConnectionSlots::new(settings.max_connections_per_user);
        let uploads = UploadGate::new(settings.max_concurrent_uploads);
        let state = web::Data::new(AppState {
            presence,
            uploads,
            store,
            pipeline,
            hub,
            settings,
            tickets,
            key_cache: KeyCache::default(),
            connection_tokens,
            connection_slots,
            signalr_connections: LogicalConnections::new(),
            draining: Draining::default(),
            rate_limits,
            cluster,
            usage,
        });
        if let Some(cluster) = &state.cluster {
            let control_state = state.clone();
            let catch_up_state = state.clone();
            cluster.listen(
                move |control| routes::admin::on_control(&control_state, control),
                move || routes::admin::catch_up_on_revocations(catch_up_state.clone()),
            );
        }
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .wrap(Condition::new(
                    !app_state.settings.cors_origins.is_empty(),
                    cors(&app_state.settings.cors_origins),
                ))
                .configure(routes::configure)
                // Outermost: every response, CORS refusals included, gets its id and its
                // access line.
                .wrap(from_fn(request_id::tag))
        })
        // Signals drive the drain (`run_until_stopped`), which stops the server itself once
        // the answers have ended; what is still open then gets this long to finish writing.
        .disable_signals()
        .shutdown_timeout(5)
        // A client's EOF ends its connection at once. With half-closed connections allowed,
        // actix keeps a streaming response alive until its next write fails, so a client that
        // leaves during a long wait for the first token would keep the upstream running.
        .h1_allow_half_closed(false)
        // Tokens are small writes; with Nagle's algorithm one written while the previous is
        // unacknowledged waits for the client's delayed ACK (up to 40 ms on Linux).
        .tcp_nodelay(true);
        if workers > 0 {
            server = server.workers(workers);
        }
        let server = server.listen(listener)?.run();
        Ok(Application {
            port,
            server,
            generated_admin_key,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin key made at first start, if this start made one. Shown once, never logged.
    pub fn generated_admin_key(&self) -> Option<&str> {
        self.generated_admin_key.as_deref()
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until SIGTERM or SIGINT, then drains (see [`crate::drain`]): answers in flight
    /// get `RAGSTREAM_SHUTDOWN_GRACE_SECS` to finish, the rest end with `server_shutdown`
    /// and keep their partial text, connections are told to reconnect elsewhere, the server
    /// stops and the final writes are flushed.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let mut server = actix_web::rt::spawn(self.server);
        let signal = tokio::select! {
            result = &mut server => return self.state.finish(joined(result)).await,
            signal = drain::shutdown_signal() => signal,
        };
        log::info!("{signal} received: draining");
        let state = &self.state;
        drain::drain(DrainTargets {
            draining: &state.draining,
            hub: &state.hub,
            answers: state.pipeline.answers(),
            grace: state.settings.shutdown_grace,
        })
        .await;
        handle.stop(true).await;
        let result = joined(server.await);
        log::info!("stopped");
        self.state.finish(result).await
    }
}

fn joined(
    result: Result<std::io::Result<()>, actix_web::rt::task::JoinError>,
) -> std::io::Result<()> {
    result.unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

impl AppState {
    /// Waits briefly for the final writes of answers a stop cut short, so they keep their
    /// partial text.
    async fn finish(&self, result: std::io::Result<()>) -> std::io::Result<()> {
        if !self.pipeline.writer().flush(DRAIN_TIMEOUT).await {
            log::warn!("some final answer writes were not done before shutdown");
        }
        // After the drain every answer has released its slot, so its record is queued.
        if !self.usage.flush(DRAIN_TIMEOUT).await {
            log::warn!("some usage records were not written before shutdown");
        }
        // Gone at once for the other hubs: what this stop left unfinished is cleaned up
        // at their next beat rather than after the lease.
        self.presence.stop();
        if let Err(e) = self.store.deregister().await {
            log::warn!("the hub could not deregister: {e}");
        }
        result
    }
}

/// Lets pages on the configured origins call the API, SignalR's negotiate included (its
/// client sends credentials and custom headers, so preflights must succeed).
///
/// `*` answers a literal `*` and never allows credentials: a page on any origin (`null`
/// included) may call with a key or a ticket it holds, never with the browser's ambient
/// credentials. A list reflects only the origins on it, with credentials.
fn cors(origins: &[String]) -> actix_cors::Cors {
    let base = actix_cors::Cors::default()
        .allow_any_method()
        .allow_any_header()
        // A page on another origin reads the answer id to resume it.
        .expose_headers(["X-Answer-Id", "X-Request-Id"])
        .max_age(3600);
    if origins.iter().any(|o| o == "*") {
        return base.allow_any_origin().send_wildcard();
    }
    origins
        .iter()
        .fold(base, |cors, origin| cors.allowed_origin(origin))
        .supports_credentials()
}
