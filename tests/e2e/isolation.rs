//! One hostile tenant must never crash, freeze or reach past the controller: percent-encoded
//! `file://` paths, a Git tree nested 60,000 deep, Git servers that never answer, CEL rules
//! that nest or cost without bound, hooks that never finish, hooks named like another
//! Application's objects, kustomize plugins fetched from URLs.

use std::io::Read;
use std::time::{Duration, Instant};

use gantry::api::{Application, GitRepository};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::support::app::{
    condition, create_source_and_app, wait_ready_reason, wait_synced_healthy,
};
use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::GitServer;
use crate::support::hostile::{COSTLY_RULE, STUCK_PRESYNC_JOB, big_configmap, silent_server};
use crate::support::random_suffix;

fn cm(name: &str, value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: \"{value}\"\n")
}

fn source(name: &str, url: &str, labels: serde_json::Value) -> GitRepository {
    serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
        "metadata": {"name": name, "labels": labels},
        "spec": {"url": url, "interval": "2s", "timeout": "5s", "ref": {"branch": "main"}}
    }))
    .unwrap()
}

/// The Ready condition of a GitRepository once it is False, as `reason: message`.
async fn source_not_ready(api: &Api<GitRepository>, name: &str) -> String {
    eventually(
        &format!("{name} not Ready"),
        Duration::from_secs(60),
        || async {
            let r = api.get(name).await.ok()?;
            let c = r
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")?
                .clone();
            (c.status == "False").then_some(format!("{}: {}", c.reason, c.message))
        },
    )
    .await
}

async fn healthz(port: u16) -> Duration {
    let started = Instant::now();
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("/healthz answers");
    assert!(r.status().is_success());
    started.elapsed()
}

#[tokio::test]
async fn percent_encoded_file_urls_cannot_climb_out_of_the_sources_root() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "iso-pct").await;
    let controller = GantryController::start(&ns.name);
    // A private repository outside the sources root (the tests' root is the temp dir), and
    // a path under the root that climbs to it once percent-decoded.
    let outside = tempfile::tempdir_in("/var/tmp").unwrap();
    let private = outside.path().join("private.git");
    let repo = git2::Repository::init_bare(&private).unwrap();
    let _ = crate::support::git::commit_files(&repo, &[("secret.yaml", &cm("stolen", "x"))]);
    let depth = std::env::temp_dir().components().count();
    let climb = "%2e%2e/".repeat(depth + 1);
    let encoded = format!(
        "file://{}/{climb}{}",
        std::env::temp_dir().display(),
        private.display().to_string().trim_start_matches('/')
    );
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), &ns.name);
    repos
        .create(&PostParams::default(), &source("pct", &encoded, json!({})))
        .await
        .unwrap();
    let mixed = encoded.replace("%2e", "%2E");
    repos
        .create(
            &PostParams::default(),
            &source("pct-mixed", &mixed, json!({})),
        )
        .await
        .unwrap();
    for name in ["pct", "pct-mixed"] {
        let why = source_not_ready(&repos, name).await;
        assert!(
            why.starts_with("URLRefused") && why.contains("percent"),
            "{name}: {why}"
        );
        let r = repos.get(name).await.unwrap();
        assert!(r.status.unwrap().artifact.is_none());
    }
    // Nothing of the private repository reached the data directory.
    for f in controller.data_files() {
        let text = std::fs::read(&f).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&text).contains("stolen"),
            "{}",
            f.display()
        );
    }
}

