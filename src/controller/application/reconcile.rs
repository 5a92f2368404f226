//! Application reconciler: source artifact → sync pipeline → status, history and events.
//! A no-op reconcile (same revision, same generation, healthy) makes no request but reads.

use crate::health::rules::Rules;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};

use super::artifact::Checkout;
use super::canary;
use super::decide::{self, ArtifactSeen, Observations, Step};
use super::drift::check_drift;
use super::follow::{follow_health, health_condition};
use super::full_sync::{SameSet, full_sync, same_set_as_applied};
use super::guards::Checkpoint;
use super::live_health;
use super::memory::AppContext;
use super::pass::Pass;
use super::pipeline::SyncInput;
use super::reasons;
use super::record::{Outcome, set, write_outcome};
use super::write_back;
use crate::api::GitRepository;
use crate::api::application::{Application, ApplicationStatus, SyncPolicy};
use crate::api::conditions::{self, Status};
use crate::api::git_repository::Artifact;
use crate::cluster::{Target, TargetError};
use crate::controller::context::FINALIZER;
use crate::error::{Error, Result};
use crate::health::Health;

/// Annotation set by `gantry sync` to ask for a sync (value: a timestamp).
use crate::api::annotations::REQUEST_ANNOTATION;

/// What one reconcile of an Application found before deciding.
struct Gathered {
    observations: Observations,
    found: Option<Found>,
    target: std::result::Result<Arc<Target>, TargetError>,
    revision: String,
    /// The `gantry sync` request not handled yet.
    request: Option<String>,
}

async fn gather(
    ctx: &Arc<AppContext>,
    api: &Api<Application>,
    app: &Application,
    previous_generation: Option<i64>,
) -> Result<Gathered> {
    let ns = app.namespace().unwrap_or_default();
    let status = app.status.clone().unwrap_or_default();
    let unready_dependency = first_unready_dependency(api, app).await?;
    // The tree stays on disk (leased) while this reconcile renders it, whatever the source
    // does meanwhile.
    let (artifact_seen, found) = find_artifact(ctx, &ns, app).await?;
    let revision = match &artifact_seen {
        ArtifactSeen::Ready { revision } => revision.clone(),
        _ => String::new(),
    };
    // Where and as whom the Application acts; a target the controller cannot act as stops
    // it, rather than deploying with the controller's own rights or into the wrong cluster.
    let target = ctx.targets.for_app(app).await;
    let requested = app.annotations().get(REQUEST_ANNOTATION).cloned();
    let sync_requested = requested.is_some() && requested != status.last_handled_request;
    let mut observations = Observations {
        suspended: app.spec.suspend,
        invalid: Rules::compile(&app.spec.health_checks).err(),
        no_target: target.as_ref().err().map(|e| (e.reason(), e.to_string())),
        unready_dependency,
        artifact: artifact_seen,
        generation_changed: previous_generation != app.metadata.generation,
        sync_requested,
        manual: app.spec.sync_policy == SyncPolicy::Manual,
        last_applied_revision: status.last_applied_revision.clone(),
        ready: conditions::find(&status.conditions, conditions::READY)
            .map(|c| (c.status.clone(), c.reason.clone())),
        rejected: crate::rollout::plan::is_rejected(&status, &revision),
        canary_active: canary::active(status.rollout.as_ref(), &revision),
        retry_in: ctx.memory.sync_retry_in(
            &ns,
            &app.name_any(),
            &revision,
            app.metadata.generation,
        ),
        chart_moved: false,
    };
    // A chart version published inside `spec.render.helm.chart.version`'s range is a new
    // revision of the Application although Git did not change. Asked only when the revision
    // is otherwise up to date (a sync renders the newest version in range anyway), and
    // without a request for Applications without a chart range.
    if found.is_some() && decide::up_to_date(&observations, &revision) {
        let moved = super::chart::chart_moved(&ctx.client, app).await;
        if let Some(version) = &moved {
            tracing::info!(namespace = %ns, name = %app.name_any(), version, "a new chart version in range");
        }
        observations.chart_moved = moved.is_some();
    }
    Ok(Gathered {
        observations,
        found,
        target,
        revision,
        request: sync_requested.then_some(requested).flatten(),
    })
}

