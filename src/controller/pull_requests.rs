//! Pull request plans: for each GitRepository with `spec.plan.enabled`, the open pull requests
//! its Receivers recorded (`plan.gantry.dev/pr-<n>` annotations) are planned at their head
//! (plan/compute.rs, with clients and a request budget of their own) and the plan is posted
//! through the namespace's first gitea, github or gitlab Notifier: one comment per pull
//! request, edited in place on every push, and a `gantry/plan` status on the head. What was
//! planned is recorded in `status.plans` (under the field manager `gantry-plan`), so a
//! restart neither plans a head twice nor loses the comment to edit. A newer push replaces
//! the request; a plan whose head is no longer the request's is not posted. At most
//! `--max-plans` plans run at once, each within `--max-timeout`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, watcher};

use super::context::Context;
use super::revision_plan;
use crate::api::annotations::{PlanRequest, plan_requests};
use crate::api::git_repository::PlanRecord;
use crate::api::{GitRepository, Notifier};
use crate::error::Result;
use crate::notify::deliver::Credentials;
use crate::notify::provider::pull_request::{self as forge, PlanState};
use crate::notify::send::{self, Pace, SendError, Targets};
use crate::plan::{Verdict, format};

/// The field manager of `status.plans`.
const FIELD_MANAGER: &str = "gantry-plan";
/// Marks Gantry's plan comment.
const MARKER: &str = "<!-- gantry-plan -->";

struct PlanContext {
    shared: Arc<Context>,
    notify: Targets,
    permits: tokio::sync::Semaphore,
    /// The GitRepositories as watched: a plan whose request a newer push replaced is
    /// cancelled as soon as the watch shows it.
    sources: kube::runtime::reflector::Store<GitRepository>,
}

/// Resolves once `req` is no longer among the requests of `ns/name` (a newer push, the pull
/// request closed), as the watch cache shows it.
async fn superseded(
    sources: &kube::runtime::reflector::Store<GitRepository>,
    ns: &str,
    name: &str,
    req: &PlanRequest,
) {
    let key = kube::runtime::reflector::ObjectRef::new(name).within(ns);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let current = sources.get(&key);
        if !current.is_some_and(|r| plan_requests(r.annotations()).contains(req)) {
            return;
        }
    }
}

/// Where plans of a namespace are posted: a Notifier's forge, repository and credentials.
struct Forge {
    notifier: Notifier,
    api: String,
    repository: String,
    creds: Credentials,
}

fn record(req: &PlanRequest, result: &str, message: String, comment: Option<String>) -> PlanRecord {
    PlanRecord {
        number: req.number,
        head: req.head.clone(),
        result: result.into(),
        message: message.chars().take(300).collect(),
        comment_id: comment,
        planned_at: Time(Timestamp::now()),
    }
}

/// The first Notifier of the namespace that can post plans (by name), and where it posts.
async fn forge_of(ctx: &PlanContext, repo: &GitRepository) -> std::result::Result<Forge, String> {
    let ns = repo.namespace().unwrap_or_default();
    let mut notifiers: Vec<Notifier> = Api::<Notifier>::namespaced(ctx.shared.client.clone(), &ns)
        .list(&Default::default())
        .await
        .map_err(|e| format!("cannot list Notifiers: {e}"))?
        .items
        .into_iter()
        .filter(|n| forge::supported(n.spec.kind) && !n.spec.suspend)
        .collect();
    notifiers.sort_by_key(|n| n.name_any());
    let notifier = notifiers.into_iter().next().ok_or_else(|| {
        "no gitea, github or gitlab Notifier in the namespace to post the plan through".to_string()
    })?;
    let (api, repository) = super::notifier::forge_target(&notifier, Some(repo))
        .map_err(|e| format!("Notifier {}: {e}", notifier.name_any()))?;
    let secret = &notifier.spec.secret_ref.name;
    let data = super::secrets::read(&ctx.shared.client, &ns, secret).await?;
    let creds = Credentials::from_secret(notifier.spec.kind, secret, &data)?;
    Ok(Forge {
        notifier,
        api,
        repository,
        creds,
    })
}

async fn send_to(
    ctx: &PlanContext,
    forge: &Forge,
    req: &crate::notify::provider::Request,
) -> std::result::Result<Vec<u8>, SendError> {
    let pace = Pace::new(forge.notifier.spec.kind.rate_limit());
    send::send(
        req,
        send::Options {
            ca_pem: forge.creds.ca_pem.as_deref(),
            insecure: forge.notifier.spec.insecure,
            targets: &ctx.notify,
            pace: &pace,
        },
    )
    .await
}