#[tokio::test]
async fn a_tree_nested_60000_deep_is_refused_and_the_controller_lives_on() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "iso-deep").await;
    let mut controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    server.create_repo("deep", &[("README.md", "deep\n")]);
    {
        let repo = git2::Repository::open_bare(server.bare_path("deep")).unwrap();
        let commit = crate::support::git::deep_commit(&repo, 60_000);
        repo.reference("refs/heads/main", commit, true, "deep tree")
            .unwrap();
    }
    server.create_repo("fine", &[("deploy/cm.yaml", &cm("fine", "1"))]);
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), &ns.name);
    let mut deep = source("deep", &server.file_url("deep"), json!({}));
    deep.spec.timeout = serde_json::from_value(json!("60s")).unwrap();
    repos.create(&PostParams::default(), &deep).await.unwrap();
    let why = source_not_ready(&repos, "deep").await;
    assert!(
        why.starts_with("UnsafeContent") && why.contains("nests deeper than 128"),
        "{why}"
    );
    assert!(why.len() < 600, "the message stays short: {why}");
    // It keeps being refused (every interval) without a crash, and others keep working.
    tokio::time::sleep(Duration::from_secs(5)).await;
    controller.process.assert_running();
    create_source_and_app(
        &client,
        &ns.name,
        "fine",
        &server.file_url("fine"),
        json!({"path": "deploy"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let head = crate::support::git::git(&server.bare_path("fine"), &["rev-parse", "main"]);
    wait_synced_healthy(&apps, "fine", head.trim()).await;
    controller.process.assert_running();
    assert!(
        !controller.log().contains("overflowed its stack"),
        "{}",
        controller.log()
    );
}

#[tokio::test]
async fn git_servers_that_never_answer_hold_a_few_threads_of_their_namespace_only() {
    let client = client().await;
    install_crds(&client).await;
    let shard = format!("iso-{}", random_suffix());
    let hostile = TestNamespace::new(&client, "iso-stall").await;
    let good = TestNamespace::new(&client, "iso-good").await;
    let controller = GantryController::start_sharded(&shard, &["--max-fetches-per-namespace=4"]);
    let labels = json!({"gantry.dev/shard": shard});
    // Let the controller start its reconcilers, then count its threads.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = controller.threads();
    let (port, silence) = silent_server();
    use std::sync::atomic::Ordering::SeqCst;
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), &hostile.name);
    for i in 0..40 {
        repos
            .create(
                &PostParams::default(),
                &source(
                    &format!("stall-{i}"),
                    &format!("http://127.0.0.1:{port}/r{i}.git"),
                    labels.clone(),
                ),
            )
            .await
            .unwrap();
    }
    eventually(
        "the silent server to be reached",
        Duration::from_secs(30),
        || async { (silence.accepted.load(SeqCst) >= 4).then_some(()) },
    )
    .await;
    // A healthy tenant in another namespace fetches and deploys meanwhile.
    let server = GitServer::start();
    let head = server.create_repo("app", &[("deploy/cm.yaml", &cm("good", "1"))]);
    let good_repos: Api<GitRepository> = Api::namespaced(client.clone(), &good.name);
    good_repos
        .create(
            &PostParams::default(),
            &source("app", &server.http_url("app"), labels.clone()),
        )
        .await
        .unwrap();
    let apps: Api<Application> = Api::namespaced(client.clone(), &good.name);
    let app: Application = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": "app", "labels": labels},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": "app"}, "path": "deploy"}
    }))
    .unwrap();
    apps.create(&PostParams::default(), &app).await.unwrap();
    wait_synced_healthy(&apps, "app", &head).await;
    // Several intervals later: the hostile namespace holds at most its 4 fetch threads.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let after = controller.threads();
    assert!(
        after <= before + 8,
        "threads grew from {before} to {after} with 40 stalled sources"
    );
    // At most the namespace's 4 fetches talk to the silent server at once, and each is cut
    // at its deadline (5 s) rather than waiting on the server forever.
    let most_open = silence.most_open.load(SeqCst);
    assert!(most_open <= 6, "{most_open} connections open at once");
    assert!(
        silence.closed.load(SeqCst) >= 4,
        "no stalled connection was closed at its deadline ({} accepted)",
        silence.accepted.load(SeqCst)
    );
    let why = eventually(
        "a stalled source reported",
        Duration::from_secs(30),
        || async {
            repos
                .list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find_map(|r| {
                    let c = r
                        .status?
                        .conditions
                        .into_iter()
                        .find(|c| c.type_ == "Ready")?;
                    (c.status == "False").then_some(format!("{}: {}", c.reason, c.message))
                })
        },
    )
    .await;
    assert!(
        why.starts_with("Timeout") || why.starts_with("FetchStalled"),
        "{why}"
    );
}

