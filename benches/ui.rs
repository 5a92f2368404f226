//! `make bench-ui`: the web view at fleet scale. N Applications (`GANTRY_UI_N`, 1,000 by
//! default) with the statuses a controller writes (conditions, history, an inventory of
//! four objects; a third failed, a tenth drifted) in one namespace; a controller serving
//! the view (`--ui-addr`) reconciling none of them (a shard of its own); a viewer with
//! read rights on that namespace only, by ServiceAccount token. Figures:
//! - the fleet page's server time (median of 20 fetches; target < 300 ms) beside
//!   `kubectl get applications -n NS` listing the same Applications (what a user would run
//!   otherwise), and their ratio;
//! - the page's weight (target < 500 KB);
//! - the time from a status change to the open page showing it: an SSE client (as the
//!   page's script) gets the event and fetches the page again, and the new state is in it
//!   (median of 10 changes; target < 2 s);
//! - the controller's resident memory added by the view with 10 open pages of one viewer
//!   (target < 20 MiB), and with 10 viewers (10 tokens: each holds its own watch caches).

#[path = "../tests/e2e/support/mod.rs"]
#[allow(dead_code)]
mod support;

#[allow(dead_code)]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gantry::api::Application;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use common::{controller_binary, env_or, median, rss_mib};
use support::cluster::{
    TestNamespace, client, install_crds, kubeconfig_path, service_account_token,
};
use support::process::{ChildGuard, free_port, tool};

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": "2026-12-01T10:00:00Z"})
}

/// The status of Application `i`: failed, drifted or synced.
fn status(i: usize, round: usize) -> Value {
    let rev = format!("main@sha1:{:040x}", i * 7919 + round);
    let conditions = if i.is_multiple_of(3) {
        json!([condition(
            "Ready",
            "False",
            "ApplyFailed",
            &format!("Deployment web-{i}: admission webhook denied the request (round {round})")
        )])
    } else if i % 10 == 1 {
        json!([
            condition("Ready", "True", "Succeeded", "applied"),
            condition("Healthy", "True", "Healthy", "all workloads are healthy"),
            condition(
                "Drifted",
                "True",
                "DriftDetected",
                "1 object differs from Git"
            )
        ])
    } else {
        json!([
            condition(
                "Ready",
                "True",
                "Succeeded",
                &format!("applied revision {rev}: 4 created")
            ),
            condition("Healthy", "True", "Healthy", "all workloads are healthy"),
            condition("Drifted", "False", "NoDrift", "the cluster matches Git")
        ])
    };
    let inventory: Vec<Value> = ["Deployment", "Service", "ConfigMap", "ServiceAccount"]
        .iter()
        .map(|k| {
            let group = if *k == "Deployment" { "apps" } else { "" };
            json!({"group": group, "version": "v1", "kind": k, "namespace": "apps", "name": format!("web-{i}")})
        })
        .collect();
    let history: Vec<Value> = (0..3)
        .map(|h| json!({"revision": rev, "startedAt": "2026-12-01T10:00:00Z", "finishedAt": "2026-12-01T10:00:05Z",
                        "result": "Succeeded", "message": format!("sync {h}: 4 created"), "created": 4}))
        .collect();
    json!({"status": {"cluster": "127.0.0.1:6443", "lastAppliedRevision": rev, "lastAttemptedRevision": rev,
                      "conditions": conditions, "inventory": inventory, "history": history}})
}

async fn viewer(client: &kube::Client, ns: &str, name: &str) {
    let post = |obj: Value| {
        let client = client.clone();
        async move {
            let o: kube::api::DynamicObject = serde_json::from_value(obj).unwrap();
            let kind = o.types.as_ref().unwrap().kind.clone();
            let ar = match kind.as_str() {
                "ServiceAccount" => {
                    kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::ServiceAccount>(&())
                }
                "Role" => kube::api::ApiResource::erase::<k8s_openapi::api::rbac::v1::Role>(&()),
                _ => kube::api::ApiResource::erase::<k8s_openapi::api::rbac::v1::RoleBinding>(&()),
            };
            let api: Api<kube::api::DynamicObject> =
                Api::namespaced_with(client, o.metadata.namespace.as_deref().unwrap(), &ar);
            let _ = api.create(&PostParams::default(), &o).await;
        }
    };
    post(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}})).await;
    post(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "ui-viewer", "namespace": ns},
        "rules": [{"apiGroups": ["gantry.dev"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]}))
    .await;
    post(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": format!("ui-{name}"), "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ui-viewer"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]}),
    )
    .await;
}

/// One fetch of the fleet page as `token`: (milliseconds, body).
async fn fetch(http: &reqwest::Client, url: &str, token: &str) -> (f64, String) {
    let started = Instant::now();
    let res = http.get(url).bearer_auth(token).send().await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let body = res.text().await.unwrap();
    (started.elapsed().as_secs_f64() * 1000.0, body)
}

