//! The `#[service]` attribute of dep2p. Use it through `dep2p_runtime`, which re-exports it.

mod errors;
mod expand;
mod generate;
mod model;
mod parse;
mod symbol;
mod validate;

#[cfg(test)]
mod tests;

/// Turns a trait of `async fn` methods into a dep2p service: the trait the server implements,
/// a typed client and a server dispatcher.
///
/// ```ignore
/// use dep2p_runtime::{service, Receiver, Sender};
///
/// #[service(name = "chat.v1")]
/// pub trait Chat {
///     /// Request-response: the default kind (`#[rpc]` may be written).
///     async fn login(&self, user: String) -> Result<u64, LoginError>;
///     /// One-way: no response is sent.
///     #[notify]
///     async fn typing(&self, user: String);
///     /// One request, a stream of responses.
///     #[server_stream]
///     async fn history(&self, room: String, out: Sender<Message>) -> Result<(), ChatError>;
///     /// A stream of requests, one response.
///     #[client_stream]
///     async fn upload(&self, name: String, chunks: Receiver<Chunk>) -> Result<u64, ChatError>;
///     /// Both directions at once.
///     #[bidi]
///     async fn talk(&self, room: String, incoming: Receiver<Message>, out: Sender<Message>)
///         -> Result<(), ChatError>;
/// }
/// ```
///
/// # Methods
///
/// Every method is an `async fn` taking `&self` and named arguments; its kind is chosen by at
/// most one attribute. Streaming methods take the stream ends they use as parameters, anywhere
/// among the arguments: `#[server_stream]` a `Sender<T>`, `#[client_stream]` a `Receiver<T>`,
/// `#[bidi]` one of each. The kind says which ends there are: a request-response method or a
/// notification has none, so all its parameters are messages (an application type named
/// `Sender<T>` included). In a streaming method an end is the parameter spelled
/// `Sender<T>` / `Receiver<T>` (any path); an end spelled otherwise (an alias, `Tx<T>`) is
/// the last parameter of the form `X<T>` not already an end, the `Sender` last and the
/// `Receiver` before it. The compiler checks that it is the runtime's type. Arguments, stream items and return values must be
/// `Serialize + DeserializeOwned + Send + 'static`; a type that is not is reported at the type.
/// The declared return type travels as is, so an application error inside it (`Err(LoginError)`)
/// reaches the caller intact, distinct from the runtime's errors.
///
/// `#[idempotent]` on a request-response method (with or without `#[rpc]`) says that running
/// its handler more than once for one call does no harm: the generated client method returns
/// its call marked with the runtime's `Unary::idempotent`, so that a call through a
/// reconnecting `Peer` is also retried after a transport failure before any answer (its
/// connection lost while it was in flight), not only when it provably never reached a handler.
/// It is never retried once answered. On a notification or a streaming method, which are
/// never retried, it is an error; it takes no arguments.
///
/// A method is identified on the wire by its name, so adding or reordering methods keeps older
/// clients working. `#[rpc(name = "getKeys")]` (any kind attribute takes `name = "..."`)
/// gives a method another wire name, to keep the names of an API the service replaces. A method cannot be named `new`, `target`, `connection`, `clone` or
/// `SERVICE_NAME`: the generated client has items of those names.
///
/// # Options
///
/// * `name = "..."`: the service's wire name. Default: the trait's name.
/// * `crate = "..."`: the path generated code reaches the runtime through, for crates that
///   re-export it. Default: the name the crate's Cargo.toml gives the `dep2p-runtime` package
///   (so a renamed dependency needs no option), else `::dep2p_runtime`.
///
/// * `client = "..."`, `server = "..."`: the names of the generated client and server, for a
///   module where the defaults are taken. Default: `{Trait}Client` and `{Trait}Server`.
///
/// # What is generated
///
/// * The trait itself, kind attributes and `#[idempotent]` removed, each `async fn` declared as a `fn` returning
///   `impl Future + Send`, with `Send + Sync + 'static` supertraits: implementors still write
///   `async fn`, and the server can run the handlers on any thread.
/// * `{Trait}Client`: cheap to clone, built from a connection with `new` (or `with_name`, to
///   call an instance served under another name with the runtime's `Renamed`); one method per trait
///   method, taking the non-stream arguments and returning the runtime's call builder; also
///   `connection()` and `SERVICE_NAME`.
/// * `{Trait}Server<S>`: wraps an implementation `S` (`new`, `from_arc`) and implements the
///   runtime's `Service`.
///
/// Docs and `#[cfg]`s on a method carry over to its client method and server route;
/// `#[deprecated]`, `#[must_use]` and `#[allow]` to its client method, `#[expect]` as
/// `#[allow]`. A `#[deprecated]` trait makes the client and server types deprecated. The
/// generated code allows deprecation inside itself, the trait allows `dead_code` (a program
/// that only calls it never names it), and its rewritten methods `clippy::type_complexity`.
///
/// # Generic traits
///
/// Type and const parameters on the trait are supported: `trait Store<K, V>` gives
/// `StoreClient<K, V>` and `StoreServer<S, K, V>`. Their impls carry the trait's bounds, and
/// each type parameter that appears in a message type is additionally bound by
/// `Serialize + DeserializeOwned + Send + 'static` (the others by `'static`). Lifetime
/// parameters are rejected: messages are owned. Methods cannot have generic parameters of
/// their own.
///
/// # Errors
///
/// Every mistake is reported in one compile, at the code in question. The trait itself is
/// still emitted, so code that uses it keeps compiling.
#[proc_macro_attribute]
pub fn service(
    args: proc_macro::TokenStream,
    item: proc_macro::TokenStream,
) -> proc_macro::TokenStream {
    expand::service(args.into(), item.into()).into()
}
