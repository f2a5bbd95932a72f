use dep2p_runtime::service;

pub struct Value(pub u32);

#[service]
pub trait Store {
    async fn get(&self, key: String) -> Option<Value>;
}

fn main() {}
