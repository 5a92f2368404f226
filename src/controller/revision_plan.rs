//! Computing a plan (the model and its formats are `crate::plan`): the revision fetched into a scratch Git cache, each Application of the
//! source rendered there exactly as a sync renders it (pipeline::render_commit: the same
//! sandbox, Helm capabilities and hooks split), compared with its base, and every object of
//! a changed set dry-run by the API server of the Application's own cluster as the
//! Application's own identity. Nothing is written: reads and `dryRun=All` requests only.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::Api;

use crate::api::GitRepository;
use crate::api::application::Application;
use crate::api::rollout::{OnFailure, RolloutStrategy};
use crate::apply::applier::ObjectError;
use crate::apply::normalize::Desired;
use crate::cluster::{Target, Targets};
use crate::controller::application::pipeline::{self, Rendered};
use crate::controller::context::revision_commit;
use crate::drift::diff::unified;
use crate::plan::model::{
    Action, AppPlan, Cause, HookPlan, ObjectPlan, Plan, Refusal, RolloutPlan, cause_of,
    describe_steps,
};
use crate::source::git::{self, Reference};

/// Objects dry-run at once for one Application.
const CONCURRENCY: usize = 8;

/// What to plan.
pub struct Request<'a> {
    /// The client of the cluster the GitRepository and its Applications live in.
    pub client: &'a kube::Client,
    /// Where and as whom each Application acts (the controller's targets).
    pub targets: &'a Targets,
    pub source: &'a GitRepository,
    /// A branch, `refs/heads/…`, `refs/tags/…` or a 40-hex commit.
    pub reference: &'a str,
    /// Compare with this reference instead of what each Application last applied.
    pub base: Option<&'a str>,
    /// Full refs fetched first where they exist (a fork's pull request head is under
    /// `refs/pull/<n>/head` or `refs/merge-requests/<n>/head`, on no branch).
    pub also_fetch: &'a [String],
    /// Only these Applications (names in the source's namespace); empty: every one whose
    /// objects change. Named ones are planned even when nothing changes.
    pub only: &'a [String],
    /// Scratch space (the Git cache and checkouts), removed by the caller.
    pub work: &'a Path,
    /// The time for each fetch and render.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("GitRepository {repository}: {why}")]
    Credentials { repository: String, why: String },
    #[error("cannot fetch {reference} of GitRepository {repository}: {why}")]
    Fetch {
        repository: String,
        reference: String,
        why: String,
    },
    #[error("Application {0} is not an Application of this GitRepository")]
    NotOnSource(String),
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// The Reference a plan's `--ref`/`--base` names.
pub fn reference_of(r: &str) -> Reference {
    if r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Reference::Commit {
            branch: None,
            commit: r.to_ascii_lowercase(),
        };
    }
    if let Some(tag) = r.strip_prefix("refs/tags/") {
        return Reference::Tag(tag.to_string());
    }
    Reference::Branch(r.strip_prefix("refs/heads/").unwrap_or(r).to_string())
}

