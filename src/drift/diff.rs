//! Unified diffs of desired vs live YAML, with noise removed and Secret values masked.

use serde_json::{Value, json};
use similar::TextDiff;

/// Removes fields that are noise in a diff: managedFields, status, resourceVersion, uid, …
pub fn clean(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in [
                "managedFields",
                "resourceVersion",
                "uid",
                "generation",
                "creationTimestamp",
                "selfLink",
            ] {
                m.remove(k);
            }
            if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
                a.remove("kubectl.kubernetes.io/last-applied-configuration");
                a.remove("deployment.kubernetes.io/revision");
                if a.is_empty() {
                    m.remove("annotations");
                }
            }
        }
    }
    v
}

fn is_secret(v: &Value) -> bool {
    v["kind"] == "Secret" && (v["apiVersion"] == "v1" || v["apiVersion"].is_null())
}

/// Masks the values of a Secret pair. Unchanged values become `***`; values that differ
/// become `*** (before)` and `*** (after)`, so a diff shows that a value changed, never what.
pub fn mask_secret_pair(before: Option<&mut Value>, after: Option<&mut Value>) {
    let field_values = |v: &Option<&mut Value>, field: &str, key: &str| -> Option<Value> {
        v.as_ref().and_then(|v| v[field].get(key).cloned())
    };
    let mut keys = std::collections::BTreeSet::new();
    for field in ["data", "stringData"] {
        for v in [&before, &after].into_iter().flatten() {
            if let Some(o) = v[field].as_object() {
                keys.extend(o.keys().map(|k| (field, k.clone())));
            }
        }
    }
    let mut masked_before = vec![];
    let mut masked_after = vec![];
    for (field, key) in keys {
        let b = field_values(&before, field, &key);
        let a = field_values(&after, field, &key);
        let (mb, ma) = if b == a {
            ("***", "***")
        } else {
            ("*** (before)", "*** (after)")
        };
        if b.is_some() {
            masked_before.push((field, key.clone(), mb));
        }
        if a.is_some() {
            masked_after.push((field, key, ma));
        }
    }
    if let Some(v) = before {
        for (field, key, m) in masked_before {
            v[field][&key] = json!(m);
        }
    }
    if let Some(v) = after {
        for (field, key, m) in masked_after {
            v[field][&key] = json!(m);
        }
    }
}

/// Whether the object came out of SOPS decryption (every value of it is masked).
fn is_decrypted(v: &Value) -> bool {
    v["metadata"]["annotations"][crate::render::sops::DECRYPTED_ANNOTATION].is_string()
}

/// Every scalar outside `apiVersion`, `kind` and `metadata`, by JSON pointer.
fn leaves(v: &Value, at: String, out: &mut std::collections::BTreeMap<String, Value>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                if at.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                leaves(
                    child,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                leaves(child, format!("{at}/{i}"), out);
            }
        }
        scalar => {
            out.insert(at, scalar.clone());
        }
    }
}

/// Masks every value of a decrypted pair (any kind), as Secret values are masked: `***`,
/// or `*** (before)` / `*** (after)` where they differ.
fn mask_decrypted_pair(before: Option<&mut Value>, after: Option<&mut Value>) {
    let mut b = std::collections::BTreeMap::new();
    let mut a = std::collections::BTreeMap::new();
    if let Some(v) = before.as_deref() {
        leaves(v, String::new(), &mut b);
    }
    if let Some(v) = after.as_deref() {
        leaves(v, String::new(), &mut a);
    }
    // One side alone (an object printed, created or pruned): plain `***`.
    let alone = before.is_none() || after.is_none();
    let mark = |side: &std::collections::BTreeMap<String, Value>,
                other: &std::collections::BTreeMap<String, Value>,
                v: &mut Value,
                changed: &str| {
        for (path, value) in side {
            let m = if alone || other.get(path) == Some(value) {
                "***".to_string()
            } else {
                format!("*** ({changed})")
            };
            if let Some(slot) = v.pointer_mut(path) {
                *slot = json!(m);
            }
        }
    };
    if let Some(v) = before {
        mark(&b, &a, v, "before");
    }
    if let Some(v) = after {
        mark(&a, &b, v, "after");
    }
}

