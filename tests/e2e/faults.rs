//! Faults of the sync pipeline: a forbidden delete during prune (TESTING.md row 12), a newer
//! revision while the previous one is still unhealthy (row 23), one broken Application among
//! good ones (row 13), and a controller restart that loses nothing.

use std::time::Duration;

use gantry::api::Application;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

use crate::support::app::{
    Workspace, condition, create_source_and_app, wait_ready_reason, wait_synced_healthy,
};
use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::GitServer;

fn cm(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\ndata:\n  k: \"v\"\n"
    )
}

#[tokio::test]
async fn forbidden_delete_keeps_the_object_in_the_inventory_and_is_retried() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "fault-prune").await;
    let _controller = GantryController::start(&ns.name);
    // An admission policy forbids deleting ConfigMaps labelled deny-delete in this namespace.
    let policy_name = format!("deny-delete-{}", ns.name);
    let vap = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicy",
    ));
    let vapb = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicyBinding",
    ));
    let policies: Api<DynamicObject> = Api::all_with(client.clone(), &vap);
    let bindings: Api<DynamicObject> = Api::all_with(client.clone(), &vapb);
    let policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": policy_name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["DELETE"], "resources": ["configmaps"]}]},
            "validations": [{"expression": "!has(oldObject.metadata.labels) || !('deny-delete' in oldObject.metadata.labels)", "message": "deleting this ConfigMap is forbidden by policy"}]
        }
    }))
    .unwrap();
    let binding: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy_name},
        "spec": {"policyName": policy_name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name}}}}
    }))
    .unwrap();
    policies
        .patch(
            &policy_name,
            &PatchParams::apply("tests"),
            &Patch::Apply(&policy),
        )
        .await
        .unwrap();
    bindings
        .patch(
            &policy_name,
            &PatchParams::apply("tests"),
            &Patch::Apply(&binding),
        )
        .await
        .unwrap();

    let server = GitServer::start();
    let head = server.create_repo(
        "app",
        &[
            ("d/a.yaml", &cm("a", "deny-delete: \"yes\"")),
            ("d/b.yaml", &cm("b", "")),
            ("d/c.yaml", &cm("c", "")),
        ],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "d"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "app", &head).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);

    // The policy takes a moment to be enforced; wait until a probe delete is refused.
    let probe: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "probe", "labels": {"deny-delete": "yes"}}}),
    )
    .unwrap();
    cms.patch("probe", &PatchParams::apply("tests"), &Patch::Apply(&probe))
        .await
        .unwrap();
    eventually(
        "the policy to be enforced",
        Duration::from_secs(30),
        || async {
            cms.delete("probe", &DeleteParams::default())
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;

    let ws = Workspace::clone_from(&server, "app");
    ws.remove("d/a.yaml");
    ws.remove("d/b.yaml");
    let second = ws.commit_and_push("remove a and b");
    let app = wait_ready_reason(&apps, "app", "PruneFailed", &second).await;
    let msg = condition(&app, "Ready").unwrap().message;
    assert!(
        msg.contains("forbidden by policy") && msg.contains("ConfigMap"),
        "{msg}"
    );
    assert!(
        cms.get_opt("b").await.unwrap().is_none(),
        "b should be pruned"
    );
    assert!(cms.get_opt("a").await.unwrap().is_some());
    let inventory = app.status.unwrap().inventory;
    assert!(
        inventory.iter().any(|e| e.name == "a"),
        "a stays in the inventory: {inventory:?}"
    );

    // Once deleting is allowed again, the retry prunes it.
    bindings
        .delete(&policy_name, &DeleteParams::default())
        .await
        .unwrap();
    policies
        .delete(&policy_name, &DeleteParams::default())
        .await
        .unwrap();
    eventually("a pruned on retry", Duration::from_secs(60), || async {
        let app = apps.get("app").await.ok()?;
        let gone = cms.get_opt("a").await.ok()?.is_none();
        (gone && condition(&app, "Ready")?.status == "True").then_some(())
    })
    .await;
    let _ = cms.delete("probe", &DeleteParams::default()).await;
}

const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  progressDeadlineSeconds: 600\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: app\n        image: IMAGE\n";

#[tokio::test]
async fn newer_revision_wins_over_a_pending_health_wait() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "fault-newer").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let head = server.create_repo(
        "app",
        &[(
            "d/web.yaml",
            &DEPLOY.replace("IMAGE", "registry.example.com/web:1.0.0"),
        )],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "d", "timeout": "10m"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "app", &head).await;

    // A crash-looping image: health waits (timeout 10 minutes)...
    let ws = Workspace::clone_from(&server, "app");
    ws.write(
        "d/web.yaml",
        &DEPLOY.replace("IMAGE", "registry.example.com/web:bad-2.0.0"),
    );
    let bad = ws.commit_and_push("bad image");
    eventually(
        "the bad revision to be applied and progressing",
        Duration::from_secs(30),
        || async {
            let app = apps.get("app").await.ok()?;
            let applied = app.status.as_ref()?.last_applied_revision.clone()?;
            (applied.ends_with(&bad) && condition(&app, "Healthy")?.reason == "Progressing")
                .then_some(())
        },
    )
    .await;
    // ...and a newer good commit takes over at once, without waiting for that timeout.
    ws.write(
        "d/web.yaml",
        &DEPLOY.replace("IMAGE", "registry.example.com/web:2.0.1"),
    );
    let good = ws.commit_and_push("fixed image");
    let started = std::time::Instant::now();
    wait_synced_healthy(&apps, "app", &good).await;
    assert!(started.elapsed() < Duration::from_secs(90));
    let d = Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .get("web")
        .await
        .unwrap();
    assert_eq!(
        d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("registry.example.com/web:2.0.1")
    );
}

