use dep2p_runtime::service;

#[service(client = "Greeter Client", server = "")]
pub trait Greeter {
    async fn hello(&self, name: String) -> String;
}

fn main() {}
