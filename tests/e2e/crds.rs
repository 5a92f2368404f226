//! The CRDs install, every example can be created, and invalid objects are refused by the
//! API server with a message that names the field.

use kube::Resource;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;
use serde_json::{Value, json};

use crate::support::cluster::{TestNamespace, client, install_crds};
use gantry::api::{Application, GitRepository, ImagePolicy, Receiver};

fn dynamic_api<K: Resource<DynamicType = ()>>(
    client: &kube::Client,
    ns: &str,
) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<K>(&()))
}

fn example(file: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(file);
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn create(api: &Api<DynamicObject>, obj: Value) -> Result<DynamicObject, String> {
    let obj: DynamicObject = serde_json::from_value(obj).unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn examples_of_every_kind_are_accepted() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "crd-examples").await;

    for (file, api) in [
        (
            "gitrepository.yaml",
            dynamic_api::<GitRepository>(&client, &ns.name),
        ),
        (
            "imagepolicy.yaml",
            dynamic_api::<ImagePolicy>(&client, &ns.name),
        ),
        (
            "application.yaml",
            dynamic_api::<Application>(&client, &ns.name),
        ),
        ("receiver.yaml", dynamic_api::<Receiver>(&client, &ns.name)),
        (
            "helm-application.yaml",
            dynamic_api::<Application>(&client, &ns.name),
        ),
        (
            "chart-policy.yaml",
            dynamic_api::<ImagePolicy>(&client, &ns.name),
        ),
    ] {
        let created = create(&api, example(file))
            .await
            .unwrap_or_else(|e| panic!("examples/{file} was refused: {e}"));
        assert_eq!(
            created.metadata.namespace.as_deref(),
            Some(ns.name.as_str())
        );
    }

    // The objects of the multi-document examples, with their own names, in this namespace
    // (the CRDs' validation rules run on them).
    for dir in ["sops", "signed-commits", "signed-images"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(dir);
        for entry in std::fs::read_dir(&path).unwrap() {
            let file = entry.unwrap().path();
            let text = std::fs::read_to_string(&file).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let mut obj = <Value as serde::Deserialize>::deserialize(doc).unwrap();
                let api_version = obj["apiVersion"].as_str().unwrap_or_default();
                if !api_version.starts_with("gantry.dev/") {
                    continue;
                }
                obj["metadata"]["namespace"] = Value::String(ns.name.clone());
                let api = match obj["kind"].as_str().unwrap() {
                    "Application" => dynamic_api::<Application>(&client, &ns.name),
                    "GitRepository" => dynamic_api::<GitRepository>(&client, &ns.name),
                    "ImagePolicy" => dynamic_api::<ImagePolicy>(&client, &ns.name),
                    other => panic!("{}: unexpected kind {other}", file.display()),
                };
                let name = obj["metadata"]["name"].as_str().unwrap().to_string();
                obj["metadata"]["name"] = Value::String(format!("{dir}-{name}"));
                create(&api, obj)
                    .await
                    .unwrap_or_else(|e| panic!("{} was refused: {e}", file.display()));
            }
        }
    }

    // Every Notifier of examples/notify/ (each file also holds its Secret).
    let notifiers = dynamic_api::<gantry::api::Notifier>(&client, &ns.name);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/notify");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc).unwrap();
            if v["kind"] == "Notifier" {
                create(&notifiers, v)
                    .await
                    .unwrap_or_else(|e| panic!("{} was refused: {e}", path.display()));
                seen += 1;
            }
        }
    }
    assert!(seen >= 7, "{seen} Notifier examples");
    // A repository on a chat, an environment on a commit status: refused by the schema.
    let notifier = |name: &str, spec: Value| {
        serde_json::json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "Notifier",
            "metadata": {"name": name}, "spec": spec,
        })
    };
    assert_refused(
        &notifiers,
        notifier(
            "chat-with-repository",
            serde_json::json!({"type": "discord", "secretRef": {"name": "s"}, "repository": "o/r"}),
        ),
        &["repository is for forges"],
    )
    .await;
    assert_refused(
        &notifiers,
        notifier(
            "status-with-environment",
            serde_json::json!({"type": "github", "secretRef": {"name": "s"}, "environment": "prod"}),
        ),
        &["environment is for github-deployment"],
    )
    .await;

    // Defaults from the schema are filled in by the API server.
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let app = apps.get("web").await.unwrap();
    assert_eq!(
        app.spec.sync_policy,
        gantry::api::application::SyncPolicy::Automatic
    );
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), &ns.name);
    let repo = repos.get("web").await.unwrap();
    assert_eq!(repo.spec.timeout.0, "60s");
    assert!(!repo.spec.suspend);
}

/// Creates `obj` and expects a 422 whose message contains every `needle`.
async fn assert_refused(api: &Api<DynamicObject>, obj: Value, needles: &[&str]) {
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    let obj: DynamicObject = serde_json::from_value(obj).unwrap();
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => panic!("{name} was accepted but should be refused"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{name}: {status:?}");
            for needle in needles {
                assert!(
                    status.message.contains(needle),
                    "{name}: message {:?} does not mention {needle:?}",
                    status.message
                );
            }
        }
        Err(e) => panic!("{name}: unexpected error {e}"),
    }
}

