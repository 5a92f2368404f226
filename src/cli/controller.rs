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

    /// Directory for Git caches and artifacts (an emptyDir in the chart).
    #[arg(long, env = "GANTRY_DATA_DIR", default_value = "/tmp/gantry")]
    pub data_dir: std::path::PathBuf,

    /// Objects applied concurrently within one sync.
    #[arg(long, env = "GANTRY_APPLY_CONCURRENCY", default_value_t = 32)]
    pub apply_concurrency: usize,

    /// Address of the webhook receiver server (`/hook/<token>`); `off` to run without it.
    #[arg(long, env = "GANTRY_RECEIVER_ADDR", default_value = "0.0.0.0:9292")]
    pub receiver_addr: String,

    /// Address of `/healthz`, `/readyz` and `/metrics` (a listener of their own, so
    /// webhook traffic never starves a probe); `off` to run without it.
    #[arg(long, env = "GANTRY_METRICS_ADDR", default_value = "0.0.0.0:9293")]
    pub metrics_addr: String,

    /// The shortest time between two periodic runs of any resource, whatever its
    /// `interval` says (which the CRDs keep at 1s or more). Webhooks and `gantry sync`
    /// are not delayed by it.
    #[arg(long, env = "GANTRY_MIN_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub min_interval: std::time::Duration,
}

fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    crate::api::duration::parse_go_duration(s).map_err(|e| e.to_string())
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let addr = |flag: &str, value: &str| match value {
        "off" | "" => Ok(None),
        a => a
            .parse()
            .map(Some)
            .map_err(|e| crate::error::Error::Usage(format!("{flag} {a:?}: {e}"))),
    };
    let receiver_addr = addr("--receiver-addr", &args.receiver_addr)?;
    let metrics_addr = addr("--metrics-addr", &args.metrics_addr)?;
    let client = Client::try_default().await?;
    controller::run(
        client,
        Options {
            namespace: args.namespace,
            data_dir: args.data_dir,
            apply_concurrency: args.apply_concurrency,
            receiver_addr,
            metrics_addr,
            min_interval: args.min_interval,
        },
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}
