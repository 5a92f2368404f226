//! Connection to the local control plane and per-test namespaces.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::OnceCell;

use super::{eventually, process, random_suffix};

/// The admin kubeconfig of the local control plane.
pub fn kubeconfig_path() -> PathBuf {
    let path = std::env::var_os("GANTRY_TEST_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/testcluster/kubeconfig")
        });
    if !path.exists() {
        panic!(
            "the local control plane is not running ({} is missing): start it with \
             `make cluster-up`, or run every test with `make test`",
            path.display()
        );
    }
    path
}

/// A client for the local control plane; panics with the command to start it when absent.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).expect("readable kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("valid kubeconfig");
    let client = Client::try_from(config).expect("client");
    if let Err(e) = client.apiserver_version().await {
        panic!(
            "the local control plane at {} does not answer ({e}): start it with `make cluster-up`",
            path.display()
        );
    }
    client
}

/// A namespace with a random suffix, deleted when dropped (also when the test panics).
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let name = format!("{prefix}-{}", random_suffix());
        let api: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "gantry.dev/test": "true" } }
        }))
        .unwrap();
        api.create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        // Pods need the namespace's default ServiceAccount, made by the controller-manager.
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        eventually(
            "the default ServiceAccount",
            Duration::from_secs(30),
            || {
                let sa = sa.clone();
                async move { sa.get_opt("default").await.ok().flatten() }
            },
        )
        .await;
        Self { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Synchronous on purpose: Drop cannot await, and this also runs while panicking.
        let _ = std::process::Command::new(process::tool("kubectl"))
            .arg("--kubeconfig")
            .arg(kubeconfig_path())
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

static CRDS: OnceCell<()> = OnceCell::const_new();

/// Installs (server-side apply) the CRDs generated from the Rust types, once per test
/// process, and waits until each is Established.
pub async fn install_crds(client: &Client) {
    CRDS.get_or_init(|| install_crds_into(client)).await;
}

/// Installs the CRDs into the cluster of `client` (a private control plane) and waits.
pub async fn install_crds_into(client: &Client) {
    {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in gantry::api::crds() {
            let name = crd.metadata.name.clone().unwrap();
            api.patch(
                &name,
                &PatchParams::apply("gantry-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
        }
        for crd in gantry::api::crds() {
            let name = crd.metadata.name.clone().unwrap();
            wait_established(&api, &name).await;
        }
    }
}

pub async fn wait_established(api: &Api<CustomResourceDefinition>, name: &str) {
    eventually(
        &format!("CRD {name} Established"),
        Duration::from_secs(30),
        || async {
            let crd = api.get(name).await.ok()?;
            let established = crd
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        },
    )
    .await
}

/// Writes to `path` a kubeconfig for ServiceAccount `ns/name` of the test cluster: its
/// server and CA, and a token from the TokenRequest API (`kubectl create token`).
pub fn service_account_kubeconfig(ns: &str, name: &str, path: &std::path::Path) {
    let token = service_account_token(ns, name);
    let admin = std::fs::read_to_string(kubeconfig_path()).unwrap();
    let field = |key: &str| {
        admin
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
            .unwrap()
            .to_string()
    };
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    \
             certificate-authority-data: {}\nusers:\n- name: sa\n  user:\n    token: {token}\n\
             contexts:\n- name: x\n  context: {{cluster: c, user: sa}}\ncurrent-context: x\n",
            field("server"),
            field("certificate-authority-data"),
        ),
    )
    .unwrap();
}

/// A token of the ServiceAccount `ns/name` from the TokenRequest API (valid 2 h).
pub fn service_account_token(ns: &str, name: &str) -> String {
    let out = std::process::Command::new(process::tool("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(["create", "token", name, "-n", ns, "--duration=2h"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl create token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The test cluster's audit events (the writes of the `gantry-replica-*` users), parsed.
pub fn audit_events() -> Vec<serde_json::Value> {
    let path = kubeconfig_path().parent().unwrap().join("audit/audit.log");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (a cluster started before the audit log existed: make cluster-down cluster-up)",
            path.display()
        )
    });
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Whether the controller whose metrics listen on `port` holds its Lease (`None`: no
/// answer). The sample line, not the HELP text, which also begins `gantry_leader 1`.
pub async fn is_leader(metrics_port: u16) -> Option<bool> {
    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
    let line = text.lines().find(|l| l.starts_with("gantry_leader "))?;
    Some(line.ends_with(" 1"))
}

/// A ServiceAccount in `ns`, admin of `ns` only (the built-in `admin` ClusterRole bound by
/// a RoleBinding).
pub async fn namespace_admin(client: &kube::Client, ns: &str, name: &str) {
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), ns);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap(),
    )
    .await
    .unwrap();
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(client.clone(), ns);
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("{name}-admin")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]
            }))
            .unwrap(),
        )
        .await
        .unwrap();
}
