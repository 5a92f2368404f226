//! Ownership boundaries (TESTING.md rows 19, 25, 26, 27, 29, 30): canaries never touch a
//! Deployment Gantry did not create, reverts undo only the Application's path, analysis
//! bodies are capped, a crash mid-apply leaves no orphans, and two Applications declaring
//! one object do not fight over it.

use std::time::Duration;

use gantry::api::Application;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::app::{Workspace, condition, create_source_and_app, wait_synced_healthy};
use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::{GitServer, git};

fn deployment(image: &str, namespace: Option<&str>) -> String {
    let ns = namespace
        .map(|n| format!("  namespace: {n}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n{ns}spec:\n  replicas: 4\n  \
         selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    \
         spec:\n      containers:\n        - name: web\n          image: {image}\n"
    )
}

fn image_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap()
}

/// A canary Application whose first revision is synced, healthy and recorded.
async fn canary_app(
    client: &kube::Client,
    ns: &str,
    server: &GitServer,
    deployment_ns: Option<&str>,
    rollout: serde_json::Value,
) -> (Api<Application>, Workspace) {
    let first = server.create_repo(
        "app",
        &[
            (
                "app/deploy.yaml",
                &deployment("example.test/web:good-1", deployment_ns),
            ),
            ("other/other.yaml", "team: b\nversion: 1\n"),
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
    (apps, Workspace::clone_from(server, "app"))
}

/// A Deployment a user made, with the name Gantry would give a canary.
async fn user_deployment(client: &kube::Client, ns: &str) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web-canary", "labels": {"owner": "someone-else"}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "unrelated"}},
                "template": {
                    "metadata": {"labels": {"app": "unrelated"}},
                    "spec": {"containers": [{"name": "c", "image": "example.test/unrelated:1"}]}
                }
            }
        }))
        .unwrap(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_canary_never_takes_over_a_deployment_with_its_name() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "own-canary").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let (apps, ws) = canary_app(
        &client,
        &ns.name,
        &server,
        None,
        json!({"strategy": "Canary", "steps": [{"weight": 50}, {"pause": {}}],
               "analysis": {"interval": "1s", "failureLimit": 2}}),
    )
    .await;
    let theirs = user_deployment(&client, &ns.name).await;
    ws.write(
        "app/deploy.yaml",
        &deployment("example.test/web:good-2", None),
    );
    let v2 = ws.commit_and_push("v2");
    let app = eventually("CanaryBlocked", Duration::from_secs(60), || async {
        let app = apps.get("web").await.ok()?;
        let c = condition(&app, "Ready")?;
        (c.reason == "CanaryBlocked"
            && app
                .status
                .as_ref()?
                .last_attempted_revision
                .as_deref()?
                .ends_with(&v2))
        .then_some(app)
    })
    .await;
    let message = condition(&app, "Ready").unwrap().message;
    assert!(
        message.contains(&format!("{}/web-canary", ns.name)),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let now = deployments.get("web-canary").await.unwrap();
    assert_eq!(now.metadata.uid, theirs.metadata.uid, "never deleted");
    assert_eq!(
        image_of(&now),
        "example.test/unrelated:1",
        "never applied over"
    );
    assert!(
        !now.labels().contains_key("gantry.dev/application"),
        "never labelled"
    );
    assert_eq!(
        image_of(&deployments.get("web").await.unwrap()),
        "example.test/web:good-1",
        "the stable Deployment keeps its template"
    );
}

