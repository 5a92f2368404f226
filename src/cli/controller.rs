//! `gantry controller`: run the operator.

use std::process::ExitCode;

use kube::Client;

use crate::controller::{self, Options};
use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, short = 'n', env = "GANTRY_NAMESPACE")]
    pub namespace: Option<String>,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let client = Client::try_default().await?;
    controller::run(
        client,
        Options {
            namespace: args.namespace,
        },
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}
