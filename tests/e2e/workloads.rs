//! The fake nodes behave like real ones for Deployments: good images become Available,
//! images containing `bad` crash-loop and the real controller-manager reports
//! ProgressDeadlineExceeded. Canary tests build on both.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use crate::support::cluster::{TestNamespace, client};
use crate::support::eventually;

fn deployment(name: &str, image: &str, replicas: i32, deadline: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": deadline,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "app", "image": image }] }
            }
        }
    }))
    .unwrap()
}

fn condition(d: &Deployment, type_: &str) -> Option<(String, Option<String>)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test]
async fn good_deployment_becomes_available_on_kwok_nodes() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "wl-good").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", "registry.example.com/web:1.0.0", 3, 60),
        )
        .await
        .unwrap();

    eventually("3 available replicas", Duration::from_secs(60), || async {
        let d = deployments.get("web").await.ok()?;
        let available = d.status.as_ref()?.available_replicas.unwrap_or(0);
        (available == 3 && condition(&d, "Available").map(|c| c.0) == Some("True".into()))
            .then_some(())
    })
    .await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 3);
    for pod in list.items {
        let node = pod
            .spec
            .as_ref()
            .unwrap()
            .node_name
            .clone()
            .unwrap_or_default();
        assert!(node.starts_with("kwok-node-"), "pod scheduled to {node:?}");
        let status = pod.status.unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
    }
}

#[tokio::test]
async fn bad_image_crash_loops_and_exceeds_the_progress_deadline() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "wl-bad").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", "registry.example.com/web:bad-1", 2, 10),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);

    let restarts = |pods: Api<Pod>| async move {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        let pod = list.items.into_iter().next()?;
        let name = pod.metadata.name.clone()?;
        let status = pod.status?;
        let cs = status.container_statuses?.into_iter().next()?;
        let waiting = cs.state?.waiting?.reason?;
        Some((name, cs.restart_count, waiting, cs.ready))
    };
    let (pod, first, reason, ready) =
        eventually("a crash-looping pod", Duration::from_secs(60), || {
            restarts(pods.clone())
        })
        .await;
    assert_eq!(reason, "CrashLoopBackOff");
    assert!(!ready);

    // The restart count keeps rising on the same pod, and it never becomes Ready.
    eventually("the restart count to rise", Duration::from_secs(30), || {
        let pods = pods.clone();
        let pod = pod.clone();
        async move {
            let p = pods.get(&pod).await.ok()?;
            let cs = p.status?.container_statuses?.into_iter().next()?;
            assert!(!cs.ready, "a bad pod became ready");
            (cs.restart_count >= first + 2).then_some(())
        }
    })
    .await;

    let (status, reason) = eventually(
        "ProgressDeadlineExceeded",
        Duration::from_secs(90),
        || async {
            let d = deployments.get("web").await.ok()?;
            let c = condition(&d, "Progressing")?;
            (c.1.as_deref() == Some("ProgressDeadlineExceeded")).then_some(c)
        },
    )
    .await;
    assert_eq!(status, "False");
    assert_eq!(reason.as_deref(), Some("ProgressDeadlineExceeded"));
    let d = deployments.get("web").await.unwrap();
    assert_eq!(d.status.unwrap().available_replicas.unwrap_or(0), 0);
}
