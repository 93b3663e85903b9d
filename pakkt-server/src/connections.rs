//! Serving connections under limits: a deadline for each request's
//! headers, idle connections closed, and a cap on open connections that
//! makes room by closing the connection idle the longest.
//!
//! poem's own server has no header deadline and no cap, so PAKKT serves
//! poem's endpoint on hyper itself. Each connection is in one of three
//! phases, and its deadline follows from the phase:
//!
//! - **reading** a request's headers, since the connection opened or since
//!   the first byte of a request arrived on an idle one: closed when the
//!   headers are not complete within the header timeout (slowloris);
//! - **busy** with requests in flight (a held agent sync included): a
//!   request body that sends nothing for the header timeout fails the
//!   request (400), and the handlers bound the rest;
//! - **idle**, no request in flight since its last answer: closed after the
//!   idle timeout.
//!
//! `docs/deployment.md` ("Limits") documents each figure and its flag.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use poem::endpoint::BoxEndpoint;
use poem::http::uri::Scheme;
use poem::listener::{Acceptor, BoxAcceptor, BoxIo};
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A request's headers must be complete this long after the connection
/// opened or the request's first byte arrived (`--header-timeout`).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle connections are closed after this long without a request in flight
/// (`--idle-timeout`). It is longer than a held sync (25 s), which keeps its
/// connection busy anyway.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_mins(1);

/// Connections open at once (`--max-connections`): 10,000 agents hold a
/// sync each, with room for the API and the panel.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;

/// How long a connection closed for a timeout or to make room may take to
/// finish writing what it had started.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The limits every connection is served under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// See [`DEFAULT_HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// See [`DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`DEFAULT_MAX_CONNECTIONS`]; at least 1.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Where a connection is; see the module's documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request's headers since then.
    Reading(Instant),
    /// This many requests in flight.
    Busy(usize),
    /// No request in flight since then.
    Idle(Instant),
}

/// Why a connection was closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// Its headers did not arrive in time.
    HeaderTimeout,
    /// It was idle too long.
    IdleTimeout,
    /// The cap was reached and it was idle the longest.
    MadeRoom,
    /// The server is shutting down.
    Shutdown,
}

/// One connection's phase, shared by its IO, its requests and its task.
///
/// A change of phase wakes nobody: the connection's task looks at the
/// phase at least once every header or idle timeout, whichever is
/// shorter, and no change sets a deadline nearer than that, so each
/// deadline is kept on time without a wake-up per request.
#[derive(Debug)]
struct Tracker {
    phase: Mutex<Phase>,
    /// Woken to close the connection to make room.
    evicted: Notify,
}

impl Tracker {
    fn new(now: Instant) -> Self {
        Self { phase: Mutex::new(Phase::Reading(now)), evicted: Notify::new() }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        // A phase is a plain value: one left by a panicking holder is whole.
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves to the phase `next` gives for the current one, in one step:
    /// under HTTP/2 requests start and end on several threads at once.
    fn update(&self, next: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase();
        *phase = next(*phase);
    }

    /// Bytes arrived: an idle connection starts reading a request.
    fn received(&self) {
        self.update(|phase| match phase {
            Phase::Idle(_) => Phase::Reading(Instant::now()),
            other => other,
        });
    }

    /// A request's headers are complete: it is in flight until the guard
    /// drops (answered, or abandoned with its connection).
    fn request(self: &Arc<Self>) -> InFlight {
        self.update(|phase| match phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            Phase::Reading(_) | Phase::Idle(_) => Phase::Busy(1),
        });
        InFlight(Arc::clone(self))
    }

    /// Since when it has had no request in flight, if it has none.
    fn idle_since(&self) -> Option<Instant> {
        match *self.phase() {
            Phase::Reading(since) | Phase::Idle(since) => Some(since),
            Phase::Busy(_) => None,
        }
    }

    /// When it is closed if nothing changes, and why.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, Closed)> {
        match *self.phase() {
            Phase::Reading(since) => Some((since + limits.header_timeout, Closed::HeaderTimeout)),
            Phase::Idle(since) => Some((since + limits.idle_timeout, Closed::IdleTimeout)),
            Phase::Busy(_) => None,
        }
    }
}

/// A request in flight on its connection.
struct InFlight(Arc<Tracker>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.update(|phase| match phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        });
    }
}

