use dep2p_runtime::service;

#[service]
pub trait Chat {
    #[notify]
    async fn typing(&self, user: String) -> bool;
}

fn main() {}
