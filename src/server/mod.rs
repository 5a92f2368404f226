//! The controller's HTTP servers: webhook receivers on `/hook/<token>` on one listener,
//! `/healthz`, `/readyz` and `/metrics` on another.
//! Bounded everywhere: body size (413), header and body read time, connections, and the
//! queue between the handlers and the reconcilers (503 when full).

pub mod dispatch;
pub mod pull_request;
pub mod verify;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

use crate::api::receiver::{ReceiverTarget, ReceiverType};
use dispatch::Trigger;

/// Largest webhook body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Time allowed for the request body.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for the request headers (a slow client is cut off early).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 256;

/// A Receiver as the server knows it.
#[derive(Clone)]
pub struct Endpoint {
    pub namespace: String,
    pub name: String,
    pub kind: ReceiverType,
    pub secret: Vec<u8>,
    pub targets: Vec<ReceiverTarget>,
}

/// Receivers by path token, filled by the Receiver reconciler.
pub struct Endpoints {
    by_token: RwLock<HashMap<String, Endpoint>>,
    /// Whether this replica serves webhooks: a standby (not holding the Lease) answers 503,
    /// so that only the leader triggers.
    active: std::sync::atomic::AtomicBool,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            by_token: Default::default(),
            active: std::sync::atomic::AtomicBool::new(true),
        }
    }
}

impl Endpoints {
    /// Serve webhooks (the leader, or a controller without leader election) or not.
    pub fn set_active(&self, active: bool) {
        self.active
            .store(active, std::sync::atomic::Ordering::Release);
    }

    fn active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Registers `endpoint` under `token`, replacing what this Receiver had before.
    pub fn set(&self, token: String, endpoint: Endpoint) {
        let mut map = self.by_token.write().expect("endpoints");
        map.retain(|_, e| !(e.namespace == endpoint.namespace && e.name == endpoint.name));
        map.insert(token, endpoint);
    }

    pub fn remove(&self, namespace: &str, name: &str) {
        self.by_token
            .write()
            .expect("endpoints")
            .retain(|_, e| !(e.namespace == namespace && e.name == name));
    }

    fn get(&self, token: &str) -> Option<Endpoint> {
        self.by_token.read().expect("endpoints").get(token).cloned()
    }
}

#[derive(Clone)]
struct AppState {
    endpoints: Arc<Endpoints>,
    queue: tokio::sync::mpsc::Sender<Trigger>,
    metrics: Arc<crate::metrics::Metrics>,
}

fn reply(status: StatusCode, message: impl Into<String>) -> axum::response::Response {
    (status, format!("{}\n", message.into())).into_response()
}

async fn hook(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> axum::response::Response {
    let kind = state.endpoints.get(&token).map(|e| e.kind);
    let response = handle(&state, &token, headers, body).await;
    let label = match kind {
        Some(ReceiverType::Github) => "github",
        Some(ReceiverType::Gitlab) => "gitlab",
        Some(ReceiverType::GenericHmac) => "generic-hmac",
        Some(ReceiverType::Gitea) => "gitea",
        Some(ReceiverType::Registry) => "registry",
        None => "unknown",
    };
    state
        .metrics
        .webhooks
        .with_label_values(&[label, response.status().as_str()])
        .inc();
    response
}

async fn handle(
    state: &AppState,
    token: &str,
    headers: HeaderMap,
    body: Body,
) -> axum::response::Response {
    // A standby does not know the receivers (their reconciler runs on the leader only).
    if !state.endpoints.active() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            "standby: this replica does not hold the Lease; retry\n",
        )
            .into_response();
    }
    // Unknown paths are refused before the body is read.
    let Some(endpoint) = state.endpoints.get(token) else {
        return reply(StatusCode::NOT_FOUND, "no receiver at this path");
    };
    if headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_BODY_BYTES)
    {
        return reply(StatusCode::PAYLOAD_TOO_LARGE, "body over 1 MiB");
    }
    let bytes = match tokio::time::timeout(READ_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES))
        .await
    {
        Err(_) => return reply(StatusCode::REQUEST_TIMEOUT, "body not received in time"),
        Ok(Err(_)) => return reply(StatusCode::PAYLOAD_TOO_LARGE, "body over 1 MiB"),
        Ok(Ok(b)) => b,
    };
    let verdict = match verify::verify(endpoint.kind, &endpoint.secret, &headers, &bytes) {
        Ok(v) => v,
        Err(rejection) => {
            tracing::info!(namespace = %endpoint.namespace, receiver = %endpoint.name, reason = %rejection, "webhook refused");
            let status =
                StatusCode::from_u16(rejection.status()).unwrap_or(StatusCode::BAD_REQUEST);
            return reply(status, rejection.to_string());
        }
    };
    let (images, pull_request) = match verdict {
        verify::Verdict::Ignore(why) => return reply(StatusCode::OK, format!("ignored: {why}")),
        verify::Verdict::Trigger => (None, None),
        verify::Verdict::TriggerImages(repos) => (Some(repos), None),
        verify::Verdict::PullRequest(event) => (None, Some(event)),
    };
    let trigger = Trigger {
        namespace: endpoint.namespace.clone(),
        receiver: endpoint.name.clone(),
        targets: endpoint.targets.clone(),
        images,
        pull_request,
    };
    match state.queue.try_send(trigger) {
        Ok(()) => reply(StatusCode::ACCEPTED, "accepted"),
        Err(_) => reply(StatusCode::SERVICE_UNAVAILABLE, "busy; retry later"),
    }
}

