//! GitRepository reconciler: fetch, write the artifact, report in status; keep the last
//! good artifact when a fetch fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};

use super::context::{Context, remove_dir};
use super::status::{apply_status, with_jitter};
use crate::api::GitRepository;
use crate::api::conditions::{self, Status};
use crate::api::git_repository::Artifact;
use crate::api::reasons::git_repository as reasons;
use crate::error::Result;
use crate::source::artifact::ArtifactError;
use crate::source::fetch_gate::Busy;
use crate::source::git::{self, Credentials, GitError, Reference};

/// Why a fetch produced no artifact.
#[derive(Debug, thiserror::Error)]
pub enum SourceFailure {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("{0}")]
    Secret(String),
    /// The fetch task itself failed (panicked or was cancelled).
    #[error("fetch task failed: {0}")]
    Task(String),
    /// The fetch did not start (see [`crate::source::fetch_gate`]).
    #[error(transparent)]
    Busy(#[from] crate::source::fetch_gate::Busy),
    /// `spec.verify`: a commit is not signed by a trusted key.
    #[error("{0}")]
    Verification(String),
}

impl SourceFailure {
    fn reason(&self) -> &'static str {
        match self {
            SourceFailure::Git(e) => e.reason(),
            SourceFailure::Artifact(
                ArtifactError::SymlinkEscapes { .. }
                | ArtifactError::SymlinkLoop { .. }
                | ArtifactError::UnsafePath(_)
                | ArtifactError::Tree(_)
                | ArtifactError::TooLarge { .. },
            ) => reasons::UNSAFE_CONTENT,
            SourceFailure::Artifact(_) => reasons::STORAGE_FAILED,
            SourceFailure::Secret(_) => reasons::SECRET_INVALID,
            SourceFailure::Task(_) => reasons::FETCH_FAILED,
            SourceFailure::Busy(_) => reasons::FETCH_STALLED,
            SourceFailure::Verification(_) => reasons::VERIFICATION_FAILED,
        }
    }
}

pub async fn credentials(
    client: &kube::Client,
    ns: &str,
    repo: &GitRepository,
) -> Result<Option<Credentials>, SourceFailure> {
    let Some(secret_ref) = &repo.spec.secret_ref else {
        return Ok(None);
    };
    let data = super::secrets::read(client, ns, &secret_ref.name)
        .await
        .map_err(SourceFailure::Secret)?;
    let get = |k: &str| {
        data.get(k)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    if let Some(identity) = get("identity") {
        let known_hosts = get("known_hosts")
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| {
                SourceFailure::Secret(format!(
                    "Secret {} has an identity but no known_hosts; known_hosts is mandatory",
                    secret_ref.name
                ))
            })?;
        return Ok(Some(Credentials::Ssh {
            identity,
            known_hosts,
        }));
    }
    match (get("username"), get("password"), get("bearerToken")) {
        (Some(username), Some(password), _) => Ok(Some(Credentials::Basic { username, password })),
        (_, _, Some(token)) => Ok(Some(Credentials::Bearer { token })),
        _ => Err(SourceFailure::Secret(format!(
            "Secret {} has neither username/password, bearerToken nor identity/known_hosts",
            secret_ref.name
        ))),
    }
}

/// One fetch of a GitRepository, moved onto a blocking thread.
struct FetchJob {
    ns: String,
    name: String,
    url: String,
    reference: Reference,
    creds: Option<Credentials>,
    deadline: Instant,
    ignore: Vec<String>,
    /// The artifact in status; kept when the commit is unchanged and its tree is on disk.
    current: Option<(String, String)>,
    /// Write the artifact again even when the commit is unchanged (the spec changed).
    rewrite: bool,
    /// The proxy that cuts libgit2's HTTP(S) connections at the deadline (an exact
    /// commit's fetch; other HTTP fetches keep their deadline themselves).
    proxy: Option<String>,
    /// `spec.verify`: the keys the new commits must be signed by, and whether every commit
    /// since the last artifact's must be.
    verify: Option<(std::sync::Arc<crate::source::verify::TrustedKeys>, bool)>,
}

/// Whether a failure may come from a damaged Git cache (a corrupt pack or object
/// database), so that a fresh clone is worth one try.
fn may_be_corrupt_cache(e: &SourceFailure) -> bool {
    matches!(
        e,
        SourceFailure::Git(GitError::Fetch { .. } | GitError::RefNotFound { .. })
            | SourceFailure::Artifact(ArtifactError::Git(_))
    )
}

