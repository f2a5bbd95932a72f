//! Counts that do not move with the machine's noise: instructions (valgrind's callgrind) and
//! system calls (strace) per unary call, in the client process and in the server process.
//!
//! A count is taken by difference: the server and a client process (this program's `calls`
//! mode) run under the tool once with `n` sequential echo calls and once with `2n`; the cost
//! of one call is `(count(2n) − count(n)) / n`, so start-up, the handshake and shutdown cancel
//! out. A tool that is not installed is skipped with a note.
//!
//! Both processes run pinned to one CPU (with `taskset`, where it can pin them): they then
//! take turns on it, and a build's counts repeat to within a fraction of a per cent. Spread
//! over the machine's cores, how often their threads park and wake each other across cores
//! depends on timing, and the same build's counts moved by up to 10 % between rounds.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::harness::ServerProc;
use crate::quinn_side::Profile;
use crate::report::Figures;
use crate::work::Impl;

/// A counting tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tool {
    /// `valgrind --tool=callgrind`: instructions executed, all threads.
    Callgrind,
    /// `strace -f -c`: system calls made, all threads.
    Strace,
}

/// The inline limit of a dep2p server under callgrind, in microseconds: 50 times the default
/// of 200 µs. Callgrind runs the server's code about 35 times slower (on the machine the
/// figures in `docs/PERFORMANCE.md` come from: 8 µs of user CPU time per sequential echo call
/// natively, 285 µs under callgrind), so with its default limit the server would take every
/// call for a slow one and spawn most of them, which it does not do natively.
const INLINE_LIMIT_US: &str = "10000";

impl Tool {
    const ALL: [Tool; 2] = [Tool::Callgrind, Tool::Strace];

    fn program(self) -> &'static str {
        match self {
            Tool::Callgrind => "valgrind",
            Tool::Strace => "strace",
        }
    }

    /// Options for the counted server: under callgrind, an inline limit scaled as its
    /// slowdown is (see [`INLINE_LIMIT_US`]).
    fn server_options(self) -> &'static [&'static str] {
        match self {
            Tool::Callgrind => &["--inline-limit-us", INLINE_LIMIT_US],
            Tool::Strace => &[],
        }
    }

    /// The figure key's stem.
    fn key(self) -> &'static str {
        match self {
            Tool::Callgrind => "instr",
            Tool::Strace => "syscalls",
        }
    }

    /// What the tool counts.
    fn what(self) -> &'static str {
        match self {
            Tool::Callgrind => "instructions",
            Tool::Strace => "system calls",
        }
    }

    /// Whether the tool is installed and can run this program here (tracing may be
    /// forbidden, as in some containers): runs `dep2p-bench --help` under it.
    fn available(self, dir: &Path) -> bool {
        let prefix = self.prefix(&dir.join(format!("{}-probe.out", self.key())));
        let Ok(exe) = std::env::current_exe() else {
            return false;
        };
        Command::new(&prefix[0])
            .args(&prefix[1..])
            .arg(exe)
            .arg("--help")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The command line that runs a program under the tool, writing its count to `out`,
    /// pinned to one CPU if [`pinning`] can.
    fn prefix(self, out: &Path) -> Vec<OsString> {
        let mut file = OsString::from(match self {
            Tool::Callgrind => "--callgrind-out-file=",
            Tool::Strace => "",
        });
        file.push(out);
        let mut line = pinning().map(<[OsString]>::to_vec).unwrap_or_default();
        line.extend(match self {
            Tool::Callgrind => {
                let mut log = OsString::from("--log-file=");
                log.push(out.with_extension("log"));
                vec![
                    "valgrind".into(),
                    "--tool=callgrind".into(),
                    file,
                    log,
                    "--".into(),
                ]
            }
            Tool::Strace => vec![
                "strace".into(),
                "-f".into(),
                "-c".into(),
                "-U".into(),
                "calls,name".into(),
                "-o".into(),
                file,
                "--".into(),
            ],
        });
        line
    }

    /// Reads the count the tool wrote to `out`.
    fn read(self, out: &Path) -> Result<u64, String> {
        let text =
            std::fs::read_to_string(out).map_err(|e| format!("read {}: {e}", out.display()))?;
        let found = match self {
            // `totals: <Ir>` (or `summary: <Ir>`), with one event, instructions.
            Tool::Callgrind => text.lines().find_map(|l| {
                l.strip_prefix("totals:")
                    .or_else(|| l.strip_prefix("summary:"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse().ok())
            }),
            // The last line: `<calls> total`.
            Tool::Strace => text.lines().rev().find_map(|l| {
                let mut words = l.split_whitespace();
                match (words.next(), words.next()) {
                    (Some(n), Some("total")) => n.parse().ok(),
                    _ => None,
                }
            }),
        };
        found.ok_or_else(|| format!("no total in {}", out.display()))
    }
}

/// The command prefix that pins a process to one CPU (`taskset -c 0`), if `taskset` is
/// installed and may pin here; `None` otherwise (the counts are then taken unpinned, with a
/// note).
fn pinning() -> Option<&'static [OsString]> {
    static PIN: OnceLock<Option<Vec<OsString>>> = OnceLock::new();
    PIN.get_or_init(|| {
        let pin: Vec<OsString> = vec!["taskset".into(), "-c".into(), "0".into()];
        let works = Command::new(&pin[0])
            .args(&pin[1..])
            .arg("true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        works.then_some(pin)
    })
    .as_deref()
}

/// Where the tools write their counts: a fresh directory under the system's temporary one.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dep2p-bench-counts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("make a directory for the counts");
    dir
}

