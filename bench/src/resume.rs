//! Answers whose text is checked, token by token, against what the mock sent, over SSE and
//! plain WebSocket; some of them cut mid-answer and resumed on a new connection.
//!
//! The mock, `numbered`, sends token `i` as `_t_<i> `, the same for every request, so an
//! answer of `n` tokens must end as `_t_0 _t_1 … _t_<n-1> ` at the client whatever
//! happened on the way: a token missing is lost, one seen twice is repeated. The hub may
//! merge tokens into one frame; the text is what counts, never the frames.
//!
//! A cut is abrupt: the client drops its socket (a plain close for even tasks, which the
//! kernel sends as a reset when unread bytes remain; a reset for odd ones), with no
//! WebSocket close frame and no stop, after a token count picked per answer, at whatever
//! point of a frame its last read ended. Bytes the hub had written that the client had not
//! read are gone with the socket. It then resumes from the last event it read whole:
//!
//! - SSE: `Last-Event-ID: <answerId>:<seq>`, alternately on `GET /api/v1/answers/{id}/stream`
//!   and on the URL that asked (what a browser's `EventSource` does);
//! - plain WebSocket: a new socket and `{"type":"resume","answerId":…,"after":seq,"id":…}`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::client::{
    connect_for, error_code, url_encode, ws_frame, Check, Conn, Outcome, Recorder, Spec,
};

/// What the text checks found, summed over answers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TextCheck {
    /// Answers that ended with `done` and whose text was checked.
    pub answers: u64,
    /// Of those, answers whose text was exactly what the mock sent.
    pub exact: u64,
    /// Answers whose connection was dropped mid-answer.
    pub dropped: u64,
    /// Dropped answers that were resumed and ended with `done`.
    pub resumed: u64,
    pub tokens_expected: u64,
    pub tokens_received: u64,
    /// Tokens the mock sent that the client's text lacks.
    pub tokens_lost: u64,
    /// Tokens the client's text holds more than once (or that the mock never sent).
    pub tokens_repeated: u64,
    /// Answers with every token once, in the wrong order.
    pub out_of_order: u64,
    /// From the drop to the first event read on the new connection, µs.
    pub resume_us: Vec<u32>,
}

impl TextCheck {
    pub fn merge(&mut self, o: TextCheck) {
        self.answers += o.answers;
        self.exact += o.exact;
        self.dropped += o.dropped;
        self.resumed += o.resumed;
        self.tokens_expected += o.tokens_expected;
        self.tokens_received += o.tokens_received;
        self.tokens_lost += o.tokens_lost;
        self.tokens_repeated += o.tokens_repeated;
        self.out_of_order += o.out_of_order;
        self.resume_us.extend(o.resume_us);
    }

    /// Compares an answer's text with the `tokens` numbered tokens the mock sent.
    pub fn record(&mut self, text: &str, tokens: u32) {
        self.answers += 1;
        self.tokens_expected += u64::from(tokens);
        let mut counts = vec![0u32; tokens as usize];
        let mut strays = 0u64;
        let mut ordered = true;
        let mut previous: Option<u32> = None;
        for piece in text.split_terminator(' ') {
            self.tokens_received += 1;
            match piece
                .strip_prefix("_t_")
                .and_then(|n| n.parse::<u32>().ok())
            {
                Some(i) if i < tokens => {
                    counts[i as usize] += 1;
                    ordered &= previous.is_none_or(|p| i > p);
                    previous = Some(i);
                }
                _ => strays += 1,
            }
        }
        let lost = counts.iter().filter(|c| **c == 0).count() as u64;
        let repeated = counts
            .iter()
            .map(|c| u64::from(c.saturating_sub(1)))
            .sum::<u64>()
            + strays;
        self.tokens_lost += lost;
        self.tokens_repeated += repeated;
        if lost == 0 && repeated == 0 {
            if ordered {
                self.exact += 1;
            } else {
                self.out_of_order += 1;
            }
        }
    }
}

/// Whether answer `n` (from 1) of task `i` is cut, and after how many tokens
/// (1 ..= tokens − 1, spread over the answer by a hash). Answers are numbered across tasks
/// (`per_task` each) and exactly `drop_pct` of every hundred in a row are cut, so a run of
/// 600 answers at 10 % cuts 60; the same ones in every run.
fn cut_after(check: Check, (i, n): (usize, usize), per_task: Option<u32>) -> Option<u32> {
    let per_task = per_task.map_or(1000, u64::from);
    let g = i as u64 * per_task + (n as u64).saturating_sub(1);
    if g * u64::from(check.drop_pct) % 100 >= u64::from(check.drop_pct) || check.tokens < 2 {
        return None;
    }
    Some(1 + (mix(g) % u64::from(check.tokens - 1)) as u32)
}

