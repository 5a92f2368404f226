//! One API server: the controller's own client to it, its discovery cache and drift
//! watches (shared by every identity on it), and one Target per identity, built once and
//! reused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Config};

use super::Target;
use super::rate_limit::{Budget, ClientLimits};
use crate::api::Application;
use crate::apply::applier::Applier;
use crate::apply::discovery::Discovery;
use crate::drift::watch::DriftWatches;

pub struct Cluster {
    config: Config,
    client: Client,
    discovery: Arc<Discovery>,
    drift: Arc<DriftWatches>,
    host: String,
    limits: ClientLimits,
    /// The request budget toward this API server, spent by every identity on it.
    budget: Budget,
    /// Object writes in flight toward this API server, by every identity on it.
    writes: Option<Arc<tokio::sync::Semaphore>>,
    /// Targets by impersonated user (`None`: the controller's own identity).
    identities: Mutex<HashMap<Option<String>, Arc<Target>>>,
}

impl Cluster {
    pub fn new(
        config: Config,
        limits: ClientLimits,
        namespace: Option<String>,
        tx: mpsc::Sender<ObjectRef<Application>>,
    ) -> Result<Self, kube::Error> {
        let budget = Budget::new(&limits);
        let client = budget.client(config.clone())?;
        let host = config
            .cluster_url
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        Ok(Self {
            drift: Arc::new(DriftWatches::with_sender(client.clone(), namespace, tx)),
            config,
            client,
            discovery: Default::default(),
            host,
            writes: (limits.writes_in_flight > 0)
                .then(|| Arc::new(tokio::sync::Semaphore::new(limits.writes_in_flight))),
            limits,
            budget,
            identities: Default::default(),
        })
    }

    /// The API server's host (and port).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The controller's own client to this cluster.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The target acting as `user` (impersonated), or as the controller when `None`.
    pub fn as_identity(&self, user: Option<String>) -> Result<Arc<Target>, kube::Error> {
        let mut identities = self.identities.lock().expect("identities");
        if let Some(t) = identities.get(&user) {
            return Ok(t.clone());
        }
        let client = match &user {
            None => self.client.clone(),
            Some(u) => {
                let mut config = self.config.clone();
                config.auth_info.impersonate = Some(u.clone());
                config.auth_info.impersonate_groups = None;
                self.budget.client(config)?
            }
        };
        let target = Arc::new(Target {
            applier: Applier::on_cluster(
                client,
                self.client.clone(),
                self.discovery.clone(),
                self.limits.concurrency,
            )
            .with_own_writes(self.drift.own_writes())
            .with_health_book(self.drift.health_book())
            .with_write_bound(self.writes.clone()),
            drift: self.drift.clone(),
            cluster: self.host.clone(),
            identity: user.clone(),
        });
        identities.insert(user, target.clone());
        Ok(target)
    }
}
