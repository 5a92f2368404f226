//! Tenants (TESTING.md row 17): an Application with `serviceAccountName` acts as that
//! ServiceAccount for every request, so a tenant's repository cannot reach past the RBAC
//! of its ServiceAccount; a missing ServiceAccount stops the Application; a controller can
//! impersonate a default ServiceAccount or refuse Applications without one; references
//! stay in the Application's namespace; `file://` sources stay under the allowed root.

use std::time::Duration;

use gantry::api::Application;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::app::{
    Workspace, condition, create_source_and_app, wait_ready_reason, wait_synced_healthy,
};
use crate::support::cluster::{
    TestNamespace, client, install_crds, kubeconfig_path, namespace_admin,
};
use crate::support::controller::GantryController;
use crate::support::git::GitServer;
use crate::support::{eventually, random_suffix};

fn config_map(name: &str, namespace: Option<&str>) -> String {
    let ns = namespace
        .map(|n| format!("  namespace: {n}\n"))
        .unwrap_or_default();
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{ns}data:\n  k: v\n")
}

async fn wait_reason(api: &Api<Application>, name: &str, reason: &str) -> Application {
    eventually(
        &format!("{name} Ready=False with reason {reason}"),
        Duration::from_secs(60),
        || async {
            let app = api.get(name).await.ok()?;
            let ready = condition(&app, "Ready")?;
            (ready.status == "False" && ready.reason == reason).then_some(app)
        },
    )
    .await
}

fn ready_message(app: &Application) -> String {
    condition(app, "Ready")
        .map(|c| c.message)
        .unwrap_or_default()
}

#[tokio::test]
async fn a_tenant_cannot_escalate_and_a_forbidden_object_stops_the_whole_set() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "tenant-esc").await;
    namespace_admin(&client, &ns.name, "limited").await;
    let _controller = GantryController::start(&ns.name);
    let suffix = random_suffix();
    let binding = format!("escalate-{suffix}");
    let server = GitServer::start();
    let crb = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {binding}\n\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\n\
         subjects:\n  - kind: ServiceAccount\n    name: limited\n    namespace: {}\n",
        ns.name
    );
    let leak = format!("leak-{suffix}");
    server.create_repo(
        "app",
        &[
            ("app/own.yaml", &config_map("own", None)),
            ("app/escalate.yaml", &crb),
            ("app/system.yaml", &config_map(&leak, Some("kube-system"))),
            (
                "app/namespace.yaml",
                &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {leak}\n"),
            ),
        ],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "app", "serviceAccountName": "limited"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let app = wait_reason(&apps, "app", "ValidationFailed").await;
    let message = ready_message(&app);
    assert!(
        message.contains(&format!("ClusterRoleBinding {binding}"))
            && message.contains(&format!("ConfigMap kube-system/{leak}"))
            && message.contains(&format!("Namespace {leak}"))
            && message.contains("forbidden")
            && message.contains(&format!("system:serviceaccount:{}:limited", ns.name))
            && message.contains("nothing was applied"),
        "{message}"
    );
    // Nothing of the set exists: not even the object the tenant may create.
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    assert!(crbs.get_opt(&binding).await.unwrap().is_none());
    let system: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    assert!(system.get_opt(&leak).await.unwrap().is_none());
    let own: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(own.get_opt("own").await.unwrap().is_none());
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    assert!(namespaces.get_opt(&leak).await.unwrap().is_none());
}

