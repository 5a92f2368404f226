//! Drift comparison (pure): the fields Gantry declares, compared with the live object.
//! Only fields present in the desired object are looked at, so defaulted fields and fields
//! owned by other managers (an HPA's `replicas` when the manifest omits it) never count.
//! A suspected difference is confirmed by a server-side dry-run before it is reported.

use serde_json::Value;

use crate::api::application::DriftIgnore;
use crate::api::application::InventoryEntry;

/// Escapes one RFC 6901 pointer token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// JSON pointers of the desired leaves whose live value differs (or is missing).
pub fn differing_paths(desired: &Value, live: &Value) -> Vec<String> {
    let mut out = vec![];
    walk(desired, live, String::new(), &mut out);
    out
}

fn walk(desired: &Value, live: &Value, path: String, out: &mut Vec<String>) {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            for (k, dv) in d {
                let p = format!("{path}/{}", escape(k));
                match l.get(k) {
                    Some(lv) => walk(dv, lv, p, out),
                    None if dv.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(d), Value::Array(l)) => {
            if d.len() != l.len() {
                out.push(path);
                return;
            }
            for (i, (dv, lv)) in d.iter().zip(l).enumerate() {
                walk(dv, lv, format!("{path}/{i}"), out);
            }
        }
        (d, l) if scalar_eq(d, l) => {}
        (d, l) if in_quantities(&path) && quantity_eq(d, l) => {}
        _ => out.push(if path.is_empty() { "/".into() } else { path }),
    }
}

/// Whether a pointer leads into a map of resource quantities (container `resources`,
/// ResourceQuota `hard`, volume `capacity`), where the API server stores `2000m` as `"2"`.
fn in_quantities(path: &str) -> bool {
    let mut parts = path.rsplit('/');
    parts.next();
    matches!(
        parts.next(),
        Some("limits" | "requests" | "hard" | "capacity" | "allocatable" | "storage")
    )
}

/// Two resource quantities (strings or numbers) with the same value: `2000m` and `2`,
/// `1Gi` and `1024Mi`, `0.5` and `500m`.
fn quantity_eq(a: &Value, b: &Value) -> bool {
    match (quantity(a), quantity(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()) * 4.0,
        _ => false,
    }
}

/// The value of a Kubernetes quantity (decimal and binary suffixes, exponents).
fn quantity(v: &Value) -> Option<f64> {
    let s = match v {
        Value::Number(n) => return n.as_f64(),
        Value::String(s) => s.trim(),
        _ => return None,
    };
    const SUFFIXES: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    for (suffix, factor) in SUFFIXES {
        if let Some(number) = s.strip_suffix(suffix) {
            return number.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    for (suffix, factor) in [("P", 1e15), ("E", 1e18)] {
        if let Some(number) = s.strip_suffix(suffix) {
            return number.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    s.parse::<f64>().ok()
}

/// Scalars equal in the way the API server stores them (`1` vs `1.0`, quantities as
/// strings are left to the dry-run).
fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Fields that are never compared: identity, server-managed metadata, status.
pub fn comparable(desired: &Value) -> Value {
    let mut d = desired.clone();
    if let Some(o) = d.as_object_mut() {
        o.remove("status");
        o.remove("apiVersion");
        o.remove("kind");
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in [
                "creationTimestamp",
                "resourceVersion",
                "uid",
                "generation",
                "managedFields",
                "namespace",
                "name",
            ] {
                m.remove(k);
            }
        }
    }
    d
}

/// Whether an ignore rule applies to an object.
pub fn ignore_matches(rule: &DriftIgnore, key: &InventoryEntry) -> bool {
    rule.group.as_ref().is_none_or(|g| g == &key.group)
        && rule.kind.as_ref().is_none_or(|k| k == &key.kind)
        && rule.name.as_ref().is_none_or(|n| n == &key.name)
}

/// Drops the paths covered by the ignore rules for this object.
pub fn without_ignored(
    paths: Vec<String>,
    rules: &[DriftIgnore],
    key: &InventoryEntry,
) -> Vec<String> {
    let pointers: Vec<&String> = rules
        .iter()
        .filter(|r| ignore_matches(r, key))
        .flat_map(|r| r.json_pointers.iter())
        .collect();
    paths
        .into_iter()
        .filter(|p| {
            !pointers
                .iter()
                .any(|ig| p == *ig || p.starts_with(&format!("{ig}/")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resource_quantities_compare_by_value() {
        let desired = json!({"spec": {"containers": [{"resources": {
            "limits": {"cpu": "2000m", "memory": "1Gi"},
            "requests": {"cpu": 0.5, "memory": "512Mi"}}}]}});
        let live = json!({"spec": {"containers": [{"resources": {
            "limits": {"cpu": "2", "memory": "1024Mi"},
            "requests": {"cpu": "500m", "memory": "536870912"}}}]}});
        assert!(differing_paths(&desired, &live).is_empty());
        let changed = json!({"spec": {"containers": [{"resources": {
            "limits": {"cpu": "3", "memory": "1Gi"},
            "requests": {"cpu": "500m", "memory": "512Mi"}}}]}});
        assert_eq!(
            differing_paths(&desired, &changed),
            ["/spec/containers/0/resources/limits/cpu"]
        );
        // Outside quantity maps, equal-valued strings are still different strings.
        assert_eq!(
            differing_paths(
                &json!({"data": {"n": "1000"}}),
                &json!({"data": {"n": "1k"}})
            ),
            ["/data/n"]
        );
    }

    #[test]
    fn only_declared_fields_count() {
        let desired = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "web:1"}]}}}});
        let live = json!({"spec": {"replicas": 7, "template": {"spec": {"containers": [{"name": "a", "image": "web:1", "imagePullPolicy": "IfNotPresent"}]}}}});
        assert!(
            differing_paths(&desired, &live).is_empty(),
            "defaults and other managers' fields are not drift"
        );
        let edited = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "web:2"}]}}}});
        assert_eq!(
            differing_paths(&desired, &edited),
            vec!["/spec/template/spec/containers/0/image"]
        );
    }

    #[test]
    fn missing_fields_and_list_lengths() {
        let desired = json!({"data": {"a": "1", "b/c": "2"}, "list": [1, 2]});
        let live = json!({"data": {"a": "1"}, "list": [1]});
        assert_eq!(
            differing_paths(&desired, &live),
            vec!["/data/b~1c", "/list"]
        );
        assert!(differing_paths(&json!({"n": 1}), &json!({"n": 1.0})).is_empty());
    }

    #[test]
    fn ignore_rules_drop_paths() {
        let key = InventoryEntry {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            namespace: Some("ns".into()),
            name: "web".into(),
        };
        let rules = vec![DriftIgnore {
            group: Some("apps".into()),
            kind: Some("Deployment".into()),
            name: None,
            json_pointers: vec!["/spec/replicas".into()],
        }];
        let paths = vec![
            "/spec/replicas".to_string(),
            "/spec/template/spec/containers/0/image".to_string(),
        ];
        assert_eq!(
            without_ignored(paths, &rules, &key),
            vec!["/spec/template/spec/containers/0/image"]
        );
        let other = InventoryEntry {
            kind: "StatefulSet".into(),
            ..key
        };
        assert_eq!(
            without_ignored(vec!["/spec/replicas".into()], &rules, &other).len(),
            1
        );
    }

    #[test]
    fn comparable_drops_identity_and_status() {
        let c = comparable(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "b", "labels": {"x": "y"}}, "status": {}}),
        );
        assert_eq!(c, json!({"metadata": {"labels": {"x": "y"}}}));
    }
}
