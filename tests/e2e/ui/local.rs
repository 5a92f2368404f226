//! `gantry ui` in a real browser (Debian's Chromium, driven through chromedriver), as a
//! developer who may read one namespace: the fleet page lists that namespace's
//! Applications worst first and nothing of another namespace (not even a count); a message
//! holding a `<script>` is shown as text and never runs; a status change reaches the open
//! page without a reload; the Application page shows its conditions and history; the
//! other namespace's page is "not found"; the server answers only to its own host name
//! (DNS rebinding) and sends a Content-Security-Policy without inline script. Screenshots
//! of the pages are written to `target/ui-screenshots/`. An action (sync) goes through its
//! confirmation page and is made with the viewer's rights; a forged POST changes nothing.

use std::time::Duration;

use gantry::api::Application;
use kube::api::Api;
use serde_json::json;
use thirtyfour::prelude::*;

use super::{HOSTILE, app_with_status, condition, set_status, start_ui, viewer};
use crate::support::browser::{
    assert_no_dialog, browser, console_errors, main_text_at, rows, screenshot_path,
};
use crate::support::cluster::{TestNamespace, client, install_crds, service_account_kubeconfig};
use crate::support::eventually;

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
    assert_no_dialog(&driver).await;
    assert_eq!(console_errors(&driver).await, Vec::<String>::new());

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
    assert_no_dialog(&driver).await;
    assert_eq!(console_errors(&driver).await, Vec::<String>::new());
    for page in ["sources", "imagepolicies", "receivers", "notifiers"] {
        let text = main_text_at(&driver, format!("{url}{page}")).await;
        assert!(!text.contains(&other.name), "{page}: {text}");
        driver
            .screenshot(&screenshot_path(&format!("{page}.png")))
            .await
            .unwrap();
        assert_eq!(
            console_errors(&driver).await,
            Vec::<String>::new(),
            "{page}"
        );
    }
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

