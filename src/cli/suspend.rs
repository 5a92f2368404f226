//! `gantry suspend|resume NS/NAME`: stop or restart all writes of an Application.

use std::process::ExitCode;

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::common::parse_target;
use crate::api::Application;
use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Application, as NAMESPACE/NAME.
    pub target: String,
}

pub async fn run(args: Args, suspend: bool) -> Result<ExitCode> {
    let (ns, name) = parse_target(&args.target)?;
    let api: Api<Application> = Api::namespaced(Client::try_default().await?, &ns);
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": suspend}})),
    )
    .await?;
    crate::outln!(
        "{ns}/{name} {}",
        if suspend { "suspended" } else { "resumed" }
    );
    Ok(ExitCode::SUCCESS)
}
