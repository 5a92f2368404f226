//! Prometheus metrics, served as text on `/metrics`. Every label value comes from a small
//! fixed set (kinds, results, receiver types, status codes): no object names.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Rollouts by strategy (`rollingupdate`, `canary`) and result (`promoted`, `aborted`,
    /// `reverted`).
    pub rollouts: IntCounterVec,
    /// Image write-backs by result (`pushed`, `held`, `failed`).
    pub image_updates: IntCounterVec,
    /// Webhooks by receiver type and HTTP status.
    pub webhooks: IntCounterVec,
    /// Registry tag listings, seconds, by result (`ok`, `error`).
    pub registry_scans: HistogramVec,
    /// Git fetches, seconds, by result (`ok`, `error`).
    pub git_fetches: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("gantry".into()), None).expect("registry");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("counter");
            registry
                .register(Box::new(c.clone()))
                .expect("register counter");
            c
        };
        let histogram = |name: &str, help: &str| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help)
                    .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
                &["result"],
            )
            .expect("histogram");
            registry
                .register(Box::new(h.clone()))
                .expect("register histogram");
            h
        };
        Metrics {
            rollouts: counter(
                "rollouts_total",
                "Rollouts that ended, by strategy and result.",
                &["strategy", "result"],
            ),
            image_updates: counter(
                "image_updates_total",
                "Image write-backs to Git, by result.",
                &["result"],
            ),
            webhooks: counter(
                "webhooks_total",
                "Webhook requests, by receiver type and HTTP status.",
                &["type", "code"],
            ),
            registry_scans: histogram(
                "registry_scan_seconds",
                "Duration of registry tag listings.",
            ),
            git_fetches: histogram("git_fetch_seconds", "Duration of Git fetches."),
            registry,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_bounded_labels() {
        let m = Metrics::new();
        m.rollouts.with_label_values(&["canary", "aborted"]).inc();
        m.webhooks.with_label_values(&["github", "401"]).inc();
        m.git_fetches.with_label_values(&["ok"]).observe(0.2);
        let text = m.render();
        assert!(
            text.contains(r#"gantry_rollouts_total{result="aborted",strategy="canary"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"gantry_webhooks_total{code="401",type="github"} 1"#));
        assert!(text.contains("gantry_git_fetch_seconds_bucket"));
    }
}
