//! Two replicas of the controller (TESTING.md row 21): only the holder of the Lease writes,
//! counted per replica in the API server's audit log (each replica authenticates as its own
//! user); SIGTERM hands the Lease over at once; a SIGKILLed leader is replaced mid-sync and
//! mid-canary without losing an object or reverting twice.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use gantry::api::Application;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use serde_json::json;

use crate::rollouts::{canary_app, deployment_n};
use crate::support::app::{Workspace, create_source_and_app, wait_synced_healthy};
use crate::support::cluster::{TestNamespace, audit_events, client, install_crds, kubeconfig_path};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::{GitServer, git};

/// Replica tests share the audit users; one at a time.
static REPLICAS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Lease duration of the replicas under test: short, so a SIGKILL is recovered quickly.
const LEASE: &str = "6s";

fn replica_kubeconfig(replica: &str) -> PathBuf {
    kubeconfig_path()
        .parent()
        .unwrap()
        .join(format!("replica-{replica}.kubeconfig"))
}

fn start_replica(ns: &str, replica: &str) -> GantryController {
    start_replica_with_lease(ns, replica, LEASE)
}

fn start_replica_with_lease(ns: &str, replica: &str, lease: &str) -> GantryController {
    GantryController::start_with(
        ns,
        &replica_kubeconfig(replica),
        &[
            "--leader-elect",
            &format!("--leader-election-identity=replica-{replica}"),
            &format!("--leader-election-lease-duration={lease}"),
        ],
    )
}

/// Writes (create, update, patch, delete) in `ns` per audit user, from the test cluster's
/// audit log, which records the replica users' writes only.
fn writes_by_user(ns: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for event in audit_events()
        .iter()
        .filter(|e| e["objectRef"]["namespace"] == ns)
    {
        let user = event["user"]["username"].as_str().unwrap_or("").to_string();
        *out.entry(user).or_insert(0) += 1;
    }
    out
}

async fn is_leader(c: &GantryController) -> Option<bool> {
    crate::support::cluster::is_leader(c.metrics_port).await
}

async fn wait_leader(c: &GantryController, what: &str) {
    eventually(what, Duration::from_secs(60), || async {
        is_leader(c).await.filter(|l| *l)
    })
    .await;
}

async fn holder(client: &kube::Client, ns: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    leases
        .get_opt("gantry-controller")
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

fn configmaps(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("app/cm-{i:03}.yaml"),
                format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i:03}\ndata:\n  i: \"{i}\"\n"
                ),
            )
        })
        .collect()
}

#[tokio::test]
async fn two_replicas_only_the_lease_holder_writes_and_sigterm_hands_over() {
    let _one = REPLICAS.lock().await;
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "ha-two").await;
    // A long Lease: the hand-over on SIGTERM must not wait for it to expire (a holder
    // renews 20 s into it, so it is always valid for 10 s more).
    let mut a = start_replica_with_lease(&ns.name, "a", "30s");
    wait_leader(&a, "replica a to hold the Lease").await;
    let b = start_replica_with_lease(&ns.name, "b", "30s");

    let server = GitServer::start();
    let files = configmaps(3);
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let first = server.create_repo("app", &files);
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.http_url("app"),
        json!({"path": "app"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "app", &first).await;

    // The standby serves health and metrics, says it is not the leader, and refuses
    // webhooks with 503 rather than triggering anything.
    assert_eq!(is_leader(&b).await, Some(false));
    let health = reqwest::get(format!("http://127.0.0.1:{}/readyz", b.metrics_port))
        .await
        .unwrap();
    assert!(health.status().is_success());
    let hook = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/hook/any-token",
            b.receiver_port
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(hook.status().as_u16(), 503);
    assert_eq!(hook.headers()["retry-after"], "1");
    assert_eq!(
        holder(&client, &ns.name).await.as_deref(),
        Some("replica-a")
    );

    // Let the standby run beside the leader through a few periodic syncs.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let writes = writes_by_user(&ns.name);
    assert!(
        writes.get("gantry-replica-a").copied().unwrap_or(0) > 0,
        "the leader's writes are in the audit log: {writes:?}"
    );
    assert_eq!(
        writes.get("gantry-replica-b"),
        None,
        "the standby wrote: {writes:?}"
    );

    // SIGTERM: a finishes, releases the Lease, and b takes over and syncs the next commit.
    let stopped = std::time::Instant::now();
    let status = a.process.terminate();
    assert!(status.success(), "a stopped cleanly: {status}");
    assert!(a.log().contains("released the Lease"), "{}", a.log());
    wait_leader(&b, "replica b to take the released Lease").await;
    let handover = stopped.elapsed();
    assert!(
        handover < Duration::from_secs(9),
        "b took over after {handover:?}: it waited for the Lease to expire instead of seeing it released"
    );
    let ws = Workspace::clone_from(&server, "app");
    ws.write(
        "app/cm-new.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-new\n",
    );
    let second = ws.commit_and_push("one more");
    wait_synced_healthy(&apps, "app", &second).await;
    let writes = writes_by_user(&ns.name);
    assert!(
        writes.get("gantry-replica-b").copied().unwrap_or(0) > 0,
        "the new leader writes: {writes:?}"
    );
    assert_eq!(
        holder(&client, &ns.name).await.as_deref(),
        Some("replica-b")
    );
}

