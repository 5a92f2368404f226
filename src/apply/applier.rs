//! The Applier: every request an Application makes against its cluster, as one identity —
//! discovery, server-side dry-run and apply with field manager `gantry`, reads of live
//! objects, and deletes. The staged apply of a whole set is in [`super::set`], the guarded
//! prune in [`super::prune`].

use std::collections::HashMap;

use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::Value;

use super::concurrent;
use super::discovery::{Discovery, Resolved};
use super::normalize::{Desired, describe};
use super::plan::{Change, classify};
use crate::api::application::InventoryEntry;
use crate::health::book::HealthBook;

/// The field manager of every write Gantry makes.
pub const FIELD_MANAGER: &str = "gantry";

/// A request about one object that the API server refused (or that could not be sent).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{object}: {message}")]
pub struct ObjectError {
    /// `Kind namespace/name`.
    pub object: String,
    /// The API server's message (its cause, not the whole status).
    pub message: String,
    /// A server-side apply conflict: fields of the object are owned by another manager
    /// (a hand edit, another tool); the message names the manager and the fields.
    pub conflict: bool,
}

impl ObjectError {
    pub fn new(key: &InventoryEntry, e: &kube::Error) -> Self {
        Self {
            object: describe(key),
            message: api_message(e),
            conflict: matches!(e, kube::Error::Api(s) if s.code == 409),
        }
    }

    /// An error of Gantry's own (no API server answer behind it).
    pub fn other(object: String, message: impl Into<String>) -> Self {
        Self {
            object,
            message: message.into(),
            conflict: false,
        }
    }
}

/// A human-readable error from the API server for one object.
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => short_status(s),
        other => other.to_string(),
    }
}

/// The API server's cause without its dumps: an invalid object's message embeds the whole
/// rejected value as a Go struct (kilobytes for a Pod template); the causes say the field
/// and what is wrong with it (`spec.template: field is immutable`).
fn short_status(s: &kube::core::Status) -> String {
    const LONG: usize = 200;
    let causes = s.details.as_ref().map(|d| &d.causes[..]).unwrap_or(&[]);
    if s.message.len() <= LONG || causes.is_empty() {
        return s.message.clone();
    }
    let head = s
        .message
        .split_once(" is invalid: ")
        .map(|(object, _)| format!("{object} is invalid: "))
        .unwrap_or_default();
    let causes: Vec<String> = causes
        .iter()
        .map(|c| {
            let what = if c.message.len() > LONG {
                c.message.rsplit(": ").next().unwrap_or(&c.message)
            } else {
                &c.message
            };
            if c.field.is_empty() {
                what.to_string()
            } else {
                format!("{}: {what}", c.field)
            }
        })
        .collect();
    format!("{head}{}", causes.join("; "))
}

/// What the dry-run says about one object.
#[derive(Clone, Debug)]
pub struct Checked {
    pub change: Change,
    /// The Application the live object is labelled for, when it is another one.
    pub foreign_owner: Option<String>,
}

/// An object as it is and as it would be after an apply.
#[derive(Clone, Debug)]
pub struct Diffed {
    pub live: Option<Value>,
    pub after: Value,
}

/// One cluster as one identity: the client every request goes through, the cluster's
/// cached discovery (shared by every identity on it, and asked with the controller's own
/// client: which kinds exist is no secret of a tenant's), the field manager and how many
/// objects are sent at once.
pub struct Applier {
    client: Client,
    discovery: std::sync::Arc<Discovery>,
    discovery_client: Client,
    field_manager: String,
    concurrency: usize,
    /// Where applies note the versions they produced (the drift watches read them).
    own_writes: Option<std::sync::Arc<super::own_writes::OwnWrites>>,
    /// The health the watches of this cluster saw; applies note their versions there too.
    health: Option<std::sync::Arc<HealthBook>>,
    /// Permits for object writes in flight toward this API server (shared by its Appliers).
    writes: Option<std::sync::Arc<tokio::sync::Semaphore>>,
}

