//! An Application's objects as they run, read with the viewer's client when its page is
//! asked for: each inventory object with its health and sync wave, a Deployment's
//! ReplicaSets and their Pods beneath it, and the hooks of its syncs still in the cluster.
//! What the viewer may not read shows as such; nothing is read with the controller's
//! rights.

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::api::Application;
use crate::api::application::InventoryEntry;
use crate::health::{self, Health};

/// Objects read for one page at most; a larger inventory is listed without live health.
const MAX_READ: usize = 100;
/// Pods shown under one ReplicaSet.
const MAX_PODS: usize = 20;

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    /// `None`: not read (too many objects, another cluster).
    pub health: Option<Health>,
    pub message: String,
    /// Its sync wave (`argocd.argoproj.io/sync-wave`), when it declares one.
    pub wave: Option<i64>,
    /// A hook's phase (`helm.sh/hook` or `argocd.argoproj.io/hook`).
    pub hook: Option<String>,
    pub children: Vec<Node>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tree {
    pub objects: Vec<Node>,
    pub hooks: Vec<Node>,
    /// Why health is not shown, when it is not.
    pub note: Option<String>,
}

/// The live tree of `app`'s inventory.
pub async fn tree(client: &Client, app: &Application) -> Tree {
    let inventory = app
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    let unread = |note: String| Tree {
        objects: inventory.iter().map(unread_node).collect(),
        hooks: vec![],
        note: Some(note),
    };
    if app.spec.kube_config.is_some() {
        return unread("Its objects are in another cluster (spec.kubeConfig); their health is in its conditions.".into());
    }
    if inventory.len() > MAX_READ {
        return unread(format!(
            "{} objects: more than {MAX_READ}, listed without their live health.",
            inventory.len()
        ));
    }
    let objects = futures::stream::iter(inventory.iter().cloned())
        .map(|e| async move { node(client, &e).await })
        .buffered(8)
        .collect()
        .await;
    Tree {
        objects,
        hooks: hooks(client, app, &inventory).await,
        note: None,
    }
}

fn unread_node(e: &InventoryEntry) -> Node {
    Node {
        kind: e.kind.clone(),
        namespace: e.namespace.clone(),
        name: e.name.clone(),
        health: None,
        message: String::new(),
        wave: None,
        hook: None,
        children: vec![],
    }
}

fn api(client: &Client, e: &InventoryEntry) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(&e.group, &e.version, &e.kind));
    match &e.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

async fn node(client: &Client, e: &InventoryEntry) -> Node {
    let mut n = unread_node(e);
    match api(client, e).get_opt(&e.name).await {
        Ok(Some(o)) => {
            let value = serde_json::to_value(&o).unwrap_or_default();
            let verdict = health::assess(&e.group, &e.kind, &value);
            n.health = Some(verdict.health);
            n.message = verdict.message;
            n.wave = wave(&value);
            if e.group == "apps" && e.kind == "Deployment" {
                n.children = replica_sets(client, &o).await;
            }
        }
        Ok(None) => {
            n.health = Some(Health::Degraded);
            n.message = "missing from the cluster".into();
        }
        Err(e) => {
            n.health = Some(Health::Unknown);
            n.message = unreadable(&e);
        }
    }
    n
}

fn unreadable(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => "you may not read it".into(),
        kube::Error::Api(s) => format!("cannot read it: {}", s.reason),
        _ => "cannot read it: the API server cannot be reached".into(),
    }
}

fn wave(o: &Value) -> Option<i64> {
    o["metadata"]["annotations"][crate::apply::stage::SYNC_WAVE]
        .as_str()
        .and_then(|w| w.trim().parse().ok())
}

