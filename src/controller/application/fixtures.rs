//! A fake API server for the reconciler's unit tests (in the manner of kube-rs
//! controller-rs's `fixtures.rs`, but over HTTP on loopback): it answers GETs from the
//! objects a test put in, answers everything else with the object at that path, and records
//! every request, so a reconcile's reads, its status write and its outcome are checked
//! without a cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};

/// One request the fake API server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub body: Value,
}

#[derive(Default)]
struct State {
    objects: HashMap<String, Value>,
    requests: Vec<Recorded>,
}

pub struct FakeApi {
    url: String,
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    pub async fn start() -> Self {
        let state: Arc<Mutex<State>> = Default::default();
        let shared = state.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
            let state = shared.clone();
            async move {
                let path = uri.path().to_string();
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let mut s = state.lock().expect("fake api");
                s.requests.push(Recorded {
                    method: method.to_string(),
                    path: path.clone(),
                    body,
                });
                let path = path.trim_end_matches("/status");
                match s.objects.get(path) {
                    Some(obj) => (StatusCode::OK, axum::Json(obj.clone())).into_response(),
                    None => (
                        StatusCode::NOT_FOUND,
                        axum::Json(json!({"kind": "Status", "apiVersion": "v1",
                            "status": "Failure", "reason": "NotFound", "code": 404,
                            "message": format!("{path} not found")})),
                    )
                        .into_response(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state }
    }

    /// Serves `obj` at `path` (e.g. `/apis/gantry.dev/v1alpha1/namespaces/team/applications/web`).
    pub fn put(&self, path: &str, obj: Value) {
        let mut s = self.state.lock().expect("fake api");
        s.objects.insert(path.to_string(), obj);
    }

    /// The object served at `path`, if any.
    pub fn object(&self, path: &str) -> Option<Value> {
        let s = self.state.lock().expect("fake api");
        s.objects.get(path).cloned()
    }

    /// A client configuration for this server.
    pub fn config(&self) -> kube::Config {
        let mut c = kube::Config::new(self.url.parse().unwrap());
        c.default_namespace = "default".into();
        c
    }

    /// Every request but GETs: (method, path, body).
    pub fn writes(&self) -> Vec<Recorded> {
        let s = self.state.lock().expect("fake api");
        s.requests
            .iter()
            .filter(|r| r.method != "GET")
            .cloned()
            .collect()
    }
}
