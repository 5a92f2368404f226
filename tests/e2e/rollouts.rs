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
    // Status says what runs: the good revision's template (issue 14 item 5).
    assert!(
        status
            .running_revision
            .as_deref()
            .is_some_and(|r| r.ends_with(&good)),
        "{:?}",
        status.running_revision
    );
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
            (
                "other/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\n",
            ),
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
    // A second Application on the same source: the rollback of web is not its rollback.
    let other: Application = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": "other"},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": "web"}, "path": "other",
                 "interval": "10m"}
    }))
    .unwrap();
    apps.create(&kube::api::PostParams::default(), &other)
        .await
        .unwrap();
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
    let status = app.status.unwrap();
    assert!(status.last_applied_revision.unwrap().ends_with(&head));
    assert_eq!(status.history[0].result, SyncResult::RolledBack);
    let other = wait_synced_healthy(&apps, "other", &head).await;
    let latest = &other.status.unwrap().history[0];
    assert!(latest.revision.ends_with(&head));
    assert_eq!(
        latest.result,
        SyncResult::Succeeded,
        "the rollback of web is recorded in web's history only"
    );
}

pub(crate) const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n    - port: 80\n";

pub(crate) fn deployment_n(image: &str, replicas: i32) -> String {
    deployment(image).replace("replicas: 3", &format!("replicas: {replicas}"))
}

/// A canary Application on the local Git server, synced and healthy at its first commit.
pub(crate) async fn canary_app(
    client: &kube::Client,
    ns: &str,
    server: &GitServer,
    rollout: serde_json::Value,
) -> (Api<Application>, Workspace, String) {
    let first = server.create_repo(
        "app",
        &[
            (
                "app/deploy.yaml",
                &deployment_n("example.test/web:good-1", 4),
            ),
            ("app/service.yaml", SERVICE),
        ],
    );
    create_source_and_app(
        client,
        ns,
        "web",
        &server.http_url("app"),
        json!({"path": "app", "targetNamespace": ns, "rollout": rollout}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), ns);
    wait_synced_healthy(&apps, "web", &first).await;
    // The healthy template is recorded: the next template change goes through a canary.
    eventually(
        "the healthy template recorded",
        Duration::from_secs(30),
        || async {
            let app = apps.get("web").await.ok()?;
            let rec = app.status?.history.first()?.clone();
            (!rec.template_hashes.is_empty()).then_some(())
        },
    )
    .await;
    (apps, Workspace::clone_from(server, "app"), first)
}

