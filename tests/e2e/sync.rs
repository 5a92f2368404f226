//! The GitOps core against the local control plane: sync, update and prune, validation of the
//! whole set, empty renders, prune guards, deletion.

use std::time::Duration;

use gantry::api::Application;
use gantry::api::application::SyncResult;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Secret, Service};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

use crate::support::app::{
    Workspace, condition, create_source_and_app, wait_ready_reason, wait_synced_healthy,
};
use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::GitServer;
use crate::support::random_suffix;

fn configmap(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: \"{value}\"\n"
    )
}

fn deployment(name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: app\n        image: {image}\n"
    )
}

#[tokio::test]
async fn repository_with_every_kind_syncs_then_updates_and_prunes() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "sync-full").await;
    let _controller = GantryController::start(&ns.name);
    let suffix = random_suffix();
    let team_ns = format!("team-{suffix}");
    let group = format!("{suffix}.e2e.gantry.dev");

    let server = GitServer::start();
    server.create_repo("app", &[("README.md", "deploy\n")]);
    let ws = Workspace::clone_from(&server, "app");
    ws.write(
        "deploy/namespace.yaml",
        &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {team_ns}\n"),
    );
    ws.write(
        "deploy/crd.yaml",
        &format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{kind: Widget, plural: widgets, singular: widget}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        x-kubernetes-preserve-unknown-fields: true\n"
        ),
    );
    ws.write(
        "deploy/widget.yaml",
        &format!("apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 3\n"),
    );
    ws.write("deploy/config.yaml", &configmap("settings", "one"));
    ws.write(
        "deploy/secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  token: s3cr3t\n",
    );
    ws.write("deploy/app.yaml", &format!("{}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {{app: web}}\n  ports:\n  - port: 80\n", deployment("web", "registry.example.com/web:1.0.0")));
    let first = ws.commit_and_push("everything");

    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "deploy", "targetNamespace": team_ns}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let app = wait_synced_healthy(&apps, "app", &first).await;

    let status = app.status.clone().unwrap();
    assert_eq!(status.inventory.len(), 7, "{:?}", status.inventory);
    let rec = &status.history[0];
    assert_eq!(rec.result, SyncResult::Succeeded);
    assert_eq!(rec.created, 7);
    assert!(rec.revision.ends_with(&first));

    let label = format!("{}.app", ns.name);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &team_ns);
    let cm = cms.get("settings").await.unwrap();
    let labels = cm.metadata.labels.unwrap();
    assert_eq!(labels["gantry.dev/application"], label);
    assert_eq!(labels["app.kubernetes.io/managed-by"], "gantry");
    Api::<Secret>::namespaced(client.clone(), &team_ns)
        .get("creds")
        .await
        .unwrap();
    Api::<Service>::namespaced(client.clone(), &team_ns)
        .get("web")
        .await
        .unwrap();
    let ns_obj = Api::<Namespace>::all(client.clone())
        .get(&team_ns)
        .await
        .unwrap();
    assert_eq!(
        ns_obj.metadata.labels.unwrap()["gantry.dev/application"],
        label
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &team_ns,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(&group, "v1", "Widget")),
    );
    assert_eq!(widgets.get("w1").await.unwrap().data["spec"]["size"], 3);
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &team_ns);
    assert_eq!(
        deploys
            .get("web")
            .await
            .unwrap()
            .status
            .unwrap()
            .available_replicas,
        Some(2)
    );

    // Events record the sync.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    let evs = eventually("a Synced event", Duration::from_secs(20), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Synced"))
            .then_some(list)
    })
    .await;
    assert!(
        evs.items
            .iter()
            .all(|e| !e.message.clone().unwrap_or_default().contains("s3cr3t"))
    );

    // A new commit changes the image and removes the ConfigMap: applied and pruned.
    ws.write("deploy/app.yaml", &format!("{}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {{app: web}}\n  ports:\n  - port: 80\n", deployment("web", "registry.example.com/web:1.1.0")));
    ws.remove("deploy/config.yaml");
    let second = ws.commit_and_push("new image, no config");
    let app = wait_synced_healthy(&apps, "app", &second).await;
    let status = app.status.unwrap();
    assert_eq!(status.history.len(), 2);
    assert_eq!(status.history[0].pruned, 1);
    assert_eq!(
        status.history[0].configured, 1,
        "only the Deployment changed: {:?}",
        status.history[0]
    );
    assert_eq!(status.inventory.len(), 6);
    assert!(status.history[1].revision.ends_with(&first));
    let image = deploys
        .get("web")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("registry.example.com/web:1.1.0"));
    eventually(
        "the ConfigMap to be pruned",
        Duration::from_secs(20),
        || async { cms.get_opt("settings").await.ok()?.is_none().then_some(()) },
    )
    .await;

    // Deleting the Application (prune on) removes what it applied.
    apps.delete("app", &DeleteParams::default()).await.unwrap();
    eventually(
        "objects removed with the Application",
        Duration::from_secs(30),
        || async {
            let gone = Api::<Secret>::namespaced(client.clone(), &team_ns)
                .get_opt("creds")
                .await
                .ok()?
                .is_none();
            let app_gone = apps.get_opt("app").await.ok()?.is_none();
            (gone && app_gone).then_some(())
        },
    )
    .await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(client.clone());
    let _ = crds
        .delete(&format!("widgets.{group}"), &DeleteParams::default())
        .await;
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&team_ns, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn one_invalid_object_among_ten_applies_nothing() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "sync-invalid").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let mut files: Vec<(String, String)> = (0..9)
        .map(|i| {
            (
                format!("deploy/cm{i}.yaml"),
                configmap(&format!("cm{i}"), "v"),
            )
        })
        .collect();
    files.push(("deploy/broken.yaml".into(), "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: broken\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: x}\n  template:\n    metadata:\n      labels: {app: y}\n    spec:\n      containers:\n      - name: c\n        image: nginx\n".into()));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let head = server.create_repo("app", &refs);

    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "deploy"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let app = wait_ready_reason(&apps, "app", "ValidationFailed", &head).await;
    let msg = condition(&app, "Ready").unwrap().message;
    assert!(
        msg.contains(&format!("Deployment {}/broken", ns.name)),
        "{msg}"
    );
    assert!(
        msg.contains("does not match template"),
        "the API server's message: {msg}"
    );
    assert!(msg.contains("nothing was applied"), "{msg}");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let list = cms
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=gantry"))
        .await
        .unwrap();
    assert!(
        list.items.is_empty(),
        "objects were applied: {:?}",
        list.items
            .iter()
            .map(|c| c.metadata.name.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(app.status.unwrap().history[0].result, SyncResult::Failed);
}

#[tokio::test]
async fn empty_render_deletes_nothing_unless_allowed() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "sync-empty").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    server.create_repo(
        "app",
        &[
            ("README.md", "x\n"),
            ("deploy/a.yaml", &configmap("a", "1")),
            ("deploy/b.yaml", &configmap("b", "2")),
        ],
    );
    let ws = Workspace::clone_from(&server, "app");
    let head = crate::support::git::git(ws.path(), &["rev-parse", "HEAD"])
        .trim()
        .to_string();
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

    // The whole directory disappears from Git: nothing is deleted, the condition says why.
    ws.remove("deploy");
    let empty = ws.commit_and_push("delete everything");
    let app = wait_ready_reason(&apps, "app", "RenderFailed", &empty).await;
    let msg = condition(&app, "Ready").unwrap().message;
    assert!(msg.contains("\"deploy\" does not exist"), "{msg}");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(cms.get_opt("a").await.unwrap().is_some() && cms.get_opt("b").await.unwrap().is_some());

    // An empty directory (files deleted, path kept) is refused too.
    ws.write("deploy/.keep", "");
    let kept = ws.commit_and_push("empty directory");
    let app = wait_ready_reason(&apps, "app", "EmptyRender", &kept).await;
    assert!(
        condition(&app, "Ready")
            .unwrap()
            .message
            .contains("allowEmpty")
    );
    assert!(cms.get_opt("a").await.unwrap().is_some());

    // allowEmpty: true prunes.
    apps.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"allowEmpty": true}})),
    )
    .await
    .unwrap();
    eventually(
        "both ConfigMaps pruned",
        Duration::from_secs(30),
        || async {
            let a = cms.get_opt("a").await.ok()?.is_none();
            let b = cms.get_opt("b").await.ok()?.is_none();
            (a && b).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn relabelled_and_protected_objects_are_not_pruned() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "sync-guard").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let head = server.create_repo(
        "app",
        &[
            ("deploy/a.yaml", &configmap("a", "1")),
            ("deploy/b.yaml", &configmap("b", "2")),
            ("deploy/c.yaml", &configmap("c", "3")),
            ("deploy/keep.yaml", &configmap("keep", "4")),
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

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    // b is taken over by another owner; c is protected by annotation. (Audit mode: in heal
    // mode Gantry would put its label back on b, since Git declares it.)
    cms.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"gantry.dev/application": "other.owner"}}})),
    )
    .await
    .unwrap();
    cms.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"gantry.dev/prune": "disabled"}}})),
    )
    .await
    .unwrap();

    let ws = Workspace::clone_from(&server, "app");
    for f in ["deploy/a.yaml", "deploy/b.yaml", "deploy/c.yaml"] {
        ws.remove(f);
    }
    let second = ws.commit_and_push("remove a, b, c");
    let app = wait_synced_healthy(&apps, "app", &second).await;
    let msg = condition(&app, "Ready").unwrap().message;
    assert!(
        msg.contains("no longer labelled for this Application"),
        "{msg}"
    );
    assert!(
        cms.get_opt("a").await.unwrap().is_none(),
        "a should be pruned"
    );
    assert!(
        cms.get_opt("b").await.unwrap().is_some(),
        "b belongs to another owner"
    );
    assert!(cms.get_opt("c").await.unwrap().is_some(), "c is protected");
    assert_eq!(app.status.unwrap().inventory.len(), 1);
}

