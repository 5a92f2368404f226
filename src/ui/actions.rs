//! What a viewer may ask of an Application from the web view: sync now, promote or abort a
//! canary, suspend, resume — the same requests the CLI writes (an annotation or
//! `spec.suspend`), made with the viewer's own client, so the API server's RBAC decides.
//! Each action is a POST carrying the page's CSRF token, after a confirmation page.

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::api::annotations::ROLLOUT_ACTION_ANNOTATION;
use crate::api::rollout::RolloutPhase;
use crate::api::{Application, GitRepository};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Sync,
    Promote,
    Abort,
    Suspend,
    Resume,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::Sync,
        Action::Promote,
        Action::Abort,
        Action::Suspend,
        Action::Resume,
    ];

    pub fn word(self) -> &'static str {
        match self {
            Action::Sync => "sync",
            Action::Promote => "promote",
            Action::Abort => "abort",
            Action::Suspend => "suspend",
            Action::Resume => "resume",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.word() == s)
    }

    /// The question the confirmation page asks.
    pub fn question(self, ns: &str, name: &str) -> String {
        match self {
            Action::Sync => format!("Fetch the source of {ns}/{name} and sync it now?"),
            Action::Promote => {
                format!("Promote the canary of {ns}/{name} now, skipping its remaining steps?")
            }
            Action::Abort => {
                format!("Abort the canary of {ns}/{name} and keep the stable version?")
            }
            Action::Suspend => {
                format!("Suspend {ns}/{name}? Gantry stops every write of it until it is resumed.")
            }
            Action::Resume => format!("Resume {ns}/{name}?"),
        }
    }

    /// Whether the action makes sense for `app` now (pure); why not, otherwise.
    pub fn applies(self, app: &Application) -> Result<(), String> {
        let canary_running = app
            .status
            .as_ref()
            .and_then(|s| s.rollout.as_ref())
            .is_some_and(|r| {
                matches!(r.phase, RolloutPhase::Progressing | RolloutPhase::Paused)
                    && !r.canaries.is_empty()
            });
        match self {
            Action::Promote | Action::Abort if !canary_running => {
                Err("no canary is running".into())
            }
            Action::Suspend if app.spec.suspend => Err("it is suspended already".into()),
            Action::Resume if !app.spec.suspend => Err("it is not suspended".into()),
            Action::Sync if app.spec.suspend => Err("it is suspended: resume it first".into()),
            _ => Ok(()),
        }
    }
}

/// Carries out `action` on `ns/name` as the viewer; what was done, or the API server's
/// answer (e.g. forbidden).
pub async fn run(
    client: &kube::Client,
    ns: &str,
    name: &str,
    action: Action,
) -> Result<String, String> {
    let apps: Api<Application> = Api::namespaced(client.clone(), ns);
    let app = apps
        .get_opt(name)
        .await
        .map_err(|e| describe(&e))?
        .ok_or_else(|| format!("Application {ns}/{name} not found"))?;
    action.applies(&app)?;
    let patch = |value: serde_json::Value| {
        let apps = apps.clone();
        async move {
            apps.patch(name, &PatchParams::default(), &Patch::Merge(value))
                .await
                .map(|_| ())
                .map_err(|e| describe(&e))
        }
    };
    let stamp = k8s_openapi::jiff::Timestamp::now();
    match action {
        Action::Sync => {
            // As `gantry sync`: the source fetches first, then the Application syncs.
            let repos: Api<GitRepository> = Api::namespaced(client.clone(), ns);
            let source = &app.spec.source_ref.name;
            let fetch = crate::trigger::request_reconcile(&repos, source)
                .await
                .map_err(|e| describe_error(&e));
            crate::trigger::request_reconcile(&apps, name)
                .await
                .map_err(|e| describe_error(&e))?;
            Ok(match fetch {
                Ok(_) => {
                    format!("sync of {ns}/{name} requested, and a fetch of GitRepository {source}")
                }
                Err(e) => format!(
                    "sync of {ns}/{name} requested (of the artifact it has: GitRepository {source} was not asked to fetch: {e})"
                ),
            })
        }
        Action::Promote | Action::Abort => {
            let value = format!("{}@{stamp}", action.word());
            patch(json!({"metadata": {"annotations": {ROLLOUT_ACTION_ANNOTATION: value}}})).await?;
            Ok(format!(
                "{} of the canary of {ns}/{name} requested",
                action.word()
            ))
        }
        Action::Suspend | Action::Resume => {
            let suspend = action == Action::Suspend;
            patch(json!({"spec": {"suspend": suspend}})).await?;
            Ok(format!(
                "{ns}/{name} {}",
                if suspend { "suspended" } else { "resumed" }
            ))
        }
    }
}

