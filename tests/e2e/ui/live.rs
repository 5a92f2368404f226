//! The web view of a running controller's work: an Application synced from Git shows its
//! objects as a tree with their live health (the Deployment's ReplicaSet and Pods beneath
//! it) and its history; a hand edit in audit mode turns it Drifted on the open page,
//! without a reload, within 2 s of the status saying so; its difference from Git is shown
//! as a unified diff.

use std::time::{Duration, Instant};

use gantry::api::Application;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use thirtyfour::prelude::*;

use super::start_ui;
use crate::support::app::{condition, create_source_and_app, wait_synced_healthy};
use crate::support::browser::{browser, console_errors, rows, screenshot_path};
use crate::support::cluster::{TestNamespace, client, install_crds, kubeconfig_path};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::GitServer;

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: app\n        image: registry.example.com/web:1.0.0\n";
const CONFIGMAP: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  annotations:\n    argocd.argoproj.io/sync-wave: \"-1\"\ndata:\n  mode: \"safe\"\n";

#[tokio::test]
async fn a_synced_application_shows_its_tree_and_its_drift_live() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "ui-live").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let head = server.create_repo(
        "app",
        &[
            ("deploy/web.yaml", DEPLOYMENT),
            ("deploy/cm.yaml", CONFIGMAP),
        ],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "deploy", "drift": {"mode": "audit"}}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "app", &head).await;

    let (_ui, url) = start_ui(&kubeconfig_path(), &[&ns.name]);
    let (_chromedriver, driver, _profile) = browser().await;

    // The Application page: the tree with live health, the wave, the history.
    let page = format!("{url}apps/{}/app", ns.name);
    driver.goto(&page).await.unwrap();
    let pods = eventually("the Deployment's Pods in the tree", Duration::from_secs(30), || {
        let driver = &driver;
        async move {
            driver.refresh().await.ok()?;
            let pods = driver
                .find_all(By::Css(
                    "ul.inventory > li[data-kind=Deployment] li[data-kind=ReplicaSet] li[data-kind=Pod]",
                ))
                .await
                .ok()?;
            (pods.len() == 2).then_some(pods)
        }
    })
    .await;
    for pod in &pods {
        assert_eq!(
            pod.attr("data-health").await.unwrap().as_deref(),
            Some("healthy")
        );
    }
    let deployment = driver
        .find(By::Css("ul.inventory > li[data-kind=Deployment]"))
        .await
        .unwrap();
    assert_eq!(
        deployment.attr("data-health").await.unwrap().as_deref(),
        Some("healthy")
    );
    let cm = driver
        .find(By::Css("ul.inventory > li[data-kind=ConfigMap]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(cm.contains("wave -1"), "{cm}");
    let history = driver
        .find(By::Css("ol.history"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        history.contains(&head[..7])
            && history.contains("Succeeded")
            && history.contains("2 created"),
        "{history}"
    );
    driver
        .screenshot(&screenshot_path("application-tree.png"))
        .await
        .unwrap();

    // The fleet page, open; a hand edit; Drifted on the page without a reload.
    driver.goto(&url).await.unwrap();
    eventually("the row", Duration::from_secs(10), || {
        let driver = &driver;
        async move {
            let r = rows(driver).await;
            (r == [("app".to_string(), "synced".to_string())]).then_some(())
        }
    })
    .await;
    driver
        .execute("window.gantryTestMarker = 7;", vec![])
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    cms.patch(
        "settings",
        &PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"data": {"mode": "unsafe"}})),
    )
    .await
    .unwrap();
    eventually("Drifted in the status", Duration::from_secs(30), || async {
        let app = apps.get("app").await.ok()?;
        (condition(&app, "Drifted")?.status == "True").then_some(())
    })
    .await;
    let seen = Instant::now();
    eventually("Drifted on the open page", Duration::from_secs(2), || {
        let driver = &driver;
        async move {
            let r = rows(driver).await;
            (r == [("app".to_string(), "drifted".to_string())]).then_some(())
        }
    })
    .await;
    eprintln!("drift on the page {:?} after the status", seen.elapsed());
    let marker = driver
        .execute("return window.gantryTestMarker;", vec![])
        .await
        .unwrap();
    assert_eq!(marker.json(), &json!(7), "the page was not reloaded");
    driver
        .screenshot(&screenshot_path("fleet-drifted.png"))
        .await
        .unwrap();

    // The difference, as a masked unified diff: the live value out, Git's in.
    driver.goto(&page).await.unwrap();
    driver
        .find(By::LinkText("show the difference"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let removed = eventually("the diff", Duration::from_secs(60), || {
        let driver = &driver;
        async move {
            let del = driver.find(By::Css("pre.diff span.del")).await.ok()?;
            del.text().await.ok()
        }
    })
    .await;
    assert!(removed.contains("mode: unsafe"), "{removed}");
    let added = driver
        .find(By::Css("pre.diff span.add"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(added.contains("mode: safe"), "{added}");
    driver
        .screenshot(&screenshot_path("diff.png"))
        .await
        .unwrap();
    assert_eq!(console_errors(&driver).await, Vec::<String>::new());
    driver.quit().await.unwrap();
}
