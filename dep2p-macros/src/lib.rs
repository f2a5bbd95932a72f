//! The `#[service]` attribute of dep2p. Use it through `dep2p_runtime`, which re-exports it.

mod errors;
mod expand;
mod generate;
mod model;
mod parse;
mod symbol;
mod validate;

#[cfg(test)]
mod tests;

/// PLACEHOLDER
#[proc_macro_attribute]
pub fn service(
    args: proc_macro::TokenStream,
    item: proc_macro::TokenStream,
) -> proc_macro::TokenStream {
    expand::service(args.into(), item.into()).into()
}
