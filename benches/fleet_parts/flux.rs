//! The Flux peer of the fleet bench: its two controllers run out of cluster, its resources
//! through the dynamic API, its own request counters.

use std::path::Path;

use kube::api::Api;

use crate::support::cluster::kubeconfig_path;
use crate::support::process::{ChildGuard, free_port, tool};

pub fn kubectl_apply(path: &Path) {
    let out = std::process::Command::new(tool("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(["apply", "--server-side", "--force-conflicts", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Flux's two controllers, out of cluster; dropped together.
pub struct Flux {
    pub source: ChildGuard,
    pub kustomize: ChildGuard,
    /// The controllers' metrics ports (client-go's `rest_client_requests_total`).
    pub metrics: Vec<u16>,
    _storage: tempfile::TempDir,
}

/// API requests Flux's controllers have made so far, by their own client-go counters.
pub async fn flux_requests(ports: &[u16]) -> f64 {
    let mut total = 0.0;
    for port in ports {
        let text = match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => continue,
        };
        total += text
            .lines()
            .filter(|l| l.starts_with("rest_client_requests_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>();
    }
    total
}

/// Flux's controllers; their `TMPDIR` and artifact storage in `scratch`.
pub fn start_flux(dir: &Path, tuned: bool, logs: &Path, scratch: &Path, kubeconfig: &Path) -> Flux {
    let storage = tempfile::tempdir_in(scratch).unwrap();
    std::fs::create_dir_all(storage.path().join("artifacts")).unwrap();
    let port = free_port();

    let tuning: &[&str] = if tuned {
        &[
            "--concurrent=20",
            "--kube-api-qps=500",
            "--kube-api-burst=1000",
            "--requeue-dependency=5s",
        ]
    } else {
        &[]
    };
    let mut metrics = vec![];
    let mut spawn = |name: &str, extra: Vec<String>| {
        let metrics_port = free_port();
        metrics.push(metrics_port);
        let log = std::fs::File::create(logs.join(format!("{name}.log"))).unwrap();
        let child = std::process::Command::new(dir.join("bin").join(name))
            .args(extra)
            .args(tuning)
            .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .arg(format!("--health-addr=127.0.0.1:{}", free_port()))
            .arg("--enable-leader-election=false")
            .arg("--log-level=info")
            .env("KUBECONFIG", kubeconfig)
            .env("RUNTIME_NAMESPACE", "flux-system")
            .env("TMPDIR", storage.path())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        ChildGuard::new(name, child)
    };
    let source = spawn(
        "source-controller",
        vec![
            format!(
                "--storage-path={}",
                storage.path().join("artifacts").display()
            ),
            format!("--storage-addr=127.0.0.1:{port}"),
            format!("--storage-adv-addr=127.0.0.1:{port}"),
        ],
    );
    let kustomize = spawn("kustomize-controller", vec![]);
    Flux {
        source,
        kustomize,
        metrics,
        _storage: storage,
    }
}

/// The Kustomization resource of Flux (a dynamic type: Flux's Go types are not here).
pub fn kustomizations(client: &kube::Client, ns: &str) -> Api<kube::api::DynamicObject> {
    let gvk =
        kube::core::GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization");
    Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::from_gvk_with_plural(&gvk, "kustomizations"),
    )
}

pub fn flux_sources(client: &kube::Client, ns: &str) -> Api<kube::api::DynamicObject> {
    let gvk = kube::core::GroupVersionKind::gvk("source.toolkit.fluxcd.io", "v1", "GitRepository");
    Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::from_gvk_with_plural(&gvk, "gitrepositories"),
    )
}
