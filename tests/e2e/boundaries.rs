//! Boundaries tried from the attacker's side (TESTING.md rows 1, 5, 24, 28, 31): link
//! chains and directory links, a tampered artifact and a corrupted Git cache, kustomize
//! bases that would fetch, secretGenerator values in tool errors, intervals below the
//! minimum, fields the controller does not honour yet.

use std::time::Duration;

use gantry::api::{Application, GitRepository};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::app::{
    Workspace, condition, create_source_and_app, wait_ready_reason, wait_synced_healthy,
};
use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::GitServer;

fn cm(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n")
}

fn source(name: &str, url: &str) -> GitRepository {
    serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
        "metadata": {"name": name},
        "spec": {"url": url, "interval": "1s", "ref": {"branch": "main"}}
    }))
    .unwrap()
}

async fn wait_source_refused(api: &Api<GitRepository>, name: &str) -> String {
    eventually(
        &format!("{name} refused"),
        Duration::from_secs(30),
        || async {
            let r = api.get(name).await.ok()?;
            let c = r
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")?
                .clone();
            (c.status == "False" && r.status.as_ref()?.artifact.is_none())
                .then_some(format!("{}: {}", c.reason, c.message))
        },
    )
    .await
}

/// A Helm chart whose ConfigMap carries whatever `.Files` finds under `files/`.
fn chart_dir(root: &std::path::Path) {
    let chart = root.join("chart");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::create_dir_all(chart.join("files")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: leak\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: leak\ndata:\n  one: {{ .Files.Get \"files/k\" | quote }}\n\
         {{- range $path, $_ := .Files.Glob \"files/**\" }}\n  {{ $path | replace \"/\" \"_\" }}: {{ $.Files.Get $path | quote }}\n{{- end }}\n",
    )
    .unwrap();
}

#[tokio::test]
async fn link_chains_directory_links_and_links_to_other_artifacts_are_refused() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "bd-links").await;
    let controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let ln = std::os::unix::fs::symlink::<&str, std::path::PathBuf>;

    // 1. a chain: each link is lexically inside, together they reach /etc/hostname
    let chain = tempfile::tempdir().unwrap();
    chart_dir(chain.path());
    std::fs::create_dir_all(chain.path().join("x/a/b/c/d/e/f")).unwrap();
    ln(
        "../../../../../../..",
        chain.path().join("x/a/b/c/d/e/f/deep"),
    )
    .unwrap();
    ln(
        "../../x/a/b/c/d/e/f/deep/../../../../../../../../etc/hostname",
        chain.path().join("chart/files/k"),
    )
    .unwrap();
    server.create_repo_from_dir("chain", chain.path());

    // 2. a directory link that .Files.Glob would walk, through the same chain
    let dir_link = tempfile::tempdir().unwrap();
    chart_dir(dir_link.path());
    std::fs::create_dir_all(dir_link.path().join("x/a/b/c/d/e/f")).unwrap();
    ln(
        "../../../../../../..",
        dir_link.path().join("x/a/b/c/d/e/f/deep"),
    )
    .unwrap();
    ln(
        "../../x/a/b/c/d/e/f/deep/../../../../../../../../etc",
        dir_link.path().join("chart/files/etc"),
    )
    .unwrap();
    std::fs::write(dir_link.path().join("chart/files/k"), "plain").unwrap();
    server.create_repo_from_dir("dirlink", dir_link.path());

    // 3. a link into a sibling source's artifact directory
    let sibling = tempfile::tempdir().unwrap();
    chart_dir(sibling.path());
    ln("../../../other", sibling.path().join("chart/files/k")).unwrap();
    server.create_repo_from_dir("sibling", sibling.path());

    let repos: Api<GitRepository> = Api::namespaced(client.clone(), &ns.name);
    for (name, link) in [
        ("chain", "chart/files/k"),
        ("dirlink", "chart/files/etc"),
        ("sibling", "chart/files/k"),
    ] {
        repos
            .create(
                &PostParams::default(),
                &source(name, &server.file_url(name)),
            )
            .await
            .unwrap();
        let why = wait_source_refused(&repos, name).await;
        assert!(why.starts_with("UnsafeContent"), "{name}: {why}");
        assert!(
            why.contains(link),
            "{name}: the condition names the link: {why}"
        );
    }
    // An Application on the chain applies nothing.
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    apps.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
            "metadata": {"name": "chain"},
            "spec": {"sourceRef": {"kind": "GitRepository", "name": "chain"}, "path": "chart"}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    eventually("ArtifactFailed", Duration::from_secs(30), || async {
        let app = apps.get("chain").await.ok()?;
        (condition(&app, "Ready")?.reason == "ArtifactFailed").then_some(())
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(cms.get_opt("leak").await.unwrap().is_none());
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    for f in controller.data_files() {
        if f.components().any(|c| c.as_os_str() == "git") {
            continue;
        }
        assert!(
            !std::fs::symlink_metadata(&f).is_ok_and(|m| m.file_type().is_symlink()),
            "no link of a refused source is on disk: {}",
            f.display()
        );
        if !hostname.trim().is_empty() {
            let content = std::fs::read_to_string(&f).unwrap_or_default();
            assert!(!content.contains(hostname.trim()) || f.ends_with("controller.log"));
        }
    }
}

/// The artifact directories of a source in the controller's data directory.
fn artifact_dirs(controller: &GantryController, ns: &str, name: &str) -> Vec<std::path::PathBuf> {
    let root = controller
        .data_dir
        .path()
        .join("artifacts")
        .join(ns)
        .join(name);
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect()
}

fn make_writable(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn a_tampered_artifact_is_checked_out_again_and_nothing_is_pruned() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "bd-tamper").await;
    let controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let files: Vec<(String, String)> = (0..20)
        .map(|i| (format!("app/cm-{i}.yaml"), cm(&format!("cm-{i}"))))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let head = server.create_repo("app", &refs);
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "app", "prune": true}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "app", &head).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let uids = |list: Vec<ConfigMap>| {
        let mut v: Vec<_> = list
            .into_iter()
            .filter(|c| c.metadata.name.as_deref() != Some("kube-root-ca.crt"))
            .map(|c| c.metadata.uid.unwrap())
            .collect();
        v.sort();
        v
    };
    let before = uids(cms.list(&ListParams::default()).await.unwrap().items);
    assert_eq!(before.len(), 20);

    // Someone removes a file from the checked-out tree; the files are read-only.
    let dirs = artifact_dirs(&controller, &ns.name, "app");
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let victim = dirs[0].join("app/cm-0.yaml");
    assert!(std::fs::metadata(&victim).unwrap().permissions().readonly());
    make_writable(&dirs[0].join("app"));
    std::fs::remove_file(&victim).unwrap();
    // A spec change makes the Application render the same revision again.
    apps.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"interval": "11m"}})),
    )
    .await
    .unwrap();
    eventually(
        "a sync of the new generation",
        Duration::from_secs(60),
        || async {
            let app = apps.get("app").await.ok()?;
            let ready = condition(&app, "Ready")?;
            (ready.status == "True" && ready.observed_generation == app.metadata.generation)
                .then_some(())
        },
    )
    .await;
    let after = uids(cms.list(&ListParams::default()).await.unwrap().items);
    assert_eq!(after, before, "no ConfigMap was pruned or recreated");
    assert!(
        artifact_dirs(&controller, &ns.name, "app")
            .iter()
            .any(|d| d.join("app/cm-0.yaml").is_file()),
        "the tree was checked out again"
    );
    let log = controller.log();
    assert!(log.contains("artifact changed on disk"), "the check ran");
}

