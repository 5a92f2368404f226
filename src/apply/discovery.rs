//! API discovery per kind, cached: which resource serves a kind and whether it is namespaced.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::Client;
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;

use crate::render::Capabilities;

#[derive(Clone, Debug)]
pub struct Resolved {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// A cache of successful look-ups; unknown kinds are asked again next time (a CRD may have
/// been installed meanwhile).
#[derive(Default)]
pub struct Discovery {
    cache: Mutex<HashMap<(String, String, String), Resolved>>,
    /// Held while a kind the cache lacks is looked up: the syncs that need it at the same
    /// moment (a fleet's first syncs) wait for the one answer instead of each asking.
    lookup: tokio::sync::Mutex<()>,
    /// The cluster's version and API versions, with the time they were read.
    capabilities: Mutex<Option<(std::time::Instant, std::sync::Arc<Capabilities>)>>,
}

/// How long the cluster's capabilities are reused (a CRD installed meanwhile shows up after
/// this, or at once when a CRD of the set changes: [`Discovery::invalidate`]).
const CAPABILITIES_TTL: std::time::Duration = std::time::Duration::from_secs(300);

impl Discovery {
    pub async fn resolve(
        &self,
        client: &Client,
        group: &str,
        version: &str,
        kind: &str,
    ) -> Result<Option<Resolved>, kube::Error> {
        let key = (group.to_string(), version.to_string(), kind.to_string());
        if let Some(r) = self.cache.lock().expect("discovery cache").get(&key) {
            return Ok(Some(r.clone()));
        }
        let _one_at_a_time = self.lookup.lock().await;
        if let Some(r) = self.cache.lock().expect("discovery cache").get(&key) {
            return Ok(Some(r.clone()));
        }
        let gvk = GroupVersionKind::gvk(group, version, kind);
        match kube::discovery::pinned_kind(client, &gvk).await {
            Ok((resource, caps)) => {
                let r = Resolved {
                    resource,
                    namespaced: caps.scope == Scope::Namespaced,
                };
                self.cache
                    .lock()
                    .expect("discovery cache")
                    .insert(key, r.clone());
                Ok(Some(r))
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(kube::Error::Discovery(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Forgets everything about a group (after CRDs of that group changed).
    pub fn invalidate(&self, group: &str) {
        self.cache
            .lock()
            .expect("discovery cache")
            .retain(|k, _| k.0 != group);
        *self.capabilities.lock().expect("capabilities") = None;
    }

    /// The cluster's version and every served API version and kind (two aggregated
    /// discovery requests and `/version`), cached for five minutes.
    pub async fn capabilities(
        &self,
        client: &Client,
    ) -> Result<std::sync::Arc<Capabilities>, kube::Error> {
        if let Some((at, caps)) = &*self.capabilities.lock().expect("capabilities")
            && at.elapsed() < CAPABILITIES_TTL
        {
            return Ok(caps.clone());
        }
        let version = client.apiserver_version().await?;
        let discovery = kube::discovery::Discovery::new(client.clone())
            .run_aggregated()
            .await?;
        let mut api_versions = std::collections::BTreeSet::new();
        for group in discovery.groups() {
            for version in group.versions() {
                for (resource, _) in group.versioned_resources(version) {
                    api_versions.insert(resource.api_version.clone());
                    api_versions.insert(format!("{}/{}", resource.api_version, resource.kind));
                }
            }
        }
        let caps = std::sync::Arc::new(Capabilities {
            kube_version: version.git_version,
            api_versions: api_versions.into_iter().collect(),
        });
        *self.capabilities.lock().expect("capabilities") =
            Some((std::time::Instant::now(), caps.clone()));
        Ok(caps)
    }
}
