//! cosign signatures, made with the real `cosign` (keys from `cosign generate-key-pair`,
//! signatures pushed to the test registry by `cosign sign`): an ImagePolicy selects only
//! tags whose digest is signed by a trusted key and says which newer ones it skipped and
//! why; an Application's `oci://` chart with `verify` is applied only when signed.

use std::time::Duration;

use gantry::api::{Application, ImagePolicy};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::image_policy::{docker_secret, wait_latest, wait_reason};
use crate::oci_charts::push_chart;
use crate::support::app::{condition, create_source_and_app};
use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::cosign::CosignKey;
use crate::support::eventually;
use crate::support::git::GitServer;
use crate::support::registry::Registry;

/// A Secret `keys` trusting `public_pem` as `team.pub`.
async fn keys_secret(client: &kube::Client, ns: &str, public_pem: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "keys"},
        "stringData": {"team.pub": public_pem}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            "keys",
            &PatchParams::apply("tests").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap();
}

fn verified_policy(name: &str, image: &str) -> ImagePolicy {
    serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "ImagePolicy",
        "metadata": {"name": name},
        "spec": {
            "image": image, "interval": "1h", "timeout": "10s",
            "secretRef": {"name": "regcred"},
            "policy": {"semver": {"range": ">=1.0.0"}},
            "digest": "pin",
            "verify": {"provider": "cosign", "secretRef": {"name": "keys"}}
        }
    }))
    .unwrap()
}

/// Waits for the policy's `skippedTags` to hold `tag` with a reason containing `why`.
async fn wait_skipped(api: &Api<ImagePolicy>, name: &str, tag: &str, why: &str) -> ImagePolicy {
    eventually(
        &format!("ImagePolicy {name} to skip {tag} for {why:?}"),
        Duration::from_secs(30),
        || async {
            let p = api.get(name).await.ok()?;
            p.status
                .as_ref()?
                .skipped_tags
                .iter()
                .any(|s| s.tag == tag && s.reason.contains(why))
                .then_some(p)
        },
    )
    .await
}

#[tokio::test]
async fn only_tags_signed_by_a_trusted_key_are_selected() {
    let registry = Registry::start_with_basic_auth("ci", "sign-Pass-7");
    let d1 = registry.push_image("team/web", "1.0.0");
    let d2 = registry.push_image("team/web", "1.1.0");
    let team = CosignKey::generate();
    let stranger = CosignKey::generate();
    registry.cosign_sign(&team, &format!("team/web@{d1}"));

    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "cosign-img").await;
    docker_secret(&client, &ns.name, &registry.docker_config_json()).await;
    keys_secret(&client, &ns.name, &team.public_pem()).await;
    let _controller = GantryController::start(&ns.name);
    let api: Api<ImagePolicy> = Api::namespaced(client.clone(), &ns.name);
    let image = format!("{}/team/web", registry.host());

    // verify without digest pinning is refused by the API server: the tag could be pushed
    // again after its signature was checked.
    let mut unpinned = verified_policy("unpinned", &image);
    unpinned.spec.digest = gantry::api::image_policy::DigestMode::None;
    let refused = api
        .create(&PostParams::default(), &unpinned)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("digest: pin"), "{refused}");

    // 1.1.0 is newer but unsigned: 1.0.0 (signed) is selected, pinned, and 1.1.0 is named.
    api.create(&PostParams::default(), &verified_policy("web", &image))
        .await
        .unwrap();
    let p = wait_latest(&api, "web", &format!("{image}:1.0.0")).await;
    let status = p.status.clone().unwrap();
    assert_eq!(status.latest_digest.as_deref(), Some(d1.as_str()));
    let skipped = &status.skipped_tags;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].tag, "1.1.0");
    assert_eq!(skipped[0].digest.as_deref(), Some(d2.as_str()));
    assert_eq!(skipped[0].reason, "no cosign signature");
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.message.contains("1 newer tag skipped") && ready.message.contains("1.1.0"),
        "{ready:?}"
    );

    // Signed by a key the Secret does not trust: still skipped, and the reason says so.
    registry.cosign_sign(&stranger, &format!("team/web@{d2}"));
    gantry::trigger::request_reconcile(&api, "web")
        .await
        .unwrap();
    let p = wait_skipped(&api, "web", "1.1.0", "none of the trusted keys (team.pub)").await;
    assert_eq!(
        p.status.unwrap().latest_image.as_deref(),
        Some(format!("{image}:1.0.0").as_str())
    );

    // Signed by the team (a second signature beside the stranger's): selected.
    registry.cosign_sign(&team, &format!("team/web@{d2}"));
    gantry::trigger::request_reconcile(&api, "web")
        .await
        .unwrap();
    let p = wait_latest(&api, "web", &format!("{image}:1.1.0")).await;
    let status = p.status.unwrap();
    assert_eq!(status.latest_digest.as_deref(), Some(d2.as_str()));
    assert!(status.skipped_tags.is_empty(), "{:?}", status.skipped_tags);

    // A policy whose every tag is unsigned selects nothing: VerificationFailed names them.
    registry.push_image("team/other", "2.0.0");
    api.create(
        &PostParams::default(),
        &verified_policy("other", &format!("{}/team/other", registry.host())),
    )
    .await
    .unwrap();
    let failed = wait_reason(&api, "other", "VerificationFailed").await;
    let status = failed.status.unwrap();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.message.contains("2.0.0 (no cosign signature)"),
        "{ready:?}"
    );
    assert!(status.latest_image.is_none());
}

