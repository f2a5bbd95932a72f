//! A peer that vanishes without a word (its process killed) is noticed within about the
//! idle-connection timeout plus one keep-alive interval.

#[path = "endpoint/child.rs"]
mod child;
mod common;

use std::time::{Duration, Instant};

use child::NodeProcess;
use common::*;
use dep2p_runtime::{Node, SecretKey};

#[test]
fn a_vanished_peer_is_noticed_within_the_idle_timeout() {
    const TEST: &str = "a_vanished_peer_is_noticed_within_the_idle_timeout";
    child::run_if_child();

    let key = SecretKey::generate();
    let dir = std::env::temp_dir().join(format!(
        "dep2p-vanish-{}-{}",
        std::process::id(),
        key.public().fmt_short()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("node.key");
    key.save(&key_file).unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let peer = NodeProcess::start(TEST, &key_file, 0);
        // QUIC's idle timeout is the shorter of the two sides': this side's 1 s applies.
        let idle = Duration::from_secs(1);
        let keep_alive = Duration::from_millis(250);
        let client = node(
            Node::builder()
                .idle_connection_timeout(idle)
                .keep_alive_interval(keep_alive),
        )
        .await;
        let conn = client.connect(peer.addr, key.public()).await.unwrap();
        assert_eq!(echo(&conn, "hello").await.unwrap(), "hello");
        // Idle for a while: keep-alives hold the connection open.
        tokio::time::sleep(idle * 2).await;
        assert!(conn.close_reason().is_none(), "closed while the peer lived");

        // The process dies without closing anything.
        peer.kill();
        let started = Instant::now();
        let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .expect("the vanished peer was not noticed within 5 s");
        let took = started.elapsed();
        eprintln!("vanished peer noticed after {took:?}: {reason}");
        assert!(reason.is_connection_error(), "{reason:?}");
        // At most the idle timeout after the last keep-alive, with room for a loaded machine.
        assert!(
            took < idle + keep_alive + Duration::from_secs(1),
            "{took:?}"
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}
