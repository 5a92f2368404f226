//! The web view's HTTP edge: routes, security headers, who the viewer is, and live updates.
//! Pages are read from the viewer's caches (`viewer.rs`); every change their watches see
//! is announced to the viewer's open pages as a server-sent event, and the page's script
//! fetches the page again (no polling per browser).
//!
//! Two ways in: `gantry ui` serves one viewer, the kubeconfig's user, on 127.0.0.1; the
//! controller (`--ui-addr`) serves whoever brings a bearer token (the sign-in form's cookie,
//! or the `Authorization` header of an authenticating proxy), each with their own token.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures::Stream;
use maud::Markup;
use tokio::sync::broadcast;

use super::actions::{self, Action, Csrf};
use super::metrics::UiMetrics;
use super::objects;
use super::pages::sources as pages_sources;
use super::pages::{self, Chrome};
use super::sessions::{self, Refusal, Sessions};
use super::view::{self, Filter};
use super::viewer::{Change, Viewer};

pub use super::viewer::Scope;

/// Who the pages are for.
pub enum Access {
    /// `gantry ui`: the kubeconfig's user, on a loopback address; requests naming another
    /// host are refused (DNS rebinding).
    Local {
        viewer: Arc<Viewer>,
        hosts: Vec<String>,
    },
    /// In the controller: each request's bearer token.
    Tokens(Arc<Sessions>),
}

struct Shared {
    access: Access,
    csrf: Csrf,
    metrics: UiMetrics,
    /// Differences from Git computed at once (each fetches and renders): a viewer asking
    /// for many cannot take the controller's cores.
    diffs: tokio::sync::Semaphore,
}

