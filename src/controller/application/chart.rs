//! The chart of `spec.render.helm.chart`, from an OCI registry or a Helm chart
//! repository: its version resolved (exact, or the highest in its range), read and
//! verified with the credentials of its Secret, and whether a newer version in the range
//! was published since the last sync.

use std::time::Duration;

use crate::api::application::{Application, ChartStatus, RemoteChart};
use crate::api::refs::SignatureVerification;
use crate::render;
use crate::source::{cosign, helm_repo, oci_chart};

/// Where the chart of `spec.render.helm.chart` is, with the credentials of its Secret
/// (read in the Application's namespace on the Application's own cluster).
enum Located {
    Registry {
        chart: oci_chart::ChartRef,
        creds: crate::source::registry::Credentials,
    },
    Repository {
        resolved: helm_repo::Resolved,
        auth: helm_repo::RepoAuth,
    },
}

impl Located {
    fn version(&self) -> String {
        match self {
            Located::Registry { chart, .. } => chart.tag.replace('_', "+"),
            Located::Repository { resolved, .. } => resolved.version.clone(),
        }
    }
}

fn chart_timeout(app: &Application) -> Duration {
    app.spec
        .timeout
        .parse()
        .unwrap_or(Duration::from_secs(60))
        .min(Duration::from_secs(300))
}

/// Resolves the chart's version (an exact one, or the highest in its range).
async fn locate_chart(
    local: &kube::Client,
    app: &Application,
    spec: &RemoteChart,
) -> Result<Located, oci_chart::ChartError> {
    use oci_chart::ChartError;
    let ns = app.metadata.namespace.as_deref().unwrap_or("default");
    let timeout = chart_timeout(app);
    match (&spec.url, &spec.repository, &spec.name) {
        (Some(url), None, None) => {
            let image = oci_chart::ChartRef::image_of(url)?;
            let creds = match &spec.secret_ref {
                None => crate::source::registry::Credentials::Anonymous,
                Some(secret) => crate::controller::secrets::registry_credentials(
                    local,
                    ns,
                    &secret.name,
                    &image.registry,
                )
                .await
                .map_err(ChartError::Secret)?,
            };
            let version =
                oci_chart::resolve_version(url, &spec.version, &creds, spec.insecure, timeout)
                    .await?;
            let chart = oci_chart::ChartRef::parse(url, &version)?;
            Ok(Located::Registry { chart, creds })
        }
        (None, Some(repository), Some(name)) => {
            let auth = match &spec.secret_ref {
                None => helm_repo::RepoAuth::default(),
                Some(secret) => {
                    crate::controller::secrets::repository_auth(local, ns, &secret.name)
                        .await
                        .map_err(ChartError::Secret)?
                }
            };
            let resolved = helm_repo::resolve(
                repository,
                name,
                &spec.version,
                &auth,
                spec.insecure,
                timeout,
            )
            .await?;
            Ok(Located::Repository { resolved, auth })
        }
        _ => Err(ChartError::BadUrl {
            url: spec
                .url
                .clone()
                .or(spec.repository.clone())
                .unwrap_or_default(),
            why: "set either url (oci://…) or repository (https://…) with name".into(),
        }),
    }
}

/// The chart of `spec.render.helm.chart`, read and verified, and what status records of it.
pub(super) async fn fetch(
    local: &kube::Client,
    app: &Application,
    spec: &RemoteChart,
) -> Result<(oci_chart::FetchedChart, ChartStatus), oci_chart::ChartError> {
    let timeout = chart_timeout(app);
    let located = locate_chart(local, app, spec).await?;
    let version = located.version();
    let (fetched, source) = match located {
        Located::Registry { chart, creds } => {
            let source = format!("oci://{}/{}", chart.image.registry, chart.image.repository);
            let fetched = oci_chart::fetch(&chart, &creds, spec.insecure, timeout).await?;
            if let Some(verify) = &spec.verify {
                verify_chart(local, app, verify, &chart, &creds, &fetched, spec.insecure).await?;
            }
            (fetched, source)
        }
        Located::Repository { resolved, auth } => (
            helm_repo::download(&resolved, &auth, timeout).await?,
            resolved.source(),
        ),
    };
    tracing::debug!(chart = %fetched.reference, digest = %fetched.digest, "fetched chart");
    let status = ChartStatus {
        source,
        version,
        digest: fetched.digest.clone(),
    };
    Ok((fetched, status))
}

/// Checks the cosign signature of the manifest `fetched` was read from (its digest, so
/// the archive used is the one that was signed).
async fn verify_chart(
    local: &kube::Client,
    app: &Application,
    verify: &SignatureVerification,
    chart: &oci_chart::ChartRef,
    creds: &crate::source::registry::Credentials,
    fetched: &oci_chart::FetchedChart,
    insecure: bool,
) -> Result<(), oci_chart::ChartError> {
    use oci_chart::ChartError;
    let ns = app.metadata.namespace.as_deref().unwrap_or("default");
    let keys = crate::controller::secrets::cosign_keys(local, ns, &verify.secret_ref.name)
        .await
        .map_err(ChartError::Secret)?;
    let timeout = chart_timeout(app);
    let client = crate::source::registry::new_client(&chart.image, insecure, timeout);
    match cosign::verify(
        &client,
        &chart.image,
        &fetched.digest,
        creds,
        &keys,
        timeout,
    )
    .await
    {
        Ok(key) => {
            tracing::debug!(chart = %fetched.reference, digest = %fetched.digest, %key, "chart signature verified");
            Ok(())
        }
        Err(cosign::VerifyError::Unsigned(why)) => Err(ChartError::Unverified {
            reference: fetched.reference.clone(),
            digest: fetched.digest.clone(),
            why: why.to_string(),
        }),
        Err(cosign::VerifyError::Registry(source)) => Err(ChartError::Registry {
            reference: fetched.reference.clone(),
            source,
        }),
    }
}

/// A chart version in `spec.render.helm.chart`'s range newer than the one applied (a new
/// version was published): the Application syncs it although Git did not change.
pub async fn chart_moved(local: &kube::Client, app: &Application) -> Option<String> {
    let spec = render::oci_chart(app.spec.render.as_ref())?;
    let applied = app.status.as_ref()?.chart.as_ref()?;
    if !crate::source::chart_version::Wanted::parse(&spec.version)
        .ok()?
        .is_range()
    {
        return None; // an exact version changes only with the spec
    }
    match locate_chart(local, app, spec).await {
        Ok(located) if located.version() != applied.version => Some(located.version()),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(error = %e, "chart version not checked");
            None
        }
    }
}
