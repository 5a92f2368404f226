//! The custom resources of the `gantry.dev` API group. Types only: no I/O here.

pub mod annotations;
pub mod application;
pub mod conditions;
pub mod duration;
pub mod git_repository;
pub mod image_policy;
pub mod notifier;
pub mod reasons;
pub mod receiver;
pub mod refs;
pub mod rollout;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use application::Application;
pub use git_repository::GitRepository;
pub use image_policy::ImagePolicy;
pub use notifier::Notifier;
pub use receiver::Receiver;

/// The API group of every Gantry kind.
pub const GROUP: &str = "gantry.dev";

/// The CRDs of every kind, in the order they are printed and installed.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        GitRepository::crd(),
        ImagePolicy::crd(),
        Application::crd(),
        Receiver::crd(),
        Notifier::crd(),
    ]
    .into_iter()
    .map(bound_integers)
    .map(with_schema_digest)
    .collect()
}

/// Annotation on each CRD: a digest of its spec as this build generates it. The controller
/// refuses to start against CRDs with another digest (installed by another version), whose
/// schema would refuse the fields it writes.
pub const SCHEMA_DIGEST_ANNOTATION: &str = "gantry.dev/schema-digest";

/// The digest of a CRD's spec (16 hex digits of its SHA-256).
pub fn schema_digest(crd: &CustomResourceDefinition) -> String {
    use sha2::{Digest, Sha256};
    let spec = serde_json::to_vec(&crd.spec).expect("CRD spec serialises");
    hex::encode(Sha256::digest(spec))[..16].to_string()
}

fn with_schema_digest(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let digest = schema_digest(&crd);
    crd.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(SCHEMA_DIGEST_ANNOTATION.to_string(), digest);
    crd
}

/// Adds the bounds of the Rust integer type to every integer property, so the API server
/// refuses values the controller could not deserialize (one such object would otherwise
/// stall the watch of its whole kind).
fn bound_integers(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(v: &mut serde_json::Value) {
        if let Some(o) = v.as_object_mut() {
            let bounds = match o.get("format").and_then(|f| f.as_str()) {
                Some("uint32") => Some((0.0, u32::MAX as f64)),
                Some("uint16") => Some((0.0, u16::MAX as f64)),
                Some("int32") => Some((i32::MIN as f64, i32::MAX as f64)),
                _ => None,
            };
            if let Some((min, max)) = bounds {
                o.entry("minimum").or_insert(serde_json::json!(min));
                o.entry("maximum").or_insert(serde_json::json!(max));
            }
            o.values_mut().for_each(walk);
        } else if let Some(a) = v.as_array_mut() {
            a.iter_mut().for_each(walk);
        }
    }
    let mut value = serde_json::to_value(&crd).expect("CRD serialises");
    walk(&mut value);
    serde_json::from_value(value).unwrap_or(crd)
}

/// The CRD file name of a kind under `crds/`, e.g. `gantry.dev_applications.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unknown"))
}

/// Serialises one CRD as YAML, the form committed under `crds/`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(crd)
}
