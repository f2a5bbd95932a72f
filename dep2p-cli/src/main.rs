//! `dep2p`: asks a dep2p node what it serves and whether it is healthy, through the node's
//! built-in reflection and health services.
//!
//! ```text
//! dep2p list <ticket>               services, methods and kinds
//! dep2p health <ticket> [service]   serving or not; the exit code says it too
//! dep2p health <ticket> --watch      the status and each change, until the node ends it
//! ```
//!
//! Run `dep2p --help` for the options and exit codes.

mod args;

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use args::{Command, Options};
use dep2p_runtime::{
    Connection, Error, HealthClient, HealthStatus, Kind, Node, Receiver, ReflectionClient,
    SecretKey, ServiceInfo,
};
use futures::StreamExt;

/// Exit codes (also listed in the usage text).
const SERVING: u8 = 0;
const NOT_SERVING: u8 = 1;
const BAD_USAGE: u8 = 2;
const FAILED: u8 = 3;
const UNKNOWN: u8 = 4;

fn main() -> ExitCode {
    let command = match args::parse(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("dep2p: {error}\n\n{}", args::USAGE);
            return ExitCode::from(BAD_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("dep2p: cannot start: {error}");
            return ExitCode::from(FAILED);
        }
    };
    ExitCode::from(runtime.block_on(run(command)))
}

/// Runs `command`, printing its outcome; returns the exit code.
async fn run(command: Command) -> u8 {
    match command {
        Command::Help => {
            print(&format!("{}\n", args::USAGE));
            SERVING
        }
        Command::List(options) => {
            let node = match client(&options).await {
                Ok(node) => node,
                Err(error) => return failed(&error),
            };
            let listed = within(&node, &options, |conn| async move {
                ReflectionClient::new(conn).list().await
            })
            .await;
            node.close();
            match listed {
                Ok(services) => {
                    print(&listing(&services));
                    SERVING
                }
                Err(error) => failed(&error),
            }
        }
        Command::Health(options, service) => {
            let name = service.clone().unwrap_or_default();
            let node = match client(&options).await {
                Ok(node) => node,
                Err(error) => return failed(&error),
            };
            let checked = within(&node, &options, |conn| async move {
                HealthClient::new(conn).check(name).await
            })
            .await;
            node.close();
            let what = service.as_deref().unwrap_or("node");
            match checked {
                Ok(status) => report(what, status),
                // A node that is shutting down is not serving: the answer a health checker
                // wants, rather than a failure to reach it.
                Err(Error::ShuttingDown) => {
                    print(&format!("{what}: not serving (shutting down)\n"));
                    NOT_SERVING
                }
                Err(error) => failed(&error),
            }
        }
        Command::Watch(options, service) => {
            let name = service.clone().unwrap_or_default();
            let node = match client(&options).await {
                Ok(node) => node,
                Err(error) => return failed(&error),
            };
            let watching = within(&node, &options, |conn| async move {
                let (statuses, _) = HealthClient::new(conn).watch(name).await?;
                Ok(statuses)
            })
            .await;
            let code = match watching {
                Ok(statuses) => follow(service.as_deref().unwrap_or("node"), statuses).await,
                Err(error) => failed(&error),
            };
            node.close();
            code
        }
    }
}

/// Prints each change of a watched status until the watch ends; returns the exit code of
/// the last status.
async fn follow(what: &str, mut statuses: Receiver<HealthStatus>) -> u8 {
    let mut last = None;
    loop {
        match statuses.next().await {
            // The node repeats a status that does not change: printed once.
            Some(Ok(status)) if last == Some(status) => {}
            Some(Ok(status)) => {
                report(what, status);
                last = Some(status);
            }
            None => {
                return match last {
                    Some(status) => exit_code(status),
                    None => {
                        eprintln!("dep2p: the node ended the watch without a status");
                        FAILED
                    }
                }
            }
            Some(Err(Error::ShuttingDown)) => {
                print(&format!("{what}: not serving (shutting down)\n"));
                return NOT_SERVING;
            }
            Some(Err(error)) => return failed(&error),
        }
    }
}

/// Prints `status`; returns its exit code.
fn report(what: &str, status: HealthStatus) -> u8 {
    print(&format!("{what}: {status}\n"));
    exit_code(status)
}

fn exit_code(status: HealthStatus) -> u8 {
    match status {
        HealthStatus::Serving => SERVING,
        HealthStatus::NotServing => NOT_SERVING,
        HealthStatus::Unknown => UNKNOWN,
    }
}

/// The node this tool calls from, with the key of `options`. It serves nothing, not even the
/// built-in services.
async fn client(options: &Options) -> Result<Node, Error> {
    let key = match &options.key {
        Some(path) => SecretKey::load(path)?,
        None => SecretKey::generate(),
    };
    Node::builder()
        .secret_key(key)
        .connect_timeout(options.timeout)
        .reflection(false)
        .health_service(false)
        .bind_any()
        .await
}

/// Connects from `node` to the node of `options` and runs `call` on the connection, all
/// within the timeout.
async fn within<T, F>(
    node: &Node,
    options: &Options,
    call: impl FnOnce(Connection) -> F,
) -> Result<T, Error>
where
    F: std::future::Future<Output = Result<T, Error>>,
{
    tokio::time::timeout(options.timeout, async {
        let conn = node.dial(&options.node).await?;
        call(conn).await
    })
    .await
    .unwrap_or(Err(Error::Timeout))
}

/// Writes `text` to stdout. A reader that went away (`dep2p list … | head`) is no reason to
/// fail: the exit code still says what happened.
fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// Reports a failure on stderr; returns the exit code.
fn failed(error: &Error) -> u8 {
    match error {
        Error::UnknownService(name) => {
            eprintln!("dep2p: the node does not serve {name} (turned off there?)")
        }
        Error::Timeout => eprintln!("dep2p: no answer within the timeout"),
        error => eprintln!("dep2p: {error}"),
    }
    FAILED
}

/// The services as printed: each name, then its methods, one a line, with their kinds.
fn listing(services: &[ServiceInfo]) -> String {
    let width = services
        .iter()
        .flat_map(ServiceInfo::methods)
        .map(|method| method.name().len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for service in services {
        let _ = writeln!(out, "{}", service.name());
        if service.methods().is_empty() {
            let _ = writeln!(out, "  (methods not listed)");
        }
        for method in service.methods() {
            let _ = writeln!(
                out,
                "  {:width$}  {}",
                method.name(),
                kind_name(method.kind())
            );
        }
    }
    out
}

/// A kind as the documentation names it.
fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Unary => "request-response",
        Kind::Notify => "notification",
        Kind::ServerStream => "server-streaming",
        Kind::ClientStream => "client-streaming",
        Kind::Bidi => "bidirectional-streaming",
        Kind::Datagram => "datagram",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dep2p_runtime::MethodInfo;

    #[test]
    fn listing_aligns_methods_under_their_service() {
        let services = [
            ServiceInfo::new(
                "chat.v1",
                vec![
                    MethodInfo::new("login", Kind::Unary),
                    MethodInfo::new("history", Kind::ServerStream),
                ],
            ),
            ServiceInfo::new("raw", vec![]),
        ];
        assert_eq!(
            listing(&services),
            "chat.v1\n  login    request-response\n  history  server-streaming\n\
             raw\n  (methods not listed)\n"
        );
    }
}
