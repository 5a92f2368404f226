//! What the benches share: the controller process, polling at bench resolution, medians and
//! peak memory.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::cluster::kubeconfig_path;
use crate::support::process::ChildGuard;

/// Starts `gantry controller` for `namespace` with its data in `data`, logging to `log`
/// with the filter `log_filter`; `receiver_addr` is `off` or an address.
pub fn start_controller(
    namespace: &str,
    data: &Path,
    log: &Path,
    receiver_addr: &str,
    log_filter: &str,
) -> ChildGuard {
    start_controller_as(
        namespace,
        data,
        log,
        receiver_addr,
        log_filter,
        &kubeconfig_path(),
    )
}

/// [`start_controller`] with the credentials of `kubeconfig`.
pub fn start_controller_as(
    namespace: &str,
    data: &Path,
    log: &Path,
    receiver_addr: &str,
    log_filter: &str,
    kubeconfig: &Path,
) -> ChildGuard {
    start_controller_with(
        &controller_binary(),
        namespace,
        data,
        log,
        receiver_addr,
        log_filter,
        kubeconfig,
    )
}

/// [`start_controller_as`] with another build of the controller.
pub fn start_controller_with(
    binary: &Path,
    namespace: &str,
    data: &Path,
    log: &Path,
    receiver_addr: &str,
    log_filter: &str,
    kubeconfig: &Path,
) -> ChildGuard {
    let log_file = std::fs::File::create(log).unwrap();
    let child = Command::new(binary)
        .args(["controller", "--namespace", namespace, "--data-dir"])
        .arg(data)
        .arg(format!("--receiver-addr={receiver_addr}"))
        .arg("--min-interval=1s")
        .arg(format!(
            "--file-sources-root={}",
            std::env::temp_dir().display()
        ))
        .arg("--metrics-addr=127.0.0.1:0")
        .env("KUBECONFIG", kubeconfig)
        .env("GANTRY_LOG", log_filter)
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    ChildGuard::new("gantry controller", child)
}

/// The controller binary: this build's, or `GANTRY_BENCH_BIN` (to compare two builds of the
/// controller under the same bench).
pub fn controller_binary() -> std::path::PathBuf {
    std::env::var_os("GANTRY_BENCH_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_gantry").into())
}

/// Polls `f` every `every` until it returns `Some`; panics with `what` after `limit`.
/// (The tests' `eventually` polls every 200 ms, too coarse for a measurement.)
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, every: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(every).await;
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Peak resident memory (VmHWM) of a process, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM:")
}

/// Resident memory (VmRSS) of a process now, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// A memory field of `/proc/<pid>/status`, in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Groups of four objects in the benches' set (2,000 objects).
pub const GROUPS: usize = 500;

/// The benches' object set: 500 × (Deployment with 0 replicas, Service, ConfigMap,
/// ServiceAccount), one file per group, in `dir`.
pub fn write_objects(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..GROUPS {
        let name = format!("svc-{i:03}");
        let text = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 0\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      serviceAccountName: {name}\n      containers:\n      - name: app\n        image: registry.example.com/bench/{name}:1.0.0\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector: {{app: {name}}}\n  ports:\n  - port: 80\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  setting: \"{i}\"\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n"
        );
        std::fs::write(dir.join(format!("{name}.yaml")), text).unwrap();
    }
}

/// A whole number from the environment, or `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs per figure (`GANTRY_BENCH_RUNS` overrides, e.g. 1 for a quick look).
pub fn runs() -> usize {
    std::env::var("GANTRY_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// Requests logged by the controller's HTTP client after line `from`: (total, writes, dry-runs).
pub fn requests_since(log: &Path, from: usize) -> (usize, usize, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut total = 0;
    let mut writes = 0;
    let mut dry = 0;
    for line in text.lines().skip(from) {
        if !line.contains("kube_client::client::builder") || !line.contains("requesting") {
            continue;
        }
        total += 1;
        let is_write = ["PATCH", "POST", "PUT", "DELETE"]
            .iter()
            .any(|m| line.contains(&format!("http.method={m}")));
        if line.contains("dryRun=All") {
            dry += 1;
        } else if is_write {
            writes += 1;
        }
    }
    (total, writes, dry)
}

pub fn log_lines(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .count()
}

/// Waits (at most `limit`) until the Application `name` satisfies `done`, from a watch of
/// that one object: the bench sees each status write as it happens without asking the API
/// server for the whole object 40 times a second (an Application's status holds its
/// inventory, a large object to encode on every read for a large set, and such reads would
/// compete with the applies being measured).
pub async fn wait_for_app(
    api: &kube::Api<gantry::api::Application>,
    name: &str,
    limit: std::time::Duration,
    done: impl Fn(&gantry::api::Application) -> bool,
) -> bool {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api.clone(), config).applied_objects().boxed();
    tokio::time::timeout(limit, async {
        while let Some(event) = stream.next().await {
            if let Ok(app) = event
                && done(&app)
            {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}
