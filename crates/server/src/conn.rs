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

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pub struct Killable {
    inner: TcpStream,
    kill: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Killable {
    pub fn new(inner: TcpStream, kill: &CancellationToken) -> Self {
        // Best effort: a socket that refuses the option still works.
        let _ = inner.set_nodelay(true);
        Killable {
            inner,
            kill: Box::pin(kill.clone().cancelled_owned()),
        }
    }

    fn killed(&mut self, cx: &mut Context<'_>) -> bool {
        self.kill.as_mut().poll(cx).is_ready()
    }
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
        Pin::new(&mut self.inner).poll_read(cx, buf)
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

/// Connections of one listener, accepted (and, with TLS, through their handshake) by a
/// task of its own: a slow handshake never holds back the next accept.
pub struct Incoming {
    rx: tokio::sync::mpsc::Receiver<(Stream, std::net::SocketAddr)>,
    local: std::net::SocketAddr,
}

impl Incoming {
    /// Starts accepting on `listener` until `stop`. `tls`: the handshake to run first.
    pub fn start(
        listener: TcpListener,
        kill: CancellationToken,
        tls: Option<(crate::tls::Tls, crate::tls::Protocols)>,
        stop: CancellationToken,
    ) -> io::Result<Incoming> {
        let local = listener.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
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
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let stream = Killable::new(stream, &kill);
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
        Ok(Incoming { rx, local })
    }

    /// The connections, as tonic takes them.
    pub fn into_stream(
        self,
    ) -> impl tonic::codegen::tokio_stream::Stream<Item = Result<Stream, io::Error>> {
        use tonic::codegen::tokio_stream::StreamExt;
        tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(self.rx).map(|(s, _)| Ok(s))
    }
}

impl axum::serve::Listener for Incoming {
    type Io = Stream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(accepted) => accepted,
            // The accept task stopped: no more connections, ever.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
