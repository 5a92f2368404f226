//! `make bench-isolation` (part of `make bench`): one hostile tenant against a well-behaved
//! one on the same controller. The well-behaved tenant pushes commits (20 ConfigMaps and a
//! Deployment, one value changed per commit) and its time from push to Ready is measured,
//! first alone, then while a hostile tenant in another namespace runs every case at once:
//! a Git tree nested 60,000 deep, 40 sources on a server that accepts and never answers, a
//! CEL rule nesting two macros over a 5,000-key ConfigMap, and 12 Applications whose PreSync
//! hooks never finish (with `--concurrent=8`, fewer slots than stuck Applications). Meanwhile
//! `/healthz` is probed every 200 ms. Prints medians of `GANTRY_BENCH_RUNS` (5) pushes each,
//! their ratio (target ≤ 2), the slowest probe, and whether the controller restarted.

#[path = "../tests/e2e/support/mod.rs"]
#[allow(dead_code)]
mod support;

#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use gantry::api::{Application, GitRepository};
use kube::api::{Api, PostParams};
use serde_json::json;

use common::{env_or, median, wait_for_app};
use support::app::{Workspace, condition};
use support::cluster::{TestNamespace, client, install_crds};
use support::controller::GantryController;
use support::git::GitServer;
use support::hostile::{COSTLY_RULE, STUCK_PRESYNC_JOB, big_configmap, silent_server};
use support::random_suffix;

const LIMIT: Duration = Duration::from_secs(300);

fn cm(name: &str, value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: \"{value}\"\n")
}

fn labelled(mut v: serde_json::Value, shard: &str) -> serde_json::Value {
    v["metadata"]["labels"] = json!({"gantry.dev/shard": shard});
    v
}

async fn create_source(client: &kube::Client, ns: &str, name: &str, url: &str, shard: &str) {
    let api: Api<GitRepository> = Api::namespaced(client.clone(), ns);
    let repo = labelled(
        json!({"apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
               "metadata": {"name": name},
               "spec": {"url": url, "interval": "1s", "timeout": "10s", "ref": {"branch": "main"}}}),
        shard,
    );
    api.create(
        &PostParams::default(),
        &serde_json::from_value(repo).unwrap(),
    )
    .await
    .unwrap();
}

async fn create_app(
    client: &kube::Client,
    ns: &str,
    name: &str,
    source: &str,
    spec: serde_json::Value,
    shard: &str,
) {
    let api: Api<Application> = Api::namespaced(client.clone(), ns);
    let mut full = json!({"sourceRef": {"kind": "GitRepository", "name": source}, "interval": "10m", "timeout": "10m"});
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    let app = labelled(
        json!({"apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
               "metadata": {"name": name}, "spec": full}),
        shard,
    );
    api.create(
        &PostParams::default(),
        &serde_json::from_value(app).unwrap(),
    )
    .await
    .unwrap();
}

/// Push one change and wait for the well-behaved Application to be Ready at it; ms.
async fn push_to_ready(ws: &Workspace, apps: &Api<Application>, n: usize) -> f64 {
    ws.write("deploy/cm-0.yaml", &cm("cm-0", &format!("v{n}")));
    let started = Instant::now();
    let commit = ws.commit_and_push(&format!("change {n}"));
    let ok = wait_for_app(apps, "good", LIMIT, |a| {
        condition(a, "Ready").is_some_and(|c| c.status == "True")
            && a.status
                .as_ref()
                .and_then(|s| s.last_applied_revision.as_deref())
                .is_some_and(|r| r.ends_with(&commit))
    })
    .await;
    assert!(
        ok,
        "the well-behaved Application did not become Ready at {commit}"
    );
    started.elapsed().as_secs_f64() * 1000.0
}