#[tokio::test]
async fn a_good_canary_walks_its_steps_and_is_promoted() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "ro-canary").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let (apps, ws, _) = canary_app(
        &client,
        &ns.name,
        &server,
        json!({
            "strategy": "Canary",
            "steps": [{"weight": 25}, {"pause": {"duration": "5s"}}, {"weight": 50}, {"pause": {}}],
            "analysis": {"interval": "2s", "failureLimit": 2}
        }),
    )
    .await;
    ws.write(
        "app/deploy.yaml",
        &deployment_n("example.test/web:good-2", 4),
    );
    let v2 = ws.commit_and_push("v2");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    // Watch the canary grow while the stable Deployment keeps its template.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the canary never reached 50% ({seen:?})"
        );
        let stable = deployments.get("web").await.unwrap();
        assert_eq!(
            template_image(&stable).unwrap(),
            "example.test/web:good-1",
            "the stable template changes only at promotion"
        );
        if let Some(c) = deployments.get_opt("web-canary").await.unwrap() {
            assert_eq!(template_image(&c).unwrap(), "example.test/web:good-2");
            let spec = c.spec.as_ref().unwrap();
            let selector = spec.selector.match_labels.clone().unwrap();
            assert_eq!(
                selector.get("gantry.dev/track").map(String::as_str),
                Some("canary")
            );
            assert_eq!(selector.get("app").map(String::as_str), Some("web"));
            let replicas = spec.replicas.unwrap();
            seen.insert(replicas);
            if replicas == 2 && c.status.as_ref().and_then(|s| s.ready_replicas) == Some(2) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        seen,
        [1, 2].into_iter().collect(),
        "25% then 50% of 4 replicas"
    );
    // The real controller-manager keeps the ReplicaSets apart: the stable one still has its
    // 4 replicas, the canary's its 2.
    let stable = deployments.get("web").await.unwrap();
    assert_eq!(stable.status.unwrap().available_replicas, Some(4));
    let replica_sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> =
        Api::namespaced(client.clone(), &ns.name);
    for rs in replica_sets.list(&Default::default()).await.unwrap().items {
        let owner = rs.metadata.owner_references.clone().unwrap_or_default()[0]
            .name
            .clone();
        let spec = rs.spec.clone().unwrap();
        let image = spec.template.unwrap().spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap();
        let replicas = spec.replicas.unwrap_or(0);
        match owner.as_str() {
            "web" if replicas > 0 => {
                assert_eq!((image.as_str(), replicas), ("example.test/web:good-1", 4))
            }
            "web-canary" => {
                assert_eq!((image.as_str(), replicas), ("example.test/web:good-2", 2));
                assert_eq!(
                    spec.selector
                        .match_labels
                        .unwrap()
                        .get("gantry.dev/track")
                        .map(String::as_str),
                    Some("canary")
                );
            }
            "web" => {}
            other => panic!("unexpected ReplicaSet owner {other}"),
        }
    }

    // Paused at the last step until promoted.
    eventually("paused", Duration::from_secs(30), || async {
        let app = apps.get("web").await.ok()?;
        (condition(&app, "Ready")?.reason == "RolloutPaused").then_some(())
    })
    .await;
    // Drift checks go on during the canary, for everything but the held stable template.
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(client.clone(), &ns.name);
    services
        .patch(
            "web",
            &kube::api::PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &kube::api::Patch::Merge(json!({"spec": {"selector": {"app": "other"}}})),
        )
        .await
        .unwrap();
    eventually(
        "the Service healed during the canary",
        Duration::from_secs(30),
        || async {
            let svc = services.get("web").await.ok()?;
            (svc.spec?.selector?.get("app")? == "web").then_some(())
        },
    )
    .await;
    assert_eq!(
        template_image(&deployments.get("web").await.unwrap()).unwrap(),
        "example.test/web:good-1",
        "the held template is not drift"
    );
    let out = gantry(&["promote", &format!("{}/web", ns.name)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let app = eventually("promoted", Duration::from_secs(60), || async {
        let app = apps.get("web").await.ok()?;
        (condition(&app, "Ready")?.reason == "Promoted").then_some(app)
    })
    .await;
    let d = deployments.get("web").await.unwrap();
    assert_eq!(template_image(&d).unwrap(), "example.test/web:good-2");
    eventually("the canary deleted", Duration::from_secs(30), || async {
        deployments
            .get_opt("web-canary")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let rec = app
        .status
        .unwrap()
        .history
        .into_iter()
        .find(|r| r.revision.ends_with(&v2))
        .unwrap();
    assert_eq!(rec.result, SyncResult::Promoted);
    assert!(
        rec.configured >= 1,
        "the promotion configured the stable Deployment: {rec:?}"
    );
    let history = gantry(&["history", &format!("{}/web", ns.name)]);
    assert!(String::from_utf8_lossy(&history.stdout).contains("Promoted"));
}

#[tokio::test]
async fn a_crash_looping_canary_is_aborted_and_the_stable_version_never_wavers() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "ro-canary-bad").await;
    let controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let (apps, ws, good) = canary_app(
        &client,
        &ns.name,
        &server,
        json!({
            "strategy": "Canary",
            "steps": [{"weight": 25}, {"pause": {}}],
            "analysis": {"interval": "2s", "failureLimit": 2, "maxRestarts": 0}
        }),
    )
    .await;
    ws.write(
        "app/deploy.yaml",
        &deployment_n("example.test/web:bad-2", 4),
    );
    let bad = ws.commit_and_push("bad");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let mut canary_seen = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let app = loop {
        assert!(std::time::Instant::now() < deadline, "never aborted");
        let stable = deployments.get("web").await.unwrap();
        assert_eq!(template_image(&stable).unwrap(), "example.test/web:good-1");
        assert_eq!(
            stable.status.as_ref().and_then(|s| s.ready_replicas),
            Some(4),
            "all stable replicas stay ready"
        );
        canary_seen |= deployments.get_opt("web-canary").await.unwrap().is_some();
        let app = apps.get("web").await.unwrap();
        if condition(&app, "Ready").is_some_and(|c| c.reason == "RolloutAborted") {
            break app;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(canary_seen);
    let message = condition(&app, "Ready").unwrap().message;
    assert!(message.contains("check pods failed"), "{message}");
    assert!(message.contains(&bad), "{message}");
    let status = app.status.unwrap();
    // The stable Deployment runs the good revision's template, and status says so.
    assert!(
        status
            .running_revision
            .as_deref()
            .is_some_and(|r| r.ends_with(&good)),
        "{:?}",
        status.running_revision
    );
    let rollout = status.rollout.unwrap();
    assert!(rollout.failed_revisions.iter().any(|r| r.ends_with(&bad)));
    assert!(rollout.checks.iter().any(|c| !c.passed && c.name == "pods"));
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), &ns.name);
    eventually(
        "a RolloutAborted event",
        Duration::from_secs(10),
        || async {
            let list = events.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("RolloutAborted"))
                .then_some(())
        },
    )
    .await;
    eventually("the canary deleted", Duration::from_secs(30), || async {
        deployments
            .get_opt("web-canary")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let metrics = reqwest::get(format!(
        "http://127.0.0.1:{}/metrics",
        controller.metrics_port
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        metrics.contains(r#"gantry_rollouts_total{result="aborted",strategy="canary"} 1"#),
        "{metrics}"
    );
    // Not retried: no canary comes back for the same revision.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(deployments.get_opt("web-canary").await.unwrap().is_none());
        let stable = deployments.get("web").await.unwrap();
        assert_eq!(template_image(&stable).unwrap(), "example.test/web:good-1");
    }
    // The status says what runs: Git's revision is not the workloads' (Drifted=True).
    let drifted = eventually(
        "Drifted says the abort",
        Duration::from_secs(20),
        || async {
            let app = apps.get("web").await.ok()?;
            let c = condition(&app, "Drifted")?;
            (c.reason == "RolloutAborted").then_some(c)
        },
    )
    .await;
    assert_eq!(drifted.status, "True");
    assert!(
        drifted.message.contains(&bad) && drifted.message.contains("run the templates of revision"),
        "{}",
        drifted.message
    );
}

#[tokio::test]
async fn an_aborted_rolling_update_with_on_failure_revert_is_reverted_in_git() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "ro-rolling-rev").await;
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
            "rollout": {"strategy": "RollingUpdate", "progressDeadline": "10s", "onFailure": "revert"}
        }),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "web", &good).await;
    let ws = Workspace::clone_from(&server, "app");
    ws.write("app/deploy.yaml", &deployment("example.test/web:bad-2"));
    let bad = ws.commit_and_push("bad image");
    let bare = server.bare_path("app");
    let revert = eventually(
        "a revert commit in Git",
        Duration::from_secs(90),
        || async {
            let subject = crate::support::git::git(&bare, &["log", "-1", "--format=%s", "main"]);
            subject.starts_with("Revert \"bad image\"").then(|| {
                crate::support::git::git(&bare, &["rev-parse", "main"])
                    .trim()
                    .to_string()
            })
        },
    )
    .await;
    let body = crate::support::git::git(&bare, &["log", "-1", "--format=%B", "main"]);
    assert!(
        body.contains(&bad) && body.contains("aborted the rollout"),
        "{body}"
    );
    // The revert is deployed and Git and cluster agree on the good template.
    wait_synced_healthy(&apps, "web", &revert).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let d = deployments.get("web").await.unwrap();
    assert_eq!(template_image(&d).unwrap(), "example.test/web:good-1");
    let app = apps.get("web").await.unwrap();
    let record = app
        .status
        .unwrap()
        .history
        .into_iter()
        .find(|r| r.revision.ends_with(&bad))
        .unwrap();
    assert_eq!(record.result, SyncResult::Aborted);
}

