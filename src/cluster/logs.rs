//! Answer logs on Redis Streams, so any hub can serve a resume. The hub that runs an answer
//! registers it (a small hash) and appends its events in batches, one pipelined round trip
//! per batch; readers on other hubs follow the stream with XREAD BLOCK on a connection of
//! their own (a blocking read would hold up everything else on the shared one).

use std::collections::HashMap;
use std::time::Duration;

use std::sync::LazyLock;

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Script};

use super::{keys, Cluster, ClusterError, OP_TIMEOUT};

/// How long a running answer's hash and stream live without an end (a hub that died
/// mid-answer leaves nothing behind for longer).
const RUNNING_TTL: Duration = Duration::from_secs(3600);
/// Entries a stream keeps (approximately); the in-process log is bounded in bytes instead.
const MAX_ENTRIES: usize = 20_000;
/// One XREAD waits at most this long, so a reader whose subscribers left stops soon.
const BLOCK: Duration = Duration::from_millis(1000);

/// KEYS: the stream, the answer's hash. ARGV: ttl ms, max entries, then (seq, json) pairs.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local top = 0
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then top = tonumber(string.match(last[1][1], '-(%d+)$')) end
for i = 3, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  if seq > top then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '0-' .. seq, 'e', ARGV[i + 1])
    top = seq
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
",
    )
});

/// Who owns a running answer, and where it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerInfo {
    pub key_id: String,
    pub tenant_id: String,
    pub hub: String,
    pub ticket: Option<String>,
    /// The client's name for the request that started it (a WebSocket request id).
    pub label: Option<String>,
    /// The sequence number of the last event in the stream (0 before the first).
    pub last_seq: u64,
}

fn seq_of(entry_id: &str) -> u64 {
    entry_id
        .split_once('-')
        .and_then(|(_, seq)| seq.parse().ok())
        .unwrap_or(0)
}

impl Cluster {
    /// Registers a new answer run by this hub.
    pub async fn announce_answer(
        &self,
        id: &str,
        key_id: &str,
        tenant_id: &str,
        ticket: Option<&str>,
        label: Option<&str>,
    ) -> Result<(), ClusterError> {
        let key = keys::answer(id);
        let mut fields = vec![
            ("key", key_id.to_owned()),
            ("tenant", tenant_id.to_owned()),
            ("hub", self.hub_id.to_string()),
        ];
        if let Some(ticket) = ticket {
            fields.push(("ticket", ticket.to_owned()));
        }
        if let Some(label) = label {
            fields.push(("label", label.to_owned()));
        }
        self.call(|mut c| {
            let mut pipe = redis::pipe();
            pipe.hset_multiple(&key, &fields)
                .ignore()
                .expire(&key, RUNNING_TTL.as_secs() as i64)
                .ignore();
            async move { pipe.query_async::<()>(&mut c).await }
        })
        .await
    }

    /// Appends encoded events `(seq, json)` in one round trip; with `end`, the answer has
    /// ended and its stream and hash are kept that long more (the resume grace window).
    /// Idempotent: events already in the stream are skipped, so a batch whose reply was
    /// lost is simply sent again.
    pub async fn append_events(
        &self,
        id: &str,
        events: &[(u64, String)],
        end: Option<Duration>,
    ) -> Result<(), ClusterError> {
        let ttl = end.map_or(RUNNING_TTL, |grace| grace.max(Duration::from_secs(1)));
        self.call(|mut c| {
            let mut call = APPEND.prepare_invoke();
            call.key(keys::answer_log(id))
                .key(keys::answer(id))
                .arg(ttl.as_millis() as u64)
                .arg(MAX_ENTRIES);
            for (seq, json) in events {
                call.arg(*seq).arg(json);
            }
            async move { call.invoke_async::<()>(&mut c).await }
        })
        .await
    }

    /// The answer `id` as registered, with its last sequence number; `None` when unknown.
    pub async fn answer_info(&self, id: &str) -> Result<Option<AnswerInfo>, ClusterError> {
        let answer = keys::answer(id);
        let log = keys::answer_log(id);
        let (fields, last): (HashMap<String, String>, redis::streams::StreamRangeReply) = self
            .call(|mut c| {
                let mut pipe = redis::pipe();
                pipe.hgetall(&answer)
                    .cmd("XREVRANGE")
                    .arg(&log)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1);
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
        let (Some(key_id), Some(tenant_id), Some(hub)) = (
            fields.get("key").cloned(),
            fields.get("tenant").cloned(),
            fields.get("hub").cloned(),
        ) else {
            return Ok(None);
        };
        Ok(Some(AnswerInfo {
            key_id,
            tenant_id,
            hub,
            ticket: fields.get("ticket").cloned(),
            label: fields.get("label").cloned(),
            last_seq: last.ids.first().map_or(0, |e| seq_of(&e.id)),
        }))
    }

    /// A follower of answer `id`'s stream from after `after`, on a connection of its own.
    pub async fn log_reader(&self, id: &str, after: u64) -> Result<LogReader, ClusterError> {
        // The blocking read is bounded by BLOCK and our own timeout, not the client's default.
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(None);
        let connect = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        let conn = tokio::time::timeout(OP_TIMEOUT, connect)
            .await
            .map_err(|_| ClusterError::Timeout)??;
        Ok(LogReader {
            conn,
            key: keys::answer_log(id),
            cursor: after,
        })
    }
}

/// Reads one answer's stream in order.
pub struct LogReader {
    conn: MultiplexedConnection,
    key: String,
    cursor: u64,
}

impl LogReader {
    /// The next events `(seq, json)` after the cursor, waiting up to a second for them; an
    /// empty batch means none came.
    pub async fn next_batch(&mut self) -> Result<Vec<(u64, String)>, ClusterError> {
        let options = StreamReadOptions::default()
            .block(BLOCK.as_millis() as usize)
            .count(512);
        let keys = [self.key.as_str()];
        let cursors = [format!("0-{}", self.cursor)];
        let read = self
            .conn
            .xread_options::<_, _, Option<StreamReadReply>>(&keys, &cursors, &options);
        let reply = tokio::time::timeout(BLOCK + OP_TIMEOUT, read)
            .await
            .map_err(|_| ClusterError::Timeout)??;
        let mut events = Vec::new();
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in stream.ids {
                let seq = seq_of(&entry.id);
                if let Some(json) = entry.get::<String>("e") {
                    events.push((seq, json));
                }
                self.cursor = self.cursor.max(seq);
            }
        }
        Ok(events)
    }
}