async fn fetch(
    cache: &Path,
    source: &GitRepository,
    reference: Reference,
    creds: Option<git::Credentials>,
    timeout: Duration,
) -> Result<String, String> {
    let (cache, url) = (cache.to_path_buf(), source.spec.url.clone());
    tokio::task::spawn_blocking(move || {
        git::fetch_full(
            &cache,
            &url,
            &reference,
            creds.as_ref(),
            Instant::now() + timeout,
        )
        .map(|f| f.commit)
        .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The checked-out trees of a plan, one per commit (every Application of the source is
/// rendered from the same tree, as the controller renders from one artifact).
struct Trees<'a> {
    cache: &'a Path,
    ignore: &'a [String],
    root: std::path::PathBuf,
    done: tokio::sync::Mutex<std::collections::HashMap<String, Result<std::path::PathBuf, String>>>,
}

impl Trees<'_> {
    /// The tree of `commit`, checked out on first use.
    async fn of(&self, commit: &str) -> Result<std::path::PathBuf, String> {
        let mut done = self.done.lock().await;
        if let Some(t) = done.get(commit) {
            return t.clone();
        }
        let dest = self.root.join(commit);
        let tree = crate::source::artifact::checkout_commit(self.cache, commit, &dest, self.ignore)
            .await
            .map(|_| dest)
            .map_err(|e| format!("cannot check out {commit}: {e}"));
        done.insert(commit.to_string(), tree.clone());
        tree
    }
}

/// Applications planned at once.
const APPS_AT_ONCE: usize = 4;

/// Plans `req.reference` for the Applications of `req.source`.
pub async fn plan(req: Request<'_>) -> Result<Plan, PlanError> {
    let ns = req.source.namespace().unwrap_or_default();
    let source_name = req.source.name_any();
    let full = format!("{ns}/{source_name}");
    let creds = crate::controller::git_repository::credentials(req.client, &ns, req.source)
        .await
        .map_err(|e| PlanError::Credentials {
            repository: full.clone(),
            why: e.to_string(),
        })?;
    let cache = req.work.join("repo");
    let fetch_failed = |reference: &str, why: String| PlanError::Fetch {
        repository: full.clone(),
        reference: reference.to_string(),
        why,
    };
    for r in req.also_fetch {
        if let Err(why) = fetch(
            &cache,
            req.source,
            Reference::Full(r.clone()),
            creds.clone(),
            req.timeout,
        )
        .await
        {
            tracing::debug!(source = %full, reference = %r, error = %why, "not fetched");
        }
    }
    let commit = fetch(
        &cache,
        req.source,
        reference_of(req.reference),
        creds.clone(),
        req.timeout,
    )
    .await
    .map_err(|why| fetch_failed(req.reference, why))?;
    let base = match req.base {
        Some(b) => Some(
            fetch(&cache, req.source, reference_of(b), creds, req.timeout)
                .await
                .map_err(|why| fetch_failed(b, why))?,
        ),
        None => {
            // What the Applications last applied is on the branch the source tracks.
            let tracked = Reference::from_spec(req.source.spec.git_ref.as_ref());
            if let Err(why) = fetch(&cache, req.source, tracked, creds, req.timeout).await {
                tracing::warn!(source = %full, error = %why, "cannot fetch the tracked branch; every Application is planned as new");
            }
            None
        }
    };

    let apps: Vec<Application> = Api::<Application>::namespaced(req.client.clone(), &ns)
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|a| a.spec.source_ref.name == source_name)
        .collect();
    for name in req.only {
        if !apps.iter().any(|a| &a.name_any() == name) {
            return Err(PlanError::NotOnSource(format!("{ns}/{name}")));
        }
    }
    let trees = Trees {
        cache: &cache,
        ignore: &req.source.spec.ignore,
        root: req.work.join("trees"),
        done: Default::default(),
    };
    let named = !req.only.is_empty();
    let mut jobs = vec![];
    for app in &apps {
        if !req.only.is_empty() && !req.only.contains(&app.name_any()) {
            continue;
        }
        let base = base.clone().or_else(|| {
            let status = app.status.as_ref()?;
            revision_commit(status.last_applied_revision.as_deref()?).map(str::to_string)
        });
        jobs.push(plan_app(&req, &trees, app, &commit, base, named));
    }
    let mut applications: Vec<AppPlan> = crate::apply::concurrent::run(jobs, APPS_AT_ONCE)
        .await
        .into_iter()
        .flatten()
        .collect();
    applications.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(Plan {
        source: full,
        reference: req.reference.to_string(),
        commit,
        applications,
    })
}

/// Whether two renders are the same set and the same hooks (order aside).
fn same_render(a: &Rendered, b: &Rendered) -> bool {
    let set = |r: &Rendered| -> BTreeMap<String, serde_json::Value> {
        r.0.iter()
            .map(|d| (format!("{:?}", d.key), d.object.clone()))
            .collect()
    };
    let hooks = |r: &Rendered| -> Vec<String> {
        let mut h: Vec<String> = r.1.iter().map(|h| h.object.to_string()).collect();
        h.sort();
        h
    };
    set(a) == set(b) && hooks(a) == hooks(b)
}

async fn render_at(
    req: &Request<'_>,
    trees: &Trees<'_>,
    target: &Target,
    app: &Application,
    commit: &str,
) -> Result<Rendered, String> {
    let tree = trees.of(commit).await?;
    let input = pipeline::SyncInput {
        target,
        local: req.client,
        app,
        artifact_root: &tree,
        artifact_check: None,
        hold: None,
        record_planned: None,
        timeout: req.timeout,
    };
    pipeline::desired_and_hooks(&input)
        .await
        .map_err(|e| format!("cannot render {commit}: {e}"))
}

/// The plan of one Application; `None` when its render is the base's (and it was not
/// named).
async fn plan_app(
    req: &Request<'_>,
    trees: &Trees<'_>,
    app: &Application,
    commit: &str,
    base: Option<String>,
    named: bool,
) -> Option<AppPlan> {
    let ns = app.namespace().unwrap_or_default();
    let mut out = AppPlan {
        namespace: ns.clone(),
        name: app.name_any(),
        cluster: if app.spec.kube_config.is_some() {
            "remote (spec.kubeConfig)".into()
        } else {
            "local".into()
        },
        identity: match &app.spec.service_account_name {
            Some(sa) => format!("ServiceAccount {ns}/{sa}"),
            None => "the controller".into(),
        },
        base: None,
        ..AppPlan::default()
    };
    let target = match req.targets.for_app(app).await {
        Ok(t) => t,
        Err(e) => {
            out.error = Some(e.to_string());
            return Some(out);
        }
    };
    out.cluster = target.cluster.clone();
    let rendered = match render_at(req, trees, &target, app, commit).await {
        Ok(r) => r,
        Err(e) => {
            out.error = Some(e);
            return Some(out);
        }
    };
    if let Some(b) = &base {
        match render_at(req, trees, &target, app, b).await {
            Ok(before) => {
                if same_render(&before, &rendered) && !named {
                    return None;
                }
                out.base = Some(b.clone());
            }
            Err(e) => {
                tracing::info!(application = %format!("{ns}/{}", out.name), error = %e, "the base does not render; planned as new");
            }
        }
    }
    let (desired, hooks, _) = rendered;
    out.objects = objects(&target, app, &desired).await;
    out.objects.extend(pruned(&target, app, &desired).await);
    out.hooks = hooks
        .iter()
        .map(|h| HookPlan {
            phase: format!("{:?}", h.phase).to_ascii_lowercase(),
            object: h.describe(),
        })
        .collect();
    out.rollout = rollout(app, &desired, &out.objects);
    Some(out)
}

fn object_plan(d: &Desired, action: Action) -> ObjectPlan {
    ObjectPlan {
        api_version: d.object["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        kind: d.key.kind.clone(),
        namespace: d.key.namespace.clone(),
        name: d.key.name.clone(),
        action,
        diff: None,
        refusal: None,
        note: None,
    }
}

fn refused(d: &Desired, cause: Cause, message: String) -> ObjectPlan {
    ObjectPlan {
        refusal: Some(Refusal { cause, message }),
        ..object_plan(d, Action::Refused)
    }
}

/// Whether the set itself creates what `d` needs first (its CRD, its Namespace): the
/// staged apply validates it after that stage, so a refusal now says nothing.
fn created_first(d: &Desired, set: &[Desired], e: Option<&ObjectError>) -> Option<String> {
    let crd = set.iter().any(|c| {
        c.key.kind == "CustomResourceDefinition"
            && c.object["spec"]["group"].as_str() == Some(d.key.group.as_str())
            && c.object["spec"]["names"]["kind"].as_str() == Some(d.key.kind.as_str())
    });
    if crd {
        return Some("validated once its CustomResourceDefinition exists".into());
    }
    let ns = d.key.namespace.as_deref()?;
    let missing = e.is_some_and(|e| e.message.contains("not found") && e.message.contains(ns));
    let in_set = set
        .iter()
        .any(|n| n.key.kind == "Namespace" && n.key.group.is_empty() && n.key.name == ns);
    (missing && in_set).then(|| format!("validated once Namespace {ns} exists"))
}

/// Each object's dry-run, as a sync would send it (with force: a sync takes hand edits
/// back).
async fn objects(target: &Target, app: &Application, desired: &[Desired]) -> Vec<ObjectPlan> {
    let jobs = desired.iter().map(|d| async move {
        let title = format!(
            "{}/{}",
            d.object["apiVersion"].as_str().unwrap_or_default(),
            crate::apply::normalize::describe(&d.key).replace(' ', "/")
        );
        let applier = &target.applier;
        // The write first: its refusal is the one a sync would meet (a read may be refused
        // for other reasons); then the live object, for the diff.
        let checked = match applier.resolve_key(&d.key).await {
            Ok(Some(r)) => match applier.dry_apply(&r, d, true).await {
                Ok(after) => Ok(Some((applier.live(&r, &d.key).await, after))),
                Err(e) => Err(ObjectError::new(&d.key, &e)),
            },
            Ok(None) => Ok(None),
            Err(e) => Err(ObjectError::new(&d.key, &e)),
        };
        match checked {
            Ok(None) => match created_first(d, desired, None) {
                Some(note) => ObjectPlan {
                    note: Some(note),
                    ..object_plan(d, Action::Create)
                },
                None => refused(
                    d,
                    Cause::Kind,
                    format!("the cluster has no kind {} in {}", d.key.kind, title),
                ),
            },
            Ok(Some((Err(e), _))) => refused(
                d,
                cause_of(None, &crate::apply::applier::api_message(&e)),
                format!("cannot read it: {}", crate::apply::applier::api_message(&e)),
            ),
            Ok(Some((Ok(live), after))) => {
                let owner = live
                    .as_ref()
                    .and_then(|l| crate::apply::foreign_owner(&d.object, l));
                if let Some(owner) = owner.filter(|_| !app.spec.take_ownership) {
                    return refused(
                        d,
                        Cause::Ownership,
                        format!("labelled for Application {owner}; set spec.takeOwnership to take it"),
                    );
                }
                let diff = unified(&title, live.as_ref(), Some(&after));
                let action = match (&live, &diff) {
                    (None, _) => Action::Create,
                    (Some(_), Some(_)) => Action::Change,
                    (Some(_), None) => Action::Unchanged,
                };
                ObjectPlan {
                    diff,
                    ..object_plan(d, action)
                }
            }
            Err(e) => {
                if let Some(note) = created_first(d, desired, Some(&e)) {
                    return ObjectPlan {
                        note: Some(note),
                        ..object_plan(d, Action::Create)
                    };
                }
                let cause = cause_of(None, &e.message);
                if cause == Cause::Immutable
                    && crate::apply::recreate::opted_in(app.spec.recreate_on_immutable, d)
                {
                    return ObjectPlan {
                        note: Some(format!("an immutable field changed: {}", e.message)),
                        ..object_plan(d, Action::Recreate)
                    };
                }
                let mut r = refused(d, cause, e.message.clone());
                if cause == Cause::Immutable {
                    r.note = Some(
                        "not recreated: set spec.recreateOnImmutable or annotate it gantry.dev/recreate-on-immutable".into(),
                    );
                }
                r
            }
        }
    });
    crate::apply::concurrent::run(jobs, CONCURRENCY).await
}

/// The objects a sync would prune: in the inventory, not in the set, still there.
async fn pruned(target: &Target, app: &Application, desired: &[Desired]) -> Vec<ObjectPlan> {
    if !app.spec.prune {
        return vec![];
    }
    let keys: Vec<_> = desired.iter().map(|d| d.key.clone()).collect();
    let inventory = app
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    let mut out = vec![];
    for e in crate::apply::inventory::stale(&inventory, &keys) {
        let Ok(Some(r)) = target.applier.resolve_key(&e).await else {
            continue;
        };
        let Ok(Some(live)) = target.applier.live(&r, &e).await else {
            continue;
        };
        let api_version = live["apiVersion"].as_str().unwrap_or_default().to_string();
        let title = format!(
            "{api_version}/{}",
            crate::apply::normalize::describe(&e).replace(' ', "/")
        );
        out.push(ObjectPlan {
            api_version,
            kind: e.kind.clone(),
            namespace: e.namespace.clone(),
            name: e.name.clone(),
            action: Action::Prune,
            diff: unified(&title, Some(&live), None),
            refusal: None,
            note: None,
        });
    }
    out
}

/// The rollout a sync would start: the Deployments whose pod template changes, through a
/// canary (those that replace a healthy template) or a health-gated rolling update.
fn rollout(app: &Application, desired: &[Desired], objects: &[ObjectPlan]) -> Option<RolloutPlan> {
    let spec = app.spec.rollout.as_ref()?;
    let history = app
        .status
        .as_ref()
        .map(|s| s.history.clone())
        .unwrap_or_default();
    let changed = |d: &Desired| {
        objects.iter().any(|o| {
            o.action == Action::Change
                && o.kind == d.key.kind
                && o.name == d.key.name
                && o.namespace == d.key.namespace
        })
    };
    let workloads: Vec<String> = crate::rollout::template::template_hashes(desired)
        .into_iter()
        .filter(|(key, hash)| {
            let d = desired.iter().find(|d| {
                d.key.kind == "Deployment"
                    && crate::rollout::plan::template_key(
                        d.key.namespace.as_deref().unwrap_or_default(),
                        &d.key.name,
                    ) == *key
            });
            match spec.strategy {
                RolloutStrategy::Canary => crate::rollout::plan::needs_canary(key, hash, &history),
                RolloutStrategy::RollingUpdate => {
                    d.is_some_and(changed)
                        && history.first().and_then(|r| r.template_hashes.get(key)) != Some(hash)
                }
            }
        })
        .map(|(key, _)| key)
        .collect();
    if workloads.is_empty() {
        return None;
    }
    Some(RolloutPlan {
        strategy: format!("{:?}", spec.strategy),
        workloads,
        steps: match spec.strategy {
            RolloutStrategy::Canary => {
                describe_steps(&crate::rollout::plan::Step::from_spec(&spec.steps))
            }
            RolloutStrategy::RollingUpdate => vec![],
        },
        on_failure: match spec.on_failure {
            OnFailure::Abort => "abort".into(),
            OnFailure::Revert => "revert".into(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn desired(
        group: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
        object: serde_json::Value,
    ) -> Desired {
        Desired {
            object,
            ..crate::apply::stage::tests::obj(group, kind, ns, name)
        }
    }

    fn deployment(image: &str) -> Desired {
        desired(
            "apps",
            "Deployment",
            Some("team"),
            "api",
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "spec": {"template": {"spec": {"containers": [{"name": "api", "image": image}]}}}}),
        )
    }

    fn app(strategy: &str, history: Vec<(&str, bool)>) -> Application {
        let records: Vec<serde_json::Value> = history
            .iter()
            .map(|(image, healthy)| {
                let hash = crate::rollout::template::template_hash(&deployment(image).object);
                json!({"revision": format!("main@sha1:{image}"), "startedAt": "2026-01-01T00:00:00Z",
                       "result": "Succeeded", "templateHashes": {"team/api": hash}, "healthy": healthy})
            })
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
            "metadata": {"name": "web", "namespace": "team"},
            "spec": {"sourceRef": {"kind": "GitRepository", "name": "repo"}, "path": ".",
                     "rollout": {"strategy": strategy, "steps": [{"weight": 20}, {"pause": {}}]}},
            "status": {"history": records}
        }))
        .unwrap()
    }

    fn changed(name: &str) -> ObjectPlan {
        let mut o = object_plan(&deployment("x"), Action::Change);
        o.name = name.into();
        o
    }

    #[test]
    fn a_new_template_of_a_healthy_deployment_starts_the_canary_with_its_steps() {
        let a = app("Canary", vec![("api:1", true)]);
        let r = rollout(&a, &[deployment("api:2")], &[changed("api")]).expect("a canary");
        assert_eq!(r.strategy, "Canary");
        assert_eq!(r.workloads, ["team/api"]);
        assert_eq!(r.steps, ["weight 20%", "pause until promoted"]);
        assert_eq!(r.on_failure, "abort");
        // The same template, or one that was healthy before (the rollback fast path): none.
        assert_eq!(rollout(&a, &[deployment("api:1")], &[]), None);
        let back = app("Canary", vec![("api:2", true), ("api:1", true)]);
        assert_eq!(
            rollout(&back, &[deployment("api:1")], &[changed("api")]),
            None
        );
    }

    #[test]
    fn a_rolling_update_is_planned_for_a_changed_template_only() {
        let a = app("RollingUpdate", vec![("api:1", true)]);
        let r = rollout(&a, &[deployment("api:2")], &[changed("api")]).expect("a rollout");
        assert_eq!((r.strategy.as_str(), r.steps.len()), ("RollingUpdate", 0));
        // The object does not change (its template is what runs): no rollout.
        assert_eq!(rollout(&a, &[deployment("api:2")], &[]), None);
        let mut none = a.clone();
        none.spec.rollout = None;
        assert_eq!(
            rollout(&none, &[deployment("api:2")], &[changed("api")]),
            None
        );
    }

    #[test]
    fn what_the_set_creates_first_is_not_a_refusal() {
        let crd = desired(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            None,
            "widgets.example.com",
            json!({"spec": {"group": "example.com", "names": {"kind": "Widget"}}}),
        );
        let widget = desired("example.com", "Widget", Some("team"), "w", json!({}));
        let namespace = desired("", "Namespace", None, "fresh", json!({}));
        let in_fresh = desired("", "ConfigMap", Some("fresh"), "c", json!({}));
        let set = vec![crd, widget.clone(), namespace, in_fresh.clone()];
        assert!(
            created_first(&widget, &set, None)
                .unwrap()
                .contains("CustomResourceDefinition")
        );
        let missing = ObjectError::other(
            "ConfigMap fresh/c".into(),
            r#"namespaces "fresh" not found"#,
        );
        assert_eq!(
            created_first(&in_fresh, &set, Some(&missing)).as_deref(),
            Some("validated once Namespace fresh exists")
        );
        // Another refusal, or a namespace the set does not create, stays one.
        let forbidden = ObjectError::other("ConfigMap fresh/c".into(), "forbidden: cannot patch");
        assert_eq!(created_first(&in_fresh, &set, Some(&forbidden)), None);
        let elsewhere = desired("", "ConfigMap", Some("gone"), "c", json!({}));
        let gone = ObjectError::other("ConfigMap gone/c".into(), r#"namespaces "gone" not found"#);
        assert_eq!(created_first(&elsewhere, &set, Some(&gone)), None);
    }

    #[test]
    fn references_name_commits_tags_and_branches() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert!(
            matches!(reference_of(sha), Reference::Commit { branch: None, commit } if commit == sha)
        );
        assert!(matches!(reference_of("refs/tags/v1"), Reference::Tag(t) if t == "v1"));
        assert!(
            matches!(reference_of("refs/heads/feature"), Reference::Branch(b) if b == "feature")
        );
        assert!(matches!(reference_of("feature/x"), Reference::Branch(b) if b == "feature/x"));
    }
}
