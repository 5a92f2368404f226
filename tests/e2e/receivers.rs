//! Webhook receivers against the controller's server on 127.0.0.1: real registry
//! notifications, GitHub push signatures, refusals (401/404/413/400), a slow client, and a
//! flood that is coalesced (TESTING.md rows 14–16).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use gantry::api::{GitRepository, ImagePolicy, Receiver};
use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;
use sha2::Sha256;

use crate::image_policy::wait_latest;
use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::{GitServer, git};
use crate::support::registry::Registry;

pub(crate) const TOKEN: &str = "a-long-random-webhook-token-0123";

pub(crate) async fn token_secret(client: &kube::Client, ns: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "hook-token"},
                "stringData": {"token": TOKEN}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
}

/// Creates a Receiver and returns its URL once it is Ready.
pub(crate) async fn receiver(
    client: &kube::Client,
    ns: &str,
    controller: &GantryController,
    name: &str,
    kind: &str,
    target: (&str, &str),
) -> String {
    let api: Api<Receiver> = Api::namespaced(client.clone(), ns);
    let obj: Receiver = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Receiver",
        "metadata": {"name": name},
        "spec": {"type": kind, "secretRef": {"name": "hook-token"},
                 "resources": [{"kind": target.0, "name": target.1}]}
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    let path = eventually(
        &format!("Receiver {name} Ready"),
        Duration::from_secs(30),
        || async {
            let r = api.get(name).await.ok()?;
            let s = r.status?;
            let ready = s.conditions.iter().find(|c| c.type_ == "Ready")?;
            (ready.status == "True").then_some(s.webhook_path?)
        },
    )
    .await;
    assert!(path.starts_with("/hook/") && path.len() == 6 + 64, "{path}");
    assert!(!path.contains(TOKEN));
    format!("http://127.0.0.1:{}{path}", controller.receiver_port)
}

fn requested_at<K: kube::Resource>(obj: &K) -> Option<String> {
    obj.meta()
        .annotations
        .as_ref()?
        .get("gantry.dev/requested-at")
        .cloned()
}

