//! Which `<name>-canary` Deployments are Gantry's: a canary is created or scaled only when
//! no object Gantry did not make for this Application holds its name, and deleted only
//! when Gantry made it (labels, field manager, uid), in the stable Deployment's namespace
//! (TESTING.md row 25).

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};

use crate::api::application::Application;
use crate::apply::normalize::Desired;
use crate::cluster::Target;
use crate::rollout::template;

fn namespace_of(d: &Desired) -> String {
    d.key.namespace.clone().unwrap_or_default()
}

/// The namespaces where the Application's canaries may run: those of the Deployments in
/// its inventory (a canary runs beside its stable Deployment) and its default namespace.
pub fn canary_namespaces(app: &Application) -> Vec<String> {
    let mut out: std::collections::BTreeSet<String> = app
        .status
        .iter()
        .flat_map(|s| s.inventory.iter())
        .filter(|e| e.group == "apps" && e.kind == "Deployment")
        .filter_map(|e| e.namespace.clone())
        .collect();
    out.insert(super::pipeline::default_namespace(app));
    out.into_iter().collect()
}

/// Whether a live Deployment is the canary Gantry made for `stable` of this Application:
/// the track, canary-of and ownership labels, and Gantry among its field managers.
fn is_our_canary(live: &Deployment, manager: &str, app_label: &str, stable: &str) -> bool {
    let labels = live.labels();
    let managed_by_gantry = live
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|m| m.manager.as_deref() == Some(manager));
    labels.get(template::TRACK_LABEL).map(String::as_str) == Some("canary")
        && labels.get(template::CANARY_OF_LABEL).map(String::as_str) == Some(stable)
        && labels
            .get(crate::apply::APPLICATION_LABEL)
            .map(String::as_str)
            == Some(app_label)
        && managed_by_gantry
}

/// Deletes the canary Deployments of `stables` that this Application created, found by
/// their labels in `namespaces`; an object with a canary's name that Gantry did not create
/// for this Application is never touched. Each delete is conditional on the uid seen.
pub async fn delete_canaries(
    target: &Target,
    app: &Application,
    namespaces: &[String],
    stables: &[String],
) {
    let app_label = super::pipeline::app_label(app);
    let selector = format!(
        "{}=canary,{}={}",
        template::TRACK_LABEL,
        crate::apply::APPLICATION_LABEL,
        app_label
    );
    for ns in namespaces {
        let api: Api<Deployment> = Api::namespaced(target.applier.client().clone(), ns);
        let listed = match api
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(namespace = %ns, error = %e, "cannot list canaries");
                continue;
            }
        };
        for live in listed {
            let Some(stable) = live.labels().get(template::CANARY_OF_LABEL).cloned() else {
                continue;
            };
            if !stables.contains(&stable)
                || !is_our_canary(&live, target.applier.field_manager(), &app_label, &stable)
            {
                continue;
            }
            let dp = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: live.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match api.delete(&live.name_any(), &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => {
                    tracing::warn!(namespace = %ns, deployment = %live.name_any(), error = %e, "cannot delete canary")
                }
            }
        }
    }
}

/// An object with a canary's name that Gantry did not create for this Application.
#[derive(Debug)]
pub struct CanaryConflict(pub String);

/// Refuses to start or scale a canary over a Deployment Gantry did not create for it.
pub async fn check_canary_ownership(
    target: &Target,
    app: &Application,
    stables: &[&Desired],
) -> std::result::Result<(), CanaryConflict> {
    let app_label = super::pipeline::app_label(app);
    for d in stables {
        let ns = namespace_of(d);
        let name = template::canary_name(&d.key.name);
        let api: Api<Deployment> = Api::namespaced(target.applier.client().clone(), &ns);
        match api.get_opt(&name).await {
            Ok(Some(live))
                if !is_our_canary(
                    &live,
                    target.applier.field_manager(),
                    &app_label,
                    &d.key.name,
                ) =>
            {
                return Err(CanaryConflict(format!(
                    "Deployment {ns}/{name} exists and was not created by Gantry as the canary \
                     of {ns}/{} for this Application; the canary does not start (rename or \
                     delete that Deployment)",
                    d.key.name
                )));
            }
            Ok(_) => {}
            Err(e) => {
                return Err(CanaryConflict(format!(
                    "cannot read Deployment {ns}/{name}: {e}"
                )));
            }
        }
    }
    Ok(())
}
