//! `{Trait}Server<S>`: routes incoming calls to an implementation of the trait.

use std::collections::HashSet;

use proc_macro2::{Ident, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, ToTokens};

use super::{args_type, message_types, tuple, Cx};
use crate::model::{Kind, Method, Role};

pub(super) fn server(cx: &Cx<'_>) -> TokenStream {
    let impl_param = impl_param(cx);
    let definition = definition(cx, &impl_param);
    let inherent = inherent(cx, &impl_param);
    let clone = clone(cx, &impl_param);
    let debug = debug(cx, &impl_param);
    let service = service_impl(cx, &impl_param);
    quote! {
        #definition
        #inherent
        #clone
        #debug
        #service
    }
}

/// The parameter naming the implementation: `S`, unless the trait already uses that name
/// anywhere (a type parameter, or a message type named `S`).
fn impl_param(cx: &Cx<'_>) -> Ident {
    let mut used = HashSet::new();
    collect_idents(cx.service.item.to_token_stream(), &mut used);
    ["S", "Svc", "__S", "__Dep2pService"]
        .iter()
        .map(|name| (*name).to_owned())
        .chain((2..).map(|n| format!("__Dep2pService{n}")))
        .find(|name| !used.contains(name))
        .map_or_else(|| format_ident!("S"), |name| format_ident!("{}", name))
}

fn collect_idents(tokens: TokenStream, used: &mut HashSet<String>) {
    for token in tokens {
        match token {
            TokenTree::Ident(ident) => {
                used.insert(ident.to_string());
            }
            TokenTree::Group(group) => collect_idents(group.stream(), used),
            _ => {}
        }
    }
}

fn definition(cx: &Cx<'_>, s: &Ident) -> TokenStream {
    let Cx {
        service,
        private,
        server,
        params,
        ..
    } = cx;
    let vis = &service.item.vis;
    let generics = params.decl(Some(s));
    let marker = params.phantom().map(|ty| quote!(marker: #ty,));
    let deprecated = service.deprecated();
    let doc = format!(
        " Serves an implementation `{s}` of [`{}`]: routes each incoming call to its method.",
        service.ident()
    );
    quote! {
        #[doc = #doc]
        ///
        /// Cheap to clone: clones share the implementation.
        #deprecated
        #vis struct #server #generics {
            inner: #private::Arc<#s>,
            #marker
        }
    }
}

fn inherent(cx: &Cx<'_>, s: &Ident) -> TokenStream {
    let Cx {
        service,
        private,
        krate,
        server,
        params,
        ..
    } = cx;
    let vis = &service.item.vis;
    let impl_params = params.impl_params(Some(s));
    let args = params.args(Some(s));
    let trait_path = cx.trait_path();
    let where_clause = params.where_clause(krate, Some(quote!(#s: #trait_path)));
    let marker = params
        .phantom()
        .map(|_| quote!(marker: ::core::marker::PhantomData,));
    quote! {
        #[automatically_derived]
        #[allow(deprecated)]
        impl #impl_params #server #args #where_clause {
            /// Serves `service`.
            #vis fn new(service: #s) -> Self {
                Self::from_arc(#private::Arc::new(service))
            }

            /// Serves an implementation shared with other code.
            #vis fn from_arc(service: ::std::sync::Arc<#s>) -> Self {
                Self { inner: service, #marker }
            }
        }
    }
}

fn clone(cx: &Cx<'_>, s: &Ident) -> TokenStream {
    let Cx { server, params, .. } = cx;
    let impl_params = params.impl_params(Some(s));
    let args = params.args(Some(s));
    let marker = params
        .phantom()
        .map(|_| quote!(marker: ::core::marker::PhantomData,));
    quote! {
        #[automatically_derived]
        #[allow(deprecated)]
        impl #impl_params ::core::clone::Clone for #server #args {
            fn clone(&self) -> Self {
                Self {
                    inner: ::core::clone::Clone::clone(&self.inner),
                    #marker
                }
            }
        }
    }
}

fn debug(cx: &Cx<'_>, s: &Ident) -> TokenStream {
    let Cx { server, params, .. } = cx;
    let impl_params = params.impl_params(Some(s));
    let args = params.args(Some(s));
    let name = server.to_string();
    quote! {
        #[automatically_derived]
        #[allow(deprecated)]
        impl #impl_params ::core::fmt::Debug for #server #args {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#name).finish_non_exhaustive()
            }
        }
    }
}

