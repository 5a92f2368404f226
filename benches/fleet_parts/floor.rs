//! The API server's floor for the fleet's objects (`GANTRY_FLEET_FLOOR=1`): the same
//! objects in as many namespaces, created by a plain client (one POST each, no dry-run, no
//! status, no watch), as many namespaces at once as Gantry reconciles Applications (its
//! `--concurrent`, 64) and each namespace's objects at once. What Gantry adds over it is
//! what its syncs cost beyond writing the objects.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::ApiResource;
use serde_json::json;

/// Applications Gantry reconciles at once by default (`--concurrent`).
const CONCURRENT: usize = 64;

fn resource(kind: &str) -> ApiResource {
    match kind {
        "Deployment" => ApiResource::erase::<Deployment>(&()),
        "Service" => ApiResource::erase::<Service>(&()),
        "ConfigMap" => ApiResource::erase::<ConfigMap>(&()),
        "ServiceAccount" => ApiResource::erase::<ServiceAccount>(&()),
        other => panic!("the floor does not create {other}"),
    }
}

/// Seconds to create `objects(i)` (YAML documents) in each of `n` new namespaces.
pub async fn floor_s(
    client: &kube::Client,
    n: usize,
    objects: impl Fn(usize) -> String,
    cleanup_wait: Duration,
) -> f64 {
    let prefix = format!("flfloor-{}", std::process::id());
    let ns_name = |i: usize| format!("{prefix}-{i:05}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    futures::stream::iter(0..n)
        .map(|i| {
            let namespaces = namespaces.clone();
            let ns: Namespace =
                serde_json::from_value(json!({"metadata": {"name": ns_name(i)}})).unwrap();
            async move {
                namespaces
                    .create(&PostParams::default(), &ns)
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let sets: Vec<Vec<DynamicObject>> = (0..n)
        .map(|i| {
            serde_yaml::Deserializer::from_str(&objects(i))
                .map(|doc| {
                    let value = serde_json::to_value(
                        <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap(),
                    )
                    .unwrap();
                    serde_json::from_value(value).unwrap()
                })
                .collect()
        })
        .collect();
    let start = Instant::now();
    futures::stream::iter(sets.into_iter().enumerate())
        .map(|(i, set)| {
            let ns = ns_name(i);
            async move {
                futures::future::join_all(set.into_iter().map(|o| {
                    let kind = o.types.as_ref().unwrap().kind.clone();
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(client.clone(), &ns, &resource(&kind));
                    async move { api.create(&PostParams::default(), &o).await.unwrap() }
                }))
                .await
            }
        })
        .buffer_unordered(CONCURRENT)
        .collect::<Vec<_>>()
        .await;
    let floor = start.elapsed().as_secs_f64();
    eprintln!(
        "floor: {} objects in {n} namespaces created in {floor:.1}s",
        4 * n
    );

    futures::stream::iter(0..n)
        .map(|i| {
            let namespaces = namespaces.clone();
            let name = ns_name(i);
            async move {
                let _ = namespaces.delete(&name, &DeleteParams::default()).await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    wait_namespaces_gone(client, &prefix, cleanup_wait).await;
    floor
}

/// Waits until no namespace named `prefix…` is left (the namespace controller's deletions
/// would run into the next measurement), at most `wait`.
pub async fn wait_namespaces_gone(client: &kube::Client, prefix: &str, wait: Duration) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let gone = Instant::now();
    while gone.elapsed() < wait {
        let left = namespaces
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|ns| {
                        ns.metadata
                            .name
                            .as_deref()
                            .is_some_and(|n| n.starts_with(prefix))
                    })
                    .count()
            })
            .unwrap_or(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
