//! Compile-time checks that every message type can cross the network, each spanned at the
//! user's type so that "`Foo: Serialize` is not satisfied" points at `Foo` in the trait.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::{message_types, Cx};

pub(super) fn checks(cx: &Cx<'_>) -> TokenStream {
    let Cx {
        service,
        private,
        krate,
        params,
        ..
    } = cx;
    let impl_params = params.impl_params(None);
    let where_clause = params.where_clause(krate, None);
    let methods = service.methods.iter().filter_map(|method| {
        let cfgs = method.cfgs();
        let types = message_types(method);
        if types.is_empty() {
            return None;
        }
        let asserts = types.iter().map(|ty| {
            quote_spanned! {ty.span()=>
                #private::assert_message::<#ty>();
            }
        });
        Some(quote! {
            #(#cfgs)*
            {
                #(#asserts)*
            }
        })
    });
    quote! {
        const _: () = {
            #[allow(dead_code, deprecated)]
            fn __check_messages #impl_params () #where_clause {
                #(#methods)*
            }
        };
    }
}