/// `matchLabels` of a workload's selector, as a label selector.
fn selector_of(o: &Value) -> Option<String> {
    let labels = o["spec"]["selector"]["matchLabels"].as_object()?;
    let parts: Vec<String> = labels
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
        .collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

fn owned_by(o: &DynamicObject, uid: &str) -> bool {
    o.owner_references().iter().any(|r| r.uid == uid)
}

/// The Deployment's ReplicaSets that run Pods (and the newest one), newest first, each with
/// its Pods.
async fn replica_sets(client: &Client, deployment: &DynamicObject) -> Vec<Node> {
    let (Some(ns), Some(uid)) = (deployment.namespace(), deployment.uid()) else {
        return vec![];
    };
    let value = serde_json::to_value(deployment).unwrap_or_default();
    let Some(selector) = selector_of(&value) else {
        return vec![];
    };
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "ReplicaSet"));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let Ok(list) = api.list(&ListParams::default().labels(&selector)).await else {
        return vec![];
    };
    let revision = |o: &DynamicObject| -> i64 {
        o.annotations()
            .get("deployment.kubernetes.io/revision")
            .and_then(|r| r.parse().ok())
            .unwrap_or(0)
    };
    let mut owned: Vec<DynamicObject> = list
        .items
        .into_iter()
        .filter(|rs| owned_by(rs, &uid))
        .collect();
    owned.sort_by_key(|rs| std::cmp::Reverse(revision(rs)));
    let mut out = vec![];
    for (i, rs) in owned.into_iter().enumerate() {
        let v = serde_json::to_value(&rs).unwrap_or_default();
        let replicas = v["spec"]["replicas"].as_i64().unwrap_or(0);
        if i > 0 && replicas == 0 {
            continue;
        }
        let verdict = health::replica_set(&v);
        out.push(Node {
            kind: "ReplicaSet".into(),
            namespace: Some(ns.clone()),
            name: rs.name_any(),
            health: Some(verdict.health),
            message: format!("revision {} · {}", revision(&rs), verdict.message),
            wave: None,
            hook: None,
            children: pods(client, &ns, &rs, &v).await,
        });
    }
    out
}

async fn pods(client: &Client, ns: &str, rs: &DynamicObject, v: &Value) -> Vec<Node> {
    let (Some(uid), Some(selector)) = (rs.uid(), selector_of(v)) else {
        return vec![];
    };
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    let Ok(list) = api.list(&ListParams::default().labels(&selector)).await else {
        return vec![];
    };
    list.items
        .iter()
        .filter(|p| p.owner_references().iter().any(|r| r.uid == uid))
        .take(MAX_PODS)
        .map(|p| {
            let verdict = pod_health(&serde_json::to_value(p).unwrap_or_default());
            Node {
                kind: "Pod".into(),
                namespace: Some(ns.to_string()),
                name: p.name_any(),
                health: Some(verdict.health),
                message: verdict.message,
                wave: None,
                hook: None,
                children: vec![],
            }
        })
        .collect()
}

/// A Pod's health: running with every container ready; a container waiting for a reason
/// (CrashLoopBackOff, ImagePullBackOff) is degraded.
pub fn pod_health(o: &Value) -> health::Verdict {
    let verdict = |health, message: String| health::Verdict { health, message };
    let statuses = o["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for c in &statuses {
        let reason = c["state"]["waiting"]["reason"].as_str().unwrap_or_default();
        if matches!(
            reason,
            "CrashLoopBackOff"
                | "ImagePullBackOff"
                | "ErrImagePull"
                | "CreateContainerConfigError"
                | "InvalidImageName"
        ) {
            let name = c["name"].as_str().unwrap_or("container");
            return verdict(Health::Degraded, format!("{name}: {reason}"));
        }
    }
    match o["status"]["phase"].as_str() {
        Some("Succeeded") => verdict(Health::Healthy, "completed".into()),
        Some("Failed") => verdict(
            Health::Degraded,
            o["status"]["reason"].as_str().unwrap_or("failed").into(),
        ),
        Some("Running") => {
            let ready = statuses
                .iter()
                .filter(|c| c["ready"].as_bool() == Some(true))
                .count();
            match ready == statuses.len() {
                true => verdict(Health::Healthy, "running".into()),
                false => verdict(
                    Health::Progressing,
                    format!("{ready} of {} containers ready", statuses.len()),
                ),
            }
        }
        _ => verdict(Health::Progressing, "pending".into()),
    }
}

