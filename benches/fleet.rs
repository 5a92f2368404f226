//! `make bench-fleet` (part of `make bench`): a fleet of Applications on one controller.
//! N Applications (`GANTRY_FLEET_N`, 1,000 by default; 10,000 for the large figure),
//! each a path of one repository served over smart HTTP with 4 objects (Deployment with 0
//! replicas, Service, ConfigMap, ServiceAccount) in its own namespace. Figures: time until
//! all are Ready at the revision and until all are Healthy, the controller's peak RSS and
//! CPU-seconds to Ready, and over an idle window after that (`GANTRY_FLEET_IDLE_S`, 120 s)
//! its CPU, its API requests and its writes (from its own request log; writes must be 0).
//! The Applications' and Kustomizations' interval is `GANTRY_FLEET_APP_INTERVAL` (10m); a
//! shorter one brings their periodic full check into the idle window. With
//! `GANTRY_FLEET_FLOOR=1` the API server's floor for the same objects (plain creates, at
//! Gantry's concurrency) is measured first and Gantry's time to Ready set against it.
//!
//! Peers in the same run, on the same control plane, from the same smart-HTTP Git server:
//! Flux's source-controller and kustomize-controller (built from their Go modules by
//! `tests/cluster/build-flux.sh`, `GANTRY_FLUX_DIR`), run out of cluster at their defaults
//! and with the settings of Flux's own published benchmark (`--concurrent=20
//! --kube-api-qps=500 --kube-api-burst=1000 --requeue-dependency=5s` on both). One
//! GitRepository, N Kustomizations (`wait: false`: Ready once applied, as Gantry's Ready).
//! Each controller runs as its own client-certificate user, so its writes are counted from
//! the API server's audit log as well; Flux's memory and CPU are both processes summed.
//! `GANTRY_FLEET_PEERS=gantry` runs Gantry alone; `gantry,gantry-base` with
//! `GANTRY_BASE_BIN` compares this build with another (e.g. before a change) in one run.
//!
//! Two repository layouts (`GANTRY_FLEET_LAYOUT`: `one`, `per-app` or `both`, the default):
//! one repository and one GitRepository for the whole fleet, or one of each per
//! Application (sources at a 10-minute interval; the per-app figures are named
//! `fleet_N_per_app_…`, and a commit to every repository is not measured). Both tools'
//! scratch — Flux's `TMPDIR` and artifact storage, Gantry's data directory — is on the same
//! filesystem, `GANTRY_FLEET_SCRATCH` (`/dev/shm`, tmpfs, by default, as in Flux's own
//! benchmark).

#[path = "../tests/e2e/support/mod.rs"]
#[allow(dead_code)]
mod support;

#[allow(dead_code)]
mod common;

#[path = "fleet_parts/floor.rs"]
mod floor;
#[path = "fleet_parts/flux.rs"]
mod flux;
#[path = "fleet_parts/measure.rs"]
mod measure;
#[path = "fleet_parts/wait.rs"]
mod wait;

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gantry::api::{Application, GitRepository};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use common::{
    env_or, log_lines, median, peak_rss_mib, requests_since, runs, start_controller_with,
};
use flux::{flux_requests, flux_sources, kubectl_apply, kustomizations, start_flux};
use measure::{
    audited_writes, cpu_seconds, ended_children_cpu_seconds, kubeconfig_of, requests_by_kind,
    requests_by_scope,
};
use support::app::Workspace;
use support::cluster::{TestNamespace, client, install_crds};
use support::git::GitServer;
use wait::{Peer, Waiter, request_fetch};

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

/// How the fleet's manifests are kept in Git.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// One repository and one GitRepository for every Application.
    One,
    /// A repository and a GitRepository per Application.
    PerApp,
}

impl Layout {
    /// The name of the repository (and of the GitRepository) of Application `i`.
    fn source(self, i: usize) -> String {
        match self {
            Layout::One => "fleet".into(),
            Layout::PerApp => format!("fleet-a{i:05}"),
        }
    }

    /// How its RESULT lines begin.
    fn prefix(self, n: usize) -> String {
        match self {
            Layout::One => format!("fleet_{n}"),
            Layout::PerApp => format!("fleet_{n}_per_app"),
        }
    }

