//! Expansion snapshots: the macro's output, printed as `cargo expand` would show it.

use proc_macro2::TokenStream;
use quote::quote;

fn expand(args: TokenStream, item: TokenStream) -> String {
    let output = crate::expand::service(args, item);
    match syn::parse2::<syn::File>(output.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        Err(error) => panic!("the expansion does not parse ({error}):\n{output}"),
    }
}

#[test]
fn all_kinds() {
    insta::assert_snapshot!(expand(
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

                async fn ping(&self);
            }
        }
    ));
}

#[test]
fn generic() {
    insta::assert_snapshot!(expand(
        quote!(crate = "my_app::rpc"),
        quote! {
            pub(crate) trait Store<K, V: Clone>
            where
                K: Ord,
            {
                async fn get(&self, key: K) -> Option<V>;
                async fn put(&self, key: K, value: V);
                #[server_stream]
                async fn keys(&self, out: Sender<K>);
            }
        }
    ));
}

#[test]
fn errors_keep_the_trait() {
    insta::assert_snapshot!(expand(
        quote!(),
        quote! {
            trait Broken {
                #[notify]
                fn not_async(&self);
                async fn new(&self);
            }
        }
    ));
}