/// The webhook routes (the receiver listener).
fn hooks_router(
    endpoints: Arc<Endpoints>,
    queue: tokio::sync::mpsc::Sender<Trigger>,
    metrics: Arc<crate::metrics::Metrics>,
) -> Router {
    Router::new()
        .route("/hook/{token}", post(hook))
        .with_state(AppState {
            endpoints,
            queue,
            metrics,
        })
}

/// Health and metrics (their own listener, so a flood of webhook connections never makes
/// a probe fail).
fn ops_router(metrics: Arc<crate::metrics::Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(
                |State(metrics): State<Arc<crate::metrics::Metrics>>| async move {
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        metrics.render(),
                    )
                },
            ),
        )
        .with_state(metrics)
}

/// Bounds of one listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Connections of one client address at once; more are closed at once.
    pub per_client: usize,
    /// Time allowed for the request headers.
    pub header_timeout: Duration,
    /// Longest life of a connection, whatever the client does.
    pub lifetime: Duration,
}

/// The receiver listener: a slow client gets little of it.
pub const HOOK_LIMITS: Limits = Limits {
    max_connections: MAX_CONNECTIONS,
    per_client: 64,
    header_timeout: HEADER_TIMEOUT,
    lifetime: Duration::from_secs(60),
};

/// The health and metrics listener: probes and scrapes are quick.
pub const OPS_LIMITS: Limits = Limits {
    max_connections: 64,
    per_client: 16,
    header_timeout: HEADER_TIMEOUT,
    lifetime: Duration::from_secs(30),
};

/// Open connections per client address; a slot is given back when its guard drops.
#[derive(Clone, Default)]
struct PerClient(Arc<std::sync::Mutex<HashMap<std::net::IpAddr, usize>>>);

struct ClientSlot(PerClient, std::net::IpAddr);

impl PerClient {
    fn take(&self, ip: std::net::IpAddr, cap: usize) -> Option<ClientSlot> {
        let mut map = self.0.lock().expect("per-client connections");
        let n = map.entry(ip).or_default();
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(ClientSlot(self.clone(), ip))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = (self.0).0.lock().expect("per-client connections");
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

/// Serves the webhook receivers on `hooks` and health and metrics on `ops` (either may be
/// off) until `shutdown` resolves.
pub async fn serve(
    hooks: Option<SocketAddr>,
    ops: Option<SocketAddr>,
    endpoints: Arc<Endpoints>,
    queue: tokio::sync::mpsc::Sender<Trigger>,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let hooks_listener = match hooks {
        Some(a) => Some(tokio::net::TcpListener::bind(a).await?),
        None => None,
    };
    let ops_listener = match ops {
        Some(a) => Some(tokio::net::TcpListener::bind(a).await?),
        None => None,
    };
    if let Some(l) = &hooks_listener {
        tracing::info!(address = %l.local_addr()?, "receiver server listening");
    }
    if let Some(l) = &ops_listener {
        tracing::info!(address = %l.local_addr()?, "health and metrics server listening");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let hooks_task = hooks_listener.map(|l| {
        tokio::spawn(accept_loop(
            l,
            hooks_router(endpoints, queue, metrics.clone()),
            HOOK_LIMITS,
            stop_rx.clone(),
        ))
    });
    let ops_task = ops_listener
        .map(|l| tokio::spawn(accept_loop(l, ops_router(metrics), OPS_LIMITS, stop_rx)));
    shutdown.await;
    let _ = stop_tx.send(true);
    for t in [hooks_task, ops_task].into_iter().flatten() {
        let _ = t.await;
    }
    Ok(())
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let clients = PerClient::default();
    loop {
        let permit = tokio::select! {
            _ = stop.changed() => return,
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(slot) = clients.take(peer.ip(), limits.per_client) else {
            tracing::debug!(client = %peer.ip(), "too many connections from one client; closing");
            continue; // the stream is dropped: closed at once
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let (_permit, _slot) = (permit, slot);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(64 * 1024);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(limits.lifetime, conn).await;
        });
    }
}