/// Differences from Git computed at once, for all viewers together.
const DIFFS_AT_ONCE: usize = 2;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Security headers on every answer; the local view refuses requests for another host.
async fn guard(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if let Access::Local { hosts, .. } = &s.access {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if !hosts.iter().any(|h| h == host) {
            return (StatusCode::MISDIRECTED_REQUEST, "unknown host").into_response();
        }
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

/// Counts requests and their time by route (a bounded set of labels).
async fn measure(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let page = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    s.metrics
        .observe(&page, res.status().as_u16(), started.elapsed());
    res
}

/// Finds the viewer of the request: the local one, or the bearer token's. Without a token
/// a page sends the browser to the sign-in form; an invalid token is a 401.
async fn identify(State(s): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let viewer = match &s.access {
        Access::Local { viewer, .. } => viewer.clone(),
        Access::Tokens(sessions) => {
            let Some(token) = sessions::token_of(req.headers()) else {
                if req.method() == axum::http::Method::GET && req.uri().path() != "/events" {
                    return Redirect::to("/login").into_response();
                }
                return (StatusCode::UNAUTHORIZED, "sign in first").into_response();
            };
            match sessions.viewer(&token).await {
                Ok(v) => v,
                Err(Refusal::Invalid(why)) => {
                    let page = pages::login(Some(&why), s.csrf.token());
                    return (
                        StatusCode::UNAUTHORIZED,
                        [(header::SET_COOKIE, s.csrf.cookie())],
                        Html(page.into_string()),
                    )
                        .into_response();
                }
                Err(Refusal::Unavailable(why)) => {
                    let page = pages::problem("Unavailable", &why);
                    return (StatusCode::SERVICE_UNAVAILABLE, Html(page.into_string()))
                        .into_response();
                }
            }
        }
    };
    req.extensions_mut().insert(viewer);
    next.run(req).await
}

/// The page, or only its `main` when the page's script asks for it to swap it in.
fn page(
    s: &Shared,
    v: &Viewer,
    headers: &HeaderMap,
    title: &str,
    live: Option<&str>,
    problems: Vec<String>,
    main: Markup,
) -> Response {
    let main = maud::html! {
        @for p in &problems { p class="problem" role="alert" { (p) } }
        (main)
    };
    if headers.contains_key("x-gantry-fragment") {
        return Html(main.into_string()).into_response();
    }
    let signed_in = matches!(s.access, Access::Tokens(_));
    let chrome = Chrome {
        live,
        user: v.user.as_deref(),
        sign_out: signed_in.then(|| s.csrf.token()),
    };
    (
        [(header::SET_COOKIE, s.csrf.cookie())],
        Html(pages::layout(title, &chrome, main).into_string()),
    )
        .into_response()
}

type Viewed = Extension<Arc<Viewer>>;

async fn fleet(
    State(s): State<Arc<Shared>>,
    Extension(v): Viewed,
    Query(filter): Query<Filter>,
    headers: HeaderMap,
) -> Response {
    let apps = v.apps.all().await;
    let fleet = view::fleet(&apps, &filter, k8s_openapi::jiff::Timestamp::now());
    page(
        &s,
        &v,
        &headers,
        "Applications",
        Some("/events"),
        v.apps.problems(),
        pages::fleet(&fleet, &filter),
    )
}

async fn application(
    State(s): State<Arc<Shared>>,
    Extension(v): Viewed,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(app) = v.apps.get(&ns, &name).await else {
        return not_found(&ns, &name);
    };
    let source = v.repos.get(&ns, &app.spec.source_ref.name).await;
    let tree = objects::tree(&v.client, &app).await;
    // (Names of Kubernetes objects need no escaping in a query.)
    let live = format!("/events?app={ns}/{name}");
    page(
        &s,
        &v,
        &headers,
        &format!("{ns}/{name}"),
        Some(&live),
        v.apps.problems(),
        pages::application(&app, source.as_deref(), &tree),
    )
}

/// The difference from Git, computed when asked for (not live: it fetches and renders).
async fn difference(
    State(s): State<Arc<Shared>>,
    Extension(v): Viewed,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(app) = v.apps.get(&ns, &name).await else {
        return not_found(&ns, &name);
    };
    let Ok(_turn) = s.diffs.try_acquire() else {
        let page = pages::problem(
            "Busy",
            "Other differences from Git are being computed; try again in a moment.",
        );
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            Html(page.into_string()),
        )
            .into_response();
    };
    let plan = match v.repos.get(&ns, &app.spec.source_ref.name).await {
        Some(source) => super::diff::of(&v.config, &v.client, &app, &source).await,
        None => Err(format!(
            "GitRepository {ns}/{} is not one you may read",
            app.spec.source_ref.name
        )),
    };
    page(
        &s,
        &v,
        &headers,
        &format!("diff {ns}/{name}"),
        None,
        vec![],
        pages::diff(&ns, &name, &plan),
    )
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
    Extension(v): Viewed,
    Path((ns, name, action)): Path<(String, String, String)>,
) -> Response {
    let (Some(app), Some(action)) = (v.apps.get(&ns, &name).await, Action::parse(&action)) else {
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

/// Whether a form post carries this server's CSRF token (in the form and the cookie) and,
/// when the browser names it, comes from a page of this server.
fn same_site_form(s: &Shared, headers: &HeaderMap, token: &str) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let origin_ok = match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        Some(origin) => {
            !host.is_empty()
                && (origin == format!("http://{host}") || origin == format!("https://{host}"))
        }
        None => true,
    };
    let cookie = headers.get(header::COOKIE).and_then(|c| c.to_str().ok());
    origin_ok && s.csrf.admits(token, cookie)
}

fn refused_form() -> Response {
    let page = pages::problem(
        "Refused",
        "This request did not come from one of Gantry's own pages.",
    );
    (StatusCode::FORBIDDEN, Html(page.into_string())).into_response()
}

/// An action, made with the viewer's own client.
async fn act(
    State(s): State<Arc<Shared>>,
    Extension(v): Viewed,
    Path((ns, name, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<ActionForm>,
) -> Response {
    if !same_site_form(&s, &headers, &form.csrf) {
        return refused_form();
    }
    let Some(action) = Action::parse(&action) else {
        return not_found(&ns, &name);
    };
    // A refusal by the API server is an answer too: the page says what it said (and a
    // browser does not log the page as a failed load).
    let outcome = actions::run(&v.client, &ns, &name, action).await;
    Html(pages::done(&ns, &name, &outcome).into_string()).into_response()
}

async fn sources(
    State(s): State<Arc<Shared>>,
    Extension(v): Viewed,
    headers: HeaderMap,
) -> Response {
    let repos = v.repos.all().await;
    page(
        &s,
        &v,
        &headers,
        "Sources",
        Some("/events"),
        v.repos.problems(),
        pages_sources::sources(&repos),
    )
}

async fn image_policies(
    State(s): State<Arc<Shared>>,
    Extension(v): Viewed,
    headers: HeaderMap,
) -> Response {
    let policies = v.policies().all().await;
    page(
        &s,
        &v,
        &headers,
        "Image policies",
        Some("/events"),
        v.policies().problems(),
        pages_sources::image_policies(&policies),
    )
}

async fn receivers(
    State(s): State<Arc<Shared>>,
    Extension(v): Viewed,
    headers: HeaderMap,
) -> Response {
    let receivers = v.receivers().all().await;
    page(
        &s,
        &v,
        &headers,
        "Receivers",
        Some("/events"),
        v.receivers().problems(),
        pages_sources::receivers(&receivers),
    )
}

async fn notifiers(
    State(s): State<Arc<Shared>>,
    Extension(v): Viewed,
    headers: HeaderMap,
) -> Response {
    let notifiers = v.notifiers().all().await;
    page(
        &s,
        &v,
        &headers,
        "Notifiers",
        Some("/events"),
        v.notifiers().problems(),
        pages_sources::notifiers(&notifiers),
    )
}

#[derive(serde::Deserialize)]
struct Follow {
    /// `namespace/name`: only that Application's changes.
    app: Option<String>,
}

impl Follow {
    fn admits(&self, c: &Change) -> bool {
        match &self.app {
            None => true,
            Some(app) => c.kind == "Application" && c.key.as_ref().is_none_or(|k| k == app),
        }
    }
}

/// One `changed` event per burst of changes (at most one per half second per page). The
/// stream holds the viewer, so an open page keeps its viewer's watches.
async fn events(
    Extension(v): Viewed,
    Query(follow): Query<Follow>,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let rx = v.changed.subscribe();
    let stream = futures::stream::unfold((rx, follow, v), |(mut rx, follow, v)| async move {
        loop {
            match rx.recv().await {
                Ok(c) if follow.admits(&c) => break,
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        while rx.try_recv().is_ok() {}
        // (An event without data is never dispatched by browsers.)
        Some((
            Ok(Event::default().event("changed").data("1")),
            (rx, follow, v),
        ))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn login_form(State(s): State<Arc<Shared>>) -> Response {
    if !matches!(s.access, Access::Tokens(_)) {
        return Redirect::to("/").into_response();
    }
    (
        [(header::SET_COOKIE, s.csrf.cookie())],
        Html(pages::login(None, s.csrf.token()).into_string()),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

/// Signs in with a token the API server accepts; the token is kept in an HttpOnly,
/// SameSite=Strict cookie.
async fn login(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let Access::Tokens(sessions) = &s.access else {
        return Redirect::to("/").into_response();
    };
    if !same_site_form(&s, &headers, &form.csrf) {
        return refused_form();
    }
    let token = form.token.trim();
    let refused = |why: &str| {
        let page = pages::login(Some(why), s.csrf.token());
        (StatusCode::UNAUTHORIZED, Html(page.into_string())).into_response()
    };
    if !sessions::valid_token(token) {
        return refused("this is not a bearer token");
    }
    match sessions.viewer(token).await {
        Ok(_) => (
            [(header::SET_COOKIE, sessions::token_cookie(token))],
            Redirect::to("/"),
        )
            .into_response(),
        Err(Refusal::Invalid(why)) | Err(Refusal::Unavailable(why)) => refused(&why),
    }
}

async fn logout(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<ActionForm>,
) -> Response {
    if !same_site_form(&s, &headers, &form.csrf) {
        return refused_form();
    }
    if let (Access::Tokens(sessions), Some(token)) = (&s.access, sessions::token_of(&headers)) {
        sessions.forget(&token);
    }
    (
        [(header::SET_COOKIE, sessions::cleared_cookie())],
        Redirect::to("/login"),
    )
        .into_response()
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/ui.js"),
    )
}

async fn icon() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "image/svg+xml")],
        include_str!("assets/favicon.svg"),
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/ui.css"),
    )
}

/// Serves the view on `listener` until `shutdown` resolves.
pub async fn serve(
    access: Access,
    metrics: UiMetrics,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        access,
        csrf: Csrf::new(),
        metrics,
        diffs: tokio::sync::Semaphore::new(DIFFS_AT_ONCE),
    });
    let viewed = axum::Router::new()
        .route("/", get(fleet))
        .route("/apps/{ns}/{name}", get(application))
        .route("/apps/{ns}/{name}/diff", get(difference))
        .route("/apps/{ns}/{name}/confirm/{action}", get(confirm))
        .route("/apps/{ns}/{name}/actions/{action}", post(act))
        .route("/sources", get(sources))
        .route("/imagepolicies", get(image_policies))
        .route("/receivers", get(receivers))
        .route("/notifiers", get(notifiers))
        .route("/events", get(events))
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            identify,
        ));
    let app = axum::Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/static/ui.js", get(script))
        .route("/static/ui.css", get(style))
        .route("/static/favicon.svg", get(icon))
        .route("/favicon.ico", get(icon))
        .merge(viewed)
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            measure,
        ))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The hosts a loopback listener answers to.
pub fn local_hosts(addr: std::net::SocketAddr) -> Vec<String> {
    let mut hosts = vec![addr.to_string(), format!("localhost:{}", addr.port())];
    if addr.ip().is_unspecified() {
        hosts.push(format!("127.0.0.1:{}", addr.port()));
    }
    hosts
}
