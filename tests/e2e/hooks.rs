//! Hooks (issue 14): Argo CD PreSync/PostSync and Helm hook annotations on plain manifests.
//! A pre hook gates the set (nothing applied until it finishes), `generateName` works for
//! hooks, delete policies are honoured, test hooks are never applied, and no hook enters
//! the inventory.

use std::time::Duration;

use gantry::api::Application;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams};
use serde_json::json;

use crate::support::app::{Workspace, condition, create_source_and_app, wait_synced_healthy};
use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::GitServer;

fn migrate_job(suspend: bool) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: migrate-\n  annotations:\n    argocd.argoproj.io/hook: PreSync\n    argocd.argoproj.io/hook-delete-policy: HookSucceeded\nspec:\n  suspend: {suspend}\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: migrate\n        image: registry.example.com/migrate:1.0.0\n"
    )
}

const SMOKE: &str = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: smoke\n  annotations:\n    argocd.argoproj.io/hook: PostSync\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: smoke\n        image: registry.example.com/smoke:1.0.0\n";

const TEST_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: test-connection\n  annotations:\n    helm.sh/hook: test\nspec:\n  containers:\n  - name: t\n    image: registry.example.com/test:1.0.0\n";

#[tokio::test]
async fn a_pre_hook_gates_the_set_and_hooks_stay_out_of_the_inventory() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "hooks").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    server.create_repo("app", &[("README.md", "hooks\n")]);
    let ws = Workspace::clone_from(&server, "app");
    ws.write(
        "deploy/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  k: v\n",
    );
    // A PreSync hook that never finishes (suspended): the set must wait, then fail.
    ws.write("deploy/migrate.yaml", &migrate_job(true));
    ws.write("deploy/smoke.yaml", SMOKE);
    ws.write("deploy/test.yaml", TEST_POD);
    let stuck = ws.commit_and_push("hooks, migration stuck");
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "deploy", "timeout": "5s"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let message = eventually("HookFailed", Duration::from_secs(120), || async {
        let app = apps.get("app").await.ok()?;
        let c = condition(&app, "Ready")?;
        let at = app.status.as_ref()?.last_attempted_revision.clone()?;
        (c.reason == "HookFailed" && at.ends_with(&stuck)).then_some(c.message)
    })
    .await;
    assert!(
        message.contains("pre hook Job migrate-*") && message.contains("not finished"),
        "{message}"
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        cms.get_opt("app-config").await.unwrap().is_none(),
        "the set was applied before its pre hook finished"
    );
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let hook_jobs = |jobs: Vec<Job>| -> Vec<String> {
        jobs.into_iter()
            .filter_map(|j| j.metadata.name)
            .filter(|n| n.starts_with("migrate-"))
            .collect()
    };
    let made = hook_jobs(jobs.list(&ListParams::default()).await.unwrap().items);
    // One per attempt (failed syncs are retried with backoff): generateName makes a new
    // object each time. They stay (suspended, no HookFailed policy) for the operator.
    assert!(!made.is_empty());

    ws.write("deploy/migrate.yaml", &migrate_job(false));
    let fixed = ws.commit_and_push("migration runs");
    // A real migration gets time (a loaded cluster schedules and completes a Job slowly);
    // the spec change also syncs the fixed revision again if its 5 s attempt ran out.
    eventually(
        "fixed revision attempted",
        Duration::from_secs(60),
        || async {
            let app = apps.get("app").await.ok()?;
            let at = app.status.as_ref()?.last_attempted_revision.clone()?;
            at.ends_with(&fixed).then_some(())
        },
    )
    .await;
    apps.patch(
        "app",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"timeout": "180s"}})),
    )
    .await
    .unwrap();
    let app = wait_synced_healthy(&apps, "app", &fixed).await;
    let inventory: Vec<String> = app
        .status
        .unwrap()
        .inventory
        .iter()
        .map(|e| format!("{} {}", e.kind, e.name))
        .collect();
    assert_eq!(
        inventory,
        ["ConfigMap app-config"],
        "hooks are not managed objects"
    );
    cms.get("app-config").await.unwrap();
    // The PreSync Job succeeded and was deleted (HookSucceeded) ...
    eventually(
        "migration hook deleted",
        Duration::from_secs(90),
        || async {
            // The stuck revision's Jobs stay suspended; the fixed one's ran and is gone.
            let runnable: Vec<Job> = jobs
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|j| j.spec.as_ref().and_then(|s| s.suspend) != Some(true))
                .collect();
            hook_jobs(runnable).is_empty().then_some(())
        },
    )
    .await;
    // ... the PostSync Job ran after the set and is kept (no delete policy), marked as
    // this Application's hook ...
    // (The spec change above syncs the revision once more; its post hook is deleted and
    // created again — before-hook-creation — once the set is healthy.)
    let smoke = eventually("the PostSync Job", Duration::from_secs(60), || async {
        jobs.get_opt("smoke").await.ok().flatten()
    })
    .await;
    assert_eq!(
        smoke.metadata.labels.unwrap()["gantry.dev/hook-of"],
        format!("{}.app", ns.name)
    );
    // ... and the test hook was never applied.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    assert!(pods.get_opt("test-connection").await.unwrap().is_none());
}