#[tokio::test]
async fn abort_deletes_the_canary_in_the_stable_namespace_and_reverts_only_the_path() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "own-ns").await;
    let elsewhere = TestNamespace::new(&client, "own-ns-dep").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let (apps, ws) = canary_app(
        &client,
        &ns.name,
        &server,
        Some(&elsewhere.name),
        json!({"strategy": "Canary", "onFailure": "revert",
               "steps": [{"weight": 50}, {"pause": {}}],
               "analysis": {"interval": "1s", "failureLimit": 2, "maxRestarts": 0}}),
    )
    .await;
    // An unrelated Deployment with the canary's name in the Application's namespace.
    let theirs = user_deployment(&client, &ns.name).await;
    // One commit changes the Application's path and another team's file.
    ws.write(
        "app/deploy.yaml",
        &deployment("example.test/web:bad-2", Some(&elsewhere.name)),
    );
    ws.write("other/other.yaml", "team: b\nversion: 2\n");
    let remote: Api<Deployment> = Api::namespaced(client.clone(), &elsewhere.name);
    // The canary may be aborted (and deleted) within a second of its creation: watched,
    // not polled.
    let canary = crate::support::first_seen(remote.clone(), "web-canary").await;
    let bad = ws.commit_and_push("bad image and other v2");
    tokio::time::timeout(Duration::from_secs(60), canary)
        .await
        .expect("timed out after 60s waiting for the canary beside its stable Deployment")
        .unwrap();
    let bare = server.bare_path("app");
    let revert = eventually("a revert commit", Duration::from_secs(90), || async {
        let subject = git(&bare, &["log", "-1", "--format=%s", "main"]);
        subject
            .starts_with("Revert \"bad image and other v2\"")
            .then(|| git(&bare, &["rev-parse", "main"]).trim().to_string())
    })
    .await;
    let body = git(&bare, &["log", "-1", "--format=%B", "main"]);
    assert!(
        body.contains(&bad) && body.contains("under app/ only"),
        "{body}"
    );
    assert_eq!(
        git(&bare, &["show", "main:other/other.yaml"]),
        "team: b\nversion: 2\n",
        "the other path keeps its change"
    );
    assert!(git(&bare, &["show", "main:app/deploy.yaml"]).contains("good-1"));
    eventually("the canary deleted", Duration::from_secs(30), || async {
        remote
            .get_opt("web-canary")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    wait_synced_healthy(&apps, "web", &revert).await;
    let local: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let still = local.get("web-canary").await.unwrap();
    assert_eq!(
        still.metadata.uid, theirs.metadata.uid,
        "the unrelated one stays"
    );
    assert_eq!(image_of(&still), "example.test/unrelated:1");
}

/// A loopback HTTP server answering every request with 200 and a body that never ends.
async fn endless_server() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let head =
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n";
                if sock.write_all(head).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 256 * 1024];
                while sock.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    port
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn an_endless_analysis_body_is_read_up_to_its_cap() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "own-body").await;
    let controller = GantryController::start(&ns.name);
    let port = endless_server().await;
    let server = GitServer::start();
    let (apps, ws) = canary_app(
        &client,
        &ns.name,
        &server,
        None,
        json!({"strategy": "Canary", "steps": [{"weight": 50}, {"pause": {}}],
               "analysis": {"interval": "1s", "failureLimit": 3,
                            "http": [{"name": "endless", "url": format!("http://127.0.0.1:{port}/"),
                                      "timeout": "10s"}]}}),
    )
    .await;
    ws.write(
        "app/deploy.yaml",
        &deployment("example.test/web:good-2", None),
    );
    ws.commit_and_push("v2");
    let evidence = eventually(
        "three runs of the endless check",
        Duration::from_secs(90),
        || async {
            let app = apps.get("web").await.ok()?;
            let checks = app.status?.rollout?.checks;
            let runs: Vec<_> = checks.iter().filter(|c| c.name == "endless").collect();
            (runs.len() >= 3).then(|| runs[0].message.clone().unwrap_or_default())
        },
    )
    .await;
    assert!(evidence.contains("body over 65536 bytes"), "{evidence}");
    let hwm = vm_hwm_kib(controller.process.child.id());
    assert!(hwm < 100 * 1024, "controller VmHWM {hwm} KiB");
}

