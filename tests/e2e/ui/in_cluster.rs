//! The controller's web view (`--ui-addr`), as a deployment behind a proxy or with the
//! sign-in form would use it: without a token, the sign-in page; an invalid token, 401; a
//! ServiceAccount token that may read one namespace, passed in the `Authorization` header
//! or signed in through the form, sees that namespace only — never what the controller's
//! own rights would show.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use thirtyfour::prelude::*;

use super::{app_with_status, condition, viewer};
use crate::support::browser::{browser, console_errors, rows, screenshot_path};
use crate::support::cluster::{TestNamespace, client, install_crds, service_account_token};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::process::free_port;

#[tokio::test]
async fn each_viewer_sees_what_their_own_token_may_read() {
    let client = client().await;
    install_crds(&client).await;
    let mine = TestNamespace::new(&client, "uic-mine").await;
    let other = TestNamespace::new(&client, "uic-other").await;
    let ready = json!([
        condition("Ready", "True", "applied"),
        condition("Healthy", "True", "")
    ]);
    app_with_status(&client, &mine.name, "web", ready.clone()).await;
    app_with_status(&client, &other.name, "hidden-plans", ready.clone()).await;
    viewer(&client, &mine.name).await;
    let token = service_account_token(&mine.name, "viewer");
    // A controller for every namespace (its own rights could read both), reconciling only
    // its shard's resources: none here.
    let port = free_port();
    let addr = format!("--ui-addr=127.0.0.1:{port}");
    let controller = GantryController::start_sharded("ui-in-cluster", &[&addr]);
    let url = format!("http://127.0.0.1:{port}/");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    eventually("the web view to listen", Duration::from_secs(30), || {
        let (http, url) = (http.clone(), url.clone());
        async move { http.get(&url).send().await.ok() }
    })
    .await;

    // No token: to the sign-in page; the events and actions answer 401.
    let res = http.get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/login");
    let login = http.get(format!("{url}login")).send().await.unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    assert!(login.text().await.unwrap().contains("name=\"token\""));
    let events = http.get(format!("{url}events")).send().await.unwrap();
    assert_eq!(events.status(), StatusCode::UNAUTHORIZED);

    // An invalid token: 401.
    let bad = http
        .get(&url)
        .bearer_auth("not-a-real-token")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);

    // The viewer's token in the header (an authenticating proxy): their namespace only.
    let body = eventually("the viewer's fleet", Duration::from_secs(60), || {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        async move {
            let res = http.get(&url).bearer_auth(&token).send().await.ok()?;
            let body = res.text().await.ok()?;
            body.contains("1</strong> in all").then_some(body)
        }
    })
    .await;
    assert!(body.contains(&format!("/apps/{}/web", mine.name)), "{body}");
    assert!(
        !body.contains("hidden-plans") && !body.contains(&other.name),
        "{body}"
    );
    assert!(body.contains(&format!("system:serviceaccount:{}:viewer", mine.name)));
    let hidden = http
        .get(format!("{url}apps/{}/hidden-plans", other.name))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), StatusCode::NOT_FOUND);
    assert!(!hidden.text().await.unwrap().contains("Ready"));

    // The sign-in form in a real browser: the token is kept in an HttpOnly cookie, never
    // readable by the page's script.
    let (_chromedriver, driver, _profile) = browser().await;
    driver.goto(&url).await.unwrap();
    assert!(
        driver
            .current_url()
            .await
            .unwrap()
            .as_str()
            .ends_with("/login")
    );
    driver
        .screenshot(&screenshot_path("login.png"))
        .await
        .unwrap();
    driver
        .find(By::Id("token"))
        .await
        .unwrap()
        .send_keys(&token)
        .await
        .unwrap();
    driver
        .find(By::Css("form[action='/login'] button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let seen = eventually(
        "the fleet after signing in",
        Duration::from_secs(20),
        || {
            let driver = &driver;
            async move {
                let r = rows(driver).await;
                (!r.is_empty()).then_some(r)
            }
        },
    )
    .await;
    assert_eq!(seen, [("web".to_string(), "synced".to_string())]);
    let cookies = driver
        .execute("return document.cookie;", vec![])
        .await
        .unwrap();
    assert!(
        !cookies
            .json()
            .as_str()
            .unwrap_or_default()
            .contains("gantry_token"),
        "{:?}",
        cookies.json()
    );
    driver
        .screenshot(&screenshot_path("in-cluster-fleet.png"))
        .await
        .unwrap();
    assert_eq!(console_errors(&driver).await, Vec::<String>::new());
    // Sign out: back to the sign-in page, and the pages ask for a token again.
    driver
        .find(By::Css("form.logout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    eventually("the sign-in page", Duration::from_secs(10), || {
        let driver = &driver;
        async move {
            let u = driver.current_url().await.ok()?;
            u.as_str().ends_with("/login").then_some(())
        }
    })
    .await;
    driver.goto(&url).await.unwrap();
    assert!(
        driver
            .current_url()
            .await
            .unwrap()
            .as_str()
            .ends_with("/login")
    );
    driver.quit().await.unwrap();

    // Requests are counted by page on the controller's metrics.
    let metrics = reqwest::get(format!(
        "http://127.0.0.1:{}/metrics",
        controller.metrics_port
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        metrics.contains(r#"gantry_ui_requests_total{code="2xx",page="/"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"gantry_ui_request_duration_seconds_bucket{page="/login""#));
}
