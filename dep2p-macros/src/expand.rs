//! The pipeline: parse → model → validate → generate.

use proc_macro2::TokenStream;
use quote::quote;

use crate::errors::Errors;
use crate::model::Service;
use crate::{generate, parse, validate};

/// Expands `#[service(args)] item`.
pub(crate) fn service(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::new();
    let options = parse::options(args, &mut errors);
    let trait_item = match parse::item(item.clone()) {
        Ok(trait_item) => trait_item,
        Err(error) => {
            errors.push(error);
            let errors = errors.finish().err().map(|e| e.to_compile_error());
            return quote!(#item #errors);
        }
    };
    let service = Service::from_syntax(&trait_item, options);
    validate::validate(&service, &mut errors);
    match errors.finish() {
        Ok(()) => generate::service(&service),
        Err(error) => {
            let fallback = generate::fallback(&trait_item);
            let errors = error.to_compile_error();
            quote!(#fallback #errors)
        }
    }
}
