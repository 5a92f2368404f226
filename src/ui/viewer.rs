//! One viewer's view of the cluster: their client, and caches that watches made with it
//! fill (so a page shows exactly what that viewer may list and watch, and costs the API
//! server nothing). Every change a watch sees is announced on `changed`; the open pages
//! of that viewer follow it. Dropping the viewer stops its watches.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::broadcast;
use tokio::task::AbortHandle;

use crate::api::{Application, GitRepository, ImagePolicy, Notifier, Receiver};
use crate::cache::Readiness;

/// Where a viewer looks: every namespace, or these.
#[derive(Clone, Debug, PartialEq)]
pub enum Scope {
    All,
    Namespaces(Vec<String>),
}

/// What changed, as the open pages filter it: an Application page follows its own
/// Application only, the other pages every change.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub kind: &'static str,
    /// `namespace/name`; `None` when a whole list was (re)loaded.
    pub key: Option<String>,
}

/// The caches of one kind, one per namespace of the scope (one for all), and why a watch
/// fails when it does (e.g. forbidden).
pub struct Caches<K: kube::Resource<DynamicType = ()> + 'static> {
    stores: Vec<(String, Store<K>, Readiness)>,
    problems: Arc<Mutex<BTreeMap<String, String>>>,
}

impl<K> Caches<K>
where
    K: kube::Resource<DynamicType = ()>
        + kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    fn start(
        client: &Client,
        scope: &Scope,
        changed: &broadcast::Sender<Change>,
        tasks: &mut Vec<AbortHandle>,
    ) -> Self {
        let kind: &'static str = match K::kind(&()).as_ref() {
            "Application" => "Application",
            "GitRepository" => "GitRepository",
            "ImagePolicy" => "ImagePolicy",
            "Receiver" => "Receiver",
            _ => "Notifier",
        };
        let problems: Arc<Mutex<BTreeMap<String, String>>> = Default::default();
        let apis: Vec<(String, Api<K>)> = match scope {
            Scope::All => vec![(String::new(), Api::all(client.clone()))],
            Scope::Namespaces(nss) => nss
                .iter()
                .map(|ns| (ns.clone(), Api::namespaced(client.clone(), ns)))
                .collect(),
        };
        let mut stores = vec![];
        for (ns, api) in apis {
            let (reader, writer) = reflector::store();
            let (changed, problems) = (changed.clone(), problems.clone());
            let where_ = ns.clone();
            // What no page shows is not kept: each viewer holds caches of their own.
            let stream = watcher(api, watcher::Config::default().any_semantic())
                .default_backoff()
                .modify(|o| {
                    o.meta_mut().managed_fields = None;
                    if let Some(a) = o.meta_mut().annotations.as_mut() {
                        a.remove("kubectl.kubernetes.io/last-applied-configuration");
                    }
                })
                .reflect(writer);
            let task = tokio::spawn(async move {
                futures::pin_mut!(stream);
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(event) => {
                            problems.lock().expect("ui problems").remove(&where_);
                            let key = match &event {
                                watcher::Event::Apply(o) | watcher::Event::Delete(o) => {
                                    Some(format!(
                                        "{}/{}",
                                        o.meta().namespace.as_deref().unwrap_or_default(),
                                        o.meta().name.as_deref().unwrap_or_default()
                                    ))
                                }
                                watcher::Event::InitDone => None,
                                // Each object of a (re)list: announced once, at `InitDone`.
                                watcher::Event::Init | watcher::Event::InitApply(_) => continue,
                            };
                            let _ = changed.send(Change { kind, key });
                        }
                        Err(e) => {
                            problems
                                .lock()
                                .expect("ui problems")
                                .insert(where_.clone(), problem_of(&e));
                        }
                    }
                }
            });
            tasks.push(task.abort_handle());
            let ready = Readiness::of(&reader);
            stores.push((ns, reader, ready));
        }
        Self { stores, problems }
    }

    /// Everything cached, once the first lists are in (see `ready`).
    pub async fn all(&self) -> Vec<Arc<K>> {
        let mut out = vec![];
        for (ns, store, ready) in &self.stores {
            self.ready(ns, ready).await;
            out.extend(store.state());
        }
        out.sort_by(|a, b| {
            (&a.meta().namespace, &a.meta().name).cmp(&(&b.meta().namespace, &b.meta().name))
        });
        out
    }

    /// The object `ns/name`, if cached.
    pub async fn get(&self, ns: &str, name: &str) -> Option<Arc<K>> {
        let (where_, store, ready) = self
            .stores
            .iter()
            .find(|(w, _, _)| w.is_empty() || w == ns)?;
        self.ready(where_, ready).await;
        store.get(&reflector::ObjectRef::new(name).within(ns))
    }

    /// Waits for the first list of the cache of `ns` (at most a few seconds). A namespace
    /// whose watch is refused is not waited for: its cache would never be ready.
    async fn ready(&self, ns: &str, ready: &Readiness) {
        let refused = self.problems.lock().expect("ui problems").contains_key(ns);
        if !refused {
            let _ = tokio::time::timeout(Duration::from_secs(5), ready.wait()).await;
        }
    }

    pub fn problems(&self) -> Vec<String> {
        self.problems
            .lock()
            .expect("ui problems")
            .iter()
            .map(|(ns, why)| match ns.is_empty() {
                true => why.clone(),
                false => format!("namespace {ns}: {why}"),
            })
            .collect()
    }
}

