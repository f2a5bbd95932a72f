//! Figures of each round, their summary over rounds, the printed table and the JSON report.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::work::{Impl, Sizes};

/// The figures one implementation produced in one round, by key.
#[derive(Debug, Default, Clone)]
pub(crate) struct Figures(BTreeMap<String, f64>);

impl Figures {
    pub(crate) fn new() -> Figures {
        Figures::default()
    }

    pub(crate) fn set(&mut self, key: &str, value: f64) {
        self.0.insert(key.to_string(), value);
    }

    pub(crate) fn set_owned(&mut self, key: String, value: f64) {
        self.0.insert(key, value);
    }

    fn get(&self, key: &str) -> Option<f64> {
        self.0.get(key).copied()
    }
}

/// The rows of the table: figure key, workload, what the figure is.
const ROWS: &[(&str, &str, &str)] = &[
    ("unary_p50_us", "unary latency (64 B echo)", "p50 µs"),
    ("unary_p99_us", "unary latency (64 B echo)", "p99 µs"),
    (
        "unary_calls_per_s",
        "unary concurrency (64 callers)",
        "calls/s",
    ),
    (
        "server_stream_msgs_per_s",
        "server streaming (1 KiB msgs)",
        "msgs/s",
    ),
    (
        "server_stream_mib_per_s",
        "server streaming (1 KiB msgs)",
        "MiB/s",
    ),
    (
        "client_stream_mib_per_s",
        "client streaming (64 KiB msgs)",
        "MiB/s",
    ),
    ("bidi_p50_us", "bidi ping-pong (64 B)", "p50 µs"),
    (
        "idle_kib_per_conn",
        "memory: idle connections",
        "KiB per connection",
    ),
    (
        "in_flight_kib_per_call",
        "memory: calls in flight",
        "KiB per call",
    ),
    (
        "client_allocs_per_call",
        "allocations per unary call",
        "client side",
    ),
    (
        "server_allocs_per_call",
        "allocations per unary call",
        "server side",
    ),
];

/// CPU time rows: figure key, workload, what the figure is.
const CPU_ROWS: &[(&str, &str, &str)] = &[
    (
        "latency_per_call_server_cpu_us",
        "unary latency",
        "server µs per call",
    ),
    (
        "latency_per_call_client_cpu_us",
        "unary latency",
        "client µs per call",
    ),
    (
        "concurrency_per_call_server_cpu_us",
        "unary concurrency",
        "server µs per call",
    ),
    (
        "concurrency_per_call_client_cpu_us",
        "unary concurrency",
        "client µs per call",
    ),
    (
        "server_stream_per_msg_server_cpu_us",
        "server streaming",
        "server µs per message",
    ),
    (
        "server_stream_per_msg_client_cpu_us",
        "server streaming",
        "client µs per message",
    ),
    (
        "client_stream_per_mib_server_cpu_us",
        "client streaming",
        "server µs per MiB",
    ),
    (
        "client_stream_per_mib_client_cpu_us",
        "client streaming",
        "client µs per MiB",
    ),
    (
        "server_stream_udp_drops",
        "server streaming",
        "datagrams dropped",
    ),
    (
        "client_stream_udp_drops",
        "client streaming",
        "datagrams dropped",
    ),
];

/// Median, minimum and maximum of some values.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct Spread {
    median: f64,
    min: f64,
    max: f64,
    n: usize,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: values[0],
            max: values[n - 1],
            n,
        })
    }
}

/// One figure summarized over rounds.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Summary {
    key: String,
    dep2p: Option<Spread>,
    quinn: Option<Spread>,
    /// dep2p ÷ quinn, paired by round.
    ratio: Option<Spread>,
    /// dep2p with one no-op layer on each side.
    layered: Option<Spread>,
    /// dep2p with the layers ÷ dep2p without, paired by round.
    layered_ratio: Option<Spread>,
}

