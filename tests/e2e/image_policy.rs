//! ImagePolicy against the local registry (basic auth): selection, digest pinning, a
//! rescan on request, refused credentials, a missing repository, and a registry outage.

use std::time::Duration;

use gantry::api::ImagePolicy;
use gantry::api::conditions::Condition;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::registry::Registry;

pub fn policy_object(name: &str, image: &str, range: &str, pin: bool) -> ImagePolicy {
    serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "ImagePolicy",
        "metadata": { "name": name },
        "spec": {
            "image": image, "interval": "1h", "timeout": "10s",
            "secretRef": { "name": "regcred" },
            "policy": { "semver": { "range": range } },
            "digest": if pin { "pin" } else { "none" },
        }
    }))
    .unwrap()
}

pub async fn docker_secret(client: &kube::Client, ns: &str, config_json: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "regcred" },
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": { ".dockerconfigjson": config_json }
    }))
    .unwrap();
    secrets
        .patch(
            "regcred",
            &PatchParams::apply("tests").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap();
}

fn ready(p: &ImagePolicy) -> Option<Condition> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .cloned()
}

pub async fn wait_latest(api: &Api<ImagePolicy>, name: &str, image: &str) -> ImagePolicy {
    eventually(
        &format!("ImagePolicy {name} to select {image}"),
        Duration::from_secs(30),
        || async {
            let p = api.get(name).await.ok()?;
            (p.status.as_ref()?.latest_image.as_deref() == Some(image)
                && ready(&p)?.status == "True")
                .then_some(p)
        },
    )
    .await
}

pub async fn wait_reason(api: &Api<ImagePolicy>, name: &str, reason: &str) -> ImagePolicy {
    eventually(
        &format!("ImagePolicy {name} to report {reason}"),
        Duration::from_secs(30),
        || async {
            let p = api.get(name).await.ok()?;
            (ready(&p)?.reason == reason).then_some(p)
        },
    )
    .await
}

#[tokio::test]
async fn selects_the_newest_tag_in_range_with_basic_auth_and_pins_its_digest() {
    let registry = Registry::start_with_basic_auth("ci", "reg-Secret-42");
    registry.push_image("team/web", "1.3.0");
    let d140 = registry.push_image("team/web", "1.4.0");
    registry.push_image("team/web", "2.0.0");
    registry.push_image("team/web", "1.5.0-rc.1");
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "imgpol").await;
    docker_secret(&client, &ns.name, &registry.docker_config_json()).await;
    let controller = GantryController::start(&ns.name);
    let api: Api<ImagePolicy> = Api::namespaced(client.clone(), &ns.name);
    let image = format!("{}/team/web", registry.host());
    api.create(
        &PostParams::default(),
        &policy_object("web", &image, ">=1.0.0 <2.0.0", true),
    )
    .await
    .unwrap();

    let p = wait_latest(&api, "web", &format!("{image}:1.4.0")).await;
    let status = p.status.unwrap();
    assert_eq!(status.latest_digest.as_deref(), Some(d140.as_str()));
    assert_eq!(status.tag_count, Some(4));
    assert!(status.scanned_at.is_some());

    // A new tag, and a request to look now (what a Receiver does): selected at once even
    // though the interval is an hour.
    let d141 = registry.push_image("team/web", "1.4.1");
    gantry::trigger::request_reconcile(&api, "web")
        .await
        .unwrap();
    let p = wait_latest(&api, "web", &format!("{image}:1.4.1")).await;
    assert_eq!(
        p.status.unwrap().latest_digest.as_deref(),
        Some(d141.as_str())
    );
    assert!(
        !controller.log().contains("reg-Secret-42"),
        "the registry password leaked into the log"
    );
}

