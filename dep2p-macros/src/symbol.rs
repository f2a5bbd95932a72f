//! Names the macro recognises in user code, in one place.

/// `#[service(name = "...")]`: the service's wire name.
pub(crate) const OPT_NAME: &str = "name";
/// `#[service(crate = "...")]`: the path of the runtime crate.
pub(crate) const OPT_CRATE: &str = "crate";
/// `#[service(client = "...")]`: the name of the generated client.
pub(crate) const OPT_CLIENT: &str = "client";
/// `#[service(server = "...")]`: the name of the generated server.
pub(crate) const OPT_SERVER: &str = "server";
/// Every option `#[service(...)]` accepts, in the order error messages list them.
pub(crate) const OPTIONS: &[&str] = &[OPT_NAME, OPT_CRATE, OPT_CLIENT, OPT_SERVER];

/// Method attribute: request-response (the default when a method has no kind attribute).
pub(crate) const RPC: &str = "rpc";
/// Method attribute: one-way call, no response.
pub(crate) const NOTIFY: &str = "notify";
/// Method attribute: one request, a stream of responses.
pub(crate) const SERVER_STREAM: &str = "server_stream";
/// Method attribute: a stream of requests, one response.
pub(crate) const CLIENT_STREAM: &str = "client_stream";
/// Method attribute: streams in both directions.
pub(crate) const BIDI: &str = "bidi";
/// Method attribute: one unreliable, unordered QUIC datagram, no response.
pub(crate) const DATAGRAM: &str = "datagram";

/// Method attribute: a request-response method that may run more than once for one call, so a
/// call through a peer may be retried after its connection failed mid-call.
pub(crate) const IDEMPOTENT: &str = "idempotent";

/// Standard types of the form `X<T>` that are never a stream end spelled otherwise, so a
/// streaming method without its end is reported as such rather than as a type mismatch.
pub(crate) const NOT_STREAM_ENDS: &[&str] = &[
    "Vec",
    "VecDeque",
    "LinkedList",
    "BinaryHeap",
    "HashSet",
    "BTreeSet",
    "Option",
    "Box",
    "Arc",
    "Rc",
    "Cell",
    "RefCell",
    "Mutex",
    "RwLock",
    "PhantomData",
    "Reverse",
    "Wrapping",
];

/// Attributes of the language a method may carry, never taken for a misspelling of the
/// macro's own.
pub(crate) const COMPILER_ATTRS: &[&str] = &[
    "doc",
    "cfg",
    "cfg_attr",
    "allow",
    "expect",
    "warn",
    "deny",
    "forbid",
    "deprecated",
    "must_use",
    "inline",
];

/// Last path segment of the stream end a handler sends on.
pub(crate) const SENDER: &str = "Sender";
/// Last path segment of the stream end a handler receives from.
pub(crate) const RECEIVER: &str = "Receiver";

/// Attributes of a trait method that its client method carries over as written (`#[expect]`
/// is carried as `#[allow]`).
pub(crate) const CARRIED_ATTRS: &[&str] = &["doc", "cfg", "deprecated", "must_use", "allow"];

/// The runtime's package, looked up in the user's Cargo.toml when `crate = "..."` is not given.
pub(crate) const RUNTIME_PACKAGE: &str = "dep2p-runtime";

/// The runtime crate when `crate = "..."` is not given and the user's Cargo.toml does not
/// name it.
pub(crate) const DEFAULT_CRATE: &str = "dep2p_runtime";

/// Methods of the generated client that a trait method of the same name would clash with,
/// each with how to say so (`{client}` stands for the client's name).
pub(crate) const CLIENT_RESERVED: &[(&str, &str)] = &[
    (
        "new",
        "would clash with the generated constructor `{client}::new`",
    ),
    (
        "connection",
        "would clash with the generated accessor `{client}::connection`",
    ),
    (
        "clone",
        "would shadow `Clone::clone` of `{client}`, the generated client",
    ),
    (
        "with_name",
        "would clash with the generated constructor `{client}::with_name`",
    ),
    (
        "target",
        "would clash with the generated accessor `{client}::target`",
    ),
    (
        "SERVICE_NAME",
        "would clash with the generated constant `{client}::SERVICE_NAME`",
    ),
];