#[tokio::test]
async fn a_tenant_stays_in_its_namespace_and_what_it_may_not_delete_stays_in_the_inventory() {
    let client = client().await;
    install_crds(&client).await;
    let a = TestNamespace::new(&client, "tenant-a").await;
    let b = TestNamespace::new(&client, "tenant-b").await;
    namespace_admin(&client, &a.name, "limited").await;
    let _controller = GantryController::start(&a.name);
    let server = GitServer::start();
    // First as the controller (no ServiceAccount): an object in A and one in B.
    let first = server.create_repo(
        "app",
        &[
            ("app/own.yaml", &config_map("own", None)),
            ("app/other.yaml", &config_map("in-b", Some(&b.name))),
        ],
    );
    create_source_and_app(
        &client,
        &a.name,
        "app",
        &server.file_url("app"),
        json!({"path": "app", "prune": true}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &a.name);
    wait_synced_healthy(&apps, "app", &first).await;
    let in_b: Api<ConfigMap> = Api::namespaced(client.clone(), &b.name);
    assert!(in_b.get_opt("in-b").await.unwrap().is_some());

    // Now as the tenant, and Git drops the object in B: the prune is the tenant's, which
    // may not delete in B. It is reported, the object stays, and so does its entry.
    let ws = Workspace::clone_from(&server, "app");
    ws.remove("app/other.yaml");
    let second = ws.commit_and_push("drop the object in b");
    apps.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"serviceAccountName": "limited"}})),
    )
    .await
    .unwrap();
    let app = eventually(
        "PruneFailed for the object in b",
        Duration::from_secs(60),
        || async {
            let app = apps.get("app").await.ok()?;
            let ready = condition(&app, "Ready")?;
            let applied = app.status.as_ref()?.last_applied_revision.clone()?;
            (ready.reason == "PruneFailed" && applied.ends_with(&second)).then_some(app)
        },
    )
    .await;
    let message = ready_message(&app);
    assert!(
        message.contains(&format!("ConfigMap {}/in-b", b.name)) && message.contains("forbidden"),
        "{message}"
    );
    assert!(in_b.get_opt("in-b").await.unwrap().is_some(), "kept");
    let inventory = app.status.unwrap().inventory;
    assert!(
        inventory
            .iter()
            .any(|e| e.name == "in-b" && e.namespace.as_deref() == Some(b.name.as_str())),
        "kept in the inventory: {inventory:?}"
    );

    // Deploying into B as the tenant is refused, and nothing of that revision is applied.
    ws.write("app/other.yaml", &config_map("new-in-b", Some(&b.name)));
    ws.write("app/own2.yaml", &config_map("own2", None));
    ws.commit_and_push("try b again");
    let app = wait_reason(&apps, "app", "ValidationFailed").await;
    assert!(
        ready_message(&app).contains(&format!("ConfigMap {}/new-in-b", b.name)),
        "{}",
        ready_message(&app)
    );
    assert!(in_b.get_opt("new-in-b").await.unwrap().is_none());
    let in_a: Api<ConfigMap> = Api::namespaced(client.clone(), &a.name);
    assert!(in_a.get_opt("own2").await.unwrap().is_none());
}

#[tokio::test]
async fn a_missing_service_account_stops_the_application_until_it_exists() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "tenant-ghost").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let commit = server.create_repo("app", &[("app/own.yaml", &config_map("own", None))]);
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "app", "serviceAccountName": "deployer"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let app = wait_reason(&apps, "app", "ServiceAccountNotFound").await;
    assert!(
        ready_message(&app).contains(&format!("ServiceAccount {}/deployer not found", ns.name)),
        "{}",
        ready_message(&app)
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        cms.get_opt("own").await.unwrap().is_none(),
        "never applied as the controller"
    );
    // Created later: the Application goes on by itself.
    namespace_admin(&client, &ns.name, "deployer").await;
    let app = wait_synced_healthy(&apps, "app", &commit).await;
    assert!(cms.get_opt("own").await.unwrap().is_some());
    assert_eq!(
        app.status.unwrap().cluster.as_deref(),
        Some(
            kube::Config::infer()
                .await
                .unwrap()
                .cluster_url
                .authority()
                .unwrap()
                .as_str()
        ),
        "status.cluster names the API server"
    );
}

#[tokio::test]
async fn a_default_service_account_applies_to_all_and_a_locked_down_controller_refuses_none() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "tenant-default").await;
    let other = TestNamespace::new(&client, "tenant-default-b").await;
    namespace_admin(&client, &ns.name, "deployer").await;
    let _controller = GantryController::start_with(
        &ns.name,
        &kubeconfig_path(),
        &["--default-service-account=deployer"],
    );
    let server = GitServer::start();
    server.create_repo(
        "app",
        &[
            ("app/own.yaml", &config_map("own", None)),
            ("app/other.yaml", &config_map("x", Some(&other.name))),
        ],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "app"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let app = wait_reason(&apps, "app", "ValidationFailed").await;
    assert!(
        ready_message(&app).contains(&format!("system:serviceaccount:{}:deployer", ns.name)),
        "acts as the default ServiceAccount: {}",
        ready_message(&app)
    );

    let locked = TestNamespace::new(&client, "tenant-locked").await;
    let _locked_controller = GantryController::start_with(
        &locked.name,
        &kubeconfig_path(),
        &["--require-service-account"],
    );
    create_source_and_app(
        &client,
        &locked.name,
        "app",
        &server.file_url("app"),
        json!({"path": "app"}),
    )
    .await;
    let locked_apps: Api<Application> = Api::namespaced(client.clone(), &locked.name);
    let app = wait_reason(&locked_apps, "app", "ServiceAccountRequired").await;
    assert!(ready_message(&app).contains("spec.serviceAccountName"));
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &locked.name);
    assert!(cms.get_opt("own").await.unwrap().is_none());
}