/// splitmix64's finaliser: a well-spread hash of a small number.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Drops a connection: a reset when `reset`, else a plain close (a FIN, or a reset when
/// unread bytes remain). Neither says goodbye at the protocol's level.
fn cut(conn: &mut Option<Conn>, reset: bool) {
    if let Some(c) = conn.take() {
        if reset {
            c.abort();
        }
    }
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow)]
    token: Option<Cow<'a, str>>,
    done: Option<bool>,
    error: Option<serde::de::IgnoredAny>,
    #[serde(rename = "answerId", borrow)]
    answer_id: Option<Cow<'a, str>>,
    seq: Option<u64>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
}

/// What a client knows of its answer across connections.
struct Progress {
    text: String,
    /// SSE: the last `id:`; plain WebSocket: the last `seq`.
    cursor: Option<String>,
    answer_id: Option<String>,
    done: bool,
    failed: Option<String>,
    /// When the connection was dropped, until the first event on the new one.
    cut_at: Option<Instant>,
}

impl Progress {
    fn new(answer_id: Option<String>) -> Progress {
        Progress {
            text: String::new(),
            cursor: None,
            answer_id,
            done: false,
            failed: None,
            cut_at: None,
        }
    }

    /// Takes one frame (`d`, read from `json`): its tokens, and whether it ends the answer.
    fn frame(
        &mut self,
        d: &Data<'_>,
        json: &[u8],
        rec: &mut Recorder,
        a: &mut crate::client::Answer,
        now: Instant,
    ) {
        if let Some(at) = self.cut_at.take() {
            rec.stats
                .text
                .resume_us
                .push(now.duration_since(at).as_micros().min(u128::from(u32::MAX)) as u32);
        }
        if let Some(token) = d.token.as_deref().filter(|t| !t.is_empty()) {
            self.text.push_str(token);
            rec.tokens(a, crate::client::count_tokens(token.as_bytes()), now);
        }
        if d.error.is_some() {
            self.failed = Some(error_code(json));
        } else if d.done == Some(true) {
            self.done = true;
        }
    }
}

/// One SSE answer, checked; cut and resumed when the plan says so.
pub(crate) async fn sse_answer(
    conn: &mut Option<Conn>,
    spec: &Spec,
    check: Check,
    question: &str,
    at: (usize, usize),
    rec: &mut Recorder,
) -> Result<Outcome, String> {
    let ask = format!(
        "/api/v1/ask/stream?question={}&topK={}",
        url_encode(question),
        spec.top_k
    );
    let mut cut_after = cut_after(check, at, spec.answers);
    let mut a = rec.begin();
    let mut p = Progress::new(None);
    let mut resumes = 0usize;
    loop {
        let Some(c) = conn.as_mut() else {
            return Err("no_connection".into());
        };
        let (path, last) = match (&p.cursor, &p.answer_id) {
            (None, _) => (ask.clone(), String::new()),
            (Some(cursor), Some(id)) => {
                let path = if resumes.is_multiple_of(2) {
                    format!("/api/v1/answers/{id}/stream")
                } else {
                    ask.clone()
                };
                (path, format!("last-event-id: {cursor}\r\n"))
            }
            (Some(_), None) => return Err("no_answer_id".into()),
        };
        let req = format!(
            "GET {path} HTTP/1.1\r\nhost: {}\r\nx-api-key: {}\r\naccept: text/event-stream\r\n{last}\r\n",
            spec.addr, spec.key
        );
        c.send(req.as_bytes()).await?;
        let head = c.read_head().await?;
        if head.status != 200 {
            return Err(format!(
                "{}http_{}",
                if p.cursor.is_some() { "resume_" } else { "" },
                head.status
            ));
        }
        if p.answer_id.is_none() {
            p.answer_id = head.answer_id.clone();
        }
        let mut leave = false;
        let ended = c
            .events(&head, |ev, now| {
                let mut data = None;
                for line in ev.split(|b| *b == b'\n') {
                    if let Some(id) = line.strip_prefix(b"id: ") {
                        p.cursor = Some(String::from_utf8_lossy(id).into_owned());
                    } else if let Some(d) = line.strip_prefix(b"data: ") {
                        data = Some(d);
                    }
                }
                match data.map(|d| (d, serde_json::from_slice::<Data<'_>>(d))) {
                    Some((json, Ok(d))) => p.frame(&d, json, rec, &mut a, now),
                    Some((_, Err(_))) => p.failed = Some("unreadable_frame".into()),
                    None => {}
                }
                // After the last event the body ends: it is read to its end, so the
                // connection can carry the next question.
                if !p.done && p.failed.is_none() && cut_after.is_some_and(|k| a.tokens >= k) {
                    leave = true;
                    return false;
                }
                true
            })
            .await?;
        if leave {
            cut_after = None;
            rec.stats.text.dropped += 1;
            cut(conn, at.0 % 2 == 1);
            p.cut_at = Some(Instant::now());
            resumes += 1;
            *conn = Some(connect_for(spec, None).await?);
            continue;
        }
        if let Some(e) = p.failed.take() {
            return Err(e);
        }
        if !p.done {
            return Err(if ended { "incomplete" } else { "cut_short" }.into());
        }
        return finish(rec, &p, check, resumes, head.close);
    }
}

/// One plain WebSocket answer, checked; cut and resumed on a new socket when the plan says
/// so.
pub(crate) async fn ws_answer(
    conn: &mut Option<Conn>,
    spec: &Spec,
    check: Check,
    question: &str,
    at: (usize, usize),
    rec: &mut Recorder,
) -> Result<Outcome, String> {
    let id = format!("c{}", at.1);
    let q = serde_json::to_string(question).unwrap_or_default();
    let ask = format!(
        "{{\"message\":{q},\"topK\":{},\"id\":\"{id}\"}}",
        spec.top_k
    );
    let mut cut_after = cut_after(check, at, spec.answers);
    let mut a = rec.begin();
    let mut p = Progress::new(None);
    let mut resumes = 0usize;
    let mut first = Some(ask);
    loop {
        let Some(c) = conn.as_mut() else {
            return Err("no_connection".into());
        };
        if let Some(frame) = first.take() {
            c.send(&ws_frame(0x1, frame.as_bytes())).await?;
        }
        let (op, msg) = c.ws_next().await?;
        let now = Instant::now();
        if op != 0x1 {
            continue;
        }
        let Ok(d) = serde_json::from_slice::<Data<'_>>(&msg) else {
            return Err("unreadable_frame".into());
        };
        if d.id.as_deref() != Some(id.as_str()) {
            // A pong, or a frame of another request: not this answer's.
            continue;
        }
        if let Some(answer) = d.answer_id.as_deref() {
            if p.answer_id.is_none() {
                p.answer_id = Some(answer.to_owned());
            }
        }
        if let Some(seq) = d.seq {
            p.cursor = Some(seq.to_string());
        }
        p.frame(&d, &msg, rec, &mut a, now);
        if let Some(e) = p.failed.take() {
            return Err(if resumes > 0 {
                format!("resume_{e}")
            } else {
                e
            });
        }
        if p.done {
            return finish(rec, &p, check, resumes, false);
        }
        if cut_after.is_some_and(|k| a.tokens >= k) {
            cut_after = None;
            let (Some(answer), Some(after)) = (&p.answer_id, &p.cursor) else {
                return Err("no_answer_id".into());
            };
            let resume = format!(
                "{{\"type\":\"resume\",\"answerId\":\"{answer}\",\"after\":{after},\"id\":\"{id}\"}}"
            );
            rec.stats.text.dropped += 1;
            cut(conn, at.0 % 2 == 1);
            p.cut_at = Some(Instant::now());
            resumes += 1;
            *conn = Some(connect_for(spec, None).await?);
            first = Some(resume);
        }
    }
}

