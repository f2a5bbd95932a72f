//! The command line: two subcommands and three options, parsed by hand.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use dep2p_runtime::{NodeAddr, NodeId};

/// How long a command may take, connecting included, unless `--timeout` says otherwise.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) const USAGE: &str = "\
usage: dep2p list <ticket> [options]
       dep2p health <ticket> [<service>] [--watch] [options]

  list     the node's services, their methods and the kind of each
  health   whether the node (or <service>) is serving: exits 0 if it is,
           1 if not, 4 if the node does not know <service>; with --watch,
           prints the status and each change until the node ends the watch
           (it does when it shuts down), then exits as for the last status

  <ticket>  <node id>@<address>,<address>,... as a node prints it; or an
            address (ip:port or host:port) given with --id

options:
  --id <node id>      the node's id, when <ticket> is a bare address
  --key <file>        the key to connect with (PKCS#8 PEM, as SecretKey::save
                      writes it); default: a new key for this run
  --timeout <secs>    how long the command may take, connecting included
                      (default: 10)
  -h, --help          this text

exit codes: 0 done (serving), 1 not serving, 2 bad usage, 3 the node could
not be reached or the call failed, 4 unknown service";

/// What to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// Print the usage.
    Help,
    /// List the node's services.
    List(Options),
    /// Check the health of the node (`None`) or of one of its services.
    Health(Options, Option<String>),
    /// Follow the health of the node (`None`) or of one of its services.
    Watch(Options, Option<String>),
}

/// What both subcommands take.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Options {
    pub(crate) node: NodeAddr,
    pub(crate) key: Option<PathBuf>,
    pub(crate) timeout: Duration,
}

/// A command line that does not parse, and why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UsageError(String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn usage(message: impl Into<String>) -> UsageError {
    UsageError(message.into())
}

/// Parses the arguments after the program's name.
pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, UsageError> {
    let mut positional = Vec::new();
    let mut id = None;
    let mut key = None;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut watch = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // `--name value` or `--name=value`.
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_string(), Some(value)),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .map(str::to_string)
                .or_else(|| args.next())
                .ok_or_else(|| usage(format!("{name} needs a value")))
        };
        match name.as_str() {
            "-h" | "--help" | "help" if positional.is_empty() || name != "help" => {
                return Ok(Command::Help)
            }
            "--id" => {
                let text = value("--id")?;
                let parsed: NodeId = text
                    .parse()
                    .map_err(|e| usage(format!("--id {text}: {e}")))?;
                id = Some(parsed);
            }
            "--key" => key = Some(PathBuf::from(value("--key")?)),
            "--watch" => watch = true,
            "--timeout" => {
                let text = value("--timeout")?;
                timeout = text
                    .parse::<f64>()
                    .ok()
                    .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                    .filter(|timeout| !timeout.is_zero())
                    .ok_or_else(|| usage(format!("--timeout {text}: not a number of seconds")))?;
            }
            "--" => positional.extend(args.by_ref()),
            flag if flag.starts_with('-') && flag.len() > 1 => {
                return Err(usage(format!("unknown option {flag}")));
            }
            _ => positional.push(arg),
        }
    }

    let mut positional = positional.into_iter();
    let command = positional
        .next()
        .ok_or_else(|| usage("no command: list or health"))?;
    let target = positional
        .next()
        .ok_or_else(|| usage(format!("{command}: no ticket")))?;
    let node = node_addr(&target, id)?;
    let options = Options { node, key, timeout };
    let command = match command.as_str() {
        "list" if watch => return Err(usage("--watch goes with health")),
        "list" => Command::List(options),
        "health" if watch => Command::Watch(options, positional.next()),
        "health" => Command::Health(options, positional.next()),
        other => return Err(usage(format!("unknown command {other}: list or health"))),
    };
    match positional.next() {
        Some(extra) => Err(usage(format!("unexpected argument {extra}"))),
        None => Ok(command),
    }
}

