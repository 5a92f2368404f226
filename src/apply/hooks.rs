//! Hooks, as Helm (`helm.sh/hook`) and Argo CD (`argocd.argoproj.io/hook`) declare them:
//! objects that are not part of the set. They are run around the apply (pre hooks before
//! it, awaited; post hooks after it; Argo CD's `SyncFail` hooks when it failed), never enter
//! the inventory, drift or prune, and are deleted as their delete policy says. Test hooks
//! and delete/rollback hooks are never applied (Gantry runs no `helm test` and has no
//! release deletion or rollback hooks).

use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PostParams};
use serde_json::Value;

use super::applier::Applier;

pub const HELM_HOOK: &str = "helm.sh/hook";
pub const HELM_WEIGHT: &str = "helm.sh/hook-weight";
const HELM_DELETE: &str = "helm.sh/hook-delete-policy";
pub const ARGO_HOOK: &str = "argocd.argoproj.io/hook";
const ARGO_WAVE: &str = "argocd.argoproj.io/sync-wave";
const ARGO_DELETE: &str = "argocd.argoproj.io/hook-delete-policy";

/// When a hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Before the set is applied; the set waits for it.
    Pre,
    /// Between the set's sync waves (Argo CD's `Sync`): a hook of wave W runs once the
    /// objects of waves up to W are applied and healthy, before any object of a later wave.
    Sync,
    /// After the set is applied.
    Post,
    /// After a sync that failed once its hooks were known (Argo CD's `SyncFail`).
    Fail,
}

/// One hook of a render.
#[derive(Clone, Debug, PartialEq)]
pub struct Hook {
    pub phase: Phase,
    pub weight: i64,
    pub delete_before: bool,
    pub delete_on_success: bool,
    pub delete_on_failure: bool,
    pub object: Value,
}

impl Hook {
    /// `Kind name` (or `Kind generateName*`), for messages.
    pub fn describe(&self) -> String {
        let kind = self.object["kind"].as_str().unwrap_or("object");
        match self.object["metadata"]["name"].as_str() {
            Some(n) => format!("{kind} {n}"),
            None => format!(
                "{kind} {}*",
                self.object["metadata"]["generateName"]
                    .as_str()
                    .unwrap_or_default()
            ),
        }
    }
}

fn annotation<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    o["metadata"]["annotations"][key].as_str()
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// What the render holds once hooks are taken out: the set, the hooks to run (in order:
/// phase, weight, then as rendered), and how many hooks are never applied.
#[derive(Debug, Default)]
pub struct Split {
    pub objects: Vec<Value>,
    pub hooks: Vec<Hook>,
    pub skipped: usize,
}

