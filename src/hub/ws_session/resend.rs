//! What a SignalR connection with stateful reconnect has sent and the client has not yet
//! acknowledged, kept so that a reconnect can send it again.
//!
//! Hub messages (invocations, stream items, completions) are numbered from 1 in the order
//! they go out, across every socket of the logical connection. A WebSocket message may batch
//! several of them; it is kept whole, as the run of sequence ids it carries, and dropped once
//! the client has acknowledged its last one. A replay may therefore start with messages the
//! client already has: the `Sequence` message names the first id replayed and the client
//! ignores ids it has processed, as the protocol asks.

use std::collections::VecDeque;

use bytestring::ByteString;

use crate::protocol::signalr;

/// More unacknowledged bytes than the bound: the client is not acknowledging, and a
/// reconnect could not be served without a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unacknowledged;

struct Kept {
    first: u64,
    last: u64,
    text: ByteString,
}

pub struct ResendBuffer {
    /// The sequence id of the next hub message.
    next: u64,
    kept: VecDeque<Kept>,
    bytes: usize,
    max_bytes: usize,
}

impl ResendBuffer {
    pub fn new(max_bytes: usize) -> ResendBuffer {
        ResendBuffer {
            next: 1,
            kept: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Numbers the hub messages of `text` (whole records, each a hub message) and keeps
    /// it until they are acknowledged. The returned text shares its bytes with the kept one.
    pub fn keep(&mut self, text: String) -> Result<ByteString, Unacknowledged> {
        let count = signalr::record_count(&text);
        if count == 0 {
            return Ok(text.into());
        }
        if self.bytes + text.len() > self.max_bytes {
            return Err(Unacknowledged);
        }
        let text = ByteString::from(text);
        self.bytes += text.len();
        self.kept.push_back(Kept {
            first: self.next,
            last: self.next + count - 1,
            text: text.clone(),
        });
        self.next += count;
        Ok(text)
    }

    /// The client has processed every hub message up to `sequence_id`.
    pub fn ack(&mut self, sequence_id: u64) {
        while let Some(front) = self.kept.front() {
            if front.last > sequence_id {
                break;
            }
            self.bytes -= front.text.len();
            self.kept.pop_front();
        }
    }

    /// What a reconnected socket gets first: the `Sequence` id (the first id replayed, or
    /// the next one when nothing is waiting) and the messages to send again, in order.
    pub fn replay(&self) -> (u64, impl Iterator<Item = ByteString> + '_) {
        let first = self.kept.front().map_or(self.next, |k| k.first);
        (first, self.kept.iter().map(|k| k.text.clone()))
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(t: &str) -> String {
        signalr::receive_token(t)
    }

    fn replayed(buf: &ResendBuffer) -> (u64, Vec<String>) {
        let (first, texts) = buf.replay();
        (first, texts.map(|t| t.to_string()).collect())
    }

    #[test]
    fn messages_are_numbered_from_one_and_an_ack_drops_what_it_covers() {
        let mut buf = ResendBuffer::new(1 << 20);
        assert_eq!(
            replayed(&buf),
            (1, vec![]),
            "nothing sent: the next id is 1"
        );
        let batch = format!("{}{}", token("a"), token("b"));
        buf.keep(batch.clone()).unwrap(); // ids 1 and 2
        buf.keep(token("c")).unwrap(); // id 3
        assert_eq!(replayed(&buf), (1, vec![batch.clone(), token("c")]));

        buf.ack(1);
        assert_eq!(
            replayed(&buf),
            (1, vec![batch, token("c")]),
            "a batch is kept until its last message is acknowledged"
        );
        buf.ack(2);
        assert_eq!(replayed(&buf), (3, vec![token("c")]));
        buf.ack(3);
        assert_eq!(replayed(&buf), (4, vec![]), "all acknowledged: the next id");
        assert_eq!(buf.bytes(), 0);
        buf.ack(2);
        assert_eq!(replayed(&buf), (4, vec![]), "an old ack changes nothing");
    }

    #[test]
    fn texts_without_records_are_not_numbered() {
        let mut buf = ResendBuffer::new(1 << 20);
        assert_eq!(&*buf.keep(String::new()).unwrap(), "");
        buf.keep(token("a")).unwrap();
        assert_eq!(replayed(&buf).0, 1);
    }

    #[test]
    fn past_the_byte_bound_keeping_fails_and_an_ack_makes_room() {
        let one = token("0123456789");
        let mut buf = ResendBuffer::new(one.len() * 2);
        buf.keep(one.clone()).unwrap();
        buf.keep(one.clone()).unwrap();
        assert_eq!(buf.keep(one.clone()), Err(Unacknowledged));
        assert_eq!(
            replayed(&buf).1.len(),
            2,
            "the refused message was not kept"
        );
        buf.ack(1);
        buf.keep(one.clone()).unwrap();
        assert_eq!(replayed(&buf), (2, vec![one.clone(), one]));
    }
}