#[tokio::test]
async fn an_aborted_canary_with_on_failure_revert_is_reverted_in_git() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "ro-canary-rev").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let (apps, ws, _) = canary_app(
        &client,
        &ns.name,
        &server,
        json!({
            "strategy": "Canary", "onFailure": "revert",
            "steps": [{"weight": 50}, {"pause": {}}],
            "analysis": {"interval": "2s", "failureLimit": 2}
        }),
    )
    .await;
    ws.write(
        "app/deploy.yaml",
        &deployment_n("example.test/web:bad-2", 4),
    );
    let bad = ws.commit_and_push("bad image");
    let bare = server.bare_path("app");
    let revert = eventually(
        "a revert commit in Git",
        Duration::from_secs(90),
        || async {
            let subject =
                crate::support::git::git(&bare, &["log", "-1", "--format=%s%n%b", "main"]);
            subject.starts_with("Revert \"bad image\"").then(|| {
                crate::support::git::git(&bare, &["rev-parse", "main"])
                    .trim()
                    .to_string()
            })
        },
    )
    .await;
    let body = crate::support::git::git(&bare, &["log", "-1", "--format=%B", "main"]);
    assert!(
        body.contains(&bad) && body.contains("check pods failed"),
        "{body}"
    );
    // The revert is deployed (known-good template: no canary) and Git and cluster agree.
    wait_synced_healthy(&apps, "web", &revert).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let d = deployments.get("web").await.unwrap();
    assert_eq!(template_image(&d).unwrap(), "example.test/web:good-1");
    assert!(deployments.get_opt("web-canary").await.unwrap().is_none());
}

