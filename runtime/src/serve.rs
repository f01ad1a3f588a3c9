//! Listening and serving HTTP/1 for every role, so that slow, idle or too many clients
//! cannot take a listener or the process down:
//!
//! - A request head must be complete within `TIDEMARK_HEADER_READ_TIMEOUT` of accept, or
//!   of its first bytes on a kept-alive connection.
//! - A kept-alive connection on which nothing arrives for `TIDEMARK_IDLE_TIMEOUT` after a
//!   response is closed. Both timeouts are kept here, not by hyper: its header-read
//!   clock also runs between requests, so it would close every kept-alive connection
//!   after the header-read timeout.
//! - A process serves at most `min(TIDEMARK_MAX_CONNECTIONS, soft RLIMIT_NOFILE − 128)`
//!   connections (half the soft limit if that is larger), shared by all its listeners.
//!   The descriptors left over are for the process's own Postgres, Redis and Kafka
//!   sockets and for refusing: past the cap a new connection is answered `503` with
//!   `Retry-After` once its request has arrived (waiting at most [`REFUSAL_WAIT`], for
//!   [`REFUSALS`] connections at a time per listener; others are answered at once) and
//!   closed. If accepting fails anyway (`EMFILE`, `ENFILE`), the listener pauses for
//!   [`ACCEPT_BACKOFF`] and goes on.
//! - On shutdown the listener stops accepting and closes connections that have no request
//!   in flight; the others finish their request, and whatever is still open after
//!   `TIDEMARK_SHUTDOWN_TIMEOUT` is closed.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::{Body as HttpBody, Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::Serving;
use crate::telemetry::serving::HTTP_CONNECTIONS_REFUSED;

/// Connections the kernel queues before they are accepted; tokio's default of 128
/// overflowed when thousands of clients connected at once
/// (docs/archive/performance-rounds.md, "Limits found, and why").
const LISTEN_BACKLOG: u32 = 4096;

/// File descriptors kept out of the connection cap derived from the fd limit.
const FD_RESERVE: u64 = 128;

/// How long accepting pauses after a failure such as running out of descriptors.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Connections past the cap whose request one listener may wait for at a time.
pub const REFUSALS: usize = 32;

/// How long a connection past the cap may take to send its request before the refusal.
/// Answering before the request arrives would make clients such as hyper's report a
/// broken connection instead of the `503`.
pub const REFUSAL_WAIT: Duration = Duration::from_millis(500);

const REFUSAL_BODY: &str =
    r#"{"error":{"code":"unavailable","message":"too many connections; retry later"}}"#;

/// Timeouts and the connection budget of [`serve`].
#[derive(Debug, Clone)]
pub struct ServeLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// One permit per open connection; listeners given clones share it.
    pub connections: Arc<Semaphore>,
}

impl ServeLimits {
    /// The limits of the serving settings, with a connection budget sized from them and
    /// the open-file limit. A process makes one and gives clones to all its listeners.
    pub fn from_settings(serving: &Serving) -> Self {
        Self {
            header_read_timeout: serving.header_read_timeout,
            idle_timeout: serving.idle_timeout,
            shutdown_timeout: serving.shutdown_timeout,
            connections: Arc::new(Semaphore::new(connection_cap(
                serving.max_connections.map(|n| n.0),
            ))),
        }
    }
}

fn connection_cap(configured: Option<usize>) -> usize {
    let from_fd_limit = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _)) => {
            usize::try_from(soft.saturating_sub(FD_RESERVE).max(soft / 2)).unwrap_or(usize::MAX)
        }
        Err(_) => usize::MAX,
    };
    let cap = configured
        .unwrap_or(usize::MAX)
        .min(from_fd_limit)
        .min(Semaphore::MAX_PERMITS);
    if configured.is_some_and(|c| c > cap) {
        tracing::warn!(
            cap,
            "TIDEMARK_MAX_CONNECTIONS lowered to fit the open-file limit"
        );
    }
    tracing::info!(cap, "serving at most this many connections");
    cap
}

/// Binds `addr` (port 0 picks a free port); the caller learns the bound address.
pub async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let listen = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|e| anyhow::anyhow!("cannot listen on {addr} for {what}: {e}"))
}

