use dep2p_runtime::service;

#[service(client = "Greeter")]
pub trait Greeter {
    async fn hello(&self, name: String) -> String;
}

#[service(client = "Agent", server = "Agent")]
pub trait Spy {
    async fn report(&self) -> String;
}

fn main() {}
