//! Drift against the local control plane: edits made by hand are healed (heal) or reported
//! (audit) within seconds; fields owned by another manager are not drift.

use std::time::Duration;

use gantry::api::Application;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::support::app::{condition, create_source_and_app, wait_synced_healthy};
use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::GitServer;

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: app\n        image: registry.example.com/web:1.0.0\n";
const CONFIGMAP: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: \"safe\"\n";

/// Edits as `kubectl edit` would: a merge patch by another field manager.
async fn hand_edit(client: &kube::Client, ns: &str) {
    let params = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deploys
        .patch("web", &params, &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "registry.example.com/web:hacked"}]}}}})))
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    cms.patch(
        "settings",
        &params,
        &Patch::Merge(json!({"data": {"mode": "unsafe"}})),
    )
    .await
    .unwrap();
}

async fn image(client: &kube::Client, ns: &str) -> String {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get("web")
        .await
        .unwrap();
    d.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

async fn mode(client: &kube::Client, ns: &str) -> String {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get("settings")
        .await
        .unwrap()
        .data
        .unwrap()["mode"]
        .clone()
}

/// What a drift test starts from: the client, its namespace, the controller, the Git server
/// and the Applications' API.
type Setup = (
    kube::Client,
    TestNamespace,
    GantryController,
    GitServer,
    Api<Application>,
);

async fn setup(prefix: &str, drift_mode: &str) -> Setup {
    let files = [
        ("deploy/web.yaml", DEPLOYMENT),
        ("deploy/cm.yaml", CONFIGMAP),
    ];
    setup_with(prefix, &files, json!({"drift": {"mode": drift_mode}})).await
}

/// A namespace, a controller, a repository of `files` and an Application of its `deploy`
/// path with `spec` on top, synced and healthy.
async fn setup_with(prefix: &str, files: &[(&str, &str)], spec: serde_json::Value) -> Setup {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, prefix).await;
    let controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let head = server.create_repo("app", files);
    let mut app_spec = json!({"path": "deploy"});
    for (k, v) in spec.as_object().unwrap() {
        app_spec[k] = v.clone();
    }
    create_source_and_app(&client, &ns.name, "app", &server.file_url("app"), app_spec).await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "app", &head).await;
    (client, ns, controller, server, apps)
}

#[tokio::test]
async fn heal_mode_reverts_hand_edits_within_seconds() {
    let (client, ns, _c, _s, _apps) = setup("drift-heal", "heal").await;
    hand_edit(&client, &ns.name).await;
    eventually(
        "the edits to be healed",
        Duration::from_secs(15),
        || async {
            (image(&client, &ns.name).await == "registry.example.com/web:1.0.0"
                && mode(&client, &ns.name).await == "safe")
                .then_some(())
        },
    )
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    eventually("a DriftHealed event", Duration::from_secs(15), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("DriftHealed"))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn audit_mode_reports_and_changes_nothing() {
    let (client, ns, _c, _s, apps) = setup("drift-audit", "audit").await;
    hand_edit(&client, &ns.name).await;
    let app = eventually("Drifted=True", Duration::from_secs(15), || async {
        let app = apps.get("app").await.ok()?;
        let drifted = condition(&app, "Drifted")?;
        let n = app
            .status
            .as_ref()?
            .drift
            .as_ref()
            .map(|d| d.objects.len())
            .unwrap_or(0);
        (drifted.status == "True" && n == 2).then_some(app)
    })
    .await;
    let objects = app.status.unwrap().drift.unwrap().objects;
    let paths: Vec<String> = objects.iter().flat_map(|o| o.paths.clone()).collect();
    assert!(
        paths.contains(&"/spec/template/spec/containers/0/image".to_string()),
        "{paths:?}"
    );
    assert!(paths.contains(&"/data/mode".to_string()), "{paths:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        image(&client, &ns.name).await,
        "registry.example.com/web:hacked",
        "audit must not change anything"
    );
    assert_eq!(mode(&client, &ns.name).await, "unsafe");

    // `gantry diff --app` shows the hand edits (exit 1), not the field-manager conflict
    // a non-forced dry-run would stop at, and changes nothing either.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args([
            "diff",
            "--app",
            &format!("{}/app", ns.name),
            "--color",
            "never",
        ])
        .env("KUBECONFIG", crate::support::cluster::kubeconfig_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("- image: registry.example.com/web:hacked")
            && text.contains("- image: registry.example.com/web:1.0.0")
            && text.contains("-  mode: unsafe")
            && text.contains("+  mode: safe"),
        "{text}"
    );
    assert_eq!(
        image(&client, &ns.name).await,
        "registry.example.com/web:hacked"
    );

    // Putting the values back clears the drift.
    hand_edit_back(&client, &ns.name).await;
    eventually("Drifted=False", Duration::from_secs(15), || async {
        let app = apps.get("app").await.ok()?;
        (condition(&app, "Drifted")?.status == "False").then_some(())
    })
    .await;
}