/// Serves `router` on `listener` within `limits` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut http = http1::Builder::new();
    // Enforced here instead: hyper's clock also runs between requests (see `Wait`).
    http.header_read_timeout(None);
    let timeouts = Timeouts {
        header_read: limits.header_read_timeout,
        idle: limits.idle_timeout,
    };
    let refusals = Arc::new(Semaphore::new(REFUSALS));
    let mut connections = JoinSet::new();
    let mut accept_failing = false;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                if !accept_failing {
                    tracing::warn!(error = %e, "cannot accept connections; retrying");
                }
                accept_failing = true;
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        accept_failing = false;
        match limits.connections.clone().try_acquire_owned() {
            Ok(permit) => {
                let connection = serve_connection(
                    stream,
                    peer,
                    http.clone(),
                    router.clone(),
                    timeouts,
                    shutdown.clone(),
                );
                connections.spawn(async move {
                    connection.await;
                    drop(permit);
                });
            }
            Err(_) => {
                HTTP_CONNECTIONS_REFUSED.increment(1);
                match refusals.clone().try_acquire_owned() {
                    Ok(permit) => {
                        connections.spawn(async move {
                            refuse(stream).await;
                            drop(permit);
                        });
                    }
                    Err(_) => refuse_now(stream),
                }
            }
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "closing connections still open after the shutdown timeout"
        );
        connections.shutdown().await;
    }
    Ok(())
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// Answers `503` once the request has arrived, or [`REFUSAL_WAIT`] has passed.
async fn refuse(mut stream: TcpStream) {
    let mut first = [0u8; 4096];
    let _ = tokio::time::timeout(REFUSAL_WAIT, stream.read(&mut first)).await;
    refuse_now(stream);
}

/// Answers `503` and closes. What the client already sent is read first: closing with
/// unread data would reset the connection, and the client could lose the answer.
fn refuse_now(stream: TcpStream) {
    let Ok(mut stream) = stream.into_std() else {
        return;
    };
    let mut scratch = [0u8; 4096];
    for _ in 0..16 {
        if !matches!(stream.read(&mut scratch), Ok(n) if n > 0) {
            break;
        }
    }
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nRetry-After: 1\r\nCache-Control: no-store\r\n\
         Connection: close\r\n\r\n{REFUSAL_BODY}",
        REFUSAL_BODY.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

/// Serves one connection; handlers see the client's address as axum's
/// `ConnectInfo<SocketAddr>` (per-address limits need it).
async fn serve_connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    http: http1::Builder,
    router: Router,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) {
    let (wait, waiting) = watch::channel(Wait::Head(Instant::now()));
    let wait = Arc::new(wait);
    let io = Watched {
        stream,
        wait: wait.clone(),
    };
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let busy = Busy::start(wait.clone());
        let response = router.clone().oneshot(request);
        async move {
            let response = response.await.unwrap_or_else(|never| match never {});
            Ok::<_, Infallible>(response.map(|body| BusyBody { body, _busy: busy }))
        }
    });
    let connection = http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return log_error(result),
        expired = expiry(waiting.clone(), timeouts) => {
            if let Wait::Head(_) = expired {
                return;
            }
        }
        () = shutdown.cancelled() => {
            if let Wait::Head(_) = *waiting.borrow() {
                return;
            }
        }
    }
    // Busy: hyper finishes the response, then closes. Idle: it closes at once.
    connection.as_mut().graceful_shutdown();
    log_error(connection.await);
}

fn log_error(result: hyper::Result<()>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// What a connection is waiting for, and since when.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// The rest of a request head: since accept, or since the first bytes after idling.
    Head(Instant),
    /// Nothing has arrived since the last response was sent.
    Idle(Instant),
    /// A request is being served, from its head to the end of its response body.
    Busy,
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header_read: Duration,
    idle: Duration,
}