/// The node to reach: a ticket, or an address with `--id`.
fn node_addr(target: &str, id: Option<NodeId>) -> Result<NodeAddr, UsageError> {
    let Some(id) = id else {
        let node: NodeAddr = target.parse().map_err(|e| {
            usage(format!(
                "{target}: not a ticket ({e}); give an address with --id"
            ))
        })?;
        return if node.is_empty() {
            Err(usage(format!("{target}: the ticket has no address")))
        } else {
            Ok(node)
        };
    };
    if target.contains('@') {
        let node: NodeAddr = target
            .parse()
            .map_err(|e| usage(format!("{target}: {e}")))?;
        return if node.id() == id {
            Ok(node)
        } else {
            Err(usage("--id differs from the ticket's node id"))
        };
    }
    let node = NodeAddr::new(id);
    match target.parse() {
        Ok(addr) => Ok(node.with_addr(addr)),
        Err(_) => node
            .with_host(target)
            .map_err(|e| usage(format!("{target}: not an address ({e})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dep2p_runtime::SecretKey;

    fn parse_str(line: &str) -> Result<Command, UsageError> {
        parse(line.split_whitespace().map(str::to_string))
    }

    #[test]
    fn tickets_addresses_and_options() {
        let id = SecretKey::generate().public();
        let ticket = format!("{id}@127.0.0.1:4433");
        let node: NodeAddr = ticket.parse().unwrap();

        assert_eq!(
            parse_str(&format!("list {ticket}")),
            Ok(Command::List(Options {
                node: node.clone(),
                key: None,
                timeout: DEFAULT_TIMEOUT,
            }))
        );
        assert_eq!(
            parse_str(&format!(
                "health 127.0.0.1:4433 chat.v1 --id {id} --key k.pem --timeout=2.5"
            )),
            Ok(Command::Health(
                Options {
                    node: node.clone(),
                    key: Some("k.pem".into()),
                    timeout: Duration::from_millis(2500),
                },
                Some("chat.v1".into())
            ))
        );
        let Ok(Command::Health(options, None)) =
            parse_str(&format!("health --id {id} localhost:4433"))
        else {
            panic!("a host name with --id parses");
        };
        assert_eq!(options.node.id(), id);
        assert!(matches!(
            parse_str(&format!("health {ticket} --watch shop.v1")),
            Ok(Command::Watch(_, Some(service))) if service == "shop.v1"
        ));
        assert_eq!(parse_str("--help"), Ok(Command::Help));
        assert_eq!(parse_str("help"), Ok(Command::Help));
    }

    #[test]
    fn mistakes_are_named() {
        let id = SecretKey::generate().public();
        let error = |line: &str| match parse_str(line) {
            Err(e) => e.to_string(),
            Ok(command) => panic!("`{line}` parsed as {command:?}"),
        };
        assert_eq!(error(""), "no command: list or health");
        assert_eq!(error("list"), "list: no ticket");
        assert!(error("list 127.0.0.1:4433").contains("not a ticket"));
        assert_eq!(
            error(&format!("list {id}")),
            format!("{id}: the ticket has no address")
        );
        assert_eq!(
            error(&format!("call {id}@127.0.0.1:1")),
            "unknown command call: list or health"
        );
        assert_eq!(
            error(&format!("list {id}@127.0.0.1:1 extra")),
            "unexpected argument extra"
        );
        assert_eq!(error("list x --verbose"), "unknown option --verbose");
        assert_eq!(
            error(&format!("list {id}@127.0.0.1:1 --watch")),
            "--watch goes with health"
        );
        assert_eq!(error("list x --id"), "--id needs a value");
        assert!(error("list x --id nope").starts_with("--id nope:"));
        assert_eq!(
            error(&format!("list {id}@127.0.0.1:1 --timeout 0")),
            "--timeout 0: not a number of seconds"
        );
    }
}
