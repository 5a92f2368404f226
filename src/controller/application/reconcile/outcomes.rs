//! One test per outcome of a reconcile, against a fake API server: what it reads, the
//! status it writes (once; a first sync also writes its planned inventory before it
//! applies) and when it looks again.

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
        ui_addr: None,
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
async fn outcome_in(api: &FakeApi, ctx: &Arc<AppContext>, name: &str) -> (Action, Option<Value>) {
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
    // The watch cache holds what the API server serves (a reconcile reads the cache when
    // it holds the last status write, which nothing made yet here).
    let served = api
        .object(&format!("{APPS}/{name}"))
        .unwrap_or_else(|| app(name, json!({})));
    let cached: Application = serde_json::from_value(served).unwrap();
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
    let (repo, oid) = crate::source::test_repo::commit_files(dir.path(), &[("cm.yaml", MANIFEST)]);
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
    api.put(
        "/api/v1",
        json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        {"name": "configmaps", "singularName": "configmap", "namespaced": true, "kind": "ConfigMap",
         "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}]}),
    );
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