/// Fetches into `cache` and, when the commit is new, writes its artifact. Blocking.
fn fetch_into(
    ctx: &Context,
    job: &FetchJob,
    cache: &std::path::Path,
) -> Result<(git::Fetched, Option<String>), SourceFailure> {
    let started = Instant::now();
    let fetched = crate::source::git_fetch::fetch(
        cache,
        &job.url,
        &job.reference,
        job.creds.as_ref(),
        job.deadline,
        job.proxy.as_deref(),
    )?;
    let fetch_ms = started.elapsed().as_millis() as u64;
    if !job.rewrite
        && let Some((commit, digest)) = &job.current
        && commit == &fetched.commit
        && ctx
            .artifacts
            .dir(&job.ns, &job.name, commit, digest)
            .is_dir()
    {
        return Ok((fetched, None));
    }
    let repo = git2::Repository::open_bare(cache).map_err(ArtifactError::Git)?;
    let oid = git2::Oid::from_str(&fetched.commit).map_err(ArtifactError::Git)?;
    if let Some((keys, all_since_last)) = &job.verify {
        use crate::source::verify;
        let last = job
            .current
            .as_ref()
            .and_then(|(c, _)| git2::Oid::from_str(c).ok());
        let commits = verify::commits_to_check(&repo, oid, last, *all_since_last)
            .map_err(SourceFailure::Verification)?;
        for commit in &commits {
            verify::check_commit(&repo, *commit, keys).map_err(SourceFailure::Verification)?;
        }
        tracing::debug!(namespace = %job.ns, name = %job.name, commits = commits.len(), "signatures verified");
    }
    let written = Instant::now();
    let (dest, digest) = ctx
        .artifacts
        .write(&job.ns, &job.name, &repo, oid, &job.ignore)?;
    tracing::info!(namespace = %job.ns, name = %job.name, revision = %fetched.revision, fetch_ms,
        artifact_ms = written.elapsed().as_millis() as u64, "fetched and wrote the artifact");
    // Older trees go in the background: nothing waits for them (a large repository's tree
    // takes as long to remove as to write), and a tree still leased by a render stays.
    let (store, ns, name) = (ctx.artifacts.clone(), job.ns.clone(), job.name.clone());
    let keep = dest.clone();
    std::thread::spawn(move || store.collect(&ns, &name, &keep));
    Ok((fetched, Some(digest)))
}

/// Fetches and stores the artifact; a cache that fails in a way a damaged object database
/// would is replaced by a fresh clone (made beside it, swapped in only when it works, so an
/// unreachable server never costs the cache). Blocking.
fn fetch_and_store(
    ctx: &Context,
    job: &FetchJob,
) -> Result<(git::Fetched, Option<String>), SourceFailure> {
    let cache = ctx.git_cache(&job.ns, &job.name);
    if let Some(parent) = cache.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ArtifactError::Io {
            path: parent.display().to_string(),
            source: e,
        })?;
    }
    let existed = cache.exists();
    let first = fetch_into(ctx, job, &cache);
    let Err(failure) = first else {
        return first;
    };
    if !existed || !may_be_corrupt_cache(&failure) || Instant::now() >= job.deadline {
        return Err(failure);
    }
    // Beside the cache, under a name no source can have (the sweep leaves it alone).
    let fresh = cache.with_file_name(format!("{}_reclone", job.name));
    remove_dir(&fresh);
    match fetch_into(ctx, job, &fresh) {
        Ok(done) => {
            tracing::warn!(namespace = %job.ns, name = %job.name, error = %failure,
                "the Git cache failed and a fresh clone worked; replacing the cache");
            remove_dir(&cache);
            std::fs::rename(&fresh, &cache).map_err(|e| ArtifactError::Io {
                path: cache.display().to_string(),
                source: e,
            })?;
            Ok(done)
        }
        Err(_) => {
            remove_dir(&fresh);
            Err(failure)
        }
    }
}

/// When a source refused for its namespace's bound asks again without being called.
const DEFERRED_RETRY: Duration = Duration::from_secs(10);

/// Stack of a fetch thread.
const FETCH_STACK_BYTES: usize = 64 << 20;

