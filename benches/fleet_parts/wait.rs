//! Who runs in the fleet bench, and waiting on their Applications (Kustomizations).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gantry::api::{Application, GitRepository};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event, watcher};
use serde_json::json;

use super::flux::flux_sources;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    Gantry,
    /// Another build of Gantry (`GANTRY_BASE_BIN`, e.g. the commit before a change), run
    /// exactly as `Gantry`, to compare two builds in one run.
    GantryBase,
    FluxDefault,
    FluxTuned,
}

impl Peer {
    pub fn label(self) -> &'static str {
        match self {
            Peer::Gantry => "gantry",
            Peer::GantryBase => "gantry_base",
            Peer::FluxDefault => "flux_default",
            Peer::FluxTuned => "flux_tuned",
        }
    }
    /// The client-certificate user it runs as (its writes are in the audit log).
    pub fn user(self) -> &'static str {
        match self {
            Peer::Gantry | Peer::GantryBase => "a",
            _ => "b",
        }
    }

    pub fn is_gantry(self) -> bool {
        matches!(self, Peer::Gantry | Peer::GantryBase)
    }
}

/// What the bench reads of one Application (Kustomization): Ready, at which revision, and
/// Healthy (Gantry's).
#[derive(Clone, Debug, Default)]
pub struct Mark {
    pub ready: bool,
    pub revision: Option<String>,
    pub healthy: bool,
}

impl Mark {
    pub fn of_application(app: &Application) -> Self {
        let Some(status) = &app.status else {
            return Mark::default();
        };
        let is = |t: &str| {
            status
                .conditions
                .iter()
                .any(|c| c.type_ == t && c.status == "True")
        };
        Mark {
            ready: is("Ready"),
            revision: status.last_applied_revision.clone(),
            healthy: is("Healthy"),
        }
    }

