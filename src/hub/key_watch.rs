//! Ties a long-lived response that is not a session (the admin event feed) to its API key
//! and browser session, so that revoking the key or signing out ends it as it ends sessions.
//!
//! A small actor registers with the hub and holds one end of a oneshot channel; the
//! response holds the other. Revocation stops the actor, which closes the channel and ends
//! the response; the response ending (the client left) drops its end, which stops the actor
//! and unregisters it. The same two-way tie as [`SseSession`](super::SseSession)'s.

use actix::Handler;
use actix::{fut::wrap_future, Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context};
use tokio::sync::oneshot;

use super::chat_hub::ChatHub;
use super::messages::{Terminate, UnwatchKey, WatchKey};
use crate::store::KeyOwner;

pub struct KeyWatch {
    id: u64,
    key_id: String,
    browser_session: Option<String>,
    hub: Addr<ChatHub>,
    link: Option<oneshot::Sender<()>>,
}

impl KeyWatch {
    /// Watches `owner`'s key (and browser session, if any). The receiver resolves (with an
    /// error) once the key is revoked or the session signed out; dropping it ends the watch.
    pub fn start(owner: &KeyOwner, hub: Addr<ChatHub>) -> oneshot::Receiver<()> {
        let (link, revoked) = oneshot::channel();
        KeyWatch {
            id: super::next_session_id(),
            key_id: owner.key_id.clone(),
            browser_session: owner.session.clone(),
            hub,
            link: Some(link),
        }
        .start();
        revoked
    }
}

impl Actor for KeyWatch {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.hub.do_send(WatchKey {
            watch_id: self.id,
            key_id: self.key_id.clone(),
            browser_session: self.browser_session.clone(),
            terminate: ctx.address().recipient(),
        });
        // Moved into a future of the context: dropped, and so closed, when the actor stops.
        if let Some(mut link) = self.link.take() {
            let gone = wrap_future(async move { link.closed().await });
            ctx.spawn(gone.map(|_, _, ctx: &mut Context<Self>| ctx.stop()));
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.hub.do_send(UnwatchKey { watch_id: self.id });
    }
}

impl Handler<Terminate> for KeyWatch {
    type Result = ();

    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
