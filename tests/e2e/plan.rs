//! `gantry plan` in a terminal, as CI runs it: two Applications on one GitRepository, one a
//! tenant (impersonating a namespace-admin ServiceAccount) and synced at `main`. A branch
//! that changes a ConfigMap, adds a Deployment and removes a Service is planned as exactly
//! those three for that Application only (exit 1, in text, Markdown and JSON); a branch that
//! adds a ClusterRoleBinding and changes an immutable ConfigMap is refused, naming RBAC and
//! the ServiceAccount, and the immutable field with whether it would be recreated (exit 2);
//! a branch touching only the other Application's path plans only that one; `main` itself
//! plans nothing (exit 0). The plan runs as an audited user: the API server's audit log
//! shows dry-runs only, and the live objects are as they were.

use std::process::Command;

use gantry::api::Application;
use gantry::plan::model::{Action, Cause, Plan};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::support::app::{Workspace, wait_synced_healthy};
use crate::support::cluster::{
    TestNamespace, audit_events, client, install_crds, kubeconfig_path, namespace_admin,
};
use crate::support::controller::GantryController;
use crate::support::git::{GitServer, git};
use crate::support::gitea::Gitea;
use crate::support::{eventually, random_suffix};
use std::time::Duration;

fn config_map(name: &str, value: &str, immutable: bool) -> String {
    let frozen = if immutable { "immutable: true\n" } else { "" };
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{frozen}data:\n  value: \"{value}\"\n"
    )
}

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: old\nspec:\n  ports:\n  - port: 80\n  selector:\n    app: old\n";

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: api\n  template:\n    metadata:\n      labels:\n        app: api\n    spec:\n      containers:\n      - name: api\n        image: registry.example/api:1.0\n";