/// Completes with the wait that outlasted its timeout.
async fn expiry(mut waiting: watch::Receiver<Wait>, timeouts: Timeouts) -> Wait {
    loop {
        let wait = *waiting.borrow_and_update();
        let deadline = match wait {
            Wait::Head(since) => Some(since + timeouts.header_read),
            Wait::Idle(since) => Some(since + timeouts.idle),
            Wait::Busy => None,
        };
        let changed = match deadline {
            Some(deadline) => tokio::select! {
                () = tokio::time::sleep_until(deadline) => return wait,
                changed = waiting.changed() => changed,
            },
            None => waiting.changed().await,
        };
        if changed.is_err() {
            return std::future::pending().await;
        }
    }
}

/// The connection's socket; bytes arriving on an idle connection start a request head.
struct Watched {
    stream: TcpStream,
    wait: Arc<watch::Sender<Wait>>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.wait.send_if_modified(|wait| match wait {
                Wait::Idle(_) => {
                    *wait = Wait::Head(Instant::now());
                    true
                }
                _ => false,
            });
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Marks the connection busy while it lives, idle from the moment it is dropped.
struct Busy(Arc<watch::Sender<Wait>>);

impl Busy {
    fn start(wait: Arc<watch::Sender<Wait>>) -> Self {
        wait.send_replace(Wait::Busy);
        Self(wait)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.send_replace(Wait::Idle(Instant::now()));
    }
}

/// A response body that keeps its connection busy until hyper has taken all of it.
struct BusyBody {
    body: Body,
    _busy: Busy,
}

impl HttpBody for BusyBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::routing::get;
    use tokio::io::AsyncWriteExt;
    use tokio::task::JoinHandle;

    use super::*;

    const HALF_HEAD: &[u8] = b"GET /livez HTTP/1.1\r\nHost: x\r\n";
    const GET_LIVEZ: &[u8] = b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n";
    const GET_SLOW: &[u8] = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn limits(max_connections: usize) -> ServeLimits {
        ServeLimits {
            header_read_timeout: ms(10_000),
            idle_timeout: ms(10_000),
            shutdown_timeout: ms(10_000),
            connections: Arc::new(Semaphore::new(max_connections)),
        }
    }

    struct Server {
        addr: SocketAddr,
        shutdown: CancellationToken,
        task: JoinHandle<anyhow::Result<()>>,
    }

