//! From verified webhooks to reconcile requests: resolve the Receiver's targets (`*`, and
//! for registry events only the ImagePolicies of the pushed repository), then coalesce so a
//! burst asks each resource at most once per window: the first event at once, the rest of
//! the window folded into one request at its end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

use crate::api::receiver::{ReceiverTarget, TargetKind};
use crate::api::{Application, GitRepository, ImagePolicy};
use crate::source::registry::ImageName;
use crate::trigger::request_reconcile;

/// Queue length between the HTTP handlers and the dispatcher; a full queue answers 503.
pub const QUEUE: usize = 256;
/// The coalescing window per resource.
pub const WINDOW: Duration = Duration::from_millis(500);
/// Keys remembered for coalescing before old ones are forgotten.
const MAX_KEYS: usize = 10_000;

/// A verified webhook.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub namespace: String,
    pub receiver: String,
    pub targets: Vec<ReceiverTarget>,
    /// For registry events: the pushed repositories.
    pub images: Option<Vec<String>>,
    /// For pull request events: the request to plan or forget (the GitRepositories are not
    /// reconciled: their branch did not move).
    pub pull_request: Option<super::pull_request::Event>,
}

type Key = (TargetKind, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Ask now.
    Now,
    /// Fold into the request at the end of the window (schedule it).
    Schedule(Duration),
    /// Already scheduled.
    Folded,
}

/// Coalescing state, pure apart from the clock passed in.
#[derive(Default)]
pub struct Coalescer {
    last: HashMap<Key, (Instant, bool)>,
}

impl Coalescer {
    pub fn offer(&mut self, key: Key, now: Instant, window: Duration) -> Decision {
        if self.last.len() >= MAX_KEYS {
            self.last
                .retain(|_, (t, pending)| *pending || now.duration_since(*t) < window);
        }
        match self.last.get_mut(&key) {
            Some((t, pending)) if now.duration_since(*t) < window => {
                if *pending {
                    Decision::Folded
                } else {
                    *pending = true;
                    Decision::Schedule(window - now.duration_since(*t))
                }
            }
            _ => {
                self.last.insert(key, (now, false));
                Decision::Now
            }
        }
    }

    /// A scheduled request fired.
    pub fn fired(&mut self, key: Key, now: Instant) {
        self.last.insert(key, (now, false));
    }
}

async fn resolve(client: &Client, t: &Trigger) -> Vec<Key> {
    let mut keys = Vec::new();
    for target in &t.targets {
        if t.images.is_some() && target.kind != TargetKind::ImagePolicy {
            continue;
        }
        let names: Vec<String> = match (target.kind, target.name.as_str()) {
            (TargetKind::ImagePolicy, name) => {
                let api: Api<ImagePolicy> = Api::namespaced(client.clone(), &t.namespace);
                let policies = if name == "*" {
                    api.list(&ListParams::default())
                        .await
                        .map(|l| l.items)
                        .unwrap_or_default()
                } else {
                    api.get_opt(name).await.ok().flatten().into_iter().collect()
                };
                policies
                    .into_iter()
                    .filter(|p| match &t.images {
                        None => true,
                        Some(repos) => registry_repository(&p.spec)
                            .and_then(|r| ImageName::parse(r).ok())
                            .is_some_and(|i| repos.contains(&i.repository)),
                    })
                    .map(|p| p.name_any())
                    .collect()
            }
            (TargetKind::GitRepository, "*") => {
                let api: Api<GitRepository> = Api::namespaced(client.clone(), &t.namespace);
                api.list(&ListParams::default())
                    .await
                    .map(|l| l.items.iter().map(|o| o.name_any()).collect())
                    .unwrap_or_default()
            }
            (TargetKind::Application, "*") => {
                let api: Api<Application> = Api::namespaced(client.clone(), &t.namespace);
                api.list(&ListParams::default())
                    .await
                    .map(|l| l.items.iter().map(|o| o.name_any()).collect())
                    .unwrap_or_default()
            }
            (_, name) => vec![name.to_string()],
        };
        for name in names {
            keys.push((target.kind, t.namespace.clone(), name));
        }
    }
    keys
}

async fn fire(client: Client, key: Key) {
    let (kind, ns, name) = key;
    let result = match kind {
        TargetKind::GitRepository => {
            request_reconcile(&Api::<GitRepository>::namespaced(client, &ns), &name).await
        }
        TargetKind::ImagePolicy => {
            request_reconcile(&Api::<ImagePolicy>::namespaced(client, &ns), &name).await
        }
        TargetKind::Application => {
            request_reconcile(&Api::<Application>::namespaced(client, &ns), &name).await
        }
    };
    match result {
        Ok(_) => tracing::debug!(?kind, namespace = %ns, %name, "reconcile requested by webhook"),
        Err(e) => {
            tracing::warn!(?kind, namespace = %ns, %name, error = %e, "cannot request a reconcile")
        }
    }
}

