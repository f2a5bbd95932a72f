use dep2p_runtime::service;

#[service]
pub trait Chat {
    async unsafe fn login(&self, user: String) -> u64;
}

fn main() {}
