//! Sync policies: `dependsOn` waits for the named Application, `syncPolicy: manual` applies
//! only on `gantry sync`, `suspend` stops all writes.

use std::time::Duration;

use gantry::api::Application;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::support::app::{Workspace, condition, create_source_and_app, wait_synced_healthy};
use crate::support::cluster::{TestNamespace, client, install_crds, kubeconfig_path};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::GitServer;

fn cm(name: &str, value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  v: \"{value}\"\n")
}

#[tokio::test]
async fn depends_on_waits_for_the_other_application() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "pol-deps").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let head = server.create_repo(
        "app",
        &[
            ("first/a.yaml", &cm("first", "1")),
            ("second/b.yaml", &cm("second", "1")),
        ],
    );
    // "second" depends on "first", which points at a path that does not exist yet.
    create_source_and_app(
        &client,
        &ns.name,
        "second",
        &server.file_url("app"),
        json!({"path": "second", "dependsOn": [{"name": "first"}]}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let waiting = eventually("second to wait", Duration::from_secs(20), || async {
        let a = apps.get("second").await.ok()?;
        (condition(&a, "Ready")?.reason == "DependencyNotReady").then_some(a)
    })
    .await;
    assert!(
        condition(&waiting, "Ready")
            .unwrap()
            .message
            .contains("first")
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        cms.get_opt("second").await.unwrap().is_none(),
        "applied before its dependency"
    );

    create_source_and_app(
        &client,
        &ns.name,
        "first",
        &server.file_url("app"),
        json!({"path": "first"}),
    )
    .await;
    wait_synced_healthy(&apps, "first", &head).await;
    wait_synced_healthy(&apps, "second", &head).await;
    assert!(cms.get_opt("second").await.unwrap().is_some());
}

#[tokio::test]
async fn manual_policy_applies_only_on_gantry_sync_and_suspend_stops_writes() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "pol-manual").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let head = server.create_repo("app", &[("d/a.yaml", &cm("a", "1"))]);
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "d", "syncPolicy": "manual"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    eventually("ManualSyncRequired", Duration::from_secs(20), || async {
        let a = apps.get("app").await.ok()?;
        (condition(&a, "Ready")?.reason == "ManualSyncRequired").then_some(())
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        cms.get_opt("a").await.unwrap().is_none(),
        "manual policy applied without a request"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args([
            "sync",
            &format!("{}/app", ns.name),
            "--wait",
            "--timeout",
            "60s",
        ])
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_synced_healthy(&apps, "app", &head).await;
    assert_eq!(cms.get("a").await.unwrap().data.unwrap()["v"], "1");

    // Suspended: neither a new commit nor a sync request changes the cluster.
    apps.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": true, "syncPolicy": "automatic"}})),
    )
    .await
    .unwrap();
    eventually("Suspended", Duration::from_secs(20), || async {
        let a = apps.get("app").await.ok()?;
        (condition(&a, "Ready")?.reason == "Suspended").then_some(())
    })
    .await;
    let ws = Workspace::clone_from(&server, "app");
    ws.write("d/a.yaml", &cm("a", "2"));
    ws.commit_and_push("v2");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        cms.get("a").await.unwrap().data.unwrap()["v"],
        "1",
        "a suspended Application wrote"
    );
}