/// Takes the hooks out of a render. `installing`: the Application has applied nothing
/// yet (Helm's `pre-install`/`post-install`; otherwise `pre-upgrade`/`post-upgrade`).
pub fn split(objects: Vec<Value>, installing: bool) -> Split {
    let mut out = Split::default();
    for mut o in objects {
        // Every phase the hook names (Helm runs a hook in each of them).
        let phases: Vec<Phase> = if let Some(h) = annotation(&o, HELM_HOOK) {
            let kinds = list(h);
            let has = |k: &str| kinds.iter().any(|x| x == k);
            let mut p = vec![];
            if (installing && has("pre-install")) || (!installing && has("pre-upgrade")) {
                p.push(Phase::Pre);
            }
            if (installing && has("post-install")) || (!installing && has("post-upgrade")) {
                p.push(Phase::Post);
            }
            p
        } else if let Some(h) = annotation(&o, ARGO_HOOK) {
            let kinds = list(h);
            let has = |k: &str| kinds.iter().any(|x| x == k);
            let mut p = vec![];
            if has("presync") {
                p.push(Phase::Pre);
            }
            if has("sync") {
                p.push(Phase::Sync);
            }
            if has("postsync") {
                p.push(Phase::Post);
            }
            if has("syncfail") {
                p.push(Phase::Fail);
            }
            p
        } else {
            out.objects.push(o);
            continue;
        };
        if phases.is_empty() {
            out.skipped += 1;
            continue;
        }
        // Hooks are not normalized: the render's origin note is taken out here.
        crate::render::take_origin(&mut o);
        let weight = annotation(&o, HELM_WEIGHT)
            .or_else(|| annotation(&o, ARGO_WAVE))
            .and_then(|w| w.trim().parse().ok())
            .unwrap_or(0);
        let policies = annotation(&o, HELM_DELETE)
            .or_else(|| annotation(&o, ARGO_DELETE))
            .map(list)
            .unwrap_or_default();
        let has = |a: &str, b: &str| policies.iter().any(|p| p == a || p == b);
        for phase in phases {
            out.hooks.push(Hook {
                phase,
                weight,
                // Both tools delete a hook's previous object before creating it by default.
                delete_before: policies.is_empty()
                    || has("before-hook-creation", "beforehookcreation"),
                delete_on_success: has("hook-succeeded", "hooksucceeded"),
                delete_on_failure: has("hook-failed", "hookfailed"),
                object: o.clone(),
            });
        }
    }
    out.hooks.sort_by_key(|h| (h.phase, h.weight));
    out
}

/// The sync waves that have `Sync` hooks, in order.
pub fn sync_waves(hooks: &[Hook]) -> Vec<i64> {
    let waves: std::collections::BTreeSet<i64> = hooks
        .iter()
        .filter(|h| h.phase == Phase::Sync)
        .map(|h| h.weight)
        .collect();
    waves.into_iter().collect()
}

/// Where a hook failed, for the Application's condition.
#[derive(Debug, thiserror::Error)]
#[error("{phase} hook {hook}: {cause}")]
pub struct HookError {
    pub phase: &'static str,
    pub hook: String,
    pub cause: String,
    /// The hook's name is taken by an object of another Application (`OwnershipConflict`).
    pub ownership_conflict: bool,
}

/// Why one hook did not run.
enum HookFailure {
    Failed(String),
    /// Named like an object that belongs to another Application (the message names both).
    Conflict(String),
}

impl From<String> for HookFailure {
    fn from(s: String) -> Self {
        HookFailure::Failed(s)
    }
}

/// The owner a live object already has when it is not `owner` (`<namespace>.<name>`): the
/// Application it is applied for, or whose hook it is. A hook never deletes nor overwrites
/// such an object, whatever its delete policy, as a set never takes one over unasked.
pub fn other_owner(live: &Value, owner: &str) -> Option<String> {
    [super::APPLICATION_LABEL, HOOK_OF_LABEL]
        .into_iter()
        .filter_map(|l| live["metadata"]["labels"][l].as_str())
        .find(|o| *o != owner)
        .map(str::to_string)
}

/// Label on every hook object, naming its Application as `<namespace>.<name>`.
pub const HOOK_OF_LABEL: &str = "gantry.dev/hook-of";

