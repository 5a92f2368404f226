//! The web view's pages as HTML (pure: data in, markup out). maud escapes every value it
//! writes, so a message or a name with `<script>` in it is text on the page. No inline
//! script or style: the Content-Security-Policy allows only `/static/` files.

mod application;
mod canary;
mod diff;
mod fleet;
pub mod sources;

use maud::{DOCTYPE, Markup, html};

pub use application::application;
pub use diff::diff;
pub use fleet::fleet;

use super::actions::Action;
use super::view::{self, State};
use crate::api::conditions::Condition;
use crate::api::git_repository::GitRepository;

/// What surrounds a page's `main`.
#[derive(Default)]
pub struct Chrome<'a> {
    /// Where the page follows changes (server-sent events; `ui.js` fetches the page again
    /// and swaps its `main`); a page that does not follow changes has none.
    pub live: Option<&'a str>,
    /// The signed-in user, as the API server names them.
    pub user: Option<&'a str>,
    /// The CSRF token of the sign-out form, when the viewer signed in with a token.
    pub sign_out: Option<&'a str>,
}

/// A page: `title`, the navigation, `main`.
pub fn layout(title: &str, chrome: &Chrome, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Gantry" }
                link rel="icon" href="/static/favicon.svg" type="image/svg+xml";
                link rel="stylesheet" href="/static/ui.css";
                script src="/static/ui.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header {
                    nav aria-label="Gantry" {
                        a href="/" class="brand" { "Gantry" }
                        a href="/" { "Applications" }
                        a href="/sources" { "Sources" }
                        a href="/imagepolicies" { "Image policies" }
                        a href="/receivers" { "Receivers" }
                        a href="/notifiers" { "Notifiers" }
                    }
                    div class="who" {
                        @if chrome.live.is_some() {
                            span id="live" role="status" aria-live="polite" { "live" }
                        }
                        @if let Some(user) = chrome.user { " " span class="user" { (user) } }
                        @if let Some(token) = chrome.sign_out {
                            form method="post" action="/logout" class="logout" {
                                input type="hidden" name="csrf" value=(token);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" tabindex="-1" data-live=[chrome.live] { (main) }
            }
        }
    }
}

/// A page that does not follow changes and has no sign-out form.
fn plain(title: &str, main: Markup) -> Markup {
    layout(title, &Chrome::default(), main)
}

fn state_badge(state: State) -> Markup {
    html! { span class={ "state " (state.word()) } { (state.word()) } }
}

/// A link to `revision`'s commit on the forge that holds `source`, when its URL names one.
fn commit_link(source: Option<&GitRepository>, revision: &str) -> Markup {
    let short = view::short_revision(revision);
    let commit = crate::api::git_repository::revision_commit(revision);
    let forge = source.and_then(|s| crate::notify::provider::forge::forge_of(&s.spec.url));
    match (commit, forge) {
        (Some(sha), Some((base, repo))) => {
            html! { a href={ (base) "/" (repo) "/commit/" (sha) } rel="noreferrer" { code { (short) } } }
        }
        _ => html! { code { (short) } },
    }
}

fn conditions_table(conds: &[Condition]) -> Markup {
    html! {
        table class="conditions" {
            thead { tr { th scope="col" { "Condition" } th scope="col" { "Status" } th scope="col" { "Reason" } th scope="col" { "Message" } th scope="col" { "Since" } } }
            tbody {
                @for c in conds {
                    tr {
                        th scope="row" { (c.type_) }
                        td { (c.status) }
                        td { (c.reason) }
                        td class="why" { (c.message) }
                        td { (view::age_words(k8s_openapi::jiff::Timestamp::now().duration_since(c.last_transition_time.0).as_secs().max(0))) " ago" }
                    }
                }
            }
        }
    }
}

