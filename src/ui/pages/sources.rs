//! The pages of the other kinds: sources, image policies, receivers, notifiers.

use maud::{Markup, html};

use super::commit_link;
use crate::api::GitRepository;

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

/// `namespace/name` of an object.
fn key(m: &kube::core::ObjectMeta) -> String {
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default()
    )
}

/// The Ready condition's status and message.
fn ready(conds: &[crate::api::conditions::Condition]) -> (String, String) {
    match crate::api::conditions::find(conds, crate::api::conditions::READY) {
        Some(c) => (c.status.clone(), c.message.clone()),
        None => ("-".into(), String::new()),
    }
}

/// The Image policies page's `main`: the latest tag each allows, and the tags it holds back.
pub fn image_policies(policies: &[std::sync::Arc<crate::api::ImagePolicy>]) -> Markup {
    html! {
        h1 { "Image policies" }
        @if policies.is_empty() { p class="empty" { "No ImagePolicy to show." } }
        table {
            thead { tr { th scope="col" { "ImagePolicy" } th scope="col" { "Image or chart" } th scope="col" { "Latest" } th scope="col" { "Held tags" } th scope="col" { "Ready" } th scope="col" { "Message" } } }
            tbody {
                @for p in policies {
                    @let status = p.status.clone().unwrap_or_default();
                    @let (ok, message) = ready(&status.conditions);
                    tr {
                        td { (key(&p.metadata)) }
                        td { code { (p.spec.image.clone().or_else(|| p.spec.chart.as_ref().and_then(|c| c.name.clone())).unwrap_or_default()) } }
                        td { code { (status.latest_image.as_deref().unwrap_or("-")) } }
                        td {
                            @if status.held_tags.is_empty() { "none" }
                            ul class="held" {
                                @for h in &status.held_tags { li { code { (h.tag) } ": " (h.reason) } }
                            }
                        }
                        td { (ok) }
                        td class="why" { (message) }
                    }
                }
            }
        }
    }
}

/// The Receivers page's `main` (the webhook path, never the secret behind it).
pub fn receivers(receivers: &[std::sync::Arc<crate::api::Receiver>]) -> Markup {
    html! {
        h1 { "Receivers" }
        @if receivers.is_empty() { p class="empty" { "No Receiver to show." } }
        table {
            thead { tr { th scope="col" { "Receiver" } th scope="col" { "Type" } th scope="col" { "Triggers" } th scope="col" { "Path" } th scope="col" { "Ready" } th scope="col" { "Message" } } }
            tbody {
                @for r in receivers {
                    @let status = r.status.clone().unwrap_or_default();
                    @let (ok, message) = ready(&status.conditions);
                    tr {
                        td { (key(&r.metadata)) }
                        td { (serde_json::to_value(r.spec.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()) }
                        td { (r.spec.resources.iter().map(|t| format!("{:?} {}", t.kind, t.name)).collect::<Vec<_>>().join(", ")) }
                        td { code { (status.webhook_path.as_deref().unwrap_or("-")) } }
                        td { (ok) }
                        td class="why" { (message) }
                    }
                }
            }
        }
    }
}

/// The Notifiers page's `main`: where each reports, its last delivery and failure.
pub fn notifiers(notifiers: &[std::sync::Arc<crate::api::Notifier>]) -> Markup {
    html! {
        h1 { "Notifiers" }
        @if notifiers.is_empty() { p class="empty" { "No Notifier to show." } }
        table {
            thead { tr { th scope="col" { "Notifier" } th scope="col" { "Type" } th scope="col" { "Last delivery" } th scope="col" { "Last failure" } th scope="col" { "Ready" } th scope="col" { "Message" } } }
            tbody {
                @for n in notifiers {
                    @let status = n.status.clone().unwrap_or_default();
                    @let (ok, message) = ready(&status.conditions);
                    tr {
                        td { (key(&n.metadata)) }
                        td { (serde_json::to_value(n.spec.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()) }
                        td { @if let Some(d) = &status.last_delivery { (d.application) " " (d.state) " · " (crate::ui::view::short_revision(&d.revision)) } @else { "-" } }
                        td class="why" { @if let Some(d) = &status.last_failure { (d.application) " " (d.state) ": " (d.error.as_deref().unwrap_or("")) } @else { "-" } }
                        td { (ok) }
                        td class="why" { (message) }
                    }
                }
            }
        }
    }
}
