//! Accepted connections that the server can close.
//!
//! A graceful stop lets requests in flight finish; one that takes longer than
//! `shutdown_grace` (a sender stalled halfway through a body) must not keep the process,
//! or an embedding program, waiting. Both HTTP stacks run each connection in a task of
//! its own that the server does not hold, so instead of aborting tasks it cannot reach,
//! every connection is wrapped: once `kill` fires, its reads and writes fail, and the
//! HTTP stack closes it. The sender gets no answer and retries; nothing unanswered was
//! acknowledged.
//!
//! Accepted sockets also get `TCP_NODELAY`: a unary gRPC answer otherwise waits on
//! Nagle's algorithm and the peer's delayed ACK (about 40 ms, on one request in ten).
//!
//! What a connection may hold, so that no peer can exhaust the process (each a limit of
//! `docs/operations.md`):
//! - **a slot**: a listener has at most `max_connections` connections open; one more is
//!   closed as soon as it is accepted (counted and logged), so the file descriptors
//!   left stay for the other listeners, the store and the sinks. The admin listener
//!   has its own slots ([`ADMIN_CONNECTIONS`]): probes answer however full the
//!   receivers are;
//! - **its silence**: a connection that sends nothing for `idle_timeout` is closed
//!   (an idle keep-alive connection, a peer that stalled halfway through anything).
//!   The clock is the read side's: a request being committed is not idle on the
//!   server's account, and the bound is far beyond any commit.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Connections the admin listener takes at once: probes and scrapes, never many.
pub const ADMIN_CONNECTIONS: usize = 64;

/// File descriptors kept out of the connection slots: the state store, the findings
/// file, the sinks' HTTP connections, the files watched for reloads, the runtime.
pub const FD_RESERVE: usize = 256;

pub struct Killable {
    inner: TcpStream,
    kill: Pin<Box<WaitForCancellationFutureOwned>>,
    idle: Option<Idle>,
    /// The listener's slot this connection holds, given back when it closes.
    _slot: Slot,
}

/// The idle clock: the last time bytes arrived, and a timer that wakes the reader to
/// look at it. The timer is reset only when it fires, not on every read.
struct Idle {
    after: Duration,
    last_read: Instant,
    timer: Pin<Box<Sleep>>,
}

/// A slot of a listener's connection cap.
struct Slot {
    _permit: OwnedSemaphorePermit,
    slots: Arc<Semaphore>,
    cap: usize,
    listener: &'static str,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Counted as still open until the permit goes, just after this.
        let open = self.cap - self.slots.available_permits() - 1;
        crate::metrics::connections(self.listener, open);
    }
}

impl Killable {
    fn new(
        inner: TcpStream,
        kill: &CancellationToken,
        idle_timeout: Option<Duration>,
        slot: Slot,
    ) -> Self {
        // Best effort: a socket that refuses the option still works.
        let _ = inner.set_nodelay(true);
        Killable {
            inner,
            kill: Box::pin(kill.clone().cancelled_owned()),
            idle: idle_timeout.map(|after| Idle {
                after,
                last_read: Instant::now(),
                timer: Box::pin(tokio::time::sleep(after)),
            }),
            _slot: slot,
        }
    }

    fn killed(&mut self, cx: &mut Context<'_>) -> bool {
        self.kill.as_mut().poll(cx).is_ready()
    }

    /// Whether the connection has been silent too long (and, if not, the timer is set to
    /// wake the reader when it would be).
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(idle) = &mut self.idle else {
            return false;
        };
        loop {
            if idle.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let deadline = idle.last_read + idle.after;
            if Instant::now() >= deadline {
                return true;
            }
            idle.timer
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
        }
    }
}

fn idle_closed(after: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "nothing received for {} s (limits.idle_timeout): connection closed",
            after.as_secs()
        ),
    )
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "unseen is stopping: the grace period for requests in flight is over",
    )
}

