//! The web view's pages as HTML (pure: data in, markup out). maud escapes every value it
//! writes, so a message or a name with `<script>` in it is text on the page. No inline
//! script or style: the Content-Security-Policy allows only `/static/` files.

use maud::{DOCTYPE, Markup, html};

use super::actions::Action;
use super::view::{self, Filter, Fleet, State};
use crate::api::Application;
use crate::api::conditions::Condition;
use crate::api::git_repository::GitRepository;

/// A page: `title`, the navigation, `main`. `live`: the page follows changes (server-sent
/// events at `/events`; `ui.js` fetches the page again and swaps its `main`).
pub fn layout(title: &str, live: bool, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Gantry" }
                link rel="stylesheet" href="/static/ui.css";
                script src="/static/ui.js" defer {}
            }
            body {
                header {
                    nav aria-label="Gantry" {
                        a href="/" class="brand" { "Gantry" }
                        a href="/" { "Applications" }
                        a href="/sources" { "Sources" }
                    }
                    @if live {
                        span id="live" role="status" aria-live="polite" { "live" }
                    }
                }
                main id="main" data-live=[live.then_some("/events")] { (main) }
            }
        }
    }
}

fn state_badge(state: State) -> Markup {
    html! { span class={ "state " (state.word()) } { (state.word()) } }
}

