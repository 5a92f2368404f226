//! Chart-version automation: an ImagePolicy on a chart of a Helm repository (HTTPS, basic
//! auth, its own CA) selects the newest version in its range; the parent Application's
//! write-back commits it to the child Application's manifest in Git (the `version:` of its
//! chart, nothing else); the child deploys it. A `git revert` of the bump deploys the old
//! version again and holds the reverted one until a newer version is published.

use std::collections::BTreeMap;
use std::time::Duration;

use gantry::api::{Application, ImagePolicy};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::support::app::{Workspace, condition, create_source_and_app};
use crate::support::chart_repo::{ChartRepo, PASSWORD, USER};
use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::{GitServer, git};

fn child_manifest(repository: &str, version: &str) -> String {
    format!(
        "# The web chart, deployed by the fleet Application.\n\
         apiVersion: gantry.dev/v1alpha1\n\
         kind: Application\n\
         metadata:\n  name: web\n\
         spec:\n\
         \x20 sourceRef: {{kind: GitRepository, name: fleet}}\n\
         \x20 path: values\n\
         \x20 interval: 10m\n\
         \x20 render:\n\
         \x20   helm:\n\
         \x20     chart:\n\
         \x20       repository: {repository}\n\
         \x20       name: web\n\
         \x20       version: {version} # bumped by gantry\n\
         \x20       secretRef: {{name: charts}}\n"
    )
}

async fn deployed_version(cms: &Api<ConfigMap>) -> Option<String> {
    cms.get_opt("web-chart")
        .await
        .ok()
        .flatten()
        .and_then(|c| c.data)
        .map(|d| d["chart"].clone())
}

fn head(server: &GitServer) -> String {
    git(
        &server.bare_path("fleet"),
        &["rev-parse", "refs/heads/main"],
    )
    .trim()
    .to_string()
}

async fn wait_new_head(server: &GitServer, than: &str) -> String {
    eventually(
        "a write-back commit on main",
        Duration::from_secs(60),
        || async {
            let h = head(server);
            (h != than).then_some(h)
        },
    )
    .await
}

#[tokio::test]
async fn a_chart_version_is_written_to_git_deployed_and_held_after_a_revert() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "chart-auto").await;
    let repo = ChartRepo::start();
    for v in ["1.0.0", "1.1.0", "2.0.0"] {
        repo.publish("web", v);
    }
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("charts".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([
            ("username".to_string(), USER.to_string()),
            ("password".to_string(), PASSWORD.to_string()),
            ("ca.crt".to_string(), repo.ca_pem.clone()),
        ])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let policies: Api<ImagePolicy> = Api::namespaced(client.clone(), &ns.name);
    let policy = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "ImagePolicy",
        "metadata": {"name": "web-chart"},
        "spec": {
            "chart": {"repository": repo.url(), "name": "web"},
            "secretRef": {"name": "charts"},
            "interval": "1h", "timeout": "10s",
            "policy": {"semver": {"range": ">=1.0.0 <2"}},
        }
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();

    let server = GitServer::start();
    let manifest = child_manifest(&repo.url(), "1.0.0");
    let initial = server.create_repo(
        "fleet",
        &[
            ("apps/web.yaml", manifest.as_str()),
            ("values/README.md", "values of web\n"),
        ],
    );
    let _controller = GantryController::start(&ns.name);
    create_source_and_app(
        &client,
        &ns.name,
        "fleet",
        &server.http_url("fleet"),
        json!({
            "path": "apps",
            "imageAutomation": {
                "policies": ["web-chart"],
                "writeBack": {
                    "author": {"name": "Gantry Bot", "email": "bot@gantry.test"},
                    "messageTemplate": "Deploy chart {{new}} ({{policy}}, was {{old}})"
                }
            }
        }),
    )
    .await;

    // The newest version in range (1.1.0, not 2.0.0) is selected, committed and deployed.
    let expected = format!("{}/web:1.1.0", repo.url());
    eventually(
        "the chart policy selects 1.1.0",
        Duration::from_secs(60),
        || async {
            let p = policies.get("web-chart").await.ok()?;
            (p.status?.latest_image.as_deref() == Some(expected.as_str())).then_some(())
        },
    )
    .await;
    let bump = wait_new_head(&server, &initial).await;
    let bare = server.bare_path("fleet");
    let diff = git(&bare, &["show", "--format=%B", "-U0", &bump]);
    assert!(
        diff.contains("Deploy chart 1.1.0 (web-chart, was 1.0.0)"),
        "{diff}"
    );
    assert!(
        diff.contains(&format!("Gantry-Chart: {expected}")),
        "{diff}"
    );
    let changed: Vec<&str> = diff
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    assert_eq!(
        changed,
        vec![
            "-        version: 1.0.0 # bumped by gantry",
            "+        version: 1.1.0 # bumped by gantry"
        ],
        "only the chart's version changes"
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    eventually("1.1.0 deployed", Duration::from_secs(90), || async {
        (deployed_version(&cms).await? == "1.1.0").then_some(())
    })
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    eventually(
        "ImageAutomation=Pushed",
        Duration::from_secs(30),
        || async {
            let app = apps.get("fleet").await.ok()?;
            let c = condition(&app, "ImageAutomation")?;
            (c.reason == "Pushed" || c.reason == "UpToDate").then_some(())
        },
    )
    .await;

    // The team rolls back in Git: the old version is deployed and the reverted one held.
    let ws = Workspace::clone_from(&server, "fleet");
    git(ws.path(), &["revert", "--no-edit", &bump]);
    git(ws.path(), &["push", "--quiet", "origin", "HEAD:main"]);
    let revert = git(ws.path(), &["rev-parse", "HEAD"]).trim().to_string();
    eventually("1.0.0 deployed again", Duration::from_secs(90), || async {
        (deployed_version(&cms).await? == "1.0.0").then_some(())
    })
    .await;
    let held = eventually("1.1.0 held", Duration::from_secs(30), || async {
        let p = policies.get("web-chart").await.ok()?;
        p.status?
            .held_tags
            .iter()
            .find(|h| h.tag == "1.1.0")
            .cloned()
    })
    .await;
    assert!(held.reason.contains(&revert), "{}", held.reason);
    eventually("ImageAutomation=Held", Duration::from_secs(30), || async {
        let app = apps.get("fleet").await.ok()?;
        (condition(&app, "ImageAutomation")?.reason == "Held").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        head(&server),
        revert,
        "the held version is not written again"
    );
    assert_eq!(deployed_version(&cms).await.as_deref(), Some("1.0.0"));

    // A newer version in range releases the hold and is deployed.
    repo.publish("web", "1.2.0");
    gantry::trigger::request_reconcile(&policies, "web-chart")
        .await
        .unwrap();
    wait_new_head(&server, &revert).await;
    eventually("1.2.0 deployed", Duration::from_secs(90), || async {
        (deployed_version(&cms).await? == "1.2.0").then_some(())
    })
    .await;
    let p = policies.get("web-chart").await.unwrap();
    assert!(p.status.unwrap().held_tags.is_empty());
}
