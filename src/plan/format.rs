//! A plan as text (a terminal, a CI log) and as Markdown (a pull request comment). Long
//! diffs are folded: a diff shows at most [`DIFF_LINES`] lines, and a Markdown plan stays
//! under [`MARKDOWN_LIMIT`] characters (forges refuse longer comments), later diffs being
//! left out first.

use std::fmt::Write;

use super::model::{Action, AppPlan, Cause, ObjectPlan, Plan};

/// Lines of one object's diff that are shown.
pub const DIFF_LINES: usize = 120;
/// The most characters of a Markdown plan (GitHub refuses comments over 65,536).
pub const MARKDOWN_LIMIT: usize = 60_000;

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

fn verb(a: Action) -> &'static str {
    match a {
        Action::Create => "create",
        Action::Change => "change",
        Action::Recreate => "recreate",
        Action::Prune => "prune",
        Action::Unchanged => "unchanged",
        Action::Refused => "refused",
    }
}

fn cause(c: Cause) -> &'static str {
    match c {
        Cause::Rbac => "RBAC",
        Cause::Immutable => "immutable field",
        Cause::Ownership => "owned by another Application",
        Cause::Kind => "unknown kind",
        Cause::Invalid => "invalid",
    }
}

fn summary(app: &AppPlan) -> String {
    let c = app.counts();
    let parts: Vec<String> = [
        (c.create, "to create"),
        (c.change, "to change"),
        (c.recreate, "to recreate"),
        (c.prune, "to prune"),
        (c.refused, "refused"),
        (c.unchanged, "unchanged"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    if parts.is_empty() {
        "no objects".into()
    } else {
        parts.join(", ")
    }
}

/// The first [`DIFF_LINES`] lines of `diff`, and how many were left out.
fn folded(diff: &str) -> (String, usize) {
    let lines: Vec<&str> = diff.lines().collect();
    let shown = lines.len().min(DIFF_LINES);
    let mut out = lines[..shown].join("\n");
    out.push('\n');
    (out, lines.len() - shown)
}

fn rollout_line(app: &AppPlan) -> Option<String> {
    let r = app.rollout.as_ref()?;
    let steps = if r.steps.is_empty() {
        String::new()
    } else {
        format!(": {}", r.steps.join(", "))
    };
    Some(format!(
        "{} of {}{steps} (on failure: {})",
        r.strategy,
        r.workloads.join(", "),
        r.on_failure
    ))
}

fn header(app: &AppPlan) -> String {
    let base = app
        .base
        .as_deref()
        .map(|b| format!(", compared with {}", short(b)))
        .unwrap_or_else(|| ", nothing applied before".into());
    format!(
        "{}/{} on cluster {} as {}{base}",
        app.namespace, app.name, app.cluster, app.identity
    )
}

/// The plan for a terminal or a CI log.
pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Plan of GitRepository {} at {} ({})",
        plan.source,
        plan.reference,
        short(&plan.commit)
    );
    if plan.applications.is_empty() {
        let _ = writeln!(out, "\nNo Application's objects change.");
        return out;
    }
    for app in &plan.applications {
        let _ = writeln!(out, "\n{}", header(app));
        if let Some(e) = &app.error {
            let _ = writeln!(out, "  error: {e}");
            continue;
        }
        let _ = writeln!(out, "  {}", summary(app));
        for o in app.objects.iter().filter(|o| o.action != Action::Unchanged) {
            let mark = match o.action {
                Action::Create => '+',
                Action::Change | Action::Recreate => '~',
                Action::Prune => '-',
                Action::Refused => '!',
                Action::Unchanged => ' ',
            };
            let _ = write!(out, "  {mark} {:<9} {}", verb(o.action), o.describe());
            if let Some(r) = &o.refusal {
                let _ = write!(out, ": {}: {}", cause(r.cause), r.message);
            }
            if let Some(n) = &o.note {
                let _ = write!(out, " ({n})");
            }
            out.push('\n');
        }
        for h in &app.hooks {
            let _ = writeln!(out, "  hook {} {}", h.phase, h.object);
        }
        if let Some(line) = rollout_line(app) {
            let _ = writeln!(out, "  rollout: {line}");
        }
        for o in &app.objects {
            if let Some(diff) = &o.diff {
                let (shown, left) = folded(diff);
                let _ = write!(out, "\n{shown}");
                if left > 0 {
                    let _ = writeln!(out, "… {left} more lines of {}", o.describe());
                }
            }
        }
    }
    out
}

