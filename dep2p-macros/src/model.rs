//! What generation needs to know about a service: one value for the service and one per
//! method. The model borrows the parsed syntax, so every error can point at the user's code.
//! Building it never fails; whatever is wrong is left for `validate` to report.

use proc_macro2::{Span, TokenStream};
use proc_macro_crate::FoundCrate;
use quote::{format_ident, quote, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemTrait, LitStr, Meta, Pat, PatType, PathArguments,
    Receiver, ReturnType, TraitItem, TraitItemFn, Type,
};

use crate::parse::Options;
use crate::symbol::{
    BIDI, CARRIED_ATTRS, CLIENT_STREAM, COMPILER_ATTRS, DATAGRAM, DEFAULT_CRATE, IDEMPOTENT,
    NOTIFY, NOT_STREAM_ENDS, OPT_NAME, RECEIVER, RPC, RUNTIME_PACKAGE, SENDER, SERVER_STREAM,
};

/// A `#[service]` trait.
pub(crate) struct Service<'a> {
    /// The trait as the user wrote it.
    pub(crate) item: &'a ItemTrait,
    pub(crate) options: Options,
    /// The `fn` items of the trait, in declaration order.
    pub(crate) methods: Vec<Method<'a>>,
    /// Every other trait item (consts, types, macros); a service has none.
    pub(crate) other_items: Vec<&'a TraitItem>,
}

/// One method of the service.
pub(crate) struct Method<'a> {
    /// The method as the user wrote it.
    pub(crate) item: &'a TraitItemFn,
    /// Every kind attribute on the method, in order; a valid method has at most one.
    pub(crate) kind_attrs: Vec<KindAttr<'a>>,
    /// Every `#[idempotent]` on the method, in order; a valid method has at most one, and
    /// only on a request-response method.
    pub(crate) idempotent_attrs: Vec<&'a Attribute>,
    /// The `self` parameter, if any.
    pub(crate) receiver: Option<&'a Receiver>,
    /// Every parameter after the receiver, in declaration order.
    pub(crate) args: Vec<Arg<'a>>,
    /// The declared return type, if any (`-> ()` counts as a return type here).
    pub(crate) output: Option<&'a Type>,
}

/// A kind attribute found on a method.
pub(crate) struct KindAttr<'a> {
    pub(crate) kind: Kind,
    pub(crate) attr: &'a Attribute,
}

impl KindAttr<'_> {
    /// `name = "..."` in `#[rpc(name = "...")]`, if the attribute has that form (anything
    /// else is reported by validation).
    pub(crate) fn name(&self) -> Option<LitStr> {
        let Meta::List(list) = &self.attr.meta else {
            return None;
        };
        let name_value = list.parse_args::<syn::MetaNameValue>().ok()?;
        if !name_value.path.is_ident(OPT_NAME) {
            return None;
        }
        match name_value.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(lit),
                ..
            }) => Some(lit),
            _ => None,
        }
    }
}

/// How a method's call is carried.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    /// One request, one response.
    Rpc,
    /// One request, no response.
    Notify,
    /// One request, a stream of responses (the handler holds a `Sender`).
    ServerStream,
    /// A stream of requests, one response (the handler holds a `Receiver`).
    ClientStream,
    /// Both directions (the handler holds a `Receiver` and a `Sender`).
    Bidi,
    /// One unreliable QUIC datagram, no response.
    Datagram,
}

/// A parameter of a method (other than the receiver).
pub(crate) struct Arg<'a> {
    pub(crate) syntax: &'a PatType,
    /// The name the generated code binds the argument to.
    pub(crate) binding: Ident,
    pub(crate) ty: &'a Type,
    pub(crate) role: Role<'a>,
}

