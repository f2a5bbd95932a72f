//! The service trait itself, as the server implements it.

use syn::{parse_quote, parse_quote_spanned, ItemTrait, ReturnType, TraitItem, Type};

use crate::model::Kind;

/// The user's trait with the kind attributes removed: what is emitted when the service has
/// errors, so that code using the trait keeps compiling.
pub(crate) fn strip_kind_attrs(item: &ItemTrait) -> ItemTrait {
    let mut item = item.clone();
    for trait_item in &mut item.items {
        if let TraitItem::Fn(method) = trait_item {
            method.attrs.retain(|attr| {
                !Kind::ALL
                    .iter()
                    .any(|(_, name)| attr.path().is_ident(name))
            });
        }
    }
    item
}

/// The trait to emit: each `async fn` becomes a `fn` returning a `Send` future, and the
/// trait requires `Send + Sync + 'static`, so the server can run handlers on any thread.
/// Implementors still write `async fn`.
pub(super) fn trait_def(item: &ItemTrait) -> ItemTrait {
    let mut item = strip_kind_attrs(item);
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
    }
    if item.colon_token.is_none() {
        item.colon_token = Some(Default::default());
    }
    item.supertraits
        .extend::<[syn::TypeParamBound; 3]>([
            parse_quote!(::core::marker::Send),
            parse_quote!(::core::marker::Sync),
            parse_quote!('static),
        ]);
    item
}
