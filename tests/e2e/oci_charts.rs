//! Helm charts from an OCI registry (issue 14): a chart pushed with the real `helm push` to
//! the test registry behind basic auth, rendered with values files from Git; a new chart
//! version is picked up from the spec; wrong credentials fail with the reference named and
//! nothing applied; a version range picks the highest tag in it.

use gantry::api::Application;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::image_policy::docker_secret;
use crate::support::app::{condition, create_source_and_app, wait_ready_reason};
use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::GitServer;
use crate::support::process::tool;
use crate::support::registry::Registry;

/// Packages a chart `web` of `version` and pushes it with `helm push` (credentials from a
/// registry config file, as `helm registry login` writes it).
pub fn push_chart(registry: &Registry, version: &str) {
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("web");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        format!("apiVersion: v2\nname: web\nversion: {version}\n"),
    )
    .unwrap();
    std::fs::write(chart.join("values.yaml"), "color: red\nsize: small\n").unwrap();
    std::fs::write(
        chart.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-settings\ndata:\n  color: {{ .Values.color | quote }}\n  size: {{ .Values.size | quote }}\n  chart: {{ .Chart.Version | quote }}\n",
    )
    .unwrap();
    let config = dir.path().join("registry.json");
    std::fs::write(&config, registry.docker_config_json()).unwrap();
    let helm = |args: &[&str]| {
        let out = std::process::Command::new(tool("helm"))
            .args(args)
            .env("HELM_REGISTRY_CONFIG", &config)
            .env("HELM_CACHE_HOME", dir.path().join("cache"))
            .env("HELM_CONFIG_HOME", dir.path().join("config"))
            .env("HELM_DATA_HOME", dir.path().join("data"))
            .output()
            .expect("run helm");
        assert!(
            out.status.success(),
            "helm {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let out = dir.path().join("out");
    helm(&[
        "package",
        chart.to_str().unwrap(),
        "-d",
        out.to_str().unwrap(),
    ]);
    helm(&[
        "push",
        out.join(format!("web-{version}.tgz")).to_str().unwrap(),
        &format!("oci://{}/charts", registry.host()),
        "--plain-http",
    ]);
}

#[tokio::test]
async fn a_chart_from_an_oci_registry_renders_with_values_from_git() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "oci-chart").await;
    let _controller = GantryController::start(&ns.name);
    let registry = Registry::start_with_basic_auth("ci", "chartpass");
    push_chart(&registry, "0.1.0");
    docker_secret(&client, &ns.name, &registry.docker_config_json()).await;
    let server = GitServer::start();
    let head = server.create_repo("app", &[("values/prod.yaml", "color: blue\n")]);
    let url = format!("oci://{}/charts/web", registry.host());
    create_source_and_app(
        &client,
        &ns.name,
        "shop",
        &server.file_url("app"),
        json!({"path": "values", "render": {"helm": {
            "valuesFiles": ["prod.yaml"],
            "values": {"size": "large"},
            "chart": {"url": url, "version": "0.1.0", "secretRef": {"name": "regcred"}}
        }}}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let data = eventually(
        "the chart's ConfigMap",
        std::time::Duration::from_secs(90),
        || async {
            cms.get_opt("shop-settings")
                .await
                .ok()
                .flatten()
                .and_then(|c| c.data)
        },
    )
    .await;
    assert_eq!(data["color"], "blue", "values file from Git");
    assert_eq!(data["size"], "large", "inline values");
    assert_eq!(data["chart"], "0.1.0");

    // A new chart version, named in the spec, is rendered and applied.
    push_chart(&registry, "0.2.0");
    apps.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"render": {"helm": {"chart": {"version": "0.2.0"}}}}})),
    )
    .await
    .unwrap();
    eventually(
        "chart 0.2.0 applied",
        std::time::Duration::from_secs(60),
        || async {
            cms.get("shop-settings")
                .await
                .ok()
                .and_then(|c| c.data)
                .filter(|d| d["chart"] == "0.2.0")
        },
    )
    .await;

    // Without credentials the registry refuses: the reference is named, nothing applied.
    create_source_and_app(
        &client,
        &ns.name,
        "anon",
        &server.file_url("app"),
        json!({"path": "values", "render": {"helm": {
            "chart": {"url": url, "version": "0.1.0"}
        }}}),
    )
    .await;
    let app = wait_ready_reason(&apps, "anon", "ChartFailed", &head).await;
    let message = condition(&app, "Ready").unwrap().message;
    assert!(
        message.contains(&format!("{url}:0.1.0")) && message.contains("credentials"),
        "{message}"
    );
    assert!(!message.contains("chartpass"), "{message}");
    assert!(cms.get_opt("anon-settings").await.unwrap().is_none());

    // A version range picks the highest tag inside it (with credentials).
    apps.patch(
        "anon",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"render": {"helm": {"chart": {
            "version": ">=0.1.0 <1", "secretRef": {"name": "regcred"}}}}}})),
    )
    .await
    .unwrap();
    let data = eventually(
        "the range resolved to 0.2.0",
        std::time::Duration::from_secs(60),
        || async {
            cms.get_opt("anon-settings")
                .await
                .ok()
                .flatten()
                .and_then(|c| c.data)
        },
    )
    .await;
    assert_eq!(data["chart"], "0.2.0");
    let chart = eventually(
        "status.chart",
        std::time::Duration::from_secs(30),
        || async { apps.get("anon").await.ok()?.status?.chart },
    )
    .await;
    assert_eq!(chart.version, "0.2.0");
    assert!(chart.digest.starts_with("sha256:"), "{chart:?}");

    // An ImagePolicy on the chart orders its versions (Helm's `_` in a tag is read as `+`).
    push_chart(&registry, "0.3.0+build.7");
    let policies: Api<gantry::api::ImagePolicy> = Api::namespaced(client.clone(), &ns.name);
    let policy = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "ImagePolicy",
        "metadata": {"name": "web-chart"},
        "spec": {"chart": {"url": url}, "secretRef": {"name": "regcred"},
                 "policy": {"semver": {"range": ">=0.1.0 <1"}}}
    }))
    .unwrap();
    policies
        .create(&kube::api::PostParams::default(), &policy)
        .await
        .unwrap();
    let expected = format!("{url}:0.3.0+build.7");
    eventually(
        "the chart policy selects 0.3.0+build.7",
        std::time::Duration::from_secs(30),
        || async {
            let s = policies.get("web-chart").await.ok()?.status?;
            (s.latest_image.as_deref() == Some(expected.as_str())).then_some(())
        },
    )
    .await;
}
