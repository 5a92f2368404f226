//! `make bench-targets` (part of `make bench`): the cost of acting as a tenant and on
//! another cluster. The same 2,000 objects (the gitops bench's set) are synced by an
//! Application as the controller, as an impersonated ServiceAccount (admin of its
//! namespace), and on a second control plane through a kubeconfig Secret; time from the
//! Application's creation to Ready, medians of `GANTRY_BENCH_RUNS` (3) runs, the three
//! kinds alternating within each run.
//!
//! The controller runs as a ServiceAccount bound to cluster-admin, as the chart installs it
//! — not as the test cluster's `system:masters` client-certificate user, which the API
//! server exempts from authorization and from API Priority and Fairness, and which no
//! production install uses. The first kind also runs as that user, for comparison.

#[path = "../tests/e2e/support/mod.rs"]
#[allow(dead_code)]
mod support;

#[allow(dead_code)]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use gantry::api::Application;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use serde_json::json;

use common::{median, runs, start_controller, start_controller_as, wait_for_app, write_objects};
use support::app::{condition, create_source_and_app};
use support::cluster::{TestNamespace, client, install_crds, install_crds_into, kubeconfig_path};
use support::git::GitServer;
use support::private_cluster::PrivateCluster;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// The controller's own identity (a cluster-admin ServiceAccount).
    Local,
    /// The controller as the test cluster's system:masters user.
    LocalMasters,
    Impersonated,
    Remote,
}

/// A kubeconfig for a ServiceAccount bound to cluster-admin (the chart's install); the
/// objects are kept between runs (creating them again fails harmlessly).
fn controller_kubeconfig(dir: &Path) -> std::path::PathBuf {
    let kubectl = |args: &[&str]| {
        let _ = std::process::Command::new(support::process::tool("kubectl"))
            .arg("--kubeconfig")
            .arg(kubeconfig_path())
            .args(args)
            .output();
    };
    kubectl(&["create", "namespace", "bench-controller"]);
    kubectl(&[
        "-n",
        "bench-controller",
        "create",
        "serviceaccount",
        "gantry",
    ]);
    kubectl(&[
        "create",
        "clusterrolebinding",
        "bench-gantry-cluster-admin",
        "--clusterrole=cluster-admin",
        "--serviceaccount=bench-controller:gantry",
    ]);
    let path = dir.join("controller-kubeconfig");
    support::cluster::service_account_kubeconfig("bench-controller", "gantry", &path);
    path
}

/// A ServiceAccount admin of `ns` (the built-in `admin` ClusterRole, by a RoleBinding).
async fn namespace_admin(client: &kube::Client, ns: &str) {
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), ns);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "deployer"}})).unwrap(),
    )
    .await
    .unwrap();
    let rbs: Api<k8s_openapi::api::rbac::v1::RoleBinding> = Api::namespaced(client.clone(), ns);
    rbs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "deployer-admin"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": ns}]
        }))
        .unwrap(),
    )
    .await
    .unwrap();
}