fn service_impl(cx: &Cx<'_>, s: &Ident) -> TokenStream {
    let Cx {
        service,
        private,
        krate,
        server,
        params,
        ..
    } = cx;
    let impl_params = params.impl_params(Some(s));
    let args = params.args(Some(s));
    let trait_path = cx.trait_path();
    // Every message type, assumed to be a message (see `__private::Checked`): one that is not
    // is reported once, by the checks, rather than again by the code below. A `#[cfg]`d
    // method's types may not exist, so they are left out.
    let mut seen = HashSet::new();
    let checked = service
        .methods
        .iter()
        .filter(|method| method.cfgs().next().is_none())
        .flat_map(message_types)
        .filter(|ty| seen.insert(ty.to_token_stream().to_string()))
        .map(|ty| quote!(#private::Checked<#s, #ty>: #private::Message));
    let where_clause = params.where_clause(krate, Some(quote!(#s: #trait_path #(, #checked)*)));
    let call = call_ident();
    let wire_name = service.wire_name();
    // Datagram methods are reached through `datagram`, never through a call.
    let (datagrams, calls): (Vec<&Method<'_>>, Vec<&Method<'_>>) = service
        .methods
        .iter()
        .partition(|method| method.kind() == Kind::Datagram);
    let arms = calls.iter().map(|method| arm(cx, s, method));
    let datagram_fn = (!datagrams.is_empty()).then(|| {
        let arms = datagrams.iter().map(|method| arm(cx, s, method));
        quote! {
            fn datagram(&self, #call: #private::IncomingDatagram) -> #private::CallFuture {
                match #call.method() {
                    #(#arms)*
                    _ => #call.unknown_method(),
                }
            }
        }
    });
    let infos = service.methods.iter().map(|method| method_info(cx, method));
    quote! {
        #[automatically_derived]
        #[allow(deprecated)]
        impl #impl_params #private::Service for #server #args #where_clause {
            fn name(&self) -> &str {
                #wire_name
            }

            fn call(&self, #call: #private::IncomingCall) -> #private::CallFuture {
                match #call.method() {
                    #(#arms)*
                    _ => #call.unknown_method(),
                }
            }

            fn methods(&self) -> &'static [#private::MethodInfo] {
                const __METHODS: &[#private::MethodInfo] = &[#(#infos),*];
                __METHODS
            }

            #datagram_fn
        }
    }
}

/// The description of one method the reflection service lists: its name and kind.
fn method_info(cx: &Cx<'_>, method: &Method<'_>) -> TokenStream {
    let private = &cx.private;
    let cfgs = method.cfgs();
    let wire_name = method.wire_name();
    let kind = format_ident!(
        "{}",
        match method.kind() {
            Kind::Rpc => "Unary",
            Kind::Notify => "Notify",
            Kind::ServerStream => "ServerStream",
            Kind::ClientStream => "ClientStream",
            Kind::Bidi => "Bidi",
            Kind::Datagram => "Datagram",
        }
    );
    quote! {
        #(#cfgs)*
        #private::MethodInfo::new(#wire_name, #private::Kind::#kind)
    }
}

/// The incoming call's variable. Like every variable generated code introduces, it has
/// mixed-site hygiene, so an argument of the same name does not clash with it.
fn call_ident() -> Ident {
    Ident::new("__call", Span::mixed_site())
}

/// The match arm routing one method's calls to the implementation.
fn arm(cx: &Cx<'_>, s: &Ident, method: &Method<'_>) -> TokenStream {
    let private = &cx.private;
    let cfgs = method.cfgs();
    let wire_name = method.wire_name();
    let ident = method.ident();
    let trait_path = cx.trait_path();
    let pattern = tuple(method.messages().map(|arg| &arg.binding));
    let args_type = args_type(method);
    // The closure takes the request's arguments, then the stream ends in the order the
    // runtime passes them: the `Receiver` first, then the `Sender`.
    let end = |role: fn(&Role<'_>) -> bool, end: &str| {
        method.args.iter().find(|arg| role(&arg.role)).map(|arg| {
            let binding = &arg.binding;
            let end = format_ident!("{}", end);
            let item = match arg.role {
                Role::Sender(item) | Role::Receiver(item) => quote!(#item),
                Role::Message => quote!(()),
            };
            quote!(, #binding: #private::#end<#item>)
        })
    };
    let receiver = end(|role| matches!(role, Role::Receiver(_)), "Receiver");
    let sender = end(|role| matches!(role, Role::Sender(_)), "Sender");
    let handler = match method.kind() {
        Kind::Rpc => "unary",
        Kind::Notify => "notify",
        Kind::ServerStream => "server_stream",
        Kind::ClientStream => "client_stream",
        Kind::Bidi => "bidi",
        Kind::Datagram => "serve",
    };
    // Spanned at the method, so that a message type the runtime cannot carry is reported in
    // the trait rather than at the attribute.
    let handler = Ident::new(handler, ident.span());
    let (call, svc) = (call_ident(), Ident::new("__svc", Span::mixed_site()));
    // Every parameter, in the trait's order.
    let call_args = method.args.iter().map(|arg| &arg.binding);
    quote! {
        #(#cfgs)*
        #wire_name => {
            let #svc = ::core::clone::Clone::clone(&self.inner);
            #call.#handler(move |#pattern: #args_type #receiver #sender| async move {
                <#s as #trait_path>::#ident(&#svc, #(#call_args),*).await
            })
        }
    }
}
