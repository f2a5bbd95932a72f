//! The growing workload (`--scale`): how calls/s, CPU and the server's memory change as the
//! work grows. Each step makes calls for a bounded time (`Sizes::scale_millis`):
//!
//! * connections: 1 to 1,000 connections (dep2p: one client node each, as a node keeps one
//!   connection per peer; quinn: one client endpoint), each with one caller making sequential
//!   64 B echo calls;
//! * message sizes: sequential echo calls of 64 B to 1 MiB on one connection;
//! * a real path's datagram size: dep2p with `fast_loopback(false)` on both nodes (quinn keeps
//!   the profile it was given), unary latency, 64 concurrent callers and 1 KiB server
//!   streaming.
//!
//! Every reply is checked, as in the other workloads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::StreamExt;

use crate::harness::{on_client, percentile, spawn, Client, ServerProc, MIB};
use crate::quinn_side::Profile;
use crate::report::Figures;
use crate::work::{Impl, Sizes};
use crate::{dep2p_side, quinn_side};

/// Callers sharing one connection in the real-path step.
const CALLERS: usize = 64;

/// The note printed under the table.
pub(crate) fn note(sizes: &Sizes) -> String {
    format!(
        "Scale: each step makes calls for {} ms. Connections: {:?} connections, one caller \
         each making sequential {} B echo calls; server KiB per connection is the growth of \
         the server's VmRSS over one warmed-up connection, read while the calls run, divided \
         by the connections. Sizes: sequential echo calls of {:?} bytes on one connection \
         (MiB/s counts one direction). Real path: dep2p with fast_loopback(false) on server \
         and client (1,200-byte datagrams at first, then path MTU discovery); quinn as in \
         the rest of the run.",
        sizes.scale_millis, sizes.scale_connections, sizes.unary_size, sizes.scale_sizes
    )
}

pub(crate) async fn run(imp: Impl, sizes: &Sizes, profile: Profile, fig: &mut Figures) {
    for &n in &sizes.scale_connections {
        connections(imp, sizes, profile, n, fig).await;
    }
    message_sizes(imp, sizes, profile, fig).await;
    real_path(imp, sizes, profile, fig).await;
}

/// Lets the server settle before reading its RSS.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// Opens `n` connections to `server`.
async fn open(
    imp: Impl,
    server: &ServerProc,
    profile: Profile,
    n: usize,
    fast_loopback: bool,
) -> Vec<Client> {
    let (addr, id) = (server.addr, server.id.clone());
    spawn(async move {
        match imp {
            Impl::Dep2p | Impl::Layered => {
                let layered = imp == Impl::Layered;
                futures::stream::iter(0..n)
                    .map(|_| {
                        let id = id.clone();
                        async move {
                            Client::Dep2p(
                                dep2p_side::Client::connect_with(addr, &id, fast_loopback, layered)
                                    .await,
                            )
                        }
                    })
                    .buffer_unordered(32)
                    .collect()
                    .await
            }
            Impl::Quinn => quinn_side::Client::connect_many(addr, profile, n)
                .await
                .into_iter()
                .map(Client::Quinn)
                .collect(),
        }
    })
    .await
}