#[tokio::test]
async fn a_sigkilled_leader_is_replaced_mid_sync_and_mid_canary_without_a_double_revert() {
    let _one = REPLICAS.lock().await;
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "ha-kill").await;
    let mut a = start_replica(&ns.name, "a");
    wait_leader(&a, "replica a to hold the Lease").await;
    let mut b = start_replica(&ns.name, "b");

    // Mid-sync: a set of 300 objects; a is killed once the first ones exist.
    let server = GitServer::start();
    let files = configmaps(300);
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let big = server.create_repo("big", &files);
    create_source_and_app(
        &client,
        &ns.name,
        "big",
        &server.http_url("big"),
        json!({"path": "app"}),
    )
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let partial = eventually(
        "the first objects of the sync",
        Duration::from_secs(60),
        || async {
            let n = cms.list(&ListParams::default()).await.ok()?.items.len();
            (n > 1).then_some(n)
        },
    )
    .await;
    a.process.kill();
    wait_leader(&b, "replica b to take over from the killed leader").await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let app = wait_synced_healthy(&apps, "big", &big).await;
    let n = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|c| c.metadata.name.as_deref().unwrap().starts_with("cm-"))
        .count();
    assert_eq!(n, 300, "killed after {partial} objects; all exist");
    assert_eq!(app.status.unwrap().inventory.len(), 300);

    // Mid-canary with onFailure: revert: b is killed while the bad canary runs; a (back
    // as a new process) takes over, aborts it, and Git gets exactly one revert.
    let a2 = start_replica(&ns.name, "a");
    let canary_server = GitServer::start();
    let (_, ws, _) = canary_app(
        &client,
        &ns.name,
        &canary_server,
        json!({
            "strategy": "Canary", "onFailure": "revert",
            "steps": [{"weight": 50}, {"pause": {}}],
            "analysis": {"interval": "2s", "failureLimit": 3}
        }),
    )
    .await;
    ws.write(
        "app/deploy.yaml",
        &deployment_n("example.test/web:bad-2", 4),
    );
    ws.commit_and_push("bad image");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    eventually("the canary to run", Duration::from_secs(60), || async {
        deployments.get_opt("web-canary").await.ok()?
    })
    .await;
    b.process.kill();
    wait_leader(&a2, "the restarted replica a to take over").await;
    let bare = canary_server.bare_path("app");
    let revert = eventually(
        "a revert commit in Git",
        Duration::from_secs(90),
        || async {
            let subject = git(&bare, &["log", "-1", "--format=%s", "main"]);
            subject
                .starts_with("Revert \"bad image\"")
                .then(|| git(&bare, &["rev-parse", "main"]).trim().to_string())
        },
    )
    .await;
    let apps_web: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps_web, "web", &revert).await;
    // Settle, then count: one revert, whatever either replica did before its death.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let log = git(&bare, &["log", "--format=%s", "main"]);
    assert_eq!(
        log.lines()
            .filter(|s| s.starts_with("Revert \"bad image\""))
            .count(),
        1,
        "{log}"
    );
    assert!(deployments.get_opt("web-canary").await.unwrap().is_none());
}