/// Hook Jobs and Pods of the Application's syncs that are still in the cluster (a hook
/// deleted by its policy is gone), in the namespaces of its objects.
async fn hooks(client: &Client, app: &Application, inventory: &[InventoryEntry]) -> Vec<Node> {
    let owner = crate::apply::owner_label(app).replace('/', ".");
    let selector = format!("{}={owner}", crate::apply::hooks::HOOK_OF_LABEL);
    let mut namespaces: Vec<String> = inventory
        .iter()
        .filter_map(|e| e.namespace.clone())
        .chain(std::iter::once(
            app.spec
                .target_namespace
                .clone()
                .or_else(|| app.metadata.namespace.clone())
                .unwrap_or_default(),
        ))
        .collect();
    namespaces.sort();
    namespaces.dedup();
    let mut out = vec![];
    for ns in namespaces.into_iter().take(5) {
        for (group, kind) in [("batch", "Job"), ("", "Pod")] {
            let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, "v1", kind));
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
            let Ok(list) = api.list(&ListParams::default().labels(&selector)).await else {
                continue;
            };
            for o in list.items {
                // A hook Job's own Pods carry no hook annotation: the Job stands for them.
                let v = serde_json::to_value(&o).unwrap_or_default();
                let annotations = &v["metadata"]["annotations"];
                let Some(phase) = annotations[crate::apply::hooks::HELM_HOOK]
                    .as_str()
                    .or(annotations[crate::apply::hooks::ARGO_HOOK].as_str())
                else {
                    continue;
                };
                let verdict = match kind {
                    "Job" => health::job(&v),
                    _ => pod_health(&v),
                };
                out.push(Node {
                    kind: kind.into(),
                    namespace: Some(ns.clone()),
                    name: o.name_any(),
                    health: Some(verdict.health),
                    message: verdict.message,
                    wave: wave(&v).or_else(|| {
                        annotations[crate::apply::hooks::HELM_WEIGHT]
                            .as_str()
                            .and_then(|w| w.trim().parse().ok())
                    }),
                    hook: Some(phase.to_string()),
                    children: vec![],
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_waiting_on_a_bad_image_is_degraded() {
        let pod = json!({"status": {"phase": "Pending", "containerStatuses": [
            {"name": "web", "ready": false, "state": {"waiting": {"reason": "ImagePullBackOff"}}}
        ]}});
        let v = pod_health(&pod);
        assert_eq!(v.health, Health::Degraded);
        assert_eq!(v.message, "web: ImagePullBackOff");
        let running = json!({"status": {"phase": "Running", "containerStatuses": [
            {"name": "web", "ready": true, "state": {"running": {}}},
            {"name": "side", "ready": false, "state": {"running": {}}}
        ]}});
        assert_eq!(pod_health(&running).health, Health::Progressing);
        assert_eq!(
            pod_health(&json!({"status": {"phase": "Pending"}})).health,
            Health::Progressing
        );
        assert_eq!(
            pod_health(&json!({"status": {"phase": "Succeeded"}})).health,
            Health::Healthy
        );
    }

    #[test]
    fn selectors_and_waves_come_from_the_object() {
        let d = json!({"metadata": {"annotations": {"argocd.argoproj.io/sync-wave": " 2"}},
                       "spec": {"selector": {"matchLabels": {"app": "web", "tier": "front"}}}});
        assert_eq!(selector_of(&d).as_deref(), Some("app=web,tier=front"));
        assert_eq!(wave(&d), Some(2));
        assert_eq!(wave(&json!({})), None);
        assert_eq!(selector_of(&json!({"spec": {}})), None);
    }
}