/// The fleet of 50 Applications in three states: the counts at the top, the order (worst
/// first), and a filter by state.
#[tokio::test]
async fn fifty_applications_in_three_states_are_counted_and_filtered() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "ui-fifty").await;
    let states = [
        (
            30,
            json!([
                condition("Ready", "True", "applied"),
                condition("Healthy", "True", "")
            ]),
        ),
        (
            15,
            json!([condition(
                "Ready",
                "False",
                "Deployment web: ImagePullBackOff"
            )]),
        ),
        (
            5,
            json!([
                condition("Ready", "True", "applied"),
                condition("Healthy", "True", ""),
                condition("Drifted", "True", "1 object differs from Git")
            ]),
        ),
    ];
    let mut wanted = vec![];
    for (n, conds) in &states {
        for _ in 0..*n {
            wanted.push((format!("app-{:02}", wanted.len()), conds.clone()));
        }
    }
    futures::future::join_all(
        wanted
            .iter()
            .map(|(name, conds)| app_with_status(&client, &ns.name, name, conds.clone())),
    )
    .await;
    let (_ui, url) = start_ui(&crate::support::cluster::kubeconfig_path(), &[&ns.name]);
    let (_chromedriver, driver, _profile) = browser().await;
    driver.goto(&url).await.unwrap();
    let seen = eventually("50 rows", Duration::from_secs(30), || {
        let driver = &driver;
        async move {
            let r = rows(driver).await;
            (r.len() == 50).then_some(r)
        }
    })
    .await;
    let counts = driver
        .find(By::Css("ul.counts"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in ["50 in all", "15 failed", "5 drifted", "30 synced"] {
        assert!(counts.contains(expected), "{expected:?} in {counts:?}");
    }
    let order: Vec<&str> = seen.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(&order[..15], ["failed"; 15]);
    assert_eq!(&order[15..20], ["drifted"; 5]);
    assert_eq!(&order[20..], ["synced"; 30]);
    driver
        .screenshot(&screenshot_path("fleet-fifty.png"))
        .await
        .unwrap();
    driver
        .find(By::LinkText("5 drifted"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let drifted = eventually("the drifted filter", Duration::from_secs(10), || {
        let driver = &driver;
        async move {
            let r = rows(driver).await;
            (r.len() == 5).then_some(r)
        }
    })
    .await;
    assert!(drifted.iter().all(|(_, s)| s == "drifted"));
    assert_eq!(console_errors(&driver).await, Vec::<String>::new());
    driver.quit().await.unwrap();
}

/// A paused canary: its chart shows each step and the analysis; Promote is made with the
/// viewer's rights — done for one who may patch Applications, refused (with the API
/// server's message) for one who may not.
#[tokio::test]
async fn a_canary_chart_and_promote_with_the_viewers_own_rights() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "ui-canary").await;
    let api: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let app = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": "web"},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": "repo"}, "path": "deploy",
                 "rollout": {"strategy": "Canary", "steps": [
                     {"weight": 10}, {"pause": {"duration": "1m"}}, {"weight": 50}, {"pause": {}}]}}
    }))
    .unwrap();
    api.create(&kube::api::PostParams::default(), &app)
        .await
        .unwrap();
    let status = json!({"status": {
        "conditions": [condition("Ready", "True", "applied"), condition("Healthy", "True", "")],
        "lastAppliedRevision": "main@sha1:0123456789abcdef0123456789abcdef01234567",
        "rollout": {"phase": "Paused", "step": 3, "revision": "main@sha1:0123456789abcdef0123456789abcdef01234567",
                    "canaries": ["web"], "message": "waiting to be promoted",
                    "checks": [
                        {"name": "error-rate", "time": "2026-12-01T10:00:00Z", "passed": true, "value": 0.01},
                        {"name": "error-rate", "time": "2026-12-01T10:00:30Z", "passed": true, "value": 0.02},
                        {"name": "error-rate", "time": "2026-12-01T10:01:00Z", "passed": false, "value": 0.2,
                         "message": "above 0.05"}]}
    }});
    api.patch_status(
        "web",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(status),
    )
    .await
    .unwrap();
    super::account(
        &client,
        &ns.name,
        "editor",
        &["get", "list", "watch", "patch"],
    )
    .await;
    super::account(&client, &ns.name, "reader", &["get", "list", "watch"]).await;
    let work = tempfile::tempdir().unwrap();
    let (editor, reader) = (
        work.path().join("editor.kubeconfig"),
        work.path().join("reader.kubeconfig"),
    );
    service_account_kubeconfig(&ns.name, "editor", &editor);
    service_account_kubeconfig(&ns.name, "reader", &reader);
    let (_chromedriver, driver, _profile) = browser().await;

    // The reader sees the chart, and Promote is refused.
    let (_ui, url) = start_ui(&reader, &[&ns.name]);
    let page = format!("{url}apps/{}/web", ns.name);
    eventually("the canary chart", Duration::from_secs(20), || {
        let (driver, page) = (&driver, page.clone());
        async move {
            driver.goto(page).await.ok()?;
            driver.find(By::Css("figure.canary svg")).await.ok()
        }
    })
    .await;
    let steps = driver
        .find_all(By::Css("figure.canary rect.step"))
        .await
        .unwrap();
    assert_eq!(steps.len(), 4);
    let current = driver
        .find(By::Css("figure.canary rect.step.current"))
        .await
        .unwrap();
    assert_eq!(
        current.attr("data-step").await.unwrap().as_deref(),
        Some("4")
    );
    assert_eq!(
        driver
            .find_all(By::Css("figure.canary rect.step.done"))
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        driver
            .find_all(By::Css("figure.canary circle.check.failed"))
            .await
            .unwrap()
            .len(),
        1
    );
    let caption = driver
        .find(By::Css("figure.canary figcaption"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        caption.contains("step 4 of 4, weight 50%; 3 checks, 1 failed"),
        "{caption}"
    );
    driver
        .screenshot(&screenshot_path("canary.png"))
        .await
        .unwrap();
    let promote = |driver: WebDriver, page: String| async move {
        driver.goto(page).await.unwrap();
        driver
            .find(By::LinkText("promote"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        driver
            .find(By::Css("button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        eventually("the answer", Duration::from_secs(10), || {
            let driver = driver.clone();
            async move {
                let h1 = driver.find(By::Css("h1")).await.ok()?.text().await.ok()?;
                let main = driver.find(By::Css("main")).await.ok()?.text().await.ok()?;
                (h1 != "Confirm").then_some(main)
            }
        })
        .await
    };
    let refused = promote(driver.clone(), page.clone()).await;
    assert!(
        refused.contains("Not done") && refused.contains("forbidden"),
        "{refused}"
    );
    let untouched = api.get("web").await.unwrap();
    assert!(
        untouched
            .metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key(gantry::api::annotations::ROLLOUT_ACTION_ANNOTATION)),
        "the reader's promote changed nothing"
    );
    drop(_ui);

    // The editor's promote is made.
    let (_ui, url) = start_ui(&editor, &[&ns.name]);
    let page = format!("{url}apps/{}/web", ns.name);
    eventually("the editor's page", Duration::from_secs(20), || {
        let (driver, page) = (&driver, page.clone());
        async move {
            driver.goto(page).await.ok()?;
            driver.find(By::LinkText("promote")).await.ok()
        }
    })
    .await;
    let done = promote(driver.clone(), page).await;
    assert!(done.contains("Done"), "{done}");
    let promoted = api.get("web").await.unwrap();
    let action = promoted
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(gantry::api::annotations::ROLLOUT_ACTION_ANNOTATION))
        .cloned()
        .expect("the promote request");
    assert!(action.starts_with("promote"), "{action}");
    assert_eq!(console_errors(&driver).await, Vec::<String>::new());
    driver.quit().await.unwrap();
}