fn describe_error(e: &crate::error::Error) -> String {
    match e {
        crate::error::Error::Kube(e) => describe(e),
        e => e.to_string(),
    }
}

fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.reason),
        _ => "the API server cannot be reached".into(),
    }
}

/// The web view's CSRF token: random per server process, sent in each action form and in
/// a `SameSite=Strict` cookie; an action is carried out only when both match it.
#[derive(Clone)]
pub struct Csrf(String);

pub const CSRF_COOKIE: &str = "gantry_csrf";

impl Csrf {
    pub fn new() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the system's random source");
        Csrf(hex::encode(bytes))
    }

    pub fn token(&self) -> &str {
        &self.0
    }

    /// The cookie that carries it (not readable by scripts, never sent cross-site).
    pub fn cookie(&self) -> String {
        format!(
            "{CSRF_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
            self.0
        )
    }

    /// Whether the form's token and the cookie's are both this one (constant time).
    pub fn admits(&self, form: &str, cookie_header: Option<&str>) -> bool {
        let cookie = cookie_header
            .and_then(|h| cookie(h, CSRF_COOKIE))
            .unwrap_or_default();
        let mine = self.0.as_bytes();
        bool::from(form.as_bytes().ct_eq(mine)) && bool::from(cookie.as_bytes().ct_eq(mine))
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl Default for Csrf {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(suspend: bool, rollout: serde_json::Value) -> Application {
        serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
            "metadata": {"name": "web", "namespace": "team"},
            "spec": {"sourceRef": {"kind": "GitRepository", "name": "repo"}, "suspend": suspend},
            "status": {"rollout": rollout}
        }))
        .unwrap()
    }

    #[test]
    fn actions_apply_only_where_they_mean_something() {
        let plain = app(false, json!(null));
        assert!(Action::Sync.applies(&plain).is_ok());
        assert!(Action::Suspend.applies(&plain).is_ok());
        assert!(Action::Resume.applies(&plain).is_err());
        assert_eq!(
            Action::Promote.applies(&plain),
            Err("no canary is running".into())
        );
        let canary = app(
            false,
            json!({"phase": "Paused", "canaries": ["web-canary"]}),
        );
        assert!(Action::Promote.applies(&canary).is_ok());
        assert!(Action::Abort.applies(&canary).is_ok());
        let suspended = app(true, json!(null));
        assert!(Action::Resume.applies(&suspended).is_ok());
        assert!(Action::Sync.applies(&suspended).is_err());
        for a in Action::ALL {
            assert_eq!(Action::parse(a.word()), Some(a));
        }
    }

    #[test]
    fn the_csrf_token_must_be_in_the_form_and_the_cookie() {
        let csrf = Csrf::new();
        let t = csrf.token().to_string();
        assert_eq!(t.len(), 64);
        assert_ne!(Csrf::new().token(), t, "random per server");
        let cookie = format!("other=1; {CSRF_COOKIE}={t}");
        assert!(csrf.admits(&t, Some(&cookie)));
        assert!(!csrf.admits(&t, None), "no cookie (a cross-site POST)");
        assert!(!csrf.admits("", Some(&cookie)), "no form token");
        assert!(!csrf.admits(&t[..63], Some(&cookie)));
        let other = Csrf::new();
        assert!(!csrf.admits(
            other.token(),
            Some(&format!("{CSRF_COOKIE}={}", other.token()))
        ));
        assert!(csrf.cookie().contains("HttpOnly; SameSite=Strict"));
    }
}