/// Everything the hostile tenant does at once.
async fn start_hostile(client: &kube::Client, ns: &str, shard: &str, server: &GitServer) {
    // A tree nested 60,000 deep.
    server.create_repo("deep", &[("README.md", "deep\n")]);
    {
        let repo = git2::Repository::open_bare(server.bare_path("deep")).unwrap();
        let commit = support::git::deep_commit(&repo, 60_000);
        repo.reference("refs/heads/main", commit, true, "deep")
            .unwrap();
    }
    create_source(client, ns, "deep", &server.file_url("deep"), shard).await;
    // 40 sources on a server that accepts and never answers.
    let (port, _silence) = silent_server();
    for i in 0..40 {
        let url = format!("http://127.0.0.1:{port}/r{i}.git");
        create_source(client, ns, &format!("stall-{i}"), &url, shard).await;
    }
    // A costly CEL rule over a 5,000-key ConfigMap.
    let big = big_configmap(5000);
    server.create_repo("cel", &[("deploy/big.yaml", &big)]);
    create_source(client, ns, "cel", &server.file_url("cel"), shard).await;
    let costly = COSTLY_RULE;
    create_app(
        client,
        ns,
        "cel",
        "cel",
        json!({"path": "deploy", "healthChecks": [{"apiVersion": "v1", "kind": "ConfigMap", "current": costly}]}),
        shard,
    )
    .await;
    // 12 Applications whose PreSync hooks never finish.
    let stuck = STUCK_PRESYNC_JOB;
    for i in 0..12 {
        let name = format!("stuck-{i}");
        server.create_repo(
            &name,
            &[
                ("deploy/hook.yaml", stuck),
                ("deploy/cm.yaml", &cm(&name, "1")),
            ],
        );
        create_source(client, ns, &name, &server.file_url(&name), shard).await;
        create_app(client, ns, &name, &name, json!({"path": "deploy"}), shard).await;
    }
}

#[tokio::main]
async fn main() {
    let client = client().await;
    install_crds(&client).await;
    let shard = format!("bench-iso-{}", random_suffix());
    let good = TestNamespace::new(&client, "bench-iso-good").await;
    let bad = TestNamespace::new(&client, "bench-iso-bad").await;
    // Fewer reconcile slots than stuck Applications; a namespace's fetches (4) stay below
    // the slots of the GitRepository reconciler, as with the defaults (64).
    let mut controller = GantryController::start_sharded(&shard, &["--concurrent=8"]);
    let runs = env_or("GANTRY_BENCH_RUNS", 5);

    let server = GitServer::start();
    let mut files: Vec<(String, String)> = (0..20)
        .map(|i| (format!("deploy/cm-{i}.yaml"), cm(&format!("cm-{i}"), "v0")))
        .collect();
    files.push((
        "deploy/web.yaml".into(),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: registry.example.com/web:1.0.0\n".into(),
    ));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    server.create_repo("good", &refs);
    create_source(
        &client,
        &good.name,
        "good",
        &server.http_url("good"),
        &shard,
    )
    .await;
    create_app(
        &client,
        &good.name,
        "good",
        "good",
        json!({"path": "deploy"}),
        &shard,
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &good.name);
    let ws = Workspace::clone_from(&server, "good");
    // Warm up: the first sync.
    push_to_ready(&ws, &apps, 0).await;

    let mut alone = vec![];
    for n in 1..=runs {
        alone.push(push_to_ready(&ws, &apps, n).await);
    }

    start_hostile(&client, &bad.name, &shard, &server).await;
    // Probe /healthz every 200 ms while the noisy neighbour runs.
    let port = controller.metrics_port;
    let probing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = probing.clone();
    let prober = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let (mut slowest, mut failed, mut probes) = (Duration::ZERO, 0usize, 0usize);
        while flag.load(std::sync::atomic::Ordering::SeqCst) {
            let started = Instant::now();
            let ok = http
                .get(format!("http://127.0.0.1:{port}/healthz"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            slowest = slowest.max(started.elapsed());
            probes += 1;
            if !ok {
                failed += 1;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (slowest, failed, probes)
    });
    // Let every hostile case get going before measuring.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let mut noisy = vec![];
    for n in runs + 1..=2 * runs {
        noisy.push(push_to_ready(&ws, &apps, n).await);
    }
    probing.store(false, std::sync::atomic::Ordering::SeqCst);
    let (slowest, failed, probes) = prober.await.unwrap();
    let restarted = controller.process.child.try_wait().ok().flatten().is_some();

    let (a, b) = (median(alone.clone()), median(noisy.clone()));
    println!("alone (ms): {alone:?}");
    println!("with the hostile tenant (ms): {noisy:?}");
    println!("RESULT isolation_push_to_ready_alone_ms={a:.0}");
    println!("RESULT isolation_push_to_ready_noisy_ms={b:.0}");
    println!("RESULT isolation_noisy_over_alone={:.2}", b / a);
    println!(
        "RESULT isolation_healthz_slowest_ms={:.0}",
        slowest.as_secs_f64() * 1000.0
    );
    println!("RESULT isolation_healthz_failed={failed}/{probes}");
    println!("RESULT isolation_controller_exited={restarted}");
    println!(
        "RESULT isolation_controller_threads={}",
        controller.threads()
    );
}
