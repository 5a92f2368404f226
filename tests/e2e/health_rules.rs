//! Health of custom resources (issue 14): CEL rules per kind in `spec.healthChecks`, the
//! kstatus-like generic rule, Unknown that stays Unknown, and a rule that does not compile.

use std::time::Duration;

use gantry::api::Application;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

use crate::support::app::{condition, create_source_and_app};
use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::GitServer;
use crate::support::random_suffix;

/// A CRD with a status subresource, written by the test as its operator would.
fn crd(group: &str, kind: &str, plural: &str) -> String {
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {plural}.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{kind: {kind}, plural: {plural}, singular: {}}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    subresources: {{status: {{}}}}\n    schema:\n      openAPIV3Schema:\n        type: object\n        x-kubernetes-preserve-unknown-fields: true\n",
        kind.to_lowercase()
    )
}

async fn healthy_condition(
    apps: &Api<Application>,
    name: &str,
) -> Option<(String, String, String)> {
    let app = apps.get(name).await.ok()?;
    let c = condition(&app, "Healthy")?;
    Some((c.status, c.reason, c.message))
}

#[tokio::test]
async fn custom_resources_are_judged_by_cel_rules_and_unknown_stays_unknown() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "health-cel").await;
    let _controller = GantryController::start(&ns.name);
    let group = format!("{}.e2e.gantry.dev", random_suffix());
    let server = GitServer::start();
    server.create_repo(
        "app",
        &[
            ("db/crd.yaml", &crd(&group, "Database", "databases")),
            (
                "db/db.yaml",
                &format!("apiVersion: {group}/v1\nkind: Database\nmetadata:\n  name: orders\nspec:\n  size: 1\n"),
            ),
            ("cache/crd.yaml", &crd(&group, "Cache", "caches")),
            (
                "cache/cache.yaml",
                &format!("apiVersion: {group}/v1\nkind: Cache\nmetadata:\n  name: sessions\nspec:\n  size: 1\n"),
            ),
            (
                "broken/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: never\n",
            ),
        ],
    );
    let rule = json!([{
        "apiVersion": format!("{group}/v1"),
        "kind": "Database",
        "current": "has(status.phase) && status.phase == 'Ready' && status.replicas >= 1",
        "failed": "has(status.phase) && status.phase == 'Failed'",
    }]);
    create_source_and_app(
        &client,
        &ns.name,
        "db",
        &server.file_url("app"),
        json!({"path": "db", "healthChecks": rule, "timeout": "20s"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    let dbs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns.name,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(&group, "v1", "Database")),
    );

    // Synced, but not healthy before the operator says so: the rule is not met.
    let (_, _, message) = eventually(
        "Database synced and waiting",
        Duration::from_secs(60),
        || async {
            let app = apps.get("db").await.ok()?;
            let ready = condition(&app, "Ready")?;
            let (s, _, m) = healthy_condition(&apps, "db").await?;
            (ready.status == "True" && s != "True" && m.contains("orders")).then_some((
                s,
                ready.reason,
                m,
            ))
        },
    )
    .await;
    assert!(
        message.contains("Database") && message.contains("orders"),
        "{message}"
    );

    // The operator reports Ready: Healthy.
    let status = |phase: &str| Patch::Merge(json!({"status": {"phase": phase, "replicas": 1}}));
    dbs.patch_status("orders", &PatchParams::default(), &status("Ready"))
        .await
        .unwrap();
    eventually(
        "Database healthy by its rule",
        Duration::from_secs(60),
        || async {
            let (s, _, _) = healthy_condition(&apps, "db").await?;
            (s == "True").then_some(())
        },
    )
    .await;

    // The operator reports Failed: the failed rule decides (Healthy=False).
    dbs.patch_status("orders", &PatchParams::default(), &status("Failed"))
        .await
        .unwrap();
    gantry_force_check(&apps, "db").await;
    let (_, reason, message) = eventually(
        "Database failed by its rule",
        Duration::from_secs(90),
        || async {
            let (s, r, m) = healthy_condition(&apps, "db").await?;
            (s == "False").then_some((s, r, m))
        },
    )
    .await;
    assert_eq!(reason, "HealthCheckFailed");
    assert!(message.contains("status.phase == 'Failed'"), "{message}");

    // A custom resource with a status but no signal Gantry knows, and no rule: Unknown,
    // and it stays Unknown past the Application's timeout (20s) instead of being called
    // healthy or failed.
    create_source_and_app(
        &client,
        &ns.name,
        "cache",
        &server.file_url("app"),
        json!({"path": "cache", "timeout": "20s"}),
    )
    .await;
    let caches: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns.name,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(&group, "v1", "Cache")),
    );
    eventually("Cache applied", Duration::from_secs(60), || async {
        caches.get_opt("sessions").await.ok()?
    })
    .await;
    caches
        .patch_status(
            "sessions",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    gantry_force_check(&apps, "cache").await;
    let (_, reason, message) =
        eventually("Cache health Unknown", Duration::from_secs(60), || async {
            let (s, r, m) = healthy_condition(&apps, "cache").await?;
            (s == "Unknown" && r == "HealthUnknown").then_some((s, r, m))
        })
        .await;
    assert_eq!(reason, "HealthUnknown");
    assert!(message.contains("spec.healthChecks"), "{message}");
    tokio::time::sleep(Duration::from_secs(25)).await;
    let (s, reason, _) = healthy_condition(&apps, "cache").await.unwrap();
    assert_eq!((s.as_str(), reason.as_str()), ("Unknown", "HealthUnknown"));

    // A rule that does not compile stops the Application before anything is applied.
    create_source_and_app(
        &client,
        &ns.name,
        "broken",
        &server.file_url("app"),
        json!({"path": "broken", "healthChecks": [{
            "apiVersion": "v1", "kind": "ConfigMap", "current": "data.key ==",
        }]}),
    )
    .await;
    let message = eventually("InvalidHealthCheck", Duration::from_secs(60), || async {
        let app = apps.get("broken").await.ok()?;
        let c = condition(&app, "Ready")?;
        (c.reason == "InvalidHealthCheck").then_some(c.message)
    })
    .await;
    assert!(
        message.contains("ConfigMap.current") && message.contains("data.key =="),
        "{message}"
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        cms.get_opt("never").await.unwrap().is_none(),
        "nothing applied"
    );
}

/// Asks for a sync now (`gantry sync`'s annotation), so the health is read again without
/// waiting for the interval.
async fn gantry_force_check(apps: &Api<Application>, name: &str) {
    apps.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {
            "gantry.dev/requested-at": chrono::Utc::now().to_rfc3339(),
        }}})),
    )
    .await
    .unwrap();
}