/// The steps that end the reconcile before the artifact is used: the condition they write
/// and when to look again; `None` for the steps that act on the artifact.
fn stop_early(step: &Step) -> Option<(Status, &'static str, String, Option<Action>)> {
    Some(match step {
        Step::Suspended => (
            Status::Unknown,
            reasons::SUSPENDED,
            "reconciliation is suspended".into(),
            Some(Action::await_change()),
        ),
        // The spec must change first.
        Step::InvalidSpec(m) => (
            Status::False,
            reasons::INVALID_HEALTH_CHECK,
            m.clone(),
            Some(Action::await_change()),
        ),
        // Retried: a ServiceAccount or a Secret may be created, a cluster may come back
        // (unreachable clusters with backoff, see `apply`).
        Step::NoTarget(why, m) => (
            Status::False,
            why,
            m.clone(),
            Some(Action::requeue(Duration::from_secs(10))),
        ),
        Step::WaitForDependency(d) => (
            Status::False,
            reasons::DEPENDENCY_NOT_READY,
            format!("waiting for Application {d} to be Ready"),
            Some(Action::requeue(Duration::from_secs(5))),
        ),
        // The source controller writes it again (e.g. after a restart); come back soon,
        // writing nothing.
        Step::ArtifactNotYet => (Status::Unknown, "", String::new(), None),
        // Not a failure: the source's first fetch is under way.
        Step::ArtifactWaiting(m) => (
            Status::Unknown,
            reasons::PROGRESSING,
            m.clone(),
            Some(Action::requeue(Duration::from_secs(5))),
        ),
        Step::ArtifactFailed(m) => (
            Status::False,
            reasons::ARTIFACT_FAILED,
            m.clone(),
            Some(Action::requeue(Duration::from_secs(5))),
        ),
        _ => return None,
    })
}

async fn apply(cached: Arc<Application>, ctx: Arc<AppContext>) -> Result<Action> {
    let ns = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let api: Api<Application> = Api::namespaced(ctx.client.clone(), &ns);
    // The watch cache can lag behind the status this controller wrote a moment ago; acting on
    // a stale status would re-sync a revision or drop drift findings. One GET makes it exact.
    let Some(app) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let generation = app.metadata.generation;
    let interval = ctx.interval(&app.spec.interval, Duration::from_secs(300));
    let mut status = app.status.clone().unwrap_or_default();
    let previous_generation = status.observed_generation;
    status.observed_generation = generation;

    // Gather what the decision needs, `decide`, act, and write what the step leaves.
    let gathered = gather(&ctx, &api, &app, previous_generation).await?;
    let step = decide::next_step(&gathered.observations);
    let revision = gathered.revision;
    ctx.memory.detached.note_revision(&ns, &name, &revision);
    tracing::debug!(namespace = %ns, name = %name, ?step, revision = %revision, "reconcile");
    // A cluster that does not answer is looked at again with backoff.
    let unreachable = matches!(step, Step::NoTarget(..))
        && gathered.target.as_ref().is_err_and(|e| e.is_transient());
    let action = ctx.memory.target_backoff(&ns, &name, unreachable);
    if let Some((s, why, message, step_action)) = stop_early(&step) {
        let Some(step_action) = step_action else {
            return Ok(Action::requeue(Duration::from_secs(2)));
        };
        set(&mut status, conditions::READY, s, why, message, generation);
        let outcome = Outcome::write(status, action.unwrap_or(step_action));
        return write_outcome(&api, &app, None, outcome).await;
    }
    let (Some((source, artifact, lease)), Ok(target)) = (gathered.found, gathered.target) else {
        return Err(Error::Usage(format!(
            "internal: step {step:?} without an artifact or a target"
        )));
    };
    let artifact_root = lease.path().to_path_buf();
    status.cluster = Some(target.cluster.clone());

    // Image automation first: a new image goes to Git, and from there to the cluster.
    write_back::run(&ctx, &app, &source, &artifact_root, &mut status).await;

    let checkpoint = Checkpoint::new(&api, &name, &revision, generation);
    let pass = Pass {
        ctx: &ctx,
        app: &app,
        source: &source,
        target: &target,
        revision,
        // Drift checks and canary steps see the whole rendered set; a sync adds its holds.
        input: SyncInput {
            target: &target,
            local: &ctx.client,
            app: &app,
            artifact_root: &artifact_root,
            artifact_check: Some((&ctx.artifacts, &artifact.digest)),
            hold: None,
            record_planned: None,
            timeout: ctx.app_timeout(&app),
        },
        interval,
        checkpoint: &checkpoint,
    };
    let outcome = act(step, &pass, status, gathered.request).await?;
    write_outcome(&api, &app, checkpoint.held(), outcome).await
}