/// The verdict on a hook's live object: done, failed (with why), or still running.
fn finished(o: &Value) -> Option<Result<(), String>> {
    let condition = |t: &str| {
        o["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == t && c["status"] == "True"))
    };
    match o["kind"].as_str() {
        Some("Job") => {
            if let Some(c) = condition("Failed") {
                Some(Err(c["message"].as_str().unwrap_or("job failed").into()))
            } else {
                condition("Complete").map(|_| Ok(()))
            }
        }
        Some("Pod") => match o["status"]["phase"].as_str() {
            Some("Succeeded") => Some(Ok(())),
            Some("Failed") => Some(Err("pod failed".into())),
            _ => None,
        },
        _ => Some(Ok(())),
    }
}

impl Applier {
    /// Runs the hooks of one phase (of one sync wave, for `Sync` hooks: `wave`) in order,
    /// each awaited (Jobs until complete, Pods until succeeded, anything else once created)
    /// within `timeout`; the first failure stops.
    pub async fn run_hooks(
        &self,
        hooks: &[Hook],
        phase: Phase,
        wave: Option<i64>,
        default_namespace: &str,
        owner: &str,
        timeout: Duration,
    ) -> Result<usize, HookError> {
        let name = match phase {
            Phase::Pre => "pre",
            Phase::Sync => "Sync",
            Phase::Post => "post",
            Phase::Fail => "SyncFail",
        };
        let mut ran = 0;
        // As Helm does: `hook-succeeded` hooks are deleted once the whole phase succeeded
        // (a ServiceAccount hook must outlive the Job hook of a higher weight that uses it);
        // a failure deletes the failed hook when its policy says `hook-failed`.
        let mut succeeded: Vec<(Api<DynamicObject>, String)> = vec![];
        for hook in hooks
            .iter()
            .filter(|h| h.phase == phase && wave.is_none_or(|w| h.weight == w))
        {
            let fail = |cause: String| HookError {
                phase: name,
                hook: hook.describe(),
                cause,
                ownership_conflict: false,
            };
            let live = self
                .run_hook(hook, default_namespace, owner, timeout)
                .await
                .map_err(|f| match f {
                    HookFailure::Failed(cause) => fail(cause),
                    HookFailure::Conflict(cause) => HookError {
                        ownership_conflict: true,
                        ..fail(cause)
                    },
                })?;
            let (api, live_name) = live;
            if let Err(mut cause) = await_hook(&api, &hook.object, &live_name, timeout).await {
                // What the cluster says about it, before a `hook-failed` policy deletes it.
                let kind = hook.object["kind"].as_str().unwrap_or_default();
                let ns = hook.object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or(default_namespace);
                if let Some(why) =
                    super::hook_cause::gather(self.client(), ns, kind, &live_name).await
                {
                    cause = format!("{cause}: {why}");
                }
                if hook.delete_on_failure {
                    let _ = api.delete(&live_name, &DeleteParams::background()).await;
                }
                return Err(fail(cause));
            }
            if hook.delete_on_success {
                succeeded.push((api, live_name));
            }
            ran += 1;
        }
        for (api, live_name) in succeeded {
            let _ = api.delete(&live_name, &DeleteParams::background()).await;
        }
        Ok(ran)
    }

    async fn run_hook(
        &self,
        hook: &Hook,
        default_namespace: &str,
        owner: &str,
        timeout: Duration,
    ) -> Result<(Api<DynamicObject>, String), HookFailure> {
        let o = &hook.object;
        let (group, version) =
            super::normalize::split_api_version(o["apiVersion"].as_str().unwrap_or_default())
                .map_err(|e| e.to_string())?;
        let kind = o["kind"].as_str().unwrap_or_default();
        let resolved = self
            .resolve(&group, &version, kind)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| super::unknown_kind_message(&hook.describe(), &group, &version, kind))?;
        let mut object = o.clone();
        let ns = o["metadata"]["namespace"]
            .as_str()
            .unwrap_or(default_namespace)
            .to_string();
        if resolved.namespaced {
            object["metadata"]["namespace"] = Value::String(ns.clone());
        }
        // Marked as this Application's hook (never as a managed object: no inventory, no
        // drift watch, no prune).
        let owner = owner.replace('/', ".");
        object["metadata"]["labels"][HOOK_OF_LABEL] = Value::String(owner.clone());
        let api: Api<DynamicObject> = if resolved.namespaced {
            Api::namespaced_with(self.client().clone(), &ns, &resolved.resource)
        } else {
            Api::all_with(self.client().clone(), &resolved.resource)
        };
        let dynamic: DynamicObject =
            serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
        match o["metadata"]["name"].as_str() {
            Some(name) => {
                let live = api
                    .get_opt(name)
                    .await
                    .map_err(|e| super::applier::api_message(&e))?;
                let exists = live.is_some();
                if let Some(other) = live
                    .map(|l| serde_json::to_value(l).unwrap_or_default())
                    .and_then(|l| other_owner(&l, &owner))
                {
                    return Err(HookFailure::Conflict(format!(
                        "{} already exists and belongs to Application {other}, not to {owner}; \
                         a hook never deletes or overwrites another Application's object \
                         (rename the hook)",
                        hook.describe()
                    )));
                }
                if hook.delete_before && exists {
                    delete_and_wait(&api, name, timeout).await?;
                }
                let params = kube::api::PatchParams::apply(self.field_manager()).force();
                api.patch(name, &params, &Patch::Apply(&object))
                    .await
                    .map_err(|e| super::applier::api_message(&e))?;
                Ok((api, name.to_string()))
            }
            // generateName: a new object each run.
            None => {
                let created = api
                    .create(&PostParams::default(), &dynamic)
                    .await
                    .map_err(|e| super::applier::api_message(&e))?;
                Ok((api, created.metadata.name.unwrap_or_default()))
            }
        }
    }
}

