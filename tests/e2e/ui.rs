//! `gantry ui` in a real browser (Debian's Chromium, driven through chromedriver), as a
//! developer who may read one namespace: the fleet page lists that namespace's
//! Applications worst first and nothing of another namespace (not even a count); a message
//! holding a `<script>` is shown as text and never runs; a status change reaches the open
//! page without a reload; the Application page shows its conditions and history; the
//! other namespace's page is "not found"; the server answers only to its own host name
//! (DNS rebinding) and sends a Content-Security-Policy without inline script. Screenshots
//! of the pages are written to `target/ui-screenshots/`. An action (sync) goes through its
//! confirmation page and is made with the viewer's rights; a forged POST changes nothing.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use gantry::api::Application;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use thirtyfour::prelude::*;

use crate::support::cluster::{TestNamespace, client, install_crds, service_account_kubeconfig};
use crate::support::eventually;
use crate::support::process::{ChildGuard, free_port};

const HOSTILE: &str = "<script>document.title='pwned'</script>apply failed";

/// An Application with the status a controller would have written (no controller runs in
/// these tests: every controller of the suite is scoped to its own namespace or shard).
async fn app_with_status(client: &kube::Client, ns: &str, name: &str, conditions: Value) {
    let api: Api<Application> = Api::namespaced(client.clone(), ns);
    let app = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": name},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": "repo"}, "path": "deploy"}
    }))
    .unwrap();
    api.create(&PostParams::default(), &app).await.unwrap();
    set_status(&api, name, conditions).await;
}

async fn set_status(api: &Api<Application>, name: &str, conditions: Value) {
    let status = json!({"status": {
        "cluster": "https://127.0.0.1:6443",
        "lastAppliedRevision": "main@sha1:0123456789abcdef0123456789abcdef01234567",
        "conditions": conditions,
        "history": [{"revision": "main@sha1:0123456789abcdef0123456789abcdef01234567",
                     "startedAt": "2026-12-01T10:00:00Z", "finishedAt": "2026-12-01T10:00:05Z",
                     "result": "Succeeded", "message": "1 created"}],
        "inventory": [{"group": "", "version": "v1", "kind": "ConfigMap", "namespace": "x", "name": "settings"}]
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

fn condition(type_: &str, status: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": "Test", "message": message,
           "lastTransitionTime": "2026-12-01T10:00:00Z"})
}

/// A ServiceAccount of `ns` that may read (and patch) Applications and read GitRepositories
/// there, and nothing else.
async fn viewer(client: &kube::Client, ns: &str) {
    let apply = |kind: &str, obj: Value| {
        let (client, kind) = (client.clone(), kind.to_string());
        async move {
            let data: kube::api::DynamicObject = serde_json::from_value(obj).unwrap();
            let ar = match kind.as_str() {
                "ServiceAccount" => {
                    kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::ServiceAccount>(&())
                }
                "Role" => kube::api::ApiResource::erase::<k8s_openapi::api::rbac::v1::Role>(&()),
                _ => kube::api::ApiResource::erase::<k8s_openapi::api::rbac::v1::RoleBinding>(&()),
            };
            let api: Api<kube::api::DynamicObject> =
                Api::namespaced_with(client, data.metadata.namespace.as_deref().unwrap(), &ar);
            api.create(&PostParams::default(), &data).await.unwrap();
        }
    };
    apply(
        "ServiceAccount",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "viewer", "namespace": ns}}),
    )
    .await;
    apply(
        "Role",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "gantry-viewer", "namespace": ns},
        "rules": [{"apiGroups": ["gantry.dev"], "resources": ["applications"],
                   "verbs": ["get", "list", "watch", "patch"]},
                  {"apiGroups": ["gantry.dev"], "resources": ["gitrepositories"],
                   "verbs": ["get", "list", "watch"]}]}),
    )
    .await;
    apply("RoleBinding", json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "gantry-viewer", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "gantry-viewer"},
        "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": ns}]})).await;
}