/// Carries out the decided step, once the early stops are behind: report, wait, check
/// drift and health, drive a canary, or sync.
async fn act(
    step: Step,
    pass: &Pass<'_>,
    mut status: ApplicationStatus,
    request: Option<String>,
) -> Result<Outcome> {
    let (app, interval) = (pass.app, pass.interval);
    let revision = &pass.revision;
    match step {
        // A revision whose rollout was aborted is not applied again until Git (or the spec)
        // changes, or someone asks with `gantry sync`; meanwhile report how the workloads
        // that run (the last healthy revision's) are doing.
        Step::RejectedRevision => Ok(report_rejected(pass, status).await),
        Step::ManualSyncRequired => {
            let (ns, name) = (app.namespace().unwrap_or_default(), app.name_any());
            let m = format!("revision {revision} is waiting for `gantry sync {ns}/{name}`");
            let why = reasons::MANUAL_SYNC_REQUIRED;
            set(
                &mut status,
                conditions::READY,
                Status::Unknown,
                why,
                m,
                pass.generation(),
            );
            Ok(Outcome::write(status, Action::requeue(interval)))
        }
        // A status write (the failure's own) or another event came before the backoff ran
        // out: the sync is not retried yet.
        Step::BackOff(wait) => Ok(Outcome::write(status, Action::requeue(wait))),
        Step::UpToDate => up_to_date(pass, status).await,
        // A canary of this revision is running: carry it on. Drift checks go on for
        // everything but the stable Deployments, whose held template is expected to differ
        // from Git.
        Step::CarryOnCanary => {
            let held = status
                .rollout
                .as_ref()
                .map(|r| r.canaries.clone())
                .unwrap_or_default();
            let input = &pass.input;
            check_drift(pass.ctx, app, &mut status, revision, input, interval, &held).await;
            Ok(canary::drive(pass, status).await)
        }
        // A new revision that renders the same objects as the applied one (a commit
        // elsewhere in the repository) is recorded as applied, with no dry-run: then it is
        // up to date. Otherwise the sync uses the render made to compare.
        Step::Sync if request.is_none() => {
            match same_set_as_applied(pass.ctx, app, &mut status, revision, &pass.input).await {
                SameSet::Recorded => up_to_date(pass, status).await,
                SameSet::Differs(rendered) => full_sync(pass, status, None, rendered).await,
            }
        }
        _ => full_sync(pass, status, request, None).await,
    }
}

/// The revision is applied: check drift, follow health.
async fn up_to_date(pass: &Pass<'_>, mut status: ApplicationStatus) -> Result<Outcome> {
    let (ctx, app, revision) = (pass.ctx, pass.app, &pass.revision);
    check_drift(
        ctx,
        app,
        &mut status,
        revision,
        &pass.input,
        pass.interval,
        &[],
    )
    .await;
    follow_health(pass, status, false).await
}

/// The first `dependsOn` Application that is not Ready at its current generation.
async fn first_unready_dependency(
    api: &Api<Application>,
    app: &Application,
) -> Result<Option<String>> {
    for dep in &app.spec.depends_on {
        let other = api.get_opt(&dep.name).await?;
        let ready = other
            .as_ref()
            .and_then(|o| o.status.as_ref())
            .is_some_and(|s| {
                conditions::find(&s.conditions, conditions::READY).is_some_and(|c| {
                    conditions::is(c, Status::True)
                        && c.observed_generation == o_gen(other.as_ref())
                })
            });
        if !ready {
            return Ok(Some(dep.name.clone()));
        }
    }
    Ok(None)
}

type Found = (GitRepository, Artifact, crate::source::store::Lease);

/// The source, its artifact and the leased tree, or why there is none.
async fn find_artifact(
    ctx: &Arc<AppContext>,
    ns: &str,
    app: &Application,
) -> Result<(ArtifactSeen, Option<Found>)> {
    let repos: Api<GitRepository> = Api::namespaced(ctx.client.clone(), ns);
    let source_name = &app.spec.source_ref.name;
    let Some(source) = repos.get_opt(source_name).await? else {
        let m = format!("GitRepository {source_name} not found");
        return Ok((ArtifactSeen::Failed(m), None));
    };
    // Artifacts live with the controller that fetched them: a source of another shard is
    // never checked out here.
    if !ctx.shard.owns(source.labels()) {
        let m = format!(
            "GitRepository {source_name} belongs to {}, this Application to {}: give both the same {} label",
            crate::controller::shard::Shard::describe(source.labels()),
            ctx.shard,
            crate::controller::shard::SHARD_LABEL,
        );
        return Ok((ArtifactSeen::Failed(m), None));
    }
    let Some(artifact) = source.status.as_ref().and_then(|s| s.artifact.clone()) else {
        let ready = source
            .status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, conditions::READY));
        return Ok(match ready {
            Some(c) if conditions::is(c, Status::False) => {
                let m = format!("GitRepository {source_name} has no artifact: {}", c.message);
                (ArtifactSeen::Failed(m), None)
            }
            _ => {
                let m = format!("waiting for the first artifact of GitRepository {source_name}");
                (ArtifactSeen::Waiting(m), None)
            }
        });
    };
    Ok(
        match super::artifact::checkout(ctx, ns, &source, &artifact).await {
            Checkout::Ready(lease) => (
                ArtifactSeen::Ready {
                    revision: artifact.revision.clone(),
                },
                Some((source, artifact, lease)),
            ),
            Checkout::NotYet => (ArtifactSeen::NotYet, None),
            Checkout::Failed(m) => (ArtifactSeen::Failed(m), None),
        },
    )
}

