use dep2p_runtime::service;

pub struct NotSerializable;

#[service]
pub trait Store {
    async fn put(&self, key: String, value: NotSerializable);
}

fn main() {}
