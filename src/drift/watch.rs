//! Metadata-only watches of managed objects, one per kind (not per object), that mark the
//! changed objects of an Application as dirty and trigger its reconcile within a second.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use futures::StreamExt;
use futures::channel::mpsc;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, PartialObjectMeta};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event};

use crate::api::application::{Application, InventoryEntry};
use crate::apply::APPLICATION_LABEL;
use crate::apply::own_writes::OwnWrites;

type AppKey = (String, String);

/// The wait before a drift watch refused for a while is tried again.
const MAX_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

pub struct DriftWatches {
    client: Client,
    /// Only Applications in this namespace are triggered (namespace-scoped controllers).
    namespace: Option<String>,
    running: Mutex<HashMap<(String, String, String), tokio::task::JoinHandle<()>>>,
    dirty: std::sync::Arc<Mutex<HashMap<AppKey, BTreeSet<InventoryEntry>>>>,
    tx: mpsc::Sender<ObjectRef<Application>>,
    /// Versions this controller's applies produced: their events are not drift.
    own: std::sync::Arc<OwnWrites>,
}

impl DriftWatches {
    /// Returns the registry and the stream of Applications to reconcile.
    pub fn new(
        client: Client,
        namespace: Option<String>,
    ) -> (Self, mpsc::Receiver<ObjectRef<Application>>) {
        let (tx, rx) = mpsc::channel(4096);
        (Self::with_sender(client, namespace, tx), rx)
    }

    /// Watches that report to an existing stream (one stream for every cluster).
    pub fn with_sender(
        client: Client,
        namespace: Option<String>,
        tx: mpsc::Sender<ObjectRef<Application>>,
    ) -> Self {
        Self {
            client,
            namespace,
            running: Mutex::default(),
            dirty: Default::default(),
            tx,
            own: Default::default(),
        }
    }

    /// Where the Appliers of this cluster note their writes.
    pub fn own_writes(&self) -> std::sync::Arc<OwnWrites> {
        self.own.clone()
    }

    /// Makes sure a watch runs for the kind of every entry.
    pub fn ensure(
        &self,
        entries: &[InventoryEntry],
        resource_of: impl Fn(&InventoryEntry) -> Option<ApiResource>,
    ) {
        let mut running = self.running.lock().expect("drift watches");
        for e in entries {
            let key = (e.group.clone(), e.version.clone(), e.kind.clone());
            if running.contains_key(&key) {
                continue;
            }
            let Some(ar) = resource_of(e) else { continue };
            let handle = tokio::spawn(watch_kind(
                self.client.clone(),
                ar,
                self.namespace.clone(),
                self.dirty.clone(),
                self.tx.clone(),
                self.own.clone(),
            ));
            running.insert(key, handle);
        }
    }

    /// The objects of an Application changed since the last call.
    pub fn take_dirty(&self, namespace: &str, name: &str) -> BTreeSet<InventoryEntry> {
        self.dirty
            .lock()
            .expect("drift dirty set")
            .remove(&(namespace.to_string(), name.to_string()))
            .unwrap_or_default()
    }
}

impl Drop for DriftWatches {
    fn drop(&mut self) {
        for (_, h) in self.running.lock().expect("drift watches").drain() {
            h.abort();
        }
    }
}