#[tokio::test]
async fn refused_credentials_and_missing_repositories_say_why_without_leaking() {
    let registry = Registry::start_with_basic_auth("ci", "right-pass");
    registry.push_image("team/api", "1.0.0");
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "imgpol-bad").await;
    let wrong =
        json!({"auths": {registry.host(): {"username": "ci", "password": "Wrong-Pass-77"}}})
            .to_string();
    docker_secret(&client, &ns.name, &wrong).await;
    let controller = GantryController::start(&ns.name);
    let api: Api<ImagePolicy> = Api::namespaced(client.clone(), &ns.name);
    let image = format!("{}/team/api", registry.host());
    api.create(
        &PostParams::default(),
        &policy_object("api", &image, "*", false),
    )
    .await
    .unwrap();
    let p = wait_reason(&api, "api", "AuthenticationFailed").await;
    let msg = ready(&p).unwrap().message;
    assert!(msg.contains("team/api"), "{msg}");
    assert!(p.status.unwrap().latest_image.is_none());

    // Right credentials, wrong repository.
    docker_secret(&client, &ns.name, &registry.docker_config_json()).await;
    let missing = format!("{}/team/nothing-here", registry.host());
    api.create(
        &PostParams::default(),
        &policy_object("missing", &missing, "*", false),
    )
    .await
    .unwrap();
    let p = wait_reason(&api, "missing", "ImageNotFound").await;
    assert!(ready(&p).unwrap().message.contains("team/nothing-here"));

    let everything = format!(
        "{}{}",
        controller.log(),
        serde_json::to_string(&api.list(&Default::default()).await.unwrap().items).unwrap()
    );
    assert!(!everything.contains("Wrong-Pass-77"));
    assert!(!everything.contains("right-pass"));
}

#[tokio::test]
async fn a_registry_outage_keeps_the_last_selection_and_recovers_by_itself() {
    let mut registry = Registry::start();
    registry.push_image("team/db", "3.1.0");
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "imgpol-down").await;
    docker_secret(&client, &ns.name, r#"{"auths":{}}"#).await;
    let _controller = GantryController::start(&ns.name);
    let api: Api<ImagePolicy> = Api::namespaced(client.clone(), &ns.name);
    let image = format!("{}/team/db", registry.host());
    // The retry backoff (2 s, 4 s, 8 s …) is capped at the interval: 5 s here, so the
    // recovery below does not depend on how many retries a loaded machine piled up.
    let mut policy = policy_object("db", &image, "^3", false);
    policy.spec.interval = gantry::api::duration::GoDuration::new("5s");
    api.create(&PostParams::default(), &policy).await.unwrap();
    wait_latest(&api, "db", &format!("{image}:3.1.0")).await;

    registry.stop();
    gantry::trigger::request_reconcile(&api, "db")
        .await
        .unwrap();
    let p = wait_reason(&api, "db", "RegistryUnavailable").await;
    assert_eq!(
        p.status.unwrap().latest_image.as_deref(),
        Some(format!("{image}:3.1.0").as_str()),
        "the last good selection is kept while the registry is down"
    );

    // The registry comes back with a newer tag; the backoff finds it without anyone asking
    // (at most 5 s after the registry answers again).
    tokio::time::sleep(Duration::from_secs(3)).await;
    registry.restart();
    registry.push_image("team/db", "3.2.0");
    eventually(
        "the newer tag after the outage",
        Duration::from_secs(60),
        || async {
            let p = api.get("db").await.ok()?;
            (p.status.as_ref()?.latest_image.as_deref() == Some(format!("{image}:3.2.0").as_str()))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn policies_on_the_same_image_and_credentials_share_one_scan() {
    use gantry::source::registry::{Credentials, ImageName, Scanner};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = Registry::start_with_basic_auth("ci", "shared-pass");
    registry.push_image("team/shared", "1.0.0");
    let image = ImageName::parse(&format!("{}/team/shared", registry.host())).unwrap();
    let creds = Credentials::Basic {
        username: "ci".into(),
        password: "shared-pass".into(),
    };
    let scanner = Scanner::default();
    let since = std::time::SystemTime::now() - Duration::from_secs(60);
    // Three policies reconciled at once: one listing.
    let (a, b, c) = tokio::join!(
        scanner.tags(&image, &creds, false, Duration::from_secs(10), since),
        scanner.tags(&image, &creds, false, Duration::from_secs(10), since),
        scanner.tags(&image, &creds, false, Duration::from_secs(10), since),
    );
    assert_eq!(a.unwrap().tags, vec!["1.0.0".to_string()]);
    assert!(b.is_ok() && c.is_ok());
    assert_eq!(scanner.listings(), 1);
    // Other credentials are another scan (and here a refusal).
    let other = Credentials::Basic {
        username: "ci".into(),
        password: "wrong".into(),
    };
    let refused = scanner
        .tags(&image, &other, false, Duration::from_secs(10), since)
        .await
        .unwrap_err();
    assert_eq!(refused.reason(), "AuthenticationFailed");
    // A request newer than the scan (a Receiver's trigger) lists again.
    registry.push_image("team/shared", "1.1.0");
    let fresh = scanner
        .tags(
            &image,
            &creds,
            false,
            Duration::from_secs(10),
            std::time::SystemTime::now(),
        )
        .await
        .unwrap();
    assert_eq!(fresh.tags.len(), 2);
    assert_eq!(scanner.listings(), 2);
}
