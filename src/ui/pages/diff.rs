//! The diff page: what differs between Git and the cluster for one Application, as masked
//! unified diffs (each line a span the style colours; screen readers read the `+`/`-`).

use maud::{Markup, html};

use crate::plan::model::{Action, AppPlan};

/// The `main` of the diff page of `ns/name`.
pub fn diff(ns: &str, name: &str, plan: &Result<AppPlan, String>) -> Markup {
    html! {
        p class="crumbs" { a href="/" { "Applications" } " / " a href={ "/apps/" (ns) "/" (name) } { (ns) "/" (name) } }
        h1 { "Difference from Git" }
        @match plan {
            Err(why) => p class="problem" role="alert" { "Cannot compute the difference: " (why) }
            Ok(plan) => {
                @if let Some(e) = &plan.error { p class="problem" role="alert" { (e) } }
                p { "The revision it last applied, "
                    code { (plan.base.as_deref().map(|b| b.chars().take(7).collect::<String>()).unwrap_or_default()) }
                    ", rendered and dry-run as " (plan.identity) " against the live objects (Secret values masked)." }
                @let changed: Vec<_> = plan.objects.iter().filter(|o| o.action != Action::Unchanged).collect();
                @if changed.is_empty() && plan.error.is_none() {
                    p class="ok" role="status" { "No difference: every object is as Git says." }
                }
                @for o in &changed {
                    section class="object-diff" {
                        h2 { (o.describe()) " " span class="action" { (format!("{:?}", o.action).to_lowercase()) } }
                        @if let Some(r) = &o.refusal { p class="problem" { (r.message) } }
                        @if let Some(n) = &o.note { p class="why" { (n) } }
                        @if let Some(d) = &o.diff {
                            pre class="diff" {
                                @for line in d.lines() {
                                    span class=(line_class(line)) { (line) "\n" }
                                }
                            }
                        }
                    }
                }
                p class="empty" { (plan.objects.len() - changed.len()) " objects unchanged." }
            }
        }
    }
}

fn line_class(line: &str) -> &'static str {
    match line.as_bytes().first() {
        Some(b'+') if !line.starts_with("+++") => "add",
        Some(b'-') if !line.starts_with("---") => "del",
        Some(b'@') => "hunk",
        _ => "ctx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::model::ObjectPlan;

    #[test]
    fn diff_lines_are_classed_and_escaped() {
        let plan = AppPlan {
            namespace: "team".into(),
            name: "web".into(),
            identity: "the controller".into(),
            base: Some("0123456789".into()),
            objects: vec![ObjectPlan {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                namespace: Some("team".into()),
                name: "settings".into(),
                action: Action::Change,
                diff: Some(
                    "--- live\n+++ git\n@@ -1 +1 @@\n-mode: <b>unsafe</b>\n+mode: safe\n".into(),
                ),
                refusal: None,
                note: None,
            }],
            ..Default::default()
        };
        let page = diff("team", "web", &Ok(plan)).into_string();
        assert!(
            page.contains(r#"<span class="del">-mode: &lt;b&gt;unsafe&lt;/b&gt;"#),
            "{page}"
        );
        assert!(page.contains(r#"<span class="add">+mode: safe"#));
        assert!(page.contains(r#"<span class="ctx">--- live"#));
        assert!(page.contains("0123456"));
        let failed = diff("team", "web", &Err("forbidden".into())).into_string();
        assert!(failed.contains("Cannot compute the difference: forbidden"));
    }
}
