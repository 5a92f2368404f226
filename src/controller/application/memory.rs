//! What the Application reconciler remembers between reconciles, in memory only (a restart
//! forgets it and loses nothing but time): the rendered set per revision, when the inventory
//! was last compared in full, the syncs that outlived their slot, and the consecutive
//! failures its backoffs count. Owned here and reached through [`AppContext`], beside the
//! state every reconciler shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;

use crate::controller::context::{Context, backoff};

use super::packed_set::PackedSet;

type AppKey = (String, String);

/// The rendered set of an Application at (revision, generation, set, hooks digest), kept
/// between reconciles so drift checks need no re-render.
pub type DesiredCache = Mutex<HashMap<AppKey, (String, Option<i64>, Arc<PackedSet>, u64)>>;

/// The Application reconciler's context: the shared one, and its own memory.
pub struct AppContext {
    shared: Arc<Context>,
    pub memory: Memory,
}

impl AppContext {
    pub fn new(shared: Arc<Context>) -> Self {
        Self {
            shared,
            memory: Memory::default(),
        }
    }
}

impl AsRef<Context> for AppContext {
    fn as_ref(&self) -> &Context {
        &self.shared
    }
}

impl std::ops::Deref for AppContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.shared
    }
}

/// Consecutive failed syncs of one revision at one generation, and when to try again.
#[derive(Debug, Clone)]
struct SyncFailures {
    revision: String,
    generation: Option<i64>,
    count: u32,
    retry_at: Instant,
}

/// The resourceVersion each Application had after this controller's last status write to
/// it, so a reconcile can tell whether its watch cache already holds that write (and read
/// the Application from the cache), lags it by a moment (and look again shortly, reading
/// nothing: status writes do not wake the reconciler, so nothing else would), or must read
/// it from the API server.
#[derive(Default)]
pub struct StatusWrites(Mutex<HashMap<AppKey, Written>>);

struct Written {
    /// Empty when the write's outcome is unknown.
    version: String,
    at: Instant,
    /// A reconcile already looked again shortly for this write.
    waited: bool,
}

/// What a reconcile does with its cached Application.
#[derive(Debug, PartialEq, Eq)]
pub enum Cached {
    /// It holds this controller's last status write: use it.
    Current,
    /// It lags a write made a moment ago: look again in [`WATCH_LAG_RETRY`].
    Lagging,
    /// Read the Application from the API server.
    Read,
}

/// How long after a status write a cache without it is waited for (once) rather than read.
const WATCH_LAG_WAIT: Duration = Duration::from_secs(5);
/// When a reconcile whose cache lags looks again.
pub const WATCH_LAG_RETRY: Duration = Duration::from_millis(500);

impl StatusWrites {
    /// After a status write: the version it produced, or `None` when the write's outcome is
    /// unknown (an error), which sends the next reconcile to the API server.
    pub fn wrote(&self, namespace: &str, name: &str, version: Option<String>) {
        self.0.lock().expect("status writes").insert(
            key(namespace, name),
            Written {
                version: version.unwrap_or_default(),
                at: Instant::now(),
                waited: false,
            },
        );
    }

    /// Whether a cached Application at `version` holds this controller's last status write
    /// to it: the same version, or a later one when versions are numbers (etcd's are); or
    /// no write was made since the controller started (the cache's first list is newer than
    /// anything this process wrote). A cache that lags a write of the last seconds is waited
    /// for once; after that, or for a write whose outcome is unknown, it is read.
    pub fn cached(&self, namespace: &str, name: &str, version: Option<&str>) -> Cached {
        let mut writes = self.0.lock().expect("status writes");
        let Some(w) = writes.get_mut(&key(namespace, name)) else {
            return Cached::Current;
        };
        if w.version.is_empty() {
            return Cached::Read;
        }
        let later = match (w.version.parse::<u64>(), version.map(str::parse::<u64>)) {
            (Ok(written), Some(Ok(seen))) => seen >= written,
            _ => Some(w.version.as_str()) == version,
        };
        if later {
            return Cached::Current;
        }
        if !w.waited && w.at.elapsed() < WATCH_LAG_WAIT {
            w.waited = true;
            return Cached::Lagging;
        }
        Cached::Read
    }