/// Watches one kind (`ar`: its group and kind name the inventory entries it marks).
async fn watch_kind(
    client: Client,
    ar: ApiResource,
    scope: Option<String>,
    dirty: std::sync::Arc<Mutex<HashMap<AppKey, BTreeSet<InventoryEntry>>>>,
    mut tx: mpsc::Sender<ObjectRef<Application>>,
    own: std::sync::Arc<OwnWrites>,
) {
    let (group, kind) = (ar.group.clone(), ar.kind.clone());
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client, &ar);
    let config =
        // Every object an Application applied carries its label (a chart may keep its
        // own `managed-by`).
        watcher::Config::default().labels(APPLICATION_LABEL);
    // Last seen (generation, resourceVersion) per uid: status-only updates of objects with a
    // generation do not count as changes.
    let mut seen: HashMap<String, (Option<i64>, Option<String>)> = HashMap::new();
    let mut stream = watcher::watcher(api, config).boxed();
    // Objects listed by a (re)list are compared with what was seen before it, so a change
    // made while the watch was starting or disconnected is not missed.
    let mut listed: Vec<PartialObjectMeta<DynamicObject>> = vec![];
    let mut failures: u32 = 0;
    while let Some(event) = stream.next().await {
        let batch: Vec<(kube::core::ObjectMeta, bool)> = match event {
            Ok(Event::Init) => {
                listed.clear();
                continue;
            }
            Ok(Event::InitApply(o)) => {
                listed.push(o);
                continue;
            }
            Ok(Event::InitDone) => std::mem::take(&mut listed)
                .into_iter()
                .map(|o| (o.metadata, false))
                .collect(),
            Ok(Event::Apply(o)) => vec![(o.metadata, false)],
            Ok(Event::Delete(o)) => vec![(o.metadata, true)],
            Err(e) => {
                // Retried every second: a lost connection, or an API server that refuses for a
                // moment while it starts (403 before its authorizer is ready). A watch refused
                // for longer than half a minute (an identity that may not make it, in a
                // locked-down install) is retried every 30 s instead, not in a hot loop.
                failures = if refused(&e) {
                    failures.saturating_add(1)
                } else {
                    0
                };
                let wait = if failures > 30 {
                    MAX_RETRY
                } else {
                    std::time::Duration::from_secs(1)
                };
                tracing::debug!(kind = %kind, error = %e, ?wait, "drift watch error (retrying)");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        failures = 0;
        for (meta, deleted) in batch {
            note_change(
                &mut seen,
                meta,
                deleted,
                &group,
                &kind,
                &ar.version,
                scope.as_deref(),
                &dirty,
                &mut tx,
                &own,
            );
        }
    }
}

/// Whether the API server refused the watch (not allowed), rather than not answering.
fn refused(e: &watcher::Error) -> bool {
    let code = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code,
        watcher::Error::WatchError(s) => s.code,
        _ => return false,
    };
    code == 401 || code == 403
}

#[allow(clippy::too_many_arguments)]
fn note_change(
    seen: &mut HashMap<String, (Option<i64>, Option<String>)>,
    meta: kube::core::ObjectMeta,
    deleted: bool,
    group: &str,
    kind: &str,
    version: &str,
    scope: Option<&str>,
    dirty: &Mutex<HashMap<AppKey, BTreeSet<InventoryEntry>>>,
    tx: &mut mpsc::Sender<ObjectRef<Application>>,
    own: &OwnWrites,
) {
    let uid = meta.uid.clone().unwrap_or_default();
    // This controller's own apply (its result is known): not a change to look into.
    let own_write = !deleted
        && meta
            .resource_version
            .as_deref()
            .is_some_and(|rv| own.is_own(&uid, rv));
    let now = (meta.generation, meta.resource_version.clone());
    let changed = deleted
        || match seen.get(&uid) {
            None => true,
            Some((g, rv)) => match (g, meta.generation) {
                (Some(old), Some(new)) => old != &new,
                _ => rv != &meta.resource_version,
            },
        };
    if deleted {
        seen.remove(&uid);
    } else {
        seen.insert(uid, now);
    }
    if !changed || own_write {
        return;
    }
    let Some(owner) = meta.labels.as_ref().and_then(|l| l.get(APPLICATION_LABEL)) else {
        return;
    };
    let Some((app_ns, app_name)) = owner.split_once('.') else {
        return;
    };
    if scope.is_some_and(|s| s != app_ns) {
        return;
    }
    let entry = InventoryEntry {
        group: group.to_string(),
        version: version.to_string(),
        kind: kind.to_string(),
        namespace: meta.namespace.clone(),
        name: meta.name.clone().unwrap_or_default(),
    };
    dirty
        .lock()
        .expect("drift dirty set")
        .entry((app_ns.to_string(), app_name.to_string()))
        .or_default()
        .insert(entry);
    tracing::debug!(application = %owner, kind, name = ?meta.name, deleted, "managed object changed");
    let _ = tx.try_send(ObjectRef::new(app_name).within(app_ns));
}
