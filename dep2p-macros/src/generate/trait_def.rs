//! The service trait itself, as the server implements it.

use std::collections::HashSet;

use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    parse_quote, parse_quote_spanned, FnArg, ItemTrait, Pat, PatWild, ReturnType, Token, TraitItem,
    Type,
};

use crate::model::Method;

/// What is emitted when the service has errors: the user's trait, so that code using it
/// keeps compiling, with the kind attributes and `#[idempotent]` removed. Duplicate methods and argument patterns,
/// which the compiler would report a second time, are left out.
pub(crate) fn fallback(item: &ItemTrait) -> ItemTrait {
    let mut item = strip_method_attrs(item);
    let mut seen = HashSet::new();
    item.items.retain(|trait_item| match trait_item {
        TraitItem::Fn(method) => seen.insert(method.sig.ident.unraw().to_string()),
        _ => true,
    });
    for trait_item in &mut item.items {
        let TraitItem::Fn(method) = trait_item else {
            continue;
        };
        for input in &mut method.sig.inputs {
            if let FnArg::Typed(arg) = input {
                if !matches!(&*arg.pat, Pat::Ident(pat) if pat.subpat.is_none() && pat.by_ref.is_none() && pat.mutability.is_none())
                {
                    *arg.pat = Pat::Wild(PatWild {
                        attrs: Vec::new(),
                        underscore_token: Token![_](arg.pat.span()),
                    });
                }
            }
        }
    }
    item
}

fn strip_method_attrs(item: &ItemTrait) -> ItemTrait {
    let mut item = item.clone();
    for trait_item in &mut item.items {
        if let TraitItem::Fn(method) = trait_item {
            method.attrs.retain(|attr| !Method::is_method_attr(attr));
        }
    }
    item
}

/// The trait to emit: each `async fn` becomes a `fn` returning a `Send` future, and the
/// trait requires `Send + Sync + 'static`, so the server can run handlers on any thread.
/// Implementors still write `async fn`.
pub(super) fn trait_def(item: &ItemTrait) -> ItemTrait {
    let mut item = strip_method_attrs(item);
    for trait_item in &mut item.items {
        let TraitItem::Fn(method) = trait_item else {
            continue;
        };
        let sig = &mut method.sig;
        let Some(async_token) = sig.asyncness.take() else {
            continue;
        };
        let output: Type = match &sig.output {
            ReturnType::Default => parse_quote!(()),
            ReturnType::Type(_, ty) => (**ty).clone(),
        };
        sig.output = parse_quote_spanned! {async_token.span=>
            -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
        };
        // The rewritten return type counts as more complex than the `async fn` the user wrote.
        method
            .attrs
            .push(parse_quote!(#[allow(clippy::type_complexity)]));
    }
    if item.colon_token.is_none() {
        item.colon_token = Some(Default::default());
    }
    // A program that only calls the service never names the trait: its client does not.
    item.attrs.push(parse_quote!(#[allow(dead_code)]));
    item.supertraits.extend::<[syn::TypeParamBound; 3]>([
        parse_quote!(::core::marker::Send),
        parse_quote!(::core::marker::Sync),
        parse_quote!('static),
    ]);
    item
}