/// The live events of a viewer of namespace A announce A's changes and never B's.
#[tokio::test]
async fn live_events_carry_nothing_of_a_namespace_the_viewer_may_not_read() {
    let client = client().await;
    install_crds(&client).await;
    let mine = TestNamespace::new(&client, "ui-ev-mine").await;
    let other = TestNamespace::new(&client, "ui-ev-other").await;
    let ready = json!([condition("Ready", "True", "applied")]);
    app_with_status(&client, &mine.name, "web", ready.clone()).await;
    app_with_status(&client, &other.name, "web", ready.clone()).await;
    viewer(&client, &mine.name).await;
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = work.path().join("viewer.kubeconfig");
    service_account_kubeconfig(&mine.name, "viewer", &kubeconfig);
    // Asked for both: the other is refused by the API server.
    let (_ui, url) = start_ui(&kubeconfig, &[&mine.name, &other.name]);
    let body = eventually("the fleet page", Duration::from_secs(20), || {
        let url = url.clone();
        async move {
            let body = reqwest::get(&url).await.ok()?.text().await.ok()?;
            body.contains("1</strong> in all").then_some(body)
        }
    })
    .await;
    assert!(!body.contains(&format!("/apps/{}/", other.name)), "{body}");
    let mut events = reqwest::get(format!("{url}events"))
        .await
        .unwrap()
        .bytes_stream();
    // The first lists of the viewer's other watches may still be announced: wait for quiet.
    while tokio::time::timeout(Duration::from_millis(1500), next_changed(&mut events))
        .await
        .is_ok()
    {}
    let other_api: Api<Application> = Api::namespaced(client.clone(), &other.name);
    set_status(
        &other_api,
        "web",
        json!([condition("Ready", "False", "broken")]),
    )
    .await;
    assert!(
        tokio::time::timeout(Duration::from_secs(3), next_changed(&mut events))
            .await
            .is_err(),
        "a change in a namespace the viewer may not read was announced"
    );
    let mine_api: Api<Application> = Api::namespaced(client.clone(), &mine.name);
    set_status(
        &mine_api,
        "web",
        json!([condition("Ready", "False", "broken")]),
    )
    .await;
    let seen = tokio::time::timeout(Duration::from_secs(3), next_changed(&mut events)).await;
    assert!(matches!(seen, Ok(Some(_))), "{seen:?}");
}

/// The next `changed` event of a server-sent event stream.
async fn next_changed<S, B>(events: &mut S) -> Option<()>
where
    S: futures::Stream<Item = reqwest::Result<B>> + Unpin,
    B: AsRef<[u8]>,
{
    use futures::StreamExt;
    loop {
        let chunk = events.next().await?.ok()?;
        if String::from_utf8_lossy(chunk.as_ref()).contains("event: changed") {
            return Some(());
        }
    }
}