#[tokio::test]
async fn one_broken_application_does_not_stop_the_others() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "fault-isolation").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let head = server.create_repo("good", &[("d/a.yaml", &cm("a", ""))]);
    server.create_repo(
        "broken",
        &[(
            "d/x.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: [this is not a map\n",
        )],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "broken",
        &server.file_url("broken"),
        json!({"path": "d"}),
    )
    .await;
    create_source_and_app(
        &client,
        &ns.name,
        "good",
        &server.file_url("good"),
        json!({"path": "d"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "good", &head).await;
    let broken = eventually(
        "the broken one to report",
        Duration::from_secs(30),
        || async {
            let app = apps.get("broken").await.ok()?;
            (condition(&app, "Ready")?.reason == "RenderFailed").then_some(app)
        },
    )
    .await;
    assert!(
        condition(&broken, "Ready")
            .unwrap()
            .message
            .contains("d/x.yaml")
    );
}

#[tokio::test]
async fn controller_restart_keeps_status_and_objects() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "fault-restart").await;
    let controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let head = server.create_repo(
        "app",
        &[("d/a.yaml", &cm("a", "")), ("d/b.yaml", &cm("b", ""))],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "d"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let before = wait_synced_healthy(&apps, "app", &head).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let uid_before = cms.get("a").await.unwrap().metadata.uid;
    drop(controller); // SIGKILL

    // A fresh process with an empty data directory: it re-fetches and finds nothing to do.
    let _again = GantryController::start(&ns.name);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = apps.get("app").await.unwrap();
    let (b, a) = (
        before.status.clone().unwrap(),
        after.status.clone().unwrap(),
    );
    assert_eq!(a.inventory, b.inventory);
    assert_eq!(a.last_applied_revision, b.last_applied_revision);
    assert_eq!(
        a.history.len(),
        b.history.len(),
        "no new sync for an unchanged revision"
    );
    assert_eq!(
        cms.get("a").await.unwrap().metadata.uid,
        uid_before,
        "not re-created"
    );
    assert_eq!(condition(&after, "Ready").unwrap().status, "True");
}

/// TESTING.md row 3: a 50 MB manifest, a YAML alias bomb and 10k-deep nesting each give a
/// clear render error; nothing is applied and the controller keeps working.
#[tokio::test]
async fn oversized_and_hostile_manifests_are_refused() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "fault-limits").await;
    let controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let big = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  blob: \"{}\"\n",
        "x".repeat(50 * 1024 * 1024)
    );
    let mut bomb = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb\ndata:\n  a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let mut prev = "a".to_string();
    for n in ["b", "c", "d", "e", "f", "g", "h", "i"] {
        bomb.push_str(&format!("  {n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
        prev = n.to_string();
    }
    let deep = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: deep\ndata: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let head = server.create_repo(
        "app",
        &[
            ("big/cm.yaml", &big),
            ("bomb/cm.yaml", &bomb),
            ("deep/cm.yaml", &deep),
            ("ok/cm.yaml", &cm("fine", "")),
        ],
    );
    for path in ["big", "bomb", "deep", "ok"] {
        create_source_and_app(
            &client,
            &ns.name,
            path,
            &server.file_url("app"),
            json!({"path": path}),
        )
        .await;
    }
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    for (name, needle) in [
        ("big", "limit is"),
        ("bomb", "bomb/cm.yaml"),
        ("deep", "deep/cm.yaml"),
    ] {
        let app = wait_ready_reason(&apps, name, "RenderFailed", &head).await;
        let msg = condition(&app, "Ready").unwrap().message;
        assert!(msg.contains(needle), "{name}: {msg}");
        assert!(msg.len() < 2000, "{name}: the message must stay short");
    }
    wait_synced_healthy(&apps, "ok", &head).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    for name in ["big", "bomb", "deep"] {
        assert!(
            cms.get_opt(name).await.unwrap().is_none(),
            "{name} was applied"
        );
    }
    // Memory stays bounded: the 50 MB file is refused by its size, never read.
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", controller.process.child.id())).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(rss_kb < 400 * 1024, "controller peak RSS {rss_kb} kB");
}
