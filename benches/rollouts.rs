//! `make bench`, rollouts: how fast a crash-looping canary is detected and cleaned up, and
//! how fast `gantry rollback` (a `git revert`, deployed through the fast path) puts the old
//! image on every replica — side by side with `kubectl rollout undo` on the same cluster.
//! Prints `RESULT <name>=<value>` lines; medians of 3 runs.

#[path = "../tests/e2e/support/mod.rs"]
#[allow(dead_code)]
mod support;

#[allow(dead_code)]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use gantry::api::Application;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use common::{median, poll, start_controller};
use support::app::{Workspace, condition, create_source_and_app};
use support::cluster::{TestNamespace, client, install_crds, kubeconfig_path};
use support::git::GitServer;
use support::process::{ChildGuard, tool};

const RUNS: usize = 3;
/// How long any one wait may take, and the polling interval while timing.
const LIMIT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(20);

fn deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 4\n  \
         selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    \
         spec:\n      containers:\n        - name: web\n          image: {image}\n"
    )
}

async fn ready_at(apps: &Api<Application>, commit: &str) {
    poll("Ready and Healthy", LIMIT, POLL, || async {
        let app = apps.get("web").await.ok()?;
        let st = app.status.clone()?;
        (condition(&app, "Ready")?.status == "True"
            && condition(&app, "Healthy")?.status == "True"
            && st.last_applied_revision?.ends_with(commit)
            && st.history.first()?.template_hashes.len() == 1)
            .then_some(())
    })
    .await;
}

/// All replicas of `name` run `image` and are available.
async fn running(api: &Api<Deployment>, name: &str, image: &str) -> Option<()> {
    let d = api.get(name).await.ok()?;
    let st = d.status.as_ref()?;
    let c = &d.spec.as_ref()?.template.spec.as_ref()?.containers[0];
    (c.image.as_deref() == Some(image)
        && st.observed_generation >= d.metadata.generation
        && st.updated_replicas == Some(4)
        && st.available_replicas == Some(4)
        && st.replicas == Some(4))
    .then_some(())
}

/// What one measurement runs against: a namespace with its own controller and Git server,
/// and an Application with `rollout`, ready and healthy at its first commit.
struct Setup {
    ns: TestNamespace,
    _data: tempfile::TempDir,
    _controller: ChildGuard,
    _server: GitServer,
    apps: Api<Application>,
    ws: Workspace,
    first: String,
}