async fn wait_reason(apps: &Api<Application>, reason: &str, commit: &str) -> Application {
    eventually(
        &format!("Ready reason {reason} at {commit}"),
        Duration::from_secs(90),
        || async {
            let app = apps.get("web").await.ok()?;
            let c = condition(&app, "Ready")?;
            let at = app
                .status
                .as_ref()?
                .last_attempted_revision
                .as_deref()?
                .ends_with(commit);
            (c.reason == reason && at).then_some(app)
        },
    )
    .await
}

#[tokio::test]
async fn http_and_prometheus_checks_decide_between_abort_and_promotion() {
    use crate::support::http_stub::HttpStub;
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "ro-checks").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    // Prometheus is not built here (see the notes); its HTTP API is served by a loopback stub.
    let stub = HttpStub::start();
    stub.set_status(500);
    stub.set_metric(0.01);
    let (apps, ws, _) = canary_app(
        &client,
        &ns.name,
        &server,
        json!({
            "strategy": "Canary",
            "steps": [{"weight": 50}],
            "analysis": {
                "interval": "2s", "failureLimit": 2,
                "http": [{"name": "smoke", "url": stub.url("/health"), "bodyRegex": "^ok"}],
                "prometheus": [{"name": "error-rate", "address": stub.url(""),
                                "query": "sum(rate(errors[1m]))", "max": 0.05}]
            }
        }),
    )
    .await;

    // 500 from the smoke URL: aborted, with the evidence.
    ws.write(
        "app/deploy.yaml",
        &deployment_n("example.test/web:good-2", 4),
    );
    let v2 = ws.commit_and_push("v2");
    let app = wait_reason(&apps, "RolloutAborted", &v2).await;
    let msg = condition(&app, "Ready").unwrap().message;
    assert!(
        msg.contains("check smoke failed") && msg.contains("answered 500"),
        "{msg}"
    );
    let checks = app.status.unwrap().rollout.unwrap().checks;
    assert!(
        checks
            .iter()
            .any(|c| c.name == "smoke" && c.status_code == Some(500))
    );

    // The smoke URL is fine now, but the error rate is above its bound: aborted.
    stub.set_status(200);
    stub.set_metric(0.5);
    ws.write(
        "app/deploy.yaml",
        &deployment_n("example.test/web:good-3", 4),
    );
    let v3 = ws.commit_and_push("v3");
    let app = wait_reason(&apps, "RolloutAborted", &v3).await;
    let msg = condition(&app, "Ready").unwrap().message;
    assert!(
        msg.contains("check error-rate failed") && msg.contains("= 0.5"),
        "{msg}"
    );

    // Both fine: promoted.
    stub.set_metric(0.01);
    ws.write(
        "app/deploy.yaml",
        &deployment_n("example.test/web:good-4", 4),
    );
    let v4 = ws.commit_and_push("v4");
    wait_reason(&apps, "Promoted", &v4).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let d = deployments.get("web").await.unwrap();
    assert_eq!(template_image(&d).unwrap(), "example.test/web:good-4");
}