#[tokio::test]
async fn references_stay_in_the_namespace_and_file_sources_under_the_root() {
    let client = client().await;
    install_crds(&client).await;
    let mine = TestNamespace::new(&client, "tenant-refs").await;
    let theirs = TestNamespace::new(&client, "tenant-refs-b").await;
    let controller = GantryController::start(&mine.name);
    let server = GitServer::start();
    server.create_repo("app", &[("app/own.yaml", &config_map("own", None))]);
    // The other tenant's source, its Secret and its policy.
    create_source_and_app(
        &client,
        &theirs.name,
        "theirs",
        &server.file_url("app"),
        json!({"path": "app", "suspend": true}),
    )
    .await;
    // An Application naming a source that exists only in the other namespace (a
    // `namespace` field in the reference is not part of the API and is dropped).
    let apps: Api<Application> = Api::namespaced(client.clone(), &mine.name);
    let app: Application = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": "borrow"},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": "theirs", "namespace": theirs.name},
                 "path": "app", "interval": "10m"}
    }))
    .unwrap();
    apps.create(&PostParams::default(), &app).await.unwrap();
    let app = wait_reason(&apps, "borrow", "ArtifactFailed").await;
    assert!(
        ready_message(&app).contains("GitRepository theirs not found"),
        "{}",
        ready_message(&app)
    );

    // A Secret and an ImagePolicy that exist only in the other namespace.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &theirs.name);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "their-creds"},
                "stringData": {"username": "u", "password": "their-password-77"}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let policies: Api<gantry::api::ImagePolicy> = Api::namespaced(client.clone(), &theirs.name);
    policies
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "gantry.dev/v1alpha1", "kind": "ImagePolicy",
                "metadata": {"name": "their-policy"},
                "spec": {"image": "127.0.0.1:1/x", "interval": "1h", "policy": {"semver": {"range": "^1"}}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let repos: Api<gantry::api::GitRepository> = Api::namespaced(client.clone(), &mine.name);
    let repo = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
        "metadata": {"name": "creds"},
        "spec": {"url": server.http_url("app"), "interval": "1s", "ref": {"branch": "main"},
                 "secretRef": {"name": "their-creds"}}
    }))
    .unwrap();
    repos.create(&PostParams::default(), &repo).await.unwrap();
    create_source_and_app(
        &client,
        &mine.name,
        "images",
        &server.file_url("app"),
        json!({"path": "app", "imageAutomation": {"policies": ["their-policy"],
               "writeBack": {"author": {"name": "t", "email": "t@example.test"}}}}),
    )
    .await;
    eventually(
        "the other namespace's Secret not found",
        Duration::from_secs(30),
        || async {
            let repo = repos.get("creds").await.ok()?;
            let ready = repo
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            (ready.status == "False" && ready.message.contains("Secret their-creds not found"))
                .then_some(())
        },
    )
    .await;
    eventually(
        "the other namespace's ImagePolicy not found",
        Duration::from_secs(60),
        || async {
            let app = apps.get("images").await.ok()?;
            let c = condition(&app, "ImageAutomation")?;
            c.message
                .contains("ImagePolicy their-policy (not found)")
                .then_some(())
        },
    )
    .await;

    // file:// outside the allowed root, and into the controller's own caches.
    let cache = controller
        .data_dir()
        .join("git")
        .join(&theirs.name)
        .join("theirs");
    for (name, url) in [
        ("etc", "file:///etc".to_string()),
        ("caches", format!("file://{}", cache.display())),
    ] {
        let repo = serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
            "metadata": {"name": name},
            "spec": {"url": url, "interval": "1s", "ref": {"branch": "main"}}
        }))
        .unwrap();
        repos.create(&PostParams::default(), &repo).await.unwrap();
    }
    for (name, expected) in [
        ("etc", "the only directory file:// sources may read"),
        ("caches", "inside the controller's own data directory"),
    ] {
        eventually(
            &format!("GitRepository {name} refused"),
            Duration::from_secs(30),
            || async {
                let repo = repos.get(name).await.ok()?;
                let status = repo.status?;
                let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
                (ready.status == "False"
                    && ready.message.contains(expected)
                    && status.artifact.is_none())
                .then_some(())
            },
        )
        .await;
    }
}