#[tokio::test]
async fn a_crash_mid_apply_leaves_no_orphans() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "own-orphans").await;
    let controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let many: String = (0..2000)
        .map(|i| {
            format!(
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  k: v\n"
            )
        })
        .collect();
    server.create_repo("app", &[("app/many.yaml", &many)]);
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "app", "prune": true}),
    )
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let label = format!("gantry.dev/application={}.app", ns.name);
    let count = |cms: Api<ConfigMap>, label: String| async move {
        cms.list_metadata(&ListParams::default().labels(&label))
            .await
            .map(|l| l.items.len())
            .unwrap_or(0)
    };
    eventually("the apply under way", Duration::from_secs(60), || async {
        (count(cms.clone(), label.clone()).await > 0).then_some(())
    })
    .await;
    drop(controller); // SIGKILL mid-apply
    let created = count(cms.clone(), label.clone()).await;
    // Git drops the set before the controller comes back.
    let ws = Workspace::clone_from(&server, "app");
    ws.remove("app/many.yaml");
    ws.write(
        "app/keep.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: keep\n",
    );
    let next = ws.commit_and_push("only keep");
    let _again = GantryController::start(&ns.name);
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "app", &next).await;
    let left = cms
        .list_metadata(&ListParams::default().labels(&label))
        .await
        .unwrap();
    let names: Vec<_> = left
        .items
        .iter()
        .map(|o| o.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["keep"],
        "{created} created before the kill; left: {}",
        names.len()
    );
}

#[tokio::test]
async fn two_applications_declaring_one_object_do_not_fight() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "own-shared").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let shared = |v: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\ndata:\n  owner: {v}\n")
    };
    let a = server.create_repo("a", &[("app/cm.yaml", &shared("a"))]);
    let b = server.create_repo("b", &[("app/cm.yaml", &shared("b"))]);
    create_source_and_app(
        &client,
        &ns.name,
        "a",
        &server.file_url("a"),
        json!({"path": "app", "prune": true}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "a", &a).await;
    create_source_and_app(
        &client,
        &ns.name,
        "b",
        &server.file_url("b"),
        json!({"path": "app", "prune": true}),
    )
    .await;
    let app_b = eventually("OwnershipConflict", Duration::from_secs(30), || async {
        let app = apps.get("b").await.ok()?;
        (condition(&app, "Ready")?.reason == "OwnershipConflict").then_some(app)
    })
    .await;
    let message = condition(&app_b, "Ready").unwrap().message;
    assert!(
        message.contains(&format!("{}.a", ns.name)) && message.contains(&format!("{}.b", ns.name)),
        "names both Applications: {message}"
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let owner = |c: &ConfigMap| {
        (
            c.labels().get("gantry.dev/application").cloned(),
            c.data.as_ref().and_then(|d| d.get("owner").cloned()),
        )
    };
    let a_owns = (Some(format!("{}.a", ns.name)), Some("a".to_string()));
    for _ in 0..10 {
        assert_eq!(owner(&cms.get("shared").await.unwrap()), a_owns, "no flip");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // b removes the object from its Git: it never owned it, so nothing is deleted.
    let ws = Workspace::clone_from(&server, "b");
    ws.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b-only\n",
    );
    let b2 = ws.commit_and_push("b only");
    wait_synced_healthy(&apps, "b", &b2).await;
    assert_eq!(owner(&cms.get("shared").await.unwrap()), a_owns);

    // Taking it over on purpose: b declares it again with spec.takeOwnership.
    ws.write("app/shared.yaml", &shared("b"));
    let b3 = ws.commit_and_push("take shared");
    apps.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"takeOwnership": true}})),
    )
    .await
    .unwrap();
    wait_synced_healthy(&apps, "b", &b3).await;
    let b_owns = (Some(format!("{}.b", ns.name)), Some("b".to_string()));
    for _ in 0..10 {
        assert_eq!(
            owner(&cms.get("shared").await.unwrap()),
            b_owns,
            "a does not take it back"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = b;
}
