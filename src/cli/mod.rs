//! The `gantry` command line: one file per command.

/// `print!` to stdout; a reader that went away (`gantry history | head -1`) ends the command
/// quietly with exit 0, as SIGPIPE ends a C program, instead of a panic.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::write_stdout(format_args!($($arg)*)) };
}

/// `println!` to stdout, ending quietly when the reader went away (see [`out!`]).
#[macro_export]
macro_rules! outln {
    () => { $crate::cli::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprintln!` that never panics: a closed or full stderr (`gantry diff 2>&1 | head`)
/// loses the line instead of ending the command with a panic.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// Writes to stdout; exits 0 on a closed pipe, 2 on any other write error.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        crate::errln!("error: writing to stdout: {e}");
        std::process::exit(2);
    }
}

pub mod common;
pub mod controller;
pub mod crds;
pub mod diff;
pub mod get;
pub mod history;
pub mod plan;
pub mod render;
pub mod render_flags;
pub mod rollback;
pub mod rollout_action;
pub mod suspend;
pub mod sync;
pub mod ui;
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
    Controller(Box<controller::Args>),
    /// Print the rendered, normalized manifests of a directory (no cluster needed).
    Render(render::Args),
    /// Show how Git differs from the cluster (exit 0: none, 1: differences, 2: error).
    Diff(diff::Args),
    /// What merging a Git revision would do to each Application of a source, checked by
    /// the live API server as each Application's identity (exit 0: no change, 1: changes,
    /// 2: something would be refused, or an error).
    Plan(plan::Args),
    /// List Applications, sources or image policies.
    Get(get::Args),
    /// Sync an Application now (also with syncPolicy: manual).
    Sync(sync::Args),
    /// Revert, in Git, the commits after a healthy revision and deploy the revert.
    Rollback(rollback::Args),
    /// Promote a running canary now (skips the remaining steps and pauses).
    Promote(rollout_action::Args),
    /// Abort a running canary: delete it, keep the stable version.
    Abort(rollout_action::Args),
    /// Show the sync history of an Application.
    History(history::Args),
    /// Stop all writes of an Application.
    Suspend(suspend::Args),
    /// Resume a suspended Application.
    Resume(suspend::Args),
    /// Serve the web view (the fleet, each Application, the sources; live) on 127.0.0.1,
    /// with the kubeconfig user's rights.
    Ui(ui::Args),
    /// Print the CustomResourceDefinitions of every Gantry kind as YAML.
    Crds(crds::Args),
    /// Print the version of this binary.
    Version,
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Controller(args) => controller::run(*args).await,
        Command::Render(args) => render::run(args).await,
        Command::Diff(args) => diff::run(args).await,
        Command::Plan(args) => plan::run(args).await,
        Command::Get(args) => get::run(args).await,
        Command::Sync(args) => sync::run(args).await,
        Command::Rollback(args) => rollback::run(args).await,
        Command::Promote(args) => rollout_action::run(args, "promote").await,
        Command::Abort(args) => rollout_action::run(args, "abort").await,
        Command::History(args) => history::run(args).await,
        Command::Suspend(args) => suspend::run(args, true).await,
        Command::Resume(args) => suspend::run(args, false).await,
        Command::Ui(args) => ui::run(args).await,
        Command::Crds(args) => crds::run(args),
        Command::Version => version::run(),
    }
}
