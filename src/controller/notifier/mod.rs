//! Notifier reconciler: for each Application of its namespace it selects, what that
//! Application's status says to report (notify/report.rs) and is not delivered yet is sent,
//! oldest first, and the delivery cursors (per Application, one for its revisions and one
//! per stream beside them: drift, source, deletion) are written to the Notifier's status. State is derived from status, never from logs or memory: a restart or a new
//! leader reads the cursor and sends neither less nor again (a request that was sent but
//! whose cursor write was lost is sent once more, which forges treat as the same status and
//! webhooks see with the same `X-Gantry-Delivery`). A provider that is down is retried with
//! backoff (honouring `Retry-After`); what happened meanwhile goes out in order afterwards.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

mod queue;
mod round;

pub use queue::MAX_OWED;
use queue::{advance, drop_oldest, owed};
use round::{AppRound, DELIVERIES_AT_ONCE, Round};

use super::context::{Context, backoff};
use super::status::apply_status;
use crate::api::conditions::{self, Status};
use crate::api::notifier::{NotifierStatus, NotifierType};
use crate::api::{Application, GitRepository, Notifier};
use crate::cache::Readiness;
use crate::error::Result;
use crate::notify::deliver::Credentials;
use crate::notify::provider;
use crate::notify::send::{Pace, SendError, Targets};

/// The Notifier reconciler's context: the shared one, the operator's target rules, the
/// Applications (a watch cache), the consecutive failures of each Notifier and the reports
/// each still owes (for the queue-depth gauge).
pub struct NotifierContext {
    shared: Arc<Context>,
    targets: Targets,
    apps: Store<Application>,
    apps_ready: Readiness,
    failures: Mutex<HashMap<Key, u32>>,
    owed: Mutex<HashMap<Key, (NotifierType, usize)>>,
    /// Each Notifier's pace toward its provider (kept across rounds).
    paces: Mutex<HashMap<Key, (NotifierType, Arc<Pace>)>>,
    /// When each Notifier's next round may start.
    rounds: Mutex<HashMap<Key, tokio::time::Instant>>,
}

/// The least time between two rounds of one Notifier: the changes of a fleet's sync arrive
/// over seconds, and each round reads the Notifier and writes its cursors, so rounds are
/// spaced (changes that arrive meanwhile are one pending round) rather than one per change.
const ROUND_SPACING: Duration = Duration::from_secs(1);

/// A Notifier's namespace and name.
type Key = (String, String);

impl AsRef<Context> for NotifierContext {
    fn as_ref(&self) -> &Context {
        &self.shared
    }
}

/// The reasons of a Notifier's Ready condition.
pub use crate::api::reasons::notifier as reasons;

/// Why a Notifier could not deliver.
#[derive(Debug, thiserror::Error)]
enum Problem {
    #[error("{0}")]
    Secret(String),
    #[error("Application {app}: {why}")]
    Repository { app: String, why: String },
    #[error("Application {app}, revision {revision}: {error}")]
    Send {
        app: String,
        revision: String,
        error: SendError,
    },
}

impl Problem {
    fn reason(&self) -> &'static str {
        match self {
            Problem::Secret(_) => reasons::SECRET_INVALID,
            Problem::Repository { .. } => reasons::REPOSITORY_UNKNOWN,
            Problem::Send {
                error: SendError::Refused(_),
                ..
            } => reasons::ADDRESS_REFUSED,
            Problem::Send { .. } => reasons::DELIVERY_FAILED,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Problem::Send { error, .. } => error.retry_after(),
            _ => None,
        }
    }
}

async fn credentials(
    client: &kube::Client,
    ns: &str,
    notifier: &Notifier,
) -> Result<Credentials, Problem> {
    let name = &notifier.spec.secret_ref.name;
    let data = super::secrets::read(client, ns, name)
        .await
        .map_err(Problem::Secret)?;
    Credentials::from_secret(notifier.spec.kind, name, &data).map_err(Problem::Secret)
}

