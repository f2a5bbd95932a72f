//! Syntax only: the options of `#[service(...)]` and the trait it is applied to.

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, ItemTrait, Lit, LitStr, Meta, Token};

use crate::errors::Errors;
use crate::symbol::{OPTIONS, OPT_CLIENT, OPT_CRATE, OPT_NAME, OPT_SERVER};

/// The options of `#[service(...)]`, as written.
#[derive(Default)]
pub(crate) struct Options {
    /// `name = "..."`: the wire name of the service.
    pub(crate) name: Option<LitStr>,
    /// `crate = "..."`: the path of the runtime crate, already parsed.
    pub(crate) krate: Option<syn::Path>,
    /// `client = "..."`: the name of the generated client.
    pub(crate) client: Option<syn::Ident>,
    /// `server = "..."`: the name of the generated server.
    pub(crate) server: Option<syn::Ident>,
}

/// Parses the attribute's arguments. Every mistake is recorded; whatever was valid is kept.
pub(crate) fn options(args: TokenStream, errors: &mut Errors) -> Options {
    let mut options = Options::default();
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args) {
        Ok(metas) => metas,
        Err(error) => {
            errors.push(error);
            return options;
        }
    };
    for meta in metas {
        let key = meta.path().get_ident().map(|ident| ident.to_string());
        match key.as_deref() {
            Some(OPT_NAME) => {
                if let Some(lit) = string_value(&meta, errors) {
                    if lit.value().is_empty() {
                        errors.spanned(&lit, "the service name must not be empty");
                    } else if options.name.is_some() {
                        errors.spanned(meta.path(), "duplicate option `name`");
                    } else {
                        options.name = Some(lit);
                    }
                }
            }
            Some(OPT_CRATE) => {
                if let Some(lit) = string_value(&meta, errors) {
                    match lit.parse::<syn::Path>() {
                        Err(_) => errors.spanned(
                            &lit,
                            "expected the path of the dep2p runtime crate, e.g. `crate = \"my_crate::dep2p\"`",
                        ),
                        Ok(_) if options.krate.is_some() => {
                            errors.spanned(meta.path(), "duplicate option `crate`")
                        }
                        Ok(path) => options.krate = Some(path),
                    }
                }
            }
            Some(key @ (OPT_CLIENT | OPT_SERVER)) => {
                if let Some(lit) = string_value(&meta, errors) {
                    let slot = if key == OPT_CLIENT {
                        &mut options.client
                    } else {
                        &mut options.server
                    };
                    match lit.parse::<syn::Ident>() {
                        Err(_) => errors.spanned(
                            &lit,
                            format_args!(
                                "expected the name of the generated {key} type, e.g. \
                                 `{key} = \"Greeter{}\"`",
                                if key == OPT_CLIENT {
                                    "Client"
                                } else {
                                    "Server"
                                }
                            ),
                        ),
                        Ok(_) if slot.is_some() => {
                            errors.spanned(meta.path(), format_args!("duplicate option `{key}`"))
                        }
                        Ok(ident) => *slot = Some(ident),
                    }
                }
            }
            _ => errors.spanned(
                meta.path(),
                format_args!(
                    "unknown option `{}`; the options of #[service] are {}",
                    path_text(meta.path()),
                    OPTIONS
                        .iter()
                        .map(|option| format!("`{option} = \"...\"`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            ),
        }
    }
    options
}

/// The string literal of `key = "..."`, or an error if the option has another shape.
fn string_value(meta: &Meta, errors: &mut Errors) -> Option<LitStr> {
    let key = path_text(meta.path());
    match meta {
        Meta::NameValue(name_value) => match &name_value.value {
            Expr::Lit(ExprLit {
                lit: Lit::Str(lit), ..
            }) => Some(lit.clone()),
            other => {
                errors.spanned(
                    other,
                    format_args!("expected a string literal: `{key} = \"...\"`"),
                );
                None
            }
        },
        _ => {
            errors.spanned(meta, format_args!("expected `{key} = \"...\"`"));
            None
        }
    }
}

fn path_text(path: &syn::Path) -> String {
    let mut text = String::new();
    if path.leading_colon.is_some() {
        text.push_str("::");
    }
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    text.push_str(&segments.join("::"));
    text
}

/// Parses the item the attribute is applied to, which must be a trait.
pub(crate) fn item(item: TokenStream) -> syn::Result<ItemTrait> {
    syn::parse2::<ItemTrait>(item).map_err(|error| {
        syn::Error::new(
            error.span(),
            format_args!("#[service] applies to a trait of `async fn` methods: {error}"),
        )
    })
}
