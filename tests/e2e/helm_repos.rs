//! Charts from a Helm chart repository (HTTPS with basic auth and its own CA, charts from
//! the real `helm package` and `helm repo index`): a version range deploys the highest
//! version in it and follows a newly published one without a Git change; a tampered
//! archive is refused with nothing applied; an endless `index.yaml` is cut off; wrong
//! credentials are named without the password; a repository at the cloud metadata address
//! is refused.

use std::collections::BTreeMap;
use std::time::Duration;

use gantry::api::Application;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::app::{condition, create_source_and_app, wait_ready_reason};
use crate::support::chart_repo::{ChartRepo, PASSWORD, USER};
use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::GitServer;

async fn repo_secret(client: &kube::Client, ns: &str, name: &str, password: &str, ca: &str) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([
            ("username".to_string(), USER.to_string()),
            ("password".to_string(), password.to_string()),
            ("ca.crt".to_string(), ca.to_string()),
        ])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

async fn chart_version(cms: &Api<ConfigMap>, name: &str) -> Option<String> {
    cms.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|c| c.data)
        .map(|d| d["chart"].clone())
}

#[tokio::test]
async fn a_range_deploys_the_highest_version_and_follows_new_ones() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "helm-repo").await;
    let _controller = GantryController::start(&ns.name);
    let repo = ChartRepo::start();
    for v in ["1.0.0", "1.1.0", "2.0.0"] {
        repo.publish("web", v);
    }
    repo_secret(&client, &ns.name, "charts", PASSWORD, &repo.ca_pem).await;
    let server = GitServer::start();
    let head = server.create_repo("app", &[("values/README.md", "values for web\n")]);
    create_source_and_app(
        &client,
        &ns.name,
        "web",
        &server.file_url("app"),
        json!({"path": "values", "interval": "2s", "render": {"helm": {"chart": {
            "repository": repo.url(), "name": "web", "version": ">=1.0.0 <2",
            "secretRef": {"name": "charts"}}}}}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    eventually("1.1.0 deployed", Duration::from_secs(90), || async {
        (chart_version(&cms, "web-chart").await? == "1.1.0").then_some(())
    })
    .await;
    let app = eventually("status.chart", Duration::from_secs(30), || async {
        let app = apps.get("web").await.ok()?;
        app.status.as_ref()?.chart.as_ref()?;
        Some(app)
    })
    .await;
    let chart = app.status.as_ref().unwrap().chart.clone().unwrap();
    assert_eq!(chart.version, "1.1.0");
    assert!(chart.digest.starts_with("sha256:"), "{chart:?}");
    // Later checks of the range revalidate the index by its ETag (304, no body).
    eventually("an index revalidated", Duration::from_secs(30), || async {
        repo.index_requests()
            .iter()
            .any(|l| l == "304 /index.yaml")
            .then_some(())
    })
    .await;

    // A version published inside the range is deployed without a Git change.
    repo.publish("web", "1.2.0");
    eventually("1.2.0 deployed", Duration::from_secs(60), || async {
        (chart_version(&cms, "web-chart").await? == "1.2.0").then_some(())
    })
    .await;
    let app = eventually("history names 1.2.0", Duration::from_secs(30), || async {
        let app = apps.get("web").await.ok()?;
        let first = app.status.as_ref()?.history.first()?.clone();
        (first.chart_version.as_deref() == Some("1.2.0")).then_some(app)
    })
    .await;
    let message = app.status.unwrap().history[0].message.clone().unwrap();
    assert!(message.contains("1.1.0 → 1.2.0"), "{message}");
    assert!(head.len() >= 7);

    // A tampered archive of a newer version: refused, nothing of it applied.
    repo.publish("web", "1.3.0");
    repo.tamper("web", "1.3.0");
    let app = eventually("the digest mismatch", Duration::from_secs(60), || async {
        let app = apps.get("web").await.ok()?;
        let c = condition(&app, "Ready")?;
        (c.reason == "ChartFailed").then_some(app)
    })
    .await;
    let message = condition(&app, "Ready").unwrap().message;
    assert!(
        message.contains("1.3.0")
            && message.contains("digest")
            && message.contains("nothing applied"),
        "{message}"
    );
    assert_eq!(chart_version(&cms, "web-chart").await.unwrap(), "1.2.0");
}

#[tokio::test]
async fn an_endless_index_and_wrong_credentials_fail_clearly() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "helm-repo-bad").await;
    let _controller = GantryController::start(&ns.name);
    let repo = ChartRepo::start();
    repo.publish("web", "1.0.0");
    repo_secret(&client, &ns.name, "charts", PASSWORD, &repo.ca_pem).await;
    repo_secret(&client, &ns.name, "wrong", "not-the-password", &repo.ca_pem).await;
    let server = GitServer::start();
    let head = server.create_repo("app", &[("values/README.md", "values\n")]);
    create_source_and_app(
        &client,
        &ns.name,
        "endless",
        &server.file_url("app"),
        json!({"path": "values", "render": {"helm": {"chart": {
            "repository": format!("{}/endless", repo.url()), "name": "web", "version": "1.0.0",
            "secretRef": {"name": "charts"}}}}}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let app = wait_ready_reason(&apps, "endless", "ChartFailed", &head).await;
    let message = condition(&app, "Ready").unwrap().message;
    assert!(message.contains("larger than"), "{message}");

    let app: Application = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": "denied", "namespace": ns.name},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": "endless"}, "path": "values",
                 "render": {"helm": {"chart": {"repository": repo.url(), "name": "web",
                 "version": "1.0.0", "secretRef": {"name": "wrong"}}}}}
    }))
    .unwrap();
    apps.create(&PostParams::default(), &app).await.unwrap();
    let app = wait_ready_reason(&apps, "denied", "ChartFailed", &head).await;
    let message = condition(&app, "Ready").unwrap().message;
    assert!(message.contains("401"), "{message}");
    assert!(!message.contains("not-the-password"), "{message}");

    // A repository at the cloud metadata address is refused before any request.
    let app: Application = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": "metadata", "namespace": ns.name},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": "endless"}, "path": "values",
                 "render": {"helm": {"chart": {"repository": "http://169.254.169.254/latest",
                 "name": "web", "version": "1.0.0", "insecure": true}}}}
    }))
    .unwrap();
    apps.create(&PostParams::default(), &app).await.unwrap();
    let app = wait_ready_reason(&apps, "metadata", "ChartFailed", &head).await;
    let message = condition(&app, "Ready").unwrap().message;
    assert!(message.contains("cloud metadata"), "{message}");

    // Fixing the Secret reference deploys it.
    apps.patch(
        "denied",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"render": {"helm": {"chart": {"secretRef": {"name": "charts"}}}}}}),
        ),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    eventually(
        "deployed with the right Secret",
        Duration::from_secs(60),
        || async { (chart_version(&cms, "denied-chart").await? == "1.0.0").then_some(()) },
    )
    .await;
}