impl Applier {
    /// An Applier acting through `client` on a cluster whose discovery is shared.
    pub fn on_cluster(
        client: Client,
        discovery_client: Client,
        discovery: std::sync::Arc<Discovery>,
        concurrency: usize,
    ) -> Self {
        Self {
            client,
            discovery,
            discovery_client,
            field_manager: FIELD_MANAGER.to_string(),
            concurrency: concurrency.max(1),
            own_writes: None,
            health: None,
            writes: None,
        }
    }

    /// Notes the resource version of every applied object in `own` (the drift watches of
    /// the cluster then ignore the events of these writes).
    pub fn with_own_writes(mut self, own: std::sync::Arc<super::own_writes::OwnWrites>) -> Self {
        self.own_writes = Some(own);
        self
    }

    /// Bounds the object writes in flight with `permits`, shared by every Applier of the API
    /// server (`None`: no bound).
    pub fn with_write_bound(
        mut self,
        permits: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    ) -> Self {
        self.writes = permits;
        self
    }

    /// A permit for one object write, when writes are bounded (held until dropped).
    async fn write_permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        match &self.writes {
            Some(permits) => permits.acquire().await.ok(),
            None => None,
        }
    }

    /// Reads health from `book` (the watches of this cluster) and notes applies there.
    pub fn with_health_book(mut self, book: std::sync::Arc<HealthBook>) -> Self {
        self.health = Some(book);
        self
    }

    /// The health the watches of this cluster saw, if they are kept.
    pub fn health_book(&self) -> Option<&HealthBook> {
        self.health.as_deref()
    }

    /// The client every request of this Applier goes through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn field_manager(&self) -> &str {
        &self.field_manager
    }

    /// Which resource serves a kind (cached); `None` when the cluster has no such kind.
    pub async fn resolve(
        &self,
        group: &str,
        version: &str,
        kind: &str,
    ) -> Result<Option<Resolved>, kube::Error> {
        self.discovery
            .resolve(&self.discovery_client, group, version, kind)
            .await
    }

    /// [`Self::resolve`] for an object's key.
    pub async fn resolve_key(&self, key: &InventoryEntry) -> Result<Option<Resolved>, kube::Error> {
        self.resolve(&key.group, &key.version, &key.kind).await
    }

    /// The cluster's version and API versions, for Helm (cached per cluster).
    pub async fn capabilities(
        &self,
    ) -> Result<std::sync::Arc<crate::render::Capabilities>, kube::Error> {
        self.discovery.capabilities(&self.discovery_client).await
    }

    /// Forgets what discovery knew about a group (after CRDs of that group changed).
    pub fn invalidate(&self, group: &str) {
        self.discovery.invalidate(group);
    }

    /// The API for one object, namespaced or cluster-scoped.
    pub fn api(&self, resolved: &Resolved, namespace: Option<&str>) -> Api<DynamicObject> {
        match (resolved.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &resolved.resource),
            _ => Api::all_with(self.client.clone(), &resolved.resource),
        }
    }

    /// Server-side apply parameters: this Applier's field manager, forced or not, dry-run
    /// or not.
    pub fn params(&self, force: bool, dry_run: bool) -> PatchParams {
        let mut p = PatchParams::apply(&self.field_manager);
        if force {
            p = p.force();
        }
        if dry_run {
            p = p.dry_run();
        }
        p
    }

    /// The live object, if it exists.
    pub async fn live(
        &self,
        resolved: &Resolved,
        key: &InventoryEntry,
    ) -> Result<Option<Value>, kube::Error> {
        Ok(self
            .api(resolved, key.namespace.as_deref())
            .get_opt(&key.name)
            .await?
            .map(|o| serde_json::to_value(o).unwrap_or(Value::Null)))
    }

    /// Every object of a resource in a namespace (or cluster-wide), by name.
    pub async fn list_by_name(
        &self,
        resolved: &Resolved,
        namespace: Option<&str>,
    ) -> Result<HashMap<String, Value>, kube::Error> {
        let list = self
            .api(resolved, namespace)
            .list(&ListParams::default())
            .await?;
        Ok(list
            .items
            .into_iter()
            .map(|o| {
                (
                    o.metadata.name.clone().unwrap_or_default(),
                    serde_json::to_value(o).unwrap_or(Value::Null),
                )
            })
            .collect())
    }

    /// What the API server would make of the object after an apply (a dry-run).
    pub async fn dry_apply(
        &self,
        resolved: &Resolved,
        d: &Desired,
        force: bool,
    ) -> Result<Value, kube::Error> {
        let _permit = self.write_permit().await;
        let dry = self
            .api(resolved, d.key.namespace.as_deref())
            .patch(
                &d.key.name,
                &self.params(force, true),
                &Patch::Apply(&d.object),
            )
            .await?;
        Ok(serde_json::to_value(dry).unwrap_or(Value::Null))
    }

    /// The object as it is and as an apply would leave it; `None` when the cluster has no
    /// such kind. A new object is dry-run with force (no other manager can hold it).
    pub async fn diff(&self, d: &Desired, force: bool) -> Result<Option<Diffed>, ObjectError> {
        let err = |e: kube::Error| ObjectError::new(&d.key, &e);
        let Some(resolved) = self.resolve_key(&d.key).await.map_err(err)? else {
            return Ok(None);
        };
        let live = self.live(&resolved, &d.key).await.map_err(err)?;
        let after = self
            .dry_apply(&resolved, d, force || live.is_none())
            .await
            .map_err(err)?;
        Ok(Some(Diffed { live, after }))
    }

    /// Dry-runs every object (bounded concurrency); per-object results in input order.
    ///
    /// The dry-run's answer says whether the object exists: a dry-run create carries no
    /// `resourceVersion`. Only an object that exists is read (one GET), for what the apply
    /// would change and which Application it is labelled for; a new one costs no read. (A
    /// LIST per kind and namespace instead costs the API server every object of that
    /// namespace, thousands on a shared one, for each sync.)
    pub async fn dry_run(
        &self,
        items: &[(&Desired, &Resolved)],
        force: bool,
    ) -> Vec<Result<Checked, ObjectError>> {
        let jobs: Vec<_> = items
            .iter()
            .map(|&(d, r)| async move {
                let dry = self
                    .dry_apply(r, d, force)
                    .await
                    .map_err(|e| ObjectError::new(&d.key, &e))?;
                if !exists(&dry) {
                    return Ok(Checked {
                        change: Change::Created,
                        foreign_owner: None,
                    });
                }
                Ok(match self.live(r, &d.key).await {
                    Ok(live) => Checked {
                        change: classify(live.as_ref(), &dry),
                        foreign_owner: live
                            .as_ref()
                            .and_then(|l| super::foreign_owner(&d.object, l)),
                    },
                    Err(e) => {
                        // Patch rights without read rights: it exists, so it changes.
                        tracing::debug!(object = %describe(&d.key), error = %api_message(&e), "cannot read the live object");
                        Checked {
                            change: Change::Configured,
                            foreign_owner: None,
                        }
                    }
                })
            })
            .collect();
        concurrent::run(jobs, self.concurrency).await
    }

    /// Applies every object (bounded concurrency); the live objects or per-object errors,
    /// in input order.
    pub async fn apply(
        &self,
        items: &[(&Desired, &Resolved)],
        force: bool,
    ) -> Vec<Result<Value, ObjectError>> {
        let params = self.params(force, false);
        let jobs: Vec<_> = items
            .iter()
            .map(|&(d, r)| {
                let api = self.api(r, d.key.namespace.as_deref());
                let params = &params;
                async move {
                    let permit = self.write_permit().await;
                    let applied = api
                        .patch(&d.key.name, params, &Patch::Apply(&d.object))
                        .await
                        .map_err(|e| ObjectError::new(&d.key, &e))?;
                    drop(permit);
                    if let (Some(own), Some(uid), Some(rv)) = (
                        &self.own_writes,
                        &applied.metadata.uid,
                        &applied.metadata.resource_version,
                    ) {
                        own.record(uid, rv);
                    }
                    if let (Some(book), Some(rv)) =
                        (&self.health, &applied.metadata.resource_version)
                        && crate::health::has_check(&d.key.group, &d.key.kind)
                    {
                        book.applied(
                            (
                                d.key.group.clone(),
                                d.key.kind.clone(),
                                d.key.namespace.clone(),
                                d.key.name.clone(),
                            ),
                            rv,
                        );
                    }
                    Ok(serde_json::to_value(applied).unwrap_or(Value::Null))
                }
            })
            .collect();
        concurrent::run(jobs, self.concurrency).await
    }
}