async fn setup(client: &kube::Client, prefix: &str, rollout: serde_json::Value) -> Setup {
    let ns = TestNamespace::new(client, prefix).await;
    let data = tempfile::tempdir().unwrap();
    let controller = start_controller(
        &ns.name,
        data.path(),
        &data.path().join("controller.log"),
        "off",
        "info",
    );
    let server = GitServer::start();
    let first = server.create_repo(
        "app",
        &[("app/deploy.yaml", &deployment("example.test/web:good-1"))],
    );
    create_source_and_app(
        client,
        &ns.name,
        "web",
        &server.http_url("app"),
        json!({"path": "app", "targetNamespace": ns.name, "rollout": rollout}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    ready_at(&apps, &first).await;
    let ws = Workspace::clone_from(&server, "app");
    Setup {
        ns,
        _data: data,
        _controller: controller,
        _server: server,
        apps,
        ws,
        first,
    }
}

/// (detect seconds, cleanup seconds) for one crash-looping canary.
async fn canary_abort(client: &kube::Client) -> (f64, f64) {
    let Setup { ns, apps, ws, .. } = &setup(
        client,
        "bench-canary",
        json!({"strategy": "Canary", "steps": [{"weight": 25}, {"pause": {}}],
               "analysis": {"interval": "5s", "failureLimit": 2, "maxRestarts": 0}}),
    )
    .await;
    ws.write("app/deploy.yaml", &deployment("example.test/web:bad-2"));
    ws.commit_and_push("bad");

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let canary_pods = ListParams::default().labels("gantry.dev/track=canary");
    let first_crash = poll("the first canary crash", LIMIT, POLL, || async {
        let list = pods.list(&canary_pods).await.ok()?;
        list.items
            .iter()
            .any(|p| {
                p.status
                    .iter()
                    .flat_map(|s| s.container_statuses.iter().flatten())
                    .any(|c| c.restart_count > 0)
            })
            .then(Instant::now)
    })
    .await;
    // The abort decision: the canary is being deleted or the condition says so.
    let decided = poll("the abort decision", LIMIT, POLL, || async {
        let c = deployments.get_opt("web-canary").await.ok()?;
        let deleting = c
            .as_ref()
            .is_none_or(|d| d.metadata.deletion_timestamp.is_some());
        let app = apps.get("web").await.ok()?;
        let aborted = condition(&app, "Ready").is_some_and(|c| c.reason == "RolloutAborted");
        (deleting || aborted).then(Instant::now)
    })
    .await;
    let cleaned = poll("canary gone and condition written", LIMIT, POLL, || async {
        let gone = deployments.get_opt("web-canary").await.ok()?.is_none();
        let app = apps.get("web").await.ok()?;
        let aborted = condition(&app, "Ready").is_some_and(|c| c.reason == "RolloutAborted");
        (gone && aborted).then(Instant::now)
    })
    .await;
    (
        decided.duration_since(first_crash).as_secs_f64(),
        cleaned.duration_since(decided).as_secs_f64(),
    )
}

/// (gantry rollback seconds, kubectl rollout undo seconds) to the old image everywhere.
async fn rollback(client: &kube::Client) -> (f64, f64) {
    let Setup {
        ns,
        apps,
        ws,
        first,
        ..
    } = &setup(
        client,
        "bench-rollback",
        json!({"strategy": "Canary", "steps": [{"weight": 25}], "analysis": {"interval": "2s"}}),
    )
    .await;
    ws.write("app/deploy.yaml", &deployment("example.test/web:good-2"));
    let second = ws.commit_and_push("v2");
    poll("v2 promoted", LIMIT, POLL, || async {
        let app = apps.get("web").await.ok()?;
        (condition(&app, "Ready")?.reason == "Promoted"
            && app.status?.last_applied_revision?.ends_with(&second))
        .then_some(())
    })
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    poll("v2 everywhere", LIMIT, POLL, || {
        running(&deployments, "web", "example.test/web:good-2")
    })
    .await;

    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["rollback", &format!("{}/web", ns.name), "--to", first])
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    poll("the old image everywhere", LIMIT, POLL, || {
        running(&deployments, "web", "example.test/web:good-1")
    })
    .await;
    let gantry_s = start.elapsed().as_secs_f64();

    // The same two revisions on a plain Deployment, and `kubectl rollout undo`.
    let plain: Deployment = serde_yaml::from_str(
        &deployment("example.test/web:good-1").replace("name: web", "name: plain"),
    )
    .unwrap();
    deployments
        .create(&PostParams::default(), &plain)
        .await
        .unwrap();
    poll("plain v1", LIMIT, POLL, || {
        running(&deployments, "plain", "example.test/web:good-1")
    })
    .await;
    let kubectl = |args: &[&str]| {
        let out = Command::new(tool("kubectl"))
            .arg("--kubeconfig")
            .arg(kubeconfig_path())
            .args(["-n", &ns.name])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    kubectl(&[
        "set",
        "image",
        "deployment/plain",
        "plain=example.test/web:good-2",
    ]);
    poll("plain v2", LIMIT, POLL, || {
        running(&deployments, "plain", "example.test/web:good-2")
    })
    .await;
    let start = Instant::now();
    kubectl(&["rollout", "undo", "deployment/plain"]);
    poll("plain undone", LIMIT, POLL, || {
        running(&deployments, "plain", "example.test/web:good-1")
    })
    .await;
    (gantry_s, start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = client().await;
    install_crds(&client).await;
    let (mut detect, mut cleanup) = (vec![], vec![]);
    for run in 0..RUNS {
        let (d, c) = canary_abort(&client).await;
        eprintln!("run {run}: abort decided {d:.2}s after the first crash, cleaned up in {c:.2}s");
        detect.push(d);
        cleanup.push(c);
    }
    let (mut gantry_s, mut kubectl_s) = (vec![], vec![]);
    for run in 0..RUNS {
        let (g, k) = rollback(&client).await;
        eprintln!("run {run}: gantry rollback {g:.2}s, kubectl rollout undo {k:.2}s");
        gantry_s.push(g);
        kubectl_s.push(k);
    }
    let (g, k) = (median(gantry_s), median(kubectl_s));
    println!("RESULT canary_abort_detect_s={:.2}", median(detect));
    println!("RESULT canary_abort_cleanup_s={:.2}", median(cleanup));
    println!("RESULT rollback_to_running_s={g:.2}");
    println!("RESULT rollback_kubectl_undo_s={k:.2}");
    println!("RESULT rollback_ratio_vs_kubectl_undo={:.2}", g / k);
}
