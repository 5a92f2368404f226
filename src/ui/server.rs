//! The web view's HTTP edge: routes, security headers and live updates. Pages are read from
//! caches that watches fill with the viewer's own client (the user of the kubeconfig), so
//! the view shows exactly what that user may list and watch, and a page costs the API
//! server nothing. Every change a watch sees is announced to the open pages as a
//! server-sent event; their script then fetches the page again (no polling per browser).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use maud::Markup;
use tokio::sync::broadcast;

use super::actions::{self, Action, Csrf};
use super::pages;
use super::view::{self, Filter};
use crate::api::{Application, GitRepository};

/// Where the view looks: every namespace, or these.
#[derive(Clone, Debug, PartialEq)]
pub enum Scope {
    All,
    Namespaces(Vec<String>),
}

/// The caches of one kind, one per namespace of the scope (one for all), and why a watch
/// fails when it does (e.g. forbidden).
struct Caches<K: kube::Resource<DynamicType = ()> + 'static> {
    stores: Vec<(String, Store<K>)>,
    problems: Arc<Mutex<std::collections::BTreeMap<String, String>>>,
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
    fn start(client: &Client, scope: &Scope, changed: broadcast::Sender<()>) -> Self {
        let problems: Arc<Mutex<std::collections::BTreeMap<String, String>>> = Default::default();
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
            let stream = watcher(api, watcher::Config::default().any_semantic())
                .default_backoff()
                .reflect(writer);
            tokio::spawn(async move {
                futures::pin_mut!(stream);
                while let Some(event) = stream.next().await {
                    let mut p = problems.lock().expect("ui problems");
                    match event {
                        Ok(_) => {
                            p.remove(&where_);
                            let _ = changed.send(());
                        }
                        Err(e) => {
                            p.insert(where_.clone(), problem_of(&e));
                        }
                    }
                }
            });
            stores.push((ns, reader));
        }
        Self { stores, problems }
    }

    /// Everything cached, once the first list is in (or after a few seconds). A namespace
    /// whose watch is refused is not waited for: its cache would never be ready.
    async fn all(&self) -> Vec<Arc<K>> {
        let mut out = vec![];
        for (ns, store) in &self.stores {
            let refused = self.problems.lock().expect("ui problems").contains_key(ns);
            if !refused {
                let ready = store.wait_until_ready();
                let _ = tokio::time::timeout(Duration::from_secs(5), ready).await;
            }
            out.extend(store.state());
        }
        out
    }

    fn problems(&self) -> Vec<String> {
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

struct Shared {
    /// The viewer's client: actions are made with it.
    client: Client,
    csrf: Csrf,
    apps: Caches<Application>,
    repos: Caches<GitRepository>,
    changed: broadcast::Sender<()>,
    /// The `Host` values this server answers to (its own address): a page asked for under
    /// another name (DNS rebinding) is refused.
    hosts: Vec<String>,
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Security headers on every answer; requests for another host are refused.
async fn guard(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !s.hosts.iter().any(|h| h == host) {
        return (StatusCode::MISDIRECTED_REQUEST, "unknown host").into_response();
    }
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: browsers then send `Origin: null` with form posts, which the
    // actions' origin check must refuse. Nothing is sent to other sites either way.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The page, or only its `main` when the page's script asks for it to swap it in.
fn page(headers: &HeaderMap, title: &str, problems: Vec<String>, main: Markup) -> Response {
    let main = maud::html! {
        @for p in &problems { p class="problem" role="alert" { (p) } }
        (main)
    };
    if headers.contains_key("x-gantry-fragment") {
        return Html(main.into_string()).into_response();
    }
    Html(pages::layout(title, true, main).into_string()).into_response()
}

async fn fleet(
    State(s): State<Arc<Shared>>,
    Query(filter): Query<Filter>,
    headers: HeaderMap,
) -> Response {
    let apps = s.apps.all().await;
    let fleet = view::fleet(&apps, &filter, k8s_openapi::jiff::Timestamp::now());
    page(
        &headers,
        "Applications",
        s.apps.problems(),
        pages::fleet(&fleet, &filter),
    )
}

async fn application(
    State(s): State<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(app) = find_app(&s, &ns, &name).await else {
        return not_found(&ns, &name);
    };
    let repos = s.repos.all().await;
    let source = repos.iter().find(|r| {
        r.metadata.namespace.as_deref() == Some(ns.as_str())
            && r.metadata.name.as_deref() == Some(app.spec.source_ref.name.as_str())
    });
    page(
        &headers,
        &format!("{ns}/{name}"),
        s.apps.problems(),
        pages::application(&app, source.map(|r| r.as_ref())),
    )
}

/// The Application `ns/name` if the viewer may see it.
async fn find_app(s: &Shared, ns: &str, name: &str) -> Option<Arc<Application>> {
    s.apps.all().await.into_iter().find(|a| {
        a.metadata.namespace.as_deref() == Some(ns) && a.metadata.name.as_deref() == Some(name)
    })
}

fn not_found(ns: &str, name: &str) -> Response {
    let page = pages::problem(
        "Not found",
        &format!("No Application {ns}/{name} that you may see."),
    );
    (StatusCode::NOT_FOUND, Html(page.into_string())).into_response()
}

async fn confirm(
    State(s): State<Arc<Shared>>,
    Path((ns, name, action)): Path<(String, String, String)>,
) -> Response {
    let (Some(app), Some(action)) = (find_app(&s, &ns, &name).await, Action::parse(&action)) else {
        return not_found(&ns, &name);
    };
    if let Err(why) = action.applies(&app) {
        let page = pages::done(&ns, &name, &Err(format!("cannot {}: {why}", action.word())));
        return (StatusCode::CONFLICT, Html(page.into_string())).into_response();
    }
    let page = pages::confirm(&ns, &name, action, s.csrf.token());
    (
        [(header::SET_COOKIE, s.csrf.cookie())],
        Html(page.into_string()),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
}

/// An action, when the form carries this page's CSRF token (in the form and the cookie)
/// and, when the browser names it, the request comes from this server's own pages.
async fn act(
    State(s): State<Arc<Shared>>,
    Path((ns, name, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<ActionForm>,
) -> Response {
    let origin_ok = match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        Some(origin) => s.hosts.iter().any(|h| origin == format!("http://{h}")),
        None => true,
    };
    let cookie = headers.get(header::COOKIE).and_then(|c| c.to_str().ok());
    if !origin_ok || !s.csrf.admits(&form.csrf, cookie) {
        let page = pages::problem(
            "Refused",
            "This request did not come from Gantry's own confirmation page.",
        );
        return (StatusCode::FORBIDDEN, Html(page.into_string())).into_response();
    }
    let Some(action) = Action::parse(&action) else {
        return not_found(&ns, &name);
    };
    let outcome = actions::run(&s.client, &ns, &name, action).await;
    let status = match outcome {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::FORBIDDEN,
    };
    (
        status,
        Html(pages::done(&ns, &name, &outcome).into_string()),
    )
        .into_response()
}

async fn sources(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let mut repos = s.repos.all().await;
    repos.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    page(
        &headers,
        "Sources",
        s.repos.problems(),
        pages::sources(&repos),
    )
}

/// One `changed` event per burst of changes (at most one per half second per page).
async fn events(
    State(s): State<Arc<Shared>>,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let rx = s.changed.subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        if let Err(broadcast::error::RecvError::Closed) = rx.recv().await {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        while rx.try_recv().is_ok() {}
        // (An event without data is never dispatched by browsers.)
        Some((Ok(Event::default().event("changed").data("1")), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/ui.js"),
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/ui.css"),
    )
}

/// Serves the view on `listener` until the process ends.
pub async fn serve(
    client: Client,
    listener: tokio::net::TcpListener,
    scope: Scope,
) -> std::io::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    let (changed, _) = broadcast::channel(64);
    let mut hosts = vec![addr.to_string(), format!("localhost:{}", addr.port())];
    if addr.ip().is_unspecified() {
        hosts.push(format!("127.0.0.1:{}", addr.port()));
    }
    let shared = Arc::new(Shared {
        client: client.clone(),
        csrf: Csrf::new(),
        apps: Caches::start(&client, &scope, changed.clone()),
        repos: Caches::start(&client, &scope, changed.clone()),
        changed,
        hosts,
    });
    let app = axum::Router::new()
        .route("/", get(fleet))
        .route("/apps/{ns}/{name}", get(application))
        .route("/apps/{ns}/{name}/confirm/{action}", get(confirm))
        .route(
            "/apps/{ns}/{name}/actions/{action}",
            axum::routing::post(act),
        )
        .route("/sources", get(sources))
        .route("/events", get(events))
        .route("/static/ui.js", get(script))
        .route("/static/ui.css", get(style))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared);
    axum::serve(listener, app).await
}