fn deployment(name: &str, image: &str, wave: i64) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  annotations:\n    argocd.argoproj.io/sync-wave: \"{wave}\"\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: main\n        image: {image}\n"
    )
}

/// Argo CD's order: a wave is applied only when the wave before it is healthy, and post
/// hooks run only once the whole set is healthy. An unhealthy wave holds back the later
/// ones (`WaveNotHealthy`); an unhealthy set holds back its PostSync hook (`HookFailed`).
#[tokio::test]
async fn an_unhealthy_wave_holds_back_later_waves_and_post_hooks() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "waves").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    server.create_repo("app", &[("README.md", "waves\n")]);
    let ws = Workspace::clone_from(&server, "app");
    // Wave 0: a database that never becomes ready (kwok keeps "bad" images unready).
    ws.write(
        "deploy/db.yaml",
        &deployment("db", "registry.example.com/db:bad", 0),
    );
    ws.write(
        "deploy/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: after-db\n  annotations:\n    argocd.argoproj.io/sync-wave: \"1\"\ndata:\n  k: v\n",
    );
    // Argo CD's SyncFail hook: run when the sync fails.
    ws.write(
        "deploy/page.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: page-oncall\n  annotations:\n    argocd.argoproj.io/hook: SyncFail\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: page\n        image: registry.example.com/page:1.0.0\n",
    );
    let first = ws.commit_and_push("db unhealthy");
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "deploy", "timeout": "6s"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let message = eventually("WaveNotHealthy", Duration::from_secs(120), || async {
        let app = apps.get("app").await.ok()?;
        let c = condition(&app, "Ready")?;
        let at = app.status.as_ref()?.last_attempted_revision.clone()?;
        (c.reason == "WaveNotHealthy" && at.ends_with(&first)).then_some(c.message)
    })
    .await;
    assert!(
        message.contains("the sync waves before wave 1 are not healthy, so wave 1 and later")
            && message.contains("Deployment")
            && message.contains("db"),
        "{message}"
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        cms.get_opt("after-db").await.unwrap().is_none(),
        "wave 1 was applied before wave 0 was healthy"
    );
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let page = eventually("the SyncFail hook", Duration::from_secs(30), || async {
        jobs.get_opt("page-oncall").await.ok().flatten()
    })
    .await;
    assert_eq!(
        page.metadata.labels.unwrap()["gantry.dev/hook-of"],
        format!("{}.app", ns.name)
    );
    let app = apps.get("app").await.unwrap();
    assert!(
        app.status
            .unwrap()
            .inventory
            .iter()
            .all(|e| e.name != "page-oncall"),
        "a hook entered the inventory"
    );

    // The database fixed: wave 1 follows.
    ws.write(
        "deploy/db.yaml",
        &deployment("db", "registry.example.com/db:1.0.0", 0),
    );
    let fixed = ws.commit_and_push("db fixed");
    // A sync waiting on a wave holds the Application until its timeout: the longer timeout
    // is set once the fix is being synced (a spec change syncs it again at once).
    eventually(
        "fixed revision attempted",
        Duration::from_secs(60),
        || async {
            let app = apps.get("app").await.ok()?;
            let at = app.status.as_ref()?.last_attempted_revision.clone()?;
            at.ends_with(&fixed).then_some(())
        },
    )
    .await;
    apps.patch(
        "app",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"timeout": "120s"}})),
    )
    .await
    .unwrap();
    wait_synced_healthy(&apps, "app", &fixed).await;
    cms.get("after-db").await.unwrap();

    // A PostSync smoke test waits for the set: with an unready web server it is not run.
    ws.write(
        "deploy/web.yaml",
        &deployment("web", "registry.example.com/web:bad", 1),
    );
    ws.write("deploy/smoke.yaml", SMOKE);
    apps.patch(
        "app",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"timeout": "6s"}})),
    )
    .await
    .unwrap();
    let unhealthy = ws.commit_and_push("web unhealthy, smoke test");
    let message = eventually("post hooks held", Duration::from_secs(120), || async {
        let app = apps.get("app").await.ok()?;
        let c = condition(&app, "Ready")?;
        let at = app.status.as_ref()?.last_attempted_revision.clone()?;
        (c.reason == "HookFailed" && at.ends_with(&unhealthy)).then_some(c.message)
    })
    .await;
    assert!(
        message.contains("post hooks not run") && message.contains("web"),
        "{message}"
    );
    assert!(
        jobs.get_opt("smoke").await.unwrap().is_none(),
        "the PostSync hook ran while the set was unhealthy"
    );
}