/// A connection's IO, telling its tracker when bytes arrive.
struct Watched {
    io: BoxIo,
    tracker: Arc<Tracker>,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.tracker.received();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The open connections, by age.
#[derive(Debug, Default)]
struct Registry {
    next: u64,
    open: HashMap<u64, Arc<Tracker>>,
    /// When a refusal or an eviction was last logged.
    logged: Option<Instant>,
}

impl Registry {
    /// Makes room for one more connection if the cap is reached, by closing
    /// the one idle the longest; `false` when every connection is busy.
    fn make_room(&mut self, cap: usize) -> bool {
        if self.open.len() < cap.max(1) {
            return true;
        }
        let oldest = self.open.iter().filter_map(|(id, tracker)| tracker.idle_since().map(|since| (since, *id))).min();
        let made = oldest.and_then(|(_, id)| self.open.remove(&id)).inspect(|victim| victim.evicted.notify_one());
        if self.logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            self.logged = Some(Instant::now());
            if made.is_some() {
                tracing::warn!(cap, "connection cap reached: closing the connection idle the longest");
            } else {
                tracing::warn!(cap, "connection cap reached and every connection busy: refusing new ones");
            }
        }
        made.is_some()
    }

    fn admit(&mut self) -> (u64, Arc<Tracker>) {
        let id = self.next;
        self.next += 1;
        let tracker = Arc::new(Tracker::new(Instant::now()));
        self.open.insert(id, Arc::clone(&tracker));
        (id, tracker)
    }
}

/// Locks the registry; it holds plain values, whole even after a panic.
fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves `endpoint` on the connections `acceptor` accepts, under
/// `limits`, until `shutdown` completes; then lets requests in flight
/// finish for up to `grace`.
pub async fn serve(
    mut acceptor: BoxAcceptor,
    endpoint: BoxEndpoint<'static, Response>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
) {
    let endpoint = Arc::new(endpoint);
    let registry = Arc::new(Mutex::new(Registry::default()));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = acceptor.accept() => {
                let Ok((io, local, remote, scheme)) = accepted else {
                    // A connection that failed before it was accepted; the
                    // acceptor waits out exhaustion itself.
                    continue;
                };
                let admitted = {
                    let mut registry = lock(&registry);
                    registry.make_room(limits.max_connections).then(|| registry.admit())
                };
                let Some((id, tracker)) = admitted else { continue };
                let connection = Connection {
                    endpoint: Arc::clone(&endpoint),
                    local,
                    remote,
                    scheme,
                    tracker,
                    limits,
                    stopping: stopping.clone(),
                };
                let registry = Arc::clone(&registry);
                connections.spawn(async move {
                    connection.serve(io).await;
                    lock(&registry).open.remove(&id);
                });
            }
        }
    }
    drop(acceptor);
    let _ = stop.send(true);
    let drained = tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(left = connections.len(), ?grace, "connections still open after the grace period: closed");
    }
}

/// One accepted connection.
struct Connection {
    endpoint: Arc<BoxEndpoint<'static, Response>>,
    local: LocalAddr,
    remote: RemoteAddr,
    scheme: Scheme,
    tracker: Arc<Tracker>,
    limits: ConnectionLimits,
    stopping: watch::Receiver<bool>,
}

