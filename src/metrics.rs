//! Prometheus metrics, served as text on `/metrics`. Every label value comes from a small
//! fixed set (kinds, results, receiver types, status codes): no object names.

use std::sync::Mutex;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The conditions counted by `gantry_applications`.
pub const APPLICATION_CONDITIONS: [&str; 3] = ["Ready", "Healthy", "Drifted"];

/// A rollout strategy, as `gantry_rollouts_total` labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    RollingUpdate,
    Canary,
}

/// How a rollout ended: the new revision became the stable one (`promoted`: a rolling
/// update that became healthy, a promoted canary), or it was `aborted` (and, with
/// `onFailure: revert`, also `reverted` in Git).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutResult {
    Promoted,
    Aborted,
    Reverted,
}

/// What an image or chart write-back did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateResult {
    Pushed,
    Held,
    Failed,
}

/// How a sync of a revision ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncResult {
    Succeeded,
    Failed,
}

pub struct Metrics {
    registry: Registry,
    /// Rollouts by strategy and result.
    rollouts: IntCounterVec,
    /// Image write-backs by result.
    image_updates: IntCounterVec,
    /// Syncs by result and reason (a reason constant of the Application's conditions).
    syncs: IntCounterVec,
    /// Notifications by Notifier type, event and result.
    notifications: IntCounterVec,
    /// Reports owed and not delivered yet, by Notifier type (summed over Notifiers).
    notification_queue: IntGaugeVec,
    /// Seconds from the state a report says to its delivery, by Notifier type.
    notification_latency: HistogramVec,
    /// Webhooks by receiver type and HTTP status.
    pub webhooks: IntCounterVec,
    /// Registry tag listings, seconds, by result (`ok`, `error`).
    pub registry_scans: HistogramVec,
    /// Git fetches, seconds, by result (`ok`, `error`).
    pub git_fetches: HistogramVec,
    /// Reconciles by kind and result (`ok`, `error`).
    pub reconciles: IntCounterVec,
    /// Failed reconciles by kind and error category.
    pub reconcile_errors: IntCounterVec,
    /// Reconcile durations, seconds, by kind.
    pub reconcile_seconds: HistogramVec,
    /// 1 while this replica holds the Lease (or runs without leader election), 0 on a
    /// standby.
    pub leader: prometheus::IntGauge,
    /// Applications by condition and its status, counted at each scrape.
    applications: IntGaugeVec,
    /// The (Ready, Healthy, Drifted) statuses of every Application (the reconciler's watch
    /// cache), read at each scrape.
    application_states: Mutex<Option<ApplicationStates>>,
}

