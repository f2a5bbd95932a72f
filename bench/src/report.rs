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

/// Count rows (see `counts`): figure key, workload, what the figure is.
const COUNT_ROWS: &[(&str, &str, &str)] = &[
    (
        "unary_instr_per_call_client",
        "instructions per unary call",
        "client process",
    ),
    (
        "unary_instr_per_call_server",
        "instructions per unary call",
        "server process",
    ),
    (
        "unary_instr_per_call_both",
        "instructions per unary call",
        "client + server",
    ),
    (
        "unary_syscalls_per_call_client",
        "system calls per unary call",
        "client process",
    ),
    (
        "unary_syscalls_per_call_server",
        "system calls per unary call",
        "server process",
    ),
    (
        "unary_syscalls_per_call_both",
        "system calls per unary call",
        "client + server",
    ),
    (
        "concurrent_instr_per_call_client",
        "instructions per call, 64 callers",
        "client process",
    ),
    (
        "concurrent_instr_per_call_server",
        "instructions per call, 64 callers",
        "server process",
    ),
    (
        "concurrent_instr_per_call_both",
        "instructions per call, 64 callers",
        "client + server",
    ),
    (
        "concurrent_syscalls_per_call_client",
        "system calls per call, 64 callers",
        "client process",
    ),
    (
        "concurrent_syscalls_per_call_server",
        "system calls per call, 64 callers",
        "server process",
    ),
    (
        "concurrent_syscalls_per_call_both",
        "system calls per call, 64 callers",
        "client + server",
    ),
    (
        "stream_instr_per_call_client",
        "instructions per streamed message",
        "client process",
    ),
    (
        "stream_instr_per_call_server",
        "instructions per streamed message",
        "server process",
    ),
    (
        "stream_instr_per_call_both",
        "instructions per streamed message",
        "client + server",
    ),
    (
        "stream_syscalls_per_call_both",
        "system calls per streamed message",
        "client + server",
    ),
];

/// The row of a figure of the growing workload (`scale_…` keys): a sort key, the workload
/// and what the figure is. `None` for keys that are not shown.
fn scale_row(key: &str) -> Option<((u8, u64, u8), String, String)> {
    const FIGURES: &[(&str, &str)] = &[
        ("_calls_per_s", "calls/s"),
        ("_mib_per_s", "MiB/s"),
        ("_server_kib_per_conn", "server KiB per connection"),
        ("_per_call_server_cpu_us", "server CPU µs per call"),
        ("_per_call_client_cpu_us", "client CPU µs per call"),
        ("_unary_p50_us", "unary p50 µs (64 B)"),
        (
            "_server_stream_mib_per_s",
            "server streaming MiB/s (1 KiB msgs)",
        ),
    ];
    let rest = key.strip_prefix("scale_")?;
    let (rank, figure) = FIGURES
        .iter()
        .enumerate()
        .filter(|(_, (suffix, _))| rest.ends_with(suffix))
        .max_by_key(|(_, (suffix, _))| suffix.len())?;
    let stem = &rest[..rest.len() - figure.0.len()];
    let (group, n, workload) = if let Some(n) = stem.strip_prefix("conns_") {
        let n: u64 = n.parse().ok()?;
        let count = if n >= 1000 {
            number(n as f64)
        } else {
            n.to_string()
        };
        let noun = if n == 1 { "connection" } else { "connections" };
        (0, n, format!("scale: {count} {noun}"))
    } else if let Some(n) = stem.strip_prefix("size_") {
        let n: u64 = n.parse().ok()?;
        let size = if n >= 1024 * 1024 {
            format!("{} MiB", n / (1024 * 1024))
        } else if n >= 1024 {
            format!("{} KiB", n / 1024)
        } else {
            format!("{n} B")
        };
        (1, n, format!("scale: {size} echo"))
    } else if stem == "real_path" {
        (2, 0, "scale: fast_loopback(false)".to_string())
    } else {
        return None;
    };
    Some(((group, n, rank as u8), workload, figure.1.to_string()))
}

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
    let has = |rows: &[(&str, &str, &str)]| {
        rows.iter()
            .any(|(key, _, _)| summary.iter().any(|s| s.key == *key))
    };
    let mut out = String::new();
    if has(ROWS) || has(CPU_ROWS) {
        out.push_str(&table(summary, ROWS));
        out.push_str(
            "\nCPU time of each process (all threads, from /proc/<pid>/task/*/schedstat), and \
         datagrams the kernel dropped for a full socket receive buffer (RcvbufErrors in \
         /proc/net/snmp, machine-wide):\n\n",
        );
        out.push_str(&table(summary, CPU_ROWS));
    }
    if summary
        .iter()
        .any(|s| s.key.starts_with("unary_instr_") || s.key.starts_with("unary_syscalls_"))
    {
        out.push_str(
            "\nCounts per unary call (64 B echo), by difference between two runs of N and 2N \
             calls under the tool:\n\n",
        );
        out.push_str(&table(summary, COUNT_ROWS));
    }
    let mut scale: Vec<_> = summary
        .iter()
        .filter_map(|s| scale_row(&s.key).map(|(order, w, f)| (order, s.key.as_str(), w, f)))
        .collect();
    if !scale.is_empty() {
        scale.sort_by_key(|row| row.0);
        let rows: Vec<(&str, &str, &str)> = scale
            .iter()
            .map(|(_, key, w, f)| (*key, w.as_str(), f.as_str()))
            .collect();
        out.push_str("\nGrowing workload (--scale):\n\n");
        out.push_str(&table(summary, &rows));
    }
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

/// The commit the program runs from, with `+changes` when tracked files differ from it; `None`
/// outside a git work tree or without git.
fn commit() -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short=12", "HEAD"])?;
    let changed =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if changed {
        format!("{head}+changes")
    } else {
        head
    })
}

/// One line naming the machine and the commit, for the notes under the tables.
pub(crate) fn provenance() -> String {
    let m = machine();
    format!(
        "Machine: {} CPU(s), {}, Linux {}; commit {}.",
        m["cpus"],
        m["cpu_model"].as_str().unwrap_or("unknown CPU"),
        m["kernel"].as_str().unwrap_or("?"),
        commit().unwrap_or_else(|| "unknown".to_string()),
    )
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
        "commit": commit(),
        "sizes": sizes,
        "notes": notes,
        "summary": summary,
        "rounds": rounds,
    });
    serde_json::to_string_pretty(&report).expect("encode the JSON report")
}