/// A custom resource whose CRD the cluster lacks: nothing applied, and the condition says
/// which CustomResourceDefinition to install first.
#[tokio::test]
async fn a_kind_the_cluster_lacks_says_which_crd_to_install() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "no-crd").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let head = server.create_repo(
        "app",
        &[
            (
                "deploy/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: first\n",
            ),
            (
                "deploy/widget.yaml",
                "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n",
            ),
        ],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "deploy"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let app = eventually(
        "Ready=False naming the CRD",
        Duration::from_secs(60),
        || async {
            let app = apps.get("app").await.ok()?;
            let c = condition(&app, "Ready")?;
            let at = app.status.as_ref()?.last_attempted_revision.clone()?;
            (c.status == "False" && at.ends_with(&head)).then_some(c.message)
        },
    )
    .await;
    assert!(
        app.contains("Widget w") && app.contains("widgets.example.com"),
        "{app}"
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        cms.get_opt("first").await.unwrap().is_none(),
        "nothing applied"
    );
}

/// Editing an immutable field (a Job's template) stops the set with the API server's cause
/// in a few words, not its multi-kilobyte dump of the object.
#[tokio::test]
async fn an_immutable_field_change_is_reported_briefly() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "immutable").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let job = |image: &str| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\nspec:\n  template:\n    \
             spec:\n      restartPolicy: Never\n      containers:\n      - name: m\n        image: {image}\n"
        )
    };
    let head = server.create_repo(
        "app",
        &[("deploy/job.yaml", &job("example.test/migrate:1"))],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "deploy"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    eventually("the Job applied", Duration::from_secs(60), || async {
        let app = apps.get("app").await.ok()?;
        let at = app.status.as_ref()?.last_applied_revision.clone()?;
        at.ends_with(&head).then_some(())
    })
    .await;
    let ws = crate::support::app::Workspace::clone_from(&server, "app");
    ws.write("deploy/job.yaml", &job("example.test/migrate:2"));
    let changed = ws.commit_and_push("new image");
    let app = wait_ready_reason(&apps, "app", "ValidationFailed", &changed).await;
    let message = condition(&app, "Ready").unwrap().message;
    assert!(
        message.contains("spec.template: field is immutable")
            && message.contains("spec.recreateOnImmutable"),
        "{message}"
    );
    assert!(message.len() < 800, "{} bytes: {message}", message.len());

    // Opting the object in (annotation) recreates it: the new Job runs the new image.
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), &ns.name);
    let old_uid = jobs.get("migrate").await.unwrap().metadata.uid;
    ws.write(
        "deploy/job.yaml",
        &job("example.test/migrate:2").replace(
            "  name: migrate\n",
            "  name: migrate\n  annotations:\n    gantry.dev/recreate-on-immutable: \"true\"\n",
        ),
    );
    let opted_in = ws.commit_and_push("recreate the job");
    eventually("the Job recreated", Duration::from_secs(60), || async {
        let app = apps.get("app").await.ok()?;
        let at = app.status.as_ref()?.last_applied_revision.clone()?;
        at.ends_with(&opted_in).then_some(())
    })
    .await;
    let job = jobs.get("migrate").await.unwrap();
    assert_ne!(job.metadata.uid, old_uid, "a new object");
    let image = job.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap();
    assert_eq!(image, "example.test/migrate:2");
}