    pub fn forget(&self, namespace: &str, name: &str) {
        self.0
            .lock()
            .expect("status writes")
            .remove(&key(namespace, name));
    }
}

/// When each Application last asked the API server about a source the watch cache shows
/// without an artifact. In between, the cache is trusted (the source's first artifact wakes
/// the Application through the watch, so nothing is read or written meanwhile); once every
/// [`SOURCE_CACHE_TRUSTED`], the API server is asked (a watch can lag, e.g. after an API
/// server restart).
#[derive(Default)]
pub struct SourceWaits(Mutex<HashMap<AppKey, Instant>>);

/// How long a cached source without an artifact is taken at its word.
pub const SOURCE_CACHE_TRUSTED: std::time::Duration = std::time::Duration::from_secs(10);

/// Entries kept at most (Applications deleted while waiting leave theirs).
const MAX_SOURCE_WAITS: usize = 100_000;

impl SourceWaits {
    /// Whether the cache is trusted now: it is, except once every [`SOURCE_CACHE_TRUSTED`]
    /// of a wait (the first wait begins now), when the API server is asked instead.
    pub fn fresh(&self, namespace: &str, name: &str) -> bool {
        let mut waits = self.0.lock().expect("source waits");
        if waits.len() >= MAX_SOURCE_WAITS {
            waits.clear();
        }
        let since = waits
            .entry(key(namespace, name))
            .or_insert_with(Instant::now);
        if since.elapsed() < SOURCE_CACHE_TRUSTED {
            return true;
        }
        *since = Instant::now();
        false
    }

    /// The Application has its artifact: a later wait begins anew.
    pub fn done(&self, namespace: &str, name: &str) {
        self.0
            .lock()
            .expect("source waits")
            .remove(&key(namespace, name));
    }
}

/// The Applications (by uid) this controller added its finalizer to, so a reconcile whose
/// cache does not show it yet does not add it again.
#[derive(Default)]
pub struct Finalized(Mutex<std::collections::HashSet<String>>);

impl Finalized {
    pub fn insert(&self, uid: &str) {
        self.0.lock().expect("finalized").insert(uid.to_string());
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.0.lock().expect("finalized").contains(uid)
    }

    pub fn remove(&self, uid: &str) {
        self.0.lock().expect("finalized").remove(uid);
    }
}

#[derive(Default)]
pub struct Memory {
    pub desired: DesiredCache,
    /// Applications this controller gave its finalizer.
    pub finalizers: Finalized,
    /// The versions this controller's status writes produced.
    pub status_writes: StatusWrites,
    /// Sync statuses held back until the health of what they applied is known.
    pub pending: super::pending::PendingStatus,
    /// Applications waiting for their source's first artifact.
    pub source_waits: SourceWaits,
    /// The GitRepositories of this shard, as watched (set once the controller runs).
    pub sources: std::sync::OnceLock<kube::runtime::reflector::Store<crate::api::GitRepository>>,
    /// When each Application's inventory was last compared in full (so a no-op check
    /// writes nothing).
    pub last_full_check: Mutex<HashMap<AppKey, Instant>>,
    /// Reconciles that outlived their slot (waiting on hooks, waves, health).
    pub detached: Detached,
    /// Consecutive failures to reach an Application's cluster, for the backoff.
    target_failures: Mutex<HashMap<AppKey, u32>>,
    /// Consecutive failed syncs of one revision per Application, for the backoff.
    sync_failures: Mutex<HashMap<AppKey, SyncFailures>>,
}

fn key(namespace: &str, name: &str) -> AppKey {
    (namespace.to_string(), name.to_string())
}

