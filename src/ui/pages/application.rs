//! The Application page: source and revision, conditions, the rollout and its canary
//! chart, drift, the live object tree with health and waves, hooks, and the history.

use maud::{Markup, html};

use super::{canary, commit_link, conditions_table, state_badge};
use crate::api::Application;
use crate::api::git_repository::GitRepository;
use crate::health::Health;
use crate::ui::actions::Action;
use crate::ui::objects::{Node, Tree};
use crate::ui::view;

/// The Application page's `main`.
pub fn application(app: &Application, source: Option<&GitRepository>, tree: &Tree) -> Markup {
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
            @if let Some(spec) = app.spec.rollout.as_ref().filter(|s| !s.steps.is_empty()) {
                (canary::chart(spec, rollout))
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
            p { "Fields that differ from Git: " a href={ "/apps/" (ns) "/" (name) "/diff" } { "show the difference" } " (Secret values masked)." }
            ul class="drift" {
                @for d in &drift.objects {
                    li { (entry_name(&d.object)) ": " code { (d.paths.join(", ")) } }
                }
            }
        }
        h2 { "Objects (" (status.inventory.len()) ")" }
        @if status.inventory.is_empty() { p class="empty" { "None applied." } }
        @if let Some(note) = &tree.note { p class="empty" { (note) } }
        (nodes(&tree.objects, "inventory"))
        @if !tree.hooks.is_empty() {
            h2 { "Hooks in the cluster (" (tree.hooks.len()) ")" }
            p class="empty" { "Hooks of the syncs that their delete policy kept." }
            (nodes(&tree.hooks, "hooks"))
        }
        h2 { "History" }
        ol class="history timeline" {
            @for h in &status.history {
                li {
                    (commit_link(source, &h.revision)) " "
                    span class={ "result " (format!("{:?}", h.result).to_lowercase()) } { (format!("{:?}", h.result)) }
                    @if let Some(t) = &h.finished_at { " · " time datetime=(t.0.to_string()) { (t.0.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()) } }
                    @if h.message.is_none() { " · " (h.created) " created, " (h.configured) " configured, " (h.unchanged) " unchanged, " (h.pruned) " pruned" }
                    @if let Some(c) = &h.chart_version { " · chart " (c) }
                    @if let Some(r) = &h.reverted_by { " · reverted by " (commit_link(source, r)) }
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

fn health_word(h: Option<Health>) -> &'static str {
    match h {
        None => "not read",
        Some(Health::Healthy) => "healthy",
        Some(Health::Progressing) => "progressing",
        Some(Health::Degraded) => "degraded",
        Some(Health::Suspended) => "suspended",
        Some(Health::Unknown) => "unknown",
    }
}

/// Objects as a nested list (a tree a screen reader announces level by level).
fn nodes(list: &[Node], class: &str) -> Markup {
    html! {
        @if !list.is_empty() {
            ul class=(class) {
                @for n in list {
                    li data-kind=(n.kind) data-health=(health_word(n.health)) {
                        span class={ "health " (health_word(n.health)) } { (health_word(n.health)) } " "
                        (n.kind) " "
                        @if let Some(ns) = &n.namespace { (ns) "/" }
                        strong { (n.name) }
                        @if let Some(h) = &n.hook { " · hook " code { (h) } }
                        @if let Some(w) = n.wave { " · wave " (w) }
                        @if !n.message.is_empty() { " · " span class="why" { (n.message) } }
                        (nodes(&n.children, "children"))
                    }
                }
            }
        }
    }
}