/// Records a pull request event on each targeted GitRepository that plans the branch it
/// targets: a plan request annotation (see `PLAN_REQUEST_PREFIX`), or its removal.
async fn record_plan_request(client: Client, keys: Vec<Key>, event: super::pull_request::Event) {
    use super::pull_request::Event;
    use crate::api::annotations::{PLAN_REQUEST_PREFIX, PlanRequest, plan_request_annotation};
    let (number, base_ref) = match &event {
        Event::Plan(pr) => (pr.number, pr.base_ref.as_str()),
        Event::Closed { number, base_ref } => (*number, base_ref.as_str()),
        Event::Ignore(_) => return,
    };
    for (kind, ns, name) in keys {
        if kind != TargetKind::GitRepository {
            continue;
        }
        let api: Api<GitRepository> = Api::namespaced(client.clone(), &ns);
        let Ok(Some(repo)) = api.get_opt(&name).await else {
            continue;
        };
        let plans = repo.spec.plan.as_ref().is_some_and(|p| p.enabled);
        let branch = crate::source::git::Reference::from_spec(repo.spec.git_ref.as_ref());
        if !plans || branch.branch() != Some(base_ref) {
            continue;
        }
        let key = format!("{PLAN_REQUEST_PREFIX}{number}");
        let value = match &event {
            Event::Plan(pr) => {
                let open = repo
                    .annotations()
                    .keys()
                    .filter(|k| k.starts_with(PLAN_REQUEST_PREFIX) && **k != key)
                    .count();
                if open >= crate::api::annotations::MAX_PLAN_REQUESTS {
                    tracing::warn!(namespace = %ns, %name, number, "too many open pull requests to plan; not recorded");
                    continue;
                }
                let request = PlanRequest {
                    number,
                    head: pr.head.clone(),
                    from_fork: pr.from_fork,
                };
                serde_json::Value::String(plan_request_annotation(&request).1)
            }
            _ => serde_json::Value::Null,
        };
        let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
        match api
            .patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => tracing::info!(namespace = %ns, %name, number, "pull request plan requested"),
            Err(e) => {
                tracing::warn!(namespace = %ns, %name, number, error = %e, "cannot record the plan request")
            }
        }
    }
}

/// Runs until the queue closes.
pub async fn run(client: Client, mut queue: mpsc::Receiver<Trigger>) {
    let mut coalescer = Coalescer::default();
    let (due_tx, mut due_rx) = mpsc::unbounded_channel::<Key>();
    loop {
        tokio::select! {
            t = queue.recv() => {
                let Some(t) = t else { return };
                if let Some(event) = t.pull_request.clone() {
                    let keys = resolve(&client, &t).await;
                    tokio::spawn(record_plan_request(client.clone(), keys, event));
                    continue;
                }
                let keys = resolve(&client, &t).await;
                tracing::info!(namespace = %t.namespace, receiver = %t.receiver, resources = keys.len(), "webhook accepted");
                for key in keys {
                    match coalescer.offer(key.clone(), Instant::now(), WINDOW) {
                        Decision::Now => {
                            tokio::spawn(fire(client.clone(), key));
                        }
                        Decision::Schedule(after) => {
                            let tx = due_tx.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(after).await;
                                let _ = tx.send(key);
                            });
                        }
                        Decision::Folded => {}
                    }
                }
            }
            Some(key) = due_rx.recv() => {
                coalescer.fired(key.clone(), Instant::now());
                tokio::spawn(fire(client.clone(), key));
            }
        }
    }
}

/// The registry repository a policy lists tags of: its image, or its `oci://` chart (a
/// push of either to the registry concerns it); `None` for a chart repository.
fn registry_repository(spec: &crate::api::image_policy::ImagePolicySpec) -> Option<&str> {
    match (&spec.image, &spec.chart) {
        (Some(image), _) => Some(image),
        (None, Some(chart)) => chart.url.as_deref().and_then(|u| u.strip_prefix("oci://")),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> Key {
        (TargetKind::ImagePolicy, "ns".into(), n.into())
    }

    #[test]
    fn a_burst_asks_once_now_and_once_at_the_end_of_the_window() {
        let mut c = Coalescer::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(2);
        assert_eq!(c.offer(key("a"), t0, w), Decision::Now);
        assert_eq!(
            c.offer(key("a"), t0 + Duration::from_millis(500), w),
            Decision::Schedule(Duration::from_millis(1500))
        );
        for i in 0..100 {
            assert_eq!(
                c.offer(key("a"), t0 + Duration::from_millis(600 + i), w),
                Decision::Folded
            );
        }
        // Another resource is independent.
        assert_eq!(c.offer(key("b"), t0, w), Decision::Now);
        c.fired(key("a"), t0 + w);
        assert!(matches!(
            c.offer(key("a"), t0 + w + Duration::from_millis(10), w),
            Decision::Schedule(_)
        ));
        assert_eq!(
            c.offer(key("a"), t0 + w + w + Duration::from_millis(10), w),
            Decision::Now
        );
    }
}
