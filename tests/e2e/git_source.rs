//! GitRepository against the local Git server: fetch over smart HTTP with basic auth and over
//! file://, new commits, failures that keep the last artifact, refused URLs and symlinks.

use std::time::Duration;

use gantry::api::GitRepository;
use gantry::api::conditions::Condition;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::{GitServer, git};

fn repo_object(name: &str, url: &str, secret: Option<&str>, branch: &str) -> GitRepository {
    let mut spec =
        json!({ "url": url, "interval": "2s", "timeout": "20s", "ref": { "branch": branch } });
    if let Some(s) = secret {
        spec["secretRef"] = json!({ "name": s });
    }
    serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
        "metadata": { "name": name }, "spec": spec
    }))
    .unwrap()
}

fn ready(repo: &GitRepository) -> Option<Condition> {
    repo.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .cloned()
}

async fn wait_ready(
    api: &Api<GitRepository>,
    name: &str,
    status: &str,
    what: &str,
) -> GitRepository {
    eventually(what, Duration::from_secs(30), || async {
        let r = api.get(name).await.ok()?;
        (ready(&r)?.status == status).then_some(r)
    })
    .await
}

async fn basic_auth_secret(
    client: &kube::Client,
    ns: &str,
    name: &str,
    user: &str,
    password: &str,
) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": name },
        "stringData": { "username": user, "password": password }
    }))
    .unwrap();
    secrets
        .patch(
            name,
            &PatchParams::apply("tests").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn fetches_over_http_with_basic_auth_and_follows_new_commits() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "src-http").await;
    let controller = GantryController::start(&ns.name);
    let server = GitServer::start_with_basic_auth("ci", "hunter2-pw");
    let first = server.create_repo("app", &[("deploy/cm.yaml", "kind: ConfigMap\n")]);
    basic_auth_secret(&client, &ns.name, "git-auth", "ci", "hunter2-pw").await;

    let api: Api<GitRepository> = Api::namespaced(client.clone(), &ns.name);
    api.create(
        &PostParams::default(),
        &repo_object("app", &server.http_url("app"), Some("git-auth"), "main"),
    )
    .await
    .unwrap();
    let repo = wait_ready(&api, "app", "True", "first artifact").await;
    let artifact = repo.status.unwrap().artifact.unwrap();
    assert_eq!(artifact.revision, format!("main@sha1:{first}"));
    assert!(artifact.digest.starts_with("sha256:"));

    // A new commit is picked up at the next interval.
    let work = tempfile::tempdir().unwrap();
    let url = server
        .http_url("app")
        .replace("http://", "http://ci:hunter2-pw@");
    git(work.path(), &["clone", "--quiet", &url, "c"]);
    let clone = work.path().join("c");
    std::fs::write(clone.join("deploy/new.yaml"), "kind: Secret\n").unwrap();
    git(&clone, &["add", "-A"]);
    git(&clone, &["commit", "--quiet", "-m", "second"]);
    git(&clone, &["push", "--quiet", "origin", "main"]);
    let second = git(&clone, &["rev-parse", "HEAD"]).trim().to_string();
    let repo = eventually("the second revision", Duration::from_secs(30), || async {
        let r = api.get("app").await.ok()?;
        let rev = r.status.as_ref()?.artifact.as_ref()?.revision.clone();
        (rev == format!("main@sha1:{second}")).then_some(r)
    })
    .await;
    assert_ne!(
        repo.status.unwrap().artifact.unwrap().digest,
        artifact.digest
    );
    let files = controller.data_files();
    assert!(
        files.iter().any(|f| f.ends_with("deploy/new.yaml")
            && f.to_string_lossy().contains(&format!("/{second}-"))),
        "artifact not written: {files:?}"
    );

    // A wrong password: Ready=False, the last artifact kept, the password nowhere in status.
    basic_auth_secret(&client, &ns.name, "git-auth", "ci", "wrong-pw-123").await;
    let failed = wait_ready(&api, "app", "False", "the authentication failure").await;
    let cond = ready(&failed).unwrap();
    assert_eq!(cond.reason, "AuthenticationFailed", "{cond:?}");
    let status_text = serde_json::to_string(&failed.status).unwrap();
    assert!(!status_text.contains("wrong-pw-123") && !status_text.contains("hunter2-pw"));
    // No credential in the controller's log either (TESTING.md row 7).
    let log = controller.log();
    assert!(
        log.contains("AuthenticationFailed"),
        "the failure is logged"
    );
    assert!(
        !log.contains("wrong-pw-123") && !log.contains("hunter2-pw"),
        "a password leaked into the log"
    );
    assert_eq!(
        failed.status.unwrap().artifact.unwrap().revision,
        format!("main@sha1:{second}"),
        "the last good artifact must be kept"
    );
}

