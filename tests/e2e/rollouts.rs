//! Rollouts against the local control plane (kwok crash-loops images containing `bad`):
//! a RollingUpdate whose workloads do not become healthy returns to the last healthy
//! revision's templates and is not retried until Git changes.

use std::time::Duration;

use gantry::api::Application;
use gantry::api::application::SyncResult;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use serde_json::json;

use crate::support::app::{Workspace, condition, create_source_and_app, wait_synced_healthy};
use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::GitServer;

fn deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  \
         selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    \
         spec:\n      containers:\n        - name: web\n          image: {image}\n"
    )
}

fn template_image(d: &Deployment) -> Option<String> {
    d.spec.as_ref()?.template.spec.as_ref()?.containers[0]
        .image
        .clone()
}

#[tokio::test]
async fn rolling_update_with_a_bad_image_returns_to_the_last_healthy_templates() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "ro-rolling").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let good = server.create_repo(
        "app",
        &[("app/deploy.yaml", &deployment("example.test/web:good-1"))],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "web",
        &server.http_url("app"),
        json!({
            "path": "app", "targetNamespace": ns.name,
            "rollout": {"strategy": "RollingUpdate", "progressDeadline": "15s"}
        }),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "web", &good).await;

    // A bad image: pods crash-loop, the deadline passes, the good template comes back.
    let ws = Workspace::clone_from(&server, "app");
    ws.write("app/deploy.yaml", &deployment("example.test/web:bad-2"));
    let bad = ws.commit_and_push("bad image");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    eventually(
        "the bad template applied",
        Duration::from_secs(30),
        || async {
            let d = deployments.get("web").await.ok()?;
            (template_image(&d)? == "example.test/web:bad-2").then_some(())
        },
    )
    .await;
    let app = eventually("RolloutAborted", Duration::from_secs(60), || async {
        let app = apps.get("web").await.ok()?;
        let ready = condition(&app, "Ready")?;
        (ready.reason == "RolloutAborted").then_some(app)
    })
    .await;
    let message = condition(&app, "Ready").unwrap().message;
    assert!(message.contains(&bad), "{message}");
    assert!(message.contains("progress deadline"), "{message}");
    assert!(message.contains("Deployment web"), "{message}");
    let status = app.status.unwrap();
    let record = status
        .history
        .iter()
        .find(|r| r.revision.ends_with(&bad))
        .unwrap();
    assert_eq!(record.result, SyncResult::Aborted);
    assert_eq!(record.healthy, Some(false));
    assert!(
        status
            .rollout
            .unwrap()
            .failed_revisions
            .iter()
            .any(|r| r.ends_with(&bad))
    );

    // Back on the good template, all replicas ready again, and it stays there: the failed
    // revision is not retried while Git does not change.
    eventually(
        "the good template back and ready",
        Duration::from_secs(60),
        || async {
            let d = deployments.get("web").await.ok()?;
            let s = d.status.as_ref()?;
            (template_image(&d)? == "example.test/web:good-1"
                && s.updated_replicas == Some(3)
                && s.available_replicas == Some(3))
            .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let d = deployments.get("web").await.unwrap();
    assert_eq!(template_image(&d).unwrap(), "example.test/web:good-1");
    let app = apps.get("web").await.unwrap();
    assert_eq!(condition(&app, "Ready").unwrap().reason, "RolloutAborted");
    assert_eq!(condition(&app, "Healthy").unwrap().status, "True");

    // A new commit is rolled out normally.
    ws.write("app/deploy.yaml", &deployment("example.test/web:good-3"));
    let fixed = ws.commit_and_push("fixed image");
    wait_synced_healthy(&apps, "web", &fixed).await;
    let d = deployments.get("web").await.unwrap();
    assert_eq!(template_image(&d).unwrap(), "example.test/web:good-3");
}

fn gantry(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .env("KUBECONFIG", crate::support::cluster::kubeconfig_path())
        .output()
        .unwrap()
}

#[tokio::test]
async fn gantry_rollback_reverts_in_git_and_the_cluster_follows() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "ro-rollback").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let v1 = server.create_repo(
        "app",
        &[
            ("app/deploy.yaml", &deployment("example.test/web:good-1")),
            ("docs/README.md", "notes\n"),
        ],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "web",
        &server.http_url("app"),
        json!({"path": "app", "targetNamespace": ns.name, "rollout": {"progressDeadline": "60s"}}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "web", &v1).await;
    let ws = Workspace::clone_from(&server, "app");
    ws.write("app/deploy.yaml", &deployment("example.test/web:good-2"));
    let v2 = ws.commit_and_push("v2");
    wait_synced_healthy(&apps, "web", &v2).await;
    ws.write("docs/README.md", "more notes\n");
    ws.commit_and_push("docs only");
    ws.write("app/deploy.yaml", &deployment("example.test/web:good-3"));
    let v3 = ws.commit_and_push("v3");
    wait_synced_healthy(&apps, "web", &v3).await;
    let target = format!("{}/web", ns.name);
    let head_before = crate::support::git::git(&server.bare_path("app"), &["rev-parse", "main"]);

    // --dry-run: the two commits that touched app/, the diff back to v1, nothing pushed.
    let dry = gantry(&["rollback", &target, "--to", &v1, "--dry-run"]);
    let out = String::from_utf8_lossy(&dry.stdout).to_string();
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(out.contains("would revert 2 commit(s)"), "{out}");
    assert!(out.contains(&v3[..12]) && out.contains(&v2[..12]), "{out}");
    assert!(
        out.contains("-          image: example.test/web:good-3"),
        "{out}"
    );
    assert!(
        out.contains("+          image: example.test/web:good-1"),
        "{out}"
    );
    assert_eq!(
        crate::support::git::git(&server.bare_path("app"), &["rev-parse", "main"]),
        head_before
    );

    // The rollback: revert commits in Git, the cluster follows, docs untouched.
    let done = gantry(&[
        "rollback",
        &target,
        "--to",
        &format!("main@sha1:{v1}"),
        "--wait",
        "--timeout",
        "90s",
    ]);
    let out = String::from_utf8_lossy(&done.stdout).to_string();
    assert!(
        done.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let bare = server.bare_path("app");
    let log = crate::support::git::git(&bare, &["log", "--format=%s", "-4", "main"]);
    assert_eq!(log, "Revert \"v2\"\nRevert \"v3\"\nv3\ndocs only\n");
    assert_eq!(
        crate::support::git::git(&bare, &["show", "main:docs/README.md"]),
        "more notes\n"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let d = deployments.get("web").await.unwrap();
    assert_eq!(template_image(&d).unwrap(), "example.test/web:good-1");
    let head = crate::support::git::git(&bare, &["rev-parse", "main"])
        .trim()
        .to_string();
    let app = apps.get("web").await.unwrap();
    assert!(
        app.status
            .unwrap()
            .last_applied_revision
            .unwrap()
            .ends_with(&head)
    );
}