/// What a parameter carries.
#[derive(Clone, Copy)]
pub(crate) enum Role<'a> {
    /// A message sent with the request.
    Message,
    /// `Sender<T>`: the handler sends a stream of `T`.
    Sender(&'a Type),
    /// `Receiver<T>`: the handler receives a stream of `T`.
    Receiver(&'a Type),
}

impl Kind {
    /// Every kind, with the attribute that selects it.
    pub(crate) const ALL: [(Kind, &'static str); 6] = [
        (Kind::Rpc, RPC),
        (Kind::Notify, NOTIFY),
        (Kind::ServerStream, SERVER_STREAM),
        (Kind::ClientStream, CLIENT_STREAM),
        (Kind::Bidi, BIDI),
        (Kind::Datagram, DATAGRAM),
    ];

    /// The attribute that selects this kind.
    pub(crate) fn attr_name(self) -> &'static str {
        Kind::ALL
            .iter()
            .find(|(kind, _)| *kind == self)
            .map_or(RPC, |(_, name)| name)
    }

    fn from_attr(attr: &Attribute) -> Option<Kind> {
        Kind::ALL
            .iter()
            .find(|(_, name)| attr.path().is_ident(name))
            .map(|(kind, _)| *kind)
    }

    /// Whether the handler of this kind takes a `Sender<T>`.
    pub(crate) fn has_sender(self) -> bool {
        matches!(self, Kind::ServerStream | Kind::Bidi)
    }

    /// Whether the handler of this kind takes a `Receiver<T>`.
    pub(crate) fn has_receiver(self) -> bool {
        matches!(self, Kind::ClientStream | Kind::Bidi)
    }
}

impl<'a> Service<'a> {
    pub(crate) fn from_syntax(item: &'a ItemTrait, options: Options) -> Self {
        let mut methods = Vec::new();
        let mut other_items = Vec::new();
        for trait_item in &item.items {
            match trait_item {
                TraitItem::Fn(method) => methods.push(Method::from_syntax(method)),
                other => other_items.push(other),
            }
        }
        Service {
            item,
            options,
            methods,
            other_items,
        }
    }

    pub(crate) fn ident(&self) -> &'a Ident {
        &self.item.ident
    }

    /// The service's name on the wire: `name = "..."`, or the trait's identifier.
    pub(crate) fn wire_name(&self) -> String {
        match &self.options.name {
            Some(name) => name.value(),
            None => self.item.ident.unraw().to_string(),
        }
    }

    /// The generated client's name: `client = "..."`, or `{Trait}Client`.
    pub(crate) fn client_ident(&self) -> Ident {
        match &self.options.client {
            Some(ident) => ident.clone(),
            None => format_ident!("{}Client", self.item.ident.unraw()),
        }
    }

    /// The generated server's name: `server = "..."`, or `{Trait}Server`.
    pub(crate) fn server_ident(&self) -> Ident {
        match &self.options.server {
            Some(ident) => ident.clone(),
            None => format_ident!("{}Server", self.item.ident.unraw()),
        }
    }

    /// The path generated code reaches the runtime through.
    pub(crate) fn krate(&self) -> TokenStream {
        match &self.options.krate {
            Some(path) => path.to_token_stream(),
            None => {
                // The name the user's Cargo.toml gives the runtime, so that a renamed
                // dependency (`rpc = { package = "dep2p-runtime" }`) works without
                // `crate = "..."`. Not found (e.g. reached through a re-export): the default.
                let name = match proc_macro_crate::crate_name(RUNTIME_PACKAGE) {
                    Ok(FoundCrate::Name(name)) => name,
                    Ok(FoundCrate::Itself) | Err(_) => DEFAULT_CRATE.to_owned(),
                };
                let ident = Ident::new(&name, Span::call_site());
                quote!(::#ident)
            }
        }
    }

    /// The trait's `#[deprecated]`, which the client and server types carry too.
    pub(crate) fn deprecated(&self) -> Option<&'a Attribute> {
        self.item
            .attrs
            .iter()
            .find(|attr| attr.path().is_ident("deprecated"))
    }

    /// Whether `ident` names one of the trait's type parameters.
    pub(crate) fn is_type_param(&self, ident: &Ident) -> bool {
        self.item
            .generics
            .type_params()
            .any(|param| param.ident == *ident)
    }
}

impl<'a> Method<'a> {
    fn from_syntax(item: &'a TraitItemFn) -> Self {
        let kind_attrs: Vec<KindAttr<'a>> = item
            .attrs
            .iter()
            .filter_map(|attr| Kind::from_attr(attr).map(|kind| KindAttr { kind, attr }))
            .collect();
        let idempotent_attrs = item
            .attrs
            .iter()
            .filter(|attr| attr.path().is_ident(IDEMPOTENT))
            .collect();
        let mut receiver = None;
        let mut args = Vec::new();
        for (index, input) in item.sig.inputs.iter().enumerate() {
            match input {
                FnArg::Receiver(r) => receiver = Some(r),
                FnArg::Typed(syntax) => args.push(Arg::from_syntax(syntax, index)),
            }
        }
        assign_stream_ends(&kind_attrs, &mut args);
        let output = match &item.sig.output {
            ReturnType::Default => None,
            ReturnType::Type(_, ty) => Some(&**ty),
        };
        Method {
            item,
            kind_attrs,
            idempotent_attrs,
            receiver,
            args,
            output,
        }
    }

