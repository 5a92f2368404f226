//! Watches of managed objects, one per kind (not per object), that mark the changed objects
//! of an Application as dirty and trigger its reconcile within a second. Kinds whose health
//! is re-read after a sync are watched whole and their verdicts kept in the [`HealthBook`]
//! (a change of health triggers the reconcile too); every other kind is watched as
//! metadata only. What each watch holds ([`KindView`]) also answers the periodic full check,
//! which reads only the objects the watch cannot vouch for.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

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
use crate::health::book::{HealthBook, ObjectKey};
use crate::health::{self, Verdict};

use super::view::{KindView, Name};

type AppKey = (String, String);
/// (group, version, kind).
type KindKey = (String, String, String);
/// A kind's watch task and what it holds.
type Running = (tokio::task::JoinHandle<()>, Arc<Mutex<KindView>>);

/// The wait before a drift watch refused for a while is tried again.
const MAX_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

pub struct DriftWatches {
    client: Client,
    /// Only Applications in this namespace are triggered (namespace-scoped controllers).
    namespace: Option<String>,
    running: Mutex<HashMap<KindKey, Running>>,
    dirty: std::sync::Arc<Mutex<HashMap<AppKey, BTreeSet<InventoryEntry>>>>,
    tx: mpsc::Sender<ObjectRef<Application>>,
    /// Versions this controller's applies produced: their events are not drift.
    own: std::sync::Arc<OwnWrites>,
    /// The health of the objects of the kinds that have health checks.
    health: std::sync::Arc<HealthBook>,
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
            health: Default::default(),
        }
    }

    /// The health the watches saw (the Appliers of this cluster note their applies there).
    pub fn health_book(&self) -> std::sync::Arc<HealthBook> {
        self.health.clone()
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
            let view = Arc::new(Mutex::new(KindView::default()));
            let sink = Sink {
                group: ar.group.clone(),
                kind: ar.kind.clone(),
                version: ar.version.clone(),
                scope: self.namespace.clone(),
                dirty: self.dirty.clone(),
                tx: self.tx.clone(),
                own: self.own.clone(),
                health: self.health.clone(),
                view: view.clone(),
            };
            let handle = if health::has_check(&ar.group, &ar.kind) {
                let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
                tokio::spawn(watch_kind(api, sink, |o: DynamicObject, group, kind| {
                    let value = serde_json::to_value(&o).unwrap_or_default();
                    (o.metadata, Some(health::assess(group, kind, &value)))
                }))
            } else {
                let api: Api<PartialObjectMeta<DynamicObject>> =
                    Api::all_with(self.client.clone(), &ar);
                tokio::spawn(watch_kind(
                    api,
                    sink,
                    |o: PartialObjectMeta<DynamicObject>, _, _| (o.metadata, None),
                ))
            };
            running.insert(key, (handle, view));
        }
    }

    /// Whether the kind's watch vouches that the object has not changed unseen since it
    /// saw it: listed and current, the object held, with the labels and annotations Git
    /// declares (`declared`, their hashes: [`super::view::metadata_hashes`]). Otherwise the
    /// object must be read to be checked.
    pub fn vouches_for(&self, e: &InventoryEntry, declared: &[u64]) -> bool {
        let key = (e.group.clone(), e.version.clone(), e.kind.clone());
        let Some(view) = self
            .running
            .lock()
            .expect("drift watches")
            .get(&key)
            .map(|(_, v)| v.clone())
        else {
            return false;
        };
        let name = (e.namespace.clone(), e.name.clone());
        view.lock()
            .expect("drift view")
            .vouches_for(&name, declared)
    }

    /// Marks objects of an Application dirty again (a check of them did not complete).
    pub fn mark_dirty(&self, namespace: &str, name: &str, entries: BTreeSet<InventoryEntry>) {
        if entries.is_empty() {
            return;
        }
        self.dirty
            .lock()
            .expect("drift dirty set")
            .entry((namespace.to_string(), name.to_string()))
            .or_default()
            .extend(entries);
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
        for (_, (h, _)) in self.running.lock().expect("drift watches").drain() {
            h.abort();
        }
    }
}

/// Where the events of one kind's watch go.
struct Sink {
    group: String,
    kind: String,
    version: String,
    /// Only Applications in this namespace are triggered.
    scope: Option<String>,
    dirty: std::sync::Arc<Mutex<HashMap<AppKey, BTreeSet<InventoryEntry>>>>,
    tx: mpsc::Sender<ObjectRef<Application>>,
    own: std::sync::Arc<OwnWrites>,
    health: std::sync::Arc<HealthBook>,
    /// What the watch saw of each object (status-only updates of objects with a generation
    /// do not count as changes).
    view: Arc<Mutex<KindView>>,
}

/// One object of a watch: its metadata, and its verdict when its kind has health checks.
type Observed = (kube::core::ObjectMeta, Option<Verdict>);