/// The admission-webhook setup of many charts: a ServiceAccount hook of a lower weight and
/// a Job hook that runs as it, both `hook-succeeded`. Helm deletes `hook-succeeded` hooks
/// once the whole phase succeeded, so the ServiceAccount outlives the Job's pods.
/// The admission-webhook pattern of a common ingress chart installs, upgrades and
/// installs again.
#[tokio::test]
async fn hook_succeeded_hooks_are_deleted_after_the_whole_phase() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "hooks-sa").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let sa = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: hook-sa\n  annotations:\n    helm.sh/hook: pre-install,pre-upgrade,post-install,post-upgrade\n    helm.sh/hook-weight: \"-1\"\n    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded\n";
    let job = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: create-secret\n  annotations:\n    helm.sh/hook: pre-install,pre-upgrade\n    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      serviceAccountName: hook-sa\n      restartPolicy: Never\n      containers:\n      - name: create\n        image: registry.example.com/certgen:1.0.0\n";
    let head = server.create_repo(
        "app",
        &[
            ("deploy/sa.yaml", sa),
            ("deploy/job.yaml", job),
            (
                "deploy/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  k: v\n",
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
    wait_synced_healthy(&apps, "app", &head).await;
    // The post-install phase ran the ServiceAccount hook again; every hook is gone after.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), &ns.name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let gone = || async {
        eventually("hooks deleted", Duration::from_secs(60), || async {
            (sas.get_opt("hook-sa").await.ok()?.is_none()
                && jobs.get_opt("create-secret").await.ok()?.is_none())
            .then_some(())
        })
        .await
    };
    gone().await;

    // An upgrade runs the pre-upgrade hooks (the ServiceAccount before the Job that uses
    // it) and deletes them again.
    let ws = Workspace::clone_from(&server, "app");
    ws.write(
        "deploy/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  k: v2\n",
    );
    let upgraded = ws.commit_and_push("an upgrade");
    wait_synced_healthy(&apps, "app", &upgraded).await;
    gone().await;
    let app = apps.get("app").await.unwrap();
    assert_eq!(condition(&app, "Ready").unwrap().reason, "Succeeded");

    // Deleted and created again: an install again, whose hooks succeed as the first did.
    apps.delete("app", &Default::default()).await.unwrap();
    eventually("the Application gone", Duration::from_secs(60), || async {
        apps.get_opt("app").await.ok()?.is_none().then_some(())
    })
    .await;
    let again: Application = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": "app", "namespace": ns.name},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": "app"}, "path": "deploy"}
    }))
    .unwrap();
    apps.create(&Default::default(), &again).await.unwrap();
    wait_synced_healthy(&apps, "app", &upgraded).await;
    gone().await;
}

/// Hooks run when what the Application renders changed, not on every commit of a shared
/// repository (migrations would pile up).
#[tokio::test]
async fn a_commit_elsewhere_in_the_repository_runs_no_hook() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "hooks-elsewhere").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    server.create_repo("app", &[("README.md", "shared\n")]);
    let ws = Workspace::clone_from(&server, "app");
    ws.write(
        "deploy/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  k: v\n",
    );
    ws.write(
        "deploy/migrate.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: migrate-\n  annotations:\n    argocd.argoproj.io/hook: PreSync\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: migrate\n        image: registry.example.com/migrate:1.0.0\n",
    );
    let first = ws.commit_and_push("app with a migration hook");
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "deploy"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "app", &first).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let migrations = || async {
        jobs.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|j| {
                j.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("migrate-"))
            })
            .count()
    };
    assert_eq!(migrations().await, 1);
    ws.write("other/notes.md", "another team's change\n");
    let elsewhere = ws.commit_and_push("a change elsewhere");
    wait_synced_healthy(&apps, "app", &elsewhere).await;
    assert_eq!(
        migrations().await,
        1,
        "a commit elsewhere ran the hook again"
    );
    ws.write(
        "deploy/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  k: v2\n",
    );
    let changed = ws.commit_and_push("the Application's own change");
    wait_synced_healthy(&apps, "app", &changed).await;
    assert_eq!(migrations().await, 2, "its own change runs the hook");
}

