//! The Helm chart lints, and installs with the real `helm` into the local control plane
//! (the kubeVersion check reads the API server's real version).

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;

use crate::support::cluster::{TestNamespace, client, kubeconfig_path};
use crate::support::eventually;
use crate::support::process::{helm, output_with_stdin, tool};

fn chart_dir() -> String {
    format!("{}/charts/gantry", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn chart_lints_with_strict_schema() {
    helm(&["lint", "--strict", &chart_dir()]);
    // values.schema.json refuses unknown keys and bad enum values.
    let out = Command::new(tool("helm"))
        .args(["lint", &chart_dir(), "--set", "logFormat=xml"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "logFormat=xml should be refused by values.schema.json"
    );
}

#[tokio::test]
async fn chart_installs_and_its_deployment_becomes_available() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "chart").await;
    let release = format!("g{}", &ns.name[ns.name.len() - 6..]);
    let installed = helm(&[
        "install",
        &release,
        &chart_dir(),
        "--namespace",
        &ns.name,
        "--set",
        "watchNamespace=somewhere",
    ]);
    // NOTES.txt says what was installed and how to check it.
    assert!(
        installed.contains("Watching namespace somewhere only")
            && installed.contains("gantry crds | kubectl apply --server-side -f -"),
        "{installed}"
    );

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let name = format!("{release}-gantry");
    let d = eventually(
        "the chart's Deployment to be available",
        Duration::from_secs(60),
        || async {
            let d = deployments.get(&name).await.ok()?;
            (d.status.as_ref()?.available_replicas? >= 1).then_some(d)
        },
    )
    .await;
    let pod = d.spec.unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    let fullname = format!("--leader-election-id={release}-gantry");
    assert_eq!(
        container.args.as_ref().unwrap(),
        &[
            "controller",
            "--namespace=somewhere",
            "--receiver-addr=0.0.0.0:9292",
            "--metrics-addr=0.0.0.0:9293",
            "--min-interval=10s",
            "--concurrent=64",
            "--apply-concurrency=32",
            "--max-fetches=64",
            "--max-fetches-per-namespace=16",
            "--kube-api-qps=500",
            "--kube-api-burst=1000",
            "--leader-elect",
            &fullname,
            "--leader-election-lease-duration=15s",
            // Notifiers never send to the Service network (notify.serviceCIDR).
            "--service-cidr=10.96.0.0/12",
        ]
    );
    // Receivers are reachable through a Service on the named container port.
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(client.clone(), &ns.name);
    let svc = services
        .get(&format!("{release}-gantry-receiver"))
        .await
        .unwrap();
    let port = &svc.spec.unwrap().ports.unwrap()[0];
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("receiver".into()))
    );
    assert_eq!(container.ports.as_ref().unwrap()[0].container_port, 9292);
    let sc = container.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));

    // An upgrade of the running release: two replicas (one leader) and a shard.
    helm(&[
        "upgrade",
        &release,
        &chart_dir(),
        "--namespace",
        &ns.name,
        "--reuse-values",
        "--set",
        "replicaCount=2",
        "--set",
        "shards={eu}",
        "--wait",
        "--timeout=90s",
    ]);
    let d = deployments.get(&name).await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(2));
    let eu = eventually(
        "the eu shard's Deployment to be available",
        Duration::from_secs(60),
        || async {
            let d = deployments.get(&format!("{name}-eu")).await.ok()?;
            (d.status.as_ref()?.available_replicas? >= 2).then_some(d)
        },
    )
    .await;
    let args = eu.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(args.contains(&"--shard=eu".to_string()), "{args:?}");
    services
        .get(&format!("{release}-gantry-eu-receiver"))
        .await
        .unwrap();

    // Uninstall removes the release and keeps the CRDs (and with them every resource).
    helm(&["uninstall", &release, "--namespace", &ns.name, "--wait"]);
    assert!(deployments.get_opt(&name).await.unwrap().is_none());
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for crd in [
        "applications.gantry.dev",
        "gitrepositories.gantry.dev",
        "imagepolicies.gantry.dev",
        "receivers.gantry.dev",
    ] {
        assert!(crds.get_opt(crd).await.unwrap().is_some(), "{crd} kept");
    }
}

