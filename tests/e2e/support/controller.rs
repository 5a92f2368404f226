//! A `gantry controller` process scoped to one namespace, with its own data directory.

use std::process::{Command, Stdio};

use super::cluster::kubeconfig_path;
use super::process::{ChildGuard, tool_dir};

fn path_with_tools() -> std::ffi::OsString {
    let mut paths = vec![tool_dir()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

pub struct GantryController {
    pub process: ChildGuard,
    pub data_dir: tempfile::TempDir,
}

impl GantryController {
    /// Every file under the data directory (artifacts and Git caches), for leak checks.
    pub fn data_files(&self) -> Vec<std::path::PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() && !p.is_symlink() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut out = vec![];
        walk(self.data_dir.path(), &mut out);
        out
    }
}

impl GantryController {
    pub fn start(namespace: &str) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["controller", "--namespace", namespace, "--data-dir"])
            .arg(data_dir.path())
            .env("KUBECONFIG", kubeconfig_path())
            .env("GANTRY_LOG", "info")
            // kubectl (kustomize) and helm for the render step
            .env("PATH", path_with_tools())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start gantry controller");
        Self {
            process: ChildGuard::new("gantry controller", child),
            data_dir,
        }
    }
}