#[tokio::test]
async fn missing_branch_is_ref_not_found() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "src-ref").await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    server.create_repo("app", &[("a.yaml", "a: 1\n")]);
    let api: Api<GitRepository> = Api::namespaced(client.clone(), &ns.name);
    api.create(
        &PostParams::default(),
        &repo_object("app", &server.file_url("app"), None, "release-9"),
    )
    .await
    .unwrap();
    let repo = wait_ready(&api, "app", "False", "RefNotFound").await;
    let cond = ready(&repo).unwrap();
    assert_eq!(cond.reason, "RefNotFound", "{cond:?}");
    assert!(cond.message.contains("release-9"), "{}", cond.message);
}

#[tokio::test]
async fn credentials_in_url_and_plain_http_are_refused_without_dialling() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "src-url").await;
    let controller = GantryController::start(&ns.name);
    let api: Api<GitRepository> = Api::namespaced(client.clone(), &ns.name);
    // These hosts are never contacted: the URL policy refuses them first.
    let cases = [
        (
            "in-url",
            "https://bob:hunter2@git.example.com/team/app.git",
            "credentials in the URL are refused",
        ),
        (
            "plain",
            "http://git.example.com/team/app.git",
            "plain http:// is only allowed for loopback",
        ),
    ];
    for (name, url, _) in &cases {
        api.create(
            &PostParams::default(),
            &repo_object(name, url, None, "main"),
        )
        .await
        .unwrap();
    }
    for (name, _, expected) in &cases {
        let repo = wait_ready(&api, name, "False", name).await;
        let cond = ready(&repo).unwrap();
        assert_eq!(cond.reason, "URLRefused");
        assert!(cond.message.contains(expected), "{}", cond.message);
        assert!(
            !serde_json::to_string(&repo.status)
                .unwrap()
                .contains("hunter2")
        );
    }
    assert!(
        !controller.log().contains("hunter2"),
        "credential from the URL leaked into the log"
    );
}

#[tokio::test]
async fn symlink_leaving_the_repository_is_refused() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "src-link").await;
    let controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let outside = tempfile::tempdir().unwrap();
    let secret_file = outside.path().join("secret.yaml");
    std::fs::write(
        &secret_file,
        "kind: Secret\ndata: {token: TOP-SECRET-CONTENT}\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("deploy")).unwrap();
    std::fs::write(dir.path().join("deploy/ok.yaml"), "kind: ConfigMap\n").unwrap();
    std::os::unix::fs::symlink(&secret_file, dir.path().join("deploy/leak.yaml")).unwrap();
    std::os::unix::fs::symlink("../../../../../../", dir.path().join("deploy/up")).unwrap();
    server.create_repo_from_dir("linked", dir.path());

    let api: Api<GitRepository> = Api::namespaced(client.clone(), &ns.name);
    api.create(
        &PostParams::default(),
        &repo_object("linked", &server.file_url("linked"), None, "main"),
    )
    .await
    .unwrap();
    let repo = wait_ready(&api, "linked", "False", "the symlink refusal").await;
    let cond = ready(&repo).unwrap();
    assert_eq!(cond.reason, "UnsafeContent", "{cond:?}");
    assert!(
        cond.message.contains("points outside the repository"),
        "{}",
        cond.message
    );
    assert!(repo.status.unwrap().artifact.is_none());
    // The target's content appears nowhere: not in status, not in any artifact file.
    for f in controller.data_files() {
        if f.is_file() && !f.components().any(|c| c.as_os_str() == "git") {
            let content = std::fs::read_to_string(&f).unwrap_or_default();
            assert!(
                !content.contains("TOP-SECRET-CONTENT"),
                "{} leaks the target",
                f.display()
            );
        }
    }
}

