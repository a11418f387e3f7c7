//! The bare pass-through relay: the floor any relay on this machine can reach.
//!
//! It forwards each request's method, path and body to the upstream over a pooled
//! keep-alive connection and copies the upstream's response bytes back untouched (head and
//! chunked body as they came), one write per read. No parsing of the payload, no
//! re-encoding, no auth, no logging. It only follows the chunked framing to know where a
//! response ends (to pool the connection) and watches the client: when the client leaves,
//! the upstream connection is closed at once, so the upstream stops too.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::http::{self, fill, parse_response_head, read_request, Chunked};

type Pool = Arc<Mutex<Vec<TcpStream>>>;

pub async fn serve(listener: TcpListener, upstream: SocketAddr) -> io::Result<()> {
    let pool: Pool = Arc::new(Mutex::new(Vec::new()));
    loop {
        let (s, _) = listener.accept().await?;
        let _ = s.set_nodelay(true);
        let pool = pool.clone();
        tokio::spawn(async move {
            let _ = connection(s, upstream, pool).await;
        });
    }
}

async fn connection(mut client: TcpStream, upstream: SocketAddr, pool: Pool) -> io::Result<()> {
    let mut cbuf = BytesMut::with_capacity(4096);
    loop {
        let Some(req) = read_request(&mut client, &mut cbuf).await? else {
            return Ok(());
        };
        let mut out = format!(
            "{} {} HTTP/1.1\r\nhost: {upstream}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            req.method,
            req.path,
            req.body.len()
        )
        .into_bytes();
        out.extend_from_slice(&req.body);

        let pooled = pool.lock().ok().and_then(|mut p| p.pop());
        let mut up = match pooled {
            Some(mut up) => match up.write_all(&out).await {
                Ok(()) => up,
                // A pooled connection the upstream closed meanwhile: open a new one.
                Err(_) => fresh(upstream, &out).await?,
            },
            None => fresh(upstream, &out).await?,
        };
        match relay_response(&mut client, &mut cbuf, &mut up).await? {
            Ended::Reusable => {
                if let Ok(mut p) = pool.lock() {
                    p.push(up);
                }
            }
            Ended::UpstreamDone => {}
            Ended::ClientGone => return Ok(()),
        }
        if req.close {
            return Ok(());
        }
    }
}

async fn fresh(upstream: SocketAddr, request: &[u8]) -> io::Result<TcpStream> {
    let mut up = http::connect(upstream, None).await?;
    up.write_all(request).await?;
    Ok(up)
}

enum Ended {
    /// The response ended and the upstream connection can be pooled.
    Reusable,
    /// The response ended with the upstream connection.
    UpstreamDone,
    /// The client left; the upstream connection is dropped (closed) by the caller.
    ClientGone,
}

async fn relay_response(
    client: &mut TcpStream,
    cbuf: &mut BytesMut,
    up: &mut TcpStream,
) -> io::Result<Ended> {
    let mut ubuf = BytesMut::with_capacity(8192);
    let head = loop {
        if let Some(head) = parse_response_head(&ubuf)? {
            break head;
        }
        fill(up, &mut ubuf).await?;
    };
    let mut chunked = head.chunked.then(Chunked::default);
    let mut remaining = head.content_length.unwrap_or(0);
    let by_length = !head.chunked && head.content_length.is_some();
    // The head is forwarded as is, then the body bytes as they arrive.
    let mut head_len = head.len;
    loop {
        let body = &ubuf[head_len..];
        let end = if let Some(c) = chunked.as_mut() {
            c.feed(body, |_| {})?
        } else if by_length {
            let n = remaining.min(body.len());
            remaining -= n;
            (remaining == 0).then_some(n)
        } else {
            None
        };
        let upto = head_len + end.unwrap_or(body.len());
        if upto > 0 {
            client.write_all(&ubuf[..upto]).await?;
        }
        if end.is_some() {
            return Ok(if head.close {
                Ended::UpstreamDone
            } else {
                Ended::Reusable
            });
        }
        ubuf.clear();
        head_len = 0;
        if ubuf.capacity() < 4096 {
            ubuf.reserve(8192);
        }
        // Read the upstream and watch the client at the same time.
        tokio::select! {
            biased;
            r = tokio::io::AsyncReadExt::read_buf(client, cbuf) => match r {
                Ok(0) | Err(_) => return Ok(Ended::ClientGone),
                Ok(_) => {}
            },
            r = tokio::io::AsyncReadExt::read_buf(up, &mut ubuf) => match r {
                Ok(0) => {
                    return Ok(Ended::UpstreamDone);
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            },
        }
        if cbuf.len() > 1 << 20 {
            cbuf.advance(cbuf.len());
        }
    }
}
