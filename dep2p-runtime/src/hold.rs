//! [`Hold`]: a claim on a call's connection, carried by the parts of a call that outlive the
//! call's own future.

use std::fmt;
use std::sync::Arc;

/// Something that counts who uses it: a connection, which closes when unused (see
/// `Connection`). Each `acquire` is matched by one `release`.
pub(crate) trait Claimed: Send + Sync {
    fn acquire(&self);
    fn release(&self);
}

/// Keeps a call's connection in use while it lives.
///
/// The parts of a call that its caller reads after awaiting it (a `Receiver`, a `Response`)
/// carry one, so a connection with no other handle left is not closed under them. It is
/// opaque here: what it keeps is the connection's business (`Connection::hold`).
pub(crate) struct Hold {
    target: Arc<dyn Claimed>,
}

impl Hold {
    pub(crate) fn new(target: Arc<dyn Claimed>) -> Self {
        target.acquire();
        Hold { target }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.target.release();
    }
}

impl fmt::Debug for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hold")
    }
}