#[tokio::test]
async fn cel_rules_that_nest_or_cost_without_bound_never_stall_the_controller() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "iso-cel").await;
    let mut controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    // A ConfigMap with 5,000 keys, judged by a rule that nests two macros over them.
    let big = big_configmap(5000);
    server.create_repo(
        "app",
        &[("deploy/big.yaml", &big), ("other/cm.yaml", &cm("ok", "1"))],
    );
    let costly = COSTLY_RULE;
    let deep = format!("{}true{}", "(".repeat(1000), ")".repeat(1000));
    // The schema refuses an over-long rule before the controller sees it.
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let too_long: Application = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": "long"},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": "app"}, "path": "deploy",
                 "healthChecks": [{"apiVersion": "v1", "kind": "ConfigMap", "current": "x".repeat(5000)}]}
    }))
    .unwrap();
    let refused = apps
        .create(&PostParams::default(), &too_long)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("2048"), "{refused}");
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "deploy", "healthChecks": [{"apiVersion": "v1", "kind": "ConfigMap", "current": costly}]}),
    )
    .await;
    // 1,000 nested parentheses (once a stack overflow on every start) compile; a rule that
    // nests lists 200 deep is refused by the bounded parser; neither crashes anything.
    let lists = format!("{}1{}.size() > 0", "[".repeat(200), "]".repeat(200));
    let deep_app: Application = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": "deep"},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": "app"}, "path": "other",
                 "healthChecks": [
                     {"apiVersion": "v1", "kind": "ConfigMap", "current": deep},
                     {"apiVersion": "v1", "kind": "Secret", "current": lists}]}
    }))
    .unwrap();
    apps.create(&PostParams::default(), &deep_app)
        .await
        .unwrap();
    let message = eventually("InvalidHealthCheck", Duration::from_secs(60), || async {
        let a = apps.get("deep").await.ok()?;
        let c = condition(&a, "Ready")?;
        (c.reason == "InvalidHealthCheck").then_some(c.message)
    })
    .await;
    assert!(
        message.contains("Secret.current") && message.contains("does not compile"),
        "{message}"
    );
    // The costly rule: synced, health Unknown with the reason, never evaluated.
    let healthy = eventually("Healthy=Unknown", Duration::from_secs(60), || async {
        let a = apps.get("app").await.ok()?;
        let h = condition(&a, "Healthy")?;
        (h.status == "Unknown" && h.message.contains("not evaluated")).then_some(h.message)
    })
    .await;
    assert!(healthy.contains("more than 200000"), "{healthy}");
    // The probe answers promptly throughout, and the process never restarted.
    for _ in 0..10 {
        let took = healthz(controller.metrics_port).await;
        assert!(took < Duration::from_secs(2), "/healthz took {took:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    controller.process.assert_running();
}

#[tokio::test]
async fn hooks_that_never_finish_do_not_hold_the_reconcile_slots() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "iso-hooks").await;
    // Two slots only: four Applications with stuck hooks would hold them both for 10 min.
    let _controller = GantryController::start_with(
        &ns.name,
        &crate::support::cluster::kubeconfig_path(),
        &["--concurrent=2"],
    );
    let server = GitServer::start();
    let stuck = STUCK_PRESYNC_JOB;
    for i in 0..4 {
        let name = format!("stuck-{i}");
        server.create_repo(
            &name,
            &[
                ("deploy/hook.yaml", stuck),
                ("deploy/cm.yaml", &cm(&name, "1")),
            ],
        );
        create_source_and_app(
            &client,
            &ns.name,
            &name,
            &server.file_url(&name),
            json!({"path": "deploy", "timeout": "10m"}),
        )
        .await;
    }
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), &ns.name);
    eventually("four stuck hooks", Duration::from_secs(60), || async {
        (jobs.list(&Default::default()).await.ok()?.items.len() >= 4).then_some(())
    })
    .await;
    let head = server.create_repo("good", &[("deploy/cm.yaml", &cm("good", "1"))]);
    let started = Instant::now();
    create_source_and_app(
        &client,
        &ns.name,
        "good",
        &server.file_url("good"),
        json!({"path": "deploy"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "good", &head).await;
    eprintln!("good Application Ready after {:?}", started.elapsed());
    // The schema caps the timeout itself.
    let long: Application = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": "long"},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": "good"}, "timeout": "2h"}
    }))
    .unwrap();
    let refused = apps
        .create(&PostParams::default(), &long)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("at most 1h"), "{refused}");
}

#[tokio::test]
async fn a_hook_named_like_another_applications_object_neither_deletes_nor_replaces_it() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "iso-hookown").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let owner_head = server.create_repo("owner", &[("deploy/cm.yaml", &cm("shared", "precious"))]);
    create_source_and_app(
        &client,
        &ns.name,
        "owner",
        &server.file_url("owner"),
        json!({"path": "deploy"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "owner", &owner_head).await;
    for (i, policy) in ["before-hook-creation", "hook-succeeded"]
        .iter()
        .enumerate()
    {
        let name = format!("thief-{i}");
        let hook = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\n  annotations:\n    helm.sh/hook: pre-install\n    helm.sh/hook-delete-policy: {policy}\ndata:\n  k: stolen\n"
        );
        let head = server.create_repo(
            &name,
            &[
                ("deploy/hook.yaml", &hook),
                ("deploy/cm.yaml", &cm(&name, "1")),
            ],
        );
        create_source_and_app(
            &client,
            &ns.name,
            &name,
            &server.file_url(&name),
            json!({"path": "deploy"}),
        )
        .await;
        let app = wait_ready_reason(&apps, &name, "OwnershipConflict", &head).await;
        let message = condition(&app, "Ready").unwrap().message;
        assert!(
            message.contains(&format!("{}.owner", ns.name))
                && message.contains(&format!("{}.{name}", ns.name)),
            "names both Applications: {message}"
        );
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let shared = cms.get("shared").await.unwrap();
    assert_eq!(shared.data.unwrap()["k"], "precious");
}

#[tokio::test]
async fn kustomize_transformers_and_generators_from_urls_are_refused_before_any_request() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "iso-kplug").await;
    let _controller = GantryController::start(&ns.name);
    // A loopback server counting the requests it gets.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
        }
    });
    let server = GitServer::start();
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    for (i, field) in ["transformers", "generators", "validators", "configurations"]
        .iter()
        .enumerate()
    {
        let name = format!("k{i}");
        let head = server.create_repo(
            &name,
            &[
                ("deploy/cm.yaml", &cm(&name, "1")),
                (
                    "deploy/kustomization.yaml",
                    &format!(
                        "resources: [cm.yaml]\n{field}:\n- http://127.0.0.1:{port}/plugin.yaml\n"
                    ),
                ),
            ],
        );
        create_source_and_app(
            &client,
            &ns.name,
            &name,
            &server.file_url(&name),
            json!({"path": "deploy"}),
        )
        .await;
        let app = wait_ready_reason(&apps, &name, "RenderFailed", &head).await;
        let message = condition(&app, "Ready").unwrap().message;
        assert!(
            message.contains("kustomize would fetch it"),
            "{field}: {message}"
        );
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}