    pub(crate) fn ident(&self) -> &'a Ident {
        &self.item.sig.ident
    }

    /// The method's name on the wire: `#[rpc(name = "...")]` (or another kind's), else its
    /// identifier, so that adding or reordering methods keeps old clients working.
    pub(crate) fn wire_name(&self) -> String {
        match self.kind_attrs.first().and_then(KindAttr::name) {
            Some(name) => name.value(),
            None => self.item.sig.ident.unraw().to_string(),
        }
    }

    /// The kind chosen by the (first) kind attribute; request-response without one.
    pub(crate) fn kind(&self) -> Kind {
        self.kind_attrs.first().map_or(Kind::Rpc, |attr| attr.kind)
    }

    /// Whether the method is marked `#[idempotent]`: its calls may be retried after a
    /// transport failure.
    pub(crate) fn is_idempotent(&self) -> bool {
        !self.idempotent_attrs.is_empty()
    }

    /// Whether `attr` is one the macro reads on a method (and removes from the trait it
    /// emits): a kind, or `#[idempotent]`.
    pub(crate) fn is_method_attr(attr: &Attribute) -> bool {
        Kind::from_attr(attr).is_some()
            || attr.path().is_ident(IDEMPOTENT)
            || Method::misspelled(attr).is_some()
    }

    /// The attribute the macro reads that `attr` looks like a misspelling of, if any: a name
    /// within a third of its length in edits (`#[server_streaming]`, `#[idempotnet]`).
    pub(crate) fn misspelled(attr: &Attribute) -> Option<&'static str> {
        let ident = attr.path().get_ident()?.to_string();
        if COMPILER_ATTRS.contains(&ident.as_str()) {
            return None;
        }
        Kind::ALL
            .iter()
            .map(|(_, name)| *name)
            .chain([IDEMPOTENT])
            .filter(|name| *name != ident)
            .map(|name| (edit_distance(&ident, name), name))
            .filter(|(distance, name)| *distance <= name.len() / 3)
            .min_by_key(|(distance, _)| *distance)
            .map(|(_, name)| name)
    }

    /// The attributes the client method carries over from the trait method: docs (with
    /// `#[doc(alias)]`), `#[cfg]`s, `#[deprecated]`, `#[must_use]` and lint levels. An
    /// `#[expect(...)]` becomes an `#[allow(...)]`: the client method need not trip the lint the
    /// trait method does.
    pub(crate) fn client_attrs(&self) -> impl Iterator<Item = TokenStream> + 'a {
        self.item.attrs.iter().filter_map(|attr| {
            let path = attr.path();
            if path.is_ident("expect") {
                let Meta::List(list) = &attr.meta else {
                    return None;
                };
                let lints = &list.tokens;
                let allow = Ident::new("allow", list.path.span());
                Some(quote!(#[#allow(#lints)]))
            } else if CARRIED_ATTRS.iter().any(|name| path.is_ident(name)) {
                Some(attr.to_token_stream())
            } else {
                None
            }
        })
    }

    /// The `#[cfg]`s of this method.
    pub(crate) fn cfgs(&self) -> impl Iterator<Item = &'a Attribute> {
        self.item
            .attrs
            .iter()
            .filter(|attr| attr.path().is_ident("cfg"))
    }

    /// Whether the user documented the method.
    pub(crate) fn has_docs(&self) -> bool {
        self.item
            .attrs
            .iter()
            .any(|attr| attr.path().is_ident("doc"))
    }

    /// The arguments sent with the request, in declaration order.
    pub(crate) fn messages(&self) -> impl Iterator<Item = &Arg<'a>> {
        self.args
            .iter()
            .filter(|arg| matches!(arg.role, Role::Message))
    }

    /// The item type of the `Sender<T>` parameter, if any.
    pub(crate) fn sender_item(&self) -> Option<&'a Type> {
        self.args.iter().find_map(|arg| match arg.role {
            Role::Sender(item) => Some(item),
            _ => None,
        })
    }

    /// The item type of the `Receiver<T>` parameter, if any.
    pub(crate) fn receiver_item(&self) -> Option<&'a Type> {
        self.args.iter().find_map(|arg| match arg.role {
            Role::Receiver(item) => Some(item),
            _ => None,
        })
    }
}

