//! `gantry crds`: the CRD YAML generated from the Rust types.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::api;
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write one file per kind into this directory instead of printing a YAML stream.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// All CRDs as one multi-document YAML stream.
pub fn render_all() -> Result<String> {
    let mut out = String::new();
    for crd in api::crds() {
        out.push_str("---\n");
        out.push_str(&api::crd_yaml(&crd)?);
    }
    Ok(out)
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.out_dir {
        None => crate::out!("{}", render_all()?),
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
            for crd in api::crds() {
                let path = dir.join(api::crd_file_name(&crd));
                std::fs::write(&path, api::crd_yaml(&crd)?)
                    .map_err(|e| Error::io(path.display().to_string(), e))?;
                crate::errln!("wrote {}", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
