//! Where and as whom an Application's requests go. A [`Target`] is one (cluster, identity):
//! the [`Applier`] every dry-run, apply, prune, read of live objects and canary write goes
//! through, and the metadata-only drift watches of that cluster. [`Targets`] hands each
//! Application its target:
//! - the cluster is the controller's own, or the one in the kubeconfig of
//!   `spec.kubeConfig.secretRef` (checked by [`kubeconfig`]: nothing in it may run a
//!   program or read the controller's files), probed before use;
//! - the identity is `system:serviceaccount:<namespace>:<spec.serviceAccountName>`
//!   (or `--default-service-account`), impersonated on that cluster, after checking that
//!   the ServiceAccount exists there; without one, the controller's own identity, unless
//!   `--require-service-account` refuses the Application.
//!
//! Clusters and identities are built once and reused; a changed kubeconfig builds a new
//! cluster.

pub mod api_server;
pub mod kubeconfig;
pub mod rate_limit;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Config;
use kube::api::Api;
use kube::config::KubeConfigOptions;
use kube::runtime::reflector::ObjectRef;
use sha2::{Digest, Sha256};

use crate::api::Application;
use crate::api::application::KubeConfigRef;
use crate::apply::applier::{Applier, api_message};
use crate::drift::watch::DriftWatches;
use api_server::Cluster;
pub use rate_limit::ClientLimits;

/// How long a remote API server has to answer the probe before it counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One cluster as one identity.
pub struct Target {
    pub applier: Applier,
    /// Watches of managed objects on this cluster (shared by every identity on it).
    pub drift: Arc<DriftWatches>,
    /// The API server's host.
    pub cluster: String,
    /// The impersonated user; `None` for the controller's own identity.
    pub identity: Option<String>,
}

/// Condition reasons of an Application without a target.
pub mod reason {
    pub const SERVICE_ACCOUNT_REQUIRED: &str = "ServiceAccountRequired";
    pub const SERVICE_ACCOUNT_NOT_FOUND: &str = "ServiceAccountNotFound";
    pub const KUBECONFIG_INVALID: &str = "KubeConfigInvalid";
    pub const KUBECONFIG_REFUSED: &str = "KubeConfigRefused";
    pub const CLUSTER_UNREACHABLE: &str = "ClusterUnreachable";
    pub const CLUSTER_REFUSED: &str = "ClusterRefused";
}

/// Why an Application has no target.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "this controller runs every Application as a ServiceAccount (--require-service-account): \
         set spec.serviceAccountName; nothing is applied"
    )]
    ServiceAccountRequired,
    #[error(
        "ServiceAccount {namespace}/{name} not found on {cluster}; nothing is applied (it is \
         never replaced by the controller's own rights)"
    )]
    ServiceAccountNotFound {
        namespace: String,
        name: String,
        cluster: String,
    },
    #[error("kubeconfig in Secret {secret} key {key}: {message}")]
    KubeConfigInvalid {
        secret: String,
        key: String,
        message: String,
    },
    #[error(
        "kubeconfig in Secret {secret} key {key} is refused: {refused}; nothing of it was used"
    )]
    KubeConfigRefused {
        secret: String,
        key: String,
        refused: kubeconfig::Refused,
    },
    #[error("cluster {cluster} is unreachable: {message}")]
    ClusterUnreachable { cluster: String, message: String },
    /// The API server answered, with an error (e.g. the credentials are not accepted).
    #[error("cluster {cluster} refused the controller: {message}")]
    ClusterRefused { cluster: String, message: String },
}

impl TargetError {
    pub fn reason(&self) -> &'static str {
        match self {
            TargetError::ServiceAccountRequired => reason::SERVICE_ACCOUNT_REQUIRED,
            TargetError::ServiceAccountNotFound { .. } => reason::SERVICE_ACCOUNT_NOT_FOUND,
            TargetError::KubeConfigInvalid { .. } => reason::KUBECONFIG_INVALID,
            TargetError::KubeConfigRefused { .. } => reason::KUBECONFIG_REFUSED,
            TargetError::ClusterUnreachable { .. } => reason::CLUSTER_UNREACHABLE,
            TargetError::ClusterRefused { .. } => reason::CLUSTER_REFUSED,
        }
    }

    /// Whether it may go away by itself (the cluster comes back): retried with backoff.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TargetError::ClusterUnreachable { .. } | TargetError::ClusterRefused { .. }
        )
    }
}

/// The multi-tenant settings of the controller.
#[derive(Clone, Debug, Default)]
pub struct Tenancy {
    /// Impersonated when an Application names no ServiceAccount.
    pub default_service_account: Option<String>,
    /// Refuse Applications that end up without a ServiceAccount.
    pub require_service_account: bool,
}

/// Remote clusters by (namespace, Secret, key), with the digest of the kubeconfig each was
/// built from.
type Remotes = HashMap<(String, String, String), (String, Arc<Cluster>)>;

/// The targets of the controller's Applications.
pub struct Targets {
    local: Arc<Cluster>,
    remotes: Mutex<Remotes>,
    tenancy: Tenancy,
    limits: ClientLimits,
    namespace: Option<String>,
    tx: mpsc::Sender<ObjectRef<Application>>,
}

impl Targets {
    /// The controller's own cluster (from `config`); returns the stream of Applications
    /// whose managed objects changed, on any cluster.
    pub fn new(
        config: Config,
        limits: ClientLimits,
        namespace: Option<String>,
        tenancy: Tenancy,
    ) -> Result<(Self, mpsc::Receiver<ObjectRef<Application>>), kube::Error> {
        let (tx, rx) = mpsc::channel(4096);
        let local = Arc::new(Cluster::new(config, limits, namespace.clone(), tx.clone())?);
        let targets = Self {
            local,
            remotes: Default::default(),
            tenancy,
            limits,
            namespace,
            tx,
        };
        Ok((targets, rx))
    }