/// Posts (or edits) the comment and sets the status; the comment's id.
async fn post(
    ctx: &PlanContext,
    forge: &Forge,
    req: &PlanRequest,
    comment: Option<&str>,
    body: Option<&str>,
    state: PlanState,
    description: &str,
) -> std::result::Result<Option<String>, SendError> {
    let kind = forge.notifier.spec.kind;
    let token = forge.creds.token.as_deref().unwrap_or_default();
    let (api, repository) = (forge.api.as_str(), forge.repository.as_str());
    let mut id = comment.map(str::to_string);
    if let Some(body) = body {
        let edited = match comment {
            Some(c) => {
                let edit = forge::edit_comment(kind, api, repository, req.number, c, body, token);
                match send_to(ctx, forge, &edit).await {
                    Ok(_) => true,
                    // Deleted by someone: a new one.
                    Err(SendError::Status { status: 404, .. }) => false,
                    Err(e) => return Err(e),
                }
            }
            None => false,
        };
        if !edited {
            let create = forge::create_comment(kind, api, repository, req.number, body, token);
            id = forge::comment_id(&send_to(ctx, forge, &create).await?);
        }
    }
    let status = forge::status(kind, api, repository, &req.head, state, description, token);
    send_to(ctx, forge, &status).await?;
    Ok(id)
}

/// Plans one request and posts it; the record (`None`: superseded by a newer push, or to be
/// retried).
async fn plan_one(
    ctx: &PlanContext,
    repo: &GitRepository,
    req: &PlanRequest,
    previous: Option<&PlanRecord>,
) -> Option<PlanRecord> {
    let ns = repo.namespace().unwrap_or_default();
    let name = repo.name_any();
    let comment = previous.and_then(|p| p.comment_id.clone());
    let from_forks = repo.spec.plan.as_ref().is_some_and(|p| p.from_forks);
    let forge = forge_of(ctx, repo).await;
    if req.from_fork && !from_forks {
        let why = "not planned: the pull request comes from a fork (spec.plan.fromForks is off)";
        if let Ok(forge) = &forge
            && let Err(e) = post(ctx, forge, req, None, None, PlanState::Skipped, why).await
        {
            tracing::warn!(namespace = %ns, %name, number = req.number, error = %e, "cannot post the plan status");
            return None;
        }
        return Some(record(req, "skipped", why.into(), comment));
    }
    let _permit = ctx.permits.acquire().await.ok()?;
    let work = tempfile::tempdir_in(&ctx.shared.data_dir).ok()?;
    let timeout = ctx.shared.max_timeout;
    let fetch_timeout = repo.spec.timeout.parse().unwrap_or(Duration::from_secs(60));
    let started = std::time::Instant::now();
    // A fork's head is on no branch of the repository: its pull request's ref.
    let pull_refs = if req.from_fork {
        vec![
            format!("refs/pull/{}/head", req.number),
            format!("refs/merge-requests/{}/head", req.number),
        ]
    } else {
        vec![]
    };
    let compute = tokio::time::timeout(
        timeout,
        revision_plan::plan(revision_plan::Request {
            client: &ctx.shared.client,
            targets: &ctx.shared.plan_targets,
            source: repo,
            reference: &req.head,
            base: None,
            also_fetch: &pull_refs,
            only: &[],
            work: work.path(),
            timeout: fetch_timeout,
        }),
    );
    let planned = tokio::select! {
        planned = compute => planned,
        _ = superseded(&ctx.sources, &ns, &name, req) => {
            tracing::info!(namespace = %ns, %name, number = req.number, head = %req.head, "plan cancelled: a newer push or the pull request closed");
            return None;
        }
    };
    tracing::info!(namespace = %ns, %name, number = req.number, head = %req.head, seconds = started.elapsed().as_secs_f64(), "pull request planned");
    let (body, state, description) = match planned {
        Ok(Ok(plan)) => {
            let counts = plan
                .applications
                .iter()
                .map(|a| a.counts())
                .fold((0, 0, 0), |(c, r, n), x| {
                    (c + x.changes(), r + x.refused, n + 1)
                });
            let description = format!(
                "{} Applications: {} changes, {} refused",
                counts.2, counts.0, counts.1
            );
            let state = match plan.verdict() {
                Verdict::Refused => PlanState::Failure,
                _ => PlanState::Success,
            };
            (
                format!("{MARKER}\n{}", format::markdown(&plan)),
                state,
                description,
            )
        }
        Ok(Err(e)) => (
            format!(
                "{MARKER}\n### Gantry plan: cannot plan `{}`\n\n{}\n",
                &req.head[..12],
                e
            ),
            PlanState::Failure,
            format!("cannot plan: {e}"),
        ),
        Err(_) => (
            format!(
                "{MARKER}\n### Gantry plan: `{}` took longer than {timeout:?}\n",
                &req.head[..12]
            ),
            PlanState::Failure,
            format!("the plan took longer than {timeout:?}"),
        ),
    };
    // A newer push while this plan ran: its own plan is (or will be) under way.
    let api: Api<GitRepository> = Api::namespaced(ctx.shared.client.clone(), &ns);
    let current = api.get_opt(&name).await.ok().flatten()?;
    if !plan_requests(current.annotations()).contains(req) {
        return None;
    }
    let result = match state {
        PlanState::Success => "success",
        _ => "failure",
    };
    match &forge {
        Ok(forge) => match post(
            ctx,
            forge,
            req,
            comment.as_deref(),
            Some(&body),
            state,
            &description,
        )
        .await
        {
            Ok(id) => Some(record(req, result, description, id)),
            Err(e) => {
                tracing::warn!(namespace = %ns, %name, number = req.number, error = %e, "cannot post the plan");
                None
            }
        },
        Err(why) => Some(record(
            req,
            result,
            format!("{description}; not posted: {why}"),
            comment,
        )),
    }
}

