//! State shared by every reconciler, built once and passed as `Arc<Context>`.

use kube::Client;

/// The field manager of every write Gantry makes.
pub const FIELD_MANAGER: &str = "gantry";

pub struct Context {
    pub client: Client,
}

impl Context {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}
