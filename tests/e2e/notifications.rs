//! Gantry answers back. On a real forge (Gitea, built from its Go module): a push becomes a
//! sync and the commit gets `success` under `gantry/<cluster>/<namespace>/<app>`; a revision
//! the API server refuses gets `failure` naming why; a token rotated in the Secret is used
//! without a restart; a forge that is down gets every status afterwards, in order, none
//! twice. A signed webhook (the signature checked with Python's `hmac`), a Notifier in
//! another namespace that sees nothing, and addresses at the cloud metadata endpoint and in
//! the Service network that are refused with the Application unaffected. A healed drift and
//! a deletion reach the webhook; a controller killed while a report is in flight sends it
//! again after the restart under the same delivery key, and never a third time. Notifiers
//! with a missing Secret, no repository to derive, a provider answering 401, 500 with 10 MB
//! or too late each say why on their condition, and the Application never notices.

use std::collections::BTreeMap;
use std::time::Duration;

use gantry::api::{Application, Notifier};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::app::{condition, wait_synced_healthy};
use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::{GitServer, git};
use crate::support::gitea::Gitea;
use crate::support::random_suffix;
use crate::support::webhook_sink::{Answer, Recorded, WebhookSink};

fn config_map(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{value}\"\n"
    )
}

async fn secret(client: &kube::Client, ns: &str, name: &str, data: &[(&str, &str)]) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        string_data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply("tests").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap();
}

/// Waits for Notifier `name`'s Ready condition to be False with `reason`; on timeout the
/// panic shows the Notifier's last status (what it said instead).
async fn wait_notifier_reason(
    notifiers: &Api<Notifier>,
    name: &str,
    reason: &str,
    timeout: Duration,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let status = notifiers.get(name).await.ok().and_then(|n| n.status);
        let ready = status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
        if let Some(ready) = ready.filter(|c| c.reason == reason && c.status == "False") {
            return ready.clone();
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "Notifier {name}: no Ready=False/{reason} after {timeout:?}; last status: {status:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A GitRepository and an Application of `url`, both labelled for `shard`.
async fn source_and_app(client: &kube::Client, ns: &str, shard: &str, name: &str, url: &str) {
    let labels = json!({"gantry.dev/shard": shard});
    let repos: Api<gantry::api::GitRepository> = Api::namespaced(client.clone(), ns);
    repos
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
                "metadata": {"name": name, "labels": labels},
                "spec": {"url": url, "interval": "1s", "ref": {"branch": "main"}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let apps: Api<Application> = Api::namespaced(client.clone(), ns);
    apps.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
            "metadata": {"name": name, "labels": labels},
            "spec": {"sourceRef": {"kind": "GitRepository", "name": name}, "path": "app",
                     "interval": "10m", "timeout": "1m"}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
}

async fn notifier(
    client: &kube::Client,
    ns: &str,
    shard: &str,
    name: &str,
    spec: serde_json::Value,
) {
    let api: Api<Notifier> = Api::namespaced(client.clone(), ns);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "Notifier",
            "metadata": {"name": name, "labels": {"gantry.dev/shard": shard}},
            "spec": spec
        }))
        .unwrap(),
    )
    .await
    .unwrap();
}

/// The commit-status context of Application `web`: `gantry/<cluster>/<namespace>/web`, the
/// cluster as its status names it (the API server's host:port).
async fn context_of(client: &kube::Client, ns: &str) -> String {
    let apps: Api<Application> = Api::namespaced(client.clone(), ns);
    let cluster = eventually("status.cluster", Duration::from_secs(60), || async {
        apps.get("web").await.ok()?.status?.cluster
    })
    .await;
    format!("gantry/{cluster}/{ns}/web")
}

/// The states Gitea holds for `commit` under `context`, oldest first.
fn states(forge: &Gitea, repo: &str, commit: &str, context: &str) -> Vec<(String, String)> {
    forge
        .statuses(repo, commit)
        .into_iter()
        .filter(|(c, _, _)| c == context)
        .map(|(_, s, d)| (s, d))
        .collect()
}

