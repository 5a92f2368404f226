//! The Helm chart lints, and installs with the real `helm` into the local control plane
//! (the kubeVersion check reads the API server's real version).

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;

use crate::support::cluster::{TestNamespace, client, kubeconfig_path};
use crate::support::eventually;
use crate::support::process::tool;

fn helm(args: &[&str]) -> String {
    let out = Command::new(tool("helm"))
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("gantry-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("gantry-helm-config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("gantry-helm-data"),
        )
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

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
    helm(&[
        "install",
        &release,
        &chart_dir(),
        "--namespace",
        &ns.name,
        "--set",
        "watchNamespace=somewhere",
    ]);

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
    assert_eq!(
        container.args.as_ref().unwrap(),
        &[
            "controller",
            "--namespace=somewhere",
            "--receiver-addr=0.0.0.0:9292",
            "--metrics-addr=0.0.0.0:9293",
            "--min-interval=10s"
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

    helm(&["uninstall", &release, "--namespace", &ns.name, "--wait"]);
}