async fn ssh_secret(
    client: &kube::Client,
    ns: &str,
    name: &str,
    identity: &str,
    known_hosts: Option<&str>,
) {
    let mut data = json!({ "identity": identity });
    if let Some(k) = known_hosts {
        data["known_hosts"] = json!(k);
    }
    let secret: Secret =
        serde_json::from_value(json!({ "metadata": { "name": name }, "stringData": data }))
            .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply("tests").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn ssh_with_known_hosts_fetches_and_refuses_unknown_or_changed_host_keys() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "src-ssh").await;
    let controller = GantryController::start(&ns.name);
    let git_server = GitServer::start();
    let head = git_server.create_repo("app", &[("deploy/cm.yaml", "kind: ConfigMap\n")]);
    let ssh = crate::support::ssh::SshServer::start();
    let url = ssh.url(&git_server.bare_path("app"));
    let api: Api<GitRepository> = Api::namespaced(client.clone(), &ns.name);

    // The right key and known_hosts: fetched.
    ssh_secret(
        &client,
        &ns.name,
        "ok",
        &ssh.client_key,
        Some(&ssh.known_hosts),
    )
    .await;
    api.create(
        &PostParams::default(),
        &repo_object("ok", &url, Some("ok"), "main"),
    )
    .await
    .unwrap();
    let repo = wait_ready(&api, "ok", "True", "an artifact over SSH").await;
    assert_eq!(
        repo.status.unwrap().artifact.unwrap().revision,
        format!("main@sha1:{head}")
    );

    // No known_hosts: refused, nothing trusted on first use.
    ssh_secret(&client, &ns.name, "no-kh", &ssh.client_key, None).await;
    api.create(
        &PostParams::default(),
        &repo_object("no-kh", &url, Some("no-kh"), "main"),
    )
    .await
    .unwrap();
    let repo = wait_ready(&api, "no-kh", "False", "the missing known_hosts refusal").await;
    assert!(
        ready(&repo)
            .unwrap()
            .message
            .contains("known_hosts is mandatory"),
        "{:?}",
        ready(&repo)
    );

    // A changed host key: refused.
    ssh_secret(
        &client,
        &ns.name,
        "changed",
        &ssh.client_key,
        Some(&ssh.wrong_known_hosts),
    )
    .await;
    api.create(
        &PostParams::default(),
        &repo_object("changed", &url, Some("changed"), "main"),
    )
    .await
    .unwrap();
    let repo = wait_ready(&api, "changed", "False", "the changed host key refusal").await;
    let cond = ready(&repo).unwrap();
    assert_eq!(cond.reason, "HostKeyRejected", "{cond:?}");
    assert!(cond.message.contains("changed"), "{}", cond.message);

    // An unknown host: refused.
    ssh_secret(&client, &ns.name, "unknown", &ssh.client_key, Some("[127.0.0.9]:22 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")).await;
    api.create(
        &PostParams::default(),
        &repo_object("unknown", &url, Some("unknown"), "main"),
    )
    .await
    .unwrap();
    let repo = wait_ready(&api, "unknown", "False", "the unknown host refusal").await;
    assert!(
        ready(&repo).unwrap().message.contains("not in known_hosts"),
        "{:?}",
        ready(&repo)
    );

    // The private key appears nowhere.
    let key_line = ssh.client_key.lines().nth(1).unwrap().to_string();
    assert!(!controller.log().contains(&key_line));
}

/// A source is fetched when it is created, asked for (`gantry.dev/requested-at`) or at its
/// interval; not again at its own status write or another write to its metadata (each fetch
/// costs the Git server a ref advertisement and a pack negotiation).
#[tokio::test]
async fn a_source_is_fetched_once_and_again_only_when_asked_or_at_its_interval() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "src-once").await;
    let controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    server.create_repo("once", &[("a.yaml", "kind: ConfigMap\n")]);
    let api: Api<GitRepository> = Api::namespaced(client.clone(), &ns.name);
    let mut repo = repo_object("once", &server.http_url("once"), None, "main");
    repo.spec.interval = gantry::api::duration::GoDuration::new("1h");
    api.create(&PostParams::default(), &repo).await.unwrap();
    wait_ready(&api, "once", "True", "the first artifact").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // One fetch: a ref advertisement and one upload-pack request; no second fetch for
    // the status write.
    let first = server.fetch_requests();
    assert_eq!(first, 2, "one fetch for a new source");

    let label = json!({"metadata": {"labels": {"team": "a"}}});
    api.patch("once", &PatchParams::default(), &Patch::Merge(label))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        server.fetch_requests(),
        first,
        "a label is no reason to fetch"
    );

    let stamp = gantry::trigger::request_reconcile(&api, "once")
        .await
        .unwrap();
    eventually("the request handled", Duration::from_secs(30), || async {
        let r = api.get("once").await.ok()?;
        (r.status?.last_handled_request? == stamp).then_some(())
    })
    .await;
    // The commit is unchanged: the advertisement says so, and nothing more is asked.
    let asked = server.fetch_requests() - first;
    assert_eq!(asked, 1, "asked: one more ref advertisement");
    drop(controller);
}