/// The confirmation of `action` on `ns/name`: a POST form with the CSRF `token`.
pub fn confirm(ns: &str, name: &str, action: Action, token: &str) -> Markup {
    let back = format!("/apps/{ns}/{name}");
    plain(
        &format!("{} {ns}/{name}", action.word()),
        html! {
            h1 { "Confirm" }
            p { (action.question(ns, name)) }
            form method="post" action={ (back) "/actions/" (action.word()) } {
                input type="hidden" name="csrf" value=(token);
                button type="submit" { "Yes, " (action.word()) }
                " "
                a href=(back) { "Cancel" }
            }
        },
    )
}

/// What became of an action.
pub fn done(ns: &str, name: &str, outcome: &Result<String, String>) -> Markup {
    let back = format!("/apps/{ns}/{name}");
    let (title, message) = match outcome {
        Ok(m) => ("Done", m.as_str()),
        Err(m) => ("Not done", m.as_str()),
    };
    plain(
        title,
        html! {
            h1 { (title) }
            p class={ @if outcome.is_err() { "problem" } @else { "ok" } } role="status" { (message) }
            p { a href=(back) { "Back to " (ns) "/" (name) } }
        },
    )
}

/// A page for a problem (not found, forbidden, the API server unreachable).
pub fn problem(title: &str, message: &str) -> Markup {
    plain(
        title,
        html! { h1 { (title) } p class="why" { (message) } p { a href="/" { "All Applications" } } },
    )
}

/// The sign-in form of the in-cluster view: a bearer token (a ServiceAccount's, or an
/// OIDC ID token the API server accepts), kept in an HttpOnly cookie.
pub fn login(problem: Option<&str>, csrf: &str) -> Markup {
    plain(
        "Sign in",
        html! {
            h1 { "Sign in" }
            @if let Some(p) = problem { p class="problem" role="alert" { (p) } }
            p { "Gantry shows what your token may see, and acts with its rights: "
                "the API server decides. Paste a bearer token, e.g. from "
                code { "kubectl create token NAME -n NAMESPACE" } "." }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                label for="token" { "Token" }
                textarea id="token" name="token" rows="4" cols="60" required autocomplete="off" spellcheck="false" {}
                p { button type="submit" { "Sign in" } }
            }
        },
    )
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Application;
    use crate::ui::view::Filter;
    use serde_json::json;

    #[test]
    fn every_value_is_text_never_markup() {
        let app: Application = serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "Application",
            "metadata": {"name": "web", "namespace": "team"},
            "spec": {"sourceRef": {"kind": "GitRepository", "name": "repo"}, "path": "<b>p</b>"},
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "ApplyFailed",
                "message": "<script>alert(1)</script>", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap();
        let page = layout(
            "web",
            &Chrome {
                live: Some("/events"),
                ..Default::default()
            },
            application(&app, None, &Default::default()),
        )
        .into_string();
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&lt;b&gt;p&lt;/b&gt;"));
        // The only script is the page's own file.
        assert_eq!(page.matches("<script").count(), 1);
        assert!(page.contains(r#"<script src="/static/ui.js" defer>"#));
        let apps = vec![std::sync::Arc::new(app)];
        let filter = Filter {
            q: "\"><script>".into(),
            ..Default::default()
        };
        let f = view::fleet(
            &apps,
            &Filter::default(),
            k8s_openapi::jiff::Timestamp::now(),
        );
        let page = fleet(&f, &filter).into_string();
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&quot;&gt;&lt;script&gt;"));
    }

    #[test]
    fn commits_link_to_the_forge_of_the_source() {
        let repo: GitRepository = serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
            "metadata": {"name": "repo", "namespace": "team"},
            "spec": {"url": "https://git.example.com/team/app.git"}
        }))
        .unwrap();
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let link = commit_link(Some(&repo), &format!("main@sha1:{sha}")).into_string();
        assert!(link.contains(&format!(
            r#"href="https://git.example.com/team/app/commit/{sha}""#
        )));
        let local: GitRepository = serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "GitRepository",
            "metadata": {"name": "repo"}, "spec": {"url": "file:///srv/git/app"}
        }))
        .unwrap();
        let plain = commit_link(Some(&local), &format!("main@sha1:{sha}")).into_string();
        assert!(!plain.contains("href"));
    }
}