impl<'a> Arg<'a> {
    fn from_syntax(syntax: &'a PatType, index: usize) -> Self {
        let binding = match &*syntax.pat {
            Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => pat.ident.clone(),
            // `_` and patterns (rejected by validation) get a generated name.
            // Mixed-site hygiene: it cannot clash with an argument named `__arg2`.
            other => format_ident!(
                "__arg{}",
                index,
                span = Span::mixed_site().located_at(other.span())
            ),
        };
        Arg {
            syntax,
            binding,
            ty: &syntax.ty,
            role: stream_role(&syntax.ty),
        }
    }
}

/// Which parameters are stream ends, decided by the kind: a request-response method or a
/// notification has none, so a message type of the application's named `Sender<T>` is a
/// message there. A streaming method has the ends its kind says: each is the parameter
/// spelled `Sender<T>` / `Receiver<T>` (any path), or else, for a type spelled otherwise (an
/// alias such as `Tx<T>`), the last parameter of the form `X<T>` not already an end, the
/// `Sender` last and the `Receiver` before it. The compiler then checks that the type is the
/// runtime's stream end.
fn assign_stream_ends(kind_attrs: &[KindAttr<'_>], args: &mut [Arg<'_>]) {
    let kind = match kind_attrs {
        [] => Kind::Rpc,
        [one] => one.kind,
        // The kind is unclear (reported by validation): stream ends by their spelling.
        _ => return,
    };
    if !kind.has_sender() && !kind.has_receiver() {
        for arg in args.iter_mut() {
            arg.role = Role::Message;
        }
        return;
    }
    let has = |args: &[Arg<'_>], sender: bool| {
        args.iter().any(|arg| match arg.role {
            Role::Sender(_) => sender,
            Role::Receiver(_) => !sender,
            Role::Message => false,
        })
    };
    for sender in [true, false] {
        let needed = if sender {
            kind.has_sender()
        } else {
            kind.has_receiver()
        };
        if !needed || has(args, sender) {
            continue;
        }
        let candidate = args
            .iter_mut()
            .rev()
            .find(|arg| matches!(arg.role, Role::Message) && may_be_stream_end(arg.ty));
        if let Some(arg) = candidate {
            if let Some(item) = stream_item(arg.ty) {
                arg.role = if sender {
                    Role::Sender(item)
                } else {
                    Role::Receiver(item)
                };
            }
        }
    }
}

/// `Sender<T>` or `Receiver<T>`, recognised by the last path segment and its one type argument.
pub(crate) fn stream_role(ty: &Type) -> Role<'_> {
    let Type::Path(path) = ty else {
        return Role::Message;
    };
    let (Some(last), Some(item)) = (path.path.segments.last(), stream_item(ty)) else {
        return Role::Message;
    };
    if last.ident == SENDER {
        Role::Sender(item)
    } else if last.ident == RECEIVER {
        Role::Receiver(item)
    } else {
        Role::Message
    }
}

/// Whether `ty` may be a stream end spelled otherwise: of the form `X<T>`, `X` not a standard
/// container.
fn may_be_stream_end(ty: &Type) -> bool {
    let Type::Path(path) = ty else {
        return false;
    };
    let standard = path
        .path
        .segments
        .last()
        .is_some_and(|last| NOT_STREAM_ENDS.iter().any(|name| last.ident == name));
    !standard && stream_item(ty).is_some()
}

/// `T` in a type of the form `X<T>` (a path whose last segment has one type argument).
fn stream_item(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else {
        return None;
    };
    if path.qself.is_some() {
        return None;
    }
    let PathArguments::AngleBracketed(generics) = &path.path.segments.last()?.arguments else {
        return None;
    };
    let mut types = generics.args.iter();
    match (types.next(), types.next()) {
        (Some(GenericArgument::Type(item)), None) => Some(item),
        _ => None,
    }
}

/// Levenshtein distance between two names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}
