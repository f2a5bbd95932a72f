//! The server process: serves one implementation on loopback and answers the driver's control
//! commands, one line each, on stdin/stdout.
//!
//! On start it prints `ready <address> <node id>` (`-` for the node id of raw quinn). Commands:
//! `allocs` (answers `allocs <allocations> <reallocations>` since start), `held` (`held <n>`,
//! calls waiting in `hold`), `release` (`released`, lets every held call return). It exits
//! when stdin closes.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::quinn_side::Profile;
use crate::work::{Impl, ServerState};
use crate::{dep2p_side, quinn_side};

/// Options of `dep2p-bench server`.
#[derive(Debug)]
pub(crate) struct ServerArgs {
    pub(crate) imp: Impl,
    pub(crate) addr: SocketAddr,
    /// Concurrent calls/streams allowed per connection, when raised above the defaults.
    pub(crate) max_streams: Option<u32>,
    /// Transport settings of the raw quinn server.
    pub(crate) profile: Profile,
    /// dep2p's `fast_loopback` setting (default true).
    pub(crate) fast_loopback: bool,
    /// dep2p's `inline_limit`, if not its default.
    pub(crate) inline_limit: Option<std::time::Duration>,
}

pub(crate) fn run(args: ServerArgs) -> ! {
    let runtime = tokio::runtime::Runtime::new().expect("start the tokio runtime");
    let state = Arc::new(ServerState::new());
    // Kept until the process exits: dropping the node or endpoint would close it.
    let (_keep, addr, id): (Box<dyn std::any::Any>, SocketAddr, String) = match args.imp {
        Impl::Dep2p | Impl::Layered => {
            let (node, addr, id) = runtime.block_on(dep2p_side::serve(
                args.addr,
                args.max_streams,
                args.fast_loopback,
                args.inline_limit,
                Arc::clone(&state),
                args.imp == Impl::Layered,
            ));
            (Box::new(node), addr, id)
        }
        Impl::Quinn => {
            let _guard = runtime.enter();
            let (endpoint, addr) = quinn_side::serve(
                args.addr,
                args.max_streams,
                args.profile,
                Arc::clone(&state),
            );
            (Box::new(endpoint), addr, "-".to_string())
        }
    };
    reply(&format!("ready {addr} {id}"));

    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => std::process::exit(0),
            Ok(_) => {}
        }
        let answer = match line.trim() {
            "allocs" => {
                let (allocs, reallocs) = crate::alloc_counts();
                format!("allocs {allocs} {reallocs}")
            }
            "held" => format!("held {}", state.held()),
            "release" => {
                state.release();
                "released".to_string()
            }
            other => format!("error unknown command {other:?}"),
        };
        reply(&answer);
    }
}

fn reply(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
