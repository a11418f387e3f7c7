//! A TCP proxy in front of the hub that can drop its connections the way a network does:
//! both sockets closed at once, with no close frame or end of stream from the client. It
//! can also cut a connection after exactly N bytes have come back from the hub, so a test
//! can land the cut anywhere, inside a frame included.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct CutProxy {
    pub addr: SocketAddr,
    /// Bytes from the hub after which each new connection is cut (usize::MAX: never).
    cut_after: Arc<AtomicUsize>,
    /// While set, new connections are closed as soon as they are accepted (a server down).
    refusing: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl CutProxy {
    /// A proxy to the hub at `target` (host:port).
    pub async fn start(target: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cut_after = Arc::new(AtomicUsize::new(usize::MAX));
        let refusing = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (limit, registry, refuse) = (cut_after.clone(), links.clone(), refusing.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if refuse.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let limit = limit.load(Ordering::SeqCst);
                let link = tokio::spawn(relay(client, target, limit));
                registry.lock().unwrap().push(link);
            }
        });
        CutProxy {
            addr,
            cut_after,
            refusing,
            links,
            accept,
        }
    }

    pub fn http_base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_base(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Connections made from now on are cut after `bytes` have come back from the hub.
    pub fn cut_after(&self, bytes: usize) {
        self.cut_after.store(bytes, Ordering::SeqCst);
    }

    /// Takes the server behind "down" (every connection dropped, new ones closed at once)
    /// or back "up".
    pub fn set_down(&self, down: bool) {
        self.refusing.store(down, Ordering::SeqCst);
        if down {
            self.cut();
        }
    }

    /// Drops every connection now.
    pub fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Copies both ways until either side closes or `limit` bytes came back; dropping the
/// two sockets then is the cut.
async fn relay(mut client: TcpStream, target: SocketAddr, limit: usize) {
    let Ok(mut hub) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = hub.set_nodelay(true);
    let (mut client_read, mut client_write) = client.split();
    let (mut hub_read, mut hub_write) = hub.split();
    let upstream = async {
        let mut buf = [0u8; 8192];
        loop {
            match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if hub_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let downstream = async {
        let mut buf = [0u8; 8192];
        let mut left = limit;
        loop {
            let room = buf.len().min(left);
            if room == 0 {
                return;
            }
            match hub_read.read(&mut buf[..room]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
            }
        }
    };
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}
