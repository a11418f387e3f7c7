//! Just enough HTTP/1.1 for the mock, the relay and the load generator: request and
//! response heads (httparse), bodies by length or chunked, keep-alive.
//!
//! Written by hand rather than with a framework so that the mock and the relay cost as
//! little CPU as this machine allows: they are the floor the hub is measured against.

use std::io;
use std::net::{IpAddr, SocketAddr};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

/// Largest head we accept; anything bigger is a broken peer.
const MAX_HEAD: usize = 64 * 1024;

pub fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    pub chunked: bool,
    pub content_length: Option<usize>,
    /// The server will close the connection after this response.
    pub close: bool,
    /// Bytes of the head, blank line included.
    pub len: usize,
    /// The hub's `X-Answer-Id`: the answer a stream belongs to, before any event says so.
    pub answer_id: Option<String>,
}

pub fn parse_response_head(buf: &[u8]) -> io::Result<Option<ResponseHead>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut res = httparse::Response::new(&mut headers);
    let len = match res.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(invalid("response head too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(format!("bad response head: {e}"))),
    };
    let mut head = ResponseHead {
        status: res.code.unwrap_or(0),
        chunked: false,
        content_length: None,
        close: res.version == Some(0),
        len,
        answer_id: None,
    };
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = contains_token(h.value, b"chunked");
        } else if h.name.eq_ignore_ascii_case("content-length") {
            head.content_length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        } else if h.name.eq_ignore_ascii_case("connection") {
            head.close = contains_token(h.value, b"close");
        } else if h.name.eq_ignore_ascii_case("x-answer-id") {
            head.answer_id = std::str::from_utf8(h.value).ok().map(str::to_owned);
        }
    }
    Ok(Some(head))
}

fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// A whole request (the mock and the relay read bodies by `Content-Length` only).
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Bytes,
    pub close: bool,
}

/// Reads one request from `s`, leaving any bytes after it in `buf`. `None` on a clean end
/// of the connection between requests.
pub async fn read_request(s: &mut TcpStream, buf: &mut BytesMut) -> io::Result<Option<Request>> {
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let mut content_length = 0usize;
                    let mut close = req.version == Some(0);
                    for h in req.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            content_length = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .ok_or_else(|| invalid("bad content-length"))?;
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = contains_token(h.value, b"close");
                        }
                    }
                    let method = req.method.unwrap_or("").to_owned();
                    let path = req.path.unwrap_or("").to_owned();
                    while buf.len() < len + content_length {
                        fill(s, buf).await?;
                    }
                    buf.advance(len);
                    let body = buf.split_to(content_length).freeze();
                    return Ok(Some(Request {
                        method,
                        path,
                        body,
                        close,
                    }));
                }
                Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                    return Err(invalid("request head too large"))
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(invalid(format!("bad request head: {e}"))),
            }
        }
        let was_empty = buf.is_empty();
        match fill(s, buf).await {
            Ok(()) => {}
            Err(e) if was_empty && e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) if was_empty && e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// Reads more bytes into `buf`; an end of stream is `UnexpectedEof`.
pub async fn fill(s: &mut TcpStream, buf: &mut BytesMut) -> io::Result<()> {
    if buf.capacity() - buf.len() < 2048 {
        buf.reserve(8192);
    }
    match s.read_buf(buf).await? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(()),
    }
}

/// Opens a connection, from `local` when given (several loopback source addresses give
/// several ephemeral port ranges, for tens of thousands of connections).
pub async fn connect(addr: SocketAddr, local: Option<IpAddr>) -> io::Result<TcpStream> {
    let s = match local {
        Some(ip) => {
            let sock = TcpSocket::new_v4()?;
            sock.bind(SocketAddr::new(ip, 0))?;
            sock.connect(addr).await?
        }
        None => TcpStream::connect(addr).await?,
    };
    s.set_nodelay(true)?;
    Ok(s)
}

