//! `make bench`: Gantry against `kubectl apply --server-side` on the same local control
//! plane and the same 2,000 objects, plus no-op cost, drift detection latency and memory.
//! Prints `RESULT <name>=<value>` lines; medians of several runs where it matters.

#[path = "../tests/e2e/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gantry::api::Application;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use support::app::{condition, create_source_and_app};
use support::cluster::{TestNamespace, client, install_crds, kubeconfig_path};
use support::git::GitServer;
use support::process::{ChildGuard, tool};

const GROUPS: usize = 500;
/// Runs per figure (`GANTRY_BENCH_RUNS` overrides, e.g. 1 for a quick look).
fn runs() -> usize {
    std::env::var("GANTRY_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn write_objects(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..GROUPS {
        let name = format!("svc-{i:03}");
        let text = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 0\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      serviceAccountName: {name}\n      containers:\n      - name: app\n        image: registry.example.com/bench/{name}:1.0.0\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector: {{app: {name}}}\n  ports:\n  - port: 80\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  setting: \"{i}\"\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n"
        );
        std::fs::write(dir.join(format!("{name}.yaml")), text).unwrap();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn start_controller(namespace: &str, data: &Path, log: &Path) -> ChildGuard {
    let log_file = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args([
            "controller",
            "--receiver-addr=off",
            "--namespace",
            namespace,
            "--data-dir",
        ])
        .arg(data)
        .env("KUBECONFIG", kubeconfig_path())
        .env(
            "GANTRY_LOG",
            "info,kube_client::client::builder=debug,gantry::controller::sync=debug",
        )
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    ChildGuard::new("gantry controller", child)
}

fn kubectl_apply(dir: &Path, ns: &str) -> f64 {
    let start = Instant::now();
    let out = Command::new(tool("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args([
            "apply",
            "--server-side",
            "--field-manager",
            "bench",
            "-n",
            ns,
            "-f",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed().as_secs_f64()
}

/// Requests logged by the controller's HTTP client after line `from`: (total, writes, dry-runs).
fn requests_since(log: &Path, from: usize) -> (usize, usize, usize) {
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

fn log_lines(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .count()
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let client = client().await;
    install_crds(&client).await;
    let work = tempfile::tempdir().unwrap();
    let objects = work.path().join("objects");
    write_objects(&objects);
    let server = GitServer::start();
    server.create_repo_from_dir("bench", work.path());

    let mut kubectl_times = vec![];
    let mut gantry_times = vec![];
    let mut noop = (0, 0, 0);
    let mut drift_ms = vec![];
    let mut rss = 0f64;
    for run in 0..runs() {
        // kubectl apply --server-side of the same directory, from scratch.
        let kns = TestNamespace::new(&client, "bench-kubectl").await;
        let t = kubectl_apply(&objects, &kns.name);
        eprintln!("run {run}: kubectl apply --server-side: {t:.2}s");
        kubectl_times.push(t);

        // Gantry: from Application creation to Ready at the revision.
        let gns = TestNamespace::new(&client, "bench-gantry").await;
        let data = tempfile::tempdir().unwrap();
        let log = work.path().join(format!("controller-{run}.log"));
        let controller = start_controller(&gns.name, data.path(), &log);
        let start = Instant::now();
        create_source_and_app(
            &client,
            &gns.name,
            "bench",
            &server.file_url("bench"),
            json!({"path": "objects", "drift": {"mode": "audit"}, "interval": "10m"}),
        )
        .await;
        let apps: Api<Application> = Api::namespaced(client.clone(), &gns.name);
        // The source fetch is part of Gantry's work here (kubectl had the files locally).
        loop {
            if let Ok(app) = apps.get("bench").await
                && condition(&app, "Ready").is_some_and(|c| c.status == "True")
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(600),
                "gantry did not sync"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let t = start.elapsed().as_secs_f64();
        eprintln!("run {run}: gantry sync of {} objects: {t:.2}s", GROUPS * 4);
        for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
            if line.contains("rendered") || line.contains("validated") || line.contains(" applied")
            {
                eprintln!(
                    "  {}",
                    line.split("gantry::controller::sync:")
                        .last()
                        .unwrap_or(line)
                        .trim()
                );
            }
        }
        gantry_times.push(t);

        // Let health and the first drift check settle, then measure a no-op reconcile.
        let settle = Instant::now();
        loop {
            if let Ok(app) = apps.get("bench").await
                && condition(&app, "Healthy").is_some_and(|c| c.status == "True")
            {
                break;
            }
            assert!(settle.elapsed() < Duration::from_secs(300), "never healthy");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let from = log_lines(&log);
        apps.patch(
            "bench",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"bench/poke": format!("{run}")}}})),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        noop = requests_since(&log, from);
        eprintln!(
            "run {run}: no-op reconcile: {} requests, {} writes, {} dry-runs",
            noop.0, noop.1, noop.2
        );

        // Drift: a kubectl-style edit of one ConfigMap to Drifted=True (10-minute interval).
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &gns.name);
        let edit = Instant::now();
        cms.patch(
            "svc-250",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"data": {"setting": "edited"}})),
        )
        .await
        .unwrap();
        loop {
            if let Ok(app) = apps.get("bench").await
                && condition(&app, "Drifted").is_some_and(|c| c.status == "True")
            {
                break;
            }
            assert!(
                edit.elapsed() < Duration::from_secs(60),
                "drift not detected"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ms = edit.elapsed().as_secs_f64() * 1000.0;
        eprintln!("run {run}: drift detected in {ms:.0} ms");
        drift_ms.push(ms);
        rss = rss.max(peak_rss_mib(controller.child.id()));
        drop(controller);
    }
    let (k, g) = (median(kubectl_times), median(gantry_times));
    println!("RESULT apply_2000_kubectl_s={k:.2}");
    println!("RESULT apply_2000_gantry_s={g:.2}");
    println!("RESULT apply_speedup_vs_kubectl={:.2}", k / g);
    println!("RESULT noop_reconcile_requests={}", noop.0);
    println!("RESULT noop_reconcile_writes={}", noop.1);
    println!("RESULT noop_reconcile_dry_runs={}", noop.2);
    println!("RESULT drift_detect_ms={:.0}", median(drift_ms));
    println!("RESULT controller_rss_mib={rss:.1}");
}