fn finish(
    rec: &mut Recorder,
    p: &Progress,
    check: Check,
    resumes: usize,
    close: bool,
) -> Result<Outcome, String> {
    rec.stats.text.record(&p.text, check.tokens);
    if resumes > 0 {
        rec.stats.text.resumed += 1;
    }
    rec.done(Instant::now());
    Ok(if close {
        Outcome::DoneClose
    } else {
        Outcome::Done
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{numbered_text, numbered_token};

    #[test]
    fn a_whole_text_is_exact_and_a_lost_or_repeated_token_is_counted() {
        let mut c = TextCheck::default();
        c.record(&numbered_text(5), 5);
        assert_eq!((c.exact, c.tokens_lost, c.tokens_repeated), (1, 0, 0));

        let mut lost = TextCheck::default();
        lost.record("_t_0 _t_1 _t_3 _t_4 ", 5);
        assert_eq!(
            (lost.exact, lost.tokens_lost, lost.tokens_repeated),
            (0, 1, 0)
        );

        let mut twice = TextCheck::default();
        twice.record(&format!("{}{}", numbered_text(3), numbered_token(2)), 3);
        assert_eq!(
            (twice.exact, twice.tokens_lost, twice.tokens_repeated),
            (0, 0, 1)
        );

        let mut swapped = TextCheck::default();
        swapped.record("_t_1 _t_0 _t_2 ", 3);
        assert_eq!((swapped.exact, swapped.out_of_order), (0, 1));
    }

    #[test]
    fn a_tenth_of_answers_are_cut_somewhere_inside() {
        let check = Check {
            tokens: 64,
            drop_pct: 10,
        };
        let cuts: Vec<u32> = (0..200)
            .flat_map(|i| (1..=3).map(move |n| (i, n)))
            .filter_map(|at| cut_after(check, at, Some(3)))
            .collect();
        assert_eq!(cuts.len(), 60);
        assert!(cuts.iter().all(|k| (1..64).contains(k)));
        assert!(cuts.iter().any(|k| *k < 10) && cuts.iter().any(|k| *k > 50));
    }
}
