//! `gantry version`.

use std::process::ExitCode;

use crate::error::Result;

pub fn run() -> Result<ExitCode> {
    crate::outln!("gantry {}", env!("CARGO_PKG_VERSION"));
    Ok(ExitCode::SUCCESS)
}
