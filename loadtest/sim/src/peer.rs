//! The client connection behind a request, so a stream notices a hang-up
//! before it generates (and counts) another token, as vLLM aborts a request
//! whose client left. Without this, hyper only learns of the hang-up when a
//! write fails, and the tokens generated in between would be counted as
//! served although nobody read them.

use std::os::fd::{AsRawFd, RawFd};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener whose connections send without Nagle's delay: without
/// `TCP_NODELAY` the first chunk of a stream on a kept-alive connection
/// waits for the peer's delayed ACK of the previous response (tens of
/// milliseconds), as vLLM's server does not.
pub struct NoDelayListener(pub TcpListener);

impl Listener for NoDelayListener {
    type Io = TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (TcpStream, std::net::SocketAddr) {
        let (stream, addr) = Listener::accept(&mut self.0).await;
        let _ = stream.set_nodelay(true);
        (stream, addr)
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.local_addr()
    }
}

/// A request's connection, by its socket.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    fd: RawFd,
}

impl Connected<IncomingStream<'_, NoDelayListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, NoDelayListener>) -> Peer {
        Peer {
            fd: stream.io().as_raw_fd(),
        }
    }
}

impl Peer {
    /// Whether the client closed or reset the connection: a non-blocking
    /// peek that reads nothing. The socket outlives every request on it
    /// (hyper drops the response body before the connection), so the
    /// descriptor is this connection's while a stream asks.
    pub fn hung_up(&self) -> bool {
        let mut byte = 0u8;
        // SAFETY: `fd` is an open socket for the duration of the request (see
        // above); recv with MSG_PEEK writes at most one byte into `byte`.
        let read = unsafe {
            libc::recv(
                self.fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match read {
            0 => true,
            n if n > 0 => false,
            _ => !matches!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EAGAIN | libc::EINTR)
            ),
        }
    }
}
