//! The controller's HTTP server: webhook receivers on `/hook/<token>`, `/metrics`,
//! `/healthz`.
//! Bounded everywhere: body size (413), header and body read time, connections, and the
//! queue between the handlers and the reconcilers (503 when full).

pub mod dispatch;
pub mod metrics;
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
/// Time allowed for the request headers, and for the body.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
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
#[derive(Default)]
pub struct Endpoints {
    by_token: RwLock<HashMap<String, Endpoint>>,
}

impl Endpoints {
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
    metrics: Arc<metrics::Metrics>,
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
    let images = match verdict {
        verify::Verdict::Ignore(why) => return reply(StatusCode::OK, format!("ignored: {why}")),
        verify::Verdict::Trigger => None,
        verify::Verdict::TriggerImages(repos) => Some(repos),
    };
    let trigger = Trigger {
        namespace: endpoint.namespace.clone(),
        receiver: endpoint.name.clone(),
        targets: endpoint.targets.clone(),
        images,
    };
    match state.queue.try_send(trigger) {
        Ok(()) => reply(StatusCode::ACCEPTED, "accepted"),
        Err(_) => reply(StatusCode::SERVICE_UNAVAILABLE, "busy; retry later"),
    }
}

/// The router, for tests and for [`serve`].
fn router(
    endpoints: Arc<Endpoints>,
    queue: tokio::sync::mpsc::Sender<Trigger>,
    metrics: Arc<metrics::Metrics>,
) -> Router {
    Router::new()
        .route("/hook/{token}", post(hook))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(|State(state): State<AppState>| async move {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    state.metrics.render(),
                )
            }),
        )
        .with_state(AppState {
            endpoints,
            queue,
            metrics,
        })
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    endpoints: Arc<Endpoints>,
    queue: tokio::sync::mpsc::Sender<Trigger>,
    metrics: Arc<metrics::Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(address = %listener.local_addr()?, "receiver server listening");
    let app = router(endpoints, queue, metrics);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .max_buf_size(64 * 1024);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            // A connection lives at most this long, whatever the client does.
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
        });
    }
}
