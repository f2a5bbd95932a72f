//! The driver: starts a server process per implementation, round and server-side workload
//! group, runs the client side of every workload in this process, and collects the figures.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::quinn_side::Profile;
use crate::report::{self, Figures};
use crate::work::{Impl, Sizes};
use crate::{dep2p_side, quinn_side};

/// Groups of workloads that can be run alone (`--only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    /// Unary latency, with the allocation counts.
    Unary,
    Concurrency,
    ServerStream,
    ClientStream,
    Bidi,
    Memory,
    /// Instructions and system calls per unary call (see `counts`).
    Counts,
    /// The growing workload (see `scale`); not part of the default set.
    Scale,
}

impl Workload {
    /// The default set.
    pub(crate) const ALL: [Workload; 7] = [
        Workload::Unary,
        Workload::Concurrency,
        Workload::ServerStream,
        Workload::ClientStream,
        Workload::Bidi,
        Workload::Memory,
        Workload::Counts,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::Unary => "unary",
            Workload::Concurrency => "concurrency",
            Workload::ServerStream => "server-stream",
            Workload::ClientStream => "client-stream",
            Workload::Bidi => "bidi",
            Workload::Memory => "memory",
            Workload::Counts => "counts",
            Workload::Scale => "scale",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Workload> {
        Workload::ALL
            .into_iter()
            .chain([Workload::Scale])
            .find(|w| w.name() == s)
    }
}

/// Options of the driver (the default mode).
#[derive(Debug)]
pub(crate) struct DriverArgs {
    pub(crate) sizes: Sizes,
    pub(crate) quick: bool,
    pub(crate) json: Option<std::path::PathBuf>,
    pub(crate) impls: Vec<Impl>,
    pub(crate) workloads: Vec<Workload>,
    /// Transport settings of the raw quinn baseline.
    pub(crate) quinn_profile: Profile,
}

pub(crate) fn run(args: DriverArgs) {
    let sizes = &args.sizes;
    let runtime = tokio::runtime::Runtime::new().expect("start the tokio runtime");
    let started = Instant::now();
    eprintln!(
        "dep2p-bench: {} round(s) of {} over 127.0.0.1, server in a separate process",
        sizes.rounds,
        args.impls
            .iter()
            .map(|i| i.name())
            .collect::<Vec<_>>()
            .join(" and "),
    );
    let mut rounds: Vec<(Impl, usize, Figures)> = Vec::new();
    let mut extra_notes: Vec<String> = Vec::new();
    for round in 1..=sizes.rounds {
        // Alternate which implementation goes first, so neither always runs on a cooler or
        // warmer machine.
        let mut order = args.impls.clone();
        if round % 2 == 0 {
            order.reverse();
        }
        for imp in order {
            eprintln!("round {round}: {imp}");
            let mut figures =
                runtime.block_on(run_round(imp, sizes, &args.workloads, args.quinn_profile));
            if args.workloads.contains(&Workload::Counts) {
                let t = Instant::now();
                let notes = crate::counts::measure(
                    imp,
                    args.quinn_profile,
                    sizes.count_calls,
                    sizes.unary_size,
                    &mut figures,
                );
                figures.set("counts_seconds", t.elapsed().as_secs_f64());
                extra_notes.extend(notes);
            }
            if args.workloads.contains(&Workload::Scale) {
                let t = Instant::now();
                runtime.block_on(crate::scale::run(
                    imp,
                    sizes,
                    args.quinn_profile,
                    &mut figures,
                ));
                figures.set("scale_seconds", t.elapsed().as_secs_f64());
            }
            rounds.push((imp, round, figures));
        }
    }
    let wall = started.elapsed();
    drop(runtime);

    let summary = report::summarize(&rounds);
    let mut notes = notes(sizes, &args.workloads, args.quinn_profile, wall);
    notes.push(report::provenance());
    for note in extra_notes {
        if !notes.contains(&note) {
            notes.push(note);
        }
    }
    println!("{}", report::tables(&summary, &notes));
    if let Some(path) = &args.json {
        let json = report::json(sizes, args.quick, &rounds, &summary, &notes, wall);
        std::fs::write(path, json).expect("write the JSON report");
        eprintln!("wrote {}", path.display());
    }
}

fn notes(sizes: &Sizes, workloads: &[Workload], profile: Profile, wall: Duration) -> Vec<String> {
    let limit = sizes.in_flight_limit();
    let mut notes = vec![
        format!(
            "{} round(s); each cell: median (min–max) over rounds; ratios paired by round. \
             Wall time {:.0} s.",
            sizes.rounds,
            wall.as_secs_f64()
        ),
        match profile {
            Profile::Default => "dep2p: default node settings; quinn: default configuration \
                                 (self-signed certificate, not checked by the client)."
                .to_string(),
            Profile::Loopback => "dep2p: default node settings; quinn: loopback profile \
                                  (64 KB datagrams from the start, segmentation offload off, \
                                  initial window of ten datagrams, 4 MiB socket buffers; \
                                  self-signed certificate, not checked by the client)."
                .to_string(),
        },
    ];
    if workloads.contains(&Workload::Memory) {
        notes.push(format!(
            "Memory: growth of the server's VmRSS over a warmed-up baseline, divided by {} idle \
             connections (one echo call each) or {} calls held in their handlers on one \
             connection. The server holding calls in flight allows {limit} concurrent calls \
             and streams per connection (dep2p: max_concurrent_calls and \
             max_concurrent_streams, with 16 KiB stream windows and a connection window \
             twice their sum; quinn: max_concurrent_bidi_streams).",
            sizes.idle_connections, sizes.calls_in_flight
        ));
    }
    if workloads.contains(&Workload::Counts) {
        notes.push(format!(
            "Counts: instructions (valgrind --tool=callgrind, all threads) and system calls \
             (strace -f -c) of the server process and of a client process making {n} and then \
             {twice} sequential {size} B echo calls on one connection, each under the tool \
             and both pinned to one CPU (taskset -c 0) unless a note says otherwise; per \
             call = (count at {twice} − count at {n}) ÷ {n}, so start-up, handshake and exit \
             cancel out. \"64 callers\": the same calls made by {callers} tasks sharing the \
             connection.",
            n = sizes.count_calls,
            twice = 2 * sizes.count_calls,
            size = sizes.unary_size,
            callers = crate::counts::CONCURRENT_CALLERS,
        ));
    }
    if workloads.contains(&Workload::Scale) {
        notes.push(crate::scale::note(sizes));
    }
    if workloads.contains(&Workload::Unary) {
        notes.push(format!(
            "Allocations: counted by the benchmark's global allocator over the {} timed \
             unary-latency calls, in the client process and in the server process.",
            sizes.latency_calls
        ));
    }
    notes
}

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
    fn allocs(&mut self) -> (u64, u64) {
        match self.numbers("allocs")[..] {
            [allocs, reallocs] => (allocs, reallocs),
            ref other => panic!("allocs answered {other:?}"),
        }
    }

