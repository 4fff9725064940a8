//! Pingora's own refusals, as OpenAI errors.
//!
//! Pingora answers a request whose header section it cannot parse (too
//! many headers, a conflicting `Content-Length`, a `Host` that does not
//! match an absolute-form target, an invalid header) with 400, and the
//! `CONNECT` method with 405, before any `ProxyHttp` hook runs and with an
//! empty body; 0.9 has no hook to shape that answer. So the listener's
//! connections are wrapped ([`EdgeApp`]): a response head that is exactly
//! Pingora's generated error (`Server: Pingora`, `Cache-Control: private,
//! no-store`, `Content-Length: 0`; the gateway's own answers carry none of
//! these) is written as the same status with an OpenAI-shaped JSON body
//! instead. Every other byte passes untouched; the
//! check costs a prefix comparison per write.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::ALPN;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::TlsRef;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType,
};
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::ApiError;

/// The headers of the error answers Pingora generates (`gen_error_response`).
const PINGORA_ERROR_HEADERS: [&[u8]; 3] = [
    b"\r\nserver: pingora\r\n",
    b"\r\ncontent-length: 0\r\n",
    b"\r\ncache-control: private, no-store\r\n",
];

/// The JSON answer that replaces `head` when it is one of Pingora's own
/// empty error answers; `None` for every other write.
pub fn openai_error_for(head: &[u8]) -> Option<Vec<u8>> {
    if !(head.starts_with(b"HTTP/1.1 4")
        || head.starts_with(b"HTTP/1.0 4")
        || head.starts_with(b"HTTP/1.1 5")
        || head.starts_with(b"HTTP/1.0 5"))
        || !head.ends_with(b"\r\n\r\n")
        || head.len() > 1024
    {
        return None;
    }
    // Every 4xx the gateway itself sends passes here: no allocation.
    let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle));
    if !PINGORA_ERROR_HEADERS.iter().all(|h| has(h)) {
        return None;
    }
    let status: u16 = std::str::from_utf8(&head[9..12]).ok()?.parse().ok()?;
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let body = ApiError::unparsable_request(status).to_json();
    // The request was not read: its id, if it sent one, is unknown.
    let mut answer = format!(
        "{} {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         x-request-id: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        std::str::from_utf8(&head[..8]).ok()?,
        body.len(),
        crate::request::request_id::accept_or_make(None)
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    Some(answer)
}

/// Hands every connection to `inner` wrapped in [`ErrorBodies`].
pub struct EdgeApp<A> {
    inner: Arc<A>,
}

impl<A> EdgeApp<A> {
    pub fn new(inner: A) -> EdgeApp<A> {
        EdgeApp { inner: Arc::new(inner) }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for EdgeApp<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let stream: Stream = Box::new(ErrorBodies {
            inner: stream,
            pending: Vec::new(),
            written: 0,
        });
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

/// A client connection whose Pingora-generated error answers carry a body.
#[derive(Debug)]
pub struct ErrorBodies {
    inner: Stream,
    /// A replacement answer, and how much of it is written.
    pending: Vec<u8>,
    written: usize,
}

impl ErrorBodies {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for ErrorBodies {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ErrorBodies {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if let Some(answer) = openai_error_for(buf) {
            this.pending = answer;
            // Taken whole: the rest goes out on the next write, flush or shutdown.
            if let Poll::Ready(Err(error)) = this.poll_pending(cx) {
                return Poll::Ready(Err(error));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for ErrorBodies {
    async fn shutdown(&mut self) {
        let _ = std::future::poll_fn(|cx| self.poll_pending(cx)).await;
        self.inner.shutdown().await
    }
}

impl UniqueID for ErrorBodies {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for ErrorBodies {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora_core::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for ErrorBodies {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for ErrorBodies {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for ErrorBodies {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for ErrorBodies {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINGORA_400: &[u8] =
        b"HTTP/1.1 400 Bad Request\r\nServer: Pingora\r\nDate: Fri, 04 Dec 2026 20:18:36 GMT\r\n\
Content-Length: 0\r\nCache-Control: private, no-store\r\nConnection: close\r\n\r\n";

    #[test]
    fn pingoras_empty_errors_get_an_openai_body() {
        let answer = openai_error_for(PINGORA_400).unwrap();
        let text = String::from_utf8(answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        assert!(head.contains("\r\nx-request-id: req_"), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["type"], "invalid_request_error");
        let connect = String::from_utf8_lossy(PINGORA_400).replace("400 Bad Request", "405 Method Not Allowed");
        let answer = String::from_utf8(openai_error_for(connect.as_bytes()).unwrap()).unwrap();
        assert!(answer.contains("\"code\":\"method_not_allowed\""), "{answer}");
    }

    #[test]
    fn everything_else_passes() {
        for write in [
            &b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nDate: Fri, 04 Dec 2026 10:00:00 GMT\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nServer: Pingora\r\nContent-Length: 0\r\nCache-Control: private, no-store\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\nServer: Pingora\r\nContent-Length: 12\r\nCache-Control: private, no-store\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\nServer: uvicorn\r\nContent-Length: 0\r\nCache-Control: private, no-store\r\n\r\n",
            &PINGORA_400[..PINGORA_400.len() - 2],
            b"data: {\"x\":1}\n\n",
            b"",
        ] {
            assert_eq!(openai_error_for(write), None, "{}", String::from_utf8_lossy(write));
        }
    }
}
