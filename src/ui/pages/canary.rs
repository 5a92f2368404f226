//! A canary as a chart, drawn as SVG on the server: its steps' weights (the step running
//! now marked, the steps done filled), and beneath them the analysis results over time,
//! one mark per check run (passed or failed). Every label is text maud escapes.

use maud::{Markup, html};

use crate::api::rollout::{CheckResult, RolloutPhase, RolloutSpec, RolloutStatus};

const W: i64 = 640;
const BARS_H: i64 = 120;
const TOP: i64 = 10;
const LEFT: i64 = 40;
const STRIP_Y: i64 = 170;

/// What one step is, in words: `20%`, `pause 1m`, `pause (until promoted)`.
pub fn step_words(step: &crate::api::rollout::CanaryStep) -> String {
    match (&step.weight, &step.pause) {
        (Some(w), _) => format!("{w}%"),
        (None, Some(p)) => match &p.duration {
            Some(d) => format!("pause {d}"),
            None => "pause (until promoted)".into(),
        },
        (None, None) => "step".into(),
    }
}

/// The weight in force at each step (a pause keeps the weight before it).
fn weights(spec: &RolloutSpec) -> Vec<u32> {
    let mut current = 0;
    spec.steps
        .iter()
        .map(|s| {
            if let Some(w) = s.weight {
                current = w.min(100);
            }
            current
        })
        .collect()
}

/// The chart, with a text alternative (its summary) for screen readers.
pub fn chart(spec: &RolloutSpec, status: &RolloutStatus) -> Markup {
    let ws = weights(spec);
    let n = ws.len().max(1) as i64;
    let slot = (W - LEFT - 10) / n;
    let done = |i: usize| match status.phase {
        RolloutPhase::Succeeded | RolloutPhase::Promoting => true,
        _ => (i as u32) < status.step,
    };
    let current = |i: usize| {
        matches!(
            status.phase,
            RolloutPhase::Progressing | RolloutPhase::Paused
        ) && i as u32 == status.step
    };
    let summary = format!(
        "Canary {:?}: step {} of {}, weight {}%; {} checks, {} failed.",
        status.phase,
        (status.step as usize + 1).min(ws.len()),
        ws.len(),
        ws.get(status.step as usize).copied().unwrap_or(0),
        status.checks.len(),
        status.checks.iter().filter(|c| !c.passed).count()
    );
    let (t0, t1) = span(&status.checks);
    html! {
        figure class="canary" {
            svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (W) " 200" } role="img" aria-label=(summary) {
                title { (summary) }
                // The axis of weights.
                line x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(TOP + BARS_H) class="axis" {}
                line x1=(LEFT) y1=(TOP + BARS_H) x2=(W - 10) y2=(TOP + BARS_H) class="axis" {}
                text x="4" y=(TOP + 8) class="label" { "100%" }
                text x="16" y=(TOP + BARS_H) class="label" { "0%" }
                @for (i, w) in ws.iter().enumerate() {
                    @let h = (*w as i64) * BARS_H / 100;
                    @let x = LEFT + 4 + i as i64 * slot;
                    @let class = if current(i) { "step current" } else if done(i) { "step done" } else { "step" };
                    rect x=(x) y=(TOP + BARS_H - h) width=((slot - 8).max(2)) height=(h) class=(class) data-step=(i + 1) {
                        title { "step " (i + 1) ": " (step_words(&spec.steps[i])) }
                    }
                    text x=(x) y=(TOP + BARS_H + 14) class="label" { (i + 1) ": " (step_words(&spec.steps[i])) }
                }
                // The analysis, over time.
                text x="4" y=(STRIP_Y + 4) class="label" { "checks" }
                line x1=(LEFT) y1=(STRIP_Y) x2=(W - 10) y2=(STRIP_Y) class="axis" {}
                @for c in &status.checks {
                    @let x = LEFT + 6 + ((c.time.0.as_second() - t0) * (W - LEFT - 22) / (t1 - t0).max(1));
                    circle cx=(x) cy=(STRIP_Y) r="5" class={ "check " (if c.passed { "passed" } else { "failed" }) } {
                        title { (c.name) ": " (if c.passed { "passed" } else { "failed" })
                            @if let Some(v) = c.value { " (" (v) ")" }
                            @if let Some(m) = &c.message { " — " (m) } }
                    }
                }
            }
            figcaption { (summary) }
        }
    }
}

/// The first and last second of the checks.
fn span(checks: &[CheckResult]) -> (i64, i64) {
    let times = checks.iter().map(|c| c.time.0.as_second());
    let t0 = times.clone().min().unwrap_or(0);
    let t1 = times.max().unwrap_or(0);
    (t0, t1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_chart_shows_each_step_and_each_check() {
        let spec: RolloutSpec = serde_json::from_value(json!({
            "strategy": "Canary",
            "steps": [{"weight": 20}, {"pause": {"duration": "1m"}}, {"weight": 50}, {"pause": {}}]
        }))
        .unwrap();
        assert_eq!(weights(&spec), [20, 20, 50, 50]);
        let status: RolloutStatus = serde_json::from_value(json!({
            "phase": "Paused", "step": 1,
            "checks": [
                {"name": "errors", "time": "2026-01-01T00:00:00Z", "passed": true, "value": 0.1},
                {"name": "errors", "time": "2026-01-01T00:00:30Z", "passed": false, "message": "<b>5xx</b>"}
            ]
        }))
        .unwrap();
        let svg = chart(&spec, &status).into_string();
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains(r#"class="step done" data-step="1""#), "{svg}");
        assert!(svg.contains(r#"class="step current" data-step="2""#));
        assert!(svg.contains("2: pause 1m") && svg.contains("4: pause (until promoted)"));
        assert_eq!(svg.matches(r#"class="check passed""#).count(), 1);
        assert_eq!(svg.matches(r#"class="check failed""#).count(), 1);
        assert!(svg.contains("&lt;b&gt;5xx"), "messages are text");
        assert!(svg.contains("Canary Paused: step 2 of 4, weight 20%; 2 checks, 1 failed."));
    }
}
