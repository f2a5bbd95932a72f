//! The node's own [`NodeAddr`]: what it gives other nodes to reach it.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::addr::NodeAddr;

use super::Node;

impl Node {
    /// This node's address: its id, the addresses given to
    /// [`advertise`](super::NodeBuilder::advertise) in order, and the address it is bound to.
    /// Its text form is a ticket another node can [`dial`](Node::dial).
    ///
    /// A node bound to an unspecified address (`0.0.0.0` or `[::]`, as
    /// [`bind_any`](super::NodeBuilder::bind_any) binds) listens on every interface, but which
    /// of the machine's addresses other hosts can reach is not something a node can tell:
    /// without advertised addresses, the address it returns then holds the loopback
    /// addresses with its port (`127.0.0.1`, and `[::1]` for `[::]`), which only serve on this
    /// machine. A server that others reach advertises its public address (or adds a name
    /// with [`NodeAddr::with_host`]); the unspecified address itself is never listed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dep2p_runtime::Error> {
    /// use dep2p_runtime::{Node, NodeAddr};
    ///
    /// let server = Node::builder().bind("127.0.0.1:0").await?;
    /// let ticket = server.node_addr().to_string(); // "<node id>@127.0.0.1:<port>"
    ///
    /// let client = Node::builder().bind_any().await?;
    /// let addr: NodeAddr = ticket.parse().expect("a ticket");
    /// let conn = client.dial(&addr).await?;
    /// assert_eq!(conn.remote_id(), server.id());
    /// # Ok(()) }
    /// ```
    pub fn node_addr(&self) -> NodeAddr {
        let mut addr = NodeAddr::new(self.id());
        for &advertised in &self.inner.shared.config().advertise {
            addr = addr.with_addr(advertised);
        }
        let local = self.local_addr();
        if !local.ip().is_unspecified() {
            addr = addr.with_addr(local);
        } else if addr.is_empty() {
            addr = addr.with_addr(SocketAddr::from((Ipv4Addr::LOCALHOST, local.port())));
            if local.is_ipv6() {
                addr = addr.with_addr(SocketAddr::from((Ipv6Addr::LOCALHOST, local.port())));
            }
        }
        addr
    }
}