#[tokio::test]
async fn a_corrupted_git_cache_is_cloned_again() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "bd-corrupt").await;
    let controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let head = server.create_repo("app", &[("app/a.yaml", &cm("a"))]);
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.http_url("app"),
        json!({"path": "app"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "app", &head).await;
    // Garble every object of the cache.
    let cache = controller
        .data_dir
        .path()
        .join("git")
        .join(&ns.name)
        .join("app");
    let mut garbled = 0;
    let mut stack = vec![cache.join("objects")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                make_writable(&d);
                let len = std::fs::metadata(&p).unwrap().len() as usize;
                std::fs::write(&p, vec![0x5a; len.max(64)]).unwrap();
                garbled += 1;
            }
        }
    }
    assert!(garbled > 0);
    let ws = Workspace::clone_from(&server, "app");
    ws.write("app/b.yaml", &cm("b"));
    let next = ws.commit_and_push("b");
    wait_synced_healthy(&apps, "app", &next).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(cms.get_opt("b").await.unwrap().is_some());
    assert!(
        controller.log().contains("replacing the cache"),
        "the damaged cache was replaced"
    );
}

#[tokio::test]
async fn kustomize_never_fetches_and_secret_literals_stay_out_of_errors() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "bd-kust").await;
    let controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let head = server.create_repo(
        "app",
        &[
            (
                "scp/kustomization.yaml",
                "resources:\n- github.com:owner/repo//path\n",
            ),
            (
                "lit/kustomization.yaml",
                "secretGenerator:\n- name: s\n  literals:\n  - TOP-SECRET-LITERAL-VALUE\n",
            ),
        ],
    );
    create_source_and_app(
        &client,
        &ns.name,
        "scp",
        &server.file_url("app"),
        json!({"path": "scp"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let app = wait_ready_reason(&apps, "scp", "RenderFailed", &head).await;
    let message = condition(&app, "Ready").unwrap().message;
    assert!(message.contains("kustomize would fetch it"), "{message}");
    assert!(message.contains("github.com:owner/repo//path"), "{message}");

    apps.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
            "metadata": {"name": "lit"},
            "spec": {"sourceRef": {"kind": "GitRepository", "name": "scp"}, "path": "lit"}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let app = wait_ready_reason(&apps, "lit", "RenderFailed", &head).await;
    let status = serde_json::to_string(&app.status).unwrap();
    assert!(
        status.contains("*****"),
        "the error is shown, redacted: {status}"
    );
    assert!(!status.contains("TOP-SECRET-LITERAL-VALUE"), "{status}");
    assert!(!controller.log().contains("TOP-SECRET-LITERAL-VALUE"));
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns.name);
    for e in events.list(&ListParams::default()).await.unwrap() {
        assert!(
            !e.message
                .unwrap_or_default()
                .contains("TOP-SECRET-LITERAL-VALUE")
        );
    }
}

#[tokio::test]
async fn intervals_below_the_minimum_are_refused_by_the_schema() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "bd-interval").await;
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), &ns.name);
    let mut repo = source("fast", "https://example.com/x.git");
    repo.spec.interval = gantry::api::duration::GoDuration::new("1ms");
    let err = repos
        .create(&PostParams::default(), &repo)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("interval must be at least 1s"), "{err}");
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let err = apps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
                "metadata": {"name": "fast"},
                "spec": {"sourceRef": {"kind": "GitRepository", "name": "x"}, "interval": "999ms"}
            }))
            .unwrap(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("interval must be at least 1s"), "{err}");
    repo.spec.interval = gantry::api::duration::GoDuration::new("1s");
    repos.create(&PostParams::default(), &repo).await.unwrap();
}