/// Whether a dry-run's answer is of an object that exists: the API server stores nothing
/// on a dry-run, so a dry-run create has no `resourceVersion`.
fn exists(dry_run: &Value) -> bool {
    dry_run["metadata"]["resourceVersion"]
        .as_str()
        .is_some_and(|rv| !rv.is_empty())
}

#[cfg(test)]
mod message_tests {
    use super::*;

    #[test]
    fn invalid_objects_are_described_by_their_causes_not_their_dumps() {
        let dump = format!(
            "core.PodTemplateSpec{{ObjectMeta:v1.ObjectMeta{{{}}}}}",
            "x".repeat(3000)
        );
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 422, "reason": "Invalid",
            "message": format!("Job.batch \"migrate\" is invalid: spec.template: Invalid value: {dump}: field is immutable"),
            "details": {"name": "migrate", "group": "batch", "kind": "Job", "causes": [
                {"reason": "FieldValueInvalid", "field": "spec.template",
                 "message": format!("Invalid value: {dump}: field is immutable")}
            ]}
        }))
        .unwrap();
        let message = api_message(&kube::Error::Api(Box::new(status)));
        assert_eq!(
            message,
            "Job.batch \"migrate\" is invalid: spec.template: field is immutable"
        );
    }

    #[test]
    fn a_dry_run_create_is_told_by_its_missing_resource_version() {
        let created =
            serde_json::json!({"metadata": {"name": "a", "uid": "u", "creationTimestamp": "t"}});
        let empty = serde_json::json!({"metadata": {"name": "a", "resourceVersion": ""}});
        let existing = serde_json::json!({"metadata": {"name": "a", "resourceVersion": "269"}});
        assert!(!exists(&created));
        assert!(!exists(&empty));
        assert!(exists(&existing));
    }
}