async fn hand_edit_back(client: &kube::Client, ns: &str) {
    let params = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch("web", &params, &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "registry.example.com/web:1.0.0"}]}}}})))
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .patch(
            "settings",
            &params,
            &Patch::Merge(json!({"data": {"mode": "safe"}})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn replicas_set_by_another_manager_are_not_drift() {
    let (client, ns, _c, _s, apps) = setup("drift-hpa", "audit").await;
    // An HPA-style controller owns replicas (the manifest omits them).
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let scale = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 5}});
    deploys
        .patch(
            "web",
            &PatchParams::apply("hpa-controller").force(),
            &Patch::Apply(&scale),
        )
        .await
        .unwrap();
    // A change of a managed object triggers a check; give it time, then verify nothing is reported.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let app = apps.get("app").await.unwrap();
    assert_eq!(
        condition(&app, "Drifted").unwrap().status,
        "False",
        "{:?}",
        app.status.unwrap().drift
    );
    assert_eq!(
        deploys.get("web").await.unwrap().spec.unwrap().replicas,
        Some(5)
    );
}

/// Quantities the API server rewrites (`2000m` → `2`, `1024Mi` → `1Gi`) are not drift: a
/// real hand edit is healed and reported with its own path only.
#[tokio::test]
async fn rewritten_quantities_are_not_reported_as_drift() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "drift-qty").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let deployment = DEPLOYMENT.replace(
        "        image: registry.example.com/web:1.0.0\n",
        "        image: registry.example.com/web:1.0.0\n        resources:\n          limits: {cpu: 2000m, memory: 1024Mi}\n          requests: {cpu: 0.5}\n",
    );
    let head = server.create_repo("app", &[("deploy/web.yaml", deployment.as_str())]);
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "deploy"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "app", &head).await;
    let live = Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .get("web")
        .await
        .unwrap();
    let limits = live.spec.unwrap().template.spec.unwrap().containers[0]
        .resources
        .clone()
        .unwrap()
        .limits
        .unwrap();
    assert_eq!(limits["cpu"].0, "2", "the API server rewrote the quantity");

    let params = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .patch("web", &params, &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "registry.example.com/web:hacked"}]}}}})))
        .await
        .unwrap();
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    let healed = eventually("a DriftHealed event", Duration::from_secs(20), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("DriftHealed"))
            .and_then(|e| e.message)
    })
    .await;
    assert!(healed.contains("containers/0/image"), "{healed}");
    assert!(!healed.contains("resources"), "{healed}");
}

/// Audit mode does not block Git: a new revision is the team's decision, so it is applied
/// over hand edits, and the sync says which hand edits it overwrote.
#[tokio::test]
async fn a_new_revision_in_audit_mode_overwrites_hand_edits_and_names_them() {
    let (client, ns, _c, server, apps) = setup("drift-audit-git", "audit").await;
    hand_edit(&client, &ns.name).await;
    eventually("Drifted=True", Duration::from_secs(15), || async {
        let app = apps.get("app").await.ok()?;
        (condition(&app, "Drifted")?.status == "True").then_some(())
    })
    .await;
    let ws = crate::support::app::Workspace::clone_from(&server, "app");
    ws.write(
        "deploy/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: \"safe\"\n  owner: \"team-a\"\n",
    );
    let next = ws.commit_and_push("a new revision over a hand edit");
    wait_synced_healthy(&apps, "app", &next).await;
    assert_eq!(
        image(&client, &ns.name).await,
        "registry.example.com/web:1.0.0"
    );
    assert_eq!(mode(&client, &ns.name).await, "safe");
    let app = apps.get("app").await.unwrap();
    let ready = condition(&app, "Ready").unwrap();
    let last = app.status.unwrap().history.first().cloned().unwrap();
    let said = last.message.unwrap_or_default();
    for text in [&ready.message, &said] {
        assert!(
            text.contains("overwrote hand edits")
                && text.contains("Deployment")
                && text.contains("kubectl-edit")
                && text.contains(".image"),
            "{text}"
        );
    }
    assert_eq!(
        condition(&apps.get("app").await.unwrap(), "Drifted")
            .unwrap()
            .status,
        "False"
    );
}

/// A hand edit that brings no new generation (a declared label of a Deployment) is not
/// marked by the watch as it happens; the periodic full check finds it, because the watch
/// cannot vouch for an object whose declared labels it does not hold. Objects the watch
/// vouches for are not read at all.
#[tokio::test]
async fn a_declared_label_changed_by_hand_is_healed_at_the_interval() {
    let labelled = DEPLOYMENT.replace("  name: web\n", "  name: web\n  labels: {tier: front}\n");
    let files = [
        ("deploy/web.yaml", labelled.as_str()),
        ("deploy/cm.yaml", CONFIGMAP),
    ];
    let (client, ns, _c, _s, _apps) =
        setup_with("drift-label", &files, json!({"interval": "3s"})).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let before = deploys.get("web").await.unwrap();
    let params = PatchParams {
        field_manager: Some("kubectl-label".into()),
        ..Default::default()
    };
    let patched = deploys
        .patch(
            "web",
            &params,
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "hacked", "extra": "kept"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.metadata.generation, before.metadata.generation,
        "a label edit brings no new generation"
    );
    eventually(
        "the declared label to be healed at the interval",
        Duration::from_secs(20),
        || async {
            let d = deploys.get("web").await.ok()?;
            let labels = d.metadata.labels?;
            (labels.get("tier").map(String::as_str) == Some("front")).then_some(labels)
        },
    )
    .await;
    let labels = deploys.get("web").await.unwrap().metadata.labels.unwrap();
    assert_eq!(
        labels.get("extra").map(String::as_str),
        Some("kept"),
        "a label Git does not declare is not drift"
    );
}