/// Fetches the source and stores its artifact, on a thread of its own, bounded by
/// `timeout` and by the fetch gate.
async fn fetch(
    ctx: &Arc<Context>,
    repo: &GitRepository,
    timeout: Duration,
) -> std::result::Result<(git::Fetched, Option<String>), SourceFailure> {
    let (ns, name) = (repo.namespace().unwrap_or_default(), repo.name_any());
    ctx.check_file_url(&repo.spec.url)
        .map_err(|e| SourceFailure::Git(e.into()))?;
    // Refused at once when this source's last fetch has not returned or its namespace has
    // as many running as it may (before any Secret is read: a source in line costs no
    // request); the slot is freed when the fetch's thread returns.
    let slot = ctx.fetch_gate.admit(&ns, &name, timeout).await?;
    let creds = credentials(&ctx.client, &ns, repo).await?;
    let verify = match &repo.spec.verify {
        Some(v) => {
            let data = crate::controller::secrets::read(&ctx.client, &ns, &v.secret_ref.name)
                .await
                .map_err(SourceFailure::Secret)?;
            let secret = format!("{ns}/{}", v.secret_ref.name);
            let keys = crate::source::verify::TrustedKeys::from_secret_data(&secret, &data)
                .map_err(SourceFailure::Secret)?;
            Some((
                std::sync::Arc::new(keys),
                v.mode == crate::api::git_repository::VerifyMode::AllSinceLast,
            ))
        }
        None => None,
    };
    // A spec change (e.g. new ignore patterns) rewrites the artifact of the same commit.
    let rewrite =
        repo.status.as_ref().and_then(|s| s.observed_generation) != repo.metadata.generation;
    let reference = Reference::from_spec(repo.spec.git_ref.as_ref());
    // HTTP(S) fetches of a ref keep their deadline themselves (`source::git_http`). An
    // exact commit is fetched by libgit2 with its history, through a loopback proxy that
    // closes the connections at the deadline (libgit2 alone would wait on a silent server
    // until the connection dies).
    let by_libgit2 = matches!(reference, Reference::Commit { .. });
    let proxy = match git::http_endpoint(&repo.spec.url).filter(|_| by_libgit2) {
        Some((host, port)) => Some(
            crate::source::deadline_proxy::DeadlineProxy::start(
                &host,
                port,
                tokio::time::Instant::now() + timeout,
            )
            .await
            .map_err(|e| SourceFailure::Task(format!("cannot start the fetch proxy: {e}")))?
            .url(),
        ),
        None => None,
    };
    let job = FetchJob {
        proxy,
        ns,
        name,
        url: repo.spec.url.clone(),
        reference,
        creds,
        deadline: Instant::now() + timeout,
        ignore: repo.spec.ignore.clone(),
        current: repo
            .status
            .as_ref()
            .and_then(|s| s.artifact.as_ref())
            .and_then(|a| {
                super::context::revision_commit(&a.revision)
                    .map(|c| (c.to_string(), a.digest.clone()))
            }),
        rewrite,
        verify,
    };
    let ctx2 = ctx.clone();
    let started = Instant::now();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    // A thread of its own with a large stack: libgit2 walks trees recursively while it
    // packs and indexes, and a tenant's tree may nest deep (the artifact walk bounds it,
    // but the fetch comes first). The stack is reserved, not committed.
    std::thread::Builder::new()
        .name("git-fetch".into())
        .stack_size(FETCH_STACK_BYTES)
        .spawn(move || {
            // HTTP fetches wait on the controller's runtime (`source::git_http`).
            let _runtime = runtime.enter();
            let result = fetch_and_store(&ctx2, &job);
            drop(slot);
            let _ = tx.send(result);
        })
        .map_err(|e| SourceFailure::Task(e.to_string()))?;
    let result = match tokio::time::timeout(timeout + Duration::from_secs(5), rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(SourceFailure::Task("the fetch thread stopped".into())),
        Err(_) => Err(GitError::Timeout {
            url: crate::source::url_policy::redact(&repo.spec.url),
        }
        .into()),
    };
    ctx.metrics
        .git_fetches
        .with_label_values(&[if result.is_ok() { "ok" } else { "error" }])
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn apply(repo: Arc<GitRepository>, ctx: Arc<Context>) -> Result<Action> {
    let ns = repo.namespace().unwrap_or_default();
    let name = repo.name_any();
    let api: Api<GitRepository> = Api::namespaced(ctx.client.clone(), &ns);
    let interval = ctx.interval(&repo.spec.interval, Duration::from_secs(60));
    let timeout = repo.spec.timeout.parse().unwrap_or(Duration::from_secs(60));
    let generation = repo.metadata.generation;
    let mut status = repo.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    // The plans are the plan reconciler's (its own field manager): never written here, so
    // an older copy never undoes its writes.
    status.plans.clear();
    let mut before = repo.status.clone();
    if let Some(b) = before.as_mut() {
        b.plans.clear();
    }

    if repo.spec.suspend {
        conditions::set_condition(
            &mut status.conditions,
            conditions::new_condition(
                conditions::READY,
                Status::Unknown,
                reasons::SUSPENDED,
                "fetching is suspended",
                generation,
                Timestamp::now(),
            ),
        );
        apply_status(&api, &name, &status).await?;
        return Ok(Action::await_change());
    }

    let request = repo
        .annotations()
        .get(crate::api::annotations::REQUEST_ANNOTATION)
        .cloned();
    // Woken by a write that asks for nothing (its own status, a label, a plan): the
    // artifact stands until the interval's end.
    if status.artifact.is_some()
        && let Some(left) =
            ctx.last_fetches
                .not_due(&ns, &name, generation, request.as_deref(), interval)
    {
        return Ok(Action::requeue(left));
    }
    let outcome = fetch(&ctx, &repo, timeout).await;
    if let Err(SourceFailure::Busy(busy @ (Busy::NamespaceFull { .. } | Busy::Saturated(_)))) =
        &outcome
    {
        // Not a failure of this source: nothing in status changes. Refused for its
        // namespace, it is in line and called when a slot frees (`FetchGate::turns`); the
        // requeue only guards against a call spent on a source deleted meanwhile.
        tracing::debug!(namespace = %ns, name = %name, reason = %busy, "fetch deferred");
        let again = match busy {
            Busy::NamespaceFull { .. } => DEFERRED_RETRY,
            _ => Duration::from_secs(1),
        };
        return Ok(Action::requeue(with_jitter(again, &name)));
    }
    ctx.last_fetches
        .record(&ns, &name, generation, request.as_deref());
    let now = Timestamp::now();
    match outcome {
        Ok((fetched, digest)) => {
            let same = status
                .artifact
                .as_ref()
                .is_some_and(|a| a.revision == fetched.revision);
            if !same || digest.is_some() {
                let digest = digest
                    .or_else(|| status.artifact.as_ref().map(|a| a.digest.clone()))
                    .unwrap_or_default();
                status.artifact = Some(Artifact {
                    revision: fetched.revision.clone(),
                    digest,
                    fetched_at: Time(now),
                });
                tracing::info!(namespace = %ns, name = %name, revision = %fetched.revision, "stored new artifact");
            }
            conditions::set_condition(
                &mut status.conditions,
                conditions::new_condition(
                    conditions::READY,
                    Status::True,
                    reasons::SUCCEEDED,
                    format!("stored artifact for revision {}", fetched.revision),
                    generation,
                    now,
                ),
            );
        }
        Err(failure) => {
            tracing::warn!(namespace = %ns, name = %name, reason = failure.reason(), error = %failure, "fetch failed");
            conditions::set_condition(
                &mut status.conditions,
                conditions::new_condition(
                    conditions::READY,
                    Status::False,
                    failure.reason(),
                    failure.to_string(),
                    generation,
                    now,
                ),
            );
        }
    }
    status.last_handled_request = request;
    if Some(&status) != before.as_ref() {
        apply_status(&api, &name, &status).await?;
    }
    Ok(Action::requeue(with_jitter(interval, &name)))
}

async fn reconcile(repo: Arc<GitRepository>, ctx: Arc<Context>) -> Result<Action> {
    let api: Api<GitRepository> =
        Api::namespaced(ctx.client.clone(), &repo.namespace().unwrap_or_default());
    if super::source_sweep::drop_old_finalizer(&api, &repo).await? {
        // The change wakes the next reconcile (or, in deletion, the source is gone).
        return Ok(Action::await_change());
    }
    if repo.metadata.deletion_timestamp.is_some() {
        // Held by someone else's finalizer: nothing to fetch for a source on its way out.
        return Ok(Action::await_change());
    }
    apply(repo, ctx).await
}

pub async fn run(ctx: Arc<Context>, api: Api<GitRepository>, scope: Option<String>) {
    let (reader, writer) = reflector::store();
    let (store, follow_ctx) = (reader.clone(), ctx.clone());
    // The store is updated before a deletion or a finished list is followed, so a sweep
    // sees every live source.
    let changes = watcher(api, ctx.watch())
        .default_backoff()
        .reflect(writer)
        .then(move |event| {
            let (ctx, store, scope) = (follow_ctx.clone(), store.clone(), scope.clone());
            async move {
                if let Ok(e) = &event {
                    super::source_sweep::follow(&ctx, &store, scope.as_deref(), e).await;
                }
                event
            }
        })
        .applied_objects();
    // A source refused for its namespace's bound is called when a slot of it frees.
    let turns = ctx
        .fetch_gate
        .turns()
        .map(|(ns, name)| ObjectRef::new(&name).within(&ns));
    Controller::for_stream(changes, reader)
        .reconcile_on(turns)
        .with_config(ctx.controller_config())
        .trigger_backoff(super::EachWatchBacksOff)
        .graceful_shutdown_on(super::shutdown_signal())
        .run(
            |obj, ctx| super::measured(obj, ctx, reconcile),
            super::error_policy,
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}