/// Runs `callers` callers on each client, each making sequential echo calls of `size` bytes
/// until `millis` have passed (each makes at least one). Returns the calls made and the time
/// they took.
async fn calls_for(
    clients: &[Client],
    callers: usize,
    size: usize,
    millis: u64,
) -> (u64, Duration) {
    let start = Instant::now();
    let deadline = start + Duration::from_millis(millis);
    let total = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        for k in 0..callers {
            let client = client.clone();
            let total = Arc::clone(&total);
            // Distinct message numbers for every caller.
            let mut i = ((c * callers + k) as u64) << 32;
            tasks.push(tokio::spawn(async move {
                loop {
                    on_client!(&client, |x| x.echo_sequential(i, 1, size, None).await);
                    i += 1;
                    total.fetch_add(1, Ordering::Relaxed);
                    if Instant::now() >= deadline {
                        break;
                    }
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("caller task");
    }
    (total.load(Ordering::Relaxed), start.elapsed())
}

async fn connections(imp: Impl, sizes: &Sizes, profile: Profile, n: usize, fig: &mut Figures) {
    let server = ServerProc::spawn(imp, None, profile);
    let warm = Client::connect(imp, &server, profile).await;
    warm.echo_sequential(0, 16, sizes.unary_size, Vec::new())
        .await;
    settle().await;
    let base = server.rss_kib();
    let clients = open(imp, &server, profile, n, true).await;
    assert_eq!(clients.len(), n, "connections opened");
    let cpu = server.cpu();
    // Read the memory while the calls run, near their end.
    let (made, took) = {
        let calls = calls_for(&clients, 1, sizes.unary_size, sizes.scale_millis);
        let rss = async {
            tokio::time::sleep(Duration::from_millis(sizes.scale_millis * 9 / 10)).await;
            server.rss_kib()
        };
        let ((made, took), peak) = tokio::join!(calls, rss);
        fig.set_owned(
            format!("scale_conns_{n}_server_kib_per_conn"),
            (peak as f64 - base as f64) / n as f64,
        );
        (made, took)
    };
    cpu.record_since(
        server.cpu(),
        made as f64,
        &format!("scale_conns_{n}_per_call"),
        fig,
    );
    fig.set_owned(
        format!("scale_conns_{n}_calls_per_s"),
        made as f64 / took.as_secs_f64(),
    );
    drop(clients);
    drop(warm);
    server.finish();
}

async fn message_sizes(imp: Impl, sizes: &Sizes, profile: Profile, fig: &mut Figures) {
    let server = ServerProc::spawn(imp, None, profile);
    let client = Client::connect(imp, &server, profile).await;
    client.echo_sequential(0, 16, 64, Vec::new()).await;
    for &size in &sizes.scale_sizes {
        let cpu = server.cpu();
        let (made, took) =
            calls_for(std::slice::from_ref(&client), 1, size, sizes.scale_millis).await;
        cpu.record_since(
            server.cpu(),
            made as f64,
            &format!("scale_size_{size}_per_call"),
            fig,
        );
        let secs = took.as_secs_f64();
        fig.set_owned(format!("scale_size_{size}_calls_per_s"), made as f64 / secs);
        fig.set_owned(
            format!("scale_size_{size}_mib_per_s"),
            (made as f64 * size as f64) / MIB / secs,
        );
    }
    drop(client);
    server.finish();
}

async fn real_path(imp: Impl, sizes: &Sizes, profile: Profile, fig: &mut Figures) {
    let server = ServerProc::spawn_under(&[], imp, None, profile, &["--no-fast-loopback"]);
    let clients = open(imp, &server, profile, 1, false).await;
    let client = clients.into_iter().next().expect("one connection");
    let size = sizes.unary_size;
    client
        .echo_sequential(0, sizes.warmup_calls, size, Vec::new())
        .await;

    // Latency: as the unary-latency workload, `latency_calls` sequential calls.
    let samples = Vec::with_capacity(sizes.latency_calls);
    let first = sizes.warmup_calls as u64;
    let mut samples = client
        .echo_sequential(first, sizes.latency_calls, size, samples)
        .await;
    samples.sort_unstable();
    fig.set("scale_real_path_unary_p50_us", percentile(&samples, 50.0));

    let (made, took) = calls_for(
        std::slice::from_ref(&client),
        CALLERS,
        size,
        sizes.scale_millis,
    )
    .await;
    fig.set(
        "scale_real_path_calls_per_s",
        made as f64 / took.as_secs_f64(),
    );

    let c = client.clone();
    let (count, msg) = (sizes.stream_messages / 4, sizes.stream_message_size);
    let took = spawn(async move { on_client!(&c, |c| c.download(count, msg).await) })
        .await
        .as_secs_f64();
    fig.set(
        "scale_real_path_server_stream_mib_per_s",
        (count * msg) as f64 / MIB / took,
    );
    drop(client);
    server.finish();
}