impl Connection {
    async fn serve(mut self, io: BoxIo) {
        let service = hyper::service::service_fn({
            let (endpoint, tracker) = (Arc::clone(&self.endpoint), Arc::clone(&self.tracker));
            let (local, remote, scheme) = (self.local.clone(), self.remote.clone(), self.scheme.clone());
            let body_timeout = self.limits.header_timeout;
            move |request: hyper::Request<hyper::body::Incoming>| {
                let in_flight = tracker.request();
                let endpoint = Arc::clone(&endpoint);
                let has_body = !hyper::body::Body::is_end_stream(request.body());
                let mut request = poem::Request::from((request, local.clone(), remote.clone(), scheme.clone()));
                if has_body {
                    let body = request.take_body();
                    request.set_body(stalls_after(body, body_timeout));
                }
                async move {
                    let response = endpoint.get_response(request).await;
                    drop(in_flight);
                    Ok::<_, Infallible>(hyper::Response::from(response))
                }
            }
        });
        let io = TokioIo::new(Watched { io, tracker: Arc::clone(&self.tracker) });
        let builder = auto::Builder::new(TokioExecutor::new());
        let connection = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(connection);
        let closed = loop {
            // The phase's deadline, or the shorter timeout from now if that
            // is nearer: a phase that starts meanwhile is seen before its
            // own deadline (see [`Tracker`]).
            let look = Instant::now() + self.limits.header_timeout.min(self.limits.idle_timeout);
            let wake = self.tracker.deadline(&self.limits).map_or(look, |(at, _)| at.min(look));
            tokio::select! {
                _ = &mut connection => return,
                () = self.tracker.evicted.notified() => {
                    // A request may have started since it was chosen: then
                    // it stays open (out of the count) rather than cut short.
                    if self.tracker.idle_since().is_some() {
                        break Closed::MadeRoom;
                    }
                }
                _ = self.stopping.wait_for(|stopping| *stopping) => break Closed::Shutdown,
                () = tokio::time::sleep_until(wake) => {
                    if let Some((at, why)) = self.tracker.deadline(&self.limits)
                        && at <= Instant::now()
                    {
                        break why;
                    }
                }
            }
        };
        tracing::debug!(remote = %self.remote, ?closed, "closing a connection");
        connection.as_mut().graceful_shutdown();
        if closed == Closed::Shutdown {
            // Bounded by the server's grace period.
            let _ = connection.await;
        } else {
            let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
        }
    }
}

/// `body`, failing once no byte of it has arrived for `timeout`: a
/// request is in flight while its body is read, and a client that stops
/// sending one would otherwise keep its connection busy, out of reach of
/// the idle timeout and of the cap.
fn stalls_after(body: poem::Body, timeout: Duration) -> poem::Body {
    use futures_util::StreamExt;
    let chunks = Box::pin(body.into_bytes_stream());
    poem::Body::from_bytes_stream(futures_util::stream::unfold(Some(chunks), move |chunks| async move {
        let mut chunks = chunks?;
        match tokio::time::timeout(timeout, chunks.next()).await {
            Ok(Some(chunk)) => Some((chunk, Some(chunks))),
            Ok(None) => None,
            Err(_) => Some((Err(io::Error::new(io::ErrorKind::TimedOut, "the request body stalled")), None)),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_mins(1),
            max_connections: 2,
        }
    }

    #[test]
    fn a_connection_reads_then_is_busy_then_idle() {
        let start = Instant::now();
        let tracker = Arc::new(Tracker::new(start));
        assert_eq!(tracker.deadline(&limits()), Some((start + Duration::from_secs(10), Closed::HeaderTimeout)));
        let first = tracker.request();
        let second = tracker.request();
        assert_eq!(tracker.deadline(&limits()), None, "no deadline while requests are in flight");
        drop(first);
        assert_eq!(*tracker.phase(), Phase::Busy(1));
        tracker.received();
        assert_eq!(*tracker.phase(), Phase::Busy(1), "a busy connection's bytes are its requests' bodies");
        drop(second);
        assert!(matches!(tracker.deadline(&limits()), Some((_, Closed::IdleTimeout))));
        tracker.received();
        assert!(matches!(tracker.deadline(&limits()), Some((_, Closed::HeaderTimeout))), "a new request is read");
    }

    #[test]
    fn the_cap_closes_the_connection_idle_the_longest_and_never_a_busy_one() {
        let mut registry = Registry::default();
        let (_, busy) = registry.admit();
        let _in_flight = busy.request();
        let (idle_id, idle) = registry.admit();
        assert!(registry.make_room(2), "the idle one makes room");
        assert!(!registry.open.contains_key(&idle_id), "and is closed");
        assert!(idle.evicted.notified().now_or_never().is_some(), "its task is told");
        let (_, reading) = registry.admit();
        let _in_flight_too = reading.request();
        assert!(!registry.make_room(2), "every connection busy: the new one is refused");
        assert_eq!(registry.open.len(), 2);
    }

    /// `now_or_never` without the futures crate.
    trait NowOrNever: Future + Sized {
        fn now_or_never(self) -> Option<Self::Output> {
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            let mut fut = std::pin::pin!(self);
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(out) => Some(out),
                Poll::Pending => None,
            }
        }
    }
    impl<F: Future> NowOrNever for F {}
}
