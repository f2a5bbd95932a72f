//! `{Trait}Client`: one method per trait method, each returning the runtime's call builder.

use proc_macro2::TokenStream;
use quote::quote;

use super::{args_type, output_type, respan, tuple, Cx};
use crate::model::{Kind, Method};

pub(super) fn client(cx: &Cx<'_>) -> TokenStream {
    let definition = definition(cx);
    let inherent = inherent(cx);
    let clone = clone(cx);
    let debug = debug(cx);
    quote! {
        #definition
        #inherent
        #clone
        #debug
    }
}

fn definition(cx: &Cx<'_>) -> TokenStream {
    let Cx {
        service,
        private,
        client,
        params,
        ..
    } = cx;
    let vis = &service.item.vis;
    let generics = params.decl(None);
    let marker = params.phantom().map(|ty| quote!(marker: #ty,));
    let deprecated = service.deprecated();
    let doc = format!(
        " The client of the [`{}`] service: one method per trait method, each returning a call \
         to `.await` or to configure first.",
        service.ident()
    );
    quote! {
        #[doc = #doc]
        ///
        /// Cheap to clone: clones share the connection or peer they call.
        #deprecated
        #vis struct #client #generics {
            target: #private::Target,
            service: &'static str,
            #marker
        }
    }
}

fn inherent(cx: &Cx<'_>) -> TokenStream {
    let Cx {
        service,
        krate,
        client,
        params,
        ..
    } = cx;
    let vis = &service.item.vis;
    let impl_params = params.impl_params(None);
    let args = params.args(None);
    let where_clause = params.where_clause(krate, None);
    let wire_name = service.wire_name();
    let name_doc = format!(" The name the service is served under: `{wire_name:?}`.");
    let marker = params
        .phantom()
        .map(|_| quote!(marker: ::core::marker::PhantomData,));
    let methods = service.methods.iter().map(|method| method_fn(cx, method));
    quote! {
        #[automatically_derived]
        #[allow(deprecated, clippy::type_complexity)]
        impl #impl_params #client #args #where_clause {
            #[doc = #name_doc]
            #vis const SERVICE_NAME: &'static str = #wire_name;

            /// Creates a client that calls the service on `target`: a `Connection`, or a
            /// reconnecting `Peer`, whose calls wait within their deadline for a connection.
            #vis fn new(target: impl ::core::convert::Into<#krate::Target>) -> Self {
                Self::with_name(target, Self::SERVICE_NAME)
            }

            /// Creates a client that calls the service served under `name` on `target` (see
            /// the runtime's `Renamed`).
            #vis fn with_name(
                target: impl ::core::convert::Into<#krate::Target>,
                name: &'static str,
            ) -> Self {
                Self {
                    target: ::core::convert::Into::into(target),
                    service: name,
                    #marker
                }
            }

            /// What this client calls.
            #vis fn target(&self) -> &#krate::Target {
                &self.target
            }

            /// The connection this client calls over, if it was made from one (not from a
            /// peer, whose connection changes).
            #vis fn connection(&self) -> ::core::option::Option<&#krate::Connection> {
                self.target.as_connection()
            }

            #(#methods)*
        }
    }
}

/// One client method: takes the request's arguments, returns the call builder.
fn method_fn(cx: &Cx<'_>, method: &Method<'_>) -> TokenStream {
    let vis = &cx.service.item.vis;
    let attrs = method.client_attrs();
    let default_doc = (!method.has_docs()).then(|| {
        let doc = format!(
            " Calls [`{}::{}`] on the peer.",
            cx.service.ident(),
            method.ident()
        );
        quote!(#[doc = #doc])
    });
    let ident = method.ident();
    let params = method.messages().map(|arg| {
        let (binding, ty) = (&arg.binding, arg.ty);
        quote!(#binding: #ty)
    });
    let call = call_type(cx, method);
    let constructor = call_constructor(cx, method.kind());
    let wire_name = method.wire_name();
    let args = tuple(method.messages().map(|arg| &arg.binding));
    // Spanned at the method, so that a message type the runtime cannot carry is reported in
    // the trait rather than at the attribute.
    let idempotent = method.is_idempotent().then(|| quote!(.idempotent()));
    let body = respan(
        quote!(#constructor::new(&self.target, self.service, #wire_name, #args) #idempotent),
        ident.span(),
    );
    quote! {
        #(#attrs)*
        #default_doc
        #vis fn #ident(&self, #(#params),*) -> #call {
            #body
        }
    }
}

/// The runtime's call builder type for a method: `Unary<(String,), Result<u64, E>>`.
fn call_type(cx: &Cx<'_>, method: &Method<'_>) -> TokenStream {
    let constructor = call_constructor(cx, method.kind());
    let args = args_type(method);
    let output = output_type(method);
    let unit = || quote!(());
    let sent = method.receiver_item().map_or_else(unit, |ty| quote!(#ty));
    let received = method.sender_item().map_or_else(unit, |ty| quote!(#ty));
    match method.kind() {
        Kind::Rpc => quote!(#constructor<#args, #output>),
        Kind::Notify | Kind::Datagram => quote!(#constructor<#args>),
        Kind::ServerStream => quote!(#constructor<#args, #received, #output>),
        Kind::ClientStream => quote!(#constructor<#args, #sent, #output>),
        Kind::Bidi => quote!(#constructor<#args, #sent, #received, #output>),
    }
}

fn call_constructor(cx: &Cx<'_>, kind: Kind) -> TokenStream {
    // The runtime's public names: client signatures show only public items.
    let krate = &cx.krate;
    match kind {
        Kind::Rpc => quote!(#krate::Unary),
        Kind::Notify => quote!(#krate::Notify),
        Kind::ServerStream => quote!(#krate::ServerStreaming),
        Kind::ClientStream => quote!(#krate::ClientStreaming),
        Kind::Bidi => quote!(#krate::Bidi),
        Kind::Datagram => quote!(#krate::Datagram),
    }
}

fn clone(cx: &Cx<'_>) -> TokenStream {
    let Cx { client, params, .. } = cx;
    let impl_params = params.impl_params(None);
    let args = params.args(None);
    let marker = params
        .phantom()
        .map(|_| quote!(marker: ::core::marker::PhantomData,));
    quote! {
        #[automatically_derived]
        #[allow(deprecated)]
        impl #impl_params ::core::clone::Clone for #client #args {
            fn clone(&self) -> Self {
                Self {
                    target: ::core::clone::Clone::clone(&self.target),
                    service: self.service,
                    #marker
                }
            }
        }
    }
}

fn debug(cx: &Cx<'_>) -> TokenStream {
    let Cx { client, params, .. } = cx;
    let impl_params = params.impl_params(None);
    let args = params.args(None);
    let name = client.to_string();
    quote! {
        #[automatically_derived]
        #[allow(deprecated)]
        impl #impl_params ::core::fmt::Debug for #client #args {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#name)
                    .field("target", &self.target)
                    .field("service", &self.service)
                    .finish()
            }
        }
    }
}
