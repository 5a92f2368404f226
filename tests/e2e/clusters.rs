//! Remote clusters (TESTING.md row 18): an Application with `kubeConfig.secretRef` deploys
//! to the cluster of that kubeconfig — a second control plane started for the test — and
//! everything it does (apply, health, drift, prune, cleanup, `gantry diff`) happens there;
//! an unreachable cluster is reported and recovered from; a kubeconfig that would run a
//! program or read the controller's files is refused before anything of it is used.

use std::process::Command;
use std::time::Duration;

use gantry::api::Application;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::app::{Workspace, condition, create_source_and_app, wait_synced_healthy};
use crate::support::cluster::{TestNamespace, client, install_crds, kubeconfig_path};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::GitServer;
use crate::support::private_cluster::PrivateCluster;

const CONFIG_MAP: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  k: v\n";

fn deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  \
         selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    \
         spec:\n      containers:\n        - name: web\n          image: {image}\n"
    )
}

/// The kubeconfig Secret of `remote` in `ns` (key `value`, the default), and the same
/// namespace on the remote cluster.
async fn register(client: &kube::Client, ns: &str, remote: &PrivateCluster, text: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "remote"},
                "stringData": {"value": text}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(remote.client().await);
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
}

fn host_of(kubeconfig: &str) -> String {
    let line = kubeconfig
        .lines()
        .find(|l| l.trim_start().starts_with("server:"))
        .unwrap();
    line.split("://").nth(1).unwrap().trim().to_string()
}