/// Waits until the hook's live object is finished, judged by the rendered object's kind.
async fn await_hook(
    api: &Api<DynamicObject>,
    rendered: &Value,
    name: &str,
    timeout: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let live = api
            .get(name)
            .await
            .map_err(|e| super::applier::api_message(&e))?;
        let mut value = serde_json::to_value(&live).map_err(|e| e.to_string())?;
        value["kind"] = rendered["kind"].clone();
        if let Some(done) = finished(&value) {
            return done;
        }
        if start.elapsed() > timeout {
            return Err(format!("not finished after {}s", timeout.as_secs()));
        }
        super::waiting::pause(Duration::from_millis(500)).await;
    }
}

/// Deletes the hook's previous object (which the caller found) and waits until it is gone.
async fn delete_and_wait(
    api: &Api<DynamicObject>,
    name: &str,
    timeout: Duration,
) -> Result<(), String> {
    let _ = api.delete(name, &DeleteParams::background()).await;
    let start = Instant::now();
    while api
        .get_opt(name)
        .await
        .map_err(|e| super::applier::api_message(&e))?
        .is_some()
    {
        if start.elapsed() > timeout {
            return Err(format!(
                "its previous object was not gone after {}s",
                timeout.as_secs()
            ));
        }
        super::waiting::pause(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(kind: &str, name: &str, annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "annotations": annotations}})
    }

    #[test]
    fn helm_hooks_by_install_or_upgrade_tests_never_applied() {
        let render = || {
            vec![
                obj("ConfigMap", "plain", json!({})),
                obj(
                    "Job",
                    "migrate",
                    json!({HELM_HOOK: "pre-install,pre-upgrade", HELM_WEIGHT: "5"}),
                ),
                obj(
                    "Job",
                    "seed",
                    json!({HELM_HOOK: "pre-install", HELM_WEIGHT: "-1"}),
                ),
                obj(
                    "Job",
                    "notify",
                    json!({HELM_HOOK: "post-upgrade", HELM_DELETE: "hook-succeeded"}),
                ),
                obj("Pod", "test-conn", json!({HELM_HOOK: "test"})),
                obj("Job", "cleanup", json!({HELM_HOOK: "pre-delete"})),
            ]
        };
        let install = split(render(), true);
        assert_eq!(install.objects.len(), 1);
        let names: Vec<_> = install.hooks.iter().map(|h| h.describe()).collect();
        assert_eq!(names, ["Job seed", "Job migrate"]);
        assert_eq!(install.skipped, 3);
        assert!(
            install
                .hooks
                .iter()
                .all(|h| h.phase == Phase::Pre && h.delete_before)
        );

        let upgrade = split(render(), false);
        let names: Vec<_> = upgrade
            .hooks
            .iter()
            .map(|h| (h.describe(), h.phase))
            .collect();
        assert_eq!(
            names,
            [
                ("Job migrate".to_string(), Phase::Pre),
                ("Job notify".to_string(), Phase::Post)
            ]
        );
        let notify = &upgrade.hooks[1];
        assert!(notify.delete_on_success && !notify.delete_before && !notify.delete_on_failure);
    }

    #[test]
    fn a_hook_runs_in_every_phase_it_names() {
        let webhook_rbac = obj(
            "ServiceAccount",
            "admission",
            json!({HELM_HOOK: "pre-install,pre-upgrade,post-install,post-upgrade", HELM_WEIGHT: "-1",
                   HELM_DELETE: "before-hook-creation,hook-succeeded"}),
        );
        for installing in [true, false] {
            let s = split(vec![webhook_rbac.clone()], installing);
            let phases: Vec<_> = s.hooks.iter().map(|h| h.phase).collect();
            assert_eq!(
                phases,
                [Phase::Pre, Phase::Post],
                "installing: {installing}"
            );
            assert!(
                s.hooks
                    .iter()
                    .all(|h| h.delete_before && h.delete_on_success)
            );
        }
        let argo = obj("Job", "x", json!({ARGO_HOOK: "PreSync,PostSync"}));
        let phases: Vec<_> = split(vec![argo], true)
            .hooks
            .iter()
            .map(|h| h.phase)
            .collect();
        assert_eq!(phases, [Phase::Pre, Phase::Post]);
    }

    #[test]
    fn argo_hooks_with_generate_name_and_policies() {
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"generateName": "schema-", "annotations": {ARGO_HOOK: "PreSync", ARGO_DELETE: "HookSucceeded,BeforeHookCreation", ARGO_WAVE: "2"}}});
        let split = split(
            vec![
                job,
                obj("Job", "smoke", json!({ARGO_HOOK: "PostSync"})),
                obj("Job", "page", json!({ARGO_HOOK: "SyncFail"})),
                obj("ConfigMap", "skipped", json!({ARGO_HOOK: "Skip"})),
                obj("ConfigMap", "app", json!({ARGO_WAVE: "1"})),
            ],
            false,
        );
        assert_eq!(split.objects.len(), 1);
        assert_eq!(split.skipped, 1, "Skip");
        let pre = &split.hooks[0];
        assert_eq!(
            (pre.describe().as_str(), pre.phase, pre.weight),
            ("Job schema-*", Phase::Pre, 2)
        );
        assert!(pre.delete_before && pre.delete_on_success);
        assert_eq!(split.hooks[1].phase, Phase::Post);
        assert_eq!(
            (split.hooks[2].describe().as_str(), split.hooks[2].phase),
            ("Job page", Phase::Fail)
        );
        // A `Sync` hook keeps its wave: it runs between the set's waves, not after them.
        let maintenance = obj(
            "Job",
            "maintenance-page",
            json!({ARGO_HOOK: "Sync", ARGO_WAVE: "1"}),
        );
        let sync = &super::split(vec![maintenance], false).hooks[0];
        assert_eq!((sync.phase, sync.weight), (Phase::Sync, 1));
        assert_eq!(sync_waves(std::slice::from_ref(sync)), [1]);
    }

    #[test]
    fn jobs_and_pods_are_awaited_other_kinds_are_done_once_created() {
        let job = |t: &str| json!({"kind": "Job", "status": {"conditions": [{"type": t, "status": "True", "message": "BackoffLimitExceeded"}]}});
        assert_eq!(finished(&job("Complete")), Some(Ok(())));
        assert_eq!(
            finished(&job("Failed")),
            Some(Err("BackoffLimitExceeded".into()))
        );
        assert_eq!(finished(&json!({"kind": "Job", "status": {}})), None);
        assert_eq!(
            finished(&json!({"kind": "Pod", "status": {"phase": "Running"}})),
            None
        );
        assert_eq!(finished(&json!({"kind": "ConfigMap"})), Some(Ok(())));
    }
}