#[tokio::test]
async fn an_identity_the_controller_cannot_act_as_stops_the_application() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "bd-unsup").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let head = server.create_repo("app", &[("app/a.yaml", &cm("a"))]);
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "app", "serviceAccountName": "limited"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    // The ServiceAccount does not exist: never replaced by the controller's own rights.
    let app = eventually(
        "ServiceAccountNotFound",
        Duration::from_secs(30),
        || async {
            let app = apps.get("app").await.ok()?;
            (condition(&app, "Ready")?.reason == "ServiceAccountNotFound").then_some(app)
        },
    )
    .await;
    assert!(
        condition(&app, "Ready")
            .unwrap()
            .message
            .contains(&format!("ServiceAccount {}/limited not found", ns.name))
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(cms.get_opt("a").await.unwrap().is_none(), "nothing applied");
    let _ = head;
}

#[tokio::test]
async fn slow_clients_on_the_receiver_port_never_starve_health_and_metrics() {
    use std::io::Write;
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "bd-loris").await;
    let mut controller = GantryController::start(&ns.name);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let health = format!("http://127.0.0.1:{}/healthz", controller.metrics_port);
    eventually("the controller up", Duration::from_secs(30), || async {
        http.get(&health)
            .send()
            .await
            .ok()?
            .status()
            .is_success()
            .then_some(())
    })
    .await;
    // 300 connections that start a request and never finish their headers.
    let mut held = vec![];
    for _ in 0..300 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", controller.receiver_port)) {
            let _ = s.write_all(b"POST /hook/x HTTP/1.1\r\nHost: 127.0.0.1\r\n");
            held.push(s);
        }
    }
    let mut failed = 0;
    for _ in 0..21 {
        let ok = http
            .get(&health)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        failed += usize::from(!ok);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(failed, 0, "health probes failed during the flood");
    let metrics = http
        .get(format!(
            "http://127.0.0.1:{}/metrics",
            controller.metrics_port
        ))
        .send()
        .await
        .unwrap();
    assert!(metrics.status().is_success());
    // Webhooks are answered again as soon as the stalled headers time out, while the
    // stalled connections are still open on the client side.
    let hook = format!("http://127.0.0.1:{}/hook/unknown", controller.receiver_port);
    eventually("a webhook answered", Duration::from_secs(15), || async {
        (http.post(&hook).body("{}").send().await.ok()?.status() == 404).then_some(())
    })
    .await;
    drop(held);
    controller.process.assert_running();
}