fn gantry(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .env("GANTRY_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test]
async fn an_application_deploys_heals_prunes_and_cleans_up_on_its_remote_cluster() {
    let client = client().await;
    install_crds(&client).await;
    let remote = PrivateCluster::start_full();
    let rclient = remote.client().await;
    let ns = TestNamespace::new(&client, "remote-app").await;
    let text = std::fs::read_to_string(remote.kubeconfig()).unwrap();
    register(&client, &ns.name, &remote, &text).await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let first = server.create_repo(
        "app",
        &[
            ("app/settings.yaml", CONFIG_MAP),
            ("app/web.yaml", &deployment("example.test/web:1")),
        ],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "app", "prune": true, "drift": {"mode": "heal"},
               "kubeConfig": {"secretRef": {"name": "remote"}}}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let app = wait_synced_healthy(&apps, "app", &first).await;
    assert_eq!(app.status.unwrap().cluster, Some(host_of(&text)));
    let remote_cms: Api<ConfigMap> = Api::namespaced(rclient.clone(), &ns.name);
    let remote_deployments: Api<Deployment> = Api::namespaced(rclient.clone(), &ns.name);
    assert!(remote_cms.get_opt("settings").await.unwrap().is_some());
    let web = remote_deployments.get("web").await.unwrap();
    assert_eq!(web.status.unwrap().ready_replicas, Some(1), "healthy there");
    let local_cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        local_cms.get_opt("settings").await.unwrap().is_none(),
        "nothing on the controller's own cluster"
    );

    // The CLI sees the remote cluster too.
    let listed = gantry(&["get", "apps", "-n", &ns.name]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&host_of(&text)),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
    let diff = gantry(&[
        "diff",
        "--app",
        &format!("{}/app", ns.name),
        "--color=never",
    ]);
    assert_eq!(
        diff.status.code(),
        Some(0),
        "no difference on the remote cluster: {}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );

    // A hand edit there is healed.
    remote_cms
        .patch(
            "settings",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "by-hand"}})),
        )
        .await
        .unwrap();
    eventually(
        "the remote drift healed",
        Duration::from_secs(30),
        || async {
            let cm = remote_cms.get("settings").await.ok()?;
            (cm.data?.get("k")? == "v").then_some(())
        },
    )
    .await;

    // Removed from Git: pruned there.
    let ws = Workspace::clone_from(&server, "app");
    ws.remove("app/settings.yaml");
    let second = ws.commit_and_push("drop settings");
    wait_synced_healthy(&apps, "app", &second).await;
    assert!(remote_cms.get_opt("settings").await.unwrap().is_none());

    // Deleting the Application deletes what it applied there.
    apps.delete("app", &DeleteParams::default()).await.unwrap();
    eventually(
        "the remote Deployment deleted with the Application",
        Duration::from_secs(30),
        || async {
            remote_deployments
                .get_opt("web")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn an_unreachable_cluster_is_reported_untouched_and_recovered_from() {
    let client = client().await;
    install_crds(&client).await;
    let remote = PrivateCluster::start();
    let ns = TestNamespace::new(&client, "remote-down").await;
    let text = std::fs::read_to_string(remote.kubeconfig()).unwrap();
    register(&client, &ns.name, &remote, &text).await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let first = server.create_repo("app", &[("app/settings.yaml", CONFIG_MAP)]);
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "app", "kubeConfig": {"secretRef": {"name": "remote"}}}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let synced = wait_synced_healthy(&apps, "app", &first).await;
    let inventory = synced.status.as_ref().unwrap().inventory.clone();

    // The remote API server goes away for a while; meanwhile Git moves on.
    let outage = {
        let state = remote.kubeconfig();
        std::thread::spawn(move || {
            let out = Command::new(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/cluster/restart-apiserver.sh"),
            )
            .arg(state.parent().unwrap())
            .arg("25")
            .output()
            .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ws = Workspace::clone_from(&server, "app");
    ws.write("app/settings.yaml", &CONFIG_MAP.replace("k: v", "k: w"));
    let second = ws.commit_and_push("while the cluster is down");
    let down = eventually(
        "Ready=False ClusterUnreachable",
        Duration::from_secs(30),
        || async {
            let app = apps.get("app").await.ok()?;
            let ready = condition(&app, "Ready")?;
            (ready.reason == "ClusterUnreachable").then_some(app)
        },
    )
    .await;
    let status = down.status.unwrap();
    assert!(
        condition(&apps.get("app").await.unwrap(), "Ready")
            .unwrap()
            .message
            .contains(&host_of(&text))
    );
    assert_eq!(
        status.last_applied_revision,
        synced.status.as_ref().unwrap().last_applied_revision
    );
    assert_eq!(status.inventory, inventory, "the last state is untouched");
    outage.join().unwrap();

    // Back: the new revision is applied without anyone asking.
    wait_synced_healthy(&apps, "app", &second).await;
    let remote_cms: Api<ConfigMap> = Api::namespaced(remote.client().await, &ns.name);
    assert_eq!(
        remote_cms.get("settings").await.unwrap().data.unwrap()["k"],
        "w"
    );
}

#[tokio::test]
async fn a_kubeconfig_that_would_run_a_program_or_read_a_file_is_refused() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "remote-exec").await;
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("ran");
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    server.create_repo("app", &[("app/settings.yaml", CONFIG_MAP)]);
    let kubeconfig = |user: &str| {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n\
             users:\n- name: u\n  user:\n{user}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\n\
             current-context: x\n"
        )
    };
    let exec = format!(
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n      \
         args: [\"-c\", \"touch {}\"]\n      interactiveMode: Never",
        marker.display()
    );
    let cases = [
        ("exec", kubeconfig(&exec), "would run a program"),
        (
            "tokenfile",
            kubeconfig("    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token"),
            "names a file on the controller's disk",
        ),
    ];
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    for (name, text, _) in &cases {
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "stringData": {"value": text}
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        create_source_and_app(
            &client,
            &ns.name,
            name,
            &server.file_url("app"),
            json!({"path": "app", "kubeConfig": {"secretRef": {"name": name}}}),
        )
        .await;
    }
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    for (name, _, expected) in &cases {
        let app = eventually(
            &format!("{name}: KubeConfigRefused"),
            Duration::from_secs(60),
            || async {
                let app = apps.get(name).await.ok()?;
                let ready = condition(&app, "Ready")?;
                (ready.reason == "KubeConfigRefused").then_some(ready)
            },
        )
        .await;
        assert!(app.message.contains(expected), "{}", app.message);
    }
    // Several reconciles later, the program never ran and nothing was applied anywhere.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!marker.exists(), "the exec command ran");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(cms.get_opt("settings").await.unwrap().is_none());
}

/// With both fields, the ServiceAccount is impersonated on the remote cluster: what it may
/// do there is applied, what it may not stops the set; and drift there is audited.
#[tokio::test]
async fn a_service_account_is_impersonated_on_the_remote_cluster_and_drift_audited_there() {
    let client = client().await;
    install_crds(&client).await;
    let remote = PrivateCluster::start();
    let rclient = remote.client().await;
    let ns = TestNamespace::new(&client, "remote-sa").await;
    let text = std::fs::read_to_string(remote.kubeconfig()).unwrap();
    register(&client, &ns.name, &remote, &text).await;
    // The ServiceAccount exists there (not here), with rights on ConfigMaps there.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(rclient.clone(), &ns.name);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "deployer"}})).unwrap(),
    )
    .await
    .unwrap();
    // A Role of its own (the aggregated `admin` ClusterRole is filled in by the
    // controller-manager, which this control plane does not run).
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(rclient.clone(), &ns.name);
    roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "config"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(rclient.clone(), &ns.name);
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "deployer-config"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "config"},
                "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": ns.name}]
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let first = server.create_repo("app", &[("app/settings.yaml", CONFIG_MAP)]);
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "app", "serviceAccountName": "deployer", "drift": {"mode": "audit"},
               "kubeConfig": {"secretRef": {"name": "remote"}}}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "app", &first).await;
    let remote_cms: Api<ConfigMap> = Api::namespaced(rclient.clone(), &ns.name);
    let cm = remote_cms.get("settings").await.unwrap();
    assert!(
        cm.metadata
            .managed_fields
            .unwrap_or_default()
            .iter()
            .any(|m| m.manager.as_deref() == Some("gantry")),
        "applied there"
    );

    // Audit: a hand edit there is reported, not reverted.
    remote_cms
        .patch(
            "settings",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "by-hand"}})),
        )
        .await
        .unwrap();
    eventually("Drifted=True there", Duration::from_secs(30), || async {
        let app = apps.get("app").await.ok()?;
        let drifted = condition(&app, "Drifted")?;
        (drifted.status == "True" && drifted.message.contains("ConfigMap")).then_some(())
    })
    .await;
    assert_eq!(
        remote_cms.get("settings").await.unwrap().data.unwrap()["k"],
        "by-hand"
    );

    // Beyond the ServiceAccount's rights there: refused, nothing of the set applied.
    let ws = Workspace::clone_from(&server, "app");
    ws.write(
        "app/system.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: leak\n  namespace: kube-system\ndata:\n  k: v\n",
    );
    ws.write(
        "app/more.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: more\ndata:\n  k: v\n",
    );
    ws.commit_and_push("reach kube-system");
    let refused = eventually(
        "ValidationFailed there",
        Duration::from_secs(60),
        || async {
            let app = apps.get("app").await.ok()?;
            let ready = condition(&app, "Ready")?;
            (ready.reason == "ValidationFailed").then_some(ready)
        },
    )
    .await;
    assert!(
        refused.message.contains("ConfigMap kube-system/leak")
            && refused
                .message
                .contains(&format!("system:serviceaccount:{}:deployer", ns.name)),
        "{}",
        refused.message
    );
    assert!(remote_cms.get_opt("more").await.unwrap().is_none());
    let system: Api<ConfigMap> = Api::namespaced(rclient.clone(), "kube-system");
    assert!(system.get_opt("leak").await.unwrap().is_none());
}