impl AsyncRead for Killable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.killed(cx) {
            return Poll::Ready(Err(closed()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    if let Some(idle) = &mut self.idle {
                        idle.last_read = Instant::now();
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if self.idle_expired(cx) {
                    crate::metrics::timeout("idle");
                    let after = self.idle.as_ref().map(|i| i.after).unwrap_or_default();
                    return Poll::Ready(Err(idle_closed(after)));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncWrite for Killable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.killed(cx) {
            return Poll::Ready(Err(closed()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.killed(cx) {
            return Poll::Ready(Err(closed()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.killed(cx) {
            return Poll::Ready(Err(closed()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Killable {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// An accepted connection: plain, or TLS over the killable socket.
pub enum Stream {
    Plain(Killable),
    Tls(Box<tokio_rustls::server::TlsStream<Killable>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for Stream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Stream::Plain(s) => s.connect_info(),
            Stream::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

/// How one listener takes connections.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// The listener's name, in logs and metric labels.
    pub name: &'static str,
    /// Connections open at once, at most.
    pub max_connections: usize,
    /// A connection silent this long is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
}

/// Connections of one listener, accepted (and, with TLS, through their handshake) by a
/// task of its own: a slow handshake never holds back the next accept.
pub struct Incoming {
    rx: tokio::sync::mpsc::Receiver<(Stream, std::net::SocketAddr)>,
}

impl Incoming {
    /// Starts accepting on `listener` until `stop`. `tls`: the handshake to run first.
    pub fn start(
        listener: TcpListener,
        kill: CancellationToken,
        tls: Option<(crate::tls::Tls, crate::tls::Protocols)>,
        limits: ListenerLimits,
        stop: CancellationToken,
    ) -> io::Result<Incoming> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let cap = limits.max_connections.max(1);
        let slots = Arc::new(Semaphore::new(cap));
        let mut refusals_logged: Option<Instant> = None;
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let (stream, addr) = match accepted {
                    Ok(a) => a,
                    // Out of file descriptors and the like: the listener is fine, the
                    // process is short of something; wait a little rather than spin.
                    Err(error) => {
                        tracing::warn!(%error, listener = limits.name, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // At the cap, the connection is closed at once: the peer sees it closed and
                // retries, instead of waiting in the kernel's backlog for a slot.
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    // Counted before the close, which the peer sees.
                    crate::metrics::connection_refused(limits.name);
                    drop(stream);
                    if refusals_logged
                        .is_none_or(|at| at.elapsed() >= crate::export::REJECTION_LOG_EVERY)
                    {
                        refusals_logged = Some(Instant::now());
                        tracing::warn!(
                            listener = limits.name,
                            peer = %addr,
                            max_connections = cap,
                            "a connection was closed at once: the listener is at limits.max_connections; raise it if these are real senders, or look for a peer holding connections open (logged at most once a minute; {} counts them all)",
                            crate::metrics::CONNECTIONS_REFUSED
                        );
                    }
                    continue;
                };
                crate::metrics::connections(limits.name, cap - slots.available_permits());
                let slot = Slot {
                    _permit: permit,
                    slots: slots.clone(),
                    cap,
                    listener: limits.name,
                };
                let stream = Killable::new(stream, &kill, limits.idle_timeout, slot);
                match &tls {
                    None => {
                        if tx.send((Stream::Plain(stream), addr)).await.is_err() {
                            return;
                        }
                    }
                    Some((tls, protocols)) => {
                        let acceptor = tls.acceptor(*protocols);
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            let handshake = tokio::time::timeout(
                                crate::tls::HANDSHAKE_TIMEOUT,
                                acceptor.accept(stream),
                            )
                            .await;
                            match handshake {
                                Ok(Ok(tls)) => {
                                    let _ = tx.send((Stream::Tls(Box::new(tls)), addr)).await;
                                }
                                Ok(Err(error)) => {
                                    tracing::debug!(%error, peer = %addr, "TLS handshake failed")
                                }
                                Err(_) => {
                                    tracing::debug!(peer = %addr, "TLS handshake timed out")
                                }
                            }
                        });
                    }
                }
            }
        });
        Ok(Incoming { rx })
    }

    /// The connections, as tonic takes them.
    pub fn into_stream(
        self,
    ) -> impl tonic::codegen::tokio_stream::Stream<Item = Result<Stream, io::Error>> {
        use tonic::codegen::tokio_stream::StreamExt;
        tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(self.rx).map(|(s, _)| Ok(s))
    }
}

impl Incoming {
    /// The next connection; `None` once the accept task stopped.
    pub async fn next(&mut self) -> Option<(Stream, std::net::SocketAddr)> {
        self.rx.recv().await
    }
}

/// The slots each receiver listener gets: `wanted`, unless the process may not open
/// that many files. The soft limit on open files is raised to the hard one first (a
/// server that holds connections is what the hard limit is for); if both receivers'
/// slots, the admin's and [`FD_RESERVE`] still do not fit, the receivers get fewer,
/// and the log says so: a connection past the cap is refused cleanly, while a process
/// out of file descriptors stops answering probes and writing its state.
pub fn connection_slots(wanted: usize) -> usize {
    let Some(limit) = open_files_limit() else {
        return wanted;
    };
    let fits = limit.saturating_sub(ADMIN_CONNECTIONS + FD_RESERVE) / 2;
    if wanted <= fits {
        return wanted;
    }
    let slots = fits.max(1);
    tracing::warn!(
        wanted,
        slots,
        open_files = limit,
        "limits.max_connections does not fit the process's open-file limit (ulimit -n); each receiver takes {slots} connections at most. Raise the limit (LimitNOFILE= for systemd) to have more"
    );
    slots
}

#[cfg(unix)]
fn open_files_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    usize::try_from(limit.rlim_cur).ok()
}

#[cfg(not(unix))]
fn open_files_limit() -> Option<usize> {
    None
}