    fn interval(self) -> &'static str {
        match self {
            Layout::One => "1m",
            Layout::PerApp => "10m",
        }
    }
}

/// Where both tools keep their scratch: `GANTRY_FLEET_SCRATCH`, else tmpfs when there is one.
fn scratch() -> std::path::PathBuf {
    std::env::var_os("GANTRY_FLEET_SCRATCH")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let shm = std::path::PathBuf::from("/dev/shm");
            if shm.is_dir() {
                shm
            } else {
                std::env::temp_dir()
            }
        })
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
    /// Gantry: requests from the first object to all Healthy, per Application (its watches'
    /// initial lists included, spread over N).
    initial_requests_per_app: Option<f64>,
    /// Upload-pack requests the Git server served until all were Ready, per source.
    git_requests_per_source: f64,
    /// CPU of the Git server's processes (`git http-backend` and `upload-pack`) until all
    /// were Ready, per source.
    git_server_cpu_ms_per_source: f64,
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

/// What a run needs of the Git server and the bench's settings.
struct Fleet<'a> {
    n: usize,
    idle: Duration,
    /// The Applications' (and Kustomizations') interval: their periodic full check.
    app_interval: &'a str,
    layout: Layout,
    server: &'a GitServer,
    /// The clone commits are made in: of the one repository, or of the repository of the
    /// Application a commit changes (per-app).
    workspace: &'a Workspace,
    flux_dir: Option<&'a Path>,
    /// Logs.
    work: &'a Path,
    /// Both tools' scratch.
    scratch: &'a Path,
}

