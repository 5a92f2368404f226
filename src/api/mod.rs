//! The custom resources of the `gantry.dev` API group. Types only: no I/O here.

pub mod application;
pub mod conditions;
pub mod duration;
pub mod git_repository;
pub mod image_policy;
pub mod receiver;
pub mod refs;
pub mod rollout;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use application::Application;
pub use git_repository::GitRepository;
pub use image_policy::ImagePolicy;
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
    ]
}

/// The CRD file name of a kind under `crds/`, e.g. `gantry.dev_applications.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unknown"))
}

/// Serialises one CRD as YAML, the form committed under `crds/`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(crd)
}
