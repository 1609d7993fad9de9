//! Bodies that count their bytes, and the access log line written when a response ends.

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A body passed through unchanged while its data bytes are added to a shared counter (when
/// there is one: only the access log reads it).
#[derive(Debug)]
pub(crate) struct Counted<B> {
    inner: B,
    bytes: Option<Arc<AtomicU64>>,
}

impl<B> Counted<B> {
    pub(crate) fn new(inner: B, bytes: Option<Arc<AtomicU64>>) -> Self {
        Self { inner, bytes }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
            && let Some(bytes) = &self.bytes
        {
            bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// True when the access log (`burrow::access` at info) is on.
pub(crate) fn access_log_on() -> bool {
    tracing::enabled!(target: "burrow::access", tracing::Level::INFO)
}

/// What the access log says about one request; written once, when its response body ends (or
/// is dropped unfinished).
#[derive(Debug)]
pub(crate) struct Access {
    pub start: Instant,
    pub visitor: SocketAddr,
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: u16,
    /// Request body bytes read from the visitor.
    pub up: Arc<AtomicU64>,
    /// Time to the response head.
    pub first_byte: Duration,
    pub tunnel: String,
    pub client: Option<u64>,
}

/// A response body that writes the access log line when it ends.
#[derive(Debug)]
pub(crate) struct Logged<B: Body> {
    inner: B,
    down: u64,
    access: Option<Access>,
}

impl<B: Body> Logged<B> {
    pub(crate) fn new(inner: B, access: Option<Access>) -> Self {
        Self {
            inner,
            down: 0,
            access,
        }
    }

    fn finish(&mut self, complete: bool) {
        let Some(a) = self.access.take() else { return };
        let client = a.client.map(|c| format!("{c:016x}"));
        tracing::info!(
            target: "burrow::access",
            visitor = %a.visitor,
            method = %a.method,
            host = %a.host,
            path = %a.path,
            status = a.status,
            up = a.up.load(Ordering::Relaxed),
            down = self.down,
            first_byte_ms = a.first_byte.as_secs_f64() * 1e3,
            total_ms = a.start.elapsed().as_secs_f64() * 1e3,
            tunnel = %a.tunnel,
            client = client.as_deref().unwrap_or("-"),
            complete,
            "request"
        );
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Logged<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.down += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish(true);
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for Logged<B> {
    fn drop(&mut self) {
        // An empty body may never be polled; a visitor may leave mid-body.
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}