/// Runs `gantry plan` as the audited user `gantry-replica-c`; (exit code, stdout, stderr).
fn plan(args: &[&str]) -> (i32, String, String) {
    let kubeconfig = kubeconfig_path()
        .parent()
        .unwrap()
        .join("replica-c.kubeconfig");
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("plan")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("GANTRY_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Commits the working tree on a new branch `name` (from main) and pushes it.
fn push_branch(ws: &Workspace, name: &str, change: impl FnOnce(&Workspace)) -> String {
    git(
        ws.path(),
        &["checkout", "--quiet", "-B", name, "origin/main"],
    );
    change(ws);
    git(ws.path(), &["add", "-A"]);
    git(ws.path(), &["commit", "--quiet", "-m", name]);
    git(
        ws.path(),
        &[
            "push",
            "--quiet",
            "--force",
            "origin",
            &format!("HEAD:{name}"),
        ],
    );
    git(ws.path(), &["rev-parse", "HEAD"]).trim().to_string()
}

/// The audited writes of `user` since `since` in namespace `ns` or on the cluster-scoped
/// object `name`.
fn audited_writes(
    user: &str,
    since: k8s_openapi::jiff::Timestamp,
    ns: &str,
    name: &str,
) -> Vec<serde_json::Value> {
    audit_events()
        .into_iter()
        .filter(|e| e["user"]["username"] == user)
        .filter(|e| {
            e["requestReceivedTimestamp"]
                .as_str()
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                .is_some_and(|t| t >= since)
        })
        .filter(|e| e["objectRef"]["namespace"] == ns || e["objectRef"]["name"] == name)
        .collect()
}

fn is_dry_run(e: &serde_json::Value) -> bool {
    e["requestURI"]
        .as_str()
        .is_some_and(|u| u.contains("dryRun=All"))
}

/// GitRepository `repo` with `spec`, and two Applications on it: `web` (path `web/`, the
/// tenant: ServiceAccount `deployer`, prune) and `other` (path `other/`).
async fn source_and_two_apps(
    client: &kube::Client,
    ns: &str,
    spec: serde_json::Value,
) -> (Api<gantry::api::GitRepository>, Api<Application>) {
    let repos: Api<gantry::api::GitRepository> = Api::namespaced(client.clone(), ns);
    repos
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
                "metadata": {"name": "repo"}, "spec": spec
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let apps: Api<Application> = Api::namespaced(client.clone(), ns);
    for (name, extra) in [
        (
            "web",
            json!({"serviceAccountName": "deployer", "prune": true}),
        ),
        ("other", json!({})),
    ] {
        let mut spec = json!({"sourceRef": {"kind": "GitRepository", "name": "repo"},
                              "path": name, "interval": "10m", "timeout": "2m"});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        apps.create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
                "metadata": {"name": name}, "spec": spec
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    }
    (repos, apps)
}

#[tokio::test]
async fn a_plan_names_what_a_branch_changes_and_what_would_be_refused_and_writes_nothing() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "plan").await;
    namespace_admin(&client, &ns.name, "deployer").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let main = server.create_repo(
        "repo",
        &[
            ("web/settings.yaml", &config_map("settings", "v1", false)),
            ("web/frozen.yaml", &config_map("frozen", "v1", true)),
            ("web/service.yaml", SERVICE),
            ("other/other.yaml", &config_map("other", "v1", false)),
        ],
    );
    let (_repos, apps) = source_and_two_apps(
        &client,
        &ns.name,
        json!({"url": server.file_url("repo"), "interval": "1s", "ref": {"branch": "main"}}),
    )
    .await;
    wait_synced_healthy(&apps, "web", &main).await;
    wait_synced_healthy(&apps, "other", &main).await;

    let ws = Workspace::clone_from(&server, "repo");
    let source = format!("{}/repo", ns.name);
    let started = k8s_openapi::jiff::Timestamp::now();

    // 1. Three changes to the tenant's Application, none to the other.
    let ok = push_branch(&ws, "feature-ok", |ws| {
        ws.write("web/settings.yaml", &config_map("settings", "v2", false));
        ws.write("web/deployment.yaml", DEPLOYMENT);
        ws.remove("web/service.yaml");
    });
    // A Secret in the branch: the plan says it is created, never what it holds.
    let secret_branch = push_branch(&ws, "feature-secret", |ws| {
        ws.write(
            "web/secret.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: pl4n-s3cr3t-value\n",
        );
    });
    for output in ["text", "markdown", "json"] {
        let (code, out, err) = plan(&["--source", &source, "--ref", &secret_branch, "-o", output]);
        assert_eq!(code, 1, "{out}\n{err}");
        assert!(out.contains("creds"), "{out}");
        assert!(
            !out.contains("pl4n-s3cr3t-value") && !out.contains("cGw0bi1zM2NyM3QtdmFsdWU"),
            "the Secret's value leaked into -o {output}: {out}"
        );
    }
    let (code, text, err) = plan(&["--source", &source, "--ref", "feature-ok"]);
    eprintln!("gantry plan --source {source} --ref feature-ok\n{text}");
    assert_eq!(code, 1, "{text}\n{err}");
    assert!(text.contains(&ok[..12]), "{text}");
    assert!(
        text.contains(&format!("{}/web on cluster ", ns.name)),
        "{text}"
    );
    assert!(
        text.contains(&format!("as ServiceAccount {}/deployer", ns.name)),
        "{text}"
    );
    assert!(
        text.contains("1 to create, 1 to change, 1 to prune"),
        "{text}"
    );
    assert!(
        text.contains(&format!("+ create    Deployment {}/api", ns.name)),
        "{text}"
    );
    assert!(
        text.contains(&format!("~ change    ConfigMap {}/settings", ns.name)),
        "{text}"
    );
    assert!(
        text.contains(&format!("- prune     Service {}/old", ns.name)),
        "{text}"
    );
    assert!(
        text.contains("-  value: v1") && text.contains("+  value: v2"),
        "{text}"
    );
    assert!(
        !text.contains("/other on cluster"),
        "the other Application is not planned: {text}"
    );
    let (code, json_out, err) = plan(&["--source", &source, "--ref", &ok, "-o", "json"]);
    assert_eq!(code, 1, "{err}");
    // Valid against the documented schema (docs/plan.schema.json), and its types.
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/plan.schema.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json_out).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{json_out}");
    assert!(!validator.is_valid(&json!({"source": 1, "surprise": true})));
    let parsed: Plan = serde_json::from_value(value).expect("the plan types");
    assert_eq!(parsed.commit, ok);
    assert_eq!(parsed.applications.len(), 1);
    let web = &parsed.applications[0];
    assert_eq!(web.base.as_deref(), Some(main.as_str()));
    let action = |name: &str| {
        web.objects
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.action)
    };
    assert_eq!(action("settings"), Some(Action::Change));
    assert_eq!(action("api"), Some(Action::Create));
    assert_eq!(action("old"), Some(Action::Prune));
    assert_eq!(action("frozen"), Some(Action::Unchanged));
    let (code, md, _) = plan(&["--source", &source, "--ref", "feature-ok", "-o", "markdown"]);
    assert_eq!(code, 1);
    assert!(md.contains("applies cleanly"), "{md}");
    assert!(
        md.contains(&format!("| prune | Service {}/old |", ns.name)),
        "{md}"
    );
    assert!(md.contains("```diff"), "{md}");

    // 2. Refusals: RBAC for the tenant's ClusterRoleBinding, an immutable field.
    let binding = format!("plan-escalate-{}", random_suffix());
    push_branch(&ws, "feature-bad", |ws| {
        ws.write("web/frozen.yaml", &config_map("frozen", "v2", true));
        ws.write(
            "web/binding.yaml",
            &format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {binding}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n- kind: ServiceAccount\n  name: deployer\n  namespace: {}\n",
                ns.name
            ),
        );
    });
    let (code, text, err) = plan(&["--source", &source, "--ref", "feature-bad"]);
    eprintln!("gantry plan --source {source} --ref feature-bad\n{text}");
    assert_eq!(code, 2, "{text}\n{err}");
    assert!(
        text.contains(&format!("! refused   ClusterRoleBinding {binding}: RBAC:")),
        "{text}"
    );
    assert!(
        text.contains(&format!("system:serviceaccount:{}:deployer", ns.name)),
        "the refusal names the ServiceAccount: {text}"
    );
    assert!(
        text.contains(&format!(
            "! refused   ConfigMap {}/frozen: immutable field:",
            ns.name
        )) && text.contains("not recreated: set spec.recreateOnImmutable"),
        "{text}"
    );
    let (_, json_out, _) = plan(&["--source", &source, "--ref", "feature-bad", "-o", "json"]);
    let parsed: Plan = serde_json::from_str(&json_out).unwrap();
    let causes: Vec<Cause> = parsed.applications[0]
        .objects
        .iter()
        .filter_map(|o| o.refusal.as_ref().map(|r| r.cause))
        .collect();
    assert!(
        causes.contains(&Cause::Rbac) && causes.contains(&Cause::Immutable),
        "{causes:?}"
    );

    // 3. Only the other Application's path: only it is planned.
    push_branch(&ws, "feature-other", |ws| {
        ws.write("other/other.yaml", &config_map("other", "v2", false));
    });
    let (code, text, err) = plan(&["--source", &source, "--ref", "feature-other"]);
    assert_eq!(code, 1, "{text}\n{err}");
    assert!(
        text.contains(&format!("{}/other on cluster", ns.name)),
        "{text}"
    );
    assert!(
        !text.contains(&format!("{}/web on cluster", ns.name)),
        "{text}"
    );

    // 4. What is deployed already: nothing to plan.
    let (code, text, err) = plan(&["--source", &source, "--ref", "main"]);
    assert_eq!(code, 0, "{text}\n{err}");
    assert!(text.contains("No Application's objects change."), "{text}");
    // A named Application is planned even so, as unchanged.
    let (code, text, _) = plan(&[
        "--source",
        &source,
        "--ref",
        "main",
        "--app",
        &format!("{}/web", ns.name),
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("3 unchanged"), "{text}");

    // Nothing was written: the live objects are as they were, and every audited request of
    // the planning user in this namespace (or for the binding) was a dry-run.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let settings = cms.get("settings").await.unwrap();
    assert_eq!(settings.data.unwrap()["value"], "v1");
    assert!(cms.get_opt("frozen").await.unwrap().is_some());
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    assert!(services.get_opt("old").await.unwrap().is_some());
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &ns.name);
    assert!(deployments.get_opt("api").await.unwrap().is_none());
    let ours = audited_writes("gantry-replica-c", started, &ns.name, &binding);
    assert!(
        ours.iter().any(is_dry_run),
        "the plan's dry-runs are audited: {ours:?}"
    );
    let writes: Vec<_> = ours.iter().filter(|e| !is_dry_run(e)).collect();
    assert!(writes.is_empty(), "the plan wrote: {writes:?}");
}

