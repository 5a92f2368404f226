//! The web view's metrics: requests by page (the route, never a name) and status class,
//! and their time by page. In the controller they are served on its `/metrics`.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct UiMetrics {
    requests: IntCounterVec,
    seconds: HistogramVec,
}

impl UiMetrics {
    /// Registers the metrics in `registry` (a registry prefixed `gantry`).
    pub fn register(registry: &Registry) -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "ui_requests_total",
                "Requests to the web view, by page (its route) and status class (2xx, 3xx, 4xx, 5xx).",
            ),
            &["page", "code"],
        )
        .expect("counter");
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "ui_request_duration_seconds",
                "Time to answer a request to the web view, by page (its route); /events counts until the stream starts.",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["page"],
        )
        .expect("histogram");
        // A second registration (a test server beside another) keeps the first.
        let _ = registry.register(Box::new(requests.clone()));
        let _ = registry.register(Box::new(seconds.clone()));
        Self { requests, seconds }
    }

    /// Metrics kept nowhere else (`gantry ui` has no metrics endpoint).
    pub fn unregistered() -> Self {
        Self::register(&Registry::new())
    }

    pub fn observe(&self, page: &str, status: u16, took: Duration) {
        let class = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests.with_label_values(&[page, class]).inc();
        self.seconds
            .with_label_values(&[page])
            .observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

    #[test]
    fn requests_are_counted_by_route_and_status_class() {
        let registry = Registry::new_custom(Some("gantry".into()), None).unwrap();
        let m = UiMetrics::register(&registry);
        m.observe("/apps/{ns}/{name}", 200, Duration::from_millis(3));
        m.observe("/apps/{ns}/{name}", 404, Duration::from_millis(1));
        let mut out = vec![];
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(r#"gantry_ui_requests_total{code="2xx",page="/apps/{ns}/{name}"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"gantry_ui_requests_total{code="4xx",page="/apps/{ns}/{name}"} 1"#)
        );
        assert!(
            text.contains(
                r#"gantry_ui_request_duration_seconds_count{page="/apps/{ns}/{name}"} 2"#
            )
        );
    }
}
