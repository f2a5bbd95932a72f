use dep2p_runtime::service;

#[service]
pub trait Keys {
    async fn get_keys(&self) -> Vec<String>;
    #[rpc(name = "get_keys")]
    async fn keys(&self) -> Vec<String>;
    #[notify(name = "")]
    async fn drop_keys(&self);
    #[notify(label = "x")]
    async fn forget(&self);
}

fn main() {}