/// A watch error in one line, without the API server's address.
fn problem_of(e: &watcher::Error) -> String {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => {
            format!("{} ({})", s.message, s.reason)
        }
        watcher::Error::WatchError(s) => format!("{} ({})", s.message, s.reason),
        _ => "the API server cannot be reached".into(),
    }
}

/// A viewer: who they are, their client (pages read, actions write with it) and their
/// caches. Applications and GitRepositories are watched from the start; the other kinds
/// once their page is first asked for.
pub struct Viewer {
    /// The user, as the API server names them (`None`: the kubeconfig's user).
    pub user: Option<String>,
    pub client: Client,
    /// The connection `client` was made from (the diff page builds its targets from it).
    pub config: kube::Config,
    pub scope: Scope,
    pub apps: Caches<Application>,
    pub repos: Caches<GitRepository>,
    policies: OnceLock<Caches<ImagePolicy>>,
    receivers: OnceLock<Caches<Receiver>>,
    notifiers: OnceLock<Caches<Notifier>>,
    pub changed: broadcast::Sender<Change>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Viewer {
    pub fn start(
        user: Option<String>,
        config: kube::Config,
        client: Client,
        scope: Scope,
    ) -> Arc<Self> {
        let (changed, _) = broadcast::channel(256);
        let mut tasks = vec![];
        let apps = Caches::start(&client, &scope, &changed, &mut tasks);
        let repos = Caches::start(&client, &scope, &changed, &mut tasks);
        Arc::new(Self {
            user,
            client,
            config,
            scope,
            apps,
            repos,
            policies: OnceLock::new(),
            receivers: OnceLock::new(),
            notifiers: OnceLock::new(),
            changed,
            tasks: Mutex::new(tasks),
        })
    }

    fn lazily<'a, K>(&self, cell: &'a OnceLock<Caches<K>>) -> &'a Caches<K>
    where
        K: kube::Resource<DynamicType = ()>
            + kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        cell.get_or_init(|| {
            let mut tasks = self.tasks.lock().expect("ui tasks");
            Caches::start(&self.client, &self.scope, &self.changed, &mut tasks)
        })
    }

    pub fn policies(&self) -> &Caches<ImagePolicy> {
        self.lazily(&self.policies)
    }

    pub fn receivers(&self) -> &Caches<Receiver> {
        self.lazily(&self.receivers)
    }

    pub fn notifiers(&self) -> &Caches<Notifier> {
        self.lazily(&self.notifiers)
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        for t in self.tasks.lock().expect("ui tasks").iter() {
            t.abort();
        }
    }
}