/// What a counted client process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    /// Echo calls, made by this many tasks sharing the connection.
    Calls(usize),
    /// One server-streaming call.
    Stream,
}

/// Runs a server process and a client process making `n` echo calls of `size` bytes (or, for
/// [`Work::Stream`], one server-streaming call of `n` messages of `size` bytes), both under
/// `tool`; returns their counts (server, client).
fn count_once(
    tool: Tool,
    imp: Impl,
    profile: Profile,
    (calls, work): (usize, Work),
    size: usize,
    dir: &Path,
) -> Result<(u64, u64), String> {
    let callers = match work {
        Work::Calls(callers) => callers,
        Work::Stream => 0,
    };
    let tag = format!("{}-{}-{calls}-{callers}", tool.key(), imp.name());
    let server_out = dir.join(format!("{tag}-server.out"));
    let client_out = dir.join(format!("{tag}-client.out"));
    let server = ServerProc::spawn_under(
        &tool.prefix(&server_out),
        imp,
        None,
        profile,
        tool.server_options(),
    );
    let exe = std::env::current_exe().expect("path of this program");
    let prefix = tool.prefix(&client_out);
    let mut cmd = Command::new(&prefix[0]);
    cmd.args(&prefix[1..]).arg(exe).args([
        "calls",
        "--impl",
        imp.name(),
        "--addr",
        &server.addr.to_string(),
        "--id",
        &server.id,
        "--calls",
        &calls.to_string(),
        "--size",
        &size.to_string(),
    ]);
    match work {
        Work::Calls(callers) => cmd.args(["--callers", &callers.to_string()]),
        Work::Stream => cmd.arg("--stream"),
    };
    if profile == Profile::Loopback {
        cmd.arg("--quinn-loopback");
    }
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| format!("start the client under {}: {e}", tool.program()))?;
    server.finish();
    if !status.success() {
        return Err(format!("the counted client failed: {status}"));
    }
    Ok((tool.read(&server_out)?, tool.read(&client_out)?))
}

/// Callers sharing the connection in the concurrent count, as in the concurrency workload.
pub(crate) const CONCURRENT_CALLERS: usize = 64;