/// The fleet page's `main`.
pub fn fleet(fleet: &Fleet, filter: &Filter) -> Markup {
    html! {
        h1 { "Applications" }
        ul class="counts" aria-label="Applications by state" {
            li { strong { (fleet.total) } " in all" }
            @for (state, n) in &fleet.counts {
                li { a href={ "/?state=" (state.word()) } { strong { (n) } " " (state.word()) } }
            }
        }
        form class="filters" method="get" action="/" role="search" {
            label { "Search " input type="search" name="q" value=(filter.q) placeholder="namespace/name, revision, message"; }
            label { "State "
                select name="state" {
                    option value="" selected[filter.state.is_empty()] { "all" }
                    @for s in State::ALL {
                        option value=(s.word()) selected[filter.state == s.word()] { (s.word()) }
                    }
                }
            }
            label { "Cluster "
                select name="cluster" {
                    option value="" selected[filter.cluster.is_empty()] { "all" }
                    @for c in &fleet.clusters {
                        option value=(c) selected[&filter.cluster == c] { (c) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        @if fleet.shown == 0 {
            p class="empty" { "No Application to show." }
        }
        @for group in &fleet.groups {
            section aria-label={ (group.namespace) " on " (group.cluster) } {
                h2 { (group.namespace) span class="cluster" { " on " (group.cluster) } }
                table {
                    thead { tr {
                        th scope="col" { "Application" } th scope="col" { "State" }
                        th scope="col" { "Revision" } th scope="col" { "Rollout" }
                        th scope="col" { "Synced" } th scope="col" { "Why" }
                    } }
                    tbody {
                        @for r in &group.rows {
                            tr data-state=(r.state.word()) {
                                td { a href={ "/apps/" (r.namespace) "/" (r.name) } { (r.name) } }
                                td { (state_badge(r.state)) }
                                td { code { (r.revision) } }
                                td { (r.rollout.as_deref().unwrap_or("")) }
                                td { (r.age.map(view::age_words).unwrap_or_else(|| "-".into())) }
                                td class="why" { (r.why) }
                            }
                        }
                    }
                }
            }
        }
    }
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

/// The Application page's `main`.
pub fn application(app: &Application, source: Option<&GitRepository>) -> Markup {
    let ns = app.metadata.namespace.clone().unwrap_or_default();
    let name = app.metadata.name.clone().unwrap_or_default();
    let state = view::state_of(app);
    let status = app.status.clone().unwrap_or_default();
    html! {
        p class="crumbs" { a href="/" { "Applications" } " / " (ns) }
        h1 { (name) " " (state_badge(state)) }
        nav class="actions" aria-label="Actions" {
            @for a in Action::ALL.into_iter().filter(|a| a.applies(app).is_ok()) {
                a class="action" href={ "/apps/" (ns) "/" (name) "/confirm/" (a.word()) } { (a.word()) }
            }
        }
        dl class="facts" {
            dt { "Source" } dd { "GitRepository " (app.spec.source_ref.name) " · path " code { (app.spec.path) }
                @if let Some(s) = source { " · " code { (s.spec.url) } } }
            dt { "Applied" } dd { @match &status.last_applied_revision { Some(r) => (commit_link(source, r)), None => "nothing yet" } }
            @if let Some(r) = status.last_attempted_revision.as_ref().filter(|r| Some(*r) != status.last_applied_revision.as_ref()) {
                dt { "Attempted" } dd { (commit_link(source, r)) }
            }
            dt { "Cluster" } dd { (status.cluster.as_deref().unwrap_or("-")) }
            dt { "Sync" } dd { (format!("{:?}", app.spec.sync_policy).to_lowercase()) @if app.spec.suspend { " (suspended)" } }
        }
        h2 { "Conditions" }
        (conditions_table(&status.conditions))
        @if let Some(rollout) = &status.rollout {
            h2 { "Rollout" }
            dl class="facts" {
                dt { "Phase" } dd { (format!("{:?}", rollout.phase)) }
                @if let Some(r) = &rollout.revision { dt { "Revision" } dd { (commit_link(source, r)) } }
                dt { "Step" } dd { (rollout.step + 1) }
                @if !rollout.canaries.is_empty() { dt { "Canaries" } dd { (rollout.canaries.join(", ")) } }
                @if let Some(m) = &rollout.message { dt { "Message" } dd class="why" { (m) } }
            }
            @if !rollout.checks.is_empty() {
                table class="checks" {
                    thead { tr { th scope="col" { "Check" } th scope="col" { "Passed" } th scope="col" { "Value" } th scope="col" { "Message" } } }
                    tbody {
                        @for c in &rollout.checks {
                            tr { td { (c.name) } td { (if c.passed { "yes" } else { "no" }) } td { (c.value.map(|v| format!("{v}")).unwrap_or_default()) } td class="why" { (c.message.as_deref().unwrap_or("")) } }
                        }
                    }
                }
            }
        }
        @if let Some(drift) = status.drift.as_ref().filter(|d| !d.objects.is_empty()) {
            h2 { "Drift" }
            p { "Fields that differ from Git (values are not shown):" }
            ul class="drift" {
                @for d in &drift.objects {
                    li { (entry_name(&d.object)) ": " code { (d.paths.join(", ")) } }
                }
            }
        }
        h2 { "Objects (" (status.inventory.len()) ")" }
        @if status.inventory.is_empty() { p class="empty" { "None applied." } }
        ul class="inventory" {
            @for e in &status.inventory { li { (entry_name(e)) } }
        }
        h2 { "History" }
        ol class="history" {
            @for h in &status.history {
                li {
                    (commit_link(source, &h.revision)) " "
                    span class={ "result " (format!("{:?}", h.result).to_lowercase()) } { (format!("{:?}", h.result)) }
                    @if let Some(t) = &h.finished_at { " · " (t.0.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()) }
                    @if let Some(m) = &h.message { div class="why" { (m) } }
                }
            }
        }
    }
}

fn entry_name(e: &crate::api::application::InventoryEntry) -> String {
    match &e.namespace {
        Some(ns) => format!("{} {ns}/{}", e.kind, e.name),
        None => format!("{} {}", e.kind, e.name),
    }
}

/// The Sources page's `main`.
pub fn sources(repos: &[std::sync::Arc<GitRepository>]) -> Markup {
    html! {
        h1 { "Sources" }
        @if repos.is_empty() { p class="empty" { "No GitRepository to show." } }
        table {
            thead { tr { th scope="col" { "GitRepository" } th scope="col" { "URL" } th scope="col" { "Revision" } th scope="col" { "Ready" } th scope="col" { "Message" } } }
            tbody {
                @for r in repos {
                    @let status = r.status.clone().unwrap_or_default();
                    @let ready = crate::api::conditions::find(&status.conditions, crate::api::conditions::READY);
                    tr {
                        td { (r.metadata.namespace.as_deref().unwrap_or_default()) "/" (r.metadata.name.as_deref().unwrap_or_default()) }
                        td { code { (r.spec.url) } }
                        td { @if let Some(a) = &status.artifact { (commit_link(Some(r), &a.revision)) } @else { "-" } }
                        td { (ready.map(|c| c.status.as_str()).unwrap_or("-")) }
                        td class="why" { (ready.map(|c| c.message.as_str()).unwrap_or("")) }
                    }
                }
            }
        }
    }
}

/// The confirmation of `action` on `ns/name`: a POST form with the CSRF `token`.
pub fn confirm(ns: &str, name: &str, action: Action, token: &str) -> Markup {
    let back = format!("/apps/{ns}/{name}");
    layout(
        &format!("{} {ns}/{name}", action.word()),
        false,
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
    layout(
        title,
        false,
        html! {
            h1 { (title) }
            p class={ @if outcome.is_err() { "problem" } @else { "ok" } } role="status" { (message) }
            p { a href=(back) { "Back to " (ns) "/" (name) } }
        },
    )
}

/// A page for a problem (not found, forbidden, the API server unreachable).
pub fn problem(title: &str, message: &str) -> Markup {
    layout(
        title,
        false,
        html! { h1 { (title) } p class="why" { (message) } p { a href="/" { "All Applications" } } },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let page = layout("web", true, application(&app, None)).into_string();
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