    /// Asks for a reconcile of `app` (as a drift event does); dropped when the queue is full,
    /// where a reconcile is due anyway.
    pub fn wake(&self, app: ObjectRef<Application>) {
        let _ = self.tx.clone().try_send(app);
    }

    /// The controller's own identity on its own cluster.
    pub fn local(&self) -> Arc<Target> {
        self.local
            .as_identity(None)
            .expect("the controller's own client is built already")
    }

    /// The target an Application acts on, or why it has none.
    pub async fn for_app(&self, app: &Application) -> Result<Arc<Target>, TargetError> {
        let ns = app.metadata.namespace.clone().unwrap_or_default();
        let service_account = app
            .spec
            .service_account_name
            .clone()
            .or_else(|| self.tenancy.default_service_account.clone());
        if service_account.is_none() && self.tenancy.require_service_account {
            return Err(TargetError::ServiceAccountRequired);
        }
        let cluster = match &app.spec.kube_config {
            None => self.local.clone(),
            Some(kc) => {
                let cluster = self.remote(&ns, kc).await?;
                probe(&cluster).await?;
                cluster
            }
        };
        let user = match service_account {
            None => None,
            Some(name) => {
                service_account_exists(&cluster, &ns, &name).await?;
                Some(format!("system:serviceaccount:{ns}:{name}"))
            }
        };
        cluster
            .as_identity(user)
            .map_err(|e| TargetError::ClusterUnreachable {
                cluster: cluster.host().to_string(),
                message: e.to_string(),
            })
    }

    /// The cluster of a kubeconfig Secret, built when the Secret's content is new.
    async fn remote(&self, ns: &str, kc: &KubeConfigRef) -> Result<Arc<Cluster>, TargetError> {
        let (secret, key) = (kc.secret_ref.name.clone(), kc.secret_ref.key.clone());
        let invalid = |message: String| TargetError::KubeConfigInvalid {
            secret: secret.clone(),
            key: key.clone(),
            message,
        };
        // Read with the controller's own client, in the Application's namespace only.
        let secrets: Api<Secret> = Api::namespaced(self.local.client().clone(), ns);
        let data = secrets
            .get_opt(&secret)
            .await
            .map_err(|e| invalid(format!("cannot read the Secret: {}", api_message(&e))))?
            .ok_or_else(|| invalid("the Secret does not exist".into()))?
            .data
            .unwrap_or_default();
        let text = data
            .get(&key)
            .ok_or_else(|| invalid(format!("the Secret has no key {key}")))?;
        let digest = hex::encode(Sha256::digest(&text.0));
        let id = (ns.to_string(), secret.clone(), key.clone());
        if let Some((d, cluster)) = self.remotes.lock().expect("remotes").get(&id)
            && *d == digest
        {
            return Ok(cluster.clone());
        }
        let text = std::str::from_utf8(&text.0).map_err(|e| invalid(e.to_string()))?;
        let parsed = kubeconfig::parse(text).map_err(|refused| TargetError::KubeConfigRefused {
            secret: secret.clone(),
            key: key.clone(),
            refused,
        })?;
        let config = Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
            .await
            .map_err(|e| invalid(e.to_string()))?;
        let cluster = Cluster::new(config, self.limits, self.namespace.clone(), self.tx.clone())
            .map_err(|e| invalid(e.to_string()))?;
        let cluster = Arc::new(cluster);
        self.remotes
            .lock()
            .expect("remotes")
            .insert(id, (digest, cluster.clone()));
        Ok(cluster)
    }
}

/// Asks a remote API server for its version, within [`PROBE_TIMEOUT`].
async fn probe(cluster: &Cluster) -> Result<(), TargetError> {
    match tokio::time::timeout(PROBE_TIMEOUT, cluster.client().apiserver_version()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(cluster_error(cluster, &e)),
        Err(_) => Err(no_answer(cluster)),
    }
}

fn no_answer(cluster: &Cluster) -> TargetError {
    TargetError::ClusterUnreachable {
        cluster: cluster.host().to_string(),
        message: format!("no answer within {}s", PROBE_TIMEOUT.as_secs()),
    }
}

/// An error answered by the API server is a refusal; any other is unreachability.
fn cluster_error(cluster: &Cluster, e: &kube::Error) -> TargetError {
    let (cluster, message) = (cluster.host().to_string(), api_message(e));
    match e {
        kube::Error::Api(_) => TargetError::ClusterRefused { cluster, message },
        _ => TargetError::ClusterUnreachable { cluster, message },
    }
}

/// The ServiceAccount must exist where it is impersonated: impersonating a name that does
/// not exist would be refused only by RBAC, never named.
async fn service_account_exists(
    cluster: &Cluster,
    ns: &str,
    name: &str,
) -> Result<(), TargetError> {
    let api: Api<ServiceAccount> = Api::namespaced(cluster.client().clone(), ns);
    match tokio::time::timeout(PROBE_TIMEOUT, api.get_opt(name)).await {
        Ok(Ok(Some(_))) => Ok(()),
        Ok(Ok(None)) => Err(TargetError::ServiceAccountNotFound {
            namespace: ns.to_string(),
            name: name.to_string(),
            cluster: cluster.host().to_string(),
        }),
        Ok(Err(e)) => Err(cluster_error(cluster, &e)),
        Err(_) => Err(no_answer(cluster)),
    }
}