/// Plans on pull requests, by the controller, on a real forge: Gitea's own webhook reaches
/// a Receiver, the plan is one comment on the pull request (edited in place on the next
/// push, never a second comment) and a `gantry/plan` status on each head; a head that
/// would be refused gets `failure` naming the RBAC refusal and the ServiceAccount; a pull
/// request from a fork is not planned and gets a neutral status saying why.
#[tokio::test]
async fn a_pull_request_on_gitea_gets_one_plan_comment_edited_on_every_push_and_a_status() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "plan-pr").await;
    namespace_admin(&client, &ns.name, "deployer").await;
    // The controller as an audited user: its writes during the plans are in the audit log.
    let audited = kubeconfig_path()
        .parent()
        .unwrap()
        .join("replica-b.kubeconfig");
    let controller = GantryController::start_on(&ns.name, &audited);
    let forge = Gitea::start();
    let main = forge.create_repo(
        "app",
        &[
            ("web/settings.yaml", &config_map("settings", "v1", false)),
            ("web/service.yaml", SERVICE),
            ("other/other.yaml", &config_map("other", "v1", false)),
        ],
    );
    crate::receivers::token_secret(&client, &ns.name).await;
    let (repos, apps) = source_and_two_apps(
        &client,
        &ns.name,
        json!({"url": forge.clone_url("app"), "interval": "1h", "ref": {"branch": "main"},
               "plan": {"enabled": true}}),
    )
    .await;
    wait_synced_healthy(&apps, "web", &main).await;
    wait_synced_healthy(&apps, "other", &main).await;
    // The commit-status Notifier the plans are posted through.
    let token = forge.create_token("plans");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &ns.name);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "forge"}, "stringData": {"token": token}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let notifiers: Api<gantry::api::Notifier> = Api::namespaced(client.clone(), &ns.name);
    notifiers
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "gantry.dev/v1alpha1", "kind": "Notifier",
                "metadata": {"name": "forge"},
                "spec": {"type": "gitea", "secretRef": {"name": "forge"}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let url = crate::receivers::receiver(
        &client,
        &ns.name,
        &controller,
        "forge",
        "gitea",
        ("GitRepository", "repo"),
    )
    .await;
    forge
        .api(
            "POST",
            "/repos/gantry/app/hooks",
            Some(json!({
                "type": "gitea", "active": true,
                "events": ["pull_request", "pull_request_sync"],
                "config": {"url": url, "content_type": "json", "secret": crate::receivers::TOKEN}
            })),
        )
        .expect("create the Gitea webhook");

    // 1. A pull request that changes a ConfigMap, adds a Deployment and removes a Service.
    let head1 = forge.push_branch(
        "app",
        "feature",
        &[
            ("web/settings.yaml", &config_map("settings", "v2", false)),
            ("web/deployment.yaml", DEPLOYMENT),
        ],
        &["web/service.yaml"],
        "three changes",
    );
    let planning = k8s_openapi::jiff::Timestamp::now();
    let number = forge.open_pull("app", "feature", "main");
    let plan_comments = || {
        forge
            .comments("app", number)
            .into_iter()
            .filter(|(_, body)| body.contains("gantry-plan"))
            .collect::<Vec<_>>()
    };
    let (id, body) = eventually("the plan comment", Duration::from_secs(120), || async {
        plan_comments()
            .into_iter()
            .find(|(_, b)| b.contains(&head1[..12]))
    })
    .await;
    eprintln!("the plan comment on pull request {number}:\n{body}");
    assert!(body.contains("applies cleanly"), "{body}");
    assert!(
        body.contains(&format!("| change | ConfigMap {}/settings |", ns.name)),
        "{body}"
    );
    assert!(
        body.contains(&format!("| create | Deployment {}/api |", ns.name)),
        "{body}"
    );
    assert!(
        body.contains(&format!("| prune | Service {}/old |", ns.name)),
        "{body}"
    );
    assert!(body.contains("+  value: v2"), "the diff: {body}");
    assert!(
        !body.contains("/other on cluster"),
        "only the Application that changes: {body}"
    );
    let status = |commit: &str| {
        forge
            .statuses("app", commit)
            .into_iter()
            .rfind(|(context, _, _)| context == "gantry/plan")
    };
    let (_, state, _) = eventually("the plan status", Duration::from_secs(30), || async {
        status(&head1)
    })
    .await;
    assert_eq!(state, "success");

    // 2. Another push to the pull request: the same comment, edited; a refusal.
    let binding = format!("plan-pr-{}", random_suffix());
    let head2 = forge.push_branch(
        "app",
        "feature",
        &[(
            "web/binding.yaml",
            &format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {binding}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n- kind: ServiceAccount\n  name: deployer\n  namespace: {}\n",
                ns.name
            ),
        )],
        &[],
        "escalate",
    );
    let body = eventually(
        "the edited plan comment",
        Duration::from_secs(120),
        || async {
            let comments = plan_comments();
            comments
                .iter()
                .find(|(_, b)| b.contains(&head2[..12]))
                .map(|(cid, b)| (comments.len(), *cid, b.clone()))
        },
    )
    .await;
    let (count, edited_id, body) = body;
    assert_eq!((count, edited_id), (1, id), "one comment, edited in place");
    assert!(body.contains("would be refused"), "{body}");
    assert!(
        body.contains(&format!("ClusterRoleBinding {binding}"))
            && body.contains("RBAC")
            && body.contains(&format!("system:serviceaccount:{}:deployer", ns.name)),
        "{body}"
    );
    let (_, state, description) =
        eventually("the failure status", Duration::from_secs(30), || async {
            status(&head2)
        })
        .await;
    assert_eq!(state, "failure", "{description}");
    // Recorded once posted (the record is written after the comment and the status).
    let plans = eventually("the plan recorded", Duration::from_secs(30), || async {
        let plans = repos.get("repo").await.ok()?.status?.plans;
        plans.iter().any(|p| p.head == head2).then_some(plans)
    })
    .await;
    assert_eq!(plans.len(), 1, "{plans:?}");
    assert_eq!(
        (
            plans[0].number,
            plans[0].head.as_str(),
            plans[0].result.as_str()
        ),
        (i64::try_from(number).unwrap(), head2.as_str(), "failure")
    );

    // 3. A pull request from a fork (as the Receiver records it): not planned, a neutral
    // status saying why.
    let forked = forge.push_branch(
        "app",
        "from-a-fork",
        &[("web/settings.yaml", &config_map("settings", "v3", false))],
        &[],
        "fork",
    );
    repos
        .patch(
            "repo",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations": {
                "plan.gantry.dev/pr-99": format!("{forked} fork")}}})),
        )
        .await
        .unwrap();
    let (_, state, description) =
        eventually("the fork's status", Duration::from_secs(60), || async {
            status(&forked)
        })
        .await;
    assert_eq!(state, "warning", "{description}");
    assert!(description.contains("fork"), "{description}");

    // Planning wrote nothing to the cluster: the controller's audited writes since the pull
    // request was opened are its GitRepository's (the plan requests, status.plans) and
    // Events; every other one was a dry-run.
    let writes = audited_writes("gantry-replica-b", planning, &ns.name, &binding);
    assert!(
        writes.iter().any(is_dry_run),
        "the plans' dry-runs are audited: {writes:?}"
    );
    let real: Vec<_> = writes
        .iter()
        .filter(|e| !is_dry_run(e))
        .filter(|e| {
            !["gitrepositories", "events"]
                .contains(&e["objectRef"]["resource"].as_str().unwrap_or_default())
        })
        .collect();
    assert!(
        real.is_empty(),
        "the controller wrote while planning: {real:?}"
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert_eq!(
        cms.get("settings").await.unwrap().data.unwrap()["value"],
        "v1"
    );
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    assert!(services.get_opt("old").await.unwrap().is_some());
    let crbs: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
    assert!(crbs.get_opt(&binding).await.unwrap().is_none());
}
