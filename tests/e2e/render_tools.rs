//! Kustomize overlays and Helm charts sync through the real `kubectl kustomize` and `helm`;
//! remote bases and escaping values files are refused before any tool runs.

use gantry::api::Application;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use serde_json::json;

use crate::support::app::{
    condition, create_source_and_app, wait_ready_reason, wait_synced_healthy,
};
use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::git::GitServer;

#[tokio::test]
async fn kustomize_overlay_syncs() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "kustomize").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let head = server.create_repo(
        "app",
        &[
            ("base/kustomization.yaml", "resources:\n- config.yaml\n"),
            ("base/config.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  env: base\n  shared: \"yes\"\n"),
            ("overlays/prod/kustomization.yaml", "resources:\n- ../../base\nnamePrefix: prod-\npatches:\n- path: env.yaml\n"),
            ("overlays/prod/env.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  env: prod\n"),
        ],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "overlays/prod"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "app", &head).await;
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
        .get("prod-settings")
        .await
        .unwrap();
    let data = cm.data.unwrap();
    assert_eq!(data["env"], "prod");
    assert_eq!(data["shared"], "yes");
}

#[tokio::test]
async fn kustomize_remote_base_is_refused() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "kust-remote").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    // The URL is never contacted: the reference check refuses it before kustomize runs.
    let head = server.create_repo(
        "app",
        &[(
            "k/kustomization.yaml",
            "resources:\n- https://github.com/example/config//base?ref=v1\n",
        )],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "k"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let app = wait_ready_reason(&apps, "app", "RenderFailed", &head).await;
    let msg = condition(&app, "Ready").unwrap().message;
    assert!(
        msg.contains("remote reference") && msg.contains("allowRemoteBases"),
        "{msg}"
    );
}

#[tokio::test]
async fn helm_chart_syncs_with_values_files_and_inline_values() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "helm").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let head = server.create_repo(
        "app",
        &[
            ("chart/Chart.yaml", "apiVersion: v2\nname: demo\nversion: 0.1.0\n"),
            ("chart/values.yaml", "message: default\ncolor: blue\n"),
            ("chart/values-prod.yaml", "message: from-file\n"),
            ("chart/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-settings\n  namespace: {{ .Release.Namespace }}\ndata:\n  message: {{ .Values.message | quote }}\n  color: {{ .Values.color | quote }}\n"),
        ],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "chart", "render": {"type": "helm", "helm": {"releaseName": "shop", "valuesFiles": ["values-prod.yaml"], "values": {"color": "green"}}}}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "app", &head).await;
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
        .get("shop-settings")
        .await
        .unwrap();
    let data = cm.data.unwrap();
    assert_eq!(data["message"], "from-file");
    assert_eq!(data["color"], "green");
}

/// A chart that requires a recent Kubernetes (`kubeVersion`) and reads `.Capabilities`
/// renders against the target cluster (helm's own default is an old version that the
/// constraint refuses), and sees the cluster's CRDs among its API versions.
#[tokio::test]
async fn helm_renders_against_the_clusters_version_and_api_versions() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "helm-caps").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let template = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: caps\ndata:\n  \
        version: {{ .Capabilities.KubeVersion.Version | quote }}\n  \
        gantry: {{ .Capabilities.APIVersions.Has \"gantry.dev/v1alpha1/Application\" | quote }}\n  \
        policy: {{ .Capabilities.APIVersions.Has \"policy/v1\" | quote }}\n  \
        missing: {{ .Capabilities.APIVersions.Has \"example.com/v9\" | quote }}\n";
    let head = server.create_repo(
        "app",
        &[
            (
                "chart/Chart.yaml",
                "apiVersion: v2\nname: caps\nversion: 0.1.0\nkubeVersion: \">=1.33.0-0\"\n",
            ),
            ("chart/templates/cm.yaml", template),
        ],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "chart"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "app", &head).await;
    let data = Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
        .get("caps")
        .await
        .unwrap()
        .data
        .unwrap();
    let version = client.apiserver_version().await.unwrap().git_version;
    assert_eq!(data["version"], version);
    assert_eq!(data["gantry"], "true");
    assert_eq!(data["policy"], "true");
    assert_eq!(data["missing"], "false");
}

#[tokio::test]
async fn helm_values_file_outside_the_repository_is_refused() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "helm-escape").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let head = server.create_repo(
        "app",
        &[
            (
                "chart/Chart.yaml",
                "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
            ),
            (
                "chart/templates/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
            ),
        ],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "chart", "render": {"helm": {"valuesFiles": ["../../../../etc/passwd"]}}}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let app = wait_ready_reason(&apps, "app", "RenderFailed", &head).await;
    let msg = condition(&app, "Ready").unwrap().message;
    assert!(
        msg.contains("valuesFiles") && msg.contains("'..' is not allowed"),
        "{msg}"
    );
    assert!(!msg.contains("root:x:0"), "file content leaked: {msg}");
}