/// Opens a connection that looks like a slow client across a real network rather than a
/// loopback peer: a receive buffer of `recv_buffer` bytes (a small window) and a segment
/// size of `mss` (announced in the SYN, so the server's side uses it too, instead of
/// loopback's 64 KiB segments). The server's send buffer still grows by itself as Linux
/// sees fit (to about 1 MB here), as it would for a real client.
pub async fn connect_narrow(addr: SocketAddr, recv_buffer: u32, mss: u32) -> io::Result<TcpStream> {
    use std::os::fd::AsRawFd;
    let sock = TcpSocket::new_v4()?;
    sock.set_recv_buffer_size(recv_buffer)?;
    let mss = mss as libc::c_int;
    // SAFETY: setsockopt on a socket this function owns, with a pointer to a live c_int
    // and its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&mss as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let s = sock.connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Writes the chunked framing of `payload` into `out`.
pub fn push_chunk(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// A complete response with a body of known length.
pub fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        400 => "Bad Request",
        _ => "Status",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ChunkState {
    #[default]
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    Done,
}

/// An incremental decoder of the chunked transfer coding. It never copies: payload
/// slices are handed to a callback, so the relay can use it only to find where a
/// response ends.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
    size: usize,
    remaining: usize,
    line: usize,
}

impl Chunked {
    /// Feeds bytes; calls `data` with each payload slice. Returns `Some(n)` when the body
    /// ended after the first `n` bytes of `input`.
    pub fn feed(&mut self, input: &[u8], mut data: impl FnMut(&[u8])) -> io::Result<Option<usize>> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).unwrap_or(0) as usize;
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(d))
                            .ok_or_else(|| invalid("chunk size overflow"))?;
                    }
                    b';' | b' ' | b'\t' => self.state = ChunkState::Ext,
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' => self.size_line_end(),
                    _ => return Err(invalid("bad chunk size")),
                },
                ChunkState::Ext => match b {
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' => self.size_line_end(),
                    _ => {}
                },
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(invalid("bad chunk size line"));
                    }
                    self.size_line_end();
                }
                ChunkState::Data => {
                    let n = self.remaining.min(input.len() - i);
                    data(&input[i..i + n]);
                    self.remaining -= n;
                    if self.remaining == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    i += n;
                    continue;
                }
                ChunkState::DataCr => match b {
                    b'\r' => self.state = ChunkState::DataLf,
                    b'\n' => self.state = ChunkState::Size,
                    _ => return Err(invalid("chunk without CRLF")),
                },
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(invalid("chunk without CRLF"));
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => match b {
                    b'\r' => self.state = ChunkState::TrailerLf,
                    b'\n' => {
                        if self.line == 0 {
                            self.state = ChunkState::Done;
                            return Ok(Some(i + 1));
                        }
                        self.line = 0;
                    }
                    _ => self.line += 1,
                },
                ChunkState::TrailerLf => {
                    if b != b'\n' {
                        return Err(invalid("bad trailer"));
                    }
                    if self.line == 0 {
                        self.state = ChunkState::Done;
                        return Ok(Some(i + 1));
                    }
                    self.line = 0;
                    self.state = ChunkState::Trailer;
                }
                ChunkState::Done => return Ok(Some(i)),
            }
            i += 1;
        }
        Ok(None)
    }

    fn size_line_end(&mut self) {
        if self.size == 0 {
            self.state = ChunkState::Trailer;
            self.line = 0;
        } else {
            self.remaining = self.size;
            self.size = 0;
            self.state = ChunkState::Data;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_split_anywhere_decode_whole() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\nNEXT";
        for split in 0..body.len() {
            let mut c = Chunked::default();
            let mut out = Vec::new();
            let first = c
                .feed(&body[..split], |d| out.extend_from_slice(d))
                .unwrap();
            let end = match first {
                Some(n) => n,
                None => {
                    split
                        + c.feed(&body[split..], |d| out.extend_from_slice(d))
                            .unwrap()
                            .expect("ends")
                }
            };
            assert_eq!(out, b"hello, world");
            assert_eq!(&body[end..], b"NEXT");
        }
    }

    #[test]
    fn a_response_head_says_how_its_body_is_framed() {
        let head = parse_response_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nxx",
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.status, 200);
        assert!(head.chunked && head.close);
        assert_eq!(head.len, 66);
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\n")
            .unwrap()
            .is_none());
    }
}