#[cfg(test)]
mod write_bound_tests {
    use super::*;
    use kube::core::ApiResource;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An API server that answers every request after 50 ms and counts how many it holds
    /// at once.
    async fn slow_server() -> (String, Arc<AtomicUsize>) {
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (n, m) = (now.clone(), most.clone());
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let (now, most) = (n.clone(), m.clone());
            async move {
                let held = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(held, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                let name = uri
                    .path()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                // A dry-run create has no resourceVersion (so nothing is read after it).
                let version = (!uri.query().unwrap_or_default().contains("dryRun")).then_some("7");
                axum::Json(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": "team", "uid": name,
                    "resourceVersion": version}}))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (url, most)
    }

    #[tokio::test]
    async fn writes_in_flight_never_exceed_the_api_servers_bound() {
        let (url, most) = slow_server().await;
        let client = Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let permits = Arc::new(tokio::sync::Semaphore::new(3));
        // Two Appliers (two identities on one API server) share the bound.
        let appliers: Vec<Applier> = (0..2)
            .map(|_| {
                Applier::on_cluster(client.clone(), client.clone(), Default::default(), 16)
                    .with_write_bound(Some(permits.clone()))
            })
            .collect();
        let resolved = Resolved {
            resource: ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
            namespaced: true,
        };
        let desired: Vec<Desired> = (0..12)
            .map(|i| Desired {
                key: InventoryEntry {
                    group: String::new(),
                    version: "v1".into(),
                    kind: "ConfigMap".into(),
                    namespace: Some("team".into()),
                    name: format!("cm-{i}"),
                },
                object: serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("cm-{i}"), "namespace": "team"}}),
                namespaced: true,
            })
            .collect();
        let items: Vec<(&Desired, &Resolved)> = desired.iter().map(|d| (d, &resolved)).collect();
        let (a, b) = futures::join!(
            appliers[0].apply(&items, true),
            appliers[1].dry_run(&items, true)
        );
        assert!(a.iter().all(Result::is_ok), "{a:?}");
        assert!(b.iter().all(Result::is_ok), "{b:?}");
        assert_eq!(
            most.load(Ordering::SeqCst),
            3,
            "at most 3 at once, and 3 used"
        );
    }
}
