//! `make bench`, image automation: from an image push to the bump commit in Git and to the
//! new pod template in the cluster (registry notifications to a Receiver), and selecting from
//! 10,000 paginated tags, side by side with `crane ls` on the same registry.
//! Prints `RESULT <name>=<value>` lines; medians (p50) of several runs.

#[path = "../tests/e2e/support/mod.rs"]
#[allow(dead_code)]
mod support;

#[allow(dead_code)]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use gantry::api::{ImagePolicy, Receiver};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use common::{median, peak_rss_mib, poll, start_controller};
use support::app::create_source_and_app;
use support::cluster::{TestNamespace, client, install_crds};
use support::git::{GitServer, git};
use support::process::{free_port, tool};
use support::registry::Registry;

const PUSHES: usize = 7;
const TAGS: usize = 10_000;
const SCANS: usize = 5;
/// Polling interval while timing.
const POLL: Duration = Duration::from_millis(5);
const TOKEN: &str = "bench-webhook-token-0123456789abcdef";

/// Push → commit and push → pod template, through registry notifications.
async fn push_to_deploy(client: &kube::Client) -> (f64, f64, f64) {
    let ns = TestNamespace::new(client, "bench-img").await;
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut controller = start_controller(
        &ns.name,
        data.path(),
        &data.path().join("controller.log"),
        &format!("127.0.0.1:{port}"),
        "info",
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "hook"}, "stringData": {"token": TOKEN}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let receivers: Api<Receiver> = Api::namespaced(client.clone(), &ns.name);
    receivers
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "gantry.dev/v1alpha1", "kind": "Receiver",
                "metadata": {"name": "registry"},
                "spec": {"type": "registry", "secretRef": {"name": "hook"},
                         "resources": [{"kind": "ImagePolicy", "name": "web"}]}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let path = poll(
        "the receiver path",
        Duration::from_secs(30),
        POLL,
        || async { receivers.get("registry").await.ok()?.status?.webhook_path },
    )
    .await;
    let registry =
        Registry::start_with_notifications(&format!("http://127.0.0.1:{port}{path}"), TOKEN);
    registry.push_image("team/web", "1.0.0");
    let image = format!("{}/team/web", registry.host());

    let server = GitServer::start();
    let deploy = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n        - name: web\n          image: {image}:1.0.0 # gantry bumps this\n"
    );
    server.create_repo("config", &[("app/deploy.yaml", &deploy)]);
    let policies: Api<ImagePolicy> = Api::namespaced(client.clone(), &ns.name);
    policies
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "gantry.dev/v1alpha1", "kind": "ImagePolicy",
                "metadata": {"name": "web"},
                "spec": {"image": image, "interval": "1h", "policy": {"semver": {"range": "^1"}}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    create_source_and_app(
        client,
        &ns.name,
        "web",
        &server.http_url("config"),
        json!({
            "path": "app", "targetNamespace": ns.name,
            "imageAutomation": {"policies": ["web"], "writeBack": {
                "author": {"name": "Gantry", "email": "gantry@bench.test"}}}
        }),
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let running = |tag: String| {
        let deployments = deployments.clone();
        let want = format!("{image}:{tag}");
        async move {
            let d = deployments.get("web").await.ok()?;
            let c = &d.spec?.template.spec?.containers[0];
            (c.image.as_deref() == Some(want.as_str())).then_some(())
        }
    };
    poll("the first sync", Duration::from_secs(60), POLL, || {
        running("1.0.0".into())
    })
    .await;

    let bare = server.bare_path("config");
    let mut to_commit = vec![];
    let mut to_rollout = vec![];
    for i in 1..=PUSHES {
        let tag = format!("1.{i}.0");
        registry.push_image("team/web", &tag);
        let pushed = Instant::now();
        // The branch ref file changes when the bump lands (no git process in the loop).
        let wanted = format!("{image}:{tag}");
        poll("the bump commit", Duration::from_secs(60), POLL, || {
            let bare = bare.clone();
            let wanted = wanted.clone();
            async move {
                let head = git(&bare, &["show", "main:app/deploy.yaml"]);
                head.contains(&wanted).then_some(())
            }
        })
        .await;
        let commit_ms = pushed.elapsed().as_secs_f64() * 1000.0;
        poll("the rollout", Duration::from_secs(60), POLL, || {
            running(tag.clone())
        })
        .await;
        let rollout_ms = pushed.elapsed().as_secs_f64() * 1000.0;
        eprintln!(
            "push {tag}: commit after {commit_ms:.0} ms, pod template after {rollout_ms:.0} ms"
        );
        to_commit.push(commit_ms);
        to_rollout.push(rollout_ms);
    }
    controller.assert_running();
    let rss = peak_rss_mib(controller.child.id());
    (median(to_commit), median(to_rollout), rss)
}

/// Selecting from 10,000 tags: Gantry (a fresh ImagePolicy to its selection) vs `crane ls`.
async fn tag_scan(client: &kube::Client) -> (f64, f64, f64) {
    let registry = Registry::start();
    let digest = registry.push_image("team/many", "0.0.1");
    // Tag the same manifest 10,000 times over HTTP (a process per tag would take minutes).
    let http = reqwest::Client::new();
    let base = format!("{}/v2/team/many/manifests", registry.base_url());
    let accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
    let manifest = http
        .get(format!("{base}/{digest}"))
        .header("Accept", accept)
        .send()
        .await
        .unwrap();
    let media_type = manifest.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    let body = manifest.bytes().await.unwrap();
    let puts = (0..TAGS).map(|i| {
        let (http, base, media_type, body) =
            (http.clone(), base.clone(), media_type.clone(), body.clone());
        async move {
            let tag = format!("{}.{}.{}", i / 1000, (i / 10) % 100, i % 10);
            let r = http
                .put(format!("{base}/{tag}"))
                .header("Content-Type", media_type)
                .body(body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "tagging {tag}: {}", r.status());
        }
    });
    futures::stream::iter(puts)
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;

    let ns = TestNamespace::new(client, "bench-tags").await;
    let data = tempfile::tempdir().unwrap();
    let mut controller = start_controller(
        &ns.name,
        data.path(),
        &data.path().join("controller.log"),
        &format!("127.0.0.1:{}", free_port()),
        "info",
    );
    let policies: Api<ImagePolicy> = Api::namespaced(client.clone(), &ns.name);
    let image = format!("{}/team/many", registry.host());
    let mut gantry_ms = vec![];
    let mut crane_ms = vec![];
    for run in 0..SCANS {
        let name = format!("many-{run}");
        let start = Instant::now();
        policies
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "gantry.dev/v1alpha1", "kind": "ImagePolicy",
                    "metadata": {"name": name},
                    // A 1 s interval: no policy reuses the scan of the previous run.
                    "spec": {"image": image, "interval": "1s", "policy": {"semver": {"range": "*"}}}
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        let count = poll(
            "the 10k selection",
            Duration::from_secs(120),
            POLL,
            || async {
                let s = policies.get(&name).await.ok()?.status?;
                s.latest_image.as_ref()?;
                s.tag_count
            },
        )
        .await;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(count as usize, TAGS, "0.0.1 is one of the 10,000");
        policies
            .delete(&name, &DeleteParams::default())
            .await
            .unwrap();

        let start = Instant::now();
        let out = Command::new(tool("crane"))
            .args(["ls", "--insecure", &image])
            .output()
            .unwrap();
        let c = start.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), TAGS);
        eprintln!("scan {run}: gantry {ms:.0} ms (create → selection), crane ls {c:.0} ms");
        gantry_ms.push(ms);
        crane_ms.push(c);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    controller.assert_running();
    let rss = peak_rss_mib(controller.child.id());
    (median(gantry_ms), median(crane_ms), rss)
}

use futures::StreamExt;

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = client().await;
    install_crds(&client).await;
    let (commit, rollout, rss1) = push_to_deploy(&client).await;
    let (scan, crane, rss2) = tag_scan(&client).await;
    println!("RESULT image_push_to_commit_ms={commit:.0}");
    println!("RESULT image_push_to_rollout_ms={rollout:.0}");
    println!("RESULT tag_scan_10k_ms={scan:.0}");
    println!("RESULT tag_scan_10k_crane_ls_ms={crane:.0}");
    println!("RESULT tag_scan_10k_ratio_vs_crane={:.2}", scan / crane);
    println!("RESULT image_controller_rss_mib={:.1}", rss1.max(rss2));
    println!("RESULT tag_scan_10k_controller_rss_mib={rss2:.1}");
}
