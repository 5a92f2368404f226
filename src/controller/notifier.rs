//! Notifier reconciler: for each Application of its namespace it selects, what that
//! Application's status says to report (notify/report.rs) and is not delivered yet is sent,
//! oldest first, and the delivery cursor (one per Application) is written to the Notifier's
//! status. State is derived from status, never from logs or memory: a restart or a new
//! leader reads the cursor and sends neither less nor again (a request that was sent but
//! whose cursor write was lost is sent once more, which forges treat as the same status and
//! webhooks see with the same `X-Gantry-Delivery`). A provider that is down is retried with
//! backoff (honouring `Retry-After`); what happened meanwhile goes out in order afterwards.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use super::context::{Context, backoff};
use super::status::apply_status;
use crate::api::conditions::{self, Status};
use crate::api::notifier::{Delivered, Delivery, NotifierStatus, NotifierType, Severity};
use crate::api::{Application, GitRepository, Notifier};
use crate::error::Result;
use crate::notify::provider::{self, Request, Subject};
use crate::notify::report::{self, Report, State};
use crate::notify::send::{self, SendError};

/// The Notifier reconciler's context: the shared one, the Applications (a watch cache) and
/// the consecutive failures of each Notifier.
pub struct NotifierContext {
    shared: Arc<Context>,
    apps: Store<Application>,
    failures: Mutex<HashMap<(String, String), u32>>,
}

impl AsRef<Context> for NotifierContext {
    fn as_ref(&self) -> &Context {
        &self.shared
    }
}