#[tokio::test]
async fn events_show_the_newest_revision() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "bd-events").await;
    let controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let first = server.create_repo("app", &[("app/a.yaml", &cm("a"))]);
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "app"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "app", &first).await;
    let ws = Workspace::clone_from(&server, "app");
    ws.write("app/b.yaml", &cm("b"));
    let second = ws.commit_and_push("b");
    wait_synced_healthy(&apps, "app", &second).await;
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), &ns.name);
    let synced = |note: &str| {
        let note = note.to_string();
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .any(|e| {
                    e.reason.as_deref() == Some("Synced")
                        && e.note.as_deref().is_some_and(|n| n.contains(&note))
                })
                .then_some(())
        }
    };
    eventually(
        "a Synced event for the first revision",
        Duration::from_secs(10),
        || synced(&first),
    )
    .await;
    eventually(
        "a Synced event for the second revision",
        Duration::from_secs(10),
        || synced(&second),
    )
    .await;
    // Reconciles are counted and timed per kind; Applications by condition status.
    let url = format!("http://127.0.0.1:{}/metrics", controller.metrics_port);
    let metrics = reqwest::get(url).await.unwrap().text().await.unwrap();
    for expected in [
        r#"gantry_reconcile_total{kind="Application",result="ok"}"#,
        r#"gantry_reconcile_total{kind="GitRepository",result="ok"}"#,
        r#"gantry_reconcile_duration_seconds_bucket{kind="Application""#,
        r#"gantry_applications{condition="Ready",status="True"} 1"#,
        r#"gantry_applications{condition="Healthy",status="True"} 1"#,
    ] {
        assert!(metrics.contains(expected), "{expected} in\n{metrics}");
    }
}