/// Every value in values.yaml is described by values.schema.json (which refuses unknown
/// keys), so no value is silently ignored.
#[test]
fn the_schema_covers_every_value() {
    let dir = std::path::PathBuf::from(chart_dir());
    let values: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("values.yaml")).unwrap()).unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("values.schema.json")).unwrap())
            .unwrap();
    fn walk(
        value: &serde_json::Value,
        schema: &serde_json::Value,
        path: &str,
        missing: &mut Vec<String>,
    ) {
        let Some(map) = value.as_object() else { return };
        // Free-form objects (resources, nodeSelector, labels, ...) are typed as objects.
        let Some(props) = schema.get("properties").and_then(|p| p.as_object()) else {
            return;
        };
        for (k, v) in map {
            match props.get(k) {
                None => missing.push(format!("{path}{k}")),
                Some(s) => walk(v, s, &format!("{path}{k}."), missing),
            }
        }
    }
    let mut missing = vec![];
    walk(&values, &schema, "", &mut missing);
    assert!(missing.is_empty(), "values without a schema: {missing:?}");
}

#[test]
fn shards_and_the_service_monitor_render() {
    let out = helm(&[
        "template",
        "r",
        &chart_dir(),
        "--kube-version",
        "1.35.0",
        "--set",
        "shards={eu,us}",
        "--set",
        "metrics.serviceMonitor.enabled=true",
    ]);
    let docs: Vec<serde_json::Value> = out
        .split("\n---")
        .filter_map(|d| serde_yaml::from_str(d).ok())
        .filter(|d: &serde_json::Value| d.is_object())
        .collect();
    let deployments: Vec<&serde_json::Value> =
        docs.iter().filter(|d| d["kind"] == "Deployment").collect();
    assert_eq!(deployments.len(), 3);
    let selectors: std::collections::BTreeSet<String> = deployments
        .iter()
        .map(|d| {
            d["spec"]["selector"]["matchLabels"]["gantry.dev/controller-shard"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(selectors, ["default", "eu", "us"].map(String::from).into());
    let us = deployments
        .iter()
        .find(|d| d["metadata"]["name"] == "r-gantry-us")
        .unwrap();
    let args = us["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap();
    assert!(args.contains(&serde_json::json!("--shard=us")));
    assert!(docs.iter().any(|d| d["kind"] == "ServiceMonitor"));
    // A shard named like the default one is refused.
    let out = Command::new(tool("helm"))
        .args(["lint", &chart_dir(), "--set", "shards={default}"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn the_web_view_is_served_only_when_enabled() {
    let render = |extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec!["template", "r", "--kube-version", "1.35.0"];
        let dir = chart_dir();
        args.insert(2, &dir);
        args.extend_from_slice(extra);
        helm(&args)
            .split("\n---")
            .filter_map(|d| serde_yaml::from_str(d).ok())
            .filter(|d: &serde_json::Value| d.is_object())
            .collect()
    };
    let args_of = |docs: &[serde_json::Value]| -> Vec<serde_json::Value> {
        let d = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        d["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .clone()
    };
    let off = render(&[]);
    assert!(
        !args_of(&off)
            .iter()
            .any(|a| a.as_str().unwrap().starts_with("--ui-addr"))
    );
    assert!(!off.iter().any(|d| d["metadata"]["name"] == "r-gantry-ui"));
    let on = render(&["--set", "ui.enabled=true", "--set", "ui.port=8443"]);
    assert!(args_of(&on).contains(&serde_json::json!("--ui-addr=0.0.0.0:8443")));
    let service = on
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "r-gantry-ui")
        .expect("the web view's Service");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "ui");
}

fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    let out = output_with_stdin(
        Command::new(tool("kubectl"))
            .arg("--kubeconfig")
            .arg(kubeconfig_path())
            .args(args),
        stdin.unwrap_or_default().as_bytes(),
    );
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deletes the chart's cluster-scoped RBAC when the test ends, passed or not.
struct ClusterRbac(String);

impl Drop for ClusterRbac {
    fn drop(&mut self) {
        let _ = Command::new(tool("kubectl"))
            .arg("--kubeconfig")
            .arg(kubeconfig_path())
            .args([
                "delete",
                "clusterrole,clusterrolebinding",
                &self.0,
                "--ignore-not-found",
            ])
            .output();
    }
}

/// The chart's own RBAC with `rbac.clusterAdmin=false` is enough for a multi-tenant
/// install: the controller runs with a token of the chart's ServiceAccount, the CRD check,
/// sources, Events and impersonation work, a tenant's Application syncs as its
/// ServiceAccount, and one without a ServiceAccount is refused (`requireServiceAccount`).
#[tokio::test]
async fn the_charts_minimal_rbac_runs_a_multi_tenant_controller() {
    use crate::support::app::{condition, create_source_and_app, wait_synced_healthy};
    use crate::support::controller::GantryController;
    use crate::support::git::GitServer;
    use gantry::api::Application;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::PostParams;
    use serde_json::json;

    let client = client().await;
    crate::support::cluster::install_crds(&client).await;
    let ns = TestNamespace::new(&client, "chart-rbac").await;
    let team = TestNamespace::new(&client, "chart-team").await;
    let release = format!("r{}", &ns.name[ns.name.len() - 6..]);
    let rendered = helm(&[
        "template",
        &release,
        &chart_dir(),
        "--namespace",
        &ns.name,
        "--kube-version",
        "1.35.0",
        "--set",
        "rbac.clusterAdmin=false",
        "--set",
        "tenancy.requireServiceAccount=true",
        "--show-only",
        "templates/rbac.yaml",
        "--show-only",
        "templates/serviceaccount.yaml",
    ]);
    assert!(!rendered.contains("cluster-admin"), "{rendered}");
    let fullname = format!("{release}-gantry");
    let _rbac = ClusterRbac(fullname.clone());
    kubectl(&["apply", "--server-side", "-f", "-"], Some(&rendered));
    // A kubeconfig of the chart's ServiceAccount: the test cluster's server and CA, its token.
    let dir = tempfile::tempdir().unwrap();
    let as_chart = dir.path().join("kubeconfig");
    crate::support::cluster::service_account_kubeconfig(&ns.name, &fullname, &as_chart);

    // The tenant: admin of its namespace only.
    kubectl(
        &["create", "serviceaccount", "deployer", "-n", &team.name],
        None,
    );
    kubectl(
        &[
            "create",
            "rolebinding",
            "deployer-admin",
            "-n",
            &team.name,
            "--clusterrole=admin",
            &format!("--serviceaccount={}:deployer", team.name),
        ],
        None,
    );
    let _controller =
        GantryController::start_with(&team.name, &as_chart, &["--require-service-account"]);
    let server = GitServer::start();
    let commit = server.create_repo(
        "app",
        &[(
            "app/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: tenant-config\ndata:\n  k: v\n",
        )],
    );
    create_source_and_app(
        &client,
        &team.name,
        "app",
        &server.file_url("app"),
        json!({"path": "app", "serviceAccountName": "deployer"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &team.name);
    wait_synced_healthy(&apps, "app", &commit).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &team.name);
    let cm = cms.get("tenant-config").await.unwrap();
    assert!(
        cm.metadata
            .managed_fields
            .unwrap_or_default()
            .iter()
            .any(|m| m.manager.as_deref() == Some("gantry")),
        "applied with Gantry's field manager"
    );
    // Without a ServiceAccount: refused by the locked-down controller.
    let anonymous: Application = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": "anonymous"},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": "app"}, "path": "app"}
    }))
    .unwrap();
    apps.create(&PostParams::default(), &anonymous)
        .await
        .unwrap();
    eventually(
        "ServiceAccountRequired",
        Duration::from_secs(30),
        || async {
            let app = apps.get("anonymous").await.ok()?;
            (condition(&app, "Ready")?.reason == "ServiceAccountRequired").then_some(())
        },
    )
    .await;
}
