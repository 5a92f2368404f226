//! `gantry controller` against the local control plane: every example kind is reconciled
//! and acknowledged (observedGeneration, Ready) within seconds; other namespaces untouched.

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use serde_json::{Value, json};

use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::GitServer;
use crate::support::registry::Registry;
use gantry::api::{GitRepository, ImagePolicy, Receiver};

fn example(file: &str) -> DynamicObject {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(file);
    let value: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    serde_json::from_value(value).unwrap()
}

/// (observedGeneration, Ready status, Ready reason, Ready's observedGeneration)
fn ready_of(obj: &DynamicObject) -> Option<(i64, String, String, i64)> {
    let status = obj.data.get("status")?;
    let observed = status.get("observedGeneration")?.as_i64()?;
    let ready = status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    Some((
        observed,
        ready["status"].as_str()?.to_string(),
        ready["reason"].as_str()?.to_string(),
        ready["observedGeneration"].as_i64()?,
    ))
}

async fn wait_ready(api: &Api<DynamicObject>, name: &str, generation: i64, want: (&str, &str)) {
    let (observed, status, reason, cond_gen) = eventually(
        &format!(
            "{name} to be Ready={} ({}) at generation {generation}",
            want.0, want.1
        ),
        Duration::from_secs(20),
        || async {
            let obj = api.get(name).await.ok()?;
            ready_of(&obj).filter(|r| r.0 == generation && r.2 == want.1)
        },
    )
    .await;
    assert_eq!(observed, generation);
    assert_eq!(status, want.0);
    assert_eq!(reason, want.1);
    assert_eq!(cond_gen, generation);
}

#[tokio::test]
async fn controller_acknowledges_every_kind() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "ctrl").await;
    let mut controller = GantryController::start(&ns.name);
    let git = GitServer::start();
    git.create_repo(
        "web-deploy",
        &[(
            "apps/web/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        )],
    );

    // The GitRepository reconciler is real: point it at the local Git server.
    let repos: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns.name,
        &ApiResource::erase::<GitRepository>(&()),
    );
    let mut repo = example("gitrepository.yaml");
    repo.data["spec"]["url"] = json!(git.file_url("web-deploy"));
    repos.create(&PostParams::default(), &repo).await.unwrap();
    eventually(
        "the GitRepository to be Ready",
        Duration::from_secs(30),
        || async {
            let obj = repos.get("web").await.ok()?;
            let r = ready_of(&obj)?;
            (r.1 == "True").then_some(())
        },
    )
    .await;

    // The ImagePolicy example, pointed at the local registry (nothing leaves 127.0.0.1).
    let registry = Registry::start();
    registry.push_image("team/web", "1.2.0");
    let policies: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns.name,
        &ApiResource::erase::<ImagePolicy>(&()),
    );
    let mut policy = example("imagepolicy.yaml");
    policy.data["spec"]["image"] = json!(format!("{}/team/web", registry.host()));
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    wait_ready(&policies, "web", 1, ("True", "Succeeded")).await;

    // The Receiver example: not ready without its Secret, ready with it.
    let receivers: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns.name,
        &ApiResource::erase::<Receiver>(&()),
    );
    receivers
        .create(&PostParams::default(), &example("receiver.yaml"))
        .await
        .unwrap();
    wait_ready(&receivers, "registry", 1, ("False", "SecretInvalid")).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &ns.name);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "registry-webhook-token"},
                "stringData": {"token": "0123456789abcdef0123"}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    wait_ready(&receivers, "registry", 1, ("True", "Ready")).await;

    // A spec change is acknowledged again, at the new generation.
    policies
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap();
    wait_ready(&policies, "web", 2, ("Unknown", "Suspended")).await;

    // Objects in other namespaces are not touched by a namespace-scoped controller.
    let other = TestNamespace::new(&client, "ctrl-other").await;
    let other_api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &other.name,
        &ApiResource::erase::<Receiver>(&()),
    );
    other_api
        .create(&PostParams::default(), &example("receiver.yaml"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let untouched = other_api.get("registry").await.unwrap();
    assert!(
        untouched.data.get("status").is_none(),
        "controller wrote outside its namespace"
    );

    controller.process.assert_running();
}
