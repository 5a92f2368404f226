//! State shared by every reconciler, built once and passed as `Arc<Context>`.

use std::path::{Path, PathBuf};

use kube::Client;
use kube::runtime::events::{EventType, Recorder, Reporter};

use crate::cluster::Targets;

type AppKey = (String, String);

/// The default of `--min-interval`.
pub const DEFAULT_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The finalizer Gantry puts on its own resources.
pub const FINALIZER: &str = "gantry.dev/finalizer";

/// `base` doubled for every failure after the first, at most `cap`.
pub fn backoff(
    base: std::time::Duration,
    failures: u32,
    cap: std::time::Duration,
) -> std::time::Duration {
    let doublings = failures.saturating_sub(1).min(16);
    base.saturating_mul(1u32 << doublings).min(cap)
}

pub struct Context {
    pub client: Client,
    /// Root of the Git caches and artifacts.
    pub data_dir: PathBuf,
    /// Checked-out trees of the GitRepositories.
    pub artifacts: crate::source::store::ArtifactStore,
    /// Where and as whom each Application's requests go.
    pub targets: Targets,
    /// The same clusters and identities for pull request plans, with a budget of their own.
    pub plan_targets: Targets,
    /// Pull request plans computed at once (`--max-plans`; 0: none).
    pub max_plans: usize,
    /// Kubernetes Events: one recorder per (object, reason) and note for warnings, so a
    /// repeated warning counts up its series while a new note is a new Event (kube's
    /// recorder keys series by reason alone and would keep showing the first note).
    pub recorders: EventRecorders,
    /// Registry clients and shared tag scans.
    pub scanner: crate::source::registry::Scanner,
    /// Webhook endpoints of the Receivers, shared with the HTTP server.
    pub endpoints: std::sync::Arc<crate::server::Endpoints>,
    /// Prometheus metrics (served by the receiver server on `/metrics`).
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// Whether the HTTP server for receivers runs.
    pub receivers_enabled: bool,
    /// The shortest time between two periodic runs of any resource (`--min-interval`).
    pub min_interval: std::time::Duration,
    /// The directory `file://` sources must be under (`--file-sources-root`).
    pub file_sources_root: Option<PathBuf>,
    /// The resources this controller reconciles.
    pub shard: super::shard::Shard,
    /// Resources of each kind reconciled at once (0: no bound).
    pub reconcile_concurrency: u16,
    /// The longest `spec.timeout` honoured (`--max-timeout`).
    pub max_timeout: std::time::Duration,
    /// Git fetches allowed at once, in all and per namespace.
    pub fetch_gate: crate::source::fetch_gate::FetchGate,
    /// Consecutive transient registry failures per ImagePolicy, for the backoff.
    pub registry_failures: std::sync::Mutex<std::collections::HashMap<AppKey, u32>>,
    /// When each GitRepository was last fetched (a fetch is due at its interval, a new
    /// generation or a request, not at every write to it).
    pub last_fetches: super::last_fetch::LastFetches,
}

/// Requests per second of all pull request plans toward one API server.
pub const PLAN_QPS: u32 = 10;

impl AsRef<Context> for Context {
    fn as_ref(&self) -> &Context {
        self
    }
}

