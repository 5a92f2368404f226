//! What the fleet bench reads besides the API: CPU time from /proc, writes from the audit
//! log, requests from the controller's log.

use std::path::Path;

use crate::support::cluster::kubeconfig_path;

/// CPU-seconds (user + system) of a process so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_seconds(&pid.to_string(), 11, 12)
}

/// CPU-seconds of this process's children that have ended: the Git server's
/// `git http-backend` runs (and what they ran) while the controllers, still running, are not
/// counted.
pub fn ended_children_cpu_seconds() -> f64 {
    stat_seconds("self", 13, 14)
}

/// Two tick fields of `/proc/<pid>/stat`, counted after the state field, summed as seconds.
fn stat_seconds(pid: &str, a: usize, b: usize) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat (11 and 12 counted from the state
    // field at 0), cutime and cstime 16 and 17.
    (ticks(a) + ticks(b)) / 100.0
}

pub fn kubeconfig_of(user: &str) -> std::path::PathBuf {
    kubeconfig_path()
        .parent()
        .unwrap()
        .join(format!("replica-{user}.kubeconfig"))
}

/// Writes by `user` in the API server's audit log.
pub fn audited_writes(user: &str) -> usize {
    let dir = kubeconfig_path().parent().unwrap().join("audit");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        n += text
            .lines()
            .filter(|l| l.contains(&format!("\"username\":\"gantry-replica-{user}\"")))
            .filter(|l| l.contains("\"stage\":\"ResponseComplete\""))
            .count();
    }
    n
}

/// Gantry's requests after log line `from`, by whom they serve.
#[derive(Debug, Default)]
pub struct Scoped {
    pub total: usize,
    /// For the changed Application: its own object or its target namespace.
    pub one: usize,
    /// Reads of the source (GitRepository).
    pub source: usize,
    /// Everything else (the other Applications; Events count here too).
    pub others: usize,
    pub others_writes: usize,
}

pub fn requests_by_scope(log: &Path, from: usize, one_ns: &str, one_app: &str) -> Scoped {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut s = Scoped::default();
    let in_ns = format!("/namespaces/{one_ns}/");
    let app = format!("/applications/{one_app}");
    for line in text.lines().skip(from) {
        if !line.contains("kube_client::client::builder") || !line.contains("requesting") {
            continue;
        }
        s.total += 1;
        if line.contains(&in_ns) || line.contains(&app) {
            s.one += 1;
        } else if line.contains("/gitrepositories") {
            s.source += 1;
        } else {
            s.others += 1;
            let is_write = ["PATCH", "POST", "PUT", "DELETE"]
                .iter()
                .any(|m| line.contains(&format!("http.method={m}")));
            if is_write && !line.contains("dryRun=All") {
                s.others_writes += 1;
            }
        }
    }
    s
}

/// Gantry's requests between log lines `from` and `to`, by method and resource (names and
/// namespaces left out, `LIST` for a GET of a collection, `DRY-RUN` for a dry-run write,
/// `WATCH` for a watch): what each request of a sync is, for BENCHMARKS.md.
pub fn requests_by_kind(log: &Path, from: usize, to: usize) -> Vec<(String, usize)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for line in text.lines().skip(from).take(to.saturating_sub(from)) {
        if !line.contains("kube_client::client::builder") || !line.contains("requesting") {
            continue;
        }
        let field = |name: &str| {
            line.find(name)
                .map(|at| &line[at + name.len()..])
                .and_then(|rest| rest.split([' ', '}']).next())
                .unwrap_or_default()
                .trim_matches('"')
                .to_string()
        };
        let method = field("http.method=");
        let url = field("url.full=");
        let url = if url.is_empty() {
            field("http.url=")
        } else {
            url
        };
        let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        // …/namespaces/<ns>/<resource>[/<name>[/<sub>]] or …/<resource>[/<name>]
        let after = segments
            .iter()
            .position(|s| *s == "namespaces")
            .filter(|i| segments.len() > i + 2)
            .map(|i| i + 2)
            .or_else(|| {
                segments
                    .iter()
                    .position(|s| *s == "v1" || s.starts_with("v1") || s.starts_with("v2"))
                    .map(|i| i + 1)
            })
            .unwrap_or(segments.len());
        let rest = &segments[after.min(segments.len())..];
        let resource = rest.first().copied().unwrap_or("?");
        let sub = rest.get(2).map(|s| format!("/{s}")).unwrap_or_default();
        let verb = match (method.as_str(), rest.len()) {
            _ if query.contains("watch=true") || query.contains("watch=1") => "WATCH".to_string(),
            _ if query.contains("dryRun=All") => "DRY-RUN".to_string(),
            ("GET", 1) => "LIST".to_string(),
            (m, _) => m.to_string(),
        };
        *counts.entry(format!("{verb} {resource}{sub}")).or_default() += 1;
    }
    let mut out: Vec<(String, usize)> = counts.into_iter().collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}
