//! API discovery per kind, cached: which resource serves a kind and whether it is namespaced.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::Client;
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;

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
}

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
    }
}