/// What a Notifier needs from its Secret.
struct Credentials {
    token: Option<String>,
    address: Option<String>,
    ca_pem: Option<Vec<u8>>,
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    data.get(key)
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

async fn credentials(
    client: &kube::Client,
    ns: &str,
    notifier: &Notifier,
) -> Result<Credentials, String> {
    let name = &notifier.spec.secret_ref.name;
    let data = super::secrets::read(client, ns, name).await?;
    let creds = Credentials {
        token: text(&data, "token"),
        address: text(&data, "address"),
        ca_pem: data.get("ca.crt").map(|v| v.0.clone()),
    };
    match notifier.spec.kind {
        NotifierType::Webhook | NotifierType::Slack if creds.address.is_none() => Err(format!(
            "Secret {name} has no key address (the URL to post to)"
        )),
        NotifierType::Gitea | NotifierType::Github | NotifierType::Gitlab
            if creds.token.is_none() =>
        {
            Err(format!(
                "Secret {name} has no key token (the forge's API token)"
            ))
        }
        _ => Ok(creds),
    }
}

/// Where a forge's statuses for `app` go: (API base, `owner/name`).
fn forge_target(
    notifier: &Notifier,
    source: Option<&GitRepository>,
) -> Result<(String, String), String> {
    let derived = source.and_then(|s| provider::forge_of(&s.spec.url));
    let repository = match (&notifier.spec.repository, &derived) {
        (Some(r), _) => r.clone(),
        (None, Some((_, r))) => r.clone(),
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
    Ok((provider::api_base(notifier.spec.kind, &origin), repository))
}

/// The request reporting `report` about `app`.
fn request(
    notifier: &Notifier,
    creds: &Credentials,
    forge: Option<&(String, String)>,
    subject: Subject<'_>,
    report: &Report,
) -> Option<Request> {
    match notifier.spec.kind {
        NotifierType::Webhook => Some(provider::webhook(
            creds.address.as_deref()?,
            subject,
            report,
            creds.token.as_deref().unwrap_or_default(),
            &Timestamp::now().to_string(),
        )),
        NotifierType::Slack => Some(provider::slack(creds.address.as_deref()?, subject, report)),
        kind => {
            let (api, repository) = forge?;
            let context = provider::context(&notifier.spec.context, subject);
            Some(provider::commit_status(
                kind,
                api,
                repository,
                report.commit.as_deref()?,
                report,
                &context,
                creds.token.as_deref()?,
            ))
        }
    }
}

fn type_label(kind: NotifierType) -> &'static str {
    match kind {
        NotifierType::Gitea => "gitea",
        NotifierType::Github => "github",
        NotifierType::Gitlab => "gitlab",
        NotifierType::Webhook => "webhook",
        NotifierType::Slack => "slack",
    }
}

fn delivery(app: &str, ns: &str, report: &Report, error: Option<String>) -> Delivery {
    Delivery {
        application: format!("{ns}/{app}"),
        revision: report.revision.clone(),
        state: report.state.as_str().to_string(),
        at: Time(Timestamp::now()),
        error,
    }
}

async fn reconcile(notifier: Arc<Notifier>, ctx: Arc<NotifierContext>) -> Result<Action> {
    let ns = notifier.namespace().unwrap_or_default();
    let name = notifier.name_any();
    let api: Api<Notifier> = Api::namespaced(ctx.client.clone(), &ns);
    // The cursor as last written, not as the watch cache may still have it: a reconcile
    // right after a delivery must not send it again.
    let Some(notifier) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
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
            "Suspended",
            "reporting is suspended".into(),
        );
        if status != before {
            apply_status(&api, &name, &status).await?;
        }
        return Ok(Action::await_change());
    }

    let creds = match credentials(&ctx.client, &ns, &notifier).await {
        Ok(c) => c,
        Err(message) => {
            set_ready(&mut status, Status::False, "SecretInvalid", message);
            if status != before {
                apply_status(&api, &name, &status).await?;
            }
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
    };

    let mut apps: Vec<Arc<Application>> = ctx
        .apps
        .state()
        .into_iter()
        .filter(|a| a.namespace().as_deref() == Some(ns.as_str()))
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

    let forge = matches!(
        notifier.spec.kind,
        NotifierType::Gitea | NotifierType::Github | NotifierType::Gitlab
    );
    let sources: Api<GitRepository> = Api::namespaced(ctx.client.clone(), &ns);
    let mut source_cache: HashMap<String, Option<GitRepository>> = HashMap::new();
    // The first failure of this round: (reason, message, retry after). Delivery stops there.
    let mut failed: Option<(&'static str, String, Option<Duration>)> = None;
    let kind_label = type_label(notifier.spec.kind);
    let mut cursors: Vec<Delivered> = Vec::new();

    for app in &apps {
        let app_name = app.name_any();
        let mut cursor = status
            .delivered
            .iter()
            .find(|d| d.application == app_name)
            .cloned();
        let app_status = app.status.clone().unwrap_or_default();
        let reports = report::reports(&app_status);
        let due = report::due(&reports, cursor.as_ref()).to_vec();
        if !due.is_empty() && failed.is_none() {
            let target = if forge {
                let source_name = app.spec.source_ref.name.clone();
                if !source_cache.contains_key(&source_name) {
                    let s = sources.get_opt(&source_name).await.ok().flatten();
                    source_cache.insert(source_name.clone(), s);
                }
                match forge_target(&notifier, source_cache[&source_name].as_ref()) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        failed = Some((
                            "RepositoryUnknown",
                            format!("Application {app_name}: {e}"),
                            None,
                        ));
                        None
                    }
                }
            } else {
                None
            };
            let cluster = app_status.cluster.clone().unwrap_or_else(|| "local".into());
            let subject = Subject {
                namespace: &ns,
                name: &app_name,
                cluster: &cluster,
            };
            for report in &due {
                if failed.is_some() {
                    break;
                }
                let wanted =
                    notifier.spec.severity == Severity::Info || report.state == State::Failure;
                // (A forge without a target failed above, which ended the loop already.)
                let req = request(&notifier, &creds, target.as_ref(), subject, report);
                if let (true, Some(req)) = (wanted, req) {
                    match send::send(&req, creds.ca_pem.as_deref(), notifier.spec.insecure).await {
                        Ok(()) => {
                            ctx.metrics
                                .notification(kind_label, report.event, "delivered");
                            status.last_delivery = Some(delivery(&app_name, &ns, report, None));
                        }
                        Err(e) => {
                            ctx.metrics
                                .notification(kind_label, report.event, e.label());
                            tracing::warn!(namespace = %ns, name = %name, application = %app_name, error = %e, "notification not delivered");
                            status.last_failure =
                                Some(delivery(&app_name, &ns, report, Some(e.to_string())));
                            let reason = match e {
                                SendError::Refused(_) => "AddressRefused",
                                _ => "DeliveryFailed",
                            };
                            failed = Some((
                                reason,
                                format!(
                                    "Application {app_name}, revision {}: {e}",
                                    report.revision
                                ),
                                e.retry_after(),
                            ));
                            break;
                        }
                    }
                }
                // Delivered, filtered out by severity, or nothing to say (no commit): done.
                cursor = Some(Delivered {
                    application: app_name.clone(),
                    revision: report.revision.clone(),
                    state: report.state.as_str().to_string(),
                });
            }
        }
        if let Some(c) = cursor {
            cursors.push(c);
        }
    }
    status.delivered = cursors;

    let key = (ns.clone(), name.clone());
    let action = match &failed {
        None => {
            ctx.failures.lock().expect("notifier failures").remove(&key);
            let message = format!(
                "reporting {} {}",
                apps.len(),
                crate::text::agree(apps.len(), "Application", "Applications")
            );
            set_ready(&mut status, Status::True, "Succeeded", message);
            Action::requeue(Duration::from_secs(600))
        }
        Some((reason, message, retry_after)) => {
            set_ready(&mut status, Status::False, reason, message.clone());
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
            Action::requeue(retry_after.map(|r| r.max(wait)).unwrap_or(wait))
        }
    };
    if status != before {
        apply_status(&api, &name, &status).await?;
    }
    Ok(action)
}

pub async fn run(ctx: Arc<Context>, api: Api<Notifier>, apps: Api<Application>) {
    let (reader, writer) = reflector::store();
    let app_events = watcher(apps, ctx.watch())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let nctx = Arc::new(NotifierContext {
        shared: ctx.clone(),
        apps: reader,
        failures: Default::default(),
    });
    let controller = Controller::new(api, ctx.watch()).with_config(ctx.controller_config());
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