async fn wait_state(forge: &Gitea, repo: &str, commit: &str, context: &str, state: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some((_, d)) = states(forge, repo, commit, context)
            .last()
            .filter(|(s, _)| s == state)
        {
            return d.clone();
        }
        if std::time::Instant::now() > deadline {
            let client = client().await;
            let notifiers: Api<Notifier> = Api::all(client);
            let list = notifiers.list(&Default::default()).await.unwrap();
            let status: Vec<_> = list
                .items
                .iter()
                .filter(|n| context.contains(n.metadata.namespace.as_deref().unwrap_or("?")))
                .map(|n| serde_json::to_string(&n.status).unwrap())
                .collect();
            panic!(
                "no {state} on {commit} under {context}: the forge has {:?}; Notifier status {status:?}",
                forge.statuses(repo, commit)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn commits_on_gitea_show_success_and_failure_and_a_rotated_token_is_used() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "notify-gitea").await;
    let shard = format!("notify-{}", random_suffix());
    let _controller = GantryController::start_sharded(&shard, &[]);
    let mut forge = Gitea::start();
    let c1 = forge.create_repo("app", &[("app/cm.yaml", &config_map("web", "one"))]);
    secret(&client, &ns.name, "forge", &[("token", &forge.token)]).await;
    notifier(
        &client,
        &ns.name,
        &shard,
        "commits",
        json!({"type": "gitea", "secretRef": {"name": "forge"}}),
    )
    .await;
    source_and_app(&client, &ns.name, &shard, "web", &forge.clone_url("app")).await;
    let context = context_of(&client, &ns.name).await;

    let description = wait_state(&forge, "app", &c1, &context, "success").await;
    assert!(
        description.contains("deployed and healthy"),
        "{description}"
    );
    let seen = states(&forge, "app", &c1, &context);
    assert_eq!(
        seen.iter().filter(|(s, _)| s == "success").count(),
        1,
        "{seen:?}"
    );

    // A revision the API server refuses: failure, saying why, on that commit.
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_A_Valid_Name\ndata: {}\n";
    let c2 = forge.push("app", &[("app/bad.yaml", bad)], "a bad name");
    let description = wait_state(&forge, "app", &c2, &context, "failure").await;
    assert!(description.contains("sync failed"), "{description}");
    assert!(description.contains("Not_A_Valid_Name"), "{description}");

    // A rotated token: the old one is deleted on the forge, the Secret holds a new one.
    let new = forge.create_token("rotated");
    secret(&client, &ns.name, "forge", &[("token", &new)]).await;
    forge.delete_token("gantry-tests");
    let old = std::mem::replace(&mut forge.token, new.clone());
    let c3 = {
        let work = tempfile::tempdir().unwrap();
        git(work.path(), &["clone", "-q", &forge.clone_url("app"), "."]);
        git(work.path(), &["rm", "-q", "app/bad.yaml"]);
        std::fs::write(work.path().join("app/cm.yaml"), config_map("web", "three")).unwrap();
        git(
            work.path(),
            &[
                "-c",
                "user.name=Dev",
                "-c",
                "user.email=dev@example.test",
                "commit",
                "-q",
                "-am",
                "fix",
            ],
        );
        git(
            work.path(),
            &[
                "push",
                "-q",
                &format!(
                    "http://gantry:{new}@127.0.0.1:{}/gantry/app.git",
                    forge.port
                ),
                "HEAD:main",
            ],
        );
        git(work.path(), &["rev-parse", "HEAD"]).trim().to_string()
    };
    wait_state(&forge, "app", &c3, &context, "success").await;
    let notifiers: Api<Notifier> = Api::namespaced(client.clone(), &ns.name);
    // The cursor is written after the request: wait for it rather than race it.
    let status = eventually(
        "the cursor at the third commit",
        Duration::from_secs(30),
        || async {
            let status = notifiers.get("commits").await.ok()?.status?;
            status
                .last_delivery
                .as_ref()
                .is_some_and(|d| d.revision.ends_with(&c3))
                .then_some(status)
        },
    )
    .await;
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True", "{ready:?}");
    // The token is never in the Notifier's status.
    let text = serde_json::to_string(&notifiers.get("commits").await.unwrap()).unwrap();
    assert!(!text.contains(&new) && !text.contains(&old));
}

#[tokio::test]
async fn statuses_missed_while_the_forge_was_down_arrive_afterwards_in_order_once() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "notify-down").await;
    let shard = format!("notify-{}", random_suffix());
    let _controller = GantryController::start_sharded(&shard, &[]);
    let mut forge = Gitea::start();
    // Gantry reads the source from another Git server; Gitea mirrors the same commits (as a
    // forge that Gantry reports to but does not fetch from).
    let server = GitServer::start();
    let c1 = server.create_repo("app", &[("app/cm.yaml", &config_map("web", "0"))]);
    forge
        .api(
            "POST",
            "/user/repos",
            Some(json!({"name": "app", "private": false})),
        )
        .unwrap();
    let mirror = tempfile::tempdir().unwrap();
    git(
        mirror.path(),
        &["clone", "-q", &server.http_url("app"), "."],
    );
    let push_mirror = |forge: &Gitea| {
        git(
            mirror.path(),
            &["pull", "-q", "--ff-only", "origin", "main"],
        );
        git(
            mirror.path(),
            &[
                "push",
                "-q",
                &format!(
                    "http://gantry:{}@127.0.0.1:{}/gantry/app.git",
                    forge.token, forge.port
                ),
                "HEAD:main",
            ],
        );
    };
    push_mirror(&forge);
    secret(&client, &ns.name, "forge", &[("token", &forge.token)]).await;
    notifier(
        &client,
        &ns.name,
        &shard,
        "commits",
        json!({
            "type": "gitea", "secretRef": {"name": "forge"},
            "address": forge.url(), "repository": "gantry/app",
        }),
    )
    .await;
    source_and_app(&client, &ns.name, &shard, "web", &server.http_url("app")).await;
    let context = context_of(&client, &ns.name).await;
    wait_state(&forge, "app", &c1, &context, "success").await;

    // The forge is down while three revisions deploy.
    forge.stop();
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let ws = crate::support::app::Workspace::clone_from(&server, "app");
    let mut commits = Vec::new();
    for i in 1..=3 {
        ws.write("app/cm.yaml", &config_map("web", &i.to_string()));
        let c = ws.commit_and_push(&format!("revision {i}"));
        wait_synced_healthy(&apps, "web", &c).await;
        commits.push(c);
    }
    let notifiers: Api<Notifier> = Api::namespaced(client.clone(), &ns.name);
    let n = eventually(
        "the Notifier reports the forge down",
        Duration::from_secs(60),
        || async {
            let n = notifiers.get("commits").await.ok()?;
            let ready = n
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")?
                .clone();
            (ready.status == "False").then_some(ready)
        },
    )
    .await;
    assert_eq!(n.reason, "DeliveryFailed", "{n:?}");
    assert!(!n.message.contains(&forge.token), "{n:?}");

    // The forge comes back with the commits it missed (as a forge that is also the source
    // would have them). The Notifier is held meanwhile, so its next retry cannot reach the
    // forge in the moment between the restart and the push (a status for a commit the
    // forge does not have yet is not one it shows); its cursor waits where it stopped.
    let suspend = |on: bool| {
        let notifiers = notifiers.clone();
        async move {
            notifiers
                .patch(
                    "commits",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"suspend": on}})),
                )
                .await
                .unwrap();
        }
    };
    suspend(true).await;
    eventually(
        "the Notifier suspended",
        Duration::from_secs(30),
        || async {
            let n = notifiers.get("commits").await.ok()?;
            let ready = n
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            (ready.reason == "Suspended").then_some(())
        },
    )
    .await;
    forge.restart();
    push_mirror(&forge);
    suspend(false).await;
    for c in &commits {
        wait_state(&forge, "app", c, &context, "success").await;
    }
    // Once each, and in order: the forge's creation times do not go back, and the cursor
    // ends at the newest commit (delivery stops at the first failure and resumes there).
    let mut times = Vec::new();
    for c in &commits {
        let v = forge
            .api(
                "GET",
                &format!("/repos/gantry/app/statuses/{c}?limit=50"),
                None,
            )
            .unwrap();
        let ours: Vec<&serde_json::Value> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["context"] == context.as_str() && s["status"] == "success")
            .collect();
        assert_eq!(ours.len(), 1, "once: {ours:?}");
        times.push(ours[0]["created_at"].as_str().unwrap().to_string());
    }
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "in order: {times:?}"
    );
    let newest = commits.last().unwrap();
    eventually(
        "the cursor at the newest commit",
        Duration::from_secs(30),
        || async {
            let n = notifiers.get("commits").await.ok()?.status?;
            n.last_delivery?
                .revision
                .ends_with(newest.as_str())
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_signed_webhook_another_namespace_and_a_metadata_address() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "notify-hook").await;
    let other = TestNamespace::new(&client, "notify-other").await;
    let shard = format!("notify-{}", random_suffix());
    let _controller = GantryController::start_sharded(&shard, &[]);
    let sink = WebhookSink::start();
    let server = GitServer::start();
    let c1 = server.create_repo("app", &[("app/cm.yaml", &config_map("web", "one"))]);
    secret(
        &client,
        &ns.name,
        "hook",
        &[
            ("token", "hmac-K3y"),
            ("address", &sink.url("/gantry/secret-path")),
        ],
    )
    .await;
    notifier(
        &client,
        &ns.name,
        &shard,
        "hook",
        json!({"type": "webhook", "secretRef": {"name": "hook"}}),
    )
    .await;
    // Another namespace's Notifier to the same sink: it must see nothing of this one.
    secret(
        &client,
        &other.name,
        "hook",
        &[("token", "other"), ("address", &sink.url("/other"))],
    )
    .await;
    notifier(
        &client,
        &other.name,
        &shard,
        "hook",
        json!({"type": "webhook", "secretRef": {"name": "hook"}}),
    )
    .await;
    // A Notifier whose address is in the cluster's Service network (refused before any
    // connection is made).
    secret(
        &client,
        &ns.name,
        "service-net",
        &[("address", "http://10.96.0.10/hook")],
    )
    .await;
    notifier(
        &client,
        &ns.name,
        &shard,
        "service-net",
        json!({"type": "discord", "secretRef": {"name": "service-net"}, "insecure": true}),
    )
    .await;
    // A Notifier whose address is the cloud metadata endpoint.
    secret(
        &client,
        &ns.name,
        "metadata",
        &[("address", "http://169.254.169.254/latest/meta-data/")],
    )
    .await;
    notifier(
        &client,
        &ns.name,
        &shard,
        "metadata",
        json!({"type": "slack", "secretRef": {"name": "metadata"}, "insecure": true}),
    )
    .await;
    source_and_app(&client, &ns.name, &shard, "web", &server.http_url("app")).await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "web", &c1).await;

    let request = eventually("a success webhook", Duration::from_secs(60), || async {
        sink.requests().into_iter().find(|r| {
            r.path == "/gantry/secret-path"
                && serde_json::from_slice::<serde_json::Value>(&r.body)
                    .is_ok_and(|b| b["state"] == "success")
        })
    })
    .await;
    assert_eq!(request.method, "POST");
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["application"]["name"], "web");
    assert_eq!(body["application"]["namespace"], ns.name.as_str());
    assert_eq!(body["commit"], c1.as_str());
    assert!(request.headers.contains_key("x-gantry-delivery"));
    // The signature, checked by an independent HMAC implementation.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("body"), &request.body).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-c", "import hmac,hashlib,sys; print('sha256='+hmac.new(b'hmac-K3y', open(sys.argv[1],'rb').read(), hashlib.sha256).hexdigest())"])
        .arg(dir.path().join("body"))
        .output()
        .unwrap();
    assert_eq!(
        request.headers["x-gantry-signature"],
        String::from_utf8(out.stdout).unwrap().trim()
    );

    // The metadata address is refused, named, and the Application is unaffected.
    let notifiers: Api<Notifier> = Api::namespaced(client.clone(), &ns.name);
    let refused = wait_notifier_reason(
        &notifiers,
        "metadata",
        "AddressRefused",
        Duration::from_secs(90),
    )
    .await;
    assert!(refused.message.contains("169.254.169.254"), "{refused:?}");
    assert!(
        !refused.message.contains("meta-data"),
        "the path is not quoted: {refused:?}"
    );
    let app = apps.get("web").await.unwrap();
    assert_eq!(condition(&app, "Ready").unwrap().status, "True");
    let service_net = wait_notifier_reason(
        &notifiers,
        "service-net",
        "AddressRefused",
        Duration::from_secs(90),
    )
    .await;
    assert!(
        service_net.message.contains("10.96.0.10")
            && service_net
                .message
                .contains("--allow-private-notify-targets"),
        "{service_net:?}"
    );

    // The other namespace's Notifier saw nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        sink.requests().iter().all(|r| r.path != "/other"),
        "{:?}",
        sink.requests()
    );
    let others: Api<Notifier> = Api::namespaced(client.clone(), &other.name);
    let o = others.get("hook").await.unwrap().status.unwrap_or_default();
    assert!(o.delivered.is_empty() && o.last_delivery.is_none(), "{o:?}");
}