/// Reads the condition statuses of every Application known to the controller.
pub type ApplicationStates = Box<dyn Fn() -> Vec<[String; 3]> + Send + Sync>;

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
        let histogram_by = |name: &str, help: &str, label: &str| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help)
                    .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
                &[label],
            )
            .expect("histogram");
            registry
                .register(Box::new(h.clone()))
                .expect("register histogram");
            h
        };
        let histogram = |name: &str, help: &str| histogram_by(name, help, "result");
        let applications = IntGaugeVec::new(
            Opts::new(
                "applications",
                "Applications by condition (Ready, Healthy, Drifted) and its status.",
            ),
            &["condition", "status"],
        )
        .expect("gauge");
        registry
            .register(Box::new(applications.clone()))
            .expect("register gauge");
        let leader = prometheus::IntGauge::new(
            "leader",
            "1 while this replica reconciles (holds the Lease, or runs without leader election); 0 on a standby.",
        )
        .expect("gauge");
        leader.set(1);
        registry
            .register(Box::new(leader.clone()))
            .expect("register gauge");
        let notification_queue = IntGaugeVec::new(
            Opts::new(
                "notification_queue_depth",
                "Reports owed by Notifiers and not delivered yet, by type.",
            ),
            &["type"],
        )
        .expect("gauge");
        registry
            .register(Box::new(notification_queue.clone()))
            .expect("register gauge");
        Metrics {
            notification_queue,
            notification_latency: histogram_by(
                "notification_delivery_seconds",
                "Seconds from the state a report says (a sync's end, a condition's change) to its delivery, by Notifier type.",
                "type",
            ),
            leader,
            rollouts: counter(
                "rollouts_total",
                "Rollouts that ended, by strategy (rollingupdate, canary) and result (promoted, aborted, reverted).",
                &["strategy", "result"],
            ),
            image_updates: counter(
                "image_updates_total",
                "Image and chart-version write-backs to Git, by result (pushed, held, failed).",
                &["result"],
            ),
            notifications: counter(
                "notifications_total",
                "Reports of Notifiers, by type (gitea, github, gitlab, bitbucket-server, github-deployment, webhook, cloudevents, slack, msteams, discord, googlechat), event and result (delivered, rejected, unreachable, refused, dropped).",
                &["type", "event", "result"],
            ),
            syncs: counter(
                "syncs_total",
                "Syncs of an Application revision, by result (succeeded, failed) and reason.",
                &["result", "reason"],
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
            reconciles: counter(
                "reconcile_total",
                "Reconciles, by kind and result.",
                &["kind", "result"],
            ),
            reconcile_errors: counter(
                "reconcile_errors_total",
                "Failed reconciles, by kind and error category.",
                &["kind", "category"],
            ),
            reconcile_seconds: histogram_by(
                "reconcile_duration_seconds",
                "Duration of reconciles, by kind.",
                "kind",
            ),
            applications,
            application_states: Default::default(),
            registry,
        }
    }

    /// Counts a rollout that ended.
    /// Where other parts (the web view) register their metrics, served with these.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn rollout(&self, strategy: Strategy, result: RolloutResult) {
        let strategy = match strategy {
            Strategy::RollingUpdate => "rollingupdate",
            Strategy::Canary => "canary",
        };
        let result = match result {
            RolloutResult::Promoted => "promoted",
            RolloutResult::Aborted => "aborted",
            RolloutResult::Reverted => "reverted",
        };
        self.rollouts.with_label_values(&[strategy, result]).inc();
    }

    /// Counts `n` write-backs with one result.
    pub fn image_updates(&self, result: UpdateResult, n: u64) {
        let result = match result {
            UpdateResult::Pushed => "pushed",
            UpdateResult::Held => "held",
            UpdateResult::Failed => "failed",
        };
        self.image_updates.with_label_values(&[result]).inc_by(n);
    }

    /// Counts a sync that ended; `reason` is one of the reason constants (a fixed set).
    pub fn sync(&self, result: SyncResult, reason: &'static str) {
        let result = match result {
            SyncResult::Succeeded => "succeeded",
            SyncResult::Failed => "failed",
        };
        self.syncs.with_label_values(&[result, reason]).inc();
    }

    /// Counts a report; every label comes from a fixed set (the Notifier types, the report
    /// events, the send results).
    pub fn notification(&self, kind: &'static str, event: &'static str, result: &'static str) {
        self.notifications
            .with_label_values(&[kind, event, result])
            .inc();
    }

    /// Sets the reports owed by the Notifiers of one type.
    pub fn notification_queue(&self, kind: &'static str, depth: usize) {
        self.notification_queue
            .with_label_values(&[kind])
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Observes the time from a report's state to its delivery.
    pub fn notification_latency(&self, kind: &'static str, seconds: f64) {
        self.notification_latency
            .with_label_values(&[kind])
            .observe(seconds.max(0.0));
    }

    /// Where `gantry_applications` reads the Applications from.
    pub fn set_application_states(&self, states: ApplicationStates) {
        *self.application_states.lock().expect("application states") = Some(states);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.applications.reset();
        let states = self
            .application_states
            .lock()
            .expect("application states")
            .as_ref()
            .map(|f| f())
            .unwrap_or_default();
        for statuses in &states {
            for (condition, status) in APPLICATION_CONDITIONS.iter().zip(statuses) {
                self.applications
                    .with_label_values(&[condition, status.as_str()])
                    .inc();
            }
        }
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
        m.rollout(Strategy::Canary, RolloutResult::Aborted);
        m.sync(SyncResult::Failed, "HookFailed");
        m.webhooks.with_label_values(&["github", "401"]).inc();
        m.git_fetches.with_label_values(&["ok"]).observe(0.2);
        let text = m.render();
        assert!(
            text.contains(r#"gantry_rollouts_total{result="aborted",strategy="canary"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"gantry_webhooks_total{code="401",type="github"} 1"#));
        assert!(
            text.contains(r#"gantry_syncs_total{reason="HookFailed",result="failed"} 1"#),
            "{text}"
        );
        assert!(text.contains("gantry_git_fetch_seconds_bucket"));
    }

    #[test]
    fn applications_are_counted_by_condition_status() {
        let m = Metrics::new();
        let s = |a: &str, b: &str, c: &str| [a.to_string(), b.to_string(), c.to_string()];
        let apps = std::sync::Arc::new(Mutex::new(vec![
            s("True", "True", "False"),
            s("True", "Unknown", "False"),
        ]));
        let source = apps.clone();
        m.set_application_states(Box::new(move || source.lock().unwrap().clone()));
        let text = m.render();
        assert!(
            text.contains(r#"gantry_applications{condition="Ready",status="True"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"gantry_applications{condition="Drifted",status="False"} 2"#));
        apps.lock().unwrap().remove(0);
        let text = m.render();
        assert!(
            text.contains(r#"gantry_applications{condition="Ready",status="True"} 1"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"condition="Healthy",status="True""#),
            "{text}"
        );
    }
}