#[tokio::test]
async fn a_chart_is_applied_only_when_signed_by_a_trusted_key() {
    let registry = Registry::start_with_basic_auth("ci", "chart-Pass-9");
    push_chart(&registry, "0.1.0");
    let chart_ref = format!("{}/charts/web:0.1.0", registry.host());
    let digest = registry.crane(&["digest", &chart_ref]);
    let team = CosignKey::generate();
    let stranger = CosignKey::generate();
    registry.cosign_sign(&stranger, &format!("charts/web@{digest}"));

    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "cosign-chart").await;
    docker_secret(&client, &ns.name, &registry.docker_config_json()).await;
    keys_secret(&client, &ns.name, &team.public_pem()).await;
    let _controller = GantryController::start(&ns.name);
    let server = GitServer::start();
    server.create_repo("app", &[("values/prod.yaml", "color: blue\n")]);
    let url = format!("oci://{}/charts/web", registry.host());
    create_source_and_app(
        &client,
        &ns.name,
        "shop",
        &server.file_url("app"),
        json!({"path": "values", "render": {"helm": {
            "valuesFiles": ["prod.yaml"],
            "chart": {"url": url, "version": "0.1.0", "secretRef": {"name": "regcred"},
                      "verify": {"provider": "cosign", "secretRef": {"name": "keys"}}}
        }}}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);

    // Signed by a stranger only: refused, named, nothing applied.
    let ready = eventually(
        "the chart to be refused",
        Duration::from_secs(60),
        || async {
            let app = apps.get("shop").await.ok()?;
            condition(&app, "Ready").filter(|c| c.reason == "ChartVerificationFailed")
        },
    )
    .await;
    assert!(
        ready.message.contains("charts/web:0.1.0")
            && ready.message.contains(&digest)
            && ready.message.contains("none of the trusted keys"),
        "{ready:?}"
    );
    assert!(cms.get_opt("shop-settings").await.unwrap().is_none());

    // The team signs it: applied.
    registry.cosign_sign(&team, &format!("charts/web@{digest}"));
    gantry::trigger::request_reconcile(&apps, "shop")
        .await
        .unwrap();
    let data = eventually(
        "the signed chart's ConfigMap",
        Duration::from_secs(60),
        || async { cms.get_opt("shop-settings").await.ok().flatten()?.data },
    )
    .await;
    assert_eq!(data["color"], "blue");

    // The chart's ImagePolicy with verify: 0.2.0 is newer and unsigned, so 0.1.0 stays.
    push_chart(&registry, "0.2.0");
    let policies: Api<ImagePolicy> = Api::namespaced(client.clone(), &ns.name);
    policies
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "gantry.dev/v1alpha1", "kind": "ImagePolicy",
                "metadata": {"name": "chart"},
                "spec": {
                    "chart": {"url": url}, "interval": "1h", "timeout": "10s",
                    "secretRef": {"name": "regcred"},
                    "policy": {"semver": {"range": ">=0.1.0"}},
                    "verify": {"provider": "cosign", "secretRef": {"name": "keys"}}
                }
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    wait_latest(&policies, "chart", &format!("{url}:0.1.0")).await;
    wait_skipped(&policies, "chart", "0.2.0", "no cosign signature").await;
}
