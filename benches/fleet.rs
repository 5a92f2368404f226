//! `make bench-fleet` (part of `make bench`): a fleet of Applications on one controller.
//! N Applications (`GANTRY_FLEET_N`, 1,000 by default; 10,000 for the large figure),
//! each a path of one repository served over smart HTTP with 4 objects (Deployment with 0
//! replicas, Service, ConfigMap, ServiceAccount) in its own namespace. Figures: time until
//! all are Ready at the revision and until all are Healthy, the controller's peak RSS and
//! CPU-seconds to Ready, and over an idle window after that (`GANTRY_FLEET_IDLE_S`, 120 s)
//! its CPU, its API requests and its writes (from its own request log; writes must be 0).
//!
//! Peers in the same run, on the same control plane, from the same smart-HTTP Git server:
//! Flux's source-controller and kustomize-controller (built from their Go modules by
//! `tests/cluster/build-flux.sh`, `GANTRY_FLUX_DIR`), run out of cluster at their defaults
//! and with the settings of Flux's own published benchmark (`--concurrent=20
//! --kube-api-qps=500 --kube-api-burst=1000 --requeue-dependency=5s` on both). One
//! GitRepository, N Kustomizations (`wait: false`: Ready once applied, as Gantry's Ready).
//! Each controller runs as its own client-certificate user, so its writes are counted from
//! the API server's audit log as well; Flux's memory and CPU are both processes summed.
//! `GANTRY_FLEET_PEERS=gantry` runs Gantry alone.

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

use common::{env_or, log_lines, median, peak_rss_mib, requests_since, runs, start_controller_as};
use support::app::Workspace;
use support::cluster::{TestNamespace, client, install_crds, kubeconfig_path};
use support::git::GitServer;
use support::process::{ChildGuard, free_port, tool};

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

/// The objects of Application `i`; `change` goes into its ConfigMap.
fn fleet_objects(i: usize, change: Option<&str>) -> String {
    let name = "svc";
    let change = change
        .map(|c| format!("  change: \"{c}\"\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 0\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      serviceAccountName: {name}\n      containers:\n      - name: app\n        image: registry.example.com/fleet/a{i:05}:1.0.0\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector: {{app: {name}}}\n  ports:\n  - port: 80\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  app: \"a{i:05}\"\n{change}---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n"
    )
}

fn app_file(i: usize) -> String {
    format!("apps/a{i:05}/objects.yaml")
}

/// The fleet's repository: `apps/a<i>/objects.yaml` for each Application.
fn write_fleet(dir: &Path, n: usize) {
    for i in 0..n {
        let file = dir.join(app_file(i));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, fleet_objects(i, None)).unwrap();
    }
}

/// Marks the Kustomizations Ready at `revision` in `seen`. (Ready, not "Ready now": Flux sets
/// Ready=Unknown at the start of every reconcile, and when a pass over the fleet takes
/// longer than the interval, the first ones are reconciled again before the last are done.)
async fn flux_ready(
    api: &Api<kube::api::DynamicObject>,
    revision: &str,
    seen: &mut std::collections::HashSet<String>,
) {
    let Ok(list) = api.list(&ListParams::default()).await else {
        return;
    };
    for k in &list.items {
        let status = &k.data["status"];
        let ready = status["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        if ready
            && status["lastAppliedRevision"]
                .as_str()
                .is_some_and(|r| r.ends_with(revision))
        {
            seen.insert(k.metadata.name.clone().unwrap_or_default());
        }
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Peer {
    Gantry,
    FluxDefault,
    FluxTuned,
}

impl Peer {
    fn label(self) -> &'static str {
        match self {
            Peer::Gantry => "gantry",
            Peer::FluxDefault => "flux_default",
            Peer::FluxTuned => "flux_tuned",
        }
    }
    /// The client-certificate user it runs as (its writes are in the audit log).
    fn user(self) -> &'static str {
        match self {
            Peer::Gantry => "a",
            _ => "b",
        }
    }
}

/// One run's figures.
#[derive(Debug, Default, Clone)]
struct Figures {
    ready_s: f64,
    healthy_s: Option<f64>,
    peak_rss_mib: f64,
    cpu_s_to_ready: f64,
    idle_cpu_percent: f64,
    idle_writes: usize,
    idle_requests_per_min: f64,
    /// Until all are Ready at a commit that changes every one of them.
    change_all_s: f64,
    /// Until the one changed is Ready at a commit that changes one of them.
    change_one_s: f64,
    /// Until all are at that commit.
    change_one_all_s: f64,
    /// Requests made meanwhile (Gantry: its request log; Flux: its client-go counters).
    change_one_requests: f64,
    /// Gantry: requests and writes not for the changed one, nor reads of the source.
    change_one_others: Option<(usize, usize)>,
}

fn kubeconfig_of(user: &str) -> std::path::PathBuf {
    kubeconfig_path()
        .parent()
        .unwrap()
        .join(format!("replica-{user}.kubeconfig"))
}

/// Writes by `user` in the API server's audit log.
fn audited_writes(user: &str) -> usize {
    let dir = kubeconfig_path().parent().unwrap().join("audit");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        n += text
            .lines()
            .filter(|l| l.contains(&format!("\"username\":\"gantry-replica-{user}\"")))
            .filter(|l| l.contains("\"stage\":\"ResponseComplete\""))
            .count();
    }
    n
}

