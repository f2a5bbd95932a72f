//! Expansion snapshots: the macro's output, printed as `cargo expand` would show it.

use proc_macro2::TokenStream;
use quote::quote;

/// Held while a test expands: the expansion reads `CARGO_MANIFEST_DIR`, which one test changes.
static MANIFEST_DIR: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Expands `#[service(args)] item` and compares the printed output with the snapshot
/// `snapshots/{name}.snap`.
fn check(name: &str, args: TokenStream, item: TokenStream) {
    let _manifest = MANIFEST_DIR.lock().unwrap_or_else(|e| e.into_inner());
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

                /// Where the cursor is, as often as it moves.
                #[datagram]
                async fn cursor(&self, x: u16, y: u16);

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

/// A renamed dependency on the runtime is found in the user's Cargo.toml: generated code
/// reaches the runtime by the new name without `crate = "..."`.
#[test]
fn renamed_dependency_is_found() {
    let _manifest = MANIFEST_DIR.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("dep2p-macros-renamed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\n\n[dependencies]\n\
         rpc = { package = \"dep2p-runtime\", version = \"0.1\" }\n",
    )
    .unwrap();
    let previous = std::env::var_os("CARGO_MANIFEST_DIR");
    std::env::set_var("CARGO_MANIFEST_DIR", &dir);
    let output = crate::expand::service(
        quote!(),
        quote!(
            trait Greeter {
                async fn hi(&self);
            }
        ),
    );
    match previous {
        Some(previous) => std::env::set_var("CARGO_MANIFEST_DIR", previous),
        None => std::env::remove_var("CARGO_MANIFEST_DIR"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let output = output.to_string();
    assert!(output.contains(":: rpc :: __private"), "{output}");
    assert!(!output.contains("dep2p_runtime"), "{output}");
}
