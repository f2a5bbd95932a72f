//! The rules a `#[service]` trait must follow, one function per rule. Every rule runs and
//! records its errors, so one compile reports every mistake, each at the user's code.

use std::collections::HashMap;

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::{GenericArgument, GenericParam, Meta, Pat, PathArguments, ReturnType, TraitItem, Type};

use crate::errors::Errors;
use crate::model::{stream_role, Kind, Method, Role, Service};
use crate::symbol::{CLIENT_RESERVED, IDEMPOTENT, RECEIVER, SENDER};

/// Checks the whole service.
pub(crate) fn validate(service: &Service<'_>, errors: &mut Errors) {
    no_lifetime_parameters(service, errors);
    only_methods(service, errors);
    for method in &service.methods {
        method_is_async(method, errors);
        no_qualifiers(method, errors);
        receiver_is_shared_ref(method, errors);
        no_method_generics(method, errors);
        no_misspelled_attrs(method, errors);
        no_stream_end_returned(method, errors);
        no_self_in_messages(method, errors);
        no_default_body(method, errors);
        arguments_are_named(method, errors);
        types_are_owned(method, errors);
        kind_attribute_has_no_arguments(method, errors);
        one_kind_per_method(method, errors);
        notify_returns_nothing(method, errors);
        idempotent_only_on_rpc(method, errors);
        stream_ends_match_kind(method, errors);
    }
    unique_method_names(service, errors);
    no_clash_with_client_items(service, errors);
    generated_names_are_distinct(service, errors);
}

/// The trait, its client and its server are three items of one module: `client = "..."` and
/// `server = "..."` cannot give two of them the same name.
fn generated_names_are_distinct(service: &Service<'_>, errors: &mut Errors) {
    let (client, server) = (service.client_ident(), service.server_ident());
    let trait_name = service.ident().unraw();
    if client == trait_name {
        errors.spanned(
            &client,
            format_args!("the generated client would have the trait's name, `{client}`"),
        );
    }
    if server == trait_name {
        errors.spanned(
            &server,
            format_args!("the generated server would have the trait's name, `{server}`"),
        );
    }
    if client == server {
        let at = match &service.options.server {
            Some(ident) => ident.clone(),
            None => client.clone(),
        };
        errors.spanned(
            at,
            format_args!("the generated client and server would both be named `{client}`"),
        );
    }
}

/// Messages are owned values, so the trait cannot borrow anything.
fn no_lifetime_parameters(service: &Service<'_>, errors: &mut Errors) {
    for param in &service.item.generics.params {
        if let GenericParam::Lifetime(lifetime) = param {
            errors.spanned(
                lifetime,
                "a #[service] trait cannot have lifetime parameters: messages are owned values",
            );
        }
    }
}

/// A service is a set of methods; associated consts, types and macros have no meaning on
/// the wire.
fn only_methods(service: &Service<'_>, errors: &mut Errors) {
    for item in &service.other_items {
        let what = match item {
            TraitItem::Const(_) => "associated consts",
            TraitItem::Type(_) => "associated types",
            TraitItem::Macro(_) => "macro invocations",
            _ => "items other than methods",
        };
        errors.spanned(
            item,
            format_args!("a #[service] trait contains only `async fn` methods, not {what}"),
        );
    }
}

