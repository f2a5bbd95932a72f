//! The node's UDP socket as quinn drives it, on Linux: what quinn's own tokio socket does,
//! without the wake-up that follows every datagram sent.
//!
//! quinn's tokio socket registers with the event loop for reading and for writing. A UDP
//! socket signals "writable" again each time the kernel frees a datagram it has sent, so each
//! packet sent wakes the event loop once more for nothing: one more `epoll_wait` call per
//! packet. This socket registers for reading only, and sends go straight to the kernel. Only
//! when a send would block (the socket's send buffer is full) does it register a second
//! handle, a duplicate of the descriptor, for write readiness, and keeps it from then on;
//! from that point sends wait for readiness as quinn's do. If that registration fails (no
//! descriptor left), a blocked send is retried after a millisecond.
//!
//! Reading is quinn's: `recvmmsg` until the kernel says it would block.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How long a connection waits before sending again when its send would block and no write
/// readiness can be registered (no file descriptor left to duplicate): the fallback.
const RETRY_SEND: Duration = Duration::from_millis(1);

/// The node's UDP socket, registered with tokio for reading only.
pub(crate) struct Socket {
    io: AsyncFd<std::net::UdpSocket>,
    state: UdpSocketState,
    /// Write readiness, registered the first time a send would block: a duplicate of the
    /// socket's descriptor registered for writing, or `None` if that failed.
    writer: OnceLock<Option<AsyncFd<OwnedFd>>>,
    /// Without that registration: whether the last send would have blocked.
    blocked: AtomicBool,
}

impl Socket {
    /// Wraps a bound, non-blocking UDP socket. Must be called within a tokio runtime.
    pub(crate) fn new(socket: std::net::UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new((&socket).into())?;
        Ok(Socket {
            io: register(socket, Interest::READABLE)?,
            state,
            writer: OnceLock::new(),
            blocked: AtomicBool::new(false),
        })
    }

    /// The write readiness registration, made on first use.
    fn writer(&self) -> Option<&AsyncFd<OwnedFd>> {
        self.writer
            .get_or_init(|| {
                let registered = self
                    .io
                    .get_ref()
                    .as_fd()
                    .try_clone_to_owned()
                    .and_then(|fd| register(fd, Interest::WRITABLE));
                match registered {
                    Ok(writer) => Some(writer),
                    Err(err) => {
                        tracing::warn!(%err, "cannot wait for the UDP socket to be writable; retrying sends on a timer");
                        None
                    }
                }
            })
            .as_ref()
    }
}

/// Registers `io` with tokio's event loop for `interest`.
///
/// tokio deprecates this safe form of registration because an arbitrary `AsRawFd` type might
/// close or swap its descriptor while registered; the unsafe replacement asks the caller to
/// promise it does not. The two types registered here, a `std::net::UdpSocket` and an
/// `OwnedFd`, own their descriptor and keep it open and unchanged until dropped, which is that
/// promise kept (and this crate forbids `unsafe`).
#[allow(deprecated)]
fn register<T: std::os::fd::AsRawFd>(io: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    AsyncFd::with_interest(io, interest)
}

impl Socket {
    /// Waits until a send may succeed, once a send has blocked.
    async fn writable(&self) -> io::Result<()> {
        match self.writer.get() {
            Some(Some(writer)) => writer.writable().await.map(|_| ()),
            Some(None) if self.blocked.load(Ordering::Relaxed) => {
                tokio::time::sleep(RETRY_SEND).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("io", self.io.get_ref())
            .finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for Socket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Poller {
            socket: self,
            wait: None,
        })
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let send = || self.state.send(self.io.get_ref().into(), transmit);
        match self.writer.get() {
            // No send has ever blocked: straight to the kernel.
            None => match send() {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    // Register for write readiness now; quinn then waits on the poller.
                    let _ = self.writer();
                    Err(err)
                }
                sent => sent,
            },
            // As quinn's socket: readiness first, cleared when the kernel says it is full.
            Some(Some(writer)) => writer.try_io(Interest::WRITABLE, |_| send()),
            Some(None) => {
                let sent = send();
                let blocked = matches!(&sent, Err(err) if err.kind() == io::ErrorKind::WouldBlock);
                self.blocked.store(blocked, Ordering::Relaxed);
                sent
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.io.poll_read_ready(cx))?;
            // Until the kernel says it would block: a batch that is not full does not prove the
            // queue empty on every system, and taking it as proof measured worse here (see
            // docs/PERFORMANCE.md).
            match guard.try_io(|io| self.state.recv(io.get_ref().into(), bufs, meta)) {
                Ok(received) => return Poll::Ready(received),
                // Would block: readiness is cleared; wait for the next event.
                Err(_) => continue,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    fn max_transmit_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.state.gro_segments()
    }
}

/// One connection's wait for the socket to take more datagrams. Each connection waits with a
/// future of its own: tokio's `poll_write_ready` would keep the waker of only one of them.
struct Poller {
    socket: Arc<Socket>,
    wait: Option<Pin<Box<dyn Future<Output = io::Result<()>> + Send + Sync>>>,
}

impl fmt::Debug for Poller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller").finish_non_exhaustive()
    }
}

impl UdpPoller for Poller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.wait.is_none() {
            if this.socket.writer.get().is_none() {
                // No send has blocked yet: try the send.
                return Poll::Ready(Ok(()));
            }
            let socket = Arc::clone(&this.socket);
            this.wait = Some(Box::pin(async move { socket.writable().await }));
        }
        let Some(wait) = this.wait.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let ready = ready!(wait.as_mut().poll(cx));
        this.wait = None;
        Poll::Ready(ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn bound() -> Arc<Socket> {
        let socket = crate::node::transport::udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        Arc::new(Socket::new(socket).unwrap())
    }

    fn send(from: &Socket, to: &Socket, payload: &[u8]) -> io::Result<()> {
        from.try_send(&Transmit {
            destination: to.local_addr().unwrap(),
            ecn: None,
            contents: payload,
            segment_size: None,
            src_ip: None,
        })
    }

    /// Waits for the next datagram on `socket` and returns its bytes.
    async fn receive(socket: &Socket) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let mut meta = [RecvMeta::default()];
        let count = std::future::poll_fn(|cx| {
            let mut bufs = [IoSliceMut::new(&mut buf)];
            socket.poll_recv(cx, &mut bufs, &mut meta)
        })
        .await
        .unwrap();
        assert_eq!(count, 1);
        buf.truncate(meta[0].len);
        buf
    }

    #[tokio::test]
    async fn datagrams_go_out_without_write_readiness() {
        let (a, b) = (bound().await, bound().await);
        for i in 0..100u8 {
            send(&a, &b, &[i; 32]).unwrap();
            assert_eq!(receive(&b).await, vec![i; 32]);
        }
        // Nothing blocked, so nothing was registered for writing.
        assert!(a.writer.get().is_none());
    }

    #[tokio::test]
    async fn once_registered_every_connection_waits_for_write_readiness() {
        let (a, b) = (bound().await, bound().await);
        // As after a send that would block.
        assert!(a.writer().is_some());
        let mut first = Arc::clone(&a).create_io_poller();
        let mut second = Arc::clone(&a).create_io_poller();
        // The socket is writable, which both learn from the event loop.
        std::future::poll_fn(|cx| first.as_mut().poll_writable(cx))
            .await
            .unwrap();
        std::future::poll_fn(|cx| second.as_mut().poll_writable(cx))
            .await
            .unwrap();
        send(&a, &b, b"after").unwrap();
        assert_eq!(receive(&b).await, b"after");
    }
}
