//! Expansion snapshots: the macro's output, printed as `cargo expand` would show it.

use proc_macro2::TokenStream;
use quote::quote;

/// Expands `#[service(args)] item` and compares the printed output with the snapshot
/// `snapshots/{name}.snap`.
fn check(name: &str, args: TokenStream, item: TokenStream) {
    let output = crate::expand::service(args, item);
    let printed = match syn::parse2::<syn::File>(output.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        Err(error) => panic!("the expansion does not parse ({error}):\n{output}"),
    };
    insta::with_settings!({
        snapshot_path => "../snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, printed);
    });
}

#[test]
fn all_kinds() {
    check(
        "all_kinds",
        quote!(name = "chat.v1"),
        quote! {
            /// A chat service.
            pub trait Chat {
                /// Logs in.
                async fn login(&self, user: String) -> Result<u64, LoginError>;

                /// Says someone is typing.
                #[notify]
                async fn typing(&self, user: String);

                #[server_stream]
                async fn history(&self, room: String, out: Sender<Message>) -> Result<(), ChatError>;

                #[client_stream]
                async fn upload(&self, name: String, chunks: Receiver<Chunk>) -> Result<u64, ChatError>;

                #[bidi]
                async fn talk(
                    &self,
                    room: String,
                    incoming: Receiver<Message>,
                    out: Sender<Message>,
                ) -> Result<(), ChatError>;

                #[rpc]
                #[cfg(feature = "admin")]
                async fn kick(&self, user: String, reason: String);

                /// Answers; running it twice does no harm.
                #[idempotent]
                async fn ping(&self);
            }
        },
    );
}

#[test]
fn generic() {
    check(
        "generic",
        quote!(crate = "my_app::rpc"),
        quote! {
            pub(crate) trait Store<K, V: Clone>
            where
                K: Ord,
            {
                #[idempotent]
                async fn get(&self, key: K) -> Option<V>;
                async fn put(&self, key: K, value: V);
                #[server_stream]
                async fn keys(&self, out: Sender<K>);
            }
        },
    );
}

#[test]
fn errors_keep_the_trait() {
    check(
        "errors_keep_the_trait",
        quote!(),
        quote! {
            trait Broken {
                #[notify]
                fn not_async(&self);
                #[idempotent]
                async fn get(&self) -> u8;
                async fn new(&self);
            }
        },
    );
}