    pub fn of_kustomization(k: &kube::api::DynamicObject) -> Self {
        let status = &k.data["status"];
        Mark {
            ready: status["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            }),
            revision: status["lastAppliedRevision"].as_str().map(str::to_string),
            healthy: false,
        }
    }

    /// Ready at `revision` (at any, when `None`).
    pub fn ready_at(&self, revision: Option<&str>) -> bool {
        self.ready
            && self
                .revision
                .as_deref()
                .is_some_and(|r| revision.is_none_or(|rev| r.ends_with(rev)))
    }
}

/// A watch of one peer's Applications (Kustomizations), by name. The bench watches rather
/// than lists: a list of 10,000 every 2 s was a large share of the API server's work, and
/// slowed the tool it measured.
pub struct Watched {
    marks: Arc<Mutex<HashMap<String, Mark>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watched {
    pub fn start<K>(api: Api<K>, mark: fn(&K) -> Mark) -> Self
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    {
        let marks: Arc<Mutex<HashMap<String, Mark>>> = Default::default();
        let into = marks.clone();
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default()).boxed();
            let mut listing = HashMap::new();
            while let Some(event) = stream.next().await {
                let name = |o: &K| o.meta().name.clone().unwrap_or_default();
                match event {
                    Ok(Event::Init) => listing.clear(),
                    Ok(Event::InitApply(o)) => {
                        listing.insert(name(&o), mark(&o));
                    }
                    Ok(Event::InitDone) => *into.lock().unwrap() = std::mem::take(&mut listing),
                    Ok(Event::Apply(o)) => {
                        into.lock().unwrap().insert(name(&o), mark(&o));
                    }
                    Ok(Event::Delete(o)) => {
                        into.lock().unwrap().remove(&name(&o));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        });
        Watched { marks, task }
    }

    /// The names Ready at `revision` (at any, when `None`), and how many are Healthy.
    pub fn ready(&self, revision: Option<&str>) -> (Vec<String>, usize) {
        let marks = self.marks.lock().unwrap();
        let ready = marks
            .iter()
            .filter(|(_, m)| m.ready_at(revision))
            .map(|(n, _)| n.clone())
            .collect();
        (ready, marks.values().filter(|m| m.healthy).count())
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits on the Applications (Kustomizations) of one peer.
pub struct Waiter<'a> {
    pub peer: Peer,
    pub apps: &'a Api<Application>,
    pub ks: &'a Api<kube::api::DynamicObject>,
    pub n: usize,
    pub cpu: &'a dyn Fn() -> f64,
}

pub fn limit_s() -> f64 {
    std::env::var("GANTRY_FLEET_LIMIT_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3600.0)
}

impl Waiter<'_> {
    /// Seconds from `start` until all are Ready at `revision` (at any, when `None`; infinite when the limit is
    /// reached first), until all are Healthy (Gantry, when `healthy` is asked), and the
    /// CPU-seconds counter when all were Ready.
    pub async fn all_ready(
        &self,
        revision: Option<&str>,
        start: Instant,
        healthy: bool,
    ) -> (f64, Option<f64>, f64) {
        let (peer, n) = (self.peer, self.n);
        let watched = match peer {
            Peer::Gantry | Peer::GantryBase => {
                Watched::start(self.apps.clone(), Mark::of_application)
            }
            _ => Watched::start(self.ks.clone(), Mark::of_kustomization),
        };
        // Flux marks a Kustomization Ready=Unknown while it reconciles again: one seen Ready
        // at the revision counts.
        let mut seen = std::collections::HashSet::new();
        let mut ready_at = None;
        let mut healthy_at = None;
        let mut cpu_ready = 0.0;
        let mut last_print = Instant::now();
        loop {
            let (ready, healthy_now) = match peer {
                Peer::Gantry | Peer::GantryBase => {
                    let (ready, healthy) = watched.ready(revision);
                    (ready.len(), healthy)
                }
                _ => {
                    seen.extend(watched.ready(revision).0);
                    (seen.len(), 0)
                }
            };
            let t = start.elapsed().as_secs_f64();
            if ready_at.is_none() && ready == n {
                ready_at = Some(t);
                cpu_ready = (self.cpu)();
            }
            if healthy_at.is_none() && healthy_now == n {
                healthy_at = Some(t);
            }
            if last_print.elapsed() > Duration::from_secs(15) {
                eprintln!(
                    "  {} +{t:.0}s: {ready} Ready, {healthy_now} Healthy",
                    peer.label()
                );
                last_print = Instant::now();
            }
            let want_healthy = healthy && peer.is_gantry();
            if let Some(at) = ready_at
                && (!want_healthy || healthy_at.is_some())
            {
                return (at, healthy_at, cpu_ready);
            }
            if t > limit_s() {
                eprintln!(
                    "  {}: {ready} of {n} Ready after {t:.0}s; stopped",
                    peer.label()
                );
                return (ready_at.unwrap_or(f64::INFINITY), healthy_at, cpu_ready);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Seconds from `start` until Application (Kustomization) `name` is Ready at `revision`.
    pub async fn one_ready(&self, name: &str, revision: &str, start: Instant) -> f64 {
        loop {
            let ready = match self.peer {
                Peer::Gantry | Peer::GantryBase => self
                    .apps
                    .get(name)
                    .await
                    .ok()
                    .and_then(|a| a.status)
                    .is_some_and(|s| {
                        s.last_applied_revision
                            .as_deref()
                            .is_some_and(|r| r.ends_with(revision))
                            && s.conditions
                                .iter()
                                .any(|c| c.type_ == "Ready" && c.status == "True")
                    }),
                _ => self.ks.get(name).await.ok().is_some_and(|k| {
                    let status = &k.data["status"];
                    status["lastAppliedRevision"]
                        .as_str()
                        .is_some_and(|r| r.ends_with(revision))
                        && status["conditions"].as_array().is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                }),
            };
            let t = start.elapsed().as_secs_f64();
            if ready {
                return t;
            }
            if t > limit_s() {
                return f64::INFINITY;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Asks the peer's source to fetch now: the annotation Flux's `flux reconcile source git`
/// sets, and for Gantry its `gantry.dev/requested-at` (what `gantry sync` and a webhook
/// Receiver set).
pub async fn request_fetch(client: &kube::Client, peer: Peer, ns: &str, source: &str) {
    let now = format!("{:?}", std::time::SystemTime::now());
    match peer {
        Peer::Gantry | Peer::GantryBase => {
            let patch = json!({"metadata": {"annotations": {"gantry.dev/requested-at": now}}});
            Api::<GitRepository>::namespaced(client.clone(), ns)
                .patch(source, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .unwrap();
        }
        _ => {
            let patch =
                json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": now}}});
            flux_sources(client, ns)
                .patch(source, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .unwrap();
        }
    }
}
