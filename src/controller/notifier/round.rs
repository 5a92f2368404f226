//! One round of a Notifier: the Applications' owed reports delivered a few Applications
//! at a time, each one's in order, stopping an Application at its first failure and the
//! round at the first transient one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::queue::Owed;
use super::{NotifierContext, Problem};
use crate::api::Notifier;
use crate::api::application::Application;
use crate::api::notifier::{Delivery, Severity};
use crate::notify::deliver::{self, Credentials, Outcome, Target};
use crate::notify::provider::Subject;
use crate::notify::report::{Report, State};
use crate::notify::send::Pace;

pub(super) fn delivery(app: &str, ns: &str, report: &Report, error: Option<String>) -> Delivery {
    Delivery {
        application: format!("{ns}/{app}"),
        revision: report.revision.clone(),
        state: report.state.as_str().to_string(),
        at: Time(Timestamp::now()),
        error,
    }
}

/// Applications delivered to at once by one Notifier.
pub(super) const DELIVERIES_AT_ONCE: usize = 8;

/// What one round of a Notifier shares.
pub(super) struct Round<'a> {
    pub ctx: &'a NotifierContext,
    pub notifier: &'a Notifier,
    pub ns: &'a str,
    pub apps: &'a [Arc<Application>],
    pub queue: &'a [Owed],
    pub creds: &'a Credentials,
    pub pace: &'a Pace,
    pub forges: &'a HashMap<String, Result<(String, String), String>>,
    pub environment: &'a str,
    /// Set at the first transient failure: the Applications not started yet wait for the
    /// next round (a provider that is down is not asked once per Application; one that
    /// refuses one repository still gets the others).
    pub stopped: AtomicBool,
}

/// What became of one Application's reports in a round.
#[derive(Default)]
pub(super) struct AppRound {
    /// Reports done with (delivered, filtered, dropped, nothing to say), in order.
    pub advanced: Vec<(String, Report)>,
    pub last_delivery: Option<Delivery>,
    /// Reports left for a later round.
    pub remaining: usize,
    /// Why it stopped, and the failed delivery.
    pub failure: Option<(Problem, Delivery)>,
}

impl Round<'_> {
    /// Delivers one Application's reports in order, stopping at the first failure (what
    /// follows waits, so that it arrives in order once the provider answers again).
    pub(super) async fn deliver(&self, items: Vec<usize>) -> AppRound {
        let kind = self.notifier.spec.kind;
        let mut out = AppRound::default();
        for (i, item) in items.iter().map(|&k| &self.queue[k]).enumerate() {
            if self.stopped.load(Ordering::Relaxed) {
                out.remaining = items.len() - i;
                return out;
            }
            let report = &item.report;
            let done = |out: &mut AppRound| out.advanced.push((item.app.clone(), report.clone()));
            if item.dropped {
                self.ctx
                    .metrics
                    .notification(kind.label(), report.event, "dropped");
                done(&mut out);
                continue;
            }
            let wanted =
                self.notifier.spec.severity == Severity::Info || report.state == State::Failure;
            if !wanted {
                done(&mut out);
                continue;
            }
            let app = item.index.map(|i| &self.apps[i]);
            let forge = match (kind.is_forge(), app, report.commit.is_some()) {
                (true, Some(app), true) => match &self.forges[&app.spec.source_ref.name] {
                    Ok(t) => Some(t),
                    Err(e) => {
                        out.remaining = items.len() - i;
                        out.failure = Some((
                            Problem::Repository {
                                app: item.app.clone(),
                                why: e.clone(),
                            },
                            delivery(&item.app, self.ns, report, Some(e.clone())),
                        ));
                        return out;
                    }
                },
                _ => None,
            };
            let cluster = app
                .and_then(|a| a.status.as_ref())
                .and_then(|s| s.cluster.clone())
                .unwrap_or_else(|| "local".into());
            let subject = Subject {
                namespace: self.ns,
                name: &item.app,
                cluster: &cluster,
            };
            let target = Target {
                kind,
                creds: self.creds,
                forge,
                context: &self.notifier.spec.context,
                environment: self.environment,
                insecure: self.notifier.spec.insecure,
                targets: &self.ctx.targets,
                pace: self.pace,
            };
            let now = Timestamp::now();
            match deliver::deliver(&target, subject, report, &now.to_string()).await {
                Ok(Outcome::Sent) => {
                    let metrics = &self.ctx.metrics;
                    metrics.notification(kind.label(), report.event, "delivered");
                    if let Some(at) = report.at {
                        let waited = Timestamp::now().duration_since(at).as_secs_f64();
                        metrics.notification_latency(kind.label(), waited);
                    }
                    out.last_delivery = Some(delivery(&item.app, self.ns, report, None));
                    done(&mut out);
                }
                // Nothing to say on this target (no commit): done.
                Ok(Outcome::NothingToSay) => done(&mut out),
                Err(e) => {
                    self.ctx
                        .metrics
                        .notification(kind.label(), report.event, e.label());
                    tracing::warn!(namespace = %self.ns, name = %self.notifier.name_any(), application = %item.app, error = %e, "notification not delivered");
                    if e.is_transient() {
                        self.stopped.store(true, Ordering::Relaxed);
                    }
                    out.remaining = items.len() - i;
                    let failed = delivery(&item.app, self.ns, report, Some(e.to_string()));
                    out.failure = Some((
                        Problem::Send {
                            app: item.app.clone(),
                            revision: report.revision.clone(),
                            error: e,
                        },
                        failed,
                    ));
                    return out;
                }
            }
        }
        out
    }
}
