//! Builds the application: store (migrated), providers, the ChatHub, the HTTP server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::dev::Server;
use actix_web::middleware::{Condition, Logger};
use actix_web::{web, App, HttpServer};

use crate::answer::{Answers, Pipeline};
use crate::auth::tickets::{ConnectionGrant, TicketStore, TICKET_TTL};
use crate::cluster::{Cluster, ClusterError};
use crate::config::{ConfigError, Settings};
use crate::hub::{ChatHub, ConnectionSlots, Limits, LogicalConnections};
use crate::providers::Providers;
use crate::rag::ingest::UploadGate;
use crate::routes;
use crate::store::{Bootstrap, Store, StoreWriter};

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
    /// The per-key cap on open WebSocket connections.
    pub connection_slots: ConnectionSlots,
    /// SignalR connections with stateful reconnect, which a `?id=` may come back to.
    pub signalr_connections: Arc<LogicalConnections>,
    /// Admission for document uploads (`RAGSTREAM_MAX_CONCURRENT_UPLOADS`).
    pub uploads: UploadGate,
    /// What the hubs of a cluster share (`REDIS_URL`); `None` for one hub on its own.
    pub cluster: Option<Arc<Cluster>>,
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
        // No answer of this run exists yet: a `streaming` row is one a previous run left
        // behind when it stopped without finishing it (a crash, a kill).
        let interrupted = store.mark_interrupted().await?;
        if interrupted > 0 {
            log::warn!(
                "{interrupted} answer(s) left unfinished by the last run marked interrupted"
            );
        }
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
        let hub = ChatHub::spawn(
            Limits {
                per_user: settings.max_streams_per_user,
                global: settings.max_streams_global,
            },
            cluster.clone(),
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

        let listener = TcpListener::bind(settings.addr)?;
        let port = listener.local_addr()?.port();
        let workers = settings.workers;
        let connection_slots = ConnectionSlots::new(settings.max_connections_per_user);
        let uploads = UploadGate::new(settings.max_concurrent_uploads);
        let state = web::Data::new(AppState {
            uploads,
            store,
            pipeline,
            hub,
            settings,
            tickets,
            connection_tokens,
            connection_slots,
            signalr_connections: LogicalConnections::new(),
            cluster,
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
                // The path only (%U): query strings may carry tickets or SignalR access tokens.
                .wrap(
                    Logger::new(r#"%a "%{METHOD}xi %U" %s %b %Dms"#)
                        .custom_request_replace("METHOD", |req| req.method().to_string()),
                )
                .configure(routes::configure)
        })
        // A stream may legitimately stay open for minutes; shutdown should not wait for it.
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

    /// Serves until the server stops (a signal, or its handle), then waits briefly for the
    /// final writes of answers the stop cut short, so they keep their partial text.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        if !self.state.pipeline.writer().flush(DRAIN_TIMEOUT).await {
            log::warn!("some final answer writes were not done before shutdown");
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
        .expose_headers(["X-Answer-Id"])
        .max_age(3600);
    if origins.iter().any(|o| o == "*") {
        return base.allow_any_origin().send_wildcard();
    }
    origins
        .iter()
        .fold(base, |cors, origin| cors.allowed_origin(origin))
        .supports_credentials()
}
