//! A UDP relay between one dialer and a node. It passes, drops or holds back datagrams by
//! direction, and notes the first byte and size of every datagram the node sends, so a test
//! can tell a Retry from a handshake.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

/// What the relay lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Everything, both ways.
    Pass,
    /// All the dialer sends; of what the node sends, only Retry packets. The node's handshake
    /// stays in progress until it gives up.
    Stall,
    /// All the node sends; of what the dialer sends, only its first datagram until
    /// [`Relay::release`]. The dialer finishes its half of the handshake, the node waits.
    Hold,
}

#[derive(Default)]
struct State {
    /// First byte and size of each datagram from the node.
    from_node: Vec<(u8, usize)>,
    dialer: Option<SocketAddr>,
    from_dialer: usize,
    released: bool,
    held: Vec<Vec<u8>>,
}

/// A relay on its own loopback port: dial [`Relay::addr`] to reach the node through it.
pub(crate) struct Relay {
    addr: SocketAddr,
    node: SocketAddr,
    socket: Arc<UdpSocket>,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether a datagram starts with a QUIC version 1 long-header Retry packet (form bit and
/// type 0b11; the fixed bit is ignored, as a peer may grease it).
pub(crate) fn is_retry(first: u8) -> bool {
    first & 0xb0 == 0xb0
}

/// Whether a datagram from a node carries its part of a handshake: a long-header packet other
/// than Retry, in a datagram padded to 1,200 bytes (a refusal's CONNECTION_CLOSE is smaller).
fn is_handshake(first: u8, len: usize) -> bool {
    first & 0x80 != 0 && !is_retry(first) && len >= 1200
}

impl Relay {
    pub(crate) async fn new(node: SocketAddr, mode: Mode) -> Relay {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = socket.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn(run(Arc::clone(&socket), node, mode, Arc::clone(&state)));
        Relay {
            addr,
            node,
            socket,
            state,
            task,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the node answered with a Retry packet.
    pub(crate) fn saw_retry(&self) -> bool {
        let state = self.state.lock().unwrap();
        state.from_node.iter().any(|&(first, _)| is_retry(first))
    }

    /// Waits until the node has sent its part of a handshake through the relay: it has
    /// accepted the connection attempt and the handshake is in progress.
    pub(crate) async fn wait_for_handshake(&self) {
        let start = std::time::Instant::now();
        loop {
            {
                let state = self.state.lock().unwrap();
                if state.from_node.iter().any(|&(b, len)| is_handshake(b, len)) {
                    return;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the node never started a handshake through the relay"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Lets the dialer's held datagrams through, in order, and everything after them.
    pub(crate) async fn release(&self) {
        let held = {
            let mut state = self.state.lock().unwrap();
            state.released = true;
            std::mem::take(&mut state.held)
        };
        for datagram in held {
            let _ = self.socket.send_to(&datagram, self.node).await;
        }
    }
}

async fn run(socket: Arc<UdpSocket>, node: SocketAddr, mode: Mode, state: Arc<Mutex<State>>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let datagram = &buf[..len];
        let Some(&first) = datagram.first() else {
            continue;
        };
        let to = {
            let mut state = state.lock().unwrap();
            if from == node {
                state.from_node.push((first, len));
                let pass = mode != Mode::Stall || is_retry(first);
                state.dialer.filter(|_| pass)
            } else {
                state.dialer = Some(from);
                state.from_dialer += 1;
                if mode == Mode::Hold && state.from_dialer > 1 && !state.released {
                    state.held.push(datagram.to_vec());
                    None
                } else {
                    Some(node)
                }
            }
        };
        if let Some(to) = to {
            let _ = socket.send_to(datagram, to).await;
        }
    }
}
