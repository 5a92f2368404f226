//! Health rules written in CEL in the Application spec, per kind (in the spirit of Flux's
//! `healthCheckExprs`): `failed`, then `inProgress`, then `current` are evaluated against the
//! live object, whose top-level fields (`metadata`, `spec`, `status`, …) are the variables.
//! The first that is true decides; when none is, the object is still progressing.
//!
//! Rules are a tenant's input, so each is bounded: its length and nesting at admission (the
//! CRD) and again when it is compiled (a parser with a recursion and node limit, never the
//! deep recursive-descent one), and its cost before every evaluation — the rule's size times
//! the largest list it may iterate, to the power of its nesting of macros (`all`, `map`, …)
//! — so no rule on any object can take more than a bounded number of steps. Compiled rules
//! are shared by every Application that declares the same ones.

use std::sync::{Arc, LazyLock, Mutex};

use cel::common::ast::{EntryExpr, Expr};
use cel::{Context, IdedExpr, Value as Cel};
use serde_json::Value;

use super::{Health, Verdict};
use crate::api::application::HealthCheck;

/// Longest rule accepted (the CRD says the same).
pub const MAX_RULE_BYTES: usize = 2048;
/// Deepest nesting of a rule's expression (parentheses, operators, calls).
pub const MAX_NESTING: u16 = 24;
/// Most nodes in one compiled rule.
pub const MAX_NODES: usize = 500;
/// Deepest nesting of macros that iterate (`all` inside `all`).
pub const MAX_MACRO_NESTING: u32 = 2;
/// Most steps one evaluation may take, by the estimate above.
pub const MAX_STEPS: u128 = 200_000;

struct Compiled {
    source: String,
    expr: IdedExpr,
    shape: Shape,
}

struct Rule {
    group: String,
    kind: String,
    current: Compiled,
    in_progress: Option<Compiled>,
    failed: Option<Compiled>,
}

/// The compiled rules of one Application (cheap to clone).
#[derive(Default, Clone)]
pub struct Rules(Arc<Vec<Rule>>);

/// What bounds a rule's evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Nodes of the expression.
    pub nodes: usize,
    /// Nesting of iterating macros.
    pub degree: u32,
    /// Elements of the list and map literals it writes.
    pub literal_elements: usize,
    /// Additions (a list may be concatenated with itself).
    pub additions: usize,
}

impl Shape {
    /// Steps at most, when no list or map of the object is longer than `longest`.
    pub fn steps(&self, longest: usize) -> u128 {
        let bound = ((longest + self.literal_elements).max(1) as u128)
            .saturating_mul(self.additions as u128 + 1);
        (self.nodes as u128).saturating_mul(bound.saturating_pow(self.degree))
    }
}

/// The shape of an expression (its depth is bounded by the parser, so recursion is safe).
pub fn shape(e: &IdedExpr) -> Shape {
    let mut s = Shape {
        nodes: 0,
        degree: 0,
        literal_elements: 0,
        additions: 0,
    };
    s.degree = visit(e, &mut s);
    s
}

/// Counts nodes, literals and additions into `s`; returns the macro nesting under `e`.
fn visit(e: &IdedExpr, s: &mut Shape) -> u32 {
    s.nodes += 1;
    match &e.expr {
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => 0,
        Expr::Select(sel) => visit(&sel.operand, s),
        Expr::Call(call) => {
            if call.func_name == "_+_" {
                s.additions += 1;
            }
            let mut d = call.target.as_deref().map_or(0, |t| visit(t, s));
            for a in &call.args {
                d = d.max(visit(a, s));
            }
            d
        }
        Expr::List(list) => {
            s.literal_elements += list.elements.len();
            list.elements.iter().map(|x| visit(x, s)).max().unwrap_or(0)
        }
        Expr::Map(map) => {
            s.literal_elements += map.entries.len();
            entries(&map.entries, s)
        }
        Expr::Struct(st) => entries(&st.entries, s),
        Expr::Comprehension(c) => {
            let inner = [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ]
            .into_iter()
            .map(|x| visit(x, s))
            .max()
            .unwrap_or(0);
            inner + 1
        }
    }
}

