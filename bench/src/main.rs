//! `dep2p-bench`: measures dep2p, called through `#[service]`-generated code, against raw quinn
//! doing the same work with minimal framing. Server and client run as separate processes on
//! 127.0.0.1. See `docs/PERFORMANCE.md`.

mod counts;
mod dep2p_side;
mod driver;
mod harness;
mod quinn_side;
mod report;
mod scale;
mod server;
mod work;

use std::alloc::System;

use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

use crate::driver::{DriverArgs, Workload};
use crate::quinn_side::Profile;
use crate::server::ServerArgs;
use crate::work::{Impl, Sizes};

/// Counts every heap allocation of the process.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations and reallocations of this process so far.
pub(crate) fn alloc_counts() -> (u64, u64) {
    let stats = GLOBAL.stats();
    (stats.allocations as u64, stats.reallocations as u64)
}

const USAGE: &str = "\
usage: dep2p-bench [--quick] [--rounds N] [--json PATH] [--impl NAME] [--only LIST]
                   [--quinn-loopback] [--scale]
       dep2p-bench server --impl NAME [--addr ADDR] [--max-streams N] [--quinn-loopback]
                          [--no-fast-loopback] [--inline-limit-us N]
       dep2p-bench calls --impl dep2p|quinn --addr ADDR --id ID --calls N [--size BYTES]
                         [--callers N | --stream] [--quinn-loopback]

Without a subcommand, runs the benchmark: for each round and implementation it starts a server
process (this program's `server` mode), runs the client side of every workload against it, and
prints a Markdown table of medians (min–max) over rounds with dep2p ÷ quinn ratios.

  --quick        tiny counts and one round: checks that everything works, in seconds
  --rounds N     rounds (default 3; 1 with --quick)
  --json PATH    also write every figure of every round, and the summary, as JSON
  --impl NAME    run only one implementation (no ratios): dep2p, quinn, or dep2p+layer
                 (dep2p with one no-op layer on each side; by default all three run)
  --only LIST    comma-separated workloads: unary, concurrency, server-stream,
                 client-stream, bidi, memory, counts (default: all of these), scale
  --scale        also run the growing workload: 1 to 1,000 connections each making calls,
                 messages of 64 B to 1 MiB, and dep2p with fast_loopback(false)
  --quinn-loopback
                 give the raw quinn baseline a loopback transport profile instead of quinn's
                 defaults: 64 KB datagrams from the start, segmentation offload off, an
                 initial congestion window of ten datagrams, 4 MiB socket buffers

`counts` (instructions and system calls per unary call, and per message of a server-streaming
call) runs server and client processes
under valgrind --tool=callgrind and strace -f -c; a tool that is missing or cannot trace here
is skipped with a note.

`calls` connects to a server, makes N sequential checked echo calls and exits (the client
process the counts are taken of); with `--callers N`, N tasks share the calls and the
connection, as in the concurrency workload; with `--stream`, it makes one server-streaming
call of N messages of BYTES each instead, as in the server streaming workload.

`server` serves one implementation on ADDR (default 127.0.0.1:0), prints
`ready <address> <node id>`, answers control commands on stdin and exits when stdin closes.
`--inline-limit-us N` sets a dep2p server's `inline_limit` (the counts give it 10,000 under
callgrind, which runs the server's code about 35 times slower than it runs natively).";

fn fail(msg: &str) -> ! {
    eprintln!("dep2p-bench: {msg}\n\n{USAGE}");
    std::process::exit(2)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    if args.first().map(String::as_str) == Some("server") {
        args.remove(0);
        server::run(server_args(args));
    }
    if args.first().map(String::as_str) == Some("calls") {
        args.remove(0);
        calls(args);
    }
    driver::run(driver_args(args));
}

/// Pops the value of the option `name`.
fn value(args: &mut std::vec::IntoIter<String>, name: &str) -> String {
    args.next()
        .unwrap_or_else(|| fail(&format!("{name} needs a value")))
}

fn parse_impl(s: &str) -> Impl {
    Impl::parse(s).unwrap_or_else(|| fail(&format!("unknown implementation {s:?}")))
}

fn server_args(args: Vec<String>) -> ServerArgs {
    let mut imp = None;
    let mut addr = "127.0.0.1:0".to_string();
    let mut max_streams = None;
    let mut profile = Profile::Default;
    let mut fast_loopback = true;
    let mut inline_limit = None;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--impl" => imp = Some(parse_impl(&value(&mut it, "--impl"))),
            "--addr" => addr = value(&mut it, "--addr"),
            "--no-fast-loopback" => fast_loopback = false,
            "--inline-limit-us" => {
                let us = value(&mut it, "--inline-limit-us");
                let us = us.parse().unwrap_or_else(|_| fail("bad --inline-limit-us"));
                inline_limit = Some(std::time::Duration::from_micros(us));
            }
            "--max-streams" => {
                let n = value(&mut it, "--max-streams");
                max_streams = Some(n.parse().unwrap_or_else(|_| fail("bad --max-streams")));
            }
            "--quinn-loopback" => profile = Profile::Loopback,
            other => fail(&format!("unknown server option {other:?}")),
        }
    }
    ServerArgs {
        imp: imp.unwrap_or_else(|| fail("server needs --impl")),
        addr: addr.parse().unwrap_or_else(|_| fail("bad --addr")),
        max_streams,
        profile,
        fast_loopback,
        inline_limit,
    }
}