    fn held(&mut self) -> u64 {
        self.numbers("held").first().copied().expect("held count")
    }

    fn release(&mut self) {
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
fn udp_receive_drops() -> f64 {
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
enum Idle {
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

async fn run_round(imp: Impl, sizes: &Sizes, workloads: &[Workload], profile: Profile) -> Figures {
    let mut fig = Figures::new();
    let wants = |w: Workload| workloads.contains(&w);
    let size = sizes.unary_size;

    let needs_main = [
        Workload::Unary,
        Workload::Concurrency,
        Workload::ServerStream,
        Workload::ClientStream,
        Workload::Bidi,
    ]
    .into_iter()
    .any(wants);
    if needs_main {
        let mut server = ServerProc::spawn(imp, None, profile);
        let client = Client::connect(imp, &server, profile).await;

        if wants(Workload::Unary) {
            let t = Instant::now();
            client
                .echo_sequential(0, sizes.warmup_calls, size, Vec::new())
                .await;
            let samples = Vec::with_capacity(sizes.latency_calls);
            let server_before = server.allocs();
            let client_before = crate::alloc_counts();
            let cpu = server.cpu();
            let mut samples = client
                .echo_sequential(
                    sizes.warmup_calls as u64,
                    sizes.latency_calls,
                    size,
                    samples,
                )
                .await;
            let cpu_after = server.cpu();
            let client_after = crate::alloc_counts();
            let server_after = server.allocs();
            samples.sort_unstable();
            let calls = sizes.latency_calls as f64;
            cpu.record_since(cpu_after, calls, "latency_per_call", &mut fig);
            fig.set("unary_p50_us", percentile(&samples, 50.0));
            fig.set("unary_p99_us", percentile(&samples, 99.0));
            fig.set(
                "unary_mean_us",
                samples.iter().sum::<u64>() as f64 / calls / 1000.0,
            );
            fig.set(
                "client_allocs_per_call",
                (client_after.0 - client_before.0) as f64 / calls,
            );
            fig.set(
                "client_reallocs_per_call",
                (client_after.1 - client_before.1) as f64 / calls,
            );
            fig.set(
                "server_allocs_per_call",
                (server_after.0 - server_before.0) as f64 / calls,
            );
            fig.set(
                "server_reallocs_per_call",
                (server_after.1 - server_before.1) as f64 / calls,
            );
            fig.set("unary_seconds", t.elapsed().as_secs_f64());
        }

        if wants(Workload::Concurrency) {
            let c = client.clone();
            let (callers, calls) = (sizes.callers, sizes.concurrent_calls);
            let cpu = server.cpu();
            let took = spawn(async move {
                on_client!(&c, |c| c.echo_concurrent(callers, calls, size).await)
            })
            .await;
            cpu.record_since(server.cpu(), calls as f64, "concurrency_per_call", &mut fig);
            fig.set("unary_calls_per_s", calls as f64 / took.as_secs_f64());
            fig.set("concurrency_seconds", took.as_secs_f64());
        }

        if wants(Workload::ServerStream) {
            let c = client.clone();
            let (count, msg) = (sizes.stream_messages, sizes.stream_message_size);
            let (cpu, drops) = (server.cpu(), udp_receive_drops());
            let took = spawn(async move { on_client!(&c, |c| c.download(count, msg).await) })
                .await
                .as_secs_f64();
            fig.set("server_stream_udp_drops", udp_receive_drops() - drops);
            cpu.record_since(
                server.cpu(),
                count as f64,
                "server_stream_per_msg",
                &mut fig,
            );
            fig.set("server_stream_msgs_per_s", count as f64 / took);
            fig.set("server_stream_mib_per_s", (count * msg) as f64 / MIB / took);
            fig.set("server_stream_seconds", took);
        }

        if wants(Workload::ClientStream) {
            let c = client.clone();
            let (total, msg) = (sizes.upload_bytes, sizes.upload_message_size);
            let (cpu, drops) = (server.cpu(), udp_receive_drops());
            let took = spawn(async move { on_client!(&c, |c| c.upload(total, msg).await) })
                .await
                .as_secs_f64();
            fig.set("client_stream_udp_drops", udp_receive_drops() - drops);
            let mib = total as f64 / MIB;
            cpu.record_since(server.cpu(), mib, "client_stream_per_mib", &mut fig);
            fig.set("client_stream_mib_per_s", total as f64 / MIB / took);
            fig.set("client_stream_seconds", took);
        }

        if wants(Workload::Bidi) {
            let c = client.clone();
            let trips = sizes.ping_pongs;
            let t = Instant::now();
            let mut samples = spawn(async move {
                let mut samples = Vec::with_capacity(trips);
                on_client!(&c, |c| c.ping_pong(trips, size, &mut samples).await);
                samples
            })
            .await;
            samples.sort_unstable();
            fig.set("bidi_p50_us", percentile(&samples, 50.0));
            fig.set("bidi_p99_us", percentile(&samples, 99.0));
            fig.set("bidi_seconds", t.elapsed().as_secs_f64());
        }
        drop(client);
        drop(server);
    }

    if wants(Workload::Memory) {
        let t = Instant::now();
        idle_memory(imp, sizes, profile, &mut fig).await;
        in_flight_memory(imp, sizes, profile, &mut fig).await;
        fig.set("memory_seconds", t.elapsed().as_secs_f64());
    }
    fig
}

/// Lets the server settle before reading its RSS.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn idle_memory(imp: Impl, sizes: &Sizes, profile: Profile, fig: &mut Figures) {
    let server = ServerProc::spawn(imp, None, profile);
    let size = sizes.unary_size;
    // Warm up: one connection and a few calls, so one-time costs land in the baseline.
    let warm = Client::connect(imp, &server, profile).await;
    warm.echo_sequential(0, 16, size, Vec::new()).await;
    settle().await;
    let base = server.rss_kib();

    let (addr, id, n) = (server.addr, server.id.clone(), sizes.idle_connections);
    let idle = spawn(async move {
        match imp {
            Impl::Dep2p | Impl::Layered => {
                let layered = imp == Impl::Layered;
                Idle::Dep2p(dep2p_side::open_idle(addr, &id, n, size, layered).await)
            }
            Impl::Quinn => Idle::Quinn(quinn_side::open_idle(addr, profile, n, size).await),
        }
    })
    .await;
    settle().await;
    let peak = server.rss_kib();
    fig.set("server_rss_base_kib", base as f64);
    fig.set("idle_kib_per_conn", (peak as f64 - base as f64) / n as f64);
    drop(idle);
    drop(warm);
}

async fn in_flight_memory(imp: Impl, sizes: &Sizes, profile: Profile, fig: &mut Figures) {
    let mut server = ServerProc::spawn(imp, Some(sizes.in_flight_limit()), profile);
    let size = sizes.unary_size;
    let client = Client::connect(imp, &server, profile).await;
    client.echo_sequential(0, 64, size, Vec::new()).await;
    settle().await;
    let base = server.rss_kib();

    let n = sizes.calls_in_flight;
    let holds: JoinHandle<()> = on_client!(&client, |c| c.start_holds(n));
    let mut holds = Some(holds);
    while server.held() < n as u64 {
        if holds.as_ref().is_some_and(JoinHandle::is_finished) {
            if let Some(task) = holds.take() {
                task.await.expect("held calls");
            }
            panic!("the held calls ended before all reached the server");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    settle().await;
    let peak = server.rss_kib();
    server.release();
    if let Some(task) = holds.take() {
        task.await.expect("held calls");
    }
    fig.set(
        "in_flight_kib_per_call",
        (peak as f64 - base as f64) / n as f64,
    );
    drop(client);
}
