//! The web view against the local control plane, in a real browser (Debian's Chromium,
//! driven through chromedriver): `gantry ui` as one viewer (`local`), with a running
//! controller's syncs, drift and objects (`live`), and the controller's in-cluster view
//! with each viewer's bearer token (`in_cluster`). Screenshots of every page go to
//! `target/ui-screenshots/`.

mod in_cluster;
mod live;
mod local;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use gantry::api::Application;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::support::process::ChildGuard;

pub const HOSTILE: &str = "<script>document.title='pwned'</script>apply failed";

/// An Application with the status a controller would have written (no controller runs in
/// these tests: every controller of the suite is scoped to its own namespace or shard).
pub async fn app_with_status(client: &kube::Client, ns: &str, name: &str, conditions: Value) {
    let api: Api<Application> = Api::namespaced(client.clone(), ns);
    let app = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": name},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": "repo"}, "path": "deploy"}
    }))
    .unwrap();
    api.create(&PostParams::default(), &app).await.unwrap();
    set_status(&api, name, conditions).await;
}

pub async fn set_status(api: &Api<Application>, name: &str, conditions: Value) {
    let status = json!({"status": {
        "cluster": "https://127.0.0.1:6443",
        "lastAppliedRevision": "main@sha1:0123456789abcdef0123456789abcdef01234567",
        "conditions": conditions,
        "history": [{"revision": "main@sha1:0123456789abcdef0123456789abcdef01234567",
                     "startedAt": "2026-12-01T10:00:00Z", "finishedAt": "2026-12-01T10:00:05Z",
                     "result": "Succeeded", "message": "1 created"}],
        "inventory": [{"group": "", "version": "v1", "kind": "ConfigMap", "namespace": "x", "name": "settings"}]
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

pub fn condition(type_: &str, status: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": "Test", "message": message,
           "lastTransitionTime": "2026-12-01T10:00:00Z"})
}

/// A ServiceAccount `viewer` of `ns` that may read (and patch) Applications and read
/// GitRepositories there, and nothing else.
pub async fn viewer(client: &kube::Client, ns: &str) {
    account(client, ns, "viewer", &["get", "list", "watch", "patch"]).await;
}

/// A ServiceAccount `name` of `ns` with `verbs` on Applications (and read rights on
/// GitRepositories) there, and nothing else.
pub async fn account(client: &kube::Client, ns: &str, name: &str, verbs: &[&str]) {
    let apply = |kind: &str, obj: Value| {
        let (client, kind) = (client.clone(), kind.to_string());
        async move {
            let data: kube::api::DynamicObject = serde_json::from_value(obj).unwrap();
            let ar = match kind.as_str() {
                "ServiceAccount" => {
                    kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::ServiceAccount>(&())
                }
                "Role" => kube::api::ApiResource::erase::<k8s_openapi::api::rbac::v1::Role>(&()),
                _ => kube::api::ApiResource::erase::<k8s_openapi::api::rbac::v1::RoleBinding>(&()),
            };
            let api: Api<kube::api::DynamicObject> =
                Api::namespaced_with(client, data.metadata.namespace.as_deref().unwrap(), &ar);
            api.create(&PostParams::default(), &data).await.unwrap();
        }
    };
    let role = format!("gantry-{name}");
    apply(
        "ServiceAccount",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}}),
    )
    .await;
    apply(
        "Role",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": role, "namespace": ns},
        "rules": [{"apiGroups": ["gantry.dev"], "resources": ["applications"], "verbs": verbs},
                  {"apiGroups": ["gantry.dev"], "resources": ["gitrepositories"],
                   "verbs": ["get", "list", "watch"]}]}),
    )
    .await;
    apply(
        "RoleBinding",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": role, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]}),
    )
    .await;
}

/// `gantry ui` as the viewer; the guard and the URL it prints.
pub fn start_ui(kubeconfig: &std::path::Path, namespaces: &[&str]) -> (ChildGuard, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gantry"));
    cmd.args(["ui", "--port", "0"]);
    for ns in namespaces {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd
        .env("KUBECONFIG", kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    (ChildGuard::new("gantry ui", child), url)
}