/// `gantry ui` as the viewer; the guard and the URL it prints.
fn start_ui(kubeconfig: &std::path::Path, namespaces: &[&str]) -> (ChildGuard, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gantry"));
    cmd.args(["ui", "--port", "0"]);
    for ns in namespaces {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd
        .env("KUBECONFIG", kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    (ChildGuard::new("gantry ui", child), url)
}

/// chromedriver on a free port, and a headless Chromium session through it.
async fn browser() -> (ChildGuard, WebDriver, tempfile::TempDir) {
    let port = free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (make deps installs chromium-driver)");
    let guard = ChildGuard::new("chromedriver", driver);
    let profile = tempfile::tempdir().unwrap();
    let mut caps = DesiredCapabilities::chrome();
    caps.set_binary("/usr/bin/chromium").unwrap();
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
    ] {
        caps.add_arg(arg).unwrap();
    }
    caps.add_arg(&format!("--user-data-dir={}", profile.path().display()))
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let session = eventually("chromedriver", Duration::from_secs(20), || {
        let (url, caps) = (url.clone(), caps.clone());
        async move { WebDriver::new(url, caps).await.ok() }
    })
    .await;
    (guard, session, profile)
}

fn screenshot_path(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The text of the page at `url`'s `main`.
async fn main_text_at(driver: &WebDriver, url: String) -> String {
    driver.goto(url).await.unwrap();
    let main = driver.find(By::Css("main")).await.unwrap();
    main.text().await.unwrap()
}

/// (name, state) of each row of the fleet table, in page order.
async fn rows(driver: &WebDriver) -> Vec<(String, String)> {
    let mut out = vec![];
    for tr in driver
        .find_all(By::Css("tr[data-state]"))
        .await
        .unwrap_or_default()
    {
        let (Ok(Some(state)), Ok(link)) =
            (tr.attr("data-state").await, tr.find(By::Css("a")).await)
        else {
            continue;
        };
        out.push((link.text().await.unwrap_or_default(), state));
    }
    out
}

#[tokio::test]
async fn a_viewer_sees_their_namespace_live_and_nothing_else_in_a_real_browser() {
    let client = client().await;
    install_crds(&client).await;
    let mine = TestNamespace::new(&client, "ui-mine").await;
    let other = TestNamespace::new(&client, "ui-other").await;
    app_with_status(
        &client,
        &mine.name,
        "web",
        json!([condition("Ready", "False", HOSTILE)]),
    )
    .await;
    let healthy = json!([
        condition("Ready", "True", "applied revision main@sha1:0123456"),
        condition("Healthy", "True", "all workloads are healthy")
    ]);
    app_with_status(&client, &mine.name, "api", healthy.clone()).await;
    app_with_status(&client, &other.name, "secret-plans", healthy.clone()).await;
    viewer(&client, &mine.name).await;
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = work.path().join("viewer.kubeconfig");
    service_account_kubeconfig(&mine.name, "viewer", &kubeconfig);

    let (_ui, url) = start_ui(&kubeconfig, &[&mine.name]);
    let (_chromedriver, driver, _profile) = browser().await;
    driver.goto(&url).await.unwrap();
    let seen = eventually("both Applications listed", Duration::from_secs(20), || {
        let driver = &driver;
        async move {
            let r = rows(driver).await;
            (r.len() == 2).then_some(r)
        }
    })
    .await;
    // Worst first; nothing of the other namespace, not even in the counts.
    assert_eq!(
        seen,
        vec![
            ("web".to_string(), "failed".to_string()),
            ("api".to_string(), "synced".to_string())
        ]
    );
    let body = driver.source().await.unwrap();
    assert!(!body.contains("secret-plans") && !body.contains(&other.name));
    assert!(body.contains("2</strong> in all"), "{body}");
    // The hostile message is text on the page, and never ran.
    assert_eq!(driver.title().await.unwrap(), "Applications · Gantry");
    let why = driver
        .find(By::Css("tr[data-state=failed] td.why"))
        .await
        .unwrap();
    assert_eq!(why.text().await.unwrap(), HOSTILE);
    driver
        .screenshot(&screenshot_path("fleet.png"))
        .await
        .unwrap();

    // A change reaches the open page without a reload.
    driver
        .execute("window.gantryTestMarker = 42;", vec![])
        .await
        .unwrap();
    let api: Api<Application> = Api::namespaced(client.clone(), &mine.name);
    set_status(
        &api,
        "api",
        json!([condition(
            "Ready",
            "False",
            "Deployment api: ImagePullBackOff"
        )]),
    )
    .await;
    eventually("the page shows api failed", Duration::from_secs(20), || {
        let driver = &driver;
        async move {
            let r = rows(driver).await;
            r.iter()
                .any(|(n, s)| n == "api" && s == "failed")
                .then_some(())
        }
    })
    .await;
    let marker = driver
        .execute("return window.gantryTestMarker;", vec![])
        .await
        .unwrap();
    assert_eq!(marker.json(), &json!(42), "the page was not reloaded");
    driver
        .screenshot(&screenshot_path("fleet-live.png"))
        .await
        .unwrap();

    // The Application page: conditions and history; the other namespace's is not found.
    let text = main_text_at(&driver, format!("{url}apps/{}/web", mine.name)).await;
    assert!(
        text.contains("Conditions") && text.contains(HOSTILE),
        "{text}"
    );
    assert!(
        text.contains("main@0123456") && text.contains("ConfigMap x/settings"),
        "{text}"
    );
    assert_eq!(
        driver.title().await.unwrap(),
        format!("{}/web · Gantry", mine.name)
    );
    driver
        .screenshot(&screenshot_path("application.png"))
        .await
        .unwrap();
    let text = main_text_at(&driver, format!("{url}apps/{}/secret-plans", other.name)).await;
    assert!(text.contains("No Application"), "{text}");

    // An action: the Application page's "sync", its confirmation, the viewer's own rights
    // (it may patch the Application, not the GitRepository, which the answer says).
    driver
        .goto(format!("{url}apps/{}/web", mine.name))
        .await
        .unwrap();
    driver
        .find(By::LinkText("sync"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let question = driver.find(By::Css("main p")).await.unwrap();
    assert!(question.text().await.unwrap().contains("sync it now?"));
    driver
        .screenshot(&screenshot_path("confirm.png"))
        .await
        .unwrap();
    driver
        .find(By::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let answer = eventually("the action's answer", Duration::from_secs(10), || {
        let driver = &driver;
        async move {
            let main = driver.find(By::Css("main")).await.ok()?.text().await.ok()?;
            (!main.contains("sync it now?")).then_some(main)
        }
    })
    .await;
    assert!(
        answer.contains(&format!("sync of {}/web requested", mine.name))
            && answer.contains("forbidden"),
        "{answer}"
    );
    let requested = api.get("web").await.unwrap();
    let stamp = requested
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(gantry::api::annotations::REQUEST_ANNOTATION))
        .cloned()
        .expect("the sync request");
    driver.quit().await.unwrap();

    // Headers: a policy without inline script; another Host (DNS rebinding) is refused.
    let http = reqwest::Client::new();
    let res = http.get(&url).send().await.unwrap();
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let rebound = http
        .get(&url)
        .header("Host", "attacker.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 421);

    // A cross-site POST (no cookie, or another Origin, or no token) changes nothing.
    let action = format!("{url}apps/{}/web/actions/suspend", mine.name);
    let forged = http
        .post(&action)
        .form(&[("csrf", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let other_origin = http
        .post(&action)
        .header("Origin", "http://attacker.example")
        .form(&[("csrf", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(other_origin.status(), 403);
    let after = api.get("web").await.unwrap();
    assert!(!after.spec.suspend, "not suspended by a forged request");
    let still = after
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(gantry::api::annotations::REQUEST_ANNOTATION))
        .cloned();
    assert_eq!(still, Some(stamp));
}

#[tokio::test]
async fn a_namespace_the_viewer_may_not_read_says_forbidden_and_shows_nothing() {
    let client = client().await;
    install_crds(&client).await;
    let mine = TestNamespace::new(&client, "ui-own").await;
    let other = TestNamespace::new(&client, "ui-closed").await;
    let healthy = json!([
        condition("Ready", "True", ""),
        condition("Healthy", "True", "")
    ]);
    app_with_status(&client, &other.name, "hidden", healthy).await;
    viewer(&client, &mine.name).await;
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = work.path().join("viewer.kubeconfig");
    service_account_kubeconfig(&mine.name, "viewer", &kubeconfig);
    let (_ui, url) = start_ui(&kubeconfig, &[&other.name]);
    let body = eventually(
        "the forbidden watch reported",
        Duration::from_secs(20),
        || {
            let url = url.clone();
            async move {
                let body = reqwest::get(&url).await.ok()?.text().await.ok()?;
                body.contains("forbidden").then_some(body)
            }
        },
    )
    .await;
    assert!(!body.contains("hidden"), "{body}");
    assert!(body.contains("0</strong> in all"), "{body}");
}