/// Messages of the smaller counted streaming call, per call of the smaller unary count.
pub(crate) const STREAM_MESSAGES_PER_CALL: usize = 10;

/// Counts per unary call with every tool that is installed, as
/// `unary_{instr,syscalls}_per_call_{server,client,both}` figures for calls made one after
/// another, `concurrent_…` for calls made by [`CONCURRENT_CALLERS`] tasks at once, and
/// `stream_…` per message of `message_size` bytes of one server-streaming call; returns
/// notes on what was skipped.
pub(crate) fn measure(
    imp: Impl,
    profile: Profile,
    calls: usize,
    (size, message_size): (usize, usize),
    fig: &mut Figures,
) -> Vec<String> {
    let dir = scratch();
    let mut notes = Vec::new();
    if pinning().is_none() {
        notes.push(
            "taskset not found or cannot pin here: the counted processes ran unpinned, and \
             their counts move by several per cent between rounds."
                .to_string(),
        );
    }
    for tool in Tool::ALL {
        if !tool.available(&dir) {
            notes.push(format!(
                "{} not found or cannot run here: {} per call not counted.",
                tool.program(),
                tool.what()
            ));
            continue;
        }
        let works = [
            (Work::Calls(1), "unary", calls, size),
            (Work::Calls(CONCURRENT_CALLERS), "concurrent", calls, size),
            (
                Work::Stream,
                "stream",
                STREAM_MESSAGES_PER_CALL * calls,
                message_size,
            ),
        ];
        for (work, stem, calls, size) in works {
            let count = |n| count_once(tool, imp, profile, (n, work), size, &dir);
            let counted = count(calls).and_then(|once| count(2 * calls).map(|twice| (once, twice)));
            match counted {
                Ok(((s1, c1), (s2, c2))) => {
                    let per = |a: u64, b: u64| (b as f64 - a as f64) / calls as f64;
                    let key = tool.key();
                    fig.set_owned(format!("{stem}_{key}_per_call_server"), per(s1, s2));
                    fig.set_owned(format!("{stem}_{key}_per_call_client"), per(c1, c2));
                    fig.set_owned(format!("{stem}_{key}_per_call_both"), per(s1 + c1, s2 + c2));
                }
                Err(err) => notes.push(format!(
                    "{} per call ({work:?}) not counted for {imp}: {err}",
                    tool.what()
                )),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    notes
}

/// The `calls` mode: connects to a server, makes `calls` echo calls of `size` bytes (each
/// result checked), one after another in a task on the runtime's workers or shared by
/// `callers` tasks, and exits. `callers` 0: one server-streaming call of `calls` messages of
/// `size` bytes instead.
pub(crate) fn run_client(
    imp: Impl,
    addr: std::net::SocketAddr,
    id: &str,
    calls: usize,
    size: usize,
    callers: usize,
    profile: Profile,
) -> ! {
    let runtime = tokio::runtime::Runtime::new().expect("start the tokio runtime");
    let id = id.to_string();
    // As a task on the runtime's workers, as in the timed workloads.
    let calls = async move {
        match imp {
            Impl::Dep2p | Impl::Layered => {
                let c = crate::dep2p_side::Client::connect(addr, &id, imp == Impl::Layered).await;
                match callers {
                    0 => drop(c.download(calls, size).await),
                    1 => c.echo_sequential(0, calls, size, None).await,
                    n => drop(c.echo_concurrent(n, calls, size).await),
                }
            }
            Impl::Quinn => {
                let c = crate::quinn_side::Client::connect(addr, profile).await;
                match callers {
                    0 => drop(c.download(calls, size).await),
                    1 => c.echo_sequential(0, calls, size, None).await,
                    n => drop(c.echo_concurrent(n, calls, size).await),
                }
            }
        }
    };
    let task = runtime.spawn(calls);
    runtime.block_on(task).expect("the calls task");
    drop(runtime);
    std::process::exit(0)
}