/// A GitRepository and an Application named `name`, in `shard` (unlabelled when `None`);
/// the Application reads the GitRepository `source`.
async fn create_in_shard(
    client: &kube::Client,
    ns: &str,
    name: &str,
    source: &str,
    url: &str,
    shard: Option<&str>,
) {
    use kube::api::PostParams;
    let labels = match shard {
        Some(s) => json!({"gantry.dev/shard": s}),
        None => json!({}),
    };
    if name == source {
        let repos: Api<gantry::api::GitRepository> = Api::namespaced(client.clone(), ns);
        let repo = serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
            "metadata": {"name": name, "labels": labels},
            "spec": {"url": url, "interval": "1s", "ref": {"branch": "main"}}
        }))
        .unwrap();
        repos.create(&PostParams::default(), &repo).await.unwrap();
    }
    let apps: Api<Application> = Api::namespaced(client.clone(), ns);
    let app = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": name, "labels": labels},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": source}, "path": name,
                 "interval": "10m", "timeout": "2m"}
    }))
    .unwrap();
    apps.create(&PostParams::default(), &app).await.unwrap();
}

/// Audit events in `ns` about object `name`, by user.
fn writers_of(ns: &str, name: &str) -> std::collections::BTreeSet<String> {
    audit_events()
        .iter()
        .filter(|e| e["objectRef"]["namespace"] == ns && e["objectRef"]["name"] == name)
        .filter_map(|e| e["user"]["username"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn two_shards_split_the_resources_and_each_is_reconciled_by_exactly_one() {
    let _one = REPLICAS.lock().await;
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "shards").await;
    let _default = GantryController::start_with(
        &ns.name,
        &replica_kubeconfig("a"),
        &["--leader-elect", "--leader-election-identity=default-0"],
    );
    let _blue = GantryController::start_with(
        &ns.name,
        &replica_kubeconfig("b"),
        &[
            "--leader-elect",
            "--leader-election-identity=blue-0",
            "--shard=blue",
        ],
    );
    let server = GitServer::start();
    let cm = |name: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}-config\ndata:\n  k: v\n"
        )
    };
    let (red_cm, blue_cm, stray_cm) = (cm("red"), cm("blue"), cm("stray"));
    let commit = server.create_repo(
        "config",
        &[
            ("red/cm.yaml", red_cm.as_str()),
            ("blue/cm.yaml", blue_cm.as_str()),
            ("stray/cm.yaml", stray_cm.as_str()),
        ],
    );
    let url = server.http_url("config");
    create_in_shard(&client, &ns.name, "red", "red", &url, None).await;
    create_in_shard(&client, &ns.name, "blue", "blue", &url, Some("blue")).await;
    // In shard blue, reading the default shard's source: refused with a clear reason.
    create_in_shard(&client, &ns.name, "stray", "red", &url, Some("blue")).await;

    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "red", &commit).await;
    wait_synced_healthy(&apps, "blue", &commit).await;
    let stray = eventually(
        "the cross-shard Application to say why it waits",
        Duration::from_secs(60),
        || async {
            let app = apps.get("stray").await.ok()?;
            let c = crate::support::app::condition(&app, "Ready")?;
            (c.reason == "ArtifactFailed").then_some(c)
        },
    )
    .await;
    assert!(
        stray.message.contains("belongs to the default shard")
            && stray.message.contains("shard \"blue\"")
            && stray.message.contains("gantry.dev/shard"),
        "{}",
        stray.message
    );
    // Each shard has its own Lease.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    for (lease, holder) in [
        ("gantry-controller", "default-0"),
        ("gantry-controller-blue", "blue-0"),
    ] {
        let l = leases.get(lease).await.unwrap();
        assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some(holder));
    }
    // Let both run through a few periodic syncs, then read who wrote what.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let a = "gantry-replica-a".to_string();
    let b = "gantry-replica-b".to_string();
    for (object, writer) in [
        ("red", &a),
        ("red-config", &a),
        ("blue", &b),
        ("blue-config", &b),
        ("stray", &b),
    ] {
        let writers = writers_of(&ns.name, object);
        assert_eq!(
            writers,
            std::collections::BTreeSet::from([writer.clone()]),
            "{object} written by {writers:?}"
        );
    }
    assert!(writers_of(&ns.name, "stray-config").is_empty());
}
