//! Collects every error found while expanding, so that one compile reports them all.

use std::fmt::Display;

use proc_macro2::Span;
use quote::ToTokens;

/// Errors found so far. Must be consumed by [`Errors::finish`]: dropping it unchecked is a
/// bug in the macro and panics, so that no error can be silently lost.
pub(crate) struct Errors {
    errors: Vec<syn::Error>,
    finished: bool,
}

impl Errors {
    pub(crate) fn new() -> Self {
        Errors {
            errors: Vec::new(),
            finished: false,
        }
    }

    /// Records an error spanning the given user tokens.
    pub(crate) fn spanned(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.errors.push(syn::Error::new_spanned(tokens, message));
    }

    /// Records an error at one span.
    pub(crate) fn at(&mut self, span: Span, message: impl Display) {
        self.errors.push(syn::Error::new(span, message));
    }

    /// Records an error built elsewhere (e.g. by a syn parser).
    pub(crate) fn push(&mut self, error: syn::Error) {
        self.errors.push(error);
    }

    /// All errors combined into one, or `Ok` if there were none.
    pub(crate) fn finish(mut self) -> syn::Result<()> {
        self.finished = true;
        let mut errors = std::mem::take(&mut self.errors).into_iter();
        match errors.next() {
            None => Ok(()),
            Some(mut first) => {
                first.extend(errors);
                Err(first)
            }
        }
    }
}

impl Drop for Errors {
    fn drop(&mut self) {
        if !self.finished && !std::thread::panicking() {
            panic!("dep2p-macros: errors were dropped without being reported");
        }
    }
}