pub(crate) fn summarize(rounds: &[(Impl, usize, Figures)]) -> Vec<Summary> {
    let mut keys: Vec<&str> = rounds
        .iter()
        .flat_map(|(_, _, f)| f.0.keys().map(String::as_str))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let of = |imp: Impl, key: &str, round: usize| {
        rounds
            .iter()
            .find(|(i, r, _)| *i == imp && *r == round)
            .and_then(|(_, _, f)| f.get(key))
    };
    let round_numbers: Vec<usize> = {
        let mut r: Vec<usize> = rounds.iter().map(|(_, r, _)| *r).collect();
        r.dedup();
        r
    };
    keys.into_iter()
        .map(|key| {
            let values = |imp| {
                round_numbers
                    .iter()
                    .filter_map(|&r| of(imp, key, r))
                    .collect()
            };
            let ratios = |a: Impl, b: Impl| {
                round_numbers
                    .iter()
                    .filter_map(|&r| match (of(a, key, r), of(b, key, r)) {
                        (Some(x), Some(y)) if y != 0.0 => Some(x / y),
                        _ => None,
                    })
                    .collect()
            };
            Summary {
                key: key.to_string(),
                dep2p: Spread::of(values(Impl::Dep2p)),
                quinn: Spread::of(values(Impl::Quinn)),
                ratio: Spread::of(ratios(Impl::Dep2p, Impl::Quinn)),
                layered: Spread::of(values(Impl::Layered)),
                layered_ratio: Spread::of(ratios(Impl::Layered, Impl::Dep2p)),
            }
        })
        .collect()
}

/// A number with a precision that suits its size, thousands separated.
fn number(x: f64) -> String {
    if x.abs() >= 1000.0 {
        let digits = format!("{:.0}", x.abs());
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if x < 0.0 {
            out.insert(0, '-');
        }
        out
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn cell(spread: Option<Spread>, fmt: fn(f64) -> String) -> String {
    match spread {
        None => "–".to_string(),
        Some(s) if s.n == 1 => fmt(s.median),
        Some(s) => format!("{} ({}–{})", fmt(s.median), fmt(s.min), fmt(s.max)),
    }
}

/// The tables, in Markdown, followed by the notes.
pub(crate) fn tables(summary: &[Summary], notes: &[String]) -> String {
    let mut out = table(summary, ROWS);
    out.push_str(
        "\nCPU time of each process (all threads, from /proc/<pid>/task/*/schedstat), and \
         datagrams the kernel dropped for a full socket receive buffer (RcvbufErrors in \
         /proc/net/snmp, machine-wide):\n\n",
    );
    out.push_str(&table(summary, CPU_ROWS));
    out.push('\n');
    for note in notes {
        out.push_str(note);
        out.push('\n');
    }
    out
}

fn table(summary: &[Summary], rows: &[(&str, &str, &str)]) -> String {
    let mut out = String::new();
    let layered = summary.iter().any(|s| s.layered.is_some());
    out.push_str("| workload | figure | dep2p | raw quinn | dep2p ÷ quinn |");
    if layered {
        out.push_str(" dep2p, no-op layers | ÷ dep2p |\n|---|---|--:|--:|--:|--:|--:|\n");
    } else {
        out.push_str("\n|---|---|--:|--:|--:|\n");
    }
    for (key, workload, figure) in rows {
        let Some(s) = summary.iter().find(|s| s.key == *key) else {
            continue;
        };
        out.push_str(&format!(
            "| {workload} | {figure} | {} | {} | {} |",
            cell(s.dep2p, number),
            cell(s.quinn, number),
            cell(s.ratio, |r| format!("{r:.2}")),
        ));
        if layered {
            out.push_str(&format!(
                " {} | {} |",
                cell(s.layered, number),
                cell(s.layered_ratio, |r| format!("{r:.2}")),
            ));
        }
        out.push('\n');
    }
    out
}

fn machine() -> Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string());
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "cpu_model": cpu,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
}

pub(crate) fn json(
    sizes: &Sizes,
    quick: bool,
    rounds: &[(Impl, usize, Figures)],
    summary: &[Summary],
    notes: &[String],
    wall: Duration,
) -> String {
    let unix_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let rounds: Vec<Value> = rounds
        .iter()
        .map(|(imp, round, figures)| {
            json!({ "impl": imp.name(), "round": round, "figures": figures.0 })
        })
        .collect();
    let report = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "unix_time": unix_time,
        "quick": quick,
        "wall_seconds": wall.as_secs_f64(),
        "machine": machine(),
        "sizes": sizes,
        "notes": notes,
        "summary": summary,
        "rounds": rounds,
    });
    serde_json::to_string_pretty(&report).expect("encode the JSON report")
}
