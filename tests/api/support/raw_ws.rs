//! A WebSocket client at the byte level, for what a well-behaved client library will not
//! do: send a hundred thousand frames in one write, and never read.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const TEXT: u8 = 0x1;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;

/// Opens `/api/v1/chat/ws` with the key in a header; panics unless the hub upgrades.
pub async fn connect(hub: SocketAddr, key: &str) -> TcpStream {
    upgrade(TcpStream::connect(hub).await.expect("connects"), hub, key).await
}

/// The same, over a socket whose receive buffer is `bytes` small: a client that does not
/// read fills it at once, so the hub's writes stall soon instead of filling the kernel's
/// buffers first.
pub async fn connect_small_buffer(hub: SocketAddr, key: &str, bytes: u32) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(bytes).expect("buffer size");
    let stream = socket.connect(hub).await.expect("connects");
    upgrade(stream, hub, key).await
}

async fn upgrade(mut stream: TcpStream, hub: SocketAddr, key: &str) -> TcpStream {
    let request = format!(
        "GET /api/v1/chat/ws HTTP/1.1\r\nHost: {hub}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-API-Key: {key}\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("upgrade sent");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.expect("response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// One masked client frame (payloads under 126 bytes).
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// `count` copies of a frame, as one buffer.
pub fn repeated(opcode: u8, payload: &[u8], count: usize) -> Vec<u8> {
    let one = frame(opcode, payload);
    let mut out = Vec::with_capacity(one.len() * count);
    for _ in 0..count {
        out.extend_from_slice(&one);
    }
    out
}

/// What a client read from the hub until the connection ended.
pub struct Received {
    /// Every frame before the close frame: (opcode, payload).
    pub frames: Vec<(u8, Vec<u8>)>,
    /// The close frame's code and reason, if one came.
    pub close: Option<(u16, String)>,
}

/// Reads server frames until a close frame or the end of the connection; returns the close
/// code, if a close frame came.
pub async fn close_code<R: AsyncRead + Unpin>(stream: &mut R, limit: Duration) -> Option<u16> {
    read_until_close(stream, limit)
        .await
        .close
        .map(|(code, _)| code)
}

/// Reads (and keeps) server frames until a close frame or the end of the connection.
pub async fn read_until_close<R: AsyncRead + Unpin>(stream: &mut R, limit: Duration) -> Received {
    let read = async {
        let mut frames = Vec::new();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            // Parse whole frames from the front of the buffer.
            while buf.len() >= 2 {
                let opcode = buf[0] & 0x0f;
                let (len, header) = match buf[1] & 0x7f {
                    126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                    127 if buf.len() >= 10 => {
                        let mut n = [0u8; 8];
                        n.copy_from_slice(&buf[2..10]);
                        (u64::from_be_bytes(n) as usize, 10)
                    }
                    126 | 127 => break,
                    n => (n as usize, 2),
                };
                if buf.len() < header + len {
                    break;
                }
                let payload = buf[header..header + len].to_vec();
                if opcode == CLOSE {
                    let close = (payload.len() >= 2).then(|| {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        (code, String::from_utf8_lossy(&payload[2..]).into_owned())
                    });
                    return Received { frames, close };
                }
                frames.push((opcode, payload));
                buf.drain(..header + len);
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    return Received {
                        frames,
                        close: None,
                    }
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .expect("the hub closed within the limit")
}

/// A server frame's head: its opcode and its payload's length.
pub struct Head {
    pub opcode: u8,
    pub len: usize,
}

/// Reads the head of the next server frame (server frames are not masked), byte-exact: the
/// payload is left in the socket for [`payload`] (or for a test that stops half-way in it).
pub async fn read_head<R: AsyncRead + Unpin>(stream: &mut R) -> std::io::Result<Head> {
    let mut two = [0u8; 2];
    stream.read_exact(&mut two).await?;
    let len = match two[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            stream.read_exact(&mut n).await?;
            u16::from_be_bytes(n) as usize
        }
        127 => {
            let mut n = [0u8; 8];
            stream.read_exact(&mut n).await?;
            usize::try_from(u64::from_be_bytes(n)).expect("a frame length that fits")
        }
        n => n as usize,
    };
    Ok(Head {
        opcode: two[0] & 0x0f,
        len,
    })
}

/// Reads `len` payload bytes.
pub async fn payload<R: AsyncRead + Unpin>(stream: &mut R, len: usize) -> std::io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; len];
    stream.read_exact(&mut bytes).await?;
    Ok(bytes)
}