/// A rejected revision: the workloads of the last healthy one run; say how they are, and
/// that Git's revision is not what runs (Drifted).
async fn report_rejected(pass: &Pass<'_>, mut status: ApplicationStatus) -> Outcome {
    let (app, generation) = (pass.app, pass.generation());
    let (drift_status, drift_message) = rejected_drift(&status.history, &pass.revision);
    set(
        &mut status,
        conditions::DRIFTED,
        drift_status,
        reasons::ROLLOUT_ABORTED,
        drift_message,
        generation,
    );
    let (health, message) = live_health::assess(
        &pass.target.applier,
        &status.inventory,
        &Rules::compile(&app.spec.health_checks).unwrap_or_default(),
    )
    .await;
    let healthy = matches!(health, Health::Healthy | Health::Suspended);
    let running = "the workloads of the last healthy revision are running";
    let (s, reason, message) = health_condition(health, &message, running, None);
    set(
        &mut status,
        conditions::HEALTHY,
        s,
        reason,
        message,
        generation,
    );
    let again = if healthy {
        pass.interval
    } else {
        Duration::from_secs(2)
    };
    Outcome::write(status, Action::requeue(again))
}

/// The Drifted condition while Git's `revision` is rejected: its workloads do not run.
fn rejected_drift(
    history: &[crate::api::application::SyncRecord],
    revision: &str,
) -> (Status, String) {
    match crate::rollout::plan::last_healthy(history, revision) {
        Some(good) => (
            Status::True,
            format!(
                "Git's revision {revision} was aborted: its workloads run the templates of revision {}; the rest of it is applied",
                good.revision
            ),
        ),
        None => (
            Status::True,
            format!("Git's revision {revision} was aborted: its workloads are not running it"),
        ),
    }
}

fn o_gen(app: Option<&Application>) -> Option<i64> {
    app.and_then(|a| a.metadata.generation)
}