/// Argo CD's `Sync` hooks run in their own wave (the maintenance-page pattern): a hook of
/// wave 1 runs after wave 0 is applied and healthy, and wave 2 waits for it.
#[tokio::test]
async fn an_argo_sync_hook_runs_between_the_waves_around_it() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "hooks-sync").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let cm = |name: &str, wave: i64, hook: bool| {
        let hook = if hook {
            "\n    argocd.argoproj.io/hook: Sync"
        } else {
            ""
        };
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  annotations:\n    argocd.argoproj.io/sync-wave: \"{wave}\"{hook}\ndata:\n  k: v\n"
        )
    };
    let job = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: maintenance-page\n  annotations:\n    argocd.argoproj.io/hook: Sync\n    argocd.argoproj.io/sync-wave: \"1\"\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: page\n        image: registry.example.com/maintenance:1.0.0\n";
    let head = server.create_repo(
        "app",
        &[
            ("deploy/before.yaml", &cm("before", 0, false)),
            ("deploy/hook.yaml", &cm("sync-hook", 1, true)),
            ("deploy/job.yaml", job),
            ("deploy/after.yaml", &cm("after", 2, false)),
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
    wait_synced_healthy(&apps, "app", &head).await;
    // Each ConfigMap was written once: its resourceVersion is the write's place in etcd.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let written = |name: &'static str| {
        let cms = cms.clone();
        async move {
            let c = cms.get(name).await.unwrap();
            let rv: u64 = c.metadata.resource_version.unwrap().parse().unwrap();
            (rv, c.metadata.creation_timestamp.unwrap().0)
        }
    };
    let (before, _) = written("before").await;
    let (hook, _) = written("sync-hook").await;
    let (after, after_created) = written("after").await;
    assert!(
        before < hook && hook < after,
        "the Sync hook of wave 1 did not run between wave 0 and wave 2: {before} {hook} {after}"
    );
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let done = jobs
        .get("maintenance-page")
        .await
        .unwrap()
        .status
        .and_then(|s| s.completion_time)
        .expect("the Sync hook Job completed")
        .0;
    assert!(
        done <= after_created,
        "wave 2 was applied before the Sync hook finished ({done} > {after_created})"
    );
    let app = apps.get("app").await.unwrap();
    let inventory: Vec<String> = app
        .status
        .unwrap()
        .inventory
        .iter()
        .map(|e| e.name.clone())
        .collect();
    assert_eq!(
        inventory,
        ["after", "before"],
        "hooks stay out of the inventory"
    );
}

/// While a hook is awaited the Application says so (Ready=Unknown/Progressing, with the
/// phase); when it fails, the condition names the cause the cluster reports, and Drifted
/// says that Git's revision is not applied.
#[tokio::test]
async fn a_hook_wait_shows_progress_and_its_failure_names_the_cause() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "hooks-cause").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let job = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: create-secret\n  annotations:\n    helm.sh/hook: pre-install,pre-upgrade\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      serviceAccountName: admission-sa\n      restartPolicy: Never\n      containers:\n      - name: create\n        image: registry.example.com/certgen:1.0.0\n";
    let head = server.create_repo(
        "app",
        &[
            ("deploy/job.yaml", job),
            (
                "deploy/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  k: v\n",
            ),
        ],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "deploy", "timeout": "20s"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let progress = eventually("Progressing", Duration::from_secs(60), || async {
        let app = apps.get("app").await.ok()?;
        let c = condition(&app, "Ready")?;
        (c.reason == "Progressing" && c.status == "Unknown" && c.message.contains("pre hooks"))
            .then_some(c.message)
    })
    .await;
    assert!(
        progress.contains(&head) && progress.contains("running 1 pre hooks"),
        "{progress}"
    );
    let app = eventually("HookFailed", Duration::from_secs(120), || async {
        let app = apps.get("app").await.ok()?;
        (condition(&app, "Ready")?.reason == "HookFailed").then_some(app)
    })
    .await;
    let message = condition(&app, "Ready").unwrap().message;
    assert!(
        message.contains("pre hook Job create-secret")
            && message.contains("FailedCreate")
            && message.contains("serviceaccount \"admission-sa\" not found"),
        "{message}"
    );
    let drifted = condition(&app, "Drifted").expect("Drifted");
    assert_eq!(
        (drifted.status.as_str(), drifted.reason.as_str()),
        ("True", "RevisionNotApplied"),
        "{drifted:?}"
    );
    assert!(
        drifted.message.contains(&head) && drifted.message.contains("nothing of it is applied"),
        "{}",
        drifted.message
    );
}