async fn run_once(
    client: &kube::Client,
    peer: Peer,
    fleet: &Fleet<'_>,
    head: &mut String,
) -> Figures {
    let Fleet {
        n,
        idle,
        app_interval,
        layout,
        server,
        workspace,
        flux_dir,
        work,
        scratch,
    } = *fleet;
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

    let data = tempfile::tempdir_in(scratch).unwrap();
    let log = work.join(format!("{}-{layout:?}.log", peer.label()));
    let mut gantry = None;
    let mut flux = None;
    let pids: Vec<u32> = match peer {
        Peer::Gantry | Peer::GantryBase => {
            let binary = match peer {
                Peer::GantryBase => std::env::var_os("GANTRY_BASE_BIN")
                    .expect("GANTRY_BASE_BIN: the other build's binary")
                    .into(),
                _ => common::controller_binary(),
            };
            let c = start_controller_with(
                &binary,
                &control.name,
                data.path(),
                &log,
                "off",
                // Requests are counted from the client's debug lines; `GANTRY_FLEET_LOG` adds
                // other targets.
                &std::env::var("GANTRY_FLEET_LOG").map_or_else(
                    |_| "info,kube_client::client::builder=debug".to_string(),
                    |more| format!("info,kube_client::client::builder=debug,{more}"),
                ),
                &kubeconfig_of(peer.user()),
            );
            let pid = c.child.id();
            gantry = Some(c);
            vec![pid]
        }
        Peer::FluxDefault | Peer::FluxTuned => {
            let f = start_flux(
                flux_dir.unwrap(),
                peer == Peer::FluxTuned,
                work,
                scratch,
                &kubeconfig_of(peer.user()),
            );
            let pids = vec![f.source.child.id(), f.kustomize.child.id()];
            flux = Some(f);
            pids
        }
    };
    let cpu = || pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu_before = cpu();

    // The clock starts with the first object: one source, N Applications (Kustomizations).
    let initial_from = log_lines(&log);
    let fetches_before = server.fetch_requests();
    let git_cpu_before = ended_children_cpu_seconds();
    let start = Instant::now();
    let sources = match layout {
        Layout::One => 1,
        Layout::PerApp => n,
    };
    match peer {
        Peer::Gantry | Peer::GantryBase => {
            let repos: Api<GitRepository> = Api::namespaced(client.clone(), &control.name);
            create_all(sources, |i| {
                let repos = repos.clone();
                let name = layout.source(i);
                let url = server.http_url(&name);
                async move {
                    let repo = serde_json::from_value(json!({
                        "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
                        "metadata": {"name": name},
                        "spec": {"url": url, "interval": layout.interval(), "ref": {"branch": "main"}}
                    }))
                    .unwrap();
                    repos.create(&PostParams::default(), &repo).await.unwrap();
                }
            })
            .await;
            let apps: Api<Application> = Api::namespaced(client.clone(), &control.name);
            create_all(n, |i| {
                let apps = apps.clone();
                let target = ns_name(i);
                async move {
                    let app = serde_json::from_value(json!({
                        "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
                        "metadata": {"name": format!("a{i:05}")},
                        "spec": {
                            "sourceRef": {"kind": "GitRepository", "name": layout.source(i)},
                            "path": format!("apps/a{i:05}"),
                            "targetNamespace": target,
                            "interval": app_interval,
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
            let flux_repos = flux_sources(client, &control.name);
            create_all(sources, |i| {
                let flux_repos = flux_repos.clone();
                let name = layout.source(i);
                let url = server.http_url(&name);
                async move {
                    let repo = serde_json::from_value(json!({
                        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                        "metadata": {"name": name},
                        "spec": {"url": url, "interval": layout.interval(), "ref": {"branch": "main"}}
                    }))
                    .unwrap();
                    flux_repos.create(&PostParams::default(), &repo).await.unwrap();
                }
            })
            .await;
            let ks = kustomizations(client, &control.name);
            create_all(n, |i| {
                let ks = ks.clone();
                let target = ns_name(i);
                async move {
                    let k = serde_json::from_value(json!({
                        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                        "metadata": {"name": format!("a{i:05}")},
                        "spec": {
                            "sourceRef": {"kind": "GitRepository", "name": layout.source(i)},
                            "path": format!("./apps/a{i:05}"),
                            "targetNamespace": target,
                            "interval": app_interval,
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
    // Per-app, each repository has a commit of its own: any revision counts at first.
    let initial = (layout == Layout::One).then_some(head.as_str());
    let (ready_at, healthy_at, cpu_ready) = waiter.all_ready(initial, start, true).await;
    let cpu_ready = cpu_ready - cpu_before;
    let git_requests_per_source =
        (server.fetch_requests() - fetches_before) as f64 / sources as f64;
    let git_server_cpu_ms_per_source =
        (ended_children_cpu_seconds() - git_cpu_before) * 1000.0 / sources as f64;
    let peak: f64 = pids.iter().map(|p| peak_rss_mib(*p)).sum();
    let initial_requests_per_app = peer.is_gantry().then(|| {
        let to = log_lines(&log);
        let kinds = requests_by_kind(&log, initial_from, to);
        let total: usize = kinds.iter().map(|(_, c)| c).sum();
        eprintln!("{}: initial sync requests per Application:", peer.label());
        for (kind, count) in &kinds {
            eprintln!("  {:>7.2}  {kind}", *count as f64 / n as f64);
        }
        total as f64 / n as f64
    });

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
        Peer::Gantry | Peer::GantryBase => {
            let (total, logged_writes, _) = requests_since(&log, from);
            assert_eq!(
                logged_writes, idle_writes,
                "log and audit disagree on writes"
            );
            eprintln!("{}: idle requests per Application:", peer.label());
            for (kind, count) in requests_by_kind(&log, from, log_lines(&log)) {
                eprintln!("  {:>7.2}  {kind}", count as f64 / n as f64);
            }
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
    // (`GANTRY_FLEET_CHANGE_ALL=0` leaves it out, e.g. at 10,000.)
    let change_all_s = if layout == Layout::One && env_or("GANTRY_FLEET_CHANGE_ALL", 1) == 1 {
        for i in 0..n {
            workspace.write(&app_file(i), &fleet_objects(i, Some(&format!("all-{tag}"))));
        }
        let every = workspace.commit_and_push("change every application");
        let t = Instant::now();
        request_fetch(client, peer, &control.name, "fleet").await;
        let (change_all_s, _, _) = waiter.all_ready(Some(&every), t, false).await;
        eprintln!(
            "{}: a commit changing all {n}: {change_all_s:.1}s",
            peer.label()
        );
        change_all_s
    } else {
        f64::NAN
    };

    let k = n / 2;
    workspace.write(&app_file(k), &fleet_objects(k, Some(&format!("one-{tag}"))));
    let one = workspace.commit_and_push("change one application");
    let from = log_lines(&log);
    let flux_before = flux_requests(&flux_ports).await;
    let t = Instant::now();
    request_fetch(client, peer, &control.name, &layout.source(k)).await;
    let change_one_s = waiter.one_ready(&format!("a{k:05}"), &one, t).await;
    let change_one_all_s = if layout == Layout::One {
        waiter.all_ready(Some(&one), t, false).await.0
    } else {
        f64::NAN
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let scoped = match peer {
        Peer::Gantry | Peer::GantryBase => Some(requests_by_scope(
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
    if layout == Layout::One {
        *head = one;
    }

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
        initial_requests_per_app,
        git_requests_per_source,
        git_server_cpu_ms_per_source,
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
    create_all(sources, |i| {
        let no_finalizers = no_finalizers.clone();
        let name = layout.source(i);
        let repos = Api::<GitRepository>::namespaced(client.clone(), &control.name);
        let flux_repos = flux_sources(client, &control.name);
        async move {
            let _ = repos
                .patch(&name, &PatchParams::default(), &no_finalizers)
                .await;
            let _ = flux_repos
                .patch(&name, &PatchParams::default(), &no_finalizers)
                .await;
        }
    })
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
    // (`GANTRY_FLEET_CLEANUP_WAIT_S`, 600 s: at 10,000 namespaces, recreating the local
    // cluster is quicker than waiting.)
    let cleanup_wait = env_or("GANTRY_FLEET_CLEANUP_WAIT_S", 600) as u64;
    floor::wait_namespaces_gone(client, "fl-", Duration::from_secs(cleanup_wait)).await;
    figures
}

#[tokio::main]
async fn main() {
    let n = env_or("GANTRY_FLEET_N", 1000);
    let idle = Duration::from_secs(env_or("GANTRY_FLEET_IDLE_S", 120) as u64);
    // The Applications' interval (`GANTRY_FLEET_APP_INTERVAL`, 10m): a shorter one brings
    // their periodic full check into the idle window.
    let app_interval = std::env::var("GANTRY_FLEET_APP_INTERVAL").unwrap_or_else(|_| "10m".into());
    let client = client().await;
    install_crds(&client).await;
    let flux_dir = std::env::var_os("GANTRY_FLUX_DIR").map(std::path::PathBuf::from);
    let wanted = std::env::var("GANTRY_FLEET_PEERS").unwrap_or_else(|_| "gantry,flux".into());
    let wanted: Vec<&str> = wanted.split(',').map(str::trim).collect();
    let mut peers = vec![];
    if wanted.contains(&"gantry") {
        peers.push(Peer::Gantry);
    }
    // Two builds of Gantry in one run: `GANTRY_FLEET_PEERS=gantry,gantry-base` with
    // `GANTRY_BASE_BIN` the other build's binary.
    if wanted.contains(&"gantry-base") {
        peers.push(Peer::GantryBase);
    }
    if wanted.iter().any(|w| w.starts_with("flux")) {
        let dir = flux_dir.as_deref().expect(
            "GANTRY_FLUX_DIR (tests/cluster/build-flux.sh prints it; make bench-fleet sets it)",
        );
        kubectl_apply(&dir.join("crds"));
        peers.push(Peer::FluxTuned);
        if !wanted.contains(&"tuned-only") {
            peers.push(Peer::FluxDefault);
        }
    }
    let work = tempfile::tempdir().unwrap();
    // The controllers' logs: in the work directory, or kept in GANTRY_FLEET_LOGS.
    let logs = std::env::var_os("GANTRY_FLEET_LOGS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| work.path().to_path_buf());
    std::fs::create_dir_all(&logs).unwrap();
    let scratch = scratch();
    eprintln!("both tools' scratch: {}", scratch.display());
    let layouts = match std::env::var("GANTRY_FLEET_LAYOUT").as_deref() {
        Ok("one") => vec![Layout::One],
        Ok("per-app") => vec![Layout::PerApp],
        _ => vec![Layout::One, Layout::PerApp],
    };
    // The API server's floor for the same objects, once (it does not depend on the layout).
    let floor = if env_or("GANTRY_FLEET_FLOOR", 0) == 1 {
        let wait = Duration::from_secs(env_or("GANTRY_FLEET_CLEANUP_WAIT_S", 600) as u64);
        Some(floor::floor_s(&client, n, |i| fleet_objects(i, None), wait).await)
    } else {
        None
    };
    let server = GitServer::start();
    for layout in layouts {
        let (mut head, workspace) = match layout {
            Layout::One => {
                write_fleet(&work.path().join("repo"), n);
                let head = server.create_repo_from_dir("fleet", &work.path().join("repo"));
                (head, Workspace::clone_from(&server, "fleet"))
            }
            Layout::PerApp => {
                create_per_app_repos(&server, n);
                let changed = layout.source(n / 2);
                (String::new(), Workspace::clone_from(&server, &changed))
            }
        };
        let fleet = Fleet {
            n,
            idle,
            app_interval: &app_interval,
            layout,
            server: &server,
            workspace: &workspace,
            flux_dir: flux_dir.as_deref(),
            work: &logs,
            scratch: &scratch,
        };
        let mut all: Vec<(Peer, Vec<Figures>)> = peers.iter().map(|p| (*p, vec![])).collect();
        for run in 0..runs() {
            for (peer, figures) in all.iter_mut() {
                eprintln!("run {run}: {} ({layout:?})", peer.label());
                figures.push(run_once(&client, *peer, &fleet, &mut head).await);
            }
        }
        print_results(&layout.prefix(n), n, &all, floor);
    }
}

/// A repository per Application, each with that Application's directory only.
fn create_per_app_repos(server: &GitServer, n: usize) {
    let started = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let dir = tempfile::tempdir().unwrap();
                    let file = dir.path().join(app_file(i));
                    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                    std::fs::write(file, fleet_objects(i, None)).unwrap();
                    server.create_repo_from_dir(&Layout::PerApp.source(i), dir.path());
                }
            });
        }
    });
    eprintln!(
        "{n} repositories created in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// The RESULT lines of one layout.
fn print_results(prefix: &str, n: usize, all: &[(Peer, Vec<Figures>)], floor: Option<f64>) {
    let mut ready = std::collections::HashMap::new();
    let mut rss = std::collections::HashMap::new();
    let mut change_all = std::collections::HashMap::new();
    let mut change_one = std::collections::HashMap::new();
    for (peer, figures) in all {
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
            "RESULT {prefix}_{l}_all_ready_s={r:.1}   ({})",
            per_run(&|f| f.ready_s)
        );
        if peer.is_gantry() {
            let per_app = |f: &Figures| f.initial_requests_per_app.unwrap_or(f64::NAN);
            println!(
                "RESULT {prefix}_{l}_initial_requests_per_app={:.1}   ({})",
                med(&per_app),
                per_run(&per_app)
            );
            println!(
                "RESULT {prefix}_{l}_all_healthy_s={:.1}   ({})",
                med(&|f| f.healthy_s.unwrap_or(f64::NAN)),
                per_run(&|f| f.healthy_s.unwrap_or(f64::NAN))
            );
        }
        println!(
            "RESULT {prefix}_{l}_git_requests_per_source={:.1}   ({})",
            med(&|f| f.git_requests_per_source),
            per_run(&|f| f.git_requests_per_source)
        );
        println!(
            "RESULT {prefix}_{l}_git_server_cpu_ms_per_source={:.1}   ({})",
            med(&|f| f.git_server_cpu_ms_per_source),
            per_run(&|f| f.git_server_cpu_ms_per_source)
        );
        println!(
            "RESULT {prefix}_{l}_peak_rss_mib={:.1}   ({})",
            med(&|f| f.peak_rss_mib),
            per_run(&|f| f.peak_rss_mib)
        );
        println!(
            "RESULT {prefix}_{l}_cpu_s_to_ready={:.1}   ({})",
            med(&|f| f.cpu_s_to_ready),
            per_run(&|f| f.cpu_s_to_ready)
        );
        println!(
            "RESULT {prefix}_{l}_idle_cpu_percent={:.2}   ({})",
            med(&|f| f.idle_cpu_percent),
            per_run(&|f| f.idle_cpu_percent)
        );
        println!(
            "RESULT {prefix}_{l}_idle_writes={:.0}   ({})",
            med(&|f| f.idle_writes as f64),
            per_run(&|f| f.idle_writes as f64)
        );
        println!(
            "RESULT {prefix}_{l}_idle_requests_per_min={:.1}   ({})",
            med(&|f| f.idle_requests_per_min),
            per_run(&|f| f.idle_requests_per_min)
        );
        let c = med(&|f| f.change_all_s);
        change_all.insert(*peer, c);
        println!(
            "RESULT {prefix}_{l}_change_all_ready_s={c:.1}   ({})",
            per_run(&|f| f.change_all_s)
        );
        let c = med(&|f| f.change_one_s);
        change_one.insert(*peer, c);
        println!(
            "RESULT {prefix}_{l}_change_one_ready_s={c:.1}   ({})",
            per_run(&|f| f.change_one_s)
        );
        println!(
            "RESULT {prefix}_{l}_change_one_all_at_revision_s={:.1}   ({})",
            med(&|f| f.change_one_all_s),
            per_run(&|f| f.change_one_all_s)
        );
        println!(
            "RESULT {prefix}_{l}_change_one_requests={:.0}   ({})",
            med(&|f| f.change_one_requests),
            per_run(&|f| f.change_one_requests)
        );
        if peer.is_gantry() {
            let others = |f: &Figures| f.change_one_others.map_or(f64::NAN, |o| o.0 as f64);
            let writes = |f: &Figures| f.change_one_others.map_or(f64::NAN, |o| o.1 as f64);
            let per_app = |f: &Figures| others(f) / (n.max(2) - 1) as f64;
            println!(
                "RESULT {prefix}_{l}_change_one_requests_per_other_app={:.2}   ({})",
                med(&per_app),
                per_run(&per_app)
            );
            println!(
                "RESULT {prefix}_{l}_change_one_writes_to_others={:.0}   ({})",
                med(&writes),
                per_run(&writes)
            );
        }
    }
    if let Some(floor) = floor {
        println!("RESULT fleet_{n}_floor_s={floor:.1}");
        if let Some(g) = ready.get(&Peer::Gantry) {
            println!("RESULT {prefix}_gantry_ready_vs_floor={:.2}", g / floor);
        }
    }
    // The other build against this one: above 1, this build is sooner (or smaller).
    if let (Some(g), Some(b)) = (ready.get(&Peer::Gantry), ready.get(&Peer::GantryBase)) {
        println!("RESULT {prefix}_ready_base_over_new={:.2}", b / g);
        println!(
            "RESULT {prefix}_memory_new_over_base={:.2}",
            rss[&Peer::Gantry] / rss[&Peer::GantryBase]
        );
        println!(
            "RESULT {prefix}_change_all_base_over_new={:.2}",
            change_all[&Peer::GantryBase] / change_all[&Peer::Gantry]
        );
        println!(
            "RESULT {prefix}_change_one_base_over_new={:.2}",
            change_one[&Peer::GantryBase] / change_one[&Peer::Gantry]
        );
    }
    for peer in [Peer::FluxTuned, Peer::FluxDefault] {
        if let (Some(g), Some(p)) = (ready.get(&Peer::Gantry), ready.get(&peer)) {
            println!(
                "RESULT {prefix}_ready_speedup_vs_{}={:.2}",
                peer.label(),
                p / g
            );
            println!(
                "RESULT {prefix}_memory_vs_{}={:.2}",
                peer.label(),
                rss[&Peer::Gantry] / rss[&peer]
            );
            println!(
                "RESULT {prefix}_change_all_speedup_vs_{}={:.2}",
                peer.label(),
                change_all[&peer] / change_all[&Peer::Gantry]
            );
            println!(
                "RESULT {prefix}_change_one_speedup_vs_{}={:.2}",
                peer.label(),
                change_one[&peer] / change_one[&Peer::Gantry]
            );
        }
    }
}