/// Watches one kind; `observe` makes each object's metadata and verdict.
async fn watch_kind<K>(
    api: Api<K>,
    mut sink: Sink,
    observe: impl Fn(K, &str, &str) -> Observed + Send + 'static,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let config =
        // Every object an Application applied carries its label (a chart may keep its
        // own `managed-by`).
        watcher::Config::default().labels(APPLICATION_LABEL);
    let mut stream = watcher::watcher(api, config).boxed();
    // Objects listed by a (re)list are compared with what was seen before it, so a change
    // made while the watch was starting or disconnected is not missed.
    let mut listed: Vec<Observed> = vec![];
    let mut failures: u32 = 0;
    let (group, kind) = (sink.group.clone(), sink.kind.clone());
    while let Some(event) = stream.next().await {
        let batch: Vec<(Observed, bool)> = match event {
            Ok(Event::Init) => {
                listed.clear();
                continue;
            }
            Ok(Event::InitApply(o)) => {
                listed.push(observe(o, &group, &kind));
                continue;
            }
            Ok(Event::InitDone) => {
                // The book takes the verdicts of the whole list at once; each object is then
                // looked at for drift only.
                let listed = std::mem::take(&mut listed);
                sink.relisted(&listed);
                failures = 0;
                let names: HashSet<Name> = listed
                    .iter()
                    .map(|(m, _)| (m.namespace.clone(), m.name.clone().unwrap_or_default()))
                    .collect();
                for (meta, _) in listed {
                    sink.note_change(meta, false, false);
                }
                // Deleted while the watch was away: a change too.
                let gone = sink.view.lock().expect("drift view").relisted(&names);
                for ((namespace, name), owner) in gone {
                    let meta = kube::core::ObjectMeta {
                        namespace,
                        name: Some(name),
                        labels: owner.map(|o| BTreeMap::from([(APPLICATION_LABEL.to_string(), o)])),
                        ..Default::default()
                    };
                    sink.note_change(meta, true, false);
                }
                continue;
            }
            Ok(Event::Apply(o)) => vec![(observe(o, &group, &kind), false)],
            Ok(Event::Delete(o)) => vec![(observe(o, &group, &kind), true)],
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
                // What was missed meanwhile is not known: health is read again until the
                // watch has listed.
                sink.health.unsynced(&group, &kind);
                sink.view.lock().expect("drift view").unsynced();
                tracing::debug!(kind = %kind, error = %e, ?wait, "drift watch error (retrying)");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        failures = 0;
        for ((meta, verdict), deleted) in batch {
            let health_changed = match verdict {
                Some(verdict) if !deleted => {
                    sink.health
                        .observe(sink.key(&meta), meta.resource_version.as_deref(), verdict)
                }
                Some(_) => {
                    sink.health.forget(&sink.key(&meta));
                    false
                }
                None => false,
            };
            sink.note_change(meta, deleted, health_changed);
        }
    }
}

impl Sink {
    fn key(&self, meta: &kube::core::ObjectMeta) -> ObjectKey {
        (
            self.group.clone(),
            self.kind.clone(),
            meta.namespace.clone(),
            meta.name.clone().unwrap_or_default(),
        )
    }

    /// A (re)list of a kind with health checks replaces what the book held of it.
    fn relisted(&self, listed: &[Observed]) {
        if !health::has_check(&self.group, &self.kind) {
            return;
        }
        let verdicts = listed
            .iter()
            .filter_map(|(meta, verdict)| {
                verdict
                    .clone()
                    .map(|v| (self.key(meta), meta.resource_version.clone(), v))
            })
            .collect();
        // Every object of the list is looked at for drift by the caller anyway.
        self.health.relisted(&self.group, &self.kind, verdicts);
    }

    /// Marks the object dirty for its Application when it changed and the change is not
    /// this controller's own apply; triggers the Application when its health changed.
    fn note_change(&mut self, meta: kube::core::ObjectMeta, deleted: bool, health_changed: bool) {
        let uid = meta.uid.clone().unwrap_or_default();
        // This controller's own apply (its result is known): not a change to look into.
        let own_write = !deleted
            && meta
                .resource_version
                .as_deref()
                .is_some_and(|rv| self.own.is_own(&uid, rv));
        let changed = {
            let mut view = self.view.lock().expect("drift view");
            if deleted {
                view.deleted(&meta);
                true
            } else {
                view.saw(&meta)
            }
        };
        let drifted = changed && !own_write;
        if !drifted && !health_changed {
            return;
        }
        let Some(owner) = meta.labels.as_ref().and_then(|l| l.get(APPLICATION_LABEL)) else {
            return;
        };
        let Some((app_ns, app_name)) = owner.split_once('.') else {
            return;
        };
        if self.scope.as_deref().is_some_and(|s| s != app_ns) {
            return;
        }
        if drifted {
            let entry = InventoryEntry {
                group: self.group.clone(),
                version: self.version.clone(),
                kind: self.kind.clone(),
                namespace: meta.namespace.clone(),
                name: meta.name.clone().unwrap_or_default(),
            };
            self.dirty
                .lock()
                .expect("drift dirty set")
                .entry((app_ns.to_string(), app_name.to_string()))
                .or_default()
                .insert(entry);
        }
        tracing::debug!(application = %owner, kind = %self.kind, name = ?meta.name, deleted, drifted, health_changed, "managed object changed");
        let _ = self.tx.try_send(ObjectRef::new(app_name).within(app_ns));
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