/// Text safe inside a Markdown table cell or paragraph: no HTML, no cell breaks.
fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '|' => out.push_str("\\|"),
            '`' => out.push_str("\\`"),
            '*' | '_' | '[' | ']' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A fence longer than any run of backticks in `body`.
fn fence(body: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in body.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    "`".repeat((longest + 1).max(3))
}

fn md_object(o: &ObjectPlan) -> String {
    let detail = match (&o.refusal, &o.note) {
        (Some(r), _) => format!("{}: {}", cause(r.cause), md_escape(&r.message)),
        (None, Some(n)) => md_escape(n),
        (None, None) => String::new(),
    };
    format!(
        "| {} | {} | {detail} |\n",
        verb(o.action),
        md_escape(&o.describe())
    )
}

/// The plan as a pull request comment.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let verdict = match plan.verdict() {
        super::model::Verdict::NoChange => "no change",
        super::model::Verdict::Changes => "applies cleanly",
        super::model::Verdict::Refused => "**would be refused**",
    };
    let _ = writeln!(
        out,
        "### Gantry plan: {} at `{}` — {verdict}\n",
        md_escape(&plan.source),
        short(&plan.commit)
    );
    if plan.applications.is_empty() {
        let _ = writeln!(out, "No Application's objects change.");
        return out;
    }
    // The tables first (they are what a reviewer reads), the diffs after, as room allows.
    let mut diffs: Vec<(String, &str)> = vec![];
    for app in &plan.applications {
        let mark = if app.fails() { "❌" } else { "✅" };
        let _ = writeln!(out, "#### {mark} {}\n", md_escape(&header(app)));
        if let Some(e) = &app.error {
            let _ = writeln!(out, "Cannot plan: {}\n", md_escape(e));
            continue;
        }
        let _ = writeln!(out, "{}\n", summary(app));
        let shown: Vec<&ObjectPlan> = app
            .objects
            .iter()
            .filter(|o| o.action != Action::Unchanged)
            .collect();
        if !shown.is_empty() {
            out.push_str("| action | object | why |\n|---|---|---|\n");
            for o in &shown {
                out.push_str(&md_object(o));
            }
            out.push('\n');
        }
        for h in &app.hooks {
            let _ = writeln!(out, "- hook `{}`: {}", h.phase, md_escape(&h.object));
        }
        if let Some(line) = rollout_line(app) {
            let _ = writeln!(out, "- rollout: {}", md_escape(&line));
        }
        if !app.hooks.is_empty() || app.rollout.is_some() {
            out.push('\n');
        }
        for o in &app.objects {
            if let Some(d) = &o.diff {
                let title = format!("{}/{}: {}", app.namespace, app.name, o.describe());
                diffs.push((title, d));
            }
        }
    }
    let mut left_out = 0;
    for (title, diff) in diffs {
        let (shown, more) = folded(diff);
        let f = fence(&shown);
        let mut block = format!(
            "<details><summary>{}</summary>\n\n{f}diff\n{shown}{f}\n",
            md_escape(&title)
        );
        if more > 0 {
            let _ = writeln!(block, "\n… {more} more lines");
        }
        block.push_str("</details>\n\n");
        if out.len() + block.len() > MARKDOWN_LIMIT {
            left_out += 1;
            continue;
        }
        out.push_str(&block);
    }
    if left_out > 0 {
        let _ = writeln!(
            out,
            "{left_out} more diffs left out (the comment's size limit); run `gantry plan` to see them."
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::model::*;
    use super::*;

    fn object(kind: &str, name: &str, action: Action) -> ObjectPlan {
        ObjectPlan {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: Some("team".into()),
            name: name.into(),
            action,
            diff: None,
            refusal: None,
            note: None,
        }
    }

    fn sample() -> Plan {
        let mut changed = object("ConfigMap", "settings", Action::Change);
        changed.diff = Some("--- live\n+++ git\n-a: 1\n+a: 2\n".into());
        let mut refused = object("ClusterRoleBinding", "admin", Action::Refused);
        refused.namespace = None;
        refused.refusal = Some(Refusal {
            cause: Cause::Rbac,
            message: "forbidden: <script>alert(1)</script> | cannot patch".into(),
        });
        Plan {
            source: "team/app".into(),
            reference: "feature".into(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            applications: vec![AppPlan {
                namespace: "team".into(),
                name: "web".into(),
                cluster: "local".into(),
                identity: "ServiceAccount team/deployer".into(),
                base: Some("fedcba9876543210fedcba9876543210fedcba98".into()),
                objects: vec![
                    changed,
                    object("Deployment", "api", Action::Create),
                    object("Service", "old", Action::Prune),
                    refused,
                    object("ConfigMap", "same", Action::Unchanged),
                ],
                hooks: vec![HookPlan {
                    phase: "pre".into(),
                    object: "Job migrate".into(),
                }],
                rollout: Some(RolloutPlan {
                    strategy: "Canary".into(),
                    workloads: vec!["team/api".into()],
                    steps: vec!["weight 20%".into(), "pause until promoted".into()],
                    on_failure: "abort".into(),
                }),
                error: None,
            }],
        }
    }

    #[test]
    fn text_lists_every_change_and_the_refusal() {
        let t = text(&sample());
        assert!(t.contains("at feature (0123456789ab)"), "{t}");
        assert!(
            t.contains("1 to create, 1 to change, 1 to prune, 1 refused, 1 unchanged"),
            "{t}"
        );
        assert!(t.contains("+ create    Deployment team/api"), "{t}");
        assert!(t.contains("~ change    ConfigMap team/settings"), "{t}");
        assert!(t.contains("- prune     Service team/old"), "{t}");
        assert!(
            t.contains("! refused   ClusterRoleBinding admin: RBAC: forbidden"),
            "{t}"
        );
        assert!(
            !t.contains("ConfigMap team/same"),
            "unchanged objects are counted only"
        );
        assert!(t.contains("hook pre Job migrate"), "{t}");
        assert!(
            t.contains(
                "rollout: Canary of team/api: weight 20%, pause until promoted (on failure: abort)"
            ),
            "{t}"
        );
        assert!(t.contains("+a: 2"), "{t}");
    }

    #[test]
    fn markdown_escapes_what_the_api_server_said() {
        let m = markdown(&sample());
        assert!(m.contains("**would be refused**"), "{m}");
        assert!(!m.contains("<script>"), "{m}");
        assert!(m.contains("&lt;script&gt;"), "{m}");
        assert!(m.contains(r"\| cannot patch"), "{m}");
        assert!(m.contains("| create | Deployment team/api |"), "{m}");
        assert!(m.contains("```diff\n--- live"), "{m}");
    }

    #[test]
    fn long_diffs_are_folded_and_a_huge_plan_stays_under_the_limit() {
        let mut plan = sample();
        let long: String = (0..500).map(|i| format!("+line {i}\n")).collect();
        let app = &mut plan.applications[0];
        for i in 0..200 {
            let mut o = object("ConfigMap", &format!("cm-{i}"), Action::Change);
            o.diff = Some(long.clone());
            app.objects.push(o);
        }
        let t = text(&plan);
        assert!(
            t.contains("… 380 more lines of ConfigMap team/cm-0"),
            "folded"
        );
        let m = markdown(&plan);
        assert!(m.len() <= MARKDOWN_LIMIT + 200, "{}", m.len());
        assert!(m.contains("more diffs left out"), "{}", &m[m.len() - 300..]);
        // Every object is still in the table.
        assert!(m.contains("| change | ConfigMap team/cm-199 |"));
    }

    #[test]
    fn a_diff_with_backticks_gets_a_longer_fence() {
        assert_eq!(fence("a ``` b"), "````");
        assert_eq!(fence("plain"), "```");
    }
}
