//! Who runs in the fleet bench, and waiting on their Applications (Kustomizations).

use std::time::{Duration, Instant};

use gantry::api::{Application, GitRepository};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use super::flux::{flux_ready, flux_sources};

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

/// (Ready at `revision` (any, when `None`), Healthy) counts of the Applications in `ns`.
pub async fn counts(apps: &Api<Application>, revision: Option<&str>) -> (usize, usize) {
    let Ok(list) = apps.list(&ListParams::default()).await else {
        return (0, 0);
    };
    let mut ready = 0;
    let mut healthy = 0;
    for app in list.items {
        let Some(status) = app.status else { continue };
        let is = |t: &str| {
            status
                .conditions
                .iter()
                .any(|c| c.type_ == t && c.status == "True")
        };
        if is("Ready")
            && status
                .last_applied_revision
                .as_deref()
                .is_some_and(|r| revision.is_none_or(|rev| r.ends_with(rev)))
        {
            ready += 1;
        }
        if is("Healthy") {
            healthy += 1;
        }
    }
    (ready, healthy)
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
        let mut flux_seen = std::collections::HashSet::new();
        let mut ready_at = None;
        let mut healthy_at = None;
        let mut cpu_ready = 0.0;
        let mut last_print = Instant::now();
        loop {
            let (ready, healthy_now) = match peer {
                Peer::Gantry | Peer::GantryBase => counts(self.apps, revision).await,
                _ => {
                    flux_ready(self.ks, revision, &mut flux_seen).await;
                    (flux_seen.len(), 0)
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
            tokio::time::sleep(Duration::from_millis(if n > 2000 { 2000 } else { 500 })).await;
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
