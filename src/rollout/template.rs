//! Pod templates and canary Deployments, pure: template hashes (the known-good fast path),
//! canary replica counts, and the canary Deployment built from the desired one.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Label on canary pods (and added to the canary Deployment's selector).
pub const TRACK_LABEL: &str = "gantry.dev/track";
/// Label naming the stable Deployment a canary belongs to.
pub const CANARY_OF_LABEL: &str = "gantry.dev/canary-of";

pub fn canary_name(stable: &str) -> String {
    format!("{stable}-canary")
}

fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = serde_json::Map::new();
            for k in keys {
                out.insert(k.clone(), canonical(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// Template hashes of the Deployments in `desired`, for the history.
pub fn template_hashes(
    desired: &[crate::apply::normalize::Desired],
) -> std::collections::BTreeMap<String, String> {
    desired
        .iter()
        .filter(|d| d.key.group == "apps" && d.key.kind == "Deployment")
        .map(|d| {
            (
                super::plan::template_key(
                    d.key.namespace.as_deref().unwrap_or_default(),
                    &d.key.name,
                ),
                template_hash(&d.object),
            )
        })
        .collect()
}

/// sha256 of the Deployment's `spec.template` in a canonical form (key order ignored).
pub fn template_hash(deployment: &Value) -> String {
    let t = canonical(&deployment["spec"]["template"]);
    let mut h = Sha256::new();
    h.update(t.to_string().as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Canary replicas for `weight` percent of the stable count: rounded up, at least 1.
pub fn replicas_for(stable: i32, weight: u32) -> i32 {
    let stable = stable.max(1) as i64;
    (((stable * weight as i64) + 99) / 100).max(1) as i32
}

/// The canary Deployment for the desired stable Deployment `desired`: same spec with
/// `replicas`, named `<name>-canary`, its pods labelled `gantry.dev/track: canary` (and
/// keeping every label Services select), its selector the stable selector plus that label.
pub fn canary_object(desired: &Value, replicas: i32) -> Value {
    let name = desired["metadata"]["name"].as_str().unwrap_or_default();
    let mut obj = desired.clone();
    let meta = &mut obj["metadata"];
    meta["name"] = json!(canary_name(name));
    if let Some(m) = meta.as_object_mut() {
        m.remove("annotations");
        m.remove("resourceVersion");
        m.remove("uid");
    }
    meta["labels"][TRACK_LABEL] = json!("canary");
    meta["labels"][CANARY_OF_LABEL] = json!(name);
    let spec = &mut obj["spec"];
    spec["replicas"] = json!(replicas);
    spec["selector"]["matchLabels"][TRACK_LABEL] = json!("canary");
    spec["template"]["metadata"]["labels"][TRACK_LABEL] = json!("canary");
    spec["template"]["metadata"]["labels"][CANARY_OF_LABEL] = json!(name);
    obj
}

/// The stable replica count declared (1 when omitted, as the API server defaults it).
pub fn declared_replicas(desired: &Value) -> i32 {
    desired["spec"]["replicas"].as_i64().unwrap_or(1) as i32
}

/// The stable Deployment's replica count the canary weight is taken of: the live count
/// (which an HPA or a hand scale sets when Git leaves `replicas` out), else the declared one.
pub fn stable_replicas(desired: &Value, live: Option<&Value>) -> i32 {
    live.and_then(|l| l["spec"]["replicas"].as_i64())
        .map(|n| n as i32)
        .unwrap_or_else(|| declared_replicas(desired))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"},
                         "annotations": {"a": "b"}},
            "spec": {
                "replicas": 4,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web", "tier": "front"}},
                    "spec": {"containers": [{"name": "web", "image": image}]}
                }
            }
        })
    }

    #[test]
    fn hashes_follow_the_template_only() {
        let a = deployment("web:1");
        let mut b = deployment("web:1");
        b["spec"]["replicas"] = json!(9);
        assert_eq!(template_hash(&a), template_hash(&b));
        assert_ne!(template_hash(&a), template_hash(&deployment("web:2")));
        // Key order does not matter.
        let reordered: Value = serde_json::from_str(
            r#"{"spec":{"template":{"spec":{"containers":[{"image":"web:1","name":"web"}]},"metadata":{"labels":{"tier":"front","app":"web"}}}}}"#,
        )
        .unwrap();
        assert_eq!(template_hash(&a), template_hash(&reordered));
    }

    #[test]
    fn replica_counts_round_up_with_a_minimum_of_one() {
        assert_eq!(replicas_for(4, 25), 1);
        assert_eq!(replicas_for(4, 50), 2);
        assert_eq!(replicas_for(3, 50), 2);
        assert_eq!(replicas_for(10, 1), 1);
        assert_eq!(replicas_for(10, 100), 10);
        assert_eq!(replicas_for(0, 50), 1);
        assert_eq!(replicas_for(5, 0), 1);
    }

    #[test]
    fn canary_keeps_service_labels_and_narrows_the_selector() {
        let c = canary_object(&deployment("web:2"), 1);
        assert_eq!(c["metadata"]["name"], "web-canary");
        assert_eq!(c["metadata"]["namespace"], "shop");
        assert!(c["metadata"].get("annotations").is_none());
        assert_eq!(c["spec"]["replicas"], 1);
        assert_eq!(
            c["spec"]["selector"]["matchLabels"],
            json!({"app": "web", "gantry.dev/track": "canary"})
        );
        let labels = &c["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["app"], "web");
        assert_eq!(labels["tier"], "front");
        assert_eq!(labels[TRACK_LABEL], "canary");
        assert_eq!(labels[CANARY_OF_LABEL], "web");
        assert_eq!(
            c["spec"]["template"]["spec"]["containers"][0]["image"],
            "web:2"
        );
        assert_eq!(declared_replicas(&deployment("x")), 4);
        assert_eq!(declared_replicas(&json!({"spec": {}})), 1);
    }

    #[test]
    fn the_live_replica_count_wins_over_the_declared_one() {
        let declared = json!({"spec": {}});
        let live = json!({"spec": {"replicas": 3}});
        assert_eq!(stable_replicas(&declared, Some(&live)), 3);
        assert_eq!(replicas_for(stable_replicas(&declared, Some(&live)), 50), 2);
        assert_eq!(stable_replicas(&deployment("x"), None), 4);
        assert_eq!(stable_replicas(&declared, None), 1);
    }
}
