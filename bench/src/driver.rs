//! The driver: starts a server process per implementation, round and server-side workload
//! group, runs the client side of every workload in this process, and collects the figures.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::harness::{
    on_client, percentile, spawn, udp_receive_drops, Client, Idle, ServerProc, MIB,
};
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
                    (sizes.unary_size, sizes.stream_message_size),
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
             connection. \"Per streamed message\": one server-streaming call of {m} and then \
             {m2} messages of {msg} B, per message = the difference ÷ {m}.",
            n = sizes.count_calls,
            twice = 2 * sizes.count_calls,
            size = sizes.unary_size,
            callers = crate::counts::CONCURRENT_CALLERS,
            m = crate::counts::STREAM_MESSAGES_PER_CALL * sizes.count_calls,
            m2 = 2 * crate::counts::STREAM_MESSAGES_PER_CALL * sizes.count_calls,
            msg = sizes.stream_message_size,
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
