use actix::Addr;

use super::chat_hub::ChatHub;
use super::messages::Release;

/// An admitted stream's slot. Dropping it releases the slot, so every way an answer can
/// end (done, error, cancel, disconnect, panic, an admission reply nobody received)
/// releases exactly once.
#[derive(Debug)]
pub struct Lease {
    pub(super) id: u64,
    pub(super) hub: Addr<ChatHub>,
}

impl Lease {
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // do_send ignores the mailbox bound, which is what a release needs: it must never be
        // dropped, and releases are few (one per answer, never per token).
        self.hub.do_send(Release { lease_id: self.id });
    }
}