fn entries(list: &[cel::common::ast::IdedEntryExpr], s: &mut Shape) -> u32 {
    let mut d = 0;
    for entry in list {
        d = d.max(match &entry.expr {
            EntryExpr::StructField(f) => visit(&f.value, s),
            EntryExpr::MapEntry(m) => visit(&m.key, s).max(visit(&m.value, s)),
        });
    }
    d
}

/// Compiles one rule within the bounds above; the error names the kind, the field and
/// (the start of) the expression.
fn compile(kind: &str, field: &str, source: &str) -> Result<Compiled, String> {
    let shown = || {
        let mut end = source.len().min(80);
        while !source.is_char_boundary(end) {
            end -= 1;
        }
        if end < source.len() {
            format!("{:?}…", &source[..end])
        } else {
            format!("{source:?}")
        }
    };
    if source.len() > MAX_RULE_BYTES {
        return Err(format!(
            "healthChecks {kind}.{field} {} is {} bytes long, more than {MAX_RULE_BYTES}",
            shown(),
            source.len()
        ));
    }
    let expr = cel::parser::PrattParser::new()
        .max_recursion_depth(MAX_NESTING)
        .max_expression_node_count(MAX_NODES)
        .parse(source)
        .map_err(|e| {
            let first = e.to_string();
            let first = first.lines().next().unwrap_or_default().to_string();
            format!(
                "healthChecks {kind}.{field} {} does not compile: {first}",
                shown()
            )
        })?;
    let shape = shape(&expr);
    if shape.degree > MAX_MACRO_NESTING {
        return Err(format!(
            "healthChecks {kind}.{field} {} nests {} iterating macros (all, exists, map, filter); \
             at most {MAX_MACRO_NESTING} are allowed",
            shown(),
            shape.degree
        ));
    }
    Ok(Compiled {
        source: source.to_string(),
        expr,
        shape,
    })
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

/// Rules compiled before, by the text of their checks (bounded; cleared when full).
static COMPILED: LazyLock<Mutex<std::collections::HashMap<String, Result<Rules, String>>>> =
    LazyLock::new(Default::default);
const MAX_CACHED: usize = 4096;

impl Rules {
    /// Compiles every rule, or takes them from the rules compiled before for the same
    /// checks; the error names the kind, the field and the expression.
    pub fn compile(checks: &[HealthCheck]) -> Result<Self, String> {
        if checks.is_empty() {
            return Ok(Rules::default());
        }
        let key = serde_json::to_string(checks).unwrap_or_default();
        if let Some(done) = COMPILED.lock().expect("compiled rules").get(&key) {
            return done.clone();
        }
        let done = Self::compile_uncached(checks);
        let mut cache = COMPILED.lock().expect("compiled rules");
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, done.clone());
        done
    }

    fn compile_uncached(checks: &[HealthCheck]) -> Result<Self, String> {
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
        Ok(Rules(Arc::new(rules)))
    }

    /// Whether no rule is declared.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a rule covers this kind.
    pub fn covers(&self, group: &str, kind: &str) -> bool {
        self.0.iter().any(|r| r.group == group && r.kind == kind)
    }

    /// The verdict of the kind's rule on `o`, if a rule covers the kind. An expression that
    /// fails on the object (a missing field, a wrong type) makes the health Unknown, with
    /// the cause, and so does one that would cost more than [`MAX_STEPS`] on this object.
    /// Blocking for up to that many steps: async callers evaluate off their workers.
    pub fn assess(&self, group: &str, kind: &str, o: &Value) -> Option<Verdict> {
        let rule = self.0.iter().find(|r| r.group == group && r.kind == kind)?;
        let longest = longest_collection(o);
        for compiled in [&rule.failed, &rule.in_progress]
            .into_iter()
            .flatten()
            .chain([&rule.current])
        {
            let steps = compiled.shape.steps(longest);
            if steps > MAX_STEPS {
                return Some(unknown(format!(
                    "{}: not evaluated, it could take {steps} steps on this object (lists of up \
                     to {longest}), more than {MAX_STEPS}",
                    compiled.source
                )));
            }
        }
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
        for (compiled, health) in checks {
            if let Some(c) = compiled {
                match Cel::resolve(&c.expr, &ctx) {
                    Ok(Cel::Bool(true)) => {
                        return Some(Verdict {
                            health,
                            message: format!("{} is true", c.source),
                        });
                    }
                    Ok(Cel::Bool(false)) => {}
                    Ok(other) => return Some(not_bool(&c.source, &other)),
                    Err(e) => return Some(unknown(format!("{}: {e}", c.source))),
                }
            }
        }
        let c = &rule.current;
        Some(match Cel::resolve(&c.expr, &ctx) {
            Ok(Cel::Bool(true)) => Verdict {
                health: Health::Healthy,
                message: format!("{} is true", c.source),
            },
            Ok(Cel::Bool(false)) => Verdict {
                health: Health::Progressing,
                message: format!("waiting for {}", c.source),
            },
            Ok(other) => not_bool(&c.source, &other),
            Err(e) => unknown(format!("{}: {e}", c.source)),
        })
    }
}

