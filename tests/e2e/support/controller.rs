//! A `gantry controller` process scoped to one namespace, with its own data directory and
//! its log captured to a file (printed when a test fails, searchable for leaks).

use std::process::{Command, Stdio};

use super::cluster::kubeconfig_path;
use super::process::{ChildGuard, free_port, tool_dir};

pub fn path_with_tools() -> std::ffi::OsString {
    let mut paths = vec![tool_dir()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

pub struct GantryController {
    pub process: ChildGuard,
    pub data_dir: tempfile::TempDir,
    /// The webhook receiver server, on 127.0.0.1.
    pub receiver_port: u16,
    /// `/healthz`, `/readyz` and `/metrics`, on 127.0.0.1.
    pub metrics_port: u16,
    log_path: std::path::PathBuf,
}

impl GantryController {
    pub fn start(namespace: &str) -> Self {
        Self::start_on(namespace, &kubeconfig_path())
    }

    /// A controller for the control plane of `kubeconfig` (a private one).
    pub fn start_on(namespace: &str, kubeconfig: &std::path::Path) -> Self {
        Self::start_with(namespace, kubeconfig, &[])
    }

    /// A controller with extra flags (tenancy settings).
    pub fn start_with(namespace: &str, kubeconfig: &std::path::Path, extra: &[&str]) -> Self {
        Self::start_scoped(&["--namespace", namespace], kubeconfig, extra)
    }

    /// A controller for every namespace that reconciles only the resources labelled
    /// `gantry.dev/shard=<shard>` (so it never touches another test's).
    pub fn start_sharded(shard: &str, extra: &[&str]) -> Self {
        Self::start_scoped(&["--shard", shard], &kubeconfig_path(), extra)
    }

    /// A controller for `namespace` on the data directory an earlier one left
    /// ([`Self::stop_keeping_data`]).
    pub fn start_in(namespace: &str, data_dir: tempfile::TempDir) -> Self {
        Self::start_scoped_in(
            &["--namespace", namespace],
            &kubeconfig_path(),
            &[],
            data_dir,
        )
    }

    /// Stops the controller and hands over its data directory.
    pub fn stop_keeping_data(mut self) -> tempfile::TempDir {
        std::mem::replace(&mut self.data_dir, tempfile::tempdir().unwrap())
    }

    fn start_scoped(scope: &[&str], kubeconfig: &std::path::Path, extra: &[&str]) -> Self {
        Self::start_scoped_in(scope, kubeconfig, extra, tempfile::tempdir().unwrap())
    }

    fn start_scoped_in(
        scope: &[&str],
        kubeconfig: &std::path::Path,
        extra: &[&str],
        data_dir: tempfile::TempDir,
    ) -> Self {
        let log_path = data_dir.path().join("controller.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let receiver_port = free_port();
        let metrics_port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .arg("controller")
            .args(scope)
            .arg("--data-dir")
            .arg(data_dir.path())
            .arg(format!("--receiver-addr=127.0.0.1:{receiver_port}"))
            .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            // the tests poll their sources every second or two
            .arg("--min-interval=1s")
            // the test Git servers live in temporary directories
            .arg(format!(
                "--file-sources-root={}",
                std::env::temp_dir().display()
            ))
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("GANTRY_LOG", "info,gantry=debug")
            // kubectl (kustomize) and helm for the render step
            .env("PATH", path_with_tools())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start gantry controller");
        Self {
            process: ChildGuard::new("gantry controller", child),
            data_dir,
            receiver_port,
            metrics_port,
            log_path,
        }
    }

    /// The controller's operating-system threads now.
    pub fn threads(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Everything the controller logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The controller's `--data-dir`.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

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
        out.retain(|p| p != &self.log_path);
        out
    }
}

impl Drop for GantryController {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- gantry controller log ----\n{}", self.log());
        }
    }
}
