//! `make bench-fleet` (part of `make bench`): a fleet of Applications on one controller.
//! N Applications (`GANTRY_FLEET_N`, 1,000 by default; 10,000 for the large figure),
//! each a path of one repository served over smart HTTP with 4 objects (Deployment with 0
//! replicas, Service, ConfigMap, ServiceAccount) in its own namespace. Figures: time until
//! all are Ready at the revision and until all are Healthy, the controller's peak RSS and
//! CPU-seconds to Ready, and over an idle window after that (`GANTRY_FLEET_IDLE_S`, 120 s)
//! its CPU, its API requests and its writes (from its own request log; writes must be 0).
//!
//! Peers (Flux's source-controller and kustomize-controller) are not in this run yet; see
//! BENCHMARKS.md.

#[path = "../tests/e2e/support/mod.rs"]
#[allow(dead_code)]
mod support;

#[allow(dead_code)]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gantry::api::{Application, GitRepository};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use common::{peak_rss_mib, start_controller};
use support::cluster::{TestNamespace, client, install_crds};
use support::git::GitServer;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU-seconds (user + system) of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the state field.
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident memory now (VmRSS), in MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Requests in the controller's log from line `from`: (total, writes).
fn requests_since(log: &Path, from: usize) -> (usize, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut total = 0;
    let mut writes = 0;
    for line in text.lines().skip(from) {
        if !line.contains("kube_client::client::builder") || !line.contains("requesting") {
            continue;
        }
        total += 1;
        let write = ["PATCH", "POST", "PUT", "DELETE"]
            .iter()
            .any(|m| line.contains(&format!("http.method={m}")));
        if write && !line.contains("dryRun=All") {
            writes += 1;
        }
    }
    (total, writes)
}

fn log_lines(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .count()
}

/// The fleet's repository: `apps/a<i>/objects.yaml` for each Application.
fn write_fleet(dir: &Path, n: usize) {
    for i in 0..n {
        let d = dir.join(format!("apps/a{i:05}"));
        std::fs::create_dir_all(&d).unwrap();
        let name = "svc";
        std::fs::write(
            d.join("objects.yaml"),
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 0\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      serviceAccountName: {name}\n      containers:\n      - name: app\n        image: registry.example.com/fleet/a{i:05}:1.0.0\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector: {{app: {name}}}\n  ports:\n  - port: 80\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  app: \"a{i:05}\"\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n"
            ),
        )
        .unwrap();
    }
}

/// (Ready at `revision`, Healthy) counts of the Applications in `ns`.
async fn counts(apps: &Api<Application>, revision: &str) -> (usize, usize) {
    let Ok(list) = apps.list(&ListParams::default()).await else {
        return (0, 0);
    };
    let mut ready = 0;
    let mut healthy = 0;
    for app in list.items {
        let Some(status) = app.status else { continue };
        let is = |t: &str| {
            status
                .conditions
                .iter()
                .any(|c| c.type_ == t && c.status == "True")
        };
        if is("Ready")
            && status
                .last_applied_revision
                .as_deref()
                .is_some_and(|r| r.ends_with(revision))
        {
            ready += 1;
        }
        if is("Healthy") {
            healthy += 1;
        }
    }
    (ready, healthy)
}

