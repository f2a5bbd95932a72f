use dep2p_runtime::service;

#[service]
pub trait Chat {
    #[idempotent]
    #[notify]
    async fn typing(&self);
}

fn main() {}
