//! A node in a process of its own, which a test can kill outright: the test binary runs itself
//! again, selecting one test, with an environment variable that turns that test into the node.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use dep2p_runtime::{Node, SecretKey};

use crate::common::{probe, TestService};

/// Names the key file and port of the node a child process runs.
const ENV: &str = "DEP2P_TEST_NODE_PROCESS";

/// The line a child prints once its node is bound.
const READY: &str = "dep2p-test-node-listening";

/// If this process was started by [`NodeProcess::start`], runs its node until the parent goes
/// (closes the child's standard input), then exits; otherwise returns at once.
pub(crate) fn run_if_child() {
    let Ok(spec) = std::env::var(ENV) else {
        return;
    };
    let (key, port) = spec.rsplit_once('|').expect("key file|port");
    let key = SecretKey::load(key).expect("the key file");
    let port: u16 = port.parse().expect("a port");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let node = Node::builder()
            .secret_key(key)
            .serve(TestService { probe: probe() })
            .bind(("127.0.0.1", port))
            .await
            .expect("bind");
        println!("\n{READY} {}", node.local_addr().port());
        // Serve until the parent closes the pipe (or dies).
        let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
    });
    std::process::exit(0);
}

/// A child process running a node with a given key on a given port.
pub(crate) struct NodeProcess {
    child: std::process::Child,
    pub(crate) addr: SocketAddr,
}

impl NodeProcess {
    /// Runs `test` (the calling test's name) in a new process as a node with the key in
    /// `key`, bound to 127.0.0.1:`port` (0: any port), and waits until it is bound.
    pub(crate) fn start(test: &str, key: &Path, port: u16) -> NodeProcess {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args([test, "--exact", "--nocapture", "--test-threads", "1"])
            .env(ENV, format!("{}|{port}", key.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("the node process ended before it was bound")
                .unwrap();
            // The test harness may have started the line with the test's name.
            if let Some((_, port)) = line.split_once(READY) {
                break port.trim().parse::<u16>().unwrap();
            }
        };
        NodeProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// Kills the process at once (SIGKILL on Unix): no close reaches its peers.
    pub(crate) fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
