use dep2p_runtime::service;

#[service]
pub struct Chat;

fn main() {}
