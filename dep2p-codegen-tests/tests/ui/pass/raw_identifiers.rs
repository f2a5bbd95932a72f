//! Raw identifiers: the wire names are the names without `r#`.

use dep2p_runtime::service;

#[service]
pub trait r#Keywords {
    async fn r#type(&self, r#match: u32) -> u32;
}

struct Impl;

impl Keywords for Impl {
    async fn r#type(&self, r#match: u32) -> u32 {
        r#match
    }
}

fn main() {
    let _server = KeywordsServer::new(Impl);
    assert_eq!(KeywordsClient::SERVICE_NAME, "Keywords");
    let _ = KeywordsClient::r#type;
}
