//! The trait's generic parameters as the generated items use them.
//!
//! A generic trait (`trait Store<K, V>`) gives a generic client (`StoreClient<K, V>`) and
//! server (`StoreServer<S, K, V>`). Their impls carry the trait's own bounds, and every type
//! parameter that appears in a message type is bound by `Serialize + DeserializeOwned + Send +
//! 'static`; the others by `'static`.

use std::collections::HashSet;

use proc_macro2::{Ident, TokenStream, TokenTree};
use quote::{quote, ToTokens};
use syn::{GenericParam, Type, WherePredicate};

use crate::model::{Role, Service};

pub(super) struct Params<'a> {
    service: &'a Service<'a>,
    /// Type parameters that appear in a message type.
    used: HashSet<Ident>,
}

impl<'a> Params<'a> {
    pub(super) fn new(service: &'a Service<'a>) -> Self {
        let mut used = HashSet::new();
        for method in &service.methods {
            let types = method
                .args
                .iter()
                .map(|arg| match arg.role {
                    Role::Message => arg.ty,
                    Role::Sender(item) | Role::Receiver(item) => item,
                })
                .chain(method.output);
            for ty in types {
                collect_type_params(ty.to_token_stream(), service, &mut used);
            }
        }
        Params { service, used }
    }

    fn params(&self) -> impl Iterator<Item = &'a GenericParam> {
        // Lifetime parameters are rejected by validation.
        self.service
            .item
            .generics
            .params
            .iter()
            .filter(|param| !matches!(param, GenericParam::Lifetime(_)))
    }

    /// Parameters for a struct declaration: `<S, K, V = u64>`, without bounds.
    pub(super) fn decl(&self, leading: Option<&Ident>) -> TokenStream {
        let params = self.params().map(|param| match param {
            GenericParam::Type(param) => {
                let ident = &param.ident;
                match &param.default {
                    Some(default) => quote!(#ident = #default),
                    None => quote!(#ident),
                }
            }
            GenericParam::Const(param) => {
                let mut param = param.clone();
                param.attrs.clear();
                param.to_token_stream()
            }
            GenericParam::Lifetime(_) => TokenStream::new(),
        });
        angle(
            leading
                .map(ToTokens::to_token_stream)
                .into_iter()
                .chain(params),
        )
    }

    /// Parameters for an impl: `<S, K, V>` (bounds go to [`Params::where_clause`]).
    pub(super) fn impl_params(&self, leading: Option<&Ident>) -> TokenStream {
        let params = self.params().map(|param| match param {
            GenericParam::Type(param) => param.ident.to_token_stream(),
            GenericParam::Const(param) => {
                let (const_token, ident, colon, ty) = (
                    &param.const_token,
                    &param.ident,
                    &param.colon_token,
                    &param.ty,
                );
                quote!(#const_token #ident #colon #ty)
            }
            GenericParam::Lifetime(_) => TokenStream::new(),
        });
        angle(
            leading
                .map(ToTokens::to_token_stream)
                .into_iter()
                .chain(params),
        )
    }

    /// Arguments naming the parameters: `<S, K, V>`.
    pub(super) fn args(&self, leading: Option<&Ident>) -> TokenStream {
        let params = self.params().map(|param| match param {
            GenericParam::Type(param) => param.ident.to_token_stream(),
            GenericParam::Const(param) => param.ident.to_token_stream(),
            GenericParam::Lifetime(_) => TokenStream::new(),
        });
        angle(
            leading
                .map(ToTokens::to_token_stream)
                .into_iter()
                .chain(params),
        )
    }

    /// `PhantomData<fn() -> (K, V)>` when the trait has type parameters: the generated
    /// structs are `Send + Sync` whatever the parameters are.
    pub(super) fn phantom(&self) -> Option<TokenStream> {
        let types: Vec<&Ident> = self
            .service
            .item
            .generics
            .type_params()
            .map(|p| &p.ident)
            .collect();
        if types.is_empty() {
            None
        } else {
            Some(quote!(::core::marker::PhantomData<fn() -> (#(#types,)*)>))
        }
    }

    /// The where clause of a generated impl: the trait's bounds, the bounds messages need,
    /// and `extra`.
    pub(super) fn where_clause(
        &self,
        krate: &TokenStream,
        extra: Option<TokenStream>,
    ) -> TokenStream {
        let mut predicates: Vec<TokenStream> = Vec::new();
        predicates.extend(extra);
        for param in self.service.item.generics.type_params() {
            let ident = &param.ident;
            let own = param.bounds.iter().map(ToTokens::to_token_stream);
            let needed = if self.used.contains(ident) {
                quote! {
                    #krate::__private::serde::Serialize
                        + #krate::__private::serde::de::DeserializeOwned
                        + ::core::marker::Send
                        + 'static
                }
            } else {
                quote!('static)
            };
            predicates.push(quote!(#ident: #(#own +)* #needed));
        }
        if let Some(where_clause) = &self.service.item.generics.where_clause {
            for predicate in &where_clause.predicates {
                // `Self: ...` predicates are supertraits of the service trait, not bounds
                // that the generated items can state.
                if !bounds_self(predicate) {
                    predicates.push(predicate.to_token_stream());
                }
            }
        }
        if predicates.is_empty() {
            TokenStream::new()
        } else {
            quote!(where #(#predicates,)*)
        }
    }
}

fn angle(params: impl Iterator<Item = TokenStream>) -> TokenStream {
    let params: Vec<TokenStream> = params.filter(|p| !p.is_empty()).collect();
    if params.is_empty() {
        TokenStream::new()
    } else {
        quote!(<#(#params),*>)
    }
}

fn bounds_self(predicate: &WherePredicate) -> bool {
    match predicate {
        WherePredicate::Type(predicate) => {
            matches!(&predicate.bounded_ty, Type::Path(path) if path.path.is_ident("Self"))
        }
        _ => false,
    }
}

fn collect_type_params(tokens: TokenStream, service: &Service<'_>, used: &mut HashSet<Ident>) {
    for token in tokens {
        match token {
            TokenTree::Ident(ident) if service.is_type_param(&ident) => {
                used.insert(ident);
            }
            TokenTree::Group(group) => collect_type_params(group.stream(), service, used),
            _ => {}
        }
    }
}
