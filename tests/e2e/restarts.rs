//! The API server restarts under a running controller (TESTING.md row 20), on a private
//! control plane so the shared one never goes away: drift watches resume by themselves.

use std::time::Duration;

use gantry::api::Application;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::app::{create_source_and_app, wait_synced_healthy};
use crate::support::cluster::install_crds_into;
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::GitServer;
use crate::support::private_cluster::PrivateCluster;

async fn edit_and_wait_healed(cms: &Api<ConfigMap>, what: &str) {
    // The first requests after a restart may meet a closed connection: retry the edit.
    eventually(
        &format!("{what}: the edit made"),
        Duration::from_secs(30),
        || async {
            cms.patch(
                "settings",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"mode": "hand-edited"}})),
            )
            .await
            .ok()
        },
    )
    .await;
    let edited = std::time::Instant::now();
    eventually(
        &format!("{what}: healed"),
        Duration::from_secs(20),
        || async {
            let cm = cms.get("settings").await.ok()?;
            (cm.data?.get("mode")? == "safe").then_some(())
        },
    )
    .await;
    eprintln!("{what}: healed {:?} after the edit", edited.elapsed());
}

#[tokio::test]
async fn drift_watches_resume_after_the_api_server_restarts() {
    let cluster = PrivateCluster::start();
    let client = cluster.client().await;
    install_crds_into(&client).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "app"}})).unwrap(),
        )
        .await
        .unwrap();
    let _controller = GantryController::start_on("app", &cluster.kubeconfig());
    let server = GitServer::start();
    let head = server.create_repo(
        "app",
        &[(
            "deploy/settings.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: safe\n",
        )],
    );
    // The interval (10m) is far away: only the watch can bring the heal within seconds.
    create_source_and_app(
        &client,
        "app",
        "app",
        &server.file_url("app"),
        json!({"path": "deploy", "drift": {"mode": "heal"}}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), "app");
    wait_synced_healthy(&apps, "app", &head).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "app");
    edit_and_wait_healed(&cms, "before the restart").await;

    cluster.restart_apiserver(10);
    edit_and_wait_healed(&cms, "after the restart").await;
}
