//! Normalisation of rendered objects (pure): identity, namespace, ownership labels, order.

use serde_json::{Value, json};

use super::{APPLICATION_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::api::application::InventoryEntry;

/// A rendered object ready to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub key: InventoryEntry,
    pub object: Value,
    pub namespaced: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NormalizeError {
    #[error(
        "{kind} #{index} from {origin} has no metadata.name (generateName is only for hooks: annotate it helm.sh/hook or argocd.argoproj.io/hook)"
    )]
    NoName {
        index: usize,
        kind: String,
        origin: String,
    },
    #[error("apiVersion {0:?} is malformed")]
    BadApiVersion(String),
    #[error("{origin}: apiVersion {api_version:?} is malformed")]
    BadApiVersionIn { api_version: String, origin: String },
    #[error("{object} is rendered twice: from {first} and from {second}")]
    DuplicateIn {
        object: String,
        first: String,
        second: String,
    },
    #[error("{0}")]
    UnknownKind(String),
}

/// Splits `apps/v1` into (`apps`, `v1`) and `v1` into (``, `v1`).
pub fn split_api_version(api_version: &str) -> Result<(String, String), NormalizeError> {
    match api_version.split_once('/') {
        Some((g, v)) if !g.is_empty() && !v.is_empty() && !v.contains('/') => {
            Ok((g.to_string(), v.to_string()))
        }
        None if !api_version.is_empty() => Ok((String::new(), api_version.to_string())),
        _ => Err(NormalizeError::BadApiVersion(api_version.to_string())),
    }
}

/// A human name for an object: `Deployment web/api` or `ClusterRole admin`.
pub fn describe(key: &InventoryEntry) -> String {
    match &key.namespace {
        Some(ns) => format!("{} {}/{}", key.kind, ns, key.name),
        None => format!("{} {}", key.kind, key.name),
    }
}