/// An impersonated Application was once seen applying what its ServiceAccount may not,
/// 2 s after a kube-apiserver restart. Here the API server of a private control plane is
/// restarted while new revisions arrive, in a loop, and its audit log (who made each
/// write, as whom) must show every write for the Application made as its ServiceAccount,
/// and no ClusterRoleBinding ever created by anyone.
#[tokio::test]
async fn restarts_of_the_api_server_never_let_an_impersonated_application_escalate() {
    use crate::support::private_cluster::PrivateCluster;
    let cluster = PrivateCluster::start();
    let client = cluster.client().await;
    crate::support::cluster::install_crds_into(&client).await;
    let ns = "tenant";
    let post = |v: serde_json::Value| v;
    for (path, body) in [
        (
            "/api/v1/namespaces",
            post(json!({"metadata": {"name": ns}})),
        ),
        (
            "/api/v1/namespaces/tenant/serviceaccounts",
            post(json!({"metadata": {"name": "limited"}})),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/tenant/roles",
            post(json!({"metadata": {"name": "configmaps"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]})),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/tenant/rolebindings",
            post(json!({"metadata": {"name": "configmaps"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmaps"},
                "subjects": [{"kind": "ServiceAccount", "name": "limited", "namespace": ns}]})),
        ),
    ] {
        let req = http::Request::post(path)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap();
        client
            .request::<serde_json::Value>(req)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    // The controller as an audited user (a system:masters member, as a cluster-admin install).
    let _controller = GantryController::start_on(ns, &cluster.replica_kubeconfig('a'));
    let server = GitServer::start();
    let escalate = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: escalate\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n- kind: ServiceAccount\n  name: limited\n  namespace: tenant\n";
    let cm = |v: usize| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  v: \"{v}\"\n"
        )
    };
    let head = server.create_repo(
        "app",
        &[("deploy/crb.yaml", escalate), ("deploy/cm.yaml", &cm(0))],
    );
    create_source_and_app(
        &client,
        ns,
        "app",
        &server.file_url("app"),
        json!({"path": "deploy", "serviceAccountName": "limited"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), ns);
    wait_ready_reason(&apps, "app", "ValidationFailed", &head).await;
    let ws = Workspace::clone_from(&server, "app");
    for round in 1..=3 {
        ws.write("deploy/cm.yaml", &cm(round));
        let commit = ws.commit_and_push(&format!("round {round}"));
        // The restart lands while the controller fetches and syncs the new revision.
        tokio::time::sleep(Duration::from_millis(300 * round as u64)).await;
        cluster.restart_apiserver(2);
        let app = wait_ready_reason(&apps, "app", "ValidationFailed", &commit).await;
        let message = condition(&app, "Ready").unwrap().message;
        assert!(
            message.contains("ClusterRoleBinding") && message.contains("forbidden"),
            "round {round}: {message}"
        );
    }
    let crbs: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
    assert!(crbs.get_opt("escalate").await.unwrap().is_none());
    // From the audit log: who wrote what, as whom.
    let events = cluster.audit_events();
    let mut as_tenant = 0;
    for e in &events {
        let resource = e["objectRef"]["resource"].as_str().unwrap_or_default();
        let code = e["responseStatus"]["code"].as_i64().unwrap_or(0);
        let uri = e["requestURI"].as_str().unwrap_or_default();
        let impersonated = e["impersonatedUser"]["username"].as_str();
        if resource == "clusterrolebindings" {
            assert!(
                code >= 400 || uri.contains("dryRun"),
                "a ClusterRoleBinding was written: {e}"
            );
            assert_eq!(
                impersonated,
                Some("system:serviceaccount:tenant:limited"),
                "{e}"
            );
        }
        if resource == "configmaps" && e["objectRef"]["namespace"] == ns {
            assert_eq!(
                impersonated,
                Some("system:serviceaccount:tenant:limited"),
                "a write for the Application not made as its ServiceAccount: {e}"
            );
            as_tenant += 1;
        }
    }
    assert!(
        as_tenant > 0,
        "no write of the Application's objects was audited"
    );
    eprintln!(
        "{} audited writes over 3 restarts; {as_tenant} of the Application's ConfigMap, all as its ServiceAccount; no ClusterRoleBinding written",
        events.len()
    );
}