impl Memory {
    /// A GitRepository as the watch of this shard's sources holds it (`None` before the
    /// watch runs or when it does not hold it).
    pub fn cached_source(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<crate::api::GitRepository>> {
        self.sources.get().and_then(|store| {
            store.get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace))
        })
    }

    /// The wait before the next attempt at `revision` after a failed sync: `base`, doubled
    /// with every consecutive failure of the same revision, at most 5 minutes. A new
    /// revision starts again at `base`.
    pub fn sync_backoff(
        &self,
        namespace: &str,
        name: &str,
        revision: &str,
        generation: Option<i64>,
        base: Duration,
    ) -> Duration {
        let now = Instant::now();
        let mut failures = self.sync_failures.lock().expect("sync failures");
        let entry = failures
            .entry(key(namespace, name))
            .or_insert_with(|| SyncFailures {
                revision: revision.to_string(),
                generation,
                count: 0,
                retry_at: now,
            });
        if entry.revision != revision || entry.generation != generation {
            entry.revision = revision.to_string();
            entry.generation = generation;
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        let wait = backoff(base, entry.count, Duration::from_secs(300));
        entry.retry_at = now + wait;
        wait
    }

    /// How long a sync of `revision` at `generation` that failed is still backing off
    /// (status writes and other events reconcile the Application earlier; they do not
    /// retry the sync).
    pub fn sync_retry_in(
        &self,
        namespace: &str,
        name: &str,
        revision: &str,
        generation: Option<i64>,
    ) -> Option<Duration> {
        let failures = self.sync_failures.lock().expect("sync failures");
        let f = failures.get(&key(namespace, name))?;
        (f.revision == revision && f.generation == generation)
            .then(|| f.retry_at.checked_duration_since(Instant::now()))
            .flatten()
            .filter(|d| !d.is_zero())
    }

    /// Forgets the failed syncs of an Application (it synced).
    pub fn forget_sync_failures(&self, namespace: &str, name: &str) {
        self.sync_failures
            .lock()
            .expect("sync failures")
            .remove(&key(namespace, name));
    }

    /// With `unreachable`, the backoff before the next look at an Application whose cluster
    /// did not answer (5 s, doubling, at most 5 min); otherwise forgets its failures.
    pub fn target_backoff(&self, namespace: &str, name: &str, unreachable: bool) -> Option<Action> {
        let mut failures = self.target_failures.lock().expect("target failures");
        if !unreachable {
            failures.remove(&key(namespace, name));
            return None;
        }
        let n = failures.entry(key(namespace, name)).or_insert(0);
        *n = n.saturating_add(1);
        Some(Action::requeue(backoff(
            Duration::from_secs(5),
            *n,
            Duration::from_secs(300),
        )))
    }
}

/// A reconcile task that outlived its slot.
pub(super) struct Running {
    pub(super) id: u64,
    pub(super) abort: tokio::task::AbortHandle,
    pub(super) generation: Option<i64>,
    /// The source revision the task is syncing, once it knows it.
    pub(super) revision: Option<String>,
}

/// The Applications whose reconcile task outlived its slot (see `detach`).
#[derive(Default)]
pub struct Detached {
    pub(super) running: Mutex<HashMap<AppKey, Running>>,
    pub(super) next_id: std::sync::atomic::AtomicU64,
}

impl Detached {
    /// Notes the revision the running task of `ns/name` works on.
    pub fn note_revision(&self, ns: &str, name: &str, revision: &str) {
        if revision.is_empty() {
            return;
        }
        let key = (ns.to_string(), name.to_string());
        if let Some(r) = self.running.lock().expect("detached").get_mut(&key) {
            r.revision = Some(revision.to_string());
        }
    }

    /// Whether a task of `ns/name` is running.
    pub fn is_running(&self, ns: &str, name: &str) -> bool {
        let key = (ns.to_string(), name.to_string());
        self.running.lock().expect("detached").contains_key(&key)
    }

