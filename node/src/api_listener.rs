//! The HTTP API's listener: at most a set number of open client connections, each
//! closed after a while without a byte from or to the client.
//!
//! Without these, clients that open connections and send nothing (or dribble a
//! header) would hold a task and a file descriptor each for as long as they liked,
//! until the process ran out of descriptors: the validator's libp2p side then could
//! not accept or dial peers either. With them, such clients can at worst fill the
//! API's own slots; consensus and gossip keep their descriptors.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// A [`TcpListener`] that hands out at most `max` connections at once.
#[derive(Debug)]
pub struct LimitedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    idle: Duration,
}

impl LimitedListener {
    /// At most `max` (at least 1) connections open at once, each closed after
    /// `idle` without a byte read from or written to the client. The server reads
    /// (to notice a client leaving) while a handler works, so `idle` must exceed
    /// the longest handler (rebuilding a block from fragments waits up to 15 s).
    pub fn new(inner: TcpListener, max: usize, idle: Duration) -> Self {
        LimitedListener {
            inner,
            slots: Arc::new(Semaphore::new(max.max(1))),
            idle,
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // Waiting here leaves new clients in the kernel's backlog.
            let Ok(slot) = self.slots.clone().acquire_owned().await else {
                // The semaphore is never closed; wait rather than spin if it were.
                std::future::pending::<()>().await;
                continue;
            };
            match self.inner.accept().await {
                Ok((stream, address)) => {
                    let _ = stream.set_nodelay(true);
                    let stream = LimitedStream {
                        stream,
                        _slot: slot,
                        idle: self.idle,
                        deadline: Box::pin(tokio::time::sleep(self.idle)),
                        waiting: false,
                    };
                    return (stream, address);
                }
                Err(e) => {
                    // Out of descriptors, say: back off instead of spinning.
                    tracing::warn!(error = %e, "HTTP API cannot accept a connection");
                    drop(slot);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection holding its slot until it is dropped.
#[derive(Debug)]
pub struct LimitedStream {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    idle: Duration,
    /// When a read that is waiting for the client gives up.
    deadline: Pin<Box<Sleep>>,
    /// `deadline` is armed: no byte moved since a read started waiting. Bytes
    /// written clear it, so a long answer to a slow reader is not cut off.
    waiting: bool,
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.waiting = false;
                Poll::Ready(result)
            }
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    let idle = this.idle;
                    this.deadline.as_mut().reset(Instant::now() + idle);
                }
                match this.deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no bytes from the client for too long",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            // Activity: a waiting read re-arms its deadline from now when woken.
            self.waiting = false;
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.waiting = false;
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const LIMIT: Duration = Duration::from_secs(20);

    /// Serves `GET /` with "ok" through a limited listener; returns its address.
    async fn server(max: usize, idle: Duration) -> SocketAddr {
        let inner = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let listener = LimitedListener::new(inner, max, idle);
        let address =
            axum::serve::Listener::local_addr(&listener).unwrap_or_else(|e| panic!("{e}"));
        // "/slow" answers 10 chunks 100 ms apart: longer than the idle time of
        // the tests, but never idle.
        let slow = || async {
            let chunks = futures::stream::unfold(0u32, |i| async move {
                if i == 10 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((Ok::<_, io::Error>(format!("chunk{i};")), i + 1))
            });
            axum::body::Body::from_stream(chunks)
        };
        let app = axum::Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .route("/slow", axum::routing::get(slow));
        tokio::spawn(async move { axum::serve(listener, app).await });
        address
    }

    /// Sends one request on `stream` and reads the answer's first bytes.
    async fn ask(stream: &mut TcpStream) -> String {
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut answer = vec![0u8; 256];
        let n = tokio::time::timeout(LIMIT, stream.read(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("no answer within {LIMIT:?}"))
            .unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&answer[..n]).into_owned()
    }

    async fn connect(address: SocketAddr) -> TcpStream {
        TcpStream::connect(address)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_past_the_limit_wait_for_a_free_slot() {
        let address = server(2, LIMIT).await;
        let mut first = connect(address).await;
        let mut second = connect(address).await;
        assert!(ask(&mut first).await.starts_with("HTTP/1.1 200"));
        assert!(ask(&mut second).await.starts_with("HTTP/1.1 200"));
        // Both slots are held (keep-alive): a third client is not served...
        let mut third = connect(address).await;
        third
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut answer = vec![0u8; 256];
        let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut answer)).await;
        assert!(early.is_err(), "served past the limit: {early:?}");
        // ...until one of them leaves.
        drop(first);
        let n = tokio::time::timeout(LIMIT, third.read(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("not served after a slot was freed"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
        assert!(ask(&mut second).await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_longer_than_the_idle_time_is_not_cut_off() {
        let address = server(1, Duration::from_millis(300)).await;
        let mut client = connect(address).await;
        client
            .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut answer = Vec::new();
        tokio::time::timeout(LIMIT, client.read_to_end(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("no end of answer within {LIMIT:?}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.contains("chunk9;"), "cut off: {answer}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_client_is_dropped_and_its_slot_freed() {
        let address = server(1, Duration::from_millis(200)).await;
        // Sends half a request line and nothing more.
        let mut silent = connect(address).await;
        silent
            .write_all(b"GET / HT")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(LIMIT, silent.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a silent client kept its connection");
        // Its slot is free again.
        let mut next = connect(address).await;
        assert!(ask(&mut next).await.starts_with("HTTP/1.1 200"));
    }
}
