//! Deciding what a server-side apply would change (pure): the dry-run result is compared
//! with the live object, ignoring fields that change on every write.

use serde_json::Value;

/// The outcome for one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    Configured,
    Unchanged,
}

/// Removes the fields that differ between two reads of an unchanged object.
pub fn strip_volatile(mut v: Value) -> Value {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        meta.remove("generation");
        if let Some(mf) = meta.get_mut("managedFields").and_then(Value::as_array_mut) {
            for entry in mf.iter_mut() {
                if let Some(e) = entry.as_object_mut() {
                    e.remove("time");
                }
            }
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
        // List items of built-in kinds carry no apiVersion/kind; they are identity anyway.
        o.remove("apiVersion");
        o.remove("kind");
    }
    v
}

/// Compares the result of a dry-run apply with the live object.
pub fn classify(live: Option<&Value>, dry_run: &Value) -> Change {
    match live {
        None => Change::Created,
        Some(live) => {
            if strip_volatile(live.clone()) == strip_volatile(dry_run.clone()) {
                Change::Unchanged
            } else {
                Change::Configured
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn volatile_fields_do_not_count() {
        let live = json!({"metadata": {"name": "a", "resourceVersion": "1", "managedFields": [{"manager": "gantry", "time": "t1"}]}, "data": {"k": "v"}, "status": {"x": 1}});
        let same = json!({"metadata": {"name": "a", "resourceVersion": "2", "managedFields": [{"manager": "gantry", "time": "t2"}]}, "data": {"k": "v"}, "status": {"x": 2}});
        assert_eq!(classify(Some(&live), &same), Change::Unchanged);
        let changed = json!({"metadata": {"name": "a", "resourceVersion": "1", "managedFields": [{"manager": "gantry", "time": "t1"}]}, "data": {"k": "w"}});
        assert_eq!(classify(Some(&live), &changed), Change::Configured);
        assert_eq!(classify(None, &same), Change::Created);
    }
}
