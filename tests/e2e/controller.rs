//! `gantry controller` against the local control plane: every kind gets observedGeneration
//! and Ready=Unknown/NotImplemented within seconds.

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use serde_json::{Value, json};

use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::GitServer;
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

async fn wait_not_implemented(api: &Api<DynamicObject>, name: &str, generation: i64) {
    let (observed, status, reason, cond_gen) = eventually(
        &format!("{name} to be acknowledged at generation {generation}"),
        Duration::from_secs(20),
        || async {
            let obj = api.get(name).await.ok()?;
            ready_of(&obj).filter(|r| r.0 == generation)
        },
    )
    .await;
    assert_eq!(observed, generation);
    assert_eq!(status, "Unknown");
    assert_eq!(reason, "NotImplemented");
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

    // The other kinds acknowledge with NotImplemented until their pipelines land.
    let kinds = [
        ("imagepolicy.yaml", ApiResource::erase::<ImagePolicy>(&())),
        ("receiver.yaml", ApiResource::erase::<Receiver>(&())),
    ];
    let mut apis = vec![];
    for (file, ar) in &kinds {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, ar);
        let obj = example(file);
        let name = obj.metadata.name.clone().unwrap();
        api.create(&PostParams::default(), &obj).await.unwrap();
        apis.push((api, name));
    }
    for (api, name) in &apis {
        wait_not_implemented(api, name, 1).await;
    }

    // A spec change is acknowledged again, at the new generation.
    let policies = &apis[0].0;
    policies
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap();
    wait_not_implemented(policies, "web", 2).await;

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
