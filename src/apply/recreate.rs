//! Recreation of objects whose immutable fields changed (a Job's template, a Service's
//! clusterIP): opted in per Application or per object, only for objects the Application
//! owns; the object is deleted, awaited, and created again by the staged apply.

use std::collections::HashMap;

use super::applier::{Applier, ObjectError};
use super::discovery::Resolved;
use super::normalize::{Desired, describe};
use crate::api::application::InventoryEntry;

/// The per-object opt-in to recreation when an immutable field changed.
pub const RECREATE_ANNOTATION: &str = "gantry.dev/recreate-on-immutable";

/// Whether `d` is recreated when an immutable field changed: the Application opted in, or
/// the object carries [`RECREATE_ANNOTATION`] `"true"`.
pub fn opted_in(application: bool, d: &Desired) -> bool {
    application || d.object["metadata"]["annotations"][RECREATE_ANNOTATION].as_str() == Some("true")
}

/// Whether the API server refused a change because an immutable field changed.
pub fn immutable(e: &ObjectError) -> bool {
    e.message.contains("field is immutable")
}

type KindKey = (String, String, String);

impl Applier {
    /// Whether the live object is labelled for `owner` (only those are ever recreated).
    pub(super) async fn owned_by(&self, r: &Resolved, d: &Desired, owner: &str) -> bool {
        matches!(
            self.live(r, &d.key).await,
            Ok(Some(live)) if live["metadata"]["labels"][super::APPLICATION_LABEL].as_str() == Some(owner)
        )
    }

    /// Deletes the objects to recreate and waits until they are gone (their dependents
    /// are collected in the background), so the apply that follows creates them.
    pub(super) async fn delete_for_recreation(
        &self,
        keys: &[InventoryEntry],
        resolved: &HashMap<KindKey, Resolved>,
    ) -> Vec<ObjectError> {
        let mut errors = vec![];
        for key in keys {
            let r = &resolved[&(key.group.clone(), key.version.clone(), key.kind.clone())];
            let api = self.api(r, key.namespace.as_deref());
            let params = kube::api::DeleteParams::background();
            if let Err(e) = api.delete(&key.name, &params).await
                && !matches!(&e, kube::Error::Api(s) if s.code == 404)
            {
                errors.push(ObjectError::new(key, &e));
                continue;
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                match api.get_opt(&key.name).await {
                    Ok(None) => break,
                    Ok(Some(_)) if std::time::Instant::now() < deadline => {
                        super::waiting::pause(std::time::Duration::from_millis(200)).await
                    }
                    Ok(Some(_)) => {
                        errors.push(ObjectError::other(
                            describe(key),
                            "deleted to be recreated, but still there after 60s (a finalizer?)",
                        ));
                        break;
                    }
                    Err(e) => {
                        errors.push(ObjectError::new(key, &e));
                        break;
                    }
                }
            }
            tracing::info!(object = %describe(key), "recreated: an immutable field changed");
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(annotations: serde_json::Value) -> Desired {
        Desired {
            key: InventoryEntry {
                group: "batch".into(),
                version: "v1".into(),
                kind: "Job".into(),
                namespace: Some("ns".into()),
                name: "migrate".into(),
            },
            object: json!({"metadata": {"name": "migrate", "annotations": annotations}}),
            namespaced: true,
        }
    }

    #[test]
    fn recreation_is_opted_into_per_application_or_per_object() {
        assert!(!opted_in(false, &object(json!({}))));
        assert!(opted_in(true, &object(json!({}))));
        assert!(opted_in(
            false,
            &object(json!({RECREATE_ANNOTATION: "true"}))
        ));
        assert!(!opted_in(
            false,
            &object(json!({RECREATE_ANNOTATION: "false"}))
        ));
        let refused = ObjectError::other(
            "Job ns/migrate".into(),
            "Job.batch \"migrate\" is invalid: spec.template: field is immutable",
        );
        assert!(immutable(&refused));
    }
}