/// An object Gantry does not own is never recreated, opted in or not.
#[tokio::test]
async fn only_owned_objects_are_recreated() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "recreate-foreign").await;
    let _controller = GantryController::start(&ns.name);
    // A Job created by hand (no Gantry labels) with the name the Application declares.
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), &ns.name);
    let theirs: k8s_openapi::api::batch::v1::Job = serde_json::from_value(json!({
        "metadata": {"name": "migrate"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "m", "image": "example.test/theirs:1"}]}}}
    }))
    .unwrap();
    jobs.create(&kube::api::PostParams::default(), &theirs)
        .await
        .unwrap();
    let uid = jobs.get("migrate").await.unwrap().metadata.uid;
    let server = GitServer::start();
    let head = server.create_repo(
        "app",
        &[(
            "deploy/job.yaml",
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\nspec:\n  template:\n    \
             spec:\n      restartPolicy: Never\n      containers:\n      - name: m\n        image: example.test/mine:1\n",
        )],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "deploy", "recreateOnImmutable": true}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_ready_reason(&apps, "app", "ValidationFailed", &head).await;
    assert_eq!(
        jobs.get("migrate").await.unwrap().metadata.uid,
        uid,
        "not deleted"
    );
}

/// A commit outside an Application's path (another team's directory of a shared repository)
/// moves the Application to the new revision without touching its objects; drift is still
/// followed afterwards, and a commit inside the path is applied as usual.
#[tokio::test]
async fn a_commit_elsewhere_in_the_repository_is_recorded_without_touching_the_cluster() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "sync-elsewhere").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let head = server.create_repo(
        "mono",
        &[
            ("team-a/cm.yaml", &configmap("settings", "one")),
            ("team-b/cm.yaml", &configmap("other", "x")),
        ],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "mono",
        &server.file_url("mono"),
        json!({"path": "team-a", "drift": {"mode": "heal"}}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "mono", &head).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let version = |cm: ConfigMap| cm.metadata.resource_version.unwrap();
    let before = version(cms.get("settings").await.unwrap());

    let work = Workspace::clone_from(&server, "mono");
    work.write("team-b/cm.yaml", &configmap("other", "y"));
    let elsewhere = work.commit_and_push("team b changes its own directory");
    let app = wait_synced_healthy(&apps, "mono", &elsewhere).await;
    let ready = condition(&app, "Ready").unwrap();
    assert!(
        ready.message.contains("the same objects as revision"),
        "{}",
        ready.message
    );
    let status = app.status.unwrap();
    assert!(status.running_revision.unwrap().ends_with(&elsewhere));
    let latest = &status.history[0];
    assert!(latest.revision.ends_with(&elsewhere), "{latest:?}");
    assert_eq!(
        (latest.result, latest.configured, latest.unchanged),
        (SyncResult::Succeeded, 0, 1)
    );
    assert_eq!(
        version(cms.get("settings").await.unwrap()),
        before,
        "the ConfigMap was written"
    );

    // Drift is still followed: a hand edit is healed.
    let params = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    cms.patch(
        "settings",
        &params,
        &Patch::Merge(json!({"data": {"key": "hacked"}})),
    )
    .await
    .unwrap();
    eventually("the hand edit healed", Duration::from_secs(20), || async {
        let cm = cms.get("settings").await.ok()?;
        (cm.data?.get("key")? == "one").then_some(())
    })
    .await;

    // A commit inside the path is applied.
    work.write("team-a/cm.yaml", &configmap("settings", "two"));
    let inside = work.commit_and_push("team a changes its setting");
    let app = wait_synced_healthy(&apps, "mono", &inside).await;
    let ready = condition(&app, "Ready").unwrap();
    assert!(ready.message.contains("1 configured"), "{}", ready.message);
    assert_eq!(
        cms.get("settings").await.unwrap().data.unwrap()["key"],
        "two"
    );
}