#[tokio::test]
async fn a_canary_resumes_at_its_step_after_the_controller_is_killed() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "ro-resume").await;
    let controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let (apps, ws, _) = canary_app(
        &client,
        &ns.name,
        &server,
        json!({
            "strategy": "Canary",
            "steps": [{"weight": 25}, {"pause": {"duration": "8s"}}, {"weight": 50}],
            "analysis": {"interval": "2s"}
        }),
    )
    .await;
    ws.write(
        "app/deploy.yaml",
        &deployment_n("example.test/web:good-2", 4),
    );
    let v2 = ws.commit_and_push("v2");
    let before = eventually(
        "the canary in its pause",
        Duration::from_secs(60),
        || async {
            let r = apps.get("web").await.ok()?.status?.rollout?;
            (r.step == 1).then_some(r)
        },
    )
    .await;
    drop(controller); // SIGKILL
    let _controller = GantryController::start(&ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "never promoted after the restart"
        );
        let app = apps.get("web").await.unwrap();
        let r = app.status.clone().unwrap().rollout.unwrap();
        assert!(
            r.step >= 1,
            "the steps restarted after the controller restart"
        );
        assert!(r.step_started_at.is_some());
        if r.step == 1 {
            assert_eq!(
                r.step_started_at, before.step_started_at,
                "the pause was not restarted"
            );
        }
        if condition(&app, "Ready").is_some_and(|c| c.reason == "Promoted")
            && app
                .status
                .unwrap()
                .last_applied_revision
                .unwrap()
                .ends_with(&v2)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        template_image(&deployments.get("web").await.unwrap()).unwrap(),
        "example.test/web:good-2"
    );
    assert!(deployments.get_opt("web-canary").await.unwrap().is_none());
}