    async fn start(limits: ServeLimits) -> Server {
        let listener = bind("127.0.0.1:0".parse().unwrap(), "a test")
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new()
            .route("/livez", get(|| async { "ok" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(ms(300)).await;
                    "slow"
                }),
            )
            .route("/stuck", get(std::future::pending::<()>));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, router, limits, shutdown.clone()));
        Server {
            addr,
            shutdown,
            task,
        }
    }

    /// Sends `request` and reads one response, whose body ends with `body_end`.
    async fn exchange(stream: &mut TcpStream, request: &[u8], body_end: &str) -> String {
        stream.write_all(request).await.unwrap();
        let mut received = Vec::new();
        tokio::time::timeout(ms(5_000), async {
            let mut buf = [0u8; 1024];
            while !received.ends_with(body_end.as_bytes()) {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(
                    n > 0,
                    "closed early: {:?}",
                    String::from_utf8_lossy(&received)
                );
                received.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("a response within 5 s");
        String::from_utf8(received).unwrap()
    }

    /// What the server sends until it closes the connection, and after how long.
    async fn until_closed(stream: &mut TcpStream) -> (String, Duration) {
        let start = Instant::now();
        let mut received = Vec::new();
        tokio::time::timeout(ms(5_000), async {
            let mut buf = [0u8; 1024];
            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                received.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("the server closes the connection within 5 s");
        (
            String::from_utf8_lossy(&received).into_owned(),
            start.elapsed(),
        )
    }

    #[tokio::test]
    async fn a_half_sent_head_is_closed_after_the_header_read_timeout() {
        let server = start(ServeLimits {
            header_read_timeout: ms(300),
            ..limits(8)
        })
        .await;
        let mut fresh = TcpStream::connect(server.addr).await.unwrap();
        fresh.write_all(HALF_HEAD).await.unwrap();
        let (_, after) = until_closed(&mut fresh).await;
        assert!(
            after >= ms(250) && after < ms(2_000),
            "closed after {after:?}"
        );

        let mut kept = TcpStream::connect(server.addr).await.unwrap();
        exchange(&mut kept, GET_LIVEZ, "ok").await;
        tokio::time::sleep(ms(600)).await;
        let response = exchange(&mut kept, GET_LIVEZ, "ok").await;
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "waiting between requests is idling, not reading a head: {response}"
        );
        kept.write_all(HALF_HEAD).await.unwrap();
        let (_, after) = until_closed(&mut kept).await;
        assert!(
            after >= ms(250) && after < ms(2_000),
            "closed after {after:?}"
        );
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
        let server = start(ServeLimits {
            idle_timeout: ms(200),
            ..limits(8)
        })
        .await;
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        let response = exchange(&mut client, GET_SLOW, "slow").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let response = exchange(&mut client, GET_LIVEZ, "ok").await;
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "a request longer than the idle timeout keeps the connection: {response}"
        );
        let (_, after) = until_closed(&mut client).await;
        assert!(
            after >= ms(150) && after < ms(2_000),
            "closed after {after:?}"
        );
    }

    #[tokio::test]
    async fn past_the_cap_a_connection_is_refused_at_once() {
        let server = start(limits(2)).await;
        let mut holder = TcpStream::connect(server.addr).await.unwrap();
        holder.write_all(HALF_HEAD).await.unwrap();
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        let response = exchange(&mut client, GET_LIVEZ, "ok").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");

        let mut third = TcpStream::connect(server.addr).await.unwrap();
        tokio::time::sleep(ms(100)).await;
        let mut early = [0u8; 64];
        assert!(
            matches!(third.try_read(&mut early), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the refusal waits for the request: clients take an answer before it as a broken connection"
        );
        third.write_all(GET_LIVEZ).await.unwrap();
        let (refusal, after) = until_closed(&mut third).await;
        assert!(after < ms(1_000), "refused after {after:?}");
        assert!(refusal.starts_with("HTTP/1.1 503"), "{refusal}");
        for part in ["Retry-After: 1\r\n", "Connection: close\r\n", REFUSAL_BODY] {
            assert!(refusal.contains(part), "{part} in {refusal}");
        }

        let response = exchange(&mut client, GET_LIVEZ, "ok").await;
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "connections within the cap are still served: {response}"
        );
        drop(holder);
        drop(client);
        let deadline = Instant::now() + ms(2_000);
        loop {
            let mut again = TcpStream::connect(server.addr).await.unwrap();
            again
                .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let (response, _) = until_closed(&mut again).await;
            if response.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "closed connections free their slots"
            );
            tokio::time::sleep(ms(20)).await;
        }
    }

    #[tokio::test]
    async fn shutdown_lets_requests_finish_within_its_timeout() {
        let server = start(ServeLimits {
            shutdown_timeout: ms(1_000),
            ..limits(8)
        })
        .await;
        let mut half_sent = TcpStream::connect(server.addr).await.unwrap();
        half_sent.write_all(HALF_HEAD).await.unwrap();
        let mut idle = TcpStream::connect(server.addr).await.unwrap();
        exchange(&mut idle, GET_LIVEZ, "ok").await;
        let mut busy = TcpStream::connect(server.addr).await.unwrap();
        busy.write_all(GET_SLOW).await.unwrap();
        let mut stuck = TcpStream::connect(server.addr).await.unwrap();
        stuck
            .write_all(b"GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(ms(100)).await;

        let start = Instant::now();
        server.shutdown.cancel();
        until_closed(&mut half_sent).await;
        until_closed(&mut idle).await;
        let closed = start.elapsed();
        assert!(
            closed < ms(500),
            "connections without a request close at once: {closed:?}"
        );
        let (response, _) = until_closed(&mut busy).await;
        assert!(
            response.starts_with("HTTP/1.1 200") && response.ends_with("slow"),
            "a request in flight is finished: {response}"
        );
        tokio::time::timeout(ms(3_000), server.task)
            .await
            .expect("serve returns within the shutdown timeout")
            .unwrap()
            .unwrap();
        let took = start.elapsed();
        assert!(took >= ms(900) && took < ms(2_000), "took {took:?}");
        let (response, _) = until_closed(&mut stuck).await;
        assert!(response.is_empty(), "{response}");
    }
}