/// The `calls` mode.
fn calls(args: Vec<String>) -> ! {
    let (mut imp, mut addr, mut id, mut calls) = (None, None, None, None);
    let mut size = 64;
    let mut callers = 1;
    let mut profile = Profile::Default;
    let mut it = args.into_iter();
    let number = |s: String, name: &str| -> usize {
        s.parse().unwrap_or_else(|_| fail(&format!("bad {name}")))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--impl" => imp = Some(parse_impl(&value(&mut it, "--impl"))),
            "--addr" => {
                let a = value(&mut it, "--addr");
                addr = Some(a.parse().unwrap_or_else(|_| fail("bad --addr")));
            }
            "--id" => id = Some(value(&mut it, "--id")),
            "--calls" => calls = Some(number(value(&mut it, "--calls"), "--calls")),
            "--size" => size = number(value(&mut it, "--size"), "--size"),
            "--callers" => callers = number(value(&mut it, "--callers"), "--callers").max(1),
            "--stream" => callers = 0,
            "--quinn-loopback" => profile = Profile::Loopback,
            other => fail(&format!("unknown calls option {other:?}")),
        }
    }
    counts::run_client(
        imp.unwrap_or_else(|| fail("calls needs --impl")),
        addr.unwrap_or_else(|| fail("calls needs --addr")),
        &id.unwrap_or_else(|| fail("calls needs --id")),
        calls.unwrap_or_else(|| fail("calls needs --calls")),
        size,
        callers,
        profile,
    )
}

fn driver_args(args: Vec<String>) -> DriverArgs {
    let mut quick = false;
    let mut rounds = None;
    let mut json = None;
    let mut impls = vec![Impl::Quinn, Impl::Dep2p, Impl::Layered];
    let mut workloads = Workload::ALL.to_vec();
    let mut quinn_profile = Profile::Default;
    let mut scale = false;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--rounds" => {
                let n: usize = value(&mut it, "--rounds")
                    .parse()
                    .unwrap_or_else(|_| fail("bad --rounds"));
                if n == 0 {
                    fail("--rounds must be at least 1");
                }
                rounds = Some(n);
            }
            "--json" => json = Some(value(&mut it, "--json").into()),
            "--impl" => impls = vec![parse_impl(&value(&mut it, "--impl"))],
            "--only" => {
                workloads = value(&mut it, "--only")
                    .split(',')
                    .map(|w| {
                        Workload::parse(w.trim())
                            .unwrap_or_else(|| fail(&format!("unknown workload {w:?}")))
                    })
                    .collect();
            }
            "--quinn-loopback" => quinn_profile = Profile::Loopback,
            "--scale" => scale = true,
            other => fail(&format!("unknown option {other:?}")),
        }
    }
    if scale && !workloads.contains(&Workload::Scale) {
        workloads.push(Workload::Scale);
    }
    let mut sizes = if quick { Sizes::quick() } else { Sizes::full() };
    if let Some(n) = rounds {
        sizes.rounds = n;
    }
    DriverArgs {
        sizes,
        quick,
        json,
        impls,
        workloads,
        quinn_profile,
    }
}
