//! What the workloads share: the server process and its control channel, the client side of
//! each implementation, CPU time and datagram drop readings, and small helpers.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::quinn_side::Profile;
use crate::report::Figures;
use crate::work::Impl;
use crate::{dep2p_side, quinn_side};

/// A server process and its control channel.
pub(crate) struct ServerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub(crate) addr: SocketAddr,
    pub(crate) id: String,
}

impl ServerProc {
    pub(crate) fn spawn(imp: Impl, max_streams: Option<u32>, profile: Profile) -> ServerProc {
        ServerProc::spawn_under(&[], imp, max_streams, profile, &[])
    }

    /// Starts the server through `prefix` (a program and its arguments, such as a counting
    /// tool; empty to start it directly), with `extra` server options (such as
    /// `--no-fast-loopback`).
    pub(crate) fn spawn_under(
        prefix: &[std::ffi::OsString],
        imp: Impl,
        max_streams: Option<u32>,
        profile: Profile,
        extra: &[&str],
    ) -> ServerProc {
        let exe = std::env::current_exe().expect("path of this program");
        let mut cmd = match prefix.split_first() {
            None => Command::new(exe),
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(exe);
                cmd
            }
        };
        cmd.args(["server", "--impl", imp.name(), "--addr", "127.0.0.1:0"]);
        if let Some(n) = max_streams {
            cmd.args(["--max-streams", &n.to_string()]);
        }
        if profile == Profile::Loopback {
            cmd.arg("--quinn-loopback");
        }
        cmd.args(extra);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the server process");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("server stdout"));
        let mut server = ServerProc {
            child,
            stdin,
            stdout,
            addr: "0.0.0.0:0".parse().expect("address"),
            id: String::new(),
        };
        let ready = server.read_reply("ready");
        let [addr, id] = ready.as_slice() else {
            panic!("server said {ready:?}, expected an address and an id");
        };
        server.addr = addr.parse().expect("server address");
        server.id = id.clone();
        server
    }

    fn read_reply(&mut self, word: &str) -> Vec<String> {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).expect("read from server");
        assert!(n > 0, "server process ended");
        let mut words = line.split_whitespace().map(str::to_string);
        let first = words.next();
        assert_eq!(first.as_deref(), Some(word), "server said {line:?}");
        words.collect()
    }

    fn command(&mut self, cmd: &str, answer: &str) -> Vec<String> {
        let stdin = self.stdin.as_mut().expect("server stdin open");
        writeln!(stdin, "{cmd}").expect("write to server");
        stdin.flush().expect("write to server");
        self.read_reply(answer)
    }

    /// Sends `cmd` and reads the numbers of its answer.
    fn numbers(&mut self, cmd: &str) -> Vec<u64> {
        self.command(cmd, cmd)
            .iter()
            .map(|w| w.parse().expect("a number from the server"))
            .collect()
    }

    /// Allocations and reallocations in the server process so far.
    pub(crate) fn allocs(&mut self) -> (u64, u64) {
        match self.numbers("allocs")[..] {
            [allocs, reallocs] => (allocs, reallocs),
            ref other => panic!("allocs answered {other:?}"),
        }
    }

    pub(crate) fn held(&mut self) -> u64 {
        self.numbers("held").first().copied().expect("held count")
    }

    pub(crate) fn release(&mut self) {
        self.command("release", "released");
    }

    /// Closes the server's stdin and waits until it has exited.
    pub(crate) fn finish(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }

    /// CPU time used so far by the server process and by this one.
    pub(crate) fn cpu(&self) -> CpuTime {
        CpuTime {
            server: cpu_seconds(&format!("/proc/{}", self.child.id())),
            client: cpu_seconds("/proc/self"),
        }
    }

    /// The server's resident set, in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).expect("read the server's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in the server's /proc status")
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        // Closing stdin ends the server.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// CPU time (user and system, all threads) of the two processes, in seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuTime {
    server: f64,
    client: f64,
}

impl CpuTime {
    /// Records the CPU time spent since `self`, in µs per `unit`s, as `{key}_server_cpu_us`
    /// and `{key}_client_cpu_us`.
    pub(crate) fn record_since(self, now: CpuTime, units: f64, key: &str, fig: &mut Figures) {
        fig.set_owned(
            format!("{key}_server_cpu_us"),
            (now.server - self.server) * 1e6 / units,
        );
        fig.set_owned(
            format!("{key}_client_cpu_us"),
            (now.client - self.client) * 1e6 / units,
        );
    }
}

/// CPU time of every live thread of a process (`/proc/<pid>/task/*/schedstat`), in seconds.
fn cpu_seconds(proc_dir: &str) -> f64 {
    let tasks = std::fs::read_dir(format!("{proc_dir}/task")).expect("list the process's threads");
    let mut ns = 0u64;
    for task in tasks.flatten() {
        // A thread may end meanwhile: skip it.
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    ns as f64 / 1e9
}

/// Datagrams the kernel dropped for want of socket receive buffer (`RcvbufErrors` in
/// `/proc/net/snmp`), machine-wide: loss that quinn then has to detect and repair.
pub(crate) fn udp_receive_drops() -> f64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0.0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0.0)
}

/// The client side of one implementation.
#[derive(Debug, Clone)]
pub(crate) enum Client {
    Dep2p(dep2p_side::Client),
    Quinn(quinn_side::Client),
}

/// Runs `$body` with `$c` bound to whichever client it is.
macro_rules! on_client {
    ($client:expr, |$c:ident| $body:expr) => {
        match $client {
            Client::Dep2p($c) => $body,
            Client::Quinn($c) => $body,
        }
    };
}
pub(crate) use on_client;

/// Keeps idle connections open until dropped.
#[derive(Debug)]
#[allow(dead_code)] // Held only to be dropped.
pub(crate) enum Idle {
    Dep2p(dep2p_side::Idle),
    Quinn(quinn_side::Idle),
}

impl Client {
    pub(crate) async fn connect(imp: Impl, server: &ServerProc, profile: Profile) -> Client {
        match imp {
            Impl::Dep2p | Impl::Layered => {
                let layered = imp == Impl::Layered;
                Client::Dep2p(dep2p_side::Client::connect(server.addr, &server.id, layered).await)
            }
            Impl::Quinn => Client::Quinn(quinn_side::Client::connect(server.addr, profile).await),
        }
    }

    /// Sequential echo calls, run as a task; returns `samples` with one duration per call.
    pub(crate) async fn echo_sequential(
        &self,
        first: u64,
        calls: usize,
        size: usize,
        mut samples: Vec<u64>,
    ) -> Vec<u64> {
        let client = self.clone();
        spawn(async move {
            let record = if samples.capacity() >= calls {
                Some(&mut samples)
            } else {
                None
            };
            on_client!(&client, |c| c
                .echo_sequential(first, calls, size, record)
                .await);
            samples
        })
        .await
    }
}

/// Runs `fut` as a task on the runtime's workers, as application code would, and waits.
pub(crate) async fn spawn<T: Send + 'static>(
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    tokio::spawn(fut).await.expect("benchmark task")
}

pub(crate) fn percentile(sorted_ns: &[u64], p: f64) -> f64 {
    assert!(!sorted_ns.is_empty(), "no samples");
    let rank = ((p / 100.0) * sorted_ns.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted_ns.len()) - 1;
    sorted_ns[i] as f64 / 1000.0
}

pub(crate) const MIB: f64 = 1024.0 * 1024.0;
