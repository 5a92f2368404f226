//! `gantry history NS/NAME`: the last syncs and their outcome.

use std::process::ExitCode;

use kube::Client;
use kube::api::Api;

use super::common::{parse_target, print_table};
use crate::api::Application;
use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Application, as NAMESPACE/NAME.
    pub target: String,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let (ns, name) = parse_target(&args.target)?;
    let app = Api::<Application>::namespaced(Client::try_default().await?, &ns)
        .get(&name)
        .await?;
    let rows: Vec<Vec<String>> = app
        .status
        .unwrap_or_default()
        .history
        .iter()
        .map(|h| {
            vec![
                h.started_at.0.to_string(),
                h.revision.clone(),
                format!("{:?}", h.result),
                format!(
                    "+{} ~{} ={} -{}",
                    h.created, h.configured, h.unchanged, h.pruned
                ),
                h.message
                    .clone()
                    .unwrap_or_default()
                    .chars()
                    .take(100)
                    .collect(),
            ]
        })
        .collect();
    print_table(
        &[
            "TIME",
            "REVISION",
            "RESULT",
            "OBJECTS (+created ~configured =unchanged -pruned)",
            "MESSAGE",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}