#[tokio::test]
async fn a_newer_commit_replaces_a_running_canary_without_waiting_for_its_analysis() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "ro-supersede").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let (apps, ws, _) = canary_app(
        &client,
        &ns.name,
        &server,
        json!({
            "strategy": "Canary",
            "steps": [{"weight": 25}],
            // Slow to give up on the bad one: 10 failed analyses 3 s apart.
            "analysis": {"interval": "3s", "failureLimit": 10}
        }),
    )
    .await;
    ws.write(
        "app/deploy.yaml",
        &deployment_n("example.test/web:bad-2", 4),
    );
    let bad = ws.commit_and_push("bad");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    eventually("the bad canary", Duration::from_secs(60), || async {
        let c = deployments.get_opt("web-canary").await.ok()??;
        (template_image(&c)? == "example.test/web:bad-2").then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    ws.write(
        "app/deploy.yaml",
        &deployment_n("example.test/web:good-3", 4),
    );
    let good = ws.commit_and_push("good");
    wait_reason(&apps, "Promoted", &good).await;
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the newer revision waited for the old analysis ({:?})",
        started.elapsed()
    );
    let app = apps.get("web").await.unwrap();
    let rollout = app.status.unwrap().rollout.unwrap();
    assert!(
        !rollout.failed_revisions.iter().any(|r| r.ends_with(&bad)),
        "superseded, not aborted"
    );
    assert_eq!(
        template_image(&deployments.get("web").await.unwrap()).unwrap(),
        "example.test/web:good-3"
    );
}

