use dep2p_runtime::service;

#[service]
pub trait Chat {
    #[notify(fast)]
    async fn typing(&self);
}

fn main() {}
