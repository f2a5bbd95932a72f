//! Emits the items of a valid service, one function per item.

mod checks;
mod client;
mod params;
mod server;
mod trait_def;

use proc_macro2::{Group, Ident, Span, TokenStream, TokenTree};
use quote::{quote, ToTokens};

use std::collections::HashSet;

use syn::Type;

use crate::model::{Method, Role, Service};
use params::Params;

pub(crate) use trait_def::fallback;

/// Everything `#[service]` emits for a valid trait.
pub(crate) fn service(service: &Service<'_>) -> TokenStream {
    let cx = Cx::new(service);
    let trait_def = trait_def::trait_def(service.item);
    let client = client::client(&cx);
    let server = server::server(&cx);
    let checks = checks::checks(&cx);
    // The checks come first: their errors, at the user's types, are then reported first.
    quote! {
        #trait_def
        #checks
        #client
        #server
    }
}

/// What every generator needs.
struct Cx<'a> {
    service: &'a Service<'a>,
    /// Path of the runtime's hidden module: `::dep2p_runtime::__private`.
    private: TokenStream,
    krate: TokenStream,
    params: Params<'a>,
    client: Ident,
    server: Ident,
}

impl<'a> Cx<'a> {
    fn new(service: &'a Service<'a>) -> Self {
        let krate = service.krate();
        Cx {
            service,
            private: quote!(#krate::__private),
            krate,
            params: Params::new(service),
            client: service.client_ident(),
            server: service.server_ident(),
        }
    }

    /// The trait, with its generic arguments: `Chat`, `Store<K, V>`.
    fn trait_path(&self) -> TokenStream {
        let ident = self.service.ident();
        let args = self.params.args(None);
        quote!(#ident #args)
    }
}

/// `(a, b)`, `(a,)` or `()`: for patterns, expressions and types alike.
fn tuple<T: ToTokens>(items: impl IntoIterator<Item = T>) -> TokenStream {
    let items: Vec<T> = items.into_iter().collect();
    match items.as_slice() {
        [one] => quote!((#one,)),
        items => quote!((#(#items),*)),
    }
}

/// The type of the arguments sent with a method's request: `(String, u32)`.
fn args_type(method: &Method<'_>) -> TokenStream {
    tuple(method.messages().map(|arg| arg.ty))
}

/// Every type a method's messages have, once each, in declaration order: the arguments sent
/// with the request, the stream items, the response.
fn message_types<'a>(method: &Method<'a>) -> Vec<&'a Type> {
    let mut seen = HashSet::new();
    method
        .args
        .iter()
        .map(|arg| match arg.role {
            Role::Message => arg.ty,
            Role::Sender(item) | Role::Receiver(item) => item,
        })
        .chain(method.output)
        .filter(|ty| seen.insert(ty.to_token_stream().to_string()))
        .collect()
}

/// The method's response type as declared, `()` when it has none.
fn output_type(method: &Method<'_>) -> TokenStream {
    match method.output {
        Some(ty) => ty.to_token_stream(),
        None => quote!(()),
    }
}

/// `tokens` with every span located at `span`, each keeping its hygiene (a generated
/// variable stays distinct from the user's of the same name).
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(group) = &token {
                let mut respanned = Group::new(group.delimiter(), respan(group.stream(), span));
                respanned.set_span(span);
                token = TokenTree::Group(respanned);
            } else {
                token.set_span(token.span().located_at(span));
            }
            token
        })
        .collect()
}
