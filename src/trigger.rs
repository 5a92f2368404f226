//! Asking for a reconcile now: an annotation with a timestamp. Every Gantry controller
//! watches its objects' metadata, so the patch wakes the right reconciler, in whichever
//! replica holds the lease (no in-process channel that only one replica would see).

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::api::annotations::REQUEST_ANNOTATION;
use crate::error::Result;

/// Stamps `name` with the current time (a merge patch of metadata only); returns the stamp,
/// which an Application reports as `lastHandledRequest` once it acted on it.
pub async fn request_reconcile<K>(api: &Api<K>, name: &str) -> Result<String>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let stamp = Timestamp::now().to_string();
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {REQUEST_ANNOTATION: &stamp}}})),
    )
    .await?;
    Ok(stamp)
}

/// When a reconcile was last asked for.
pub fn requested_at<K: kube::Resource>(obj: &K) -> Option<Timestamp> {
    obj.annotations()
        .get(REQUEST_ANNOTATION)
        .and_then(|v| v.parse().ok())
}
