//! The `gantry` binary: parse the command line, set up logging, dispatch.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use gantry::cli::{self, Cli, LogFormat};
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_env("GANTRY_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// With the `heap-profile` feature, every allocation is recorded (see `main`).
#[cfg(feature = "heap-profile")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// jemalloc otherwise (see Cargo.toml for why).
#[cfg(not(feature = "heap-profile"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // Written to dhat-heap.json when main returns (the controller returns on SIGTERM).
    #[cfg(feature = "heap-profile")]
    let _profiler = dhat::Profiler::new_heap();
    // reqwest (under oci-client) is built without a bundled crypto provider; use ring, as
    // kube does. Failing only means a provider was installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    // The web view says on its pages why a watch is refused; its terminal need not repeat
    // it at every retry.
    let default_filter = match cli.command {
        cli::Command::Ui(_) => "info,kube_runtime::watcher=error",
        _ => "info",
    };
    init_tracing(cli.log_format, default_filter);
    match cli::run(cli).await {
        Ok(code) => code,
        Err(err) => {
            gantry::errln!("error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                gantry::errln!("  caused by: {cause}");
                source = cause.source();
            }
            // 2, so that `gantry diff` can use 1 for "differences found".
            ExitCode::from(2)
        }
    }
}
