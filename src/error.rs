//! Errors that travel from the library to the binary.

use kube::runtime::finalizer;

/// Everything that can go wrong, with a bounded `category()` for metric and event labels.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// Leader election (the Lease could not be read, or was lost).
    #[error("{0}")]
    Lease(Box<dyn std::error::Error + Send + Sync>),

    #[error("cannot load a Kubernetes client configuration: {0}")]
    KubeConfig(#[from] kube::config::InferConfigError),

    #[error(
        "the Gantry CRDs are not installed in this cluster: missing {missing}. \
         Install them with `gantry crds | kubectl apply --server-side -f -` \
         or with the Helm chart (charts/gantry)"
    )]
    CrdsMissing { missing: String },

    #[error(
        "the installed CRDs {outdated} are not the ones this controller was built with, and \
         their schema would refuse fields it writes. Apply this version's CRDs: \
         `gantry crds | kubectl apply --server-side -f -` (Helm does not upgrade a chart's \
         crds/ on `helm upgrade`)"
    )]
    CrdsOutdated { outdated: String },

    #[error("cannot serialise {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error("cannot write YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),

    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),

    #[error("cannot delete every object of the Application: {0}")]
    Cleanup(String),

    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// A short, bounded label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube_api",
            Error::Lease(_) => "lease",
            Error::KubeConfig(_) => "kube_config",
            Error::CrdsMissing { .. } => "crds_missing",
            Error::CrdsOutdated { .. } => "crds_outdated",
            Error::Serialize { .. } | Error::Yaml(_) => "serialize",
            Error::Io { .. } => "io",
            Error::Finalizer(_) => "finalizer",
            Error::Cleanup(_) => "cleanup",
            Error::Usage(_) => "usage",
        }
    }

    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
