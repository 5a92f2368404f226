//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder reconciles, writes
//! back, runs canaries and serves webhook triggers. A standby waits for the Lease; a holder
//! that cannot renew it stops at once (the process exits and is restarted as a standby), and
//! SIGTERM releases it after the in-flight reconciles finish, so the next replica takes
//! over without waiting for the Lease to expire.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::watcher;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;

/// Which Lease, held as whom.
#[derive(Clone, Debug)]
pub struct Election {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease (one per shard).
    pub name: String,
    /// This replica's identity (the Pod name in a cluster).
    pub identity: String,
    /// How long a holder that stops renewing keeps the Lease.
    pub duration: Duration,
}

/// The Lease name of a shard: `<id>`, or `<id>-<shard>`.
pub fn lease_name(id: &str, shard: Option<&str>) -> String {
    match shard {
        Some(s) => format!("{id}-{s}"),
        None => id.to_string(),
    }
}

/// Seconds of a duration as the Lease API counts them, at least 2.
fn seconds(d: Duration) -> u64 {
    d.as_secs().max(2)
}

/// The time before expiry at which a holder renews: a third of the duration, at least a
/// second (the holder renews twice per duration, so one lost request does not lose it).
fn grace(duration: u64) -> u64 {
    (duration / 3).max(1)
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("Lease {namespace}/{name}: {source}")]
    Lease {
        namespace: String,
        name: String,
        source: kube_lease_manager::LeaseManagerError,
    },
    #[error("lost the Lease {namespace}/{name}; stopping so that only one replica writes")]
    Lost { namespace: String, name: String },
}

/// A held Lease. Dropping it stops renewing (the Lease then expires); `release` frees it.
pub struct Leadership {
    election: Election,
    manager: Arc<LeaseManager>,
    held: watch::Receiver<bool>,
    renew: tokio::task::JoinHandle<()>,
}

impl Election {
    fn error(&self, source: kube_lease_manager::LeaseManagerError) -> LeaseError {
        LeaseError::Lease {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    /// A lease manager that has just read the Lease (creating it if needed).
    async fn manager(&self, client: &Client) -> Result<LeaseManager, LeaseError> {
        let duration = seconds(self.duration);
        LeaseManagerBuilder::new(client.clone(), &self.name)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_duration(duration)
            .with_grace(grace(duration))
            .with_field_manager(format!("gantry-lease-{}", self.identity))
            .build()
            .await
            .map_err(|e| self.error(e))
    }

    /// Waits until this replica holds the Lease (creating it if needed), then keeps
    /// renewing it in the background.
    pub async fn acquire(self, client: Client) -> Result<Leadership, LeaseError> {
        let mut manager = Arc::new(self.manager(&client).await?);
        let leases: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        // `changed` returns when the holder changes; while another replica holds the Lease
        // it sleeps until the Lease would expire, on what it read before. A holder that
        // releases the Lease (SIGTERM) is seen on a watch of it, and the standby reads it
        // afresh (a new manager) and takes it at once.
        loop {
            tokio::select! {
                changed = manager.changed() => match changed {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %self.error(e), "waiting for the Lease");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                () = released(&leases, &self.name) => {
                    tracing::debug!("the holder released the Lease");
                    match self.manager(&client).await {
                        Ok(m) => manager = Arc::new(m),
                        Err(e) => tracing::warn!(error = %e, "waiting for the Lease"),
                    }
                }
            }
        }
        tracing::info!(
            lease = %format!("{}/{}", self.namespace, self.name),
            identity = %self.identity,
            "holding the Lease: this replica reconciles"
        );
        let (tx, held) = watch::channel(true);
        let renew = {
            let manager = manager.clone();
            let election = self.clone();
            tokio::spawn(async move {
                // Any answer other than "still held" ends the leadership: an error while
                // renewing means the Lease may expire before the next attempt succeeds.
                let why = match manager.changed().await {
                    Ok(true) => "renewed as new holder".to_string(),
                    Ok(false) => "another replica holds the Lease".to_string(),
                    Err(e) => election.error(e).to_string(),
                };
                tracing::error!(reason = %why, "lost the Lease");
                let _ = tx.send(false);
            })
        };
        Ok(Leadership {
            election: self,
            manager,
            held,
            renew,
        })
    }
}

/// Resolves when the Lease `name` is seen without a holder (after the watch started).
async fn released(leases: &Api<Lease>, name: &str) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher::watcher(leases.clone(), config).boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(lease)) => {
                let holder = lease.spec.and_then(|s| s.holder_identity);
                if holder.is_none_or(|h| h.is_empty()) {
                    return;
                }
            }
            Ok(_) => {}
            // Not watchable (RBAC, a restarting API server): the expiry wait still works.
            Err(_) => tokio::time::sleep(Duration::from_secs(5)).await,
        }
    }
    std::future::pending::<()>().await
}

impl Leadership {
    /// Resolves when the Lease is no longer held.
    pub async fn lost(&self) -> LeaseError {
        let mut held = self.held.clone();
        let _ = held.wait_for(|h| !*h).await;
        LeaseError::Lost {
            namespace: self.election.namespace.clone(),
            name: self.election.name.clone(),
        }
    }

    /// Stops renewing and frees the Lease for the next replica.
    pub async fn release(self) {
        self.renew.abort();
        match self.manager.release().await {
            Ok(()) => tracing::info!(
                lease = %format!("{}/{}", self.election.namespace, self.election.name),
                "released the Lease"
            ),
            Err(e) => {
                tracing::warn!(error = %self.election.error(e), "could not release the Lease; it expires by itself")
            }
        }
    }
}

/// The identity of this replica: `POD_NAME` (set by the chart), else the host name and the
/// process id (two processes on one host never share an identity).
pub fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "gantry".into());
    format!("{host}-{}", std::process::id())
}

/// The namespace of the Lease when no flag names one: `POD_NAMESPACE`, the in-cluster
/// service account's namespace, the watched namespace, else `default`.
pub fn default_namespace(watched: Option<&str>) -> String {
    if let Ok(ns) = std::env::var("POD_NAMESPACE")
        && !ns.is_empty()
    {
        return ns;
    }
    if let Ok(ns) =
        std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        && !ns.trim().is_empty()
    {
        return ns.trim().to_string();
    }
    watched.unwrap_or("default").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shard_has_its_own_lease() {
        assert_eq!(lease_name("gantry", None), "gantry");
        assert_eq!(lease_name("gantry", Some("eu")), "gantry-eu");
    }

    #[test]
    fn a_holder_renews_before_expiry_with_room_for_one_failed_attempt() {
        assert_eq!(grace(15), 5);
        assert_eq!(grace(2), 1);
        assert_eq!(seconds(Duration::from_millis(500)), 2);
        assert_eq!(seconds(Duration::from_secs(15)), 15);
    }
}