/// Normalises the rendered objects.
///
/// `namespaced(group, version, kind)` answers from API discovery: `Some(true|false)`, or
/// `None` when the kind is unknown (allowed only when a CRD in the same set defines it;
/// such objects are treated as namespaced unless the CRD says `Cluster`).
pub fn normalize(
    objects: Vec<Value>,
    default_namespace: &str,
    app_label: &str,
    namespaced: impl Fn(&str, &str, &str) -> Option<bool>,
) -> Result<Vec<Desired>, NormalizeError> {
    // Kinds defined by CRDs in this set: (group, kind) -> namespaced
    let mut crd_kinds = std::collections::HashMap::new();
    for o in &objects {
        if o["kind"] == "CustomResourceDefinition" {
            let group = o["spec"]["group"].as_str().unwrap_or_default().to_string();
            let kind = o["spec"]["names"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            crd_kinds.insert((group, kind), o["spec"]["scope"] != "Cluster");
        }
    }
    let mut seen: std::collections::BTreeMap<_, String> = Default::default();
    let mut out = Vec::with_capacity(objects.len());
    for (index, mut object) in objects.into_iter().enumerate() {
        let origin =
            crate::render::take_origin(&mut object).unwrap_or_else(|| "the render".to_string());
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let (group, version) =
            split_api_version(api_version).map_err(|_| NormalizeError::BadApiVersionIn {
                api_version: api_version.to_string(),
                origin: origin.clone(),
            })?;
        let name = object["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| NormalizeError::NoName {
                index: index + 1,
                kind: kind.clone(),
                origin: origin.clone(),
            })?
            .to_string();
        let is_namespaced = match namespaced(&group, &version, &kind) {
            Some(n) => n,
            None => *crd_kinds
                .get(&(group.clone(), kind.clone()))
                .ok_or_else(|| {
                    NormalizeError::UnknownKind(super::unknown_kind_message(
                        &format!("{kind} {name}"),
                        &group,
                        &version,
                        &kind,
                    ))
                })?,
        };
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        let namespace = if is_namespaced {
            let ns = object["metadata"]["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(default_namespace)
                .to_string();
            object["metadata"]["namespace"] = json!(ns);
            Some(ns)
        } else {
            if let Some(m) = object["metadata"].as_object_mut() {
                m.remove("namespace");
            }
            None
        };
        let labels = &mut object["metadata"]["labels"];
        if !labels.is_object() {
            *labels = json!({});
        }
        // A chart's own `managed-by` (Helm) is kept: ownership is Gantry's own label.
        if labels.get(MANAGED_BY_LABEL).is_none_or(Value::is_null) {
            labels[MANAGED_BY_LABEL] = json!(MANAGED_BY_VALUE);
        }
        labels[APPLICATION_LABEL] = json!(app_label);
        let key = InventoryEntry {
            group,
            version,
            kind,
            namespace,
            name,
        };
        let identity = (
            key.group.clone(),
            key.kind.clone(),
            key.namespace.clone(),
            key.name.clone(),
        );
        if let Some(first) = seen.insert(identity, origin.clone()) {
            return Err(NormalizeError::DuplicateIn {
                object: describe(&key),
                first,
                second: origin,
            });
        }
        out.push(Desired {
            key,
            object,
            namespaced: is_namespaced,
        });
    }
    out.sort_by(|a, b| {
        let ra = super::order::rank(&a.key.group, &a.key.kind, a.namespaced);
        let rb = super::order::rank(&b.key.group, &b.key.kind, b.namespaced);
        ra.cmp(&rb).then_with(|| a.key.cmp(&b.key))
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovery(group: &str, _v: &str, kind: &str) -> Option<bool> {
        match (group, kind) {
            ("", "Namespace")
            | ("rbac.authorization.k8s.io", "ClusterRole")
            | ("apiextensions.k8s.io", "CustomResourceDefinition") => Some(false),
            ("", _) | ("apps", _) => Some(true),
            _ => None,
        }
    }

    #[test]
    fn sets_namespace_and_labels_and_orders() {
        let objects = vec![
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "other"}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r", "namespace": "ignored"}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
        ];
        let out = normalize(objects, "team", "apps.web", discovery).unwrap();
        let kinds: Vec<_> = out.iter().map(|d| d.key.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["Namespace", "ClusterRole", "ConfigMap", "Deployment"]
        );
        let deploy = &out[3];
        assert_eq!(deploy.key.namespace.as_deref(), Some("team"));
        assert_eq!(
            deploy.object["metadata"]["labels"]["gantry.dev/application"],
            "apps.web"
        );
        assert_eq!(
            deploy.object["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "gantry"
        );
        assert_eq!(out[2].key.namespace.as_deref(), Some("other"));
        assert!(
            out[1].object["metadata"].get("namespace").is_none(),
            "cluster-scoped keeps no namespace"
        );
        // A chart's own `managed-by: Helm` is kept; ownership is Gantry's label.
        let chart = vec![json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"app.kubernetes.io/managed-by": "Helm"}}})];
        let chart_out = normalize(chart, "team", "apps.web", discovery).unwrap();
        let labels = &chart_out[0].object["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm");
        assert_eq!(labels["gantry.dev/application"], "apps.web");
    }

    #[test]
    fn custom_kinds_from_crds_in_the_set_are_allowed() {
        let objects = vec![
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}),
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "widgets.example.com"},
                   "spec": {"group": "example.com", "scope": "Namespaced", "names": {"kind": "Widget"}}}),
        ];
        let out = normalize(objects, "ns", "a.b", discovery).unwrap();
        assert_eq!(out[0].key.kind, "CustomResourceDefinition");
        assert_eq!(out[1].key.namespace.as_deref(), Some("ns"));
    }

    #[test]
    fn unknown_kinds_duplicates_and_nameless_objects_are_errors() {
        let unknown =
            vec![json!({"apiVersion": "nope.io/v1", "kind": "Thing", "metadata": {"name": "t"}})];
        assert!(matches!(
            normalize(unknown, "ns", "a.b", discovery),
            Err(NormalizeError::UnknownKind(_))
        ));
        let dup = vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, crate::render::ORIGIN: "a.yaml (document 1)"}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "ns"}, crate::render::ORIGIN: "b.yaml (document 2)"}),
        ];
        assert_eq!(
            normalize(dup, "ns", "a.b", discovery)
                .unwrap_err()
                .to_string(),
            "ConfigMap ns/a is rendered twice: from a.yaml (document 1) and from b.yaml (document 2)"
        );
        let nameless = vec![
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"generateName": "migrate-"}, crate::render::ORIGIN: "deploy/migrate.yaml (document 1)"}),
        ];
        let e = normalize(nameless, "ns", "a.b", discovery)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("Job #1 from deploy/migrate.yaml (document 1) has no metadata.name")
                && e.contains("argocd.argoproj.io/hook"),
            "{e}"
        );
        // The origin never reaches the cluster.
        let kept = vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, crate::render::ORIGIN: "a.yaml (document 1)"}),
        ];
        let d = normalize(kept, "ns", "a.b", discovery).unwrap();
        assert!(d[0].object.get(crate::render::ORIGIN).is_none());
    }
}