impl Context {
    pub fn new(
        config: kube::Config,
        opts: &super::Options,
    ) -> crate::error::Result<(
        Self,
        futures::channel::mpsc::Receiver<
            kube::runtime::reflector::ObjectRef<crate::api::Application>,
        >,
    )> {
        let (targets, rx) = Targets::new(
            config.clone(),
            opts.limits,
            opts.namespace.clone(),
            opts.tenancy.clone(),
        )?;
        // Plans of pull requests have their own clients and request budget per API server:
        // a burst of plans never slows the syncs.
        let (plan_targets, _) = Targets::new(
            config,
            crate::cluster::ClientLimits {
                concurrency: 8,
                qps: PLAN_QPS,
                burst: PLAN_QPS * 2,
                writes_in_flight: 0,
            },
            opts.namespace.clone(),
            opts.tenancy.clone(),
        )?;
        let client = targets.local().applier.client().clone();
        let data_dir = opts.data_dir.clone();
        let reporter = Reporter {
            controller: "gantry".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let ctx = Self {
            recorders: EventRecorders::new(client.clone(), reporter),
            client,
            artifacts: crate::source::store::ArtifactStore::new(data_dir.join("artifacts")),
            data_dir,
            targets,
            plan_targets,
            max_plans: opts.max_plans,
            scanner: Default::default(),
            registry_failures: Default::default(),
            last_fetches: Default::default(),
            endpoints: Default::default(),
            metrics: Default::default(),
            receivers_enabled: false,
            min_interval: DEFAULT_MIN_INTERVAL,
            file_sources_root: opts.file_sources_root.clone(),
            shard: opts.shard.clone(),
            reconcile_concurrency: opts.reconcile_concurrency,
            fetch_gate: opts.fetches.clone(),
            max_timeout: opts.max_timeout,
        };
        Ok((ctx, rx))
    }

    /// The watch of this controller's resources of one kind (its shard's label selector).
    pub fn watch(&self) -> kube::runtime::watcher::Config {
        self.shard.watch().any_semantic()
    }

    /// How many resources of one kind are reconciled at once.
    pub fn controller_config(&self) -> kube::runtime::controller::Config {
        kube::runtime::controller::Config::default().concurrency(self.reconcile_concurrency)
    }

    /// A resource's `interval`, never below `--min-interval` (`default` when unparsable).
    pub fn interval(
        &self,
        spec: &crate::api::duration::GoDuration,
        default: std::time::Duration,
    ) -> std::time::Duration {
        spec.parse().unwrap_or(default).max(self.min_interval)
    }

    /// An Application's `spec.timeout`, never above `--max-timeout` (5m when unparsable).
    pub fn app_timeout(&self, app: &crate::api::Application) -> std::time::Duration {
        app.spec
            .timeout
            .parse()
            .unwrap_or(std::time::Duration::from_secs(300))
            .min(self.max_timeout)
    }

    /// Refuses `file://` URLs outside `--file-sources-root` or inside the data directory.
    pub fn check_file_url(&self, url: &str) -> Result<(), crate::source::url_policy::UrlRefused> {
        crate::source::url_policy::check_file_root(
            url,
            self.file_sources_root.as_deref(),
            &self.data_dir,
        )
    }

    /// The cached bare clone of a GitRepository.
    pub fn git_cache(&self, namespace: &str, name: &str) -> PathBuf {
        self.data_dir.join("git").join(namespace).join(name)
    }

    /// The write-back clone of an Application (full history, bare).
    pub fn writeback_cache(&self, namespace: &str, name: &str) -> PathBuf {
        self.data_dir.join("writeback").join(namespace).join(name)
    }
}

/// Recorders keyed by (object uid, reason), each holding the note it last published.
pub struct EventRecorders {
    client: Client,
    reporter: Reporter,
    by_key: std::sync::Mutex<Recorders>,
}

/// Per (object uid, reason): the note's hash, its recorder and when it was last used.
#[derive(Default)]
struct Recorders {
    map: std::collections::HashMap<(String, String), (u64, Recorder, std::time::Instant)>,
    swept: Option<std::time::Instant>,
}

/// Entries kept before the map is cleared (objects come and go).
const MAX_RECORDERS: usize = 50_000;
/// A recorder not used for this long is dropped: an Event repeated after it starts a new
/// series anyway (as client-go's and kube's recorders do after 6 minutes), and a fleet's
/// Events would otherwise be held for good, one per object and reason.
const RECORDER_IDLE: std::time::Duration = std::time::Duration::from_secs(6 * 60);

impl EventRecorders {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            by_key: Default::default(),
        }
    }

    /// The recorder for this object, reason and note: for a warning, the same one while the
    /// note repeats (its series counts up); for a normal Event, a new one each time, kept
    /// nowhere. A normal note rarely repeats (a sync's names its revision), and a recorder
    /// holds its last Event in a table of about 5.6 KiB: kept for every Application's
    /// `Synced`, that was the largest thing a fleet held per Application.
    pub fn for_note(&self, uid: &str, reason: &str, note: &str, type_: EventType) -> Recorder {
        use std::hash::{Hash, Hasher};
        if type_ == EventType::Normal {
            return Recorder::new(self.client.clone(), self.reporter.clone());
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        note.hash(&mut h);
        let note_hash = h.finish();
        let now = std::time::Instant::now();
        let mut recorders = self.by_key.lock().expect("event recorders");
        let Recorders { map, swept } = &mut *recorders;
        if map.len() > MAX_RECORDERS {
            map.clear();
        }
        // Once a minute at most, the recorders idle for long are dropped.
        if swept.is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(60)) {
            map.retain(|_, (_, _, used)| now.duration_since(*used) < RECORDER_IDLE);
            *swept = Some(now);
        }
        let entry = map
            .entry((uid.to_string(), reason.to_string()))
            .or_insert_with(|| {
                (
                    note_hash,
                    Recorder::new(self.client.clone(), self.reporter.clone()),
                    now,
                )
            });
        if entry.0 != note_hash {
            entry.0 = note_hash;
            entry.1 = Recorder::new(self.client.clone(), self.reporter.clone());
        }
        entry.2 = now;
        entry.1.clone()
    }
}

pub use crate::api::git_repository::revision_commit;

/// Removes a directory tree, ignoring "not found".
pub fn remove_dir(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove directory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn failed_syncs_back_off_exponentially_to_a_cap() {
        let cap = Duration::from_secs(300);
        let base = Duration::from_secs(5);
        let waits: Vec<u64> = (1..=8).map(|n| backoff(base, n, cap).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff(base, 1000, cap), cap);
    }
}
