//! A private control plane (etcd and kube-apiserver only, on their own free loopback
//! ports) for a test that restarts its API server, which the shared one must never see.

use std::path::PathBuf;
use std::process::Command;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cluster")
        .join(name)
}

pub struct PrivateCluster {
    state: tempfile::TempDir,
    /// Held while the control plane runs: one private control plane at a time, so the
    /// tests that start one (and the shared cluster's tests beside them) do not starve each
    /// other on a 2-core machine.
    _turn: std::sync::MutexGuard<'static, ()>,
}

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl PrivateCluster {
    /// etcd and kube-apiserver only.
    pub fn start() -> Self {
        Self::start_with(&[("GANTRY_TEST_APISERVER_ONLY", "1")])
    }

    /// A whole second control plane: etcd, kube-apiserver, controller-manager, scheduler
    /// and kwok with one node (Deployments roll out and become healthy there).
    pub fn start_full() -> Self {
        Self::start_with(&[("GANTRY_TEST_NODES", "1")])
    }

    fn start_with(env: &[(&str, &str)]) -> Self {
        // A test that panicked while holding the turn poisons the lock; the turn is free.
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let state = tempfile::tempdir().unwrap();
        let out = Command::new(script("up.sh"))
            .arg(state.path())
            .envs(env.iter().copied())
            .output()
            .expect("run tests/cluster/up.sh");
        let cluster = Self { state, _turn: turn };
        assert!(
            out.status.success(),
            "private control plane did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.state.path().join("kubeconfig")
    }

    /// A kubeconfig for the user `gantry-replica-<r>` (`a`, `b` or `c`), whose writes the
    /// audit log records.
    pub fn replica_kubeconfig(&self, r: char) -> PathBuf {
        self.state.path().join(format!("replica-{r}.kubeconfig"))
    }

    /// The audit log's events (writes by the replica users), one JSON object each.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.state.path().join("audit/audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig()).unwrap();
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
        Client::try_from(config).unwrap()
    }

    /// Stops the API server, waits `down_seconds`, starts it again on the same port and
    /// waits until it is ready.
    pub fn restart_apiserver(&self, down_seconds: u32) {
        let out = Command::new(script("restart-apiserver.sh"))
            .arg(self.state.path())
            .arg(down_seconds.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "restart failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = Command::new(script("down.sh"))
            .arg(self.state.path())
            .stderr(std::process::Stdio::null())
            .status();
    }
}