fn kubectl_apply(path: &Path) {
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
struct Flux {
    source: ChildGuard,
    kustomize: ChildGuard,
    /// The controllers' metrics ports (client-go's `rest_client_requests_total`).
    metrics: Vec<u16>,
    _storage: tempfile::TempDir,
}

/// API requests Flux's controllers have made so far, by their own client-go counters.
async fn flux_requests(ports: &[u16]) -> f64 {
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

fn start_flux(dir: &Path, tuned: bool, logs: &Path) -> Flux {
    let storage = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(storage.path().join("artifacts")).unwrap();
    let port = free_port();
    let kubeconfig = kubeconfig_of(Peer::FluxDefault.user());
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
            .env("KUBECONFIG", &kubeconfig)
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
fn kustomizations(client: &kube::Client, ns: &str) -> Api<kube::api::DynamicObject> {
    let gvk =
        kube::core::GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization");
    Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::from_gvk_with_plural(&gvk, "kustomizations"),
    )
}

fn flux_sources(client: &kube::Client, ns: &str) -> Api<kube::api::DynamicObject> {
    let gvk = kube::core::GroupVersionKind::gvk("source.toolkit.fluxcd.io", "v1", "GitRepository");
    Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::from_gvk_with_plural(&gvk, "gitrepositories"),
    )
}

async fn create_all<F, Fut>(n: usize, f: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    futures::stream::iter((0..n).map(f))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

/// Waits on the Applications (Kustomizations) of one peer.
struct Waiter<'a> {
    peer: Peer,
    apps: &'a Api<Application>,
    ks: &'a Api<kube::api::DynamicObject>,
    n: usize,
    cpu: &'a dyn Fn() -> f64,
}

fn limit_s() -> f64 {
    std::env::var("GANTRY_FLEET_LIMIT_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3600.0)
}

impl Waiter<'_> {
    /// Seconds from `start` until all are Ready at `revision` (infinite when the limit is
    /// reached first), until all are Healthy (Gantry, when `healthy` is asked), and the
    /// CPU-seconds counter when all were Ready.
    async fn all_ready(
        &self,
        revision: &str,
        start: Instant,
        healthy: bool,
    ) -> (f64, Option<f64>, f64) {
        let (peer, n) = (self.peer, self.n);
        let mut flux_seen = std::collections::HashSet::new();
        let mut ready_at = None;
        let mut healthy_at = None;
        let mut cpu_ready = 0.0;
        let mut last_print = Instant::now();
        loop {
            let (ready, healthy_now) = match peer {
                Peer::Gantry => counts(self.apps, revision).await,
                _ => {
                    flux_ready(self.ks, revision, &mut flux_seen).await;
                    (flux_seen.len(), 0)
                }
            };
            let t = start.elapsed().as_secs_f64();
            if ready_at.is_none() && ready == n {
                ready_at = Some(t);
                cpu_ready = (self.cpu)();
            }
            if healthy_at.is_none() && healthy_now == n {
                healthy_at = Some(t);
            }
            if last_print.elapsed() > Duration::from_secs(15) {
                eprintln!(
                    "  {} +{t:.0}s: {ready} Ready, {healthy_now} Healthy",
                    peer.label()
                );
                last_print = Instant::now();
            }
            let want_healthy = healthy && peer == Peer::Gantry;
            if let Some(at) = ready_at
                && (!want_healthy || healthy_at.is_some())
            {
                return (at, healthy_at, cpu_ready);
            }
            if t > limit_s() {
                eprintln!(
                    "  {}: {ready} of {n} Ready after {t:.0}s; stopped",
                    peer.label()
                );
                return (ready_at.unwrap_or(f64::INFINITY), healthy_at, cpu_ready);
            }
            tokio::time::sleep(Duration::from_millis(if n > 2000 { 2000 } else { 500 })).await;
        }
    }

    /// Seconds from `start` until Application (Kustomization) `name` is Ready at `revision`.
    async fn one_ready(&self, name: &str, revision: &str, start: Instant) -> f64 {
        loop {
            let ready = match self.peer {
                Peer::Gantry => self
                    .apps
                    .get(name)
                    .await
                    .ok()
                    .and_then(|a| a.status)
                    .is_some_and(|s| {
                        s.last_applied_revision
                            .as_deref()
                            .is_some_and(|r| r.ends_with(revision))
                            && s.conditions
                                .iter()
                                .any(|c| c.type_ == "Ready" && c.status == "True")
                    }),
                _ => self.ks.get(name).await.ok().is_some_and(|k| {
                    let status = &k.data["status"];
                    status["lastAppliedRevision"]
                        .as_str()
                        .is_some_and(|r| r.ends_with(revision))
                        && status["conditions"].as_array().is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                }),
            };
            let t = start.elapsed().as_secs_f64();
            if ready {
                return t;
            }
            if t > limit_s() {
                return f64::INFINITY;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Asks the peer's source to fetch now: the annotation Flux's `flux reconcile source git`
/// sets, and for Gantry any metadata change (a GitRepository is reconciled on every change
/// of its object, as a webhook Receiver would trigger it).
async fn request_fetch(client: &kube::Client, peer: Peer, ns: &str) {
    let now = format!("{:?}", std::time::SystemTime::now());
    match peer {
        Peer::Gantry => {
            let patch =
                json!({"metadata": {"annotations": {"bench.gantry.dev/requested-at": now}}});
            Api::<GitRepository>::namespaced(client.clone(), ns)
                .patch("fleet", &PatchParams::default(), &Patch::Merge(patch))
                .await
                .unwrap();
        }
        _ => {
            let patch =
                json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": now}}});
            flux_sources(client, ns)
                .patch("fleet", &PatchParams::default(), &Patch::Merge(patch))
                .await
                .unwrap();
        }
    }
}

/// Gantry's requests after log line `from`, by whom they serve.
#[derive(Debug, Default)]
struct Scoped {
    total: usize,
    /// For the changed Application: its own object or its target namespace.
    one: usize,
    /// Reads of the source (GitRepository).
    source: usize,
    /// Everything else (the other Applications; Events count here too).
    others: usize,
    others_writes: usize,
}

fn requests_by_scope(log: &Path, from: usize, one_ns: &str, one_app: &str) -> Scoped {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut s = Scoped::default();
    let in_ns = format!("/namespaces/{one_ns}/");
    let app = format!("/applications/{one_app}");
    for line in text.lines().skip(from) {
        if !line.contains("kube_client::client::builder") || !line.contains("requesting") {
            continue;
        }
        s.total += 1;
        if line.contains(&in_ns) || line.contains(&app) {
            s.one += 1;
        } else if line.contains("/gitrepositories") {
            s.source += 1;
        } else {
            s.others += 1;
            let is_write = ["PATCH", "POST", "PUT", "DELETE"]
                .iter()
                .any(|m| line.contains(&format!("http.method={m}")));
            if is_write && !line.contains("dryRun=All") {
                s.others_writes += 1;
            }
        }
    }
    s
}

#[allow(clippy::too_many_arguments)]
async fn run_once(
    client: &kube::Client,
    peer: Peer,
    n: usize,
    idle: Duration,
    server: &GitServer,
    workspace: &Workspace,
    head: &mut String,
    flux_dir: Option<&Path>,
    work: &Path,
) -> Figures {
    // The target namespaces, made before the clock starts.
    let control = TestNamespace::new(
        client,
        &format!("bench-fleet-{}", peer.label().replace('_', "-")),
    )
    .await;
    let prefix = control.name.rsplit('-').next().unwrap().to_string();
    let ns_name = move |i: usize| format!("fl-{prefix}-{i:05}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    create_all(n, |i| {
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
    })
    .await;

    let data = tempfile::tempdir().unwrap();
    let log = work.join(format!("{}.log", peer.label()));
    let mut gantry = None;
    let mut flux = None;
    let pids: Vec<u32> = match peer {
        Peer::Gantry => {
            let c = start_controller_as(
                &control.name,
                data.path(),
                &log,
                "off",
                "info,kube_client::client::builder=debug",
                &kubeconfig_of(peer.user()),
            );
            let pid = c.child.id();
            gantry = Some(c);
            vec![pid]
        }
        Peer::FluxDefault | Peer::FluxTuned => {
            let f = start_flux(flux_dir.unwrap(), peer == Peer::FluxTuned, work);
            let pids = vec![f.source.child.id(), f.kustomize.child.id()];
            flux = Some(f);
            pids
        }
    };
    let cpu = || pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu_before = cpu();

    // The clock starts with the first object: one source, N Applications (Kustomizations).
    let start = Instant::now();
    let url = server.http_url("fleet");
    match peer {
        Peer::Gantry => {
            let repos: Api<GitRepository> = Api::namespaced(client.clone(), &control.name);
            let repo = serde_json::from_value(json!({
                "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
                "metadata": {"name": "fleet"},
                "spec": {"url": url, "interval": "1m", "ref": {"branch": "main"}}
            }))
            .unwrap();
            repos.create(&PostParams::default(), &repo).await.unwrap();
            let apps: Api<Application> = Api::namespaced(client.clone(), &control.name);
            create_all(n, |i| {
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
            })
            .await;
        }
        _ => {
            let sources = flux_sources(client, &control.name);
            let repo = serde_json::from_value(json!({
                "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                "metadata": {"name": "fleet"},
                "spec": {"url": url, "interval": "1m", "ref": {"branch": "main"}}
            }))
            .unwrap();
            sources.create(&PostParams::default(), &repo).await.unwrap();
            let ks = kustomizations(client, &control.name);
            create_all(n, |i| {
                let ks = ks.clone();
                let target = ns_name(i);
                async move {
                    let k = serde_json::from_value(json!({
                        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                        "metadata": {"name": format!("a{i:05}")},
                        "spec": {
                            "sourceRef": {"kind": "GitRepository", "name": "fleet"},
                            "path": format!("./apps/a{i:05}"),
                            "targetNamespace": target,
                            "interval": "10m",
                            "timeout": "5m",
                            "prune": true,
                            "wait": false
                        }
                    }))
                    .unwrap();
                    ks.create(&PostParams::default(), &k).await.unwrap();
                }
            })
            .await;
        }
    }
    eprintln!(
        "{}: {n} created in {:.1}s",
        peer.label(),
        start.elapsed().as_secs_f64()
    );

    let apps: Api<Application> = Api::namespaced(client.clone(), &control.name);
    let ks = kustomizations(client, &control.name);
    let waiter = Waiter {
        peer,
        apps: &apps,
        ks: &ks,
        n,
        cpu: &cpu,
    };
    let (ready_at, healthy_at, cpu_ready) = waiter.all_ready(head, start, true).await;
    let cpu_ready = cpu_ready - cpu_before;
    let peak: f64 = pids.iter().map(|p| peak_rss_mib(*p)).sum();

    // Idle: nothing changes; what does the controller still do?
    tokio::time::sleep(Duration::from_secs(5)).await;
    let from = log_lines(&log);
    let cpu_idle_start = cpu();
    let writes_before = audited_writes(peer.user());
    let flux_ports = flux.as_ref().map(|f| f.metrics.clone()).unwrap_or_default();
    let flux_before = flux_requests(&flux_ports).await;
    tokio::time::sleep(idle).await;
    let idle_cpu = cpu() - cpu_idle_start;
    let idle_writes = audited_writes(peer.user()) - writes_before;
    let idle_requests = match peer {
        Peer::Gantry => {
            let (total, logged_writes, _) = requests_since(&log, from);
            assert_eq!(
                logged_writes, idle_writes,
                "log and audit disagree on writes"
            );
            total as f64
        }
        _ => flux_requests(&flux_ports).await - flux_before,
    };
    let per_min = |x: f64| x / idle.as_secs_f64() * 60.0;

    // Change at scale: one commit that changes every Application, then one that changes
    // one of them. The source is asked to fetch at once (as a webhook receiver would).
    let tag = format!(
        "{}-{}",
        peer.label(),
        std::process::id() ^ start.elapsed().as_nanos() as u32
    );
    for i in 0..n {
        workspace.write(&app_file(i), &fleet_objects(i, Some(&format!("all-{tag}"))));
    }
    let every = workspace.commit_and_push("change every application");
    let t = Instant::now();
    request_fetch(client, peer, &control.name).await;
    let (change_all_s, _, _) = waiter.all_ready(&every, t, false).await;
    eprintln!(
        "{}: a commit changing all {n}: {change_all_s:.1}s",
        peer.label()
    );

    let k = n / 2;
    workspace.write(&app_file(k), &fleet_objects(k, Some(&format!("one-{tag}"))));
    let one = workspace.commit_and_push("change one application");
    let from = log_lines(&log);
    let flux_before = flux_requests(&flux_ports).await;
    let t = Instant::now();
    request_fetch(client, peer, &control.name).await;
    let change_one_s = waiter.one_ready(&format!("a{k:05}"), &one, t).await;
    let (change_one_all_s, _, _) = waiter.all_ready(&one, t, false).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let scoped = match peer {
        Peer::Gantry => Some(requests_by_scope(
            &log,
            from,
            &ns_name(k),
            &format!("a{k:05}"),
        )),
        _ => None,
    };
    let change_one_requests = match &scoped {
        Some(s) => s.total as f64,
        None => flux_requests(&flux_ports).await - flux_before,
    };
    eprintln!(
        "{}: a commit changing 1 of {n}: {change_one_s:.1}s (all at the revision after {change_one_all_s:.1}s), {change_one_requests} requests; {scoped:?}",
        peer.label()
    );
    *head = one;

    let figures = Figures {
        ready_s: ready_at,
        healthy_s: healthy_at,
        peak_rss_mib: peak,
        cpu_s_to_ready: cpu_ready,
        idle_cpu_percent: idle_cpu / idle.as_secs_f64() * 100.0,
        idle_writes,
        idle_requests_per_min: per_min(idle_requests),
        change_all_s,
        change_one_s,
        change_one_all_s,
        change_one_requests,
        change_one_others: scoped.map(|s| (s.others, s.others_writes)),
    };
    eprintln!("{}: {figures:?}", peer.label());

    // Leave a quiet cluster: controllers stopped, finalizers off, namespaces deleted.
    drop(gantry);
    drop(flux);
    let no_finalizers = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    create_all(n, |i| {
        let (apps, ks) = (apps.clone(), ks.clone());
        let no_finalizers = no_finalizers.clone();
        async move {
            let name = format!("a{i:05}");
            let _ = apps
                .patch(&name, &PatchParams::default(), &no_finalizers)
                .await;
            let _ = ks
                .patch(&name, &PatchParams::default(), &no_finalizers)
                .await;
        }
    })
    .await;
    let _ = Api::<GitRepository>::namespaced(client.clone(), &control.name)
        .patch("fleet", &PatchParams::default(), &no_finalizers)
        .await;
    let _ = flux_sources(client, &control.name)
        .patch("fleet", &PatchParams::default(), &no_finalizers)
        .await;
    create_all(n, |i| {
        let namespaces = namespaces.clone();
        let name = ns_name(i);
        async move {
            let _ = namespaces.delete(&name, &DeleteParams::default()).await;
        }
    })
    .await;
    drop(control);
    // The namespace controller's deletions would run into the next measurement.
    let gone = Instant::now();
    // (`GANTRY_FLEET_CLEANUP_WAIT_S`, 600 s: at 10,000 namespaces, recreating the local
    // cluster is quicker than waiting.)
    let cleanup_wait = env_or("GANTRY_FLEET_CLEANUP_WAIT_S", 600) as u64;
    while gone.elapsed() < Duration::from_secs(cleanup_wait) {
        let left = namespaces
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|ns| {
                        ns.metadata
                            .name
                            .as_deref()
                            .is_some_and(|n| n.starts_with("fl-"))
                    })
                    .count()
            })
            .unwrap_or(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    figures
}

#[tokio::main]
async fn main() {
    let n = env_or("GANTRY_FLEET_N", 1000);
    let idle = Duration::from_secs(env_or("GANTRY_FLEET_IDLE_S", 120) as u64);
    let client = client().await;
    install_crds(&client).await;
    let flux_dir = std::env::var_os("GANTRY_FLUX_DIR").map(std::path::PathBuf::from);
    let wanted = std::env::var("GANTRY_FLEET_PEERS").unwrap_or_else(|_| "gantry,flux".into());
    let mut peers = vec![];
    if wanted.contains("gantry") {
        peers.push(Peer::Gantry);
    }
    if wanted.contains("flux") {
        let dir = flux_dir.as_deref().expect(
            "GANTRY_FLUX_DIR (tests/cluster/build-flux.sh prints it; make bench-fleet sets it)",
        );
        kubectl_apply(&dir.join("crds"));
        peers.push(Peer::FluxTuned);
        if !wanted.contains("tuned-only") {
            peers.push(Peer::FluxDefault);
        }
    }
    let work = tempfile::tempdir().unwrap();
    // The controllers' logs: in the work directory, or kept in GANTRY_FLEET_LOGS.
    let logs = std::env::var_os("GANTRY_FLEET_LOGS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| work.path().to_path_buf());
    std::fs::create_dir_all(&logs).unwrap();
    write_fleet(&work.path().join("repo"), n);
    let server = GitServer::start();
    let mut head = server.create_repo_from_dir("fleet", &work.path().join("repo"));
    let workspace = Workspace::clone_from(&server, "fleet");

    let mut all: Vec<(Peer, Vec<Figures>)> = peers.iter().map(|p| (*p, vec![])).collect();
    for run in 0..runs() {
        for (peer, figures) in all.iter_mut() {
            eprintln!("run {run}: {}", peer.label());
            let f = run_once(
                &client,
                *peer,
                n,
                idle,
                &server,
                &workspace,
                &mut head,
                flux_dir.as_deref(),
                &logs,
            )
            .await;
            figures.push(f);
        }
    }
    let mut ready = std::collections::HashMap::new();
    let mut rss = std::collections::HashMap::new();
    let mut change_all = std::collections::HashMap::new();
    let mut change_one = std::collections::HashMap::new();
    for (peer, figures) in &all {
        let l = peer.label();
        let med = |f: &dyn Fn(&Figures) -> f64| median(figures.iter().map(f).collect());
        let per_run = |f: &dyn Fn(&Figures) -> f64| {
            figures
                .iter()
                .map(|x| format!("{:.1}", f(x)))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let r = med(&|f| f.ready_s);
        ready.insert(*peer, r);
        rss.insert(*peer, med(&|f| f.peak_rss_mib));
        println!(
            "RESULT fleet_{n}_{l}_all_ready_s={r:.1}   ({})",
            per_run(&|f| f.ready_s)
        );
        if *peer == Peer::Gantry {
            println!(
                "RESULT fleet_{n}_{l}_all_healthy_s={:.1}   ({})",
                med(&|f| f.healthy_s.unwrap_or(f64::NAN)),
                per_run(&|f| f.healthy_s.unwrap_or(f64::NAN))
            );
        }
        println!(
            "RESULT fleet_{n}_{l}_peak_rss_mib={:.1}   ({})",
            med(&|f| f.peak_rss_mib),
            per_run(&|f| f.peak_rss_mib)
        );
        println!(
            "RESULT fleet_{n}_{l}_cpu_s_to_ready={:.1}   ({})",
            med(&|f| f.cpu_s_to_ready),
            per_run(&|f| f.cpu_s_to_ready)
        );
        println!(
            "RESULT fleet_{n}_{l}_idle_cpu_percent={:.2}   ({})",
            med(&|f| f.idle_cpu_percent),
            per_run(&|f| f.idle_cpu_percent)
        );
        println!(
            "RESULT fleet_{n}_{l}_idle_writes={:.0}   ({})",
            med(&|f| f.idle_writes as f64),
            per_run(&|f| f.idle_writes as f64)
        );
        println!(
            "RESULT fleet_{n}_{l}_idle_requests_per_min={:.1}   ({})",
            med(&|f| f.idle_requests_per_min),
            per_run(&|f| f.idle_requests_per_min)
        );
        let c = med(&|f| f.change_all_s);
        change_all.insert(*peer, c);
        println!(
            "RESULT fleet_{n}_{l}_change_all_ready_s={c:.1}   ({})",
            per_run(&|f| f.change_all_s)
        );
        let c = med(&|f| f.change_one_s);
        change_one.insert(*peer, c);
        println!(
            "RESULT fleet_{n}_{l}_change_one_ready_s={c:.1}   ({})",
            per_run(&|f| f.change_one_s)
        );
        println!(
            "RESULT fleet_{n}_{l}_change_one_all_at_revision_s={:.1}   ({})",
            med(&|f| f.change_one_all_s),
            per_run(&|f| f.change_one_all_s)
        );
        println!(
            "RESULT fleet_{n}_{l}_change_one_requests={:.0}   ({})",
            med(&|f| f.change_one_requests),
            per_run(&|f| f.change_one_requests)
        );
        if *peer == Peer::Gantry {
            let others = |f: &Figures| f.change_one_others.map_or(f64::NAN, |o| o.0 as f64);
            let writes = |f: &Figures| f.change_one_others.map_or(f64::NAN, |o| o.1 as f64);
            let per_app = |f: &Figures| others(f) / (n.max(2) - 1) as f64;
            println!(
                "RESULT fleet_{n}_{l}_change_one_requests_per_other_app={:.2}   ({})",
                med(&per_app),
                per_run(&per_app)
            );
            println!(
                "RESULT fleet_{n}_{l}_change_one_writes_to_others={:.0}   ({})",
                med(&writes),
                per_run(&writes)
            );
        }
    }
    for peer in [Peer::FluxTuned, Peer::FluxDefault] {
        if let (Some(g), Some(p)) = (ready.get(&Peer::Gantry), ready.get(&peer)) {
            println!(
                "RESULT fleet_{n}_ready_speedup_vs_{}={:.2}",
                peer.label(),
                p / g
            );
            println!(
                "RESULT fleet_{n}_memory_vs_{}={:.2}",
                peer.label(),
                rss[&Peer::Gantry] / rss[&peer]
            );
            println!(
                "RESULT fleet_{n}_change_all_speedup_vs_{}={:.2}",
                peer.label(),
                change_all[&peer] / change_all[&Peer::Gantry]
            );
            println!(
                "RESULT fleet_{n}_change_one_speedup_vs_{}={:.2}",
                peer.label(),
                change_one[&peer] / change_one[&Peer::Gantry]
            );
        }
    }
}