fn method_is_async(method: &Method<'_>, errors: &mut Errors) {
    let sig = &method.item.sig;
    if sig.asyncness.is_none() {
        let fn_token = &sig.fn_token;
        let ident = &sig.ident;
        errors.spanned(
            quote::quote!(#fn_token #ident),
            "methods of a #[service] trait must be `async fn`",
        );
    }
}

fn no_qualifiers(method: &Method<'_>, errors: &mut Errors) {
    let sig = &method.item.sig;
    if let Some(token) = &sig.constness {
        errors.spanned(token, "service methods cannot be `const`");
    }
    if let Some(token) = &sig.unsafety {
        errors.spanned(token, "service methods cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        errors.spanned(abi, "service methods cannot declare an ABI");
    }
    if let Some(variadic) = &sig.variadic {
        errors.spanned(variadic, "service methods cannot be variadic");
    }
}

/// `&self`: the server shares one implementation between concurrent calls.
fn receiver_is_shared_ref(method: &Method<'_>, errors: &mut Errors) {
    const WHY: &str = "the server shares one implementation between concurrent calls";
    match method.receiver {
        None => errors.at(
            method.item.sig.paren_token.span.join(),
            format_args!("service methods take `&self` as their first parameter: {WHY}"),
        ),
        Some(receiver) => {
            let shared_ref = match &*receiver.ty {
                Type::Reference(reference) => {
                    reference.mutability.is_none()
                        && matches!(&*reference.elem, Type::Path(path) if path.qself.is_none() && path.path.is_ident("Self"))
                }
                _ => false,
            };
            if !shared_ref {
                errors.spanned(receiver, format_args!("expected `&self`: {WHY}"));
            }
        }
    }
}

fn no_method_generics(method: &Method<'_>, errors: &mut Errors) {
    let generics = &method.item.sig.generics;
    if !generics.params.is_empty() {
        errors.spanned(
            generics,
            "service methods cannot be generic: each method has fixed message types \
             (type parameters can be declared on the trait)",
        );
    }
    if let Some(where_clause) = &generics.where_clause {
        errors.spanned(
            where_clause,
            "service methods cannot have a `where` clause: every method is served by the \
             generated server, so none can be left out by a bound (bounds can be declared on \
             the trait)",
        );
    }
}

/// Attributes the macro reads, misspelled: said so here rather than left for the compiler's
/// "cannot find attribute", which does not suggest the right name.
fn no_misspelled_attrs(method: &Method<'_>, errors: &mut Errors) {
    for attr in &method.item.attrs {
        if let Some(meant) = Method::misspelled(attr) {
            errors.spanned(
                attr.path(),
                format_args!(
                    "unknown attribute `#[{}]`: did you mean `#[{meant}]`?",
                    attr.path().to_token_stream()
                ),
            );
        }
    }
}

/// A stream end is a parameter of the handler, not a value that travels.
fn no_stream_end_returned(method: &Method<'_>, errors: &mut Errors) {
    let Some(output) = method.output else {
        return;
    };
    let message = match stream_role(output) {
        Role::Message => return,
        Role::Sender(_) => {
            "a method cannot return a `Sender<T>`: a `#[client_stream]` or `#[bidi]` method \
             takes a `Receiver<T>` parameter to receive the caller's stream on"
        }
        Role::Receiver(_) => {
            "a method cannot return a `Receiver<T>`: a `#[server_stream]` or `#[bidi]` method \
             takes a `Sender<T>` parameter and sends the stream on it"
        }
    };
    errors.spanned(output, message);
}

/// `Self` is the implementation, which the client does not know: a message names its type.
fn no_self_in_messages(method: &Method<'_>, errors: &mut Errors) {
    let types = method.args.iter().map(|arg| arg.ty).chain(method.output);
    for ty in types {
        if let Some(self_ty) = find_self(ty.to_token_stream()) {
            errors.at(
                self_ty.span(),
                "`Self` cannot appear in a message type: the implementation is not known to the \
                 client; name the type",
            );
        }
    }
}

fn find_self(tokens: TokenStream) -> Option<proc_macro2::Ident> {
    tokens.into_iter().find_map(|token| match token {
        TokenTree::Ident(ident) if ident == "Self" => Some(ident),
        TokenTree::Group(group) => find_self(group.stream()),
        _ => None,
    })
}

fn no_default_body(method: &Method<'_>, errors: &mut Errors) {
    if let Some(body) = &method.item.default {
        errors.at(
            body.brace_token.span.join(),
            "service methods have no default body: the server's implementation provides it",
        );
    }
}

/// The generated client method takes each argument by its name.
fn arguments_are_named(method: &Method<'_>, errors: &mut Errors) {
    for arg in &method.args {
        let plain = match &*arg.syntax.pat {
            Pat::Ident(pat) => {
                pat.by_ref.is_none() && pat.mutability.is_none() && pat.subpat.is_none()
            }
            Pat::Wild(_) => true,
            _ => false,
        };
        if !plain {
            errors.spanned(
                &arg.syntax.pat,
                "service method arguments must be plain names (e.g. `user: User`), not patterns",
            );
        }
    }
}

/// Every argument, stream item and return value crosses the network, so none can borrow.
fn types_are_owned(method: &Method<'_>, errors: &mut Errors) {
    for arg in &method.args {
        borrowed_types(arg.ty, errors);
    }
    if let ReturnType::Type(_, ty) = &method.item.sig.output {
        borrowed_types(ty, errors);
    }
}

fn borrowed_types(ty: &Type, errors: &mut Errors) {
    match ty {
        Type::Reference(reference) => errors.spanned(
            reference,
            "messages are sent over the network and must be owned: use an owned type \
             (e.g. `String` for `&str`, `Vec<T>` for `&[T]`)",
        ),
        Type::ImplTrait(impl_trait) => errors.spanned(
            impl_trait,
            "`impl Trait` cannot be sent over the network: use a concrete type",
        ),
        Type::Array(array) => borrowed_types(&array.elem, errors),
        Type::Group(group) => borrowed_types(&group.elem, errors),
        Type::Paren(paren) => borrowed_types(&paren.elem, errors),
        Type::Slice(slice) => borrowed_types(&slice.elem, errors),
        Type::Tuple(tuple) => tuple.elems.iter().for_each(|e| borrowed_types(e, errors)),
        Type::Path(path) => {
            for segment in &path.path.segments {
                if let PathArguments::AngleBracketed(args) = &segment.arguments {
                    for arg in &args.args {
                        if let GenericArgument::Type(ty) = arg {
                            borrowed_types(ty, errors);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// A kind attribute is bare or names the method on the wire: `#[rpc(name = "getKeys")]`.
fn kind_attribute_has_no_arguments(method: &Method<'_>, errors: &mut Errors) {
    for kind_attr in &method.kind_attrs {
        if matches!(kind_attr.attr.meta, Meta::Path(_)) {
            continue;
        }
        let attr = kind_attr.kind.attr_name();
        match kind_attr.name() {
            Some(name) if name.value().is_empty() => {
                errors.spanned(&name, "the method's wire name must not be empty");
            }
            Some(_) => {}
            None => errors.spanned(
                &kind_attr.attr.meta,
                format_args!(
                    "`#[{attr}]` takes no arguments but the method's wire name: \
                     `#[{attr}(name = \"...\")]`"
                ),
            ),
        }
    }
}

fn one_kind_per_method(method: &Method<'_>, errors: &mut Errors) {
    let Some((first, rest)) = method.kind_attrs.split_first() else {
        return;
    };
    for extra in rest {
        let message = if extra.kind == first.kind {
            format!("duplicate `#[{}]`", extra.kind.attr_name())
        } else {
            format!(
                "a method has one kind: `#[{}]` conflicts with `#[{}]`",
                extra.kind.attr_name(),
                first.kind.attr_name()
            )
        };
        errors.spanned(extra.attr, message);
    }
}

/// `#[idempotent]` lets a request-response call be retried after a transport failure; the
/// other kinds are never retried. It takes no arguments and is written once.
fn idempotent_only_on_rpc(method: &Method<'_>, errors: &mut Errors) {
    let Some((first, rest)) = method.idempotent_attrs.split_first() else {
        return;
    };
    if !matches!(first.meta, Meta::Path(_)) {
        errors.spanned(
            &first.meta,
            format_args!("`#[{IDEMPOTENT}]` takes no arguments"),
        );
    }
    for extra in rest {
        errors.spanned(extra, format_args!("duplicate `#[{IDEMPOTENT}]`"));
    }
    // With several kinds, `one_kind_per_method` reports the method.
    if method.kind_attrs.len() > 1 || method.kind() == Kind::Rpc {
        return;
    }
    errors.spanned(
        first,
        format_args!(
            "`#[{IDEMPOTENT}]` applies to request-response methods only: a `#[{}]` call is \
             never retried",
            method.kind().attr_name()
        ),
    );
}

/// A notification or a datagram has no response, so nothing could carry a return value.
fn notify_returns_nothing(method: &Method<'_>, errors: &mut Errors) {
    let kind = method.kind();
    if method.kind_attrs.len() > 1 || !matches!(kind, Kind::Notify | Kind::Datagram) {
        return;
    }
    if let Some(output) = method.output {
        let unit = matches!(output, Type::Tuple(tuple) if tuple.elems.is_empty());
        if !unit {
            errors.spanned(
                output,
                format_args!(
                    "`#[{}]` methods return nothing: no response is sent \
                     (use a request-response method to get a value back)",
                    kind.attr_name()
                ),
            );
        }
    }
}

/// Each kind takes exactly the stream ends it uses: `#[server_stream]` one `Sender<T>`,
/// `#[client_stream]` one `Receiver<T>`, `#[bidi]` one of each, the others none.
fn stream_ends_match_kind(method: &Method<'_>, errors: &mut Errors) {
    if method.kind_attrs.len() > 1
        || method
            .item
            .attrs
            .iter()
            .any(|a| Method::misspelled(a).is_some())
    {
        // The kind is unclear: `one_kind_per_method` or `no_misspelled_attrs` reports it.
        return;
    }
    let kind = method.kind();
    let mut senders = 0;
    let mut receivers = 0;
    for arg in &method.args {
        let (end, allowed, seen) = match arg.role {
            Role::Message => continue,
            Role::Sender(_) => (SENDER, kind.has_sender(), &mut senders),
            Role::Receiver(_) => (RECEIVER, kind.has_receiver(), &mut receivers),
        };
        *seen += 1;
        if !allowed {
            errors.spanned(
                arg.ty,
                format_args!(
                    "a `{end}<T>` parameter needs {}; this method is {}",
                    methods_with(end),
                    describe(kind)
                ),
            );
        } else if *seen > 1 {
            errors.spanned(
                arg.ty,
                format_args!("a method takes at most one `{end}<T>` parameter"),
            );
        }
    }
    let missing = [
        (kind.has_sender() && senders == 0, SENDER, "send"),
        (kind.has_receiver() && receivers == 0, RECEIVER, "receive"),
    ];
    for (is_missing, end, verb) in missing {
        if is_missing {
            let message = format!(
                "`#[{}]` methods take a `{end}<T>` parameter to {verb} the stream on",
                kind.attr_name()
            );
            match method.kind_attrs.first() {
                Some(kind_attr) => errors.spanned(kind_attr.attr, message),
                None => errors.spanned(&method.item.sig.ident, message),
            }
        }
    }
}

fn methods_with(end: &str) -> &'static str {
    if end == SENDER {
        "`#[server_stream]` or `#[bidi]`"
    } else {
        "`#[client_stream]` or `#[bidi]`"
    }
}

fn describe(kind: Kind) -> &'static str {
    match kind {
        Kind::Rpc => "request-response (the default kind)",
        Kind::Notify => "`#[notify]`",
        Kind::ServerStream => "`#[server_stream]`",
        Kind::ClientStream => "`#[client_stream]`",
        Kind::Bidi => "`#[bidi]`",
        Kind::Datagram => "`#[datagram]`",
    }
}

/// Methods are identified on the wire by name, so names must be unique.
fn unique_method_names(service: &Service<'_>, errors: &mut Errors) {
    let mut seen = HashMap::new();
    for method in &service.methods {
        let name = method.wire_name();
        if seen.insert(name.clone(), method.ident()).is_some() {
            let at = match method.kind_attrs.first().and_then(|attr| attr.name()) {
                Some(lit) => lit.to_token_stream(),
                None => method.ident().to_token_stream(),
            };
            errors.spanned(
                at,
                format_args!(
                    "duplicate method `{name}`: methods are identified on the wire by name"
                ),
            );
        }
    }
}

/// The generated client has inherent items of its own; a method of the same name would
/// clash with them.
fn no_clash_with_client_items(service: &Service<'_>, errors: &mut Errors) {
    for method in &service.methods {
        let name = method.ident().unraw().to_string();
        if let Some((_, clash)) = CLIENT_RESERVED
            .iter()
            .find(|(reserved, _)| *reserved == name)
        {
            let client = service.client_ident().to_string();
            errors.spanned(
                method.ident(),
                format_args!(
                    "a method named `{name}` {}; rename the method",
                    clash.replace("{client}", &client)
                ),
            );
        }
    }
}