/// Masks a single object's Secret values, or every value of a decrypted object (for
/// printing one side only).
pub fn mask(mut v: Value) -> Value {
    if is_decrypted(&v) {
        mask_decrypted_pair(Some(&mut v), None);
    } else if is_secret(&v) {
        mask_secret_pair(Some(&mut v), None);
    }
    v
}

/// A unified diff between the live object (`None`: to be created) and the desired one
/// (`None`: to be deleted). Returns `None` when they are equal.
pub fn unified(title: &str, live: Option<&Value>, desired: Option<&Value>) -> Option<String> {
    let mut before = live.cloned().map(clean);
    let mut after = desired.cloned().map(clean);
    let decrypted =
        before.as_ref().is_some_and(is_decrypted) || after.as_ref().is_some_and(is_decrypted);
    let secret = before.as_ref().is_some_and(is_secret) || after.as_ref().is_some_and(is_secret);
    if decrypted {
        mask_decrypted_pair(before.as_mut(), after.as_mut());
    } else if secret {
        mask_secret_pair(before.as_mut(), after.as_mut());
    }
    // Keys sorted, so the text is the same whether or not serde_json keeps insertion order
    // (a feature another crate of the build may turn on).
    let to_yaml = |v: &mut Option<Value>| {
        v.as_mut()
            .map(|v| {
                v.sort_all_objects();
                serde_yaml::to_string(v).unwrap_or_default()
            })
            .unwrap_or_default()
    };
    let (a, b) = (to_yaml(&mut before), to_yaml(&mut after));
    if a == b {
        return None;
    }
    let diff = TextDiff::from_lines(&a, &b);
    Some(
        diff.unified_diff()
            .context_radius(3)
            .header(&format!("live/{title}"), &format!("git/{title}"))
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_of_a_decrypted_object_is_masked() {
        let ann = json!({"gantry.dev/decrypted": "sops"});
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "annotations": ann},
            "data": {"password": "hunter2", "same": "kept"}});
        let desired = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "annotations": ann},
            "data": {"password": "correct horse", "same": "kept"}, "spec": {"list": ["s3cret"]}});
        let d = unified("v1/ConfigMap/ns/c", Some(&live), Some(&desired)).unwrap();
        for secret in ["hunter2", "correct horse", "kept", "s3cret"] {
            assert!(!d.contains(secret), "{secret} leaked:\n{d}");
        }
        assert!(
            d.contains("password: '*** (before)'") && d.contains("password: '*** (after)'"),
            "{d}"
        );
        assert!(d.contains("name: c"));
        let one = mask(desired);
        assert_eq!(one["data"]["same"], "***");
        assert_eq!(one["spec"]["list"][0], "***");
    }

    #[test]
    fn secret_values_never_appear() {
        let live = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"a": "b2xk", "same": "c2FtZQ=="}});
        let desired = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"a": "bmV3", "same": "c2FtZQ=="}, "stringData": {"plain": "hunter2"}});
        let d = unified("v1/Secret/ns/s", Some(&live), Some(&desired)).unwrap();
        for secret in ["b2xk", "bmV3", "c2FtZQ==", "hunter2"] {
            assert!(!d.contains(secret), "{secret} leaked:\n{d}");
        }
        assert!(d.contains("*** (after)"), "{d}");
        let created = unified("x", None, Some(&desired)).unwrap();
        assert!(!created.contains("hunter2"));
    }

    #[test]
    fn equal_objects_have_no_diff_and_noise_is_removed() {
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "resourceVersion": "7", "managedFields": []}, "data": {"k": "v"}});
        let desired = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}});
        assert!(unified("cm", Some(&live), Some(&desired)).is_none());
        let changed = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "w"}});
        let d = unified("cm", Some(&live), Some(&changed)).unwrap();
        assert!(d.contains("-  k: v") && d.contains("+  k: w"), "{d}");
    }
}