async fn reconcile(repo: Arc<GitRepository>, ctx: Arc<PlanContext>) -> Result<Action> {
    let ns = repo.namespace().unwrap_or_default();
    let name = repo.name_any();
    // Most sources plan nothing: they cost no request here.
    let planned_before = repo.status.as_ref().is_some_and(|s| !s.plans.is_empty());
    if !repo.spec.plan.as_ref().is_some_and(|p| p.enabled) && !planned_before {
        return Ok(Action::await_change());
    }
    let api: Api<GitRepository> = Api::namespaced(ctx.shared.client.clone(), &ns);
    let Some(repo) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let enabled = repo.spec.plan.as_ref().is_some_and(|p| p.enabled) && ctx.shared.max_plans > 0;
    let requests = if enabled {
        plan_requests(repo.annotations())
    } else {
        vec![]
    };
    let before = repo
        .status
        .as_ref()
        .map(|s| s.plans.clone())
        .unwrap_or_default();
    // Closed pull requests are forgotten.
    let mut plans: Vec<PlanRecord> = before
        .iter()
        .filter(|p| requests.iter().any(|r| r.number == p.number))
        .cloned()
        .collect();
    let mut retry = false;
    for req in &requests {
        let previous = plans.iter().position(|p| p.number == req.number);
        if previous.is_some_and(|i| plans[i].head == req.head) {
            continue;
        }
        match plan_one(&ctx, &repo, req, previous.map(|i| &plans[i])).await {
            Some(rec) => match previous {
                Some(i) => plans[i] = rec,
                None => plans.push(rec),
            },
            None => retry = true,
        }
    }
    plans.sort_by_key(|p| p.number);
    if plans != before {
        let patch = serde_json::json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
            "status": {"plans": plans},
        });
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    }
    Ok(if retry {
        Action::requeue(Duration::from_secs(30))
    } else {
        Action::await_change()
    })
}

pub async fn run(ctx: Arc<Context>, notify: Targets, api: Api<GitRepository>) {
    // A round is due when the plan requests or the spec change, not at status writes.
    let (reader, writer) = kube::runtime::reflector::store();
    let changes = watcher(api, ctx.watch())
        .modify(|r: &mut GitRepository| r.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            |r: &GitRepository| {
                let requests: Vec<_> = r
                    .annotations()
                    .iter()
                    .filter(|(k, _)| k.starts_with(crate::api::annotations::PLAN_REQUEST_PREFIX))
                    .collect();
                Some(super::hash_of(&(
                    &r.metadata.uid,
                    r.metadata.generation,
                    requests,
                )))
            },
            Default::default(),
        );
    let controller = Controller::for_stream(changes, reader);
    let pctx = Arc::new(PlanContext {
        permits: tokio::sync::Semaphore::new(ctx.max_plans.max(1)),
        shared: ctx.clone(),
        notify,
        sources: controller.store(),
    });
    controller
        .with_config(ctx.controller_config())
        .graceful_shutdown_on(super::shutdown_signal())
        .run(
            |obj, ctx| super::measured(obj, ctx, reconcile),
            super::error_policy,
            pctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

impl AsRef<Context> for PlanContext {
    fn as_ref(&self) -> &Context {
        &self.shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;

    fn repo(annotations: &[(&str, &str)]) -> GitRepository {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
            "metadata": {"name": "repo", "namespace": "team", "annotations":
                annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>()},
            "spec": {"url": "https://git.example/team/app.git"}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_newer_push_cancels_the_running_plan_of_the_older_head() {
        let (reader, mut writer) = kube::runtime::reflector::store();
        let old = "a".repeat(40);
        let new = "b".repeat(40);
        let key = format!("{}7", crate::api::annotations::PLAN_REQUEST_PREFIX);
        writer.apply_watcher_event(&Event::Apply(repo(&[(&key, &old)])));
        let req = PlanRequest {
            number: 7,
            head: old.clone(),
            from_fork: false,
        };
        // While the request stands, the plan goes on.
        let waiting = tokio::time::timeout(
            Duration::from_millis(1200),
            superseded(&reader, "team", "repo", &req),
        )
        .await;
        assert!(
            waiting.is_err(),
            "not cancelled while its head is the request"
        );
        // A push: the request names a newer head; the running plan stops.
        writer.apply_watcher_event(&Event::Apply(repo(&[(&key, &new)])));
        tokio::time::timeout(
            Duration::from_secs(2),
            superseded(&reader, "team", "repo", &req),
        )
        .await
        .expect("cancelled by the newer head");
        // Closing the pull request (the annotation removed) cancels too.
        let newer = PlanRequest { head: new, ..req };
        writer.apply_watcher_event(&Event::Apply(repo(&[])));
        tokio::time::timeout(
            Duration::from_secs(2),
            superseded(&reader, "team", "repo", &newer),
        )
        .await
        .expect("cancelled by the close");
    }
}