/// POSTs `len` bytes with a raw socket (the server may answer before the body is sent,
/// which an HTTP client library reports as a broken pipe) and returns the status code.
fn raw_post(port: u16, path: &str, len: usize, with_length: bool) -> u16 {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = if with_length {
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {len}\r\n\r\n"
        )
    } else {
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
    };
    stream.write_all(head.as_bytes()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let feeder = std::thread::spawn(move || {
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0;
        while sent < len {
            let r = if with_length {
                writer.write_all(&chunk)
            } else {
                writer
                    .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .and_then(|_| writer.write_all(&chunk))
                    .and_then(|_| writer.write_all(b"\r\n"))
            };
            if r.is_err() {
                return; // the server stopped reading: expected
            }
            sent += chunk.len();
        }
    });
    let mut response = [0u8; 64];
    let n = stream.read(&mut response).unwrap();
    let _ = feeder.join();
    let text = String::from_utf8_lossy(&response[..n]).into_owned();
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

fn github_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(TOKEN.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn registry_notifications_trigger_the_scan_and_bad_requests_are_refused() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "rcv-reg").await;
    token_secret(&client, &ns.name).await;
    let mut controller = GantryController::start(&ns.name);
    let url = receiver(
        &client,
        &ns.name,
        &controller,
        "registry",
        "registry",
        ("ImagePolicy", "web"),
    )
    .await;

    // A real registry, sending its notifications to the Receiver.
    let registry = Registry::start_with_notifications(&url, TOKEN);
    registry.push_image("team/web", "1.0.0");
    let policies: Api<ImagePolicy> = Api::namespaced(client.clone(), &ns.name);
    let image = format!("{}/team/web", registry.host());
    let policy: ImagePolicy = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "ImagePolicy",
        "metadata": {"name": "web"},
        "spec": {"image": image, "interval": "1h", "policy": {"semver": {"range": "^1"}}}
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    wait_latest(&policies, "web", &format!("{image}:1.0.0")).await;

    // The interval is an hour: only the notification can make this fast.
    let pushed = Instant::now();
    registry.push_image("team/web", "1.1.0");
    wait_latest(&policies, "web", &format!("{image}:1.1.0")).await;
    assert!(pushed.elapsed() < Duration::from_secs(20));

    let http = reqwest::Client::new();
    let before = requested_at(&policies.get("web").await.unwrap());
    let envelope = json!({"events": [{"action": "push", "target": {"repository": "team/web", "tag": "9.9.9"}}]}).to_string();
    let wrong = http
        .post(&url)
        .bearer_auth("not-the-token-at-all-0000000000")
        .body(envelope.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let unknown = http
        .post(format!(
            "http://127.0.0.1:{}/hook/{}",
            controller.receiver_port,
            "0".repeat(64)
        ))
        .bearer_auth(TOKEN)
        .body(envelope.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    // Oversized: announced by Content-Length (refused before the body is read), and
    // streamed without a length (refused when the cap is crossed).
    let path = url.trim_start_matches(&format!("http://127.0.0.1:{}", controller.receiver_port));
    assert_eq!(
        raw_post(controller.receiver_port, path, 2 * 1024 * 1024, true),
        413
    );
    assert_eq!(
        raw_post(controller.receiver_port, path, 2 * 1024 * 1024, false),
        413
    );
    let malformed = http
        .post(&url)
        .bearer_auth(TOKEN)
        .body("{\"events\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        requested_at(&policies.get("web").await.unwrap()),
        before,
        "a refused webhook triggers nothing"
    );
    let metrics = http
        .get(format!(
            "http://127.0.0.1:{}/metrics",
            controller.metrics_port
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"gantry_webhooks_total{code="401",type="registry"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gantry_webhooks_total{code="404",type="unknown"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("gantry_registry_scan_seconds_count"),
        "{metrics}"
    );
    controller.process.assert_running();
    assert!(
        !controller.log().contains(TOKEN),
        "the token leaked into the log"
    );
}

#[tokio::test]
async fn a_signed_github_push_triggers_the_source_and_sha1_is_refused() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "rcv-gh").await;
    token_secret(&client, &ns.name).await;
    let mut controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    let first = server.create_repo("app", &[("cm.yaml", "kind: ConfigMap\n")]);
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), &ns.name);
    let repo: GitRepository = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
        "metadata": {"name": "app"},
        "spec": {"url": server.http_url("app"), "interval": "1h", "ref": {"branch": "main"}}
    }))
    .unwrap();
    repos.create(&PostParams::default(), &repo).await.unwrap();
    let revision = |commit: String| format!("main@sha1:{commit}");
    let wait_revision = |want: String| {
        let repos = repos.clone();
        async move {
            eventually(
                &format!("artifact {want}"),
                Duration::from_secs(30),
                || async {
                    let r = repos.get("app").await.ok()?;
                    (r.status?.artifact?.revision == want).then_some(())
                },
            )
            .await
        }
    };
    wait_revision(revision(first)).await;
    let url = receiver(
        &client,
        &ns.name,
        &controller,
        "github",
        "github",
        ("GitRepository", "app"),
    )
    .await;

    // A new commit; the interval is an hour.
    let ws = tempfile::tempdir().unwrap();
    git(
        ws.path(),
        &["clone", "--quiet", &server.file_url("app"), "."],
    );
    std::fs::write(ws.path().join("more.yaml"), "kind: ConfigMap\n").unwrap();
    git(ws.path(), &["add", "-A"]);
    git(ws.path(), &["commit", "--quiet", "-m", "more"]);
    git(ws.path(), &["push", "--quiet", "origin", "HEAD:main"]);
    let second = git(ws.path(), &["rev-parse", "HEAD"]).trim().to_string();

    let http = reqwest::Client::new();
    let body = json!({"ref": "refs/heads/main", "after": second}).to_string();
    // SHA-1 only: refused, nothing fetched.
    let sha1 = http
        .post(&url)
        .header("X-GitHub-Event", "push")
        .header(
            "X-Hub-Signature",
            "sha1=0123456789abcdef0123456789abcdef01234567",
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(sha1.status(), 401);
    assert!(sha1.text().await.unwrap().contains("SHA-1"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(requested_at(&repos.get("app").await.unwrap()).is_none());

    let ok = http
        .post(&url)
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", github_signature(body.as_bytes()))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 202);
    wait_revision(revision(second)).await;

    // A slow client that never finishes its headers is cut off.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", controller.receiver_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(b"POST /hook/x HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(19),
        "the server must drop a client that stalls in its headers"
    );
    controller.process.assert_running();
}

#[tokio::test]
async fn a_flood_of_valid_webhooks_asks_each_resource_at_most_once_per_window() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "rcv-flood").await;
    token_secret(&client, &ns.name).await;
    let mut controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    server.create_repo("app", &[("cm.yaml", "kind: ConfigMap\n")]);
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), &ns.name);
    let repo: GitRepository = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
        "metadata": {"name": "app"},
        "spec": {"url": server.file_url("app"), "interval": "1h"}
    }))
    .unwrap();
    repos.create(&PostParams::default(), &repo).await.unwrap();
    let url = receiver(
        &client,
        &ns.name,
        &controller,
        "generic",
        "generic-hmac",
        ("GitRepository", "app"),
    )
    .await;

    // Record every distinct request stamp the dispatcher writes during the flood.
    let stamps = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let watcher = {
        let (repos, stamps) = (repos.clone(), stamps.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(r) = repos.get("app").await
                    && let Some(s) = requested_at(&r)
                {
                    stamps.lock().unwrap().insert(s);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let body = json!({"ref": "main"}).to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(TOKEN.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let sends = (0..400).map(|_| {
        http.post(&url)
            .header("X-Signature", format!("sha256={signature}"))
            .body(body.clone())
            .send()
    });
    // One sender keeps at most 48 connections open, as the server allows 64 per client.
    use futures::StreamExt;
    let answers: Vec<_> = futures::stream::iter(sends)
        .buffer_unordered(48)
        .collect()
        .await;
    for chunk in answers {
        *statuses
            .entry(chunk.unwrap().status().as_u16())
            .or_default() += 1;
    }
    let flood = started.elapsed();
    tokio::time::sleep(Duration::from_secs(4)).await;
    watcher.abort();
    let n = stamps.lock().unwrap().len();
    // A leading request, then at most one per 500 ms window, plus the trailing one.
    let allowed = (flood.as_secs_f64() * 2.0).ceil() as usize + 2;
    assert!(
        (1..=allowed).contains(&n),
        "{n} reconcile requests for a flood of {flood:?} (allowed {allowed}); statuses {statuses:?}"
    );
    assert!(
        statuses.keys().all(|s| *s == 202 || *s == 503),
        "only accepted or busy: {statuses:?}"
    );
    assert!(statuses.get(&202).copied().unwrap_or(0) > 0);
    controller.process.assert_running();
}
