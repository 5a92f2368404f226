//! The fleet page: every Application the viewer may list, counts, filters, worst first.

use maud::{Markup, html};

use super::state_badge;
use crate::ui::view::{self, Filter, Fleet, State};

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