#[tokio::test]
async fn a_push_on_gitea_is_fetched_at_once_through_a_gitea_receiver() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "notify-hook-in").await;
    let controller = GantryController::start(&ns.name);
    let forge = Gitea::start();
    let c1 = forge.create_repo("app", &[("app/cm.yaml", &config_map("web", "one"))]);
    crate::receivers::token_secret(&client, &ns.name).await;
    // The source is polled once an hour: only the webhook can bring the push in time.
    let repos: Api<gantry::api::GitRepository> = Api::namespaced(client.clone(), &ns.name);
    repos
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
                "metadata": {"name": "web"},
                "spec": {"url": forge.clone_url("app"), "interval": "1h", "ref": {"branch": "main"}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    apps.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
            "metadata": {"name": "web"},
            "spec": {"sourceRef": {"kind": "GitRepository", "name": "web"}, "path": "app", "interval": "1h"}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    wait_synced_healthy(&apps, "web", &c1).await;
    let url = crate::receivers::receiver(
        &client,
        &ns.name,
        &controller,
        "forge",
        "gitea",
        ("GitRepository", "web"),
    )
    .await;
    // Gitea's own webhook, signed with the Receiver's token.
    forge
        .api(
            "POST",
            "/repos/gantry/app/hooks",
            Some(json!({
                "type": "gitea", "active": true, "events": ["push"],
                "config": {"url": url, "content_type": "json", "secret": crate::receivers::TOKEN}
            })),
        )
        .expect("create the Gitea webhook");
    let c2 = forge.push("app", &[("app/cm.yaml", &config_map("web", "two"))], "two");
    let started = std::time::Instant::now();
    wait_synced_healthy(&apps, "web", &c2).await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "fetched by the webhook, not the hourly poll"
    );
    let log = controller.log();
    assert!(
        !log.contains(crate::receivers::TOKEN),
        "the token is never logged"
    );
}