/// A GitRepository holds no finalizer: its Git cache and artifacts go when it is deleted,
/// a source deleted while no controller ran loses them at the next start, and the
/// finalizer earlier versions put on sources is taken off (also from one in deletion).
#[tokio::test]
async fn a_deleted_source_leaves_nothing_behind_and_needs_no_finalizer() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "src-gone").await;
    let controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let api: Api<GitRepository> = Api::namespaced(client.clone(), &ns.name);
    for name in ["kept", "gone", "old", "held"] {
        server.create_repo(name, &[("a.yaml", "kind: ConfigMap\n")]);
        let mut repo = repo_object(name, &server.http_url(name), None, "main");
        if name == "old" {
            repo.metadata.finalizers = Some(vec!["gantry.dev/finalizer".into()]);
        }
        api.create(&PostParams::default(), &repo).await.unwrap();
    }
    for name in ["kept", "gone", "old", "held"] {
        wait_ready(&api, name, "True", "the first artifact").await;
    }
    let state = |data: &std::path::Path, name: &str| {
        ["git", "artifacts"]
            .iter()
            .filter(|root| data.join(root).join(&ns.name).join(name).exists())
            .count()
    };
    for name in ["kept", "gone"] {
        assert_eq!(api.get(name).await.unwrap().metadata.finalizers, None);
        assert_eq!(
            state(controller.data_dir(), name),
            2,
            "{name}: cache and artifacts"
        );
    }
    eventually(
        "the old finalizer taken off",
        Duration::from_secs(30),
        || async {
            let r = api.get("old").await.ok()?;
            r.metadata
                .finalizers
                .unwrap_or_default()
                .is_empty()
                .then_some(())
        },
    )
    .await;

    api.delete("gone", &Default::default()).await.unwrap();
    eventually(
        "the deleted source's state removed",
        Duration::from_secs(30),
        || async { (state(controller.data_dir(), "gone") == 0).then_some(()) },
    )
    .await;
    assert_eq!(
        state(controller.data_dir(), "kept"),
        2,
        "another source keeps its state"
    );

    // Deleted while no controller runs: nothing holds it, and the next start sweeps. A
    // source of an earlier version deleted meanwhile waits for the controller to let go.
    let data = controller.stop_keeping_data();
    api.delete("kept", &Default::default()).await.unwrap();
    eventually(
        "deleted without a controller",
        Duration::from_secs(30),
        || async { api.get_opt("kept").await.ok()?.is_none().then_some(()) },
    )
    .await;
    let finalizer = json!({"metadata": {"finalizers": ["gantry.dev/finalizer"]}});
    api.patch("held", &PatchParams::default(), &Patch::Merge(finalizer))
        .await
        .unwrap();
    api.delete("held", &Default::default()).await.unwrap();
    assert!(
        api.get("held")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    assert_eq!(state(data.path(), "kept"), 2);
    let controller = GantryController::start_in(&ns.name, data);
    eventually("swept at start", Duration::from_secs(30), || async {
        (state(controller.data_dir(), "kept") == 0).then_some(())
    })
    .await;
    eventually(
        "the old finalizer let go in deletion",
        Duration::from_secs(30),
        || async { api.get_opt("held").await.ok()?.is_none().then_some(()) },
    )
    .await;
    eventually("its state removed", Duration::from_secs(30), || async {
        (state(controller.data_dir(), "held") == 0).then_some(())
    })
    .await;
    assert_eq!(
        state(controller.data_dir(), "old"),
        2,
        "a live source is not swept"
    );
}