async fn wait_gone(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let start = Instant::now();
    while api.get_opt(name).await.ok().flatten().is_some() {
        if start.elapsed() > Duration::from_secs(300) {
            eprintln!("namespace {name} still terminating after 300 s; going on");
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One sync of the 2,000 objects; seconds from the Application's creation to Ready.
async fn sync_once(
    kind: Kind,
    client: &kube::Client,
    remote: &PrivateCluster,
    server: &GitServer,
    work: &Path,
    run: usize,
) -> f64 {
    let ns = TestNamespace::new(client, &format!("bench-{kind:?}").to_lowercase()).await;
    let rclient = remote.client().await;
    let mut spec = json!({"path": "objects", "interval": "10m"});
    match kind {
        Kind::Local | Kind::LocalMasters => {}
        Kind::Impersonated => {
            namespace_admin(client, &ns.name).await;
            spec["serviceAccountName"] = json!("deployer");
        }
        Kind::Remote => {
            let text = std::fs::read_to_string(remote.kubeconfig()).unwrap();
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
            secrets
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(
                        json!({"metadata": {"name": "remote"}, "stringData": {"value": text}}),
                    )
                    .unwrap(),
                )
                .await
                .unwrap();
            let namespaces: Api<Namespace> = Api::all(rclient.clone());
            namespaces
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({"metadata": {"name": ns.name}})).unwrap(),
                )
                .await
                .unwrap();
            spec["kubeConfig"] = json!({"secretRef": {"name": "remote"}});
        }
    }
    let data = tempfile::tempdir().unwrap();
    let log = work.join(format!("controller-{kind:?}-{run}.log"));
    let _controller = if kind == Kind::LocalMasters {
        start_controller(&ns.name, data.path(), &log, "off", "info")
    } else {
        start_controller_as(
            &ns.name,
            data.path(),
            &log,
            "off",
            "info",
            &work.join("controller-kubeconfig"),
        )
    };
    let start = Instant::now();
    create_source_and_app(client, &ns.name, "bench", &server.file_url("bench"), spec).await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    // Watched, not polled (see common::wait_for_app).
    let ready = wait_for_app(&apps, "bench", Duration::from_secs(600), |app| {
        let Some(ready) = condition(app, "Ready") else {
            return false;
        };
        assert!(
            !matches!(
                ready.reason.as_str(),
                "ValidationFailed" | "ApplyFailed" | "ServiceAccountNotFound"
            ),
            "{kind:?}: {}",
            ready.message
        );
        ready.status == "True"
    })
    .await;
    assert!(ready, "{kind:?} did not sync");
    let t = start.elapsed().as_secs_f64();
    eprintln!("run {run}: {kind:?}: {t:.2}s");
    let name = ns.name.clone();
    drop(ns);
    wait_gone(client, &name).await;
    // The remote control plane runs no namespace controller: its namespace stays (each
    // run has its own).
    t
}

#[tokio::main]
async fn main() {
    let client = client().await;
    install_crds(&client).await;
    let remote = PrivateCluster::start();
    // The CRDs are not needed there, but a realistic remote cluster has some.
    install_crds_into(&remote.client().await).await;
    let work = tempfile::tempdir().unwrap();
    write_objects(&work.path().join("objects"));
    controller_kubeconfig(work.path());
    let server = GitServer::start();
    server.create_repo_from_dir("bench", work.path());

    let mut times: Vec<(Kind, Vec<f64>)> = vec![
        (Kind::Local, vec![]),
        (Kind::Impersonated, vec![]),
        (Kind::Remote, vec![]),
        (Kind::LocalMasters, vec![]),
    ];
    for run in 0..runs() {
        // Rotate the order so no kind always runs first on a warm API server.
        for i in 0..times.len() {
            let slot = (i + run) % times.len();
            let kind = times[slot].0;
            let t = sync_once(kind, &client, &remote, &server, work.path(), run).await;
            times[slot].1.push(t);
        }
    }
    let show = |v: &[f64]| {
        v.iter()
            .map(|t| format!("{t:.2}"))
            .collect::<Vec<_>>()
            .join("/")
    };
    for (kind, v) in &times {
        eprintln!("{kind:?}: {} s", show(v));
    }
    let local = median(times[0].1.clone());
    let impersonated = median(times[1].1.clone());
    let remote_s = median(times[2].1.clone());
    println!("RESULT apply_2000_local_s={local:.2}");
    println!("RESULT apply_2000_impersonated_s={impersonated:.2}");
    println!(
        "RESULT apply_2000_impersonated_ratio={:.2}",
        impersonated / local
    );
    println!("RESULT apply_2000_remote_s={remote_s:.2}");
    println!("RESULT apply_2000_remote_ratio={:.2}", remote_s / local);
    let masters = median(times[3].1.clone());
    println!("RESULT apply_2000_local_as_masters_s={masters:.2}");
}
