//! The operator: one reconciler per kind, sharing a `Context`.

pub mod application;
pub mod context;
pub mod crd_check;
pub mod git_repository;
pub mod image_policy;
pub mod kinds;
pub mod last_fetch;
pub mod leader;
pub mod notifier;
pub mod pull_requests;
pub mod receiver;
pub mod revision_plan;
pub mod secrets;
pub mod shard;
pub mod source_sweep;
pub mod status;

use std::sync::Arc;

use kube::{Api, Client};

use crate::api::{Application, GitRepository, ImagePolicy, Notifier, Receiver};
use crate::error::Result;
use context::Context;
use kinds::GantryKind;

/// Where the controller looks for resources.
#[derive(Clone, Debug)]
pub struct Options {
    /// Watch only this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Root of the Git caches and artifacts.
    pub data_dir: std::path::PathBuf,
    /// Objects applied at once, and requests per second toward each API server.
    pub limits: crate::cluster::ClientLimits,
    /// Resources of each kind reconciled at once (0: no bound).
    pub reconcile_concurrency: u16,
    /// The longest `spec.timeout` of an Application honoured.
    pub max_timeout: std::time::Duration,
    /// Git fetches allowed at once, in all and per namespace.
    pub fetches: crate::source::fetch_gate::FetchGate,
    /// The resources this controller reconciles (`--shard`).
    pub shard: shard::Shard,
    /// The Lease to hold before reconciling; every replica reconciles when `None`.
    pub election: Option<leader::Election>,
    /// Where the webhook receivers listen; no receiver server when `None`.
    pub receiver_addr: Option<std::net::SocketAddr>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served; none when `None`.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Where the web view is served (each viewer with their own token); none when `None`.
    pub ui_addr: Option<std::net::SocketAddr>,
    /// The shortest time between two periodic runs of any resource.
    pub min_interval: std::time::Duration,
    /// ServiceAccounts the Applications act as.
    pub tenancy: crate::cluster::Tenancy,
    /// The directory `file://` sources must be under; `file://` is refused without it.
    pub file_sources_root: Option<std::path::PathBuf>,
    /// The addresses Notifiers may send to.
    pub notify_targets: crate::notify::send::Targets,
    /// Pull request plans computed at once (0: pull requests are not planned).
    pub max_plans: usize,
}

fn api_for<K: GantryKind>(client: &Client, opts: &Options) -> Api<K> {
    match &opts.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Waits for the Lease (with leader election), then reconciles until SIGTERM, and releases
/// the Lease after the in-flight reconciles finished. Returns an error when the Lease is
/// lost: every reconciler is dropped at that moment.
pub async fn lead(
    ctx: &Arc<Context>,
    opts: &Options,
    drift_events: futures::channel::mpsc::Receiver<
        kube::runtime::reflector::ObjectRef<Application>,
    >,
) -> Result<()> {
    let leadership = match &opts.election {
        None => None,
        Some(election) => {
            ctx.endpoints.set_active(false);
            ctx.metrics.leader.set(0);
            tracing::info!(
                lease = %format!("{}/{}", election.namespace, election.name),
                identity = %election.identity,
                "standby: waiting for the Lease"
            );
            tokio::select! {
                held = election.clone().acquire(ctx.client.clone()) => {
                    Some(held.map_err(|e| crate::error::Error::Lease(Box::new(e)))?)
                }
                _ = shutdown_signal() => return Ok(()),
            }
        }
    };
    ctx.endpoints.set_active(true);
    ctx.metrics.leader.set(1);
    let reconcilers = reconcile_all(ctx.clone(), opts, drift_events);
    let Some(leadership) = leadership else {
        reconcilers.await;
        return Ok(());
    };
    tokio::select! {
        _ = reconcilers => {
            leadership.release().await;
            Ok(())
        }
        lost = leadership.lost() => {
            ctx.endpoints.set_active(false);
            ctx.metrics.leader.set(0);
            Err(crate::error::Error::Lease(Box::new(lost)))
        }
    }
}

/// Every reconciler, until SIGTERM or Ctrl-C.
async fn reconcile_all(
    ctx: Arc<Context>,
    opts: &Options,
    drift_events: futures::channel::mpsc::Receiver<
        kube::runtime::reflector::ObjectRef<Application>,
    >,
) {
    let client = ctx.client.clone();
    tokio::join!(
        git_repository::run(
            ctx.clone(),
            api_for::<GitRepository>(&client, opts),
            opts.namespace.clone()
        ),
        image_policy::run(ctx.clone(), api_for::<ImagePolicy>(&client, opts)),
        application::watch::run(
            Arc::new(application::memory::AppContext::new(ctx.clone())),
            api_for::<Application>(&client, opts),
            api_for::<GitRepository>(&client, opts),
            api_for::<ImagePolicy>(&client, opts),
            drift_events,
        ),
        receiver::run(ctx.clone(), api_for::<Receiver>(&client, opts)),
        notifier::run(
            ctx.clone(),
            opts.notify_targets.clone(),
            api_for::<Notifier>(&client, opts),
            api_for::<Application>(&client, opts),
        ),
        pull_requests::run(
            ctx.clone(),
            opts.notify_targets.clone(),
            api_for::<GitRepository>(&client, opts),
        ),
    );
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The backoff a controller puts over all its triggers merged: none. Each watch a
/// controller merges backs off its own errors (`default_backoff`), so a failing watch never
/// holds back the triggers of the others: drift found while the Application watch recovers
/// from an API server restart heals at once, not when that watch's backoff (up to 30 s) ends.
pub(crate) struct EachWatchBacksOff;

impl Iterator for EachWatchBacksOff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<Self::Item> {
        Some(std::time::Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for EachWatchBacksOff {
    fn reset(&mut self) {}
}

/// Runs one reconcile of `obj`, counted and timed by kind (the timer observes on drop, so
/// every exit is measured); failures are counted by their bounded category.
pub async fn measured<K, C, F, Fut>(
    obj: Arc<K>,
    ctx: Arc<C>,
    reconcile: F,
) -> Result<kube::runtime::controller::Action>
where
    K: GantryKind,
    C: AsRef<Context>,
    F: FnOnce(Arc<K>, Arc<C>) -> Fut,
    Fut: std::future::Future<Output = Result<kube::runtime::controller::Action>>,
{
    let kind = K::kind(&()).to_string();
    let metrics = (*ctx).as_ref().metrics.clone();
    let _timer = metrics
        .reconcile_seconds
        .with_label_values(&[kind.as_str()])
        .start_timer();
    let result = reconcile(obj, ctx).await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics
        .reconciles
        .with_label_values(&[kind.as_str(), outcome])
        .inc();
    if let Err(e) = &result {
        metrics
            .reconcile_errors
            .with_label_values(&[kind.as_str(), e.category()])
            .inc();
    }
    result
}

/// The error policy of every Gantry reconciler: log with the object and a bounded category,
/// retry in 5 s.
pub fn error_policy<K: GantryKind, C>(
    obj: std::sync::Arc<K>,
    err: &crate::error::Error,
    _ctx: std::sync::Arc<C>,
) -> kube::runtime::controller::Action {
    use kube::ResourceExt;
    tracing::warn!(
        kind = %K::kind(&()),
        namespace = %obj.namespace().unwrap_or_default(),
        name = %obj.name_any(),
        category = err.category(),
        error = %err,
        "reconcile failed"
    );
    kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(5))
}

/// A hash of what a watch event must have changed to wake a reconcile (for
/// `predicate_filter`).
pub(crate) fn hash_of(v: &impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}