#[tokio::main]
async fn main() {
    let n = env_or("GANTRY_FLEET_N", 1000);
    let idle = Duration::from_secs(env_or("GANTRY_FLEET_IDLE_S", 120) as u64);
    let client = client().await;
    install_crds(&client).await;
    let work = tempfile::tempdir().unwrap();
    write_fleet(&work.path().join("repo"), n);
    let server = GitServer::start();
    let head = server.create_repo_from_dir("fleet", &work.path().join("repo"));

    // The target namespaces, made before the clock starts.
    let control = TestNamespace::new(&client, "bench-fleet").await;
    let prefix = control.name.trim_start_matches("bench-fleet-").to_string();
    let ns_name = |i: usize| format!("fl-{prefix}-{i:05}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let made = Instant::now();
    futures::stream::iter((0..n).map(|i| {
        let namespaces = namespaces.clone();
        let name = ns_name(i);
        async move {
            let ns: Namespace =
                serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
            namespaces
                .create(&PostParams::default(), &ns)
                .await
                .unwrap();
        }
    }))
    .buffer_unordered(32)
    .collect::<Vec<_>>()
    .await;
    eprintln!(
        "{n} namespaces made in {:.1}s",
        made.elapsed().as_secs_f64()
    );

    let data = tempfile::tempdir().unwrap();
    let log = work.path().join("controller.log");
    let controller = start_controller(
        &control.name,
        data.path(),
        &log,
        "off",
        "info,kube_client::client::builder=debug",
    );
    let pid = controller.child.id();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_before = cpu_seconds(pid);

    // The clock starts with the first object: one GitRepository, N Applications.
    let start = Instant::now();
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), &control.name);
    let repo = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
        "metadata": {"name": "fleet"},
        "spec": {"url": server.http_url("fleet"), "interval": "1m", "ref": {"branch": "main"}}
    }))
    .unwrap();
    repos.create(&PostParams::default(), &repo).await.unwrap();
    let apps: Api<Application> = Api::namespaced(client.clone(), &control.name);
    futures::stream::iter((0..n).map(|i| {
        let apps = apps.clone();
        let target = ns_name(i);
        async move {
            let app = serde_json::from_value(json!({
                "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
                "metadata": {"name": format!("a{i:05}")},
                "spec": {
                    "sourceRef": {"kind": "GitRepository", "name": "fleet"},
                    "path": format!("apps/a{i:05}"),
                    "targetNamespace": target,
                    "interval": "10m",
                    "timeout": "5m"
                }
            }))
            .unwrap();
            apps.create(&PostParams::default(), &app).await.unwrap();
        }
    }))
    .buffer_unordered(32)
    .collect::<Vec<_>>()
    .await;
    let created = start.elapsed().as_secs_f64();
    eprintln!("{n} Applications created in {created:.1}s");

    let mut ready_at = None;
    let mut healthy_at = None;
    let mut cpu_ready = 0.0;
    let mut last_print = Instant::now();
    while healthy_at.is_none() || ready_at.is_none() {
        let (ready, healthy) = counts(&apps, &head).await;
        let t = start.elapsed().as_secs_f64();
        if ready_at.is_none() && ready == n {
            ready_at = Some(t);
            cpu_ready = cpu_seconds(pid) - cpu_before;
        }
        if healthy_at.is_none() && healthy == n {
            healthy_at = Some(t);
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            eprintln!("  +{t:.0}s: {ready} Ready, {healthy} Healthy");
            last_print = Instant::now();
        }
        assert!(t < 3600.0, "the fleet did not settle within an hour");
        tokio::time::sleep(Duration::from_millis(if n > 2000 { 2000 } else { 500 })).await;
    }
    let (ready_s, healthy_s) = (ready_at.unwrap(), healthy_at.unwrap());
    eprintln!("all Ready in {ready_s:.1}s, all Healthy in {healthy_s:.1}s");
    let peak = peak_rss_mib(pid);

    // Idle: nothing changes; what does the controller still do?
    tokio::time::sleep(Duration::from_secs(5)).await;
    let from = log_lines(&log);
    let cpu_idle_start = cpu_seconds(pid);
    tokio::time::sleep(idle).await;
    let idle_cpu = cpu_seconds(pid) - cpu_idle_start;
    let (idle_requests, idle_writes) = requests_since(&log, from);
    let rss_idle = rss_mib(pid);

    println!("RESULT fleet_{n}_apps=1");
    println!("RESULT fleet_{n}_all_ready_s={ready_s:.1}");
    println!("RESULT fleet_{n}_all_healthy_s={healthy_s:.1}");
    println!("RESULT fleet_{n}_create_s={created:.1}");
    println!("RESULT fleet_{n}_peak_rss_mib={peak:.1}");
    println!("RESULT fleet_{n}_idle_rss_mib={rss_idle:.1}");
    println!("RESULT fleet_{n}_cpu_s_to_ready={cpu_ready:.1}");
    println!(
        "RESULT fleet_{n}_idle_cpu_percent={:.2}",
        idle_cpu / idle.as_secs_f64() * 100.0
    );
    println!(
        "RESULT fleet_{n}_idle_requests_per_min={:.1}",
        idle_requests as f64 / idle.as_secs_f64() * 60.0
    );
    println!("RESULT fleet_{n}_idle_writes={idle_writes}");

    // Leave a quiet cluster: finalizers off, namespaces deleted (not awaited).
    drop(controller);
    let no_finalizers = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    futures::stream::iter((0..n).map(|i| {
        let apps = apps.clone();
        let no_finalizers = no_finalizers.clone();
        async move {
            let _ = apps
                .patch(&format!("a{i:05}"), &PatchParams::default(), &no_finalizers)
                .await;
        }
    }))
    .buffer_unordered(32)
    .collect::<Vec<_>>()
    .await;
    let _ = repos
        .patch("fleet", &PatchParams::default(), &no_finalizers)
        .await;
    futures::stream::iter((0..n).map(|i| {
        let namespaces = namespaces.clone();
        let name = ns_name(i);
        async move {
            let _ = namespaces.delete(&name, &DeleteParams::default()).await;
        }
    }))
    .buffer_unordered(32)
    .collect::<Vec<_>>()
    .await;
}