/// The length of the longest list or map anywhere in `v`, found without recursion.
fn longest_collection(v: &Value) -> usize {
    let mut longest = 0;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(a) => {
                longest = longest.max(a.len());
                stack.extend(a.iter());
            }
            Value::Object(o) => {
                longest = longest.max(o.len());
                stack.extend(o.values());
            }
            _ => {}
        }
    }
    longest
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
    fn hostile_rules_are_refused_when_compiled_never_overflow_or_run_long() {
        // Deep nesting: a value or an error from the bounded parser, even on a small stack
        // (parentheses make no nodes and repeated unary operators collapse; nested lists
        // do make nodes, and are refused).
        let deep = |n: usize| format!("{}true{}", "(".repeat(n), ")".repeat(n));
        let lists = |n: usize| format!("{}1{}.size() > 0", "[".repeat(n), "]".repeat(n));
        let err = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let _ = Rules::compile(&[check(&deep(10), None, None)]).unwrap();
                for harmless in [
                    deep(1000),
                    "!".repeat(500) + "true",
                    "-".repeat(500) + "1 == 1",
                ] {
                    let _ = Rules::compile(&[check(&harmless, None, None)]);
                }
                Rules::compile(&[check(&lists(200), None, None)]).err()
            })
            .unwrap()
            .join()
            .unwrap()
            .expect("refused");
        assert!(err.contains("does not compile"), "{err}");
        // Too long.
        let long = format!("[{}].size() > 0", vec!["1"; 2000].join(","));
        let err = Rules::compile(&[check(&long, None, None)]).err().unwrap();
        assert!(err.contains("bytes long"), "{err}");
        assert!(err.len() < 300, "the message quotes the start only: {err}");
        // Three iterating macros nested.
        let nested = "[1,2].all(a, [1,2].all(b, [1,2].all(c, a+b+c > 0)))";
        let err = Rules::compile(&[check(nested, None, None)]).err().unwrap();
        assert!(err.contains("nests 3 iterating macros"), "{err}");
        // Two nested over a large list of the object: not evaluated, Unknown with why.
        let rules = Rules::compile(&[check(
            "status.items.all(a, status.items.all(b, a + b >= 0))",
            None,
            None,
        )])
        .unwrap();
        let items: Vec<i64> = (0..12_000).collect();
        let started = std::time::Instant::now();
        let v = rules
            .assess(
                "example.com",
                "Widget",
                &json!({"status": {"items": items}}),
            )
            .unwrap();
        assert_eq!(v.health, Health::Unknown);
        assert!(v.message.contains("not evaluated"), "{}", v.message);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // The same rule on a small list is evaluated.
        let v = rules
            .assess(
                "example.com",
                "Widget",
                &json!({"status": {"items": [1, 2, 3]}}),
            )
            .unwrap();
        assert_eq!(v.health, Health::Healthy, "{}", v.message);
    }

    #[test]
    fn the_cost_estimate_grows_with_nesting_and_lists() {
        let s = |src: &str| {
            shape(
                &cel::parser::PrattParser::new()
                    .parse(src)
                    .unwrap_or_else(|e| panic!("{src}: {e}")),
            )
        };
        assert_eq!(s("status.ready").degree, 0);
        assert_eq!(s("status.c.all(x, x.ok)").degree, 1);
        assert_eq!(s("status.c.all(x, x.d.exists(y, y))").degree, 2);
        assert_eq!(s("[1, 2, 3].all(x, x > 0)").literal_elements, 3);
        let two = s("a.all(x, a.all(y, x == y))");
        assert!(two.steps(1000) > 100 * two.steps(10));
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