pub(super) async fn reconcile(app: Arc<Application>, ctx: Arc<AppContext>) -> Result<Action> {
    let ns = app.namespace().unwrap_or_default();
    let api: Api<Application> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, app, |event| async {
        match event {
            Event::Apply(a) => super::detach::bounded(a, ctx.clone(), apply).await,
            Event::Cleanup(a) => {
                ctx.memory
                    .detached
                    .end(&a.namespace().unwrap_or_default(), &a.name_any());
                super::cleanup::cleanup(a, ctx.clone()).await
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_steps_before_the_artifact_stop_early() {
        for step in [
            Step::Suspended,
            Step::NoTarget("ServiceAccountNotFound", "x".into()),
            Step::WaitForDependency("db".into()),
            Step::ArtifactFailed("gone".into()),
        ] {
            let (_, why, _, action) = stop_early(&step).expect("stops");
            assert!(!why.is_empty() && action.is_some(), "{step:?}");
        }
        // Not yet written by the source: nothing is written, and the reconcile comes back.
        assert!(stop_early(&Step::ArtifactNotYet).is_some_and(|(.., a)| a.is_none()));
        for step in [
            Step::RejectedRevision,
            Step::ManualSyncRequired,
            Step::UpToDate,
            Step::CarryOnCanary,
            Step::Sync,
        ] {
            assert!(stop_early(&step).is_none(), "{step:?}");
            assert!(step.has_artifact());
        }
    }
}

/// One test per early outcome of a reconcile, against a fake API server: what it reads,
/// the one status write (its Ready condition) and when it looks again.
#[cfg(test)]
mod outcomes {
    use super::super::fixtures::FakeApi;
    use super::*;
    use serde_json::{Value, json};

    const APPS: &str = "/apis/gantry.dev/v1alpha1/namespaces/team/applications";
    const SOURCES: &str = "/apis/gantry.dev/v1alpha1/namespaces/team/gitrepositories";

    fn app(name: &str, spec: Value) -> Value {
        let mut s = json!({"sourceRef": {"kind": "GitRepository", "name": "repo"}, "path": "."});
        for (k, v) in spec.as_object().unwrap() {
            s[k] = v.clone();
        }
        json!({"apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
               "metadata": {"name": name, "namespace": "team", "generation": 1, "uid": format!("uid-{name}")},
               "spec": s})
    }

    fn source(status: Value) -> Value {
        json!({"apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
               "metadata": {"name": "repo", "namespace": "team"},
               "spec": {"url": "https://git.example/team/app.git"}, "status": status})
    }

    async fn context(api: &FakeApi, data: &std::path::Path) -> Arc<AppContext> {
        let opts = crate::controller::Options {
            namespace: Some("team".into()),
            data_dir: data.to_path_buf(),
            limits: Default::default(),
            reconcile_concurrency: 4,
            max_timeout: Duration::from_secs(60),
            fetches: crate::source::fetch_gate::FetchGate::new(4, 4),
            shard: crate::controller::shard::Shard::new(None).unwrap(),
            election: None,
            receiver_addr: None,
            metrics_addr: None,
            min_interval: Duration::from_secs(1),
            tenancy: Default::default(),
            file_sources_root: None,
            notify_targets: crate::notify::send::Targets {
                allow_private: false,
                service_networks: vec![],
            },
            max_plans: 0,
        };
        let (ctx, _) = crate::controller::context::Context::new(api.config(), &opts).unwrap();
        Arc::new(AppContext::new(Arc::new(ctx)))
    }

    /// Reconciles `name` once; the action and the Ready condition of the one status write.
    async fn outcome(api: &FakeApi, name: &str) -> (Action, Option<Value>) {
        let data = tempfile::tempdir().unwrap();
        let ctx = context(api, data.path()).await;
        outcome_in(api, &ctx, name).await
    }

    /// [`outcome`] with a context prepared by the test.
    async fn outcome_in(
        api: &FakeApi,
        ctx: &Arc<AppContext>,
        name: &str,
    ) -> (Action, Option<Value>) {
        let (action, writes) = reconcile_once(api, ctx, name).await;
        assert!(writes.len() <= 1, "one status write at most: {writes:?}");
        (action, writes.first().map(|w| condition(w, "Ready")))
    }

    /// Reconciles `name` once; the action and the status writes it made.
    async fn reconcile_once(
        api: &FakeApi,
        ctx: &Arc<AppContext>,
        name: &str,
    ) -> (Action, Vec<super::super::fixtures::Recorded>) {
        let before = api.writes().len();
        let cached: Application = serde_json::from_value(app(name, json!({}))).unwrap();
        let action = apply(Arc::new(cached), ctx.clone())
            .await
            .expect("a reconcile");
        let writes: Vec<_> = api.writes()[before..]
            .iter()
            .filter(|w| w.path.ends_with("/status"))
            .cloned()
            .collect();
        for w in &writes {
            assert_eq!(w.method, "PATCH");
            assert_eq!(w.path, format!("{APPS}/{name}/status"));
        }
        (action, writes)
    }

    /// The condition `type_` of a status write.
    fn condition(write: &super::super::fixtures::Recorded, type_: &str) -> Value {
        write.body["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == type_).cloned())
            .unwrap_or_else(|| panic!("a {type_} condition in {}", write.body))
    }

    const MANIFEST: &str =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {greeting: hello}\n";

    /// The source `repo` with an artifact of one commit (a ConfigMap) in the controller's
    /// store, and the API server's discovery of ConfigMaps: the artifact's revision.
    fn with_artifact(api: &FakeApi, ctx: &AppContext) -> String {
        let dir = tempfile::tempdir().unwrap();
        let (repo, oid) =
            crate::source::test_repo::commit_files(dir.path(), &[("cm.yaml", MANIFEST)]);
        let (_, digest) = ctx
            .artifacts
            .write("team", "repo", &repo, oid, &[])
            .unwrap();
        let revision = format!("main@sha1:{oid}");
        let artifact =
            json!({"revision": revision, "digest": digest, "fetchedAt": "2026-01-01T00:00:00Z"});
        api.put(
            &format!("{SOURCES}/repo"),
            source(json!({"artifact": artifact})),
        );
        api.put(
            "/api",
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
        );
        api.put(
            "/apis",
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
        );
        api.put("/api/v1", json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            {"name": "configmaps", "singularName": "configmap", "namespaced": true, "kind": "ConfigMap",
             "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}]}));
        revision
    }

    /// A fake API server, a controller context on it and the source with an artifact:
    /// (server, context, the artifact's revision, the controller's data directory).
    async fn with_source() -> (FakeApi, Arc<AppContext>, String, tempfile::TempDir) {
        let api = FakeApi::start().await;
        let data = tempfile::tempdir().unwrap();
        let ctx = context(&api, data.path()).await;
        let revision = with_artifact(&api, &ctx);
        (api, ctx, revision, data)
    }

    /// The API server holds the ConfigMap of [`MANIFEST`] (and answers its dry-run and
    /// apply with it): its path.
    fn live_config_map(api: &FakeApi) -> &'static str {
        let cm = "/api/v1/namespaces/team/configmaps/settings";
        api.put(
            cm,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "team"}, "data": {"greeting": "hello"}}),
        );
        cm
    }

    /// An Application's status as a reconcile of `revision` left it: applied, Ready and
    /// Healthy.
    fn applied(revision: &str) -> Value {
        let condition = |type_: &str, reason: &str| {
            json!({"type": type_, "status": "True",
            "reason": reason, "message": "", "observedGeneration": 1,
            "lastTransitionTime": "2026-01-01T00:00:00Z"})
        };
        json!({"observedGeneration": 1, "lastAppliedRevision": revision,
               "lastAttemptedRevision": revision,
               "conditions": [condition("Ready", reasons::SUCCEEDED), condition("Healthy", reasons::HEALTHY)]})
    }

    #[tokio::test]
    async fn a_suspended_application_says_so_and_waits_for_a_change() {
        let api = FakeApi::start().await;
        api.put(&format!("{APPS}/web"), app("web", json!({"suspend": true})));
        let (action, ready) = outcome(&api, "web").await;
        assert_eq!(action, Action::await_change());
        let ready = ready.unwrap();
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("Unknown"), Some(reasons::SUSPENDED))
        );
    }

    #[tokio::test]
    async fn a_health_rule_that_does_not_compile_stops_until_the_spec_changes() {
        let api = FakeApi::start().await;
        let checks = json!({"healthChecks": [{"apiVersion": "v1", "kind": "ConfigMap", "current": "this is not CEL ((("}]});
        api.put(&format!("{APPS}/web"), app("web", checks));
        let (action, ready) = outcome(&api, "web").await;
        assert_eq!(action, Action::await_change());
        assert_eq!(ready.unwrap()["reason"], reasons::INVALID_HEALTH_CHECK);
    }

    #[tokio::test]
    async fn a_missing_source_fails_and_a_source_without_artifact_waits() {
        let api = FakeApi::start().await;
        api.put(&format!("{APPS}/web"), app("web", json!({})));
        let (action, ready) = outcome(&api, "web").await;
        assert_eq!(action, Action::requeue(Duration::from_secs(5)));
        let ready = ready.unwrap();
        assert_eq!(ready["reason"], reasons::ARTIFACT_FAILED);
        assert!(
            ready["message"]
                .as_str()
                .unwrap()
                .contains("GitRepository repo not found")
        );

        let api = FakeApi::start().await;
        api.put(&format!("{APPS}/web"), app("web", json!({})));
        api.put(&format!("{SOURCES}/repo"), source(json!({})));
        let (_, ready) = outcome(&api, "web").await;
        let ready = ready.unwrap();
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("Unknown"), Some(reasons::PROGRESSING))
        );
    }

    #[tokio::test]
    async fn a_dependency_not_ready_holds_the_application() {
        let api = FakeApi::start().await;
        api.put(
            &format!("{APPS}/web"),
            app("web", json!({"dependsOn": [{"name": "db"}]})),
        );
        api.put(&format!("{APPS}/db"), app("db", json!({})));
        let (action, ready) = outcome(&api, "web").await;
        assert_eq!(action, Action::requeue(Duration::from_secs(5)));
        let ready = ready.unwrap();
        assert_eq!(ready["reason"], reasons::DEPENDENCY_NOT_READY);
        assert!(ready["message"].as_str().unwrap().contains("db"));
    }

    #[tokio::test]
    async fn a_missing_service_account_is_never_replaced_by_the_controllers_rights() {
        let api = FakeApi::start().await;
        api.put(
            &format!("{APPS}/web"),
            app("web", json!({"serviceAccountName": "deployer"})),
        );
        api.put(&format!("{SOURCES}/repo"), source(json!({})));
        let (action, ready) = outcome(&api, "web").await;
        assert_eq!(action, Action::requeue(Duration::from_secs(10)));
        let ready = ready.unwrap();
        assert_eq!(ready["status"], "False");
        assert_eq!(
            ready["reason"],
            crate::cluster::reason::SERVICE_ACCOUNT_NOT_FOUND
        );
    }

    #[tokio::test]
    async fn an_unchanged_outcome_writes_nothing() {
        let api = FakeApi::start().await;
        let mut suspended = app("web", json!({"suspend": true}));
        // The status a first reconcile wrote.
        suspended["status"] = json!({"observedGeneration": 1, "conditions": [{
            "type": "Ready", "status": "Unknown", "reason": reasons::SUSPENDED,
            "message": "reconciliation is suspended", "observedGeneration": 1,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        api.put(&format!("{APPS}/web"), suspended);
        let (action, ready) = outcome(&api, "web").await;
        assert_eq!(action, Action::await_change());
        assert_eq!(ready, None, "no write");
    }

    #[tokio::test]
    async fn a_manual_application_waits_for_gantry_sync_and_applies_nothing() {
        let (api, ctx, revision, _data) = with_source().await;
        api.put(
            &format!("{APPS}/web"),
            app("web", json!({"syncPolicy": "manual"})),
        );
        let (action, ready) = outcome_in(&api, &ctx, "web").await;
        assert_eq!(action, Action::requeue(Duration::from_secs(300)));
        let ready = ready.unwrap();
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("Unknown"), Some(reasons::MANUAL_SYNC_REQUIRED))
        );
        let message = ready["message"].as_str().unwrap();
        assert!(
            message.contains(&revision) && message.contains("gantry sync team/web"),
            "{message}"
        );
        assert!(
            api.writes().iter().all(|w| w.path.starts_with(APPS)),
            "nothing applied"
        );
    }

    #[tokio::test]
    async fn a_first_sync_writes_the_planned_inventory_then_its_outcome() {
        let (api, ctx, revision, _data) = with_source().await;
        // The API server answers the dry-run and the apply with the object.
        let cm = live_config_map(&api);
        api.put(&format!("{APPS}/web"), app("web", json!({})));
        let (action, writes) = reconcile_once(&api, &ctx, "web").await;
        assert_eq!(
            writes.len(),
            2,
            "the planned inventory, then the outcome: {writes:?}"
        );
        let planned = &writes[0].body["status"]["inventory"];
        assert_eq!(planned[0]["name"], "settings", "{planned}");
        let ready = condition(&writes[1], "Ready");
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("True"), Some(reasons::SUCCEEDED)),
            "{ready}"
        );
        assert!(ready["message"].as_str().unwrap().contains(&revision));
        // Ready and Healthy in one write (a small set's health is assessed at once).
        assert_eq!(condition(&writes[1], "Healthy")["status"], "True");
        assert_eq!(
            writes[1].body["status"]["lastAppliedRevision"],
            revision.as_str()
        );
        let applies: Vec<_> = api.writes().into_iter().filter(|w| w.path == cm).collect();
        assert!(!applies.is_empty(), "the ConfigMap is applied");
        assert!(matches!(action, a if a != Action::await_change()));
    }

    #[tokio::test]
    async fn a_sync_the_api_server_refuses_is_recorded_failed_and_backs_off() {
        let (api, ctx, revision, _data) = with_source().await;
        // No ConfigMap at its path: the API server answers the dry-run with 404.
        api.put(&format!("{APPS}/web"), app("web", json!({})));
        let (action, writes) = reconcile_once(&api, &ctx, "web").await;
        let last = writes.last().expect("a status write");
        assert!(writes.len() <= 2, "{writes:?}");
        let ready = condition(last, "Ready");
        assert_eq!(ready["status"], "False", "{ready}");
        assert!(ready["message"].as_str().unwrap().contains(&revision));
        assert_eq!(last.body["status"]["history"][0]["result"], "Failed");
        assert!(last.body["status"]["lastAppliedRevision"].is_null());
        assert_eq!(action, Action::requeue(Duration::from_secs(30)));
        // The same revision again within its backoff: nothing is tried, nothing written.
        let cached = last.body["status"].clone();
        let mut again = app("web", json!({}));
        again["status"] = cached;
        api.put(&format!("{APPS}/web"), again);
        let before = api.writes().len();
        let cached: Application = serde_json::from_value(app("web", json!({}))).unwrap();
        let action = apply(Arc::new(cached), ctx.clone()).await.unwrap();
        assert_eq!(api.writes().len(), before, "{:?}", &api.writes()[before..]);
        assert!(matches!(action, a if a != Action::await_change()));
    }

    #[tokio::test]
    async fn an_up_to_date_application_applies_nothing_and_writes_nothing_twice() {
        let (api, ctx, revision, _data) = with_source().await;
        let mut web = app("web", json!({}));
        web["status"] = applied(&revision);
        api.put(&format!("{APPS}/web"), web.clone());
        // The first reconcile of this controller records the cluster it deploys to.
        let (action, writes) = reconcile_once(&api, &ctx, "web").await;
        assert!(writes.len() <= 1, "{writes:?}");
        assert!(
            api.writes().iter().all(|w| w.path.starts_with(APPS)),
            "nothing applied"
        );
        assert_eq!(condition(&writes[0], "Ready")["reason"], reasons::SUCCEEDED);
        assert!(matches!(action, a if a != Action::await_change()));
        web["status"] = writes[0].body["status"].clone();
        api.put(&format!("{APPS}/web"), web);
        let before = api.writes().len();
        let (_, writes) = reconcile_once(&api, &ctx, "web").await;
        assert!(writes.is_empty(), "{:?}", &api.writes()[before..]);
    }

    #[tokio::test]
    async fn an_aborted_revision_is_not_applied_again_and_says_what_runs() {
        let (api, ctx, revision, _data) = with_source().await;
        let good = "main@sha1:1111111111111111111111111111111111111111";
        let mut web = app("web", json!({}));
        web["status"] = applied(good);
        web["status"]["rollout"] = json!({"phase": "Aborted", "failedRevisions": [revision]});
        web["status"]["history"] = json!([{"revision": good, "startedAt": "2026-01-01T00:00:00Z",
            "result": "Succeeded", "healthy": true}]);
        api.put(&format!("{APPS}/web"), web);
        let (action, writes) = reconcile_once(&api, &ctx, "web").await;
        assert_eq!(writes.len(), 1, "{writes:?}");
        let drifted = condition(&writes[0], "Drifted");
        assert_eq!(drifted["reason"], reasons::ROLLOUT_ABORTED);
        let message = drifted["message"].as_str().unwrap();
        assert!(
            message.contains(&revision) && message.contains(good),
            "{message}"
        );
        assert!(
            api.writes().iter().all(|w| w.path.starts_with(APPS)),
            "nothing applied"
        );
        assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    }

    #[tokio::test]
    async fn a_commit_elsewhere_is_recorded_as_applied_without_a_dry_run() {
        let (api, ctx, first, _data) = with_source().await;
        live_config_map(&api);
        api.put(&format!("{APPS}/web"), app("web", json!({})));
        let (_, writes) = reconcile_once(&api, &ctx, "web").await;
        let mut web = app("web", json!({}));
        web["status"] = writes.last().unwrap().body["status"].clone();
        api.put(&format!("{APPS}/web"), web);
        // A second commit: the same manifest, and a file the render does not read.
        let dir = tempfile::tempdir().unwrap();
        let (repo, oid) = crate::source::test_repo::commit_files(
            dir.path(),
            &[("cm.yaml", MANIFEST), ("README.md", "docs")],
        );
        let (_, digest) = ctx
            .artifacts
            .write("team", "repo", &repo, oid, &[])
            .unwrap();
        let second = format!("main@sha1:{oid}");
        let artifact =
            json!({"revision": second, "digest": digest, "fetchedAt": "2026-01-01T00:00:00Z"});
        api.put(
            &format!("{SOURCES}/repo"),
            source(json!({"artifact": artifact})),
        );
        let before = api.writes().len();
        let (action, writes) = reconcile_once(&api, &ctx, "web").await;
        let all = &api.writes()[before..];
        assert_eq!(
            writes.len(),
            1,
            "one status write and nothing else: {all:?}"
        );
        assert_eq!(all.len(), 1, "no dry-run, no apply: {all:?}");
        let status = &writes[0].body["status"];
        assert_eq!(status["lastAppliedRevision"], second.as_str());
        let message = status["history"][0]["message"].as_str().unwrap();
        assert_eq!(message, format!("the same objects as revision {first}"));
        assert_eq!(condition(&writes[0], "Ready")["reason"], reasons::SUCCEEDED);
        assert!(matches!(action, a if a != Action::await_change()));
    }
}