#[tokio::test]
async fn rolling_back_to_a_healthy_revision_skips_the_canary_steps() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "ro-fast").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let (apps, ws, first) = canary_app(
        &client,
        &ns.name,
        &server,
        json!({
            "strategy": "Canary",
            "steps": [{"weight": 25}, {"pause": {"duration": "3s"}}],
            "analysis": {"interval": "2s"}
        }),
    )
    .await;
    ws.write(
        "app/deploy.yaml",
        &deployment_n("example.test/web:good-2", 4),
    );
    let v2 = ws.commit_and_push("v2");
    wait_reason(&apps, "Promoted", &v2).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);

    // Back to the first revision: its template was healthy, so no canary at all.
    let started = std::time::Instant::now();
    let out = gantry(&[
        "rollback",
        &format!("{}/web", ns.name),
        "--to",
        &first,
        "--wait",
        "--timeout",
        "60s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = started.elapsed();
    assert!(deployments.get_opt("web-canary").await.unwrap().is_none());
    let d = deployments.get("web").await.unwrap();
    assert_eq!(template_image(&d).unwrap(), "example.test/web:good-1");
    let app = apps.get("web").await.unwrap();
    assert_ne!(
        condition(&app, "Ready").unwrap().reason,
        "Promoted",
        "no canary ran"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[tokio::test]
async fn rolling_update_checks_http_after_health_and_reverts_on_failure() {
    use crate::support::http_stub::HttpStub;
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "ro-rolling-http").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let stub = HttpStub::start();
    stub.set_status(200);
    let (apps, ws, _) = canary_app(
        &client,
        &ns.name,
        &server,
        json!({
            "strategy": "RollingUpdate", "progressDeadline": "60s",
            "analysis": {"interval": "1s", "failureLimit": 2,
                         "http": [{"name": "smoke", "url": stub.url("/health")}]}
        }),
    )
    .await;
    // Healthy pods, failing smoke test: back to the previous template.
    stub.set_status(503);
    ws.write(
        "app/deploy.yaml",
        &deployment_n("example.test/web:good-2", 4),
    );
    let v2 = ws.commit_and_push("v2");
    let app = wait_reason(&apps, "RolloutAborted", &v2).await;
    let msg = condition(&app, "Ready").unwrap().message;
    assert!(
        msg.contains("check smoke failed") && msg.contains("503"),
        "{msg}"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    eventually(
        "the previous template back",
        Duration::from_secs(30),
        || async {
            let d = deployments.get("web").await.ok()?;
            (template_image(&d)? == "example.test/web:good-1").then_some(())
        },
    )
    .await;
    // Smoke test passing: the next revision is Ready.
    stub.set_status(200);
    ws.write(
        "app/deploy.yaml",
        &deployment_n("example.test/web:good-3", 4),
    );
    let v3 = ws.commit_and_push("v3");
    wait_synced_healthy(&apps, "web", &v3).await;
}

#[tokio::test]
async fn a_real_prometheus_scraping_the_canary_metric_decides_the_rollout() {
    use crate::support::http_stub::HttpStub;
    use crate::support::prometheus::Prometheus;
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "ro-prom").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let target = HttpStub::start();
    target.set_metric(0.5);
    let prometheus = Prometheus::start(target.port);
    let (apps, ws, _) = canary_app(
        &client,
        &ns.name,
        &server,
        json!({
            "strategy": "Canary",
            "steps": [{"weight": 50}],
            "analysis": {"interval": "2s", "failureLimit": 2,
                         "prometheus": [{"name": "error-rate", "address": prometheus.url(),
                                         "query": "max(canary_errors)", "max": 0.05}]}
        }),
    )
    .await;
    eventually(
        "Prometheus to scrape 0.5",
        Duration::from_secs(60),
        || async { (prometheus.value("max(canary_errors)").await? == 0.5).then_some(()) },
    )
    .await;
    ws.write(
        "app/deploy.yaml",
        &deployment_n("example.test/web:good-2", 4),
    );
    let v2 = ws.commit_and_push("v2");
    let app = wait_reason(&apps, "RolloutAborted", &v2).await;
    let msg = condition(&app, "Ready").unwrap().message;
    assert!(
        msg.contains("check error-rate failed") && msg.contains("= 0.5"),
        "{msg}"
    );
    let checks = app.status.unwrap().rollout.unwrap().checks;
    assert!(
        checks
            .iter()
            .any(|c| c.name == "error-rate" && c.value == Some(0.5))
    );

    target.set_metric(0.01);
    eventually(
        "Prometheus to scrape 0.01",
        Duration::from_secs(60),
        || async { (prometheus.value("max(canary_errors)").await? == 0.01).then_some(()) },
    )
    .await;
    ws.write(
        "app/deploy.yaml",
        &deployment_n("example.test/web:good-3", 4),
    );
    let v3 = ws.commit_and_push("v3");
    wait_reason(&apps, "Promoted", &v3).await;
}

/// The canary's size is taken of the live stable replica count (an HPA's), not of Git's
/// `replicas` (left out, as with an HPA): 50 % of 4 live replicas is 2 canary pods.
#[tokio::test]
async fn the_canary_is_sized_from_the_live_replica_count() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "ro-hpa").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let unscaled = |image: &str| deployment(image).replace("  replicas: 3\n", "");
    let first = server.create_repo(
        "app",
        &[
            ("app/deploy.yaml", &unscaled("example.test/web:good-1")),
            ("app/service.yaml", SERVICE),
        ],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "web",
        &server.http_url("app"),
        json!({"path": "app", "targetNamespace": ns.name, "rollout": {
            "strategy": "Canary", "steps": [{"weight": 50}, {"pause": {}}],
            "analysis": {"interval": "2s", "failureLimit": 2}}}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "web", &first).await;
    eventually(
        "the healthy template recorded",
        Duration::from_secs(30),
        || async {
            let app = apps.get("web").await.ok()?;
            (!app.status?.history.first()?.template_hashes.is_empty()).then_some(())
        },
    )
    .await;
    // The autoscaler scales the stable Deployment to 4.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments
        .patch(
            "web",
            &kube::api::PatchParams::apply("horizontal-pod-autoscaler"),
            &kube::api::Patch::Apply(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web"}, "spec": {"replicas": 4}
            })),
        )
        .await
        .unwrap();
    let ws = Workspace::clone_from(&server, "app");
    ws.write("app/deploy.yaml", &unscaled("example.test/web:good-2"));
    ws.commit_and_push("good-2");
    let canary = eventually("the canary", Duration::from_secs(60), || async {
        deployments.get_opt("web-canary").await.ok()?
    })
    .await;
    assert_eq!(canary.spec.unwrap().replicas, Some(2));
    let stable = deployments.get("web").await.unwrap();
    assert_eq!(
        stable.spec.unwrap().replicas,
        Some(4),
        "the stable count is kept"
    );
}