/// An open page: its event stream, held open.
async fn open_page(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> futures::stream::BoxStream<'static, Vec<u8>> {
    let res = http
        .get(format!("{url}events"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    res.bytes_stream()
        .map(|chunk| chunk.map(|b| b.to_vec()).unwrap_or_default())
        .boxed()
}

#[tokio::main]
async fn main() {
    let n = env_or("GANTRY_UI_N", 1000);
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "bench-ui").await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let created = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let apps = apps.clone();
            async move {
                let app = serde_json::from_value(json!({
                    "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
                    "metadata": {"name": format!("app-{i:04}")},
                    "spec": {"sourceRef": {"kind": "GitRepository", "name": "repo"}, "path": format!("apps/{i}")}
                }))
                .unwrap();
                apps.create(&PostParams::default(), &app).await.unwrap();
                apps.patch_status(&format!("app-{i:04}"), &PatchParams::default(), &Patch::Merge(status(i, 0)))
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    eprintln!("{n} Applications in {:?}", created.elapsed());
    for v in 0..10 {
        viewer(&client, &ns.name, &format!("viewer-{v}")).await;
    }
    let tokens: Vec<String> = (0..10)
        .map(|v| service_account_token(&ns.name, &format!("viewer-{v}")))
        .collect();

    // The controller, serving the view, reconciling nothing of these (a shard of its own).
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(data.path().join("controller.log")).unwrap();
    let child = Command::new(controller_binary())
        .args(["controller", "--shard", "bench-ui-none", "--data-dir"])
        .arg(data.path())
        .arg("--receiver-addr=off")
        .arg("--metrics-addr=127.0.0.1:0")
        .arg(format!("--ui-addr=127.0.0.1:{port}"))
        .env("KUBECONFIG", kubeconfig_path())
        .env("GANTRY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let controller = ChildGuard::new("gantry controller", child);
    let pid = controller.child.id();
    let url = format!("http://127.0.0.1:{port}/");
    let http = reqwest::Client::new();
    common::poll(
        "the web view",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let (http, url) = (http.clone(), url.clone());
            async move { http.get(&url).send().await.ok() }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_before = rss_mib(pid);

    // Server time and weight of the fleet page (the first fetch fills the viewer's caches).
    let token = &tokens[0];
    let (first_ms, body) = fetch(&http, &url, token).await;
    assert!(
        body.contains(&format!("{n}</strong> in all")),
        "the page lists all {n}"
    );
    let mut times = vec![];
    let mut weight = 0;
    for _ in 0..20 {
        let (ms, body) = fetch(&http, &url, token).await;
        times.push(ms);
        weight = body.len();
    }
    let page_ms = median(times);
    let mut kubectl_times = vec![];
    for _ in 0..5 {
        let started = Instant::now();
        let out = Command::new(tool("kubectl"))
            .arg("--kubeconfig")
            .arg(kubeconfig_path())
            .args(["get", "applications.gantry.dev", "-n", &ns.name])
            .output()
            .unwrap();
        assert!(out.status.success());
        kubectl_times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let kubectl_ms = median(kubectl_times);

    // 10 open pages of one viewer.
    let mut pages = vec![];
    for _ in 0..10 {
        pages.push(open_page(&http, &url, token).await);
        let _ = fetch(&http, &url, token).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_pages = rss_mib(pid);

    // A status change to the open page: the event, then the page fetched again shows it.
    let mut latencies = vec![];
    for round in 1..=10 {
        let i = round * 37 % n;
        let name = format!("app-{i:04}");
        let marker = format!("admission webhook denied the request (round {round})");
        let mut changed = status(0, round);
        changed["status"]["conditions"] = json!([condition(
            "Ready",
            "False",
            "ApplyFailed",
            &format!("Deployment web-{i}: {marker}")
        )]);
        let page = &mut pages[0];
        // Drain what is pending.
        while tokio::time::timeout(Duration::from_millis(700), page.next())
            .await
            .is_ok()
        {}
        let started = Instant::now();
        apps.patch_status(&name, &PatchParams::default(), &Patch::Merge(changed))
            .await
            .unwrap();
        loop {
            let chunk = tokio::time::timeout(Duration::from_secs(10), page.next())
                .await
                .expect("an event within 10 s")
                .expect("the stream stays open");
            if !String::from_utf8_lossy(&chunk).contains("event: changed") {
                continue;
            }
            let (_, body) = fetch(&http, &url, token).await;
            if body.contains(&marker) {
                break;
            }
        }
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let change_ms = median(latencies);

    // 10 viewers, each with a page open.
    let mut others = vec![];
    for t in &tokens[1..] {
        let _ = fetch(&http, &url, t).await;
        others.push(open_page(&http, &url, t).await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_viewers = rss_mib(pid);
    drop(pages);
    drop(others);

    println!("RESULT ui_applications={n}");
    println!("RESULT ui_fleet_page_ms={page_ms:.1}");
    println!("RESULT ui_fleet_page_first_ms={first_ms:.1}");
    println!("RESULT kubectl_get_applications_ms={kubectl_ms:.1}");
    println!("RESULT ui_page_over_kubectl={:.2}", page_ms / kubectl_ms);
    println!("RESULT ui_fleet_page_kb={:.0}", weight as f64 / 1024.0);
    println!("RESULT ui_change_to_page_ms={change_ms:.0}");
    println!(
        "RESULT ui_memory_10_pages_mib={:.1}",
        rss_pages - rss_before
    );
    println!(
        "RESULT ui_memory_10_viewers_mib={:.1}",
        rss_viewers - rss_before
    );
    drop(controller);
}
