//! Health rules written in CEL in the Application spec, per kind (in the spirit of Flux's
//! `healthCheckExprs`): `failed`, then `inProgress`, then `current` are evaluated against the
//! live object, whose top-level fields (`metadata`, `spec`, `status`, …) are the variables.
//! The first that is true decides; when none is, the object is still progressing.

use cel::{Context, Program, Value as Cel};
use serde_json::Value;

use super::{Health, Verdict};
use crate::api::application::HealthCheck;

struct Rule {
    group: String,
    kind: String,
    current: (String, Program),
    in_progress: Option<(String, Program)>,
    failed: Option<(String, Program)>,
}

/// The compiled rules of one Application.
#[derive(Default)]
pub struct Rules(Vec<Rule>);

fn compile(kind: &str, field: &str, source: &str) -> Result<(String, Program), String> {
    Program::compile(source)
        .map(|p| (source.to_string(), p))
        .map_err(|e| {
            let first = e.to_string();
            let first = first.lines().next().unwrap_or_default();
            format!("healthChecks {kind}.{field} {source:?} does not compile: {first}")
        })
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

impl Rules {
    /// Compiles every rule; the error names the kind, the field and the expression.
    pub fn compile(checks: &[HealthCheck]) -> Result<Self, String> {
        let mut rules = vec![];
        for c in checks {
            let kind = c.kind.as_str();
            if rules
                .iter()
                .any(|r: &Rule| r.group == group_of(&c.api_version) && r.kind == kind)
            {
                return Err(format!(
                    "healthChecks names {kind} of {} twice",
                    c.api_version
                ));
            }
            rules.push(Rule {
                group: group_of(&c.api_version).to_string(),
                kind: kind.to_string(),
                current: compile(kind, "current", &c.current)?,
                in_progress: c
                    .in_progress
                    .as_deref()
                    .map(|s| compile(kind, "inProgress", s))
                    .transpose()?,
                failed: c
                    .failed
                    .as_deref()
                    .map(|s| compile(kind, "failed", s))
                    .transpose()?,
            });
        }
        Ok(Rules(rules))
    }

    /// Whether a rule covers this kind.
    pub fn covers(&self, group: &str, kind: &str) -> bool {
        self.0.iter().any(|r| r.group == group && r.kind == kind)
    }

    /// The verdict of the kind's rule on `o`, if a rule covers the kind. An expression that
    /// fails on the object (a missing field, a wrong type) makes the health Unknown, with
    /// the cause.
    pub fn assess(&self, group: &str, kind: &str, o: &Value) -> Option<Verdict> {
        let rule = self.0.iter().find(|r| r.group == group && r.kind == kind)?;
        let mut ctx = Context::default();
        if let Value::Object(fields) = o {
            for (k, v) in fields {
                ctx.add_variable_from_value(k.as_str(), to_cel(v));
            }
        }
        // `status` is often absent on a fresh object; `has(status.x)` should then be false,
        // not an error.
        for k in ["metadata", "spec", "status"] {
            if o.get(k).is_none() {
                ctx.add_variable_from_value(k, to_cel(&Value::Object(Default::default())));
            }
        }
        let checks = [
            (&rule.failed, Health::Degraded),
            (&rule.in_progress, Health::Progressing),
        ];
        for (expr, health) in checks {
            if let Some((source, program)) = expr {
                match program.execute(&ctx) {
                    Ok(Cel::Bool(true)) => {
                        return Some(Verdict {
                            health,
                            message: format!("{source} is true"),
                        });
                    }
                    Ok(Cel::Bool(false)) => {}
                    Ok(other) => return Some(not_bool(source, &other)),
                    Err(e) => return Some(unknown(format!("{source}: {e}"))),
                }
            }
        }
        let (source, program) = &rule.current;
        Some(match program.execute(&ctx) {
            Ok(Cel::Bool(true)) => Verdict {
                health: Health::Healthy,
                message: format!("{source} is true"),
            },
            Ok(Cel::Bool(false)) => Verdict {
                health: Health::Progressing,
                message: format!("waiting for {source}"),
            },
            Ok(other) => not_bool(source, &other),
            Err(e) => unknown(format!("{source}: {e}")),
        })
    }
}

/// JSON to CEL, whole numbers as `int` (CEL does not add or compare `uint` with `int`
/// literals, and Kubernetes counts are signed).
fn to_cel(v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Cel::Int(i),
            None => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Cel::from(s.as_str()),
        Value::Array(a) => Cel::from(a.iter().map(to_cel).collect::<Vec<_>>()),
        Value::Object(o) => Cel::from(
            o.iter()
                .map(|(k, v)| (k.clone(), to_cel(v)))
                .collect::<std::collections::HashMap<_, _>>(),
        ),
    }
}