    /// Ends the running task of `ns/name`, if any (before the Application is deleted).
    pub fn end(&self, ns: &str, name: &str) {
        let key = (ns.to_string(), name.to_string());
        if let Some(r) = self.running.lock().expect("detached").remove(&key) {
            r.abort.abort();
        }
    }

    pub(super) fn forget(&self, key: &AppKey, id: u64) {
        let mut running = self.running.lock().expect("detached");
        if running.get(key).is_some_and(|r| r.id == id) {
            running.remove(key);
        }
    }
}

#[cfg(test)]
mod source_wait_tests {
    use super::*;

    #[test]
    fn a_wait_is_fresh_until_the_trusted_time_and_begins_anew_after_an_artifact() {
        let waits = SourceWaits::default();
        assert!(waits.fresh("ns", "a"));
        assert!(waits.fresh("ns", "a"));
        waits
            .0
            .lock()
            .unwrap()
            .insert(key("ns", "a"), Instant::now() - SOURCE_CACHE_TRUSTED);
        assert!(!waits.fresh("ns", "a"), "past the trusted time: asked once");
        assert!(waits.fresh("ns", "a"), "and trusted again for as long");
        waits.done("ns", "a");
        assert!(waits.fresh("ns", "a"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_used_when_it_holds_the_last_status_write_and_waited_for_once() {
        let writes = StatusWrites::default();
        // Nothing written since the start: the cache's first list is newer than that.
        assert_eq!(writes.cached("ns", "a", Some("7")), Cached::Current);
        writes.wrote("ns", "a", Some("12".into()));
        assert_eq!(writes.cached("ns", "a", Some("12")), Cached::Current);
        assert_eq!(
            writes.cached("ns", "a", Some("13")),
            Cached::Current,
            "changed since, so it holds the write"
        );
        assert_eq!(
            writes.cached("ns", "a", Some("7")),
            Cached::Lagging,
            "lags the write: waited for"
        );
        assert_eq!(
            writes.cached("ns", "a", Some("7")),
            Cached::Read,
            "once; then read"
        );
        writes.wrote("ns", "a", Some("14".into()));
        assert_eq!(writes.cached("ns", "a", Some("12")), Cached::Lagging);
        // Versions that are not numbers: only the same one is known to hold the write.
        writes.wrote("ns", "a", Some("x2".into()));
        assert_eq!(writes.cached("ns", "a", Some("x2")), Cached::Current);
        assert_eq!(writes.cached("ns", "a", Some("x3")), Cached::Lagging);
        // A write whose outcome is unknown: read from the API server until the next one.
        writes.wrote("ns", "a", None);
        assert_eq!(writes.cached("ns", "a", Some("12")), Cached::Read);
        assert_eq!(writes.cached("ns", "a", None), Cached::Read);
        writes.forget("ns", "a");
        assert_eq!(writes.cached("ns", "a", Some("12")), Cached::Current);
        assert_eq!(writes.cached("ns", "b", Some("1")), Cached::Current);
    }

    #[test]
    fn a_revision_backs_off_until_it_synced_or_another_came() {
        let m = Memory::default();
        let base = Duration::from_secs(2);
        assert_eq!(m.sync_backoff("ns", "a", "r1", Some(1), base), base);
        assert_eq!(m.sync_backoff("ns", "a", "r1", Some(1), base), base * 2);
        assert!(m.sync_retry_in("ns", "a", "r1", Some(1)).is_some());
        assert!(
            m.sync_retry_in("ns", "a", "r2", Some(1)).is_none(),
            "a new revision is not held"
        );
        assert_eq!(
            m.sync_backoff("ns", "a", "r2", Some(1), base),
            base,
            "and starts again"
        );
        m.forget_sync_failures("ns", "a");
        assert!(m.sync_retry_in("ns", "a", "r2", Some(1)).is_none());
        assert!(m.target_backoff("ns", "a", false).is_none());
        assert!(m.target_backoff("ns", "a", true).is_some());
    }
}