/// A chart in Git whose dependency comes from a chart repository: Gantry fetches it (with
/// the credentials of `repositoryCredentials`, the highest version of the range, the
/// index's digest verified), and `helm` renders offline; a tampered archive stops the sync.
#[tokio::test]
async fn a_dependency_from_a_repository_is_fetched_and_verified_by_gantry() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "helm-repo-dep").await;
    let _controller = GantryController::start(&ns.name);
    let repo = ChartRepo::start();
    for v in ["1.0.0", "1.1.0"] {
        repo.publish("web", v);
    }
    repo_secret(&client, &ns.name, "charts", PASSWORD, &repo.ca_pem).await;
    let server = GitServer::start();
    let chart = format!(
        "apiVersion: v2\nname: shop\nversion: 0.1.0\ndependencies:\n- name: web\n  version: \">=1.0.0 <2\"\n  repository: {}\n",
        repo.url()
    );
    let head = server.create_repo(
        "app",
        &[
            ("shop/Chart.yaml", chart.as_str()),
            (
                "shop/templates/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-umbrella\ndata:\n  k: v\n",
            ),
        ],
    );
    let spec = json!({"path": "shop", "render": {"helm": {
        "allowNetworkDependencies": true,
        "repositoryCredentials": [{"url": repo.url(), "secretRef": {"name": "charts"}}]}}});
    create_source_and_app(&client, &ns.name, "shop", &server.file_url("app"), spec).await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    crate::support::app::wait_synced_healthy(&apps, "shop", &head).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert_eq!(chart_version(&cms, "shop-chart").await.unwrap(), "1.1.0");

    // A newer version in range whose archive was tampered with: nothing of it applied.
    repo.publish("web", "1.2.0");
    repo.tamper("web", "1.2.0");
    let ws = crate::support::app::Workspace::clone_from(&server, "app");
    ws.write("shop/values.yaml", "touched: true\n");
    let next = ws.commit_and_push("a commit that renders again");
    let app = wait_ready_reason(&apps, "shop", "RenderFailed", &next).await;
    let message = condition(&app, "Ready").unwrap().message;
    assert!(
        message.contains("dependency web") && message.contains("digest"),
        "{message}"
    );
    assert_eq!(chart_version(&cms, "shop-chart").await.unwrap(), "1.1.0");
}