fn unknown(message: String) -> Verdict {
    Verdict {
        health: Health::Unknown,
        message,
    }
}

fn not_bool(source: &str, got: &Cel) -> Verdict {
    unknown(format!("{source} gave {got:?}, not a bool"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(current: &str, in_progress: Option<&str>, failed: Option<&str>) -> HealthCheck {
        HealthCheck {
            api_version: "example.com/v1".into(),
            kind: "Widget".into(),
            current: current.into(),
            in_progress: in_progress.map(str::to_string),
            failed: failed.map(str::to_string),
        }
    }

    #[test]
    fn failed_then_in_progress_then_current() {
        let rules = Rules::compile(&[check(
            "status.phase == 'Running' && status.ready >= 2",
            Some("has(status.phase) && status.phase == 'Starting'"),
            Some("has(status.phase) && status.phase == 'Failed'"),
        )])
        .unwrap();
        let at = |phase: Value| {
            rules
                .assess(
                    "example.com",
                    "Widget",
                    &json!({"status": {"phase": phase, "ready": 2}}),
                )
                .unwrap()
                .health
        };
        assert_eq!(at(json!("Running")), Health::Healthy);
        assert_eq!(at(json!("Failed")), Health::Degraded);
        assert_eq!(at(json!("Starting")), Health::Progressing);
        assert_eq!(at(json!("Pending")), Health::Progressing);
        assert!(rules.assess("example.com", "Gadget", &json!({})).is_none());
        assert!(rules.covers("example.com", "Widget"));
    }

    #[test]
    fn a_missing_status_is_not_an_error_for_has() {
        let rules =
            Rules::compile(&[check("has(status.ready) && status.ready", None, None)]).unwrap();
        let v = rules
            .assess("example.com", "Widget", &json!({"metadata": {"name": "w"}}))
            .unwrap();
        assert_eq!(v.health, Health::Progressing);
    }

    #[test]
    fn an_expression_that_fails_or_is_not_bool_is_unknown_with_its_cause() {
        let rules = Rules::compile(&[check("status.count + 1", None, None)]).unwrap();
        let v = rules
            .assess("example.com", "Widget", &json!({"status": {"count": 1}}))
            .unwrap();
        assert_eq!(v.health, Health::Unknown);
        assert!(v.message.contains("not a bool"), "{}", v.message);
        let rules = Rules::compile(&[check("status.missing == 1", None, None)]).unwrap();
        let v = rules
            .assess("example.com", "Widget", &json!({"status": {}}))
            .unwrap();
        assert_eq!(v.health, Health::Unknown);
        assert!(v.message.contains("status.missing"), "{}", v.message);
    }

    #[test]
    fn a_rule_that_does_not_compile_names_kind_field_and_expression() {
        let err = Rules::compile(&[check("status.phase ==", None, None)])
            .err()
            .unwrap();
        assert!(
            err.starts_with("healthChecks Widget.current \"status.phase ==\" does not compile"),
            "{err}"
        );
        let err = Rules::compile(&[check("true", None, None), check("true", None, None)])
            .err()
            .unwrap();
        assert!(err.contains("twice"), "{err}");
    }
}
