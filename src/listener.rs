//! The listening socket, with the options every accepted client socket inherits.
//!
//! Linux grows a socket's send buffer to megabytes on its own, so a client that reads slowly
//! never makes the hub's writes wait: every token goes out in a frame of its own and queues
//! in the kernel (measured: 0.97 frames per token for a reader at a quarter of the answer's
//! rate, bench/PERFORMANCE.md "Lagging clients"). `TCP_NOTSENT_LOWAT` caps the bytes written
//! but not yet sent; past it the socket reports itself full, tokens wait in the answer's log
//! and go out merged (0.47 frames per token in the same run). Linux copies the option from
//! the listening socket to each socket it accepts, so setting it once here covers them all.

use std::io;
use std::net::{SocketAddr, TcpListener};

/// Binds `addr`; `notsent_lowat` of 0 leaves the kernel's default.
pub fn bind(addr: SocketAddr, notsent_lowat: u32) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    if notsent_lowat > 0 {
        set_notsent_lowat(&listener, notsent_lowat)?;
    }
    Ok(listener)
}

#[cfg(target_os = "linux")]
fn set_notsent_lowat(socket: &impl std::os::fd::AsRawFd, bytes: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "TCP_NOTSENT_LOWAT too large"))?;
    // SAFETY: a valid descriptor owned by `socket` for the call, and a c_int option value
    // whose size is passed alongside it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere the option does not exist; slow readers then get one frame per token.
#[cfg(not(target_os = "linux"))]
fn set_notsent_lowat<S>(_: &S, _: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn notsent_lowat(socket: &impl AsRawFd) -> libc::c_int {
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: as in `set_notsent_lowat`, with `len` telling the kernel the buffer's size.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        value
    }

    #[test]
    fn every_accepted_socket_inherits_the_listeners_limit() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), 16_384).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert_eq!(notsent_lowat(&listener), 16_384);
        assert_eq!(notsent_lowat(&accepted), 16_384);
    }

    #[test]
    fn zero_leaves_the_kernel_default() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), 0).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        // The socket's own value stays unset (0); the sysctl applies.
        assert_eq!(notsent_lowat(&accepted), 0);
    }
}