#[tokio::test]
async fn invalid_objects_are_refused_with_a_clear_message() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "crd-invalid").await;
    let apps = dynamic_api::<Application>(&client, &ns.name);
    let repos = dynamic_api::<GitRepository>(&client, &ns.name);
    let policies = dynamic_api::<ImagePolicy>(&client, &ns.name);
    let receivers = dynamic_api::<Receiver>(&client, &ns.name);

    // A required field is missing.
    let mut app = example("application.yaml");
    app["metadata"]["name"] = json!("no-source");
    app["spec"].as_object_mut().unwrap().remove("sourceRef");
    assert_refused(&apps, app, &["spec.sourceRef", "Required value"]).await;

    let mut repo = example("gitrepository.yaml");
    repo["metadata"]["name"] = json!("no-url");
    repo["spec"].as_object_mut().unwrap().remove("url");
    assert_refused(&repos, repo, &["spec.url", "Required value"]).await;

    // A chart is either in a registry (url) or in a repository (repository + name).
    let mut app = example("helm-application.yaml");
    app["metadata"]["name"] = json!("both-chart-sources");
    app["spec"]["render"]["helm"]["chart"]["url"] = json!("oci://ghcr.io/org/podinfo");
    assert_refused(&apps, app, &["set either url", "or repository"]).await;
    let mut app = example("helm-application.yaml");
    app["metadata"]["name"] = json!("repository-without-name");
    app["spec"]["render"]["helm"]["chart"]
        .as_object_mut()
        .unwrap()
        .remove("name");
    assert_refused(&apps, app, &["name goes with repository"]).await;

    // Enum values that do not exist.
    let mut app = example("application.yaml");
    app["metadata"]["name"] = json!("bad-mode");
    app["spec"]["drift"]["mode"] = json!("ignore");
    assert_refused(
        &apps,
        app,
        &["spec.drift.mode", "Unsupported value", "\"ignore\""],
    )
    .await;

    let mut policy = example("imagepolicy.yaml");
    policy["metadata"]["name"] = json!("bad-digest");
    policy["spec"]["digest"] = json!("sometimes");
    assert_refused(&policies, policy, &["spec.digest", "Unsupported value"]).await;

    // A policy orders the tags of an image or the versions of a chart, not both.
    let mut policy = example("chart-policy.yaml");
    policy["metadata"]["name"] = json!("image-and-chart");
    policy["spec"]["image"] = json!("registry.example.com/team/web");
    assert_refused(&policies, policy, &["set either image or chart"]).await;
    let mut policy = example("chart-policy.yaml");
    policy["metadata"]["name"] = json!("pinned-chart");
    policy["spec"]["digest"] = json!("pin");
    assert_refused(&policies, policy, &["digest pinning is for images"]).await;
    let mut policy = example("chart-policy.yaml");
    policy["metadata"]["name"] = json!("tagged-oci-chart");
    policy["spec"]["chart"] = json!({"url": "oci://registry.example.com/charts/web:1.0.0"});
    assert_refused(&policies, policy, &["without a tag or digest"]).await;

    let mut receiver = example("receiver.yaml");
    receiver["metadata"]["name"] = json!("bad-type");
    receiver["spec"]["type"] = json!("bitbucket");
    assert_refused(&receivers, receiver, &["spec.type", "Unsupported value"]).await;

    // Patterns and CEL rules.
    let mut repo = example("gitrepository.yaml");
    repo["metadata"]["name"] = json!("bad-interval");
    repo["spec"]["interval"] = json!("1 minute");
    assert_refused(&repos, repo, &["spec.interval", "should match"]).await;

    let mut repo = example("gitrepository.yaml");
    repo["metadata"]["name"] = json!("bad-scheme");
    repo["spec"]["url"] = json!("ftp://example.com/repo.git");
    assert_refused(&repos, repo, &["url must start with https://"]).await;

    let mut repo = example("gitrepository.yaml");
    repo["metadata"]["name"] = json!("two-refs");
    repo["spec"]["ref"] = json!({"branch": "main", "tag": "v1"});
    assert_refused(&repos, repo, &["set at most one of branch, tag and semver"]).await;

    let mut app = example("application.yaml");
    app["metadata"]["name"] = json!("escape");
    app["spec"]["path"] = json!("apps/../../etc");
    assert_refused(&apps, app, &["path must be relative"]).await;

    let mut app = example("application.yaml");
    app["metadata"]["name"] = json!("bad-step");
    app["spec"]["rollout"]["steps"] = json!([{"weight": 10, "pause": {}}]);
    assert_refused(&apps, app, &["a step is either a weight or a pause"]).await;

    let mut policy = example("imagepolicy.yaml");
    policy["metadata"]["name"] = json!("two-policies");
    policy["spec"]["policy"] = json!({"semver": {"range": ">=1"}, "numerical": {"order": "asc"}});
    assert_refused(
        &policies,
        policy,
        &["set exactly one of semver, alphabetical and numerical"],
    )
    .await;
}

/// CRDs from another version (here: the Application CRD without this build's schema
/// digest, as `helm upgrade` leaves a chart's crds/) stop the controller at start-up with a
/// message that says which and how to fix it, instead of status writes failing later.
#[tokio::test]
async fn the_controller_refuses_crds_of_another_version() {
    use crate::support::private_cluster::PrivateCluster;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    let cluster = PrivateCluster::start();
    let client = cluster.client().await;
    crate::support::cluster::install_crds_into(&client).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "applications.gantry.dev",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"gantry.dev/schema-digest": "0123456789abcdef"}}}),
        ),
    )
    .await
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args([
            "controller",
            "--receiver-addr=off",
            "--metrics-addr=off",
            "--data-dir",
        ])
        .arg(tempfile::tempdir().unwrap().path())
        .env("KUBECONFIG", cluster.kubeconfig())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the controller did not stop");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("applications.gantry.dev")
            && stderr.contains("not the ones this controller was built with")
            && stderr.contains("gantry crds | kubectl apply --server-side"),
        "{stderr}"
    );
}