/// A webhook Notifier `hook` posting to `address`, with its Secret.
async fn webhook_notifier(client: &kube::Client, ns: &str, shard: &str, address: &str) {
    secret(client, ns, "hook", &[("token", "k"), ("address", address)]).await;
    notifier(
        client,
        ns,
        shard,
        "hook",
        json!({"type": "webhook", "secretRef": {"name": "hook"}}),
    )
    .await;
}

/// The webhook bodies the sink received on `path`, as (event, state, delivery key).
fn events(sink: &WebhookSink, path: &str) -> Vec<(String, String, String)> {
    sink.requests()
        .iter()
        .filter(|r| r.path == path)
        .map(|r| {
            let b: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            (
                b["event"].as_str().unwrap_or_default().to_string(),
                b["state"].as_str().unwrap_or_default().to_string(),
                r.headers
                    .get("x-gantry-delivery")
                    .cloned()
                    .unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_healed_drift_and_the_deletion_reach_the_webhook() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "notify-events").await;
    let shard = format!("notify-{}", random_suffix());
    let _controller = GantryController::start_sharded(&shard, &[]);
    let sink = WebhookSink::start();
    let server = GitServer::start();
    let c1 = server.create_repo("app", &[("app/cm.yaml", &config_map("web", "one"))]);
    webhook_notifier(&client, &ns.name, &shard, &sink.url("/events")).await;
    source_and_app(&client, &ns.name, &shard, "web", &server.http_url("app")).await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "web", &c1).await;
    eventually("deployed", Duration::from_secs(60), || async {
        events(&sink, "/events")
            .iter()
            .any(|(e, s, _)| e == "deployed" && s == "success")
            .then_some(())
    })
    .await;

    // Someone edits the ConfigMap by hand: Gantry heals it and says so.
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    cms.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"value": "by hand"}})),
    )
    .await
    .unwrap();
    eventually("drift-healed", Duration::from_secs(90), || async {
        events(&sink, "/events")
            .iter()
            .any(|(e, s, _)| e == "drift-healed" && s == "success")
            .then_some(())
    })
    .await;
    let healed = sink
        .requests()
        .into_iter()
        .find(|r| r.headers.get("x-gantry-event").map(String::as_str) == Some("drift-healed"))
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&healed.body).unwrap();
    assert!(
        body["description"].as_str().unwrap().contains("re-applied"),
        "{body}"
    );
    assert_eq!(body["commit"], serde_json::Value::Null, "no commit: {body}");

    // The Application is deleted: the webhook hears it, with what became of its objects.
    apps.delete("web", &Default::default()).await.unwrap();
    let deleted = eventually("deleted", Duration::from_secs(90), || async {
        sink.requests()
            .into_iter()
            .find(|r| r.headers.get("x-gantry-event").map(String::as_str) == Some("deleted"))
    })
    .await;
    let body: serde_json::Value = serde_json::from_slice(&deleted.body).unwrap();
    assert!(
        body["description"]
            .as_str()
            .unwrap()
            .contains("Application deleted"),
        "{body}"
    );
    // Said once, and the Notifier forgets the Application.
    let notifiers: Api<Notifier> = Api::namespaced(client.clone(), &ns.name);
    eventually("the cursor dropped", Duration::from_secs(60), || async {
        let st = notifiers.get("hook").await.ok()?.status?;
        st.delivered
            .iter()
            .all(|d| d.application != "web")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n = events(&sink, "/events")
        .iter()
        .filter(|(e, _, _)| e == "deleted")
        .count();
    assert_eq!(n, 1, "{:?}", events(&sink, "/events"));
}

#[tokio::test]
async fn a_report_in_flight_when_the_controller_is_killed_is_sent_again_once_after_restart() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "notify-kill").await;
    let shard = format!("notify-{}", random_suffix());
    let controller = GantryController::start_sharded(&shard, &[]);
    // The first `success` report is held unanswered (the provider got it, Gantry does not
    // know): the controller is killed meanwhile.
    let held = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = held.clone();
    let sink = WebhookSink::start_with(move |r: &Recorded| {
        let success = serde_json::from_slice::<serde_json::Value>(&r.body)
            .is_ok_and(|b| b["state"] == "success");
        if success && !h.swap(true, std::sync::atomic::Ordering::SeqCst) {
            Answer {
                delay: Duration::from_secs(8),
                ..Answer::ok("late")
            }
        } else {
            Answer::ok("ok")
        }
    });
    let server = GitServer::start();
    let c1 = server.create_repo("app", &[("app/cm.yaml", &config_map("web", "one"))]);
    webhook_notifier(&client, &ns.name, &shard, &sink.url("/events")).await;
    source_and_app(&client, &ns.name, &shard, "web", &server.http_url("app")).await;
    let successes = || {
        events(&sink, "/events")
            .into_iter()
            .filter(|(_, s, _)| s == "success")
            .collect::<Vec<_>>()
    };
    eventually(
        "the success report in flight",
        Duration::from_secs(90),
        || async { (!successes().is_empty()).then_some(()) },
    )
    .await;
    // SIGKILL, between the request and the cursor write.
    drop(controller);
    let notifiers: Api<Notifier> = Api::namespaced(client.clone(), &ns.name);
    let status = notifiers
        .get("hook")
        .await
        .unwrap()
        .status
        .unwrap_or_default();
    assert!(
        !status
            .delivered
            .iter()
            .any(|d| d.revision.ends_with(c1.as_str()) && d.state == "success"),
        "the cursor was not written before the kill: {status:?}"
    );
    let _controller = GantryController::start_sharded(&shard, &[]);
    eventually("the cursor at success", Duration::from_secs(90), || async {
        let st = notifiers.get("hook").await.ok()?.status?;
        st.delivered
            .iter()
            .any(|d| {
                d.application == "web" && d.revision.ends_with(c1.as_str()) && d.state == "success"
            })
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sent = successes();
    assert_eq!(
        sent.len(),
        2,
        "sent again once, never a third time: {sent:?}"
    );
    assert_eq!(
        sent[0].2, sent[1].2,
        "under the same delivery key: {sent:?}"
    );
}

#[tokio::test]
async fn bad_notifiers_say_why_on_their_condition_and_leave_the_application_alone() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "notify-bad").await;
    let shard = format!("notify-{}", random_suffix());
    let _controller = GantryController::start_sharded(&shard, &[]);
    // One provider, answering by path: 401, 500 with 10 MB, and too late.
    let huge = "x".repeat(10 << 20);
    let sink = WebhookSink::start_with(move |r: &Recorded| match r.path.as_str() {
        p if p.starts_with("/api/v1/repos/") => {
            Answer::status(401, r#"{"message": "token is required"}"#)
        }
        "/huge" => Answer::status(500, &huge),
        "/slow" => Answer {
            delay: Duration::from_secs(15),
            ..Answer::ok("late")
        },
        _ => Answer::ok("ok"),
    });
    let server = GitServer::start();
    // One path segment: no owner/name to derive a forge repository from.
    let c1 = server.create_repo("app", &[("app/cm.yaml", &config_map("web", "one"))]);
    secret(&client, &ns.name, "token", &[("token", "t0ken-value")]).await;
    secret(
        &client,
        &ns.name,
        "huge",
        &[("address", &sink.url("/huge"))],
    )
    .await;
    secret(
        &client,
        &ns.name,
        "slow",
        &[("address", &sink.url("/slow"))],
    )
    .await;
    let cases = [
        (
            "missing-secret",
            json!({"type": "webhook", "secretRef": {"name": "nope"}}),
            "SecretInvalid",
            "Secret nope not found",
        ),
        (
            "no-repository",
            json!({"type": "github", "secretRef": {"name": "token"}}),
            "RepositoryUnknown",
            "cannot derive the repository",
        ),
        (
            "unauthorized",
            json!({"type": "gitea", "secretRef": {"name": "token"},
                   "address": sink.url(""), "repository": "team/app"}),
            "DeliveryFailed",
            "answered 401",
        ),
        (
            "huge",
            json!({"type": "slack", "secretRef": {"name": "huge"}}),
            "DeliveryFailed",
            "answered 500",
        ),
        (
            "slow",
            json!({"type": "googlechat", "secretRef": {"name": "slow"}}),
            "DeliveryFailed",
            "127.0.0.1",
        ),
    ];
    for (name, spec, _, _) in &cases {
        notifier(&client, &ns.name, &shard, name, spec.clone()).await;
    }
    source_and_app(&client, &ns.name, &shard, "web", &server.http_url("app")).await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "web", &c1).await;

    let notifiers: Api<Notifier> = Api::namespaced(client.clone(), &ns.name);
    for (name, _, reason, needle) in cases {
        let ready = wait_notifier_reason(&notifiers, name, reason, Duration::from_secs(90)).await;
        assert!(ready.message.contains(needle), "{name}: {ready:?}");
        assert!(
            !ready.message.contains("t0ken-value") && ready.message.len() < 600,
            "{name}: no token, no 10 MB answer: {} bytes",
            ready.message.len()
        );
        let status = notifiers.get(name).await.unwrap().status.unwrap();
        if reason == "DeliveryFailed" {
            let failure = status.last_failure.expect("lastFailure");
            assert!(failure.revision.ends_with(c1.as_str()), "{failure:?}");
        }
    }
    // A provider that keeps refusing is retried with backoff (2 s doubling), not at every
    // status write of the Notifier's own rounds: over 10 s, at most 4 more attempts.
    let attempts = || {
        sink.requests()
            .iter()
            .filter(|r| r.path.contains("/repos/team/app/statuses"))
            .count()
    };
    let before = attempts();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let more = attempts() - before;
    assert!(
        more <= 4,
        "{more} attempts in 10 s: the refusing forge is not backed off"
    );

    // The Application never noticed.
    let app = apps.get("web").await.unwrap();
    assert_eq!(condition(&app, "Ready").unwrap().status, "True");
    assert_eq!(condition(&app, "Healthy").unwrap().status, "True");
}