/// Where a forge's reports for an Application go: (API base, repository).
pub(super) fn forge_target(
    notifier: &Notifier,
    source: Option<&GitRepository>,
) -> Result<(String, String), String> {
    let kind = notifier.spec.kind;
    let derived = source.and_then(|s| provider::forge_of(&s.spec.url));
    let repository = match (&notifier.spec.repository, &derived) {
        (Some(r), _) => r.clone(),
        (None, Some((_, r))) => provider::forge::repository_of(kind, r),
        (None, None) => {
            return Err(match source {
                Some(s) => format!(
                    "cannot derive the repository from GitRepository {}'s URL; set spec.repository",
                    s.name_any()
                ),
                None => "the Application's GitRepository is not found; set spec.repository".into(),
            });
        }
    };
    let origin = match (&notifier.spec.address, &derived) {
        (Some(a), _) => a.clone(),
        (None, Some((o, _))) => o.clone(),
        (None, None) => return Err("no forge address: set spec.address".into()),
    };
    Ok((provider::api_base(kind, &origin), repository))
}

async fn reconcile(notifier: Arc<Notifier>, ctx: Arc<NotifierContext>) -> Result<Action> {
    let ns = notifier.namespace().unwrap_or_default();
    let name = notifier.name_any();
    let key = (ns.clone(), name.clone());
    let api: Api<Notifier> = Api::namespaced(ctx.client.clone(), &ns);
    let last_round = ctx
        .rounds
        .lock()
        .expect("notifier rounds")
        .insert(key.clone(), tokio::time::Instant::now() + ROUND_SPACING);
    if let Some(at) = last_round {
        // (The entry holds when the next round may start.)
        tokio::time::sleep_until(at).await;
        ctx.rounds
            .lock()
            .expect("notifier rounds")
            .insert(key.clone(), tokio::time::Instant::now() + ROUND_SPACING);
    }
    // The cursor as last written, not as the watch cache may still have it: a reconcile
    // right after a delivery must not send it again.
    let Some(notifier) = api.get_opt(&name).await? else {
        ctx.failures.lock().expect("notifier failures").remove(&key);
        ctx.paces.lock().expect("notifier paces").remove(&key);
        ctx.rounds.lock().expect("notifier rounds").remove(&key);
        set_owed(&ctx, key, None);
        return Ok(Action::await_change());
    };
    // Until the Applications are listed, every cursor would look like a deleted one.
    if ctx.apps_ready.wait().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    tracing::debug!(namespace = %ns, name = %name, "notifier round starts");
    let kind = notifier.spec.kind;
    let generation = notifier.metadata.generation;
    let before = notifier.status.clone().unwrap_or_default();
    let mut status = before.clone();
    status.observed_generation = generation;
    let set_ready = |status: &mut NotifierStatus, s: Status, reason: &str, message: String| {
        conditions::set_condition(
            &mut status.conditions,
            conditions::new_condition(
                conditions::READY,
                s,
                reason,
                message,
                generation,
                Timestamp::now(),
            ),
        );
    };
    if notifier.spec.suspend {
        set_ready(
            &mut status,
            Status::Unknown,
            reasons::SUSPENDED,
            "reporting is suspended".into(),
        );
        if status != before {
            apply_status(&api, &name, &status).await?;
        }
        return Ok(Action::await_change());
    }

    let creds = match credentials(&ctx.client, &ns, &notifier).await {
        Ok(c) => c,
        Err(problem) => {
            set_ready(
                &mut status,
                Status::False,
                problem.reason(),
                problem.to_string(),
            );
            if status != before {
                apply_status(&api, &name, &status).await?;
            }
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
    };

    let in_namespace: Vec<Arc<Application>> = ctx
        .apps
        .state()
        .into_iter()
        .filter(|a| a.namespace().as_deref() == Some(ns.as_str()))
        .collect();
    let all_names: Vec<String> = in_namespace.iter().map(|a| a.name_any()).collect();
    let mut apps: Vec<Arc<Application>> = in_namespace
        .into_iter()
        .filter(|a| {
            let labels = a.labels();
            notifier
                .spec
                .selector
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        })
        .collect();
    apps.sort_by_key(|a| a.name_any());

    let mut cursors = status.delivered.clone();
    let mut queue = owed(&apps, &all_names, &mut cursors);
    let dropped = drop_oldest(&mut queue, MAX_OWED);

    // Each selected Application's forge target (one read per GitRepository).
    let mut forges: HashMap<String, Result<(String, String), String>> = HashMap::new();
    if kind.is_forge() {
        let sources: Api<GitRepository> = Api::namespaced(ctx.client.clone(), &ns);
        for item in queue.iter().filter(|o| o.report.commit.is_some()) {
            let Some(app) = item.index.map(|i| &apps[i]) else {
                continue;
            };
            let source = &app.spec.source_ref.name;
            if !forges.contains_key(source) {
                let found = sources.get_opt(source).await.ok().flatten();
                forges.insert(source.clone(), forge_target(&notifier, found.as_ref()));
            }
        }
    }
    let environment = notifier
        .spec
        .environment
        .clone()
        .unwrap_or_else(|| "{namespace}/{name}".into());
    let pace = {
        let mut paces = ctx.paces.lock().expect("notifier paces");
        match paces.get(&key) {
            Some((k, p)) if *k == kind => p.clone(),
            _ => {
                let p = Arc::new(Pace::new(kind.rate_limit()));
                paces.insert(key.clone(), (kind, p.clone()));
                p
            }
        }
    };
    let round = Round {
        ctx: &ctx,
        pace: &pace,
        notifier: &notifier,
        ns: &ns,
        apps: &apps,
        queue: &queue,
        creds: &creds,
        forges: &forges,
        environment: &environment,
        stopped: Default::default(),
    };
    // Applications are delivered to at once (a few at a time), each one's reports in order.
    let mut by_app: Vec<Vec<usize>> = Vec::new();
    for (k, item) in queue.iter().enumerate() {
        match by_app.last_mut() {
            Some(group) if queue[group[0]].app == item.app => group.push(k),
            _ => by_app.push(vec![k]),
        }
    }
    let results: Vec<AppRound> = futures::stream::iter(by_app)
        .map(|items| round.deliver(items))
        .buffered(DELIVERIES_AT_ONCE)
        .collect()
        .await;
    // The first failure (in Application order) says why on the Notifier.
    let mut failed: Option<Problem> = None;
    let mut remaining = 0usize;
    for r in results {
        for (app, report) in &r.advanced {
            advance(&mut cursors, app, report);
        }
        if let Some(d) = r.last_delivery {
            status.last_delivery = Some(d);
        }
        remaining += r.remaining;
        if let Some((problem, delivery)) = r.failure {
            status.last_failure = Some(delivery);
            if failed.is_none() {
                failed = Some(problem);
            }
        }
    }
    status.delivered = cursors;
    set_owed(&ctx, key.clone(), Some((kind, remaining)));

    let action = match &failed {
        None => {
            ctx.failures.lock().expect("notifier failures").remove(&key);
            if dropped > 0 {
                let message =
                    format!("{dropped} oldest reports dropped: more than {MAX_OWED} were owed");
                set_ready(&mut status, Status::False, reasons::DROPPING, message);
            } else {
                let message = format!(
                    "reporting {} {}",
                    apps.len(),
                    crate::text::agree(apps.len(), "Application", "Applications")
                );
                set_ready(&mut status, Status::True, reasons::SUCCEEDED, message);
            }
            Action::requeue(Duration::from_secs(600))
        }
        Some(problem) => {
            set_ready(
                &mut status,
                Status::False,
                problem.reason(),
                problem.to_string(),
            );
            let n = {
                let mut failures = ctx.failures.lock().expect("notifier failures");
                let n = failures.entry(key).or_insert(0);
                *n = n.saturating_add(1);
                *n
            };
            // 2 s doubling to a minute, retried for as long as it fails (a forge back after an
            // hour gets the backlog within a minute).
            let wait = super::status::with_jitter(
                backoff(Duration::from_secs(2), n, Duration::from_secs(60)),
                &name,
            );
            Action::requeue(problem.retry_after().map(|r| r.max(wait)).unwrap_or(wait))
        }
    };
    if status != before {
        apply_status(&api, &name, &status).await?;
    }
    tracing::debug!(namespace = %ns, name = %name, remaining, failed = failed.is_some(), "notifier round done");
    Ok(action)
}

/// Records what one Notifier still owes (`None`: it is gone) and sets the gauge of its type.
fn set_owed(ctx: &NotifierContext, key: Key, owed: Option<(NotifierType, usize)>) {
    let mut all = ctx.owed.lock().expect("notifier queue");
    let kind = match owed {
        Some((kind, n)) => {
            all.insert(key, (kind, n));
            kind
        }
        None => match all.remove(&key) {
            Some((kind, _)) => kind,
            None => return,
        },
    };
    let total = all
        .values()
        .filter(|(k, _)| *k == kind)
        .map(|(_, n)| n)
        .sum();
    ctx.metrics.notification_queue(kind.label(), total);
}

pub async fn run(ctx: Arc<Context>, targets: Targets, api: Api<Notifier>, apps: Api<Application>) {
    let (reader, writer) = reflector::store();
    // This cache holds what reports are made of (labels, spec, conditions, history), not
    // what the Application reconciler needs besides (the inventory, drift details, managed
    // fields, annotations): a fleet costs the Notifiers little memory.
    let app_events = watcher(apps, ctx.watch())
        .default_backoff()
        .modify(|a: &mut Application| {
            a.managed_fields_mut().clear();
            a.annotations_mut().clear();
            if let Some(s) = a.status.as_mut() {
                s.inventory = Vec::new();
                s.drift = None;
                for record in &mut s.history {
                    record.template_hashes = Default::default();
                }
            }
        })
        .reflect(writer)
        // Deletions too: a gone Application's cursor is dropped (after its deletion was
        // reported) by the round its deletion starts.
        .touched_objects();
    let nctx = Arc::new(NotifierContext {
        shared: ctx.clone(),
        targets,
        apps_ready: Readiness::of(&reader),
        apps: reader,
        failures: Default::default(),
        owed: Default::default(),
        paces: Default::default(),
        rounds: Default::default(),
    });
    // A round is due when someone changes the Notifier (spec, labels, annotations), not when
    // a round writes its status: a failing round writes its last failure, and waking on that
    // write would retry a refused or down provider every second instead of backing off.
    let (notifier_reader, notifier_writer) = reflector::store();
    let notifier_changes = watcher(api, ctx.watch())
        .default_backoff()
        .modify(|n: &mut Notifier| n.managed_fields_mut().clear())
        .reflect(notifier_writer)
        .applied_objects()
        .predicate_filter(
            |n: &Notifier| {
                Some(super::hash_of(&(
                    &n.metadata.uid,
                    n.metadata.generation,
                    &n.metadata.annotations,
                    &n.metadata.labels,
                )))
            },
            Default::default(),
        );
    // No debounce: it would postpone a round for as long as a fleet keeps changing. Changes
    // that arrive while a round runs are one pending round.
    let controller = Controller::for_stream(notifier_changes, notifier_reader)
        .with_config(ctx.controller_config())
        .trigger_backoff(super::EachWatchBacksOff);
    let notifiers = controller.store();
    controller
        .watches_stream(app_events, move |app: Application| {
            let ns = app.namespace();
            notifiers
                .state()
                .into_iter()
                .filter(|n| n.namespace() == ns)
                .map(|n| ObjectRef::from_obj(&*n))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(super::shutdown_signal())
        .run(
            |obj, ctx| super::measured(obj, ctx, reconcile),
            super::error_policy,
            nctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

impl std::ops::Deref for NotifierContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.shared
    }
}
