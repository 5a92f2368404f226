//! The `gantry` command line: one file per command.

pub mod controller;
pub mod crds;
pub mod version;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::Result;

/// GitOps continuous delivery for Kubernetes.
///
/// Gantry watches Git repositories and container registries, renders the desired state and
/// reconciles it into the cluster with server-side apply, safe pruning, drift detection and
/// canary rollouts.
#[derive(Debug, Parser)]
#[command(name = "gantry", version, propagate_version = true)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "GANTRY_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator against the cluster of the current kubeconfig (or in-cluster).
    Controller(controller::Args),
    /// Print the CustomResourceDefinitions of every Gantry kind as YAML.
    Crds(crds::Args),
    /// Print the version of this binary.
    Version,
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Controller(args) => controller::run(args).await,
        Command::Crds(args) => crds::run(args),
        Command::Version => version::run(),
    }
}