/// A render that fails names its cause without the temporary directory, so the status is
/// written once and the failure does not re-trigger itself; retries of the same revision
/// back off; a fixing commit is synced at once.
#[tokio::test]
async fn a_failing_render_has_a_stable_message_and_does_not_retrigger_itself() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "render-loop").await;
    let controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let broken = server.create_repo(
        "app",
        &[
            (
                "app/kustomization.yaml",
                "resources:\n- cm.yaml\n- missing.yaml\n",
            ),
            (
                "app/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n",
            ),
        ],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "app", "interval": "1s"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let app = crate::support::app::wait_ready_reason(&apps, "app", "RenderFailed", &broken).await;
    let message = crate::support::app::condition(&app, "Ready")
        .unwrap()
        .message;
    assert!(message.contains("missing.yaml"), "{message}");
    assert!(
        !message.contains(&std::env::temp_dir().display().to_string()),
        "a temporary path in the message: {message}"
    );
    // Quiet: no status write for several seconds although the interval is 1 s.
    let version = app.metadata.resource_version.clone();
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let later = apps.get("app").await.unwrap();
    assert_eq!(
        later.metadata.resource_version, version,
        "the failure re-triggered itself"
    );
    let renders = controller.log().matches("sync failed").count();
    assert!(renders <= 3, "{renders} failed syncs in ~6 s");
    // The fix is picked up at once, whatever the backoff.
    let ws = crate::support::app::Workspace::clone_from(&server, "app");
    ws.write("app/kustomization.yaml", "resources:\n- cm.yaml\n");
    let fixed = ws.commit_and_push("fix");
    wait_synced_healthy(&apps, "app", &fixed).await;
}

/// An umbrella chart naming sibling charts of the repository (`file://`, nested two deep)
/// renders and applies offline; a dependency from an unreachable chart repository names
/// the URL and the connection error.
#[tokio::test]
async fn an_umbrella_chart_with_file_dependencies_applies_offline() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "helm-umbrella").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let cm = |name: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ .Release.Name }}}}-{name}\ndata:\n  from: {name}\n"
        )
    };
    let head = server.create_repo(
        "app",
        &[
            ("charts/base/Chart.yaml", "apiVersion: v2\nname: base\nversion: 0.3.0\n"),
            ("charts/base/templates/cm.yaml", &cm("base")),
            (
                "charts/common/Chart.yaml",
                "apiVersion: v2\nname: common\nversion: 0.2.0\ndependencies:\n- name: base\n  version: \">=0.1.0\"\n  repository: file://../base\n",
            ),
            ("charts/common/templates/cm.yaml", &cm("common")),
            (
                "apps/shop/Chart.yaml",
                "apiVersion: v2\nname: shop\nversion: 1.0.0\ndependencies:\n- name: common\n  version: \"~0.2.0\"\n  repository: file://../../charts/common\n",
            ),
            ("apps/shop/templates/cm.yaml", &cm("shop")),
            (
                "apps/net/Chart.yaml",
                "apiVersion: v2\nname: net\nversion: 1.0.0\ndependencies:\n- name: redis\n  version: 1.0.0\n  repository: http://127.0.0.1:9/charts\n",
            ),
        ],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "shop",
        &server.file_url("app"),
        json!({"path": "apps/shop"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "shop", &head).await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns.name);
    for part in ["shop", "common", "base"] {
        let c = cms.get(&format!("shop-{part}")).await.unwrap();
        assert_eq!(c.data.unwrap()["from"], part);
    }

    let app: Application = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": "net", "namespace": ns.name},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": "shop"}, "path": "apps/net",
                 "render": {"helm": {"allowNetworkDependencies": true}}}
    }))
    .unwrap();
    apps.create(&Default::default(), &app).await.unwrap();
    let app = wait_ready_reason(&apps, "net", "RenderFailed", &head).await;
    let message = condition(&app, "Ready").unwrap().message;
    assert!(
        message.contains("dependency redis")
            && message.contains("http://127.0.0.1:9/charts")
            && message.to_lowercase().contains("connection refused"),
        "{message}"
    );
}
