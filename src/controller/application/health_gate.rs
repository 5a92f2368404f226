//! The waits of a sync: objects healthy by the Application's health checks between sync
//! waves and before post hooks, Argo CD's `Sync` hooks of each wave, and the progress
//! reported meanwhile.

use std::time::Duration;

use super::guards::RecordPlanned;
use crate::api::application::InventoryEntry;
use crate::apply::hooks;
use crate::apply::set::{SetError, WaveGate};
use crate::cluster::Target;
use crate::health::Health;
use crate::health::rules::Rules;

/// Waits for objects to be healthy by the Application's health checks, between sync waves
/// and before post hooks.
pub(super) struct HealthGate<'a> {
    pub(super) target: &'a Target,
    pub(super) rules: Rules,
    pub(super) timeout: Duration,
    /// The render's hooks (its `Sync` hooks run between waves), and whose they are.
    pub(super) hooks: &'a [hooks::Hook],
    pub(super) namespace: &'a str,
    pub(super) owner: &'a str,
    /// Where the sync's waits are reported (Ready=Unknown/Progressing).
    pub(super) progress: Option<&'a dyn RecordPlanned>,
}

impl HealthGate<'_> {
    /// The sync is about to wait on `what`: Ready says so (Ready=Unknown/Progressing).
    pub(super) async fn report(&self, what: String) {
        if let Some(p) = self.progress {
            p.progress(what).await;
        }
    }

    /// `Ok` once every object is healthy (or suspended, or of unknown health: nothing tells
    /// when that would change); `Err` with the cause when one is degraded or the timeout
    /// passes.
    pub(super) async fn healthy(&self, objects: &[InventoryEntry]) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(250);
        loop {
            let (health, message) =
                super::live_health::assess(&self.target.applier, objects, &self.rules).await;
            match health {
                Health::Healthy | Health::Suspended | Health::Unknown => return Ok(()),
                Health::Degraded => return Err(message),
                Health::Progressing if tokio::time::Instant::now() >= deadline => {
                    return Err(format!(
                        "still progressing after {}s: {message}",
                        self.timeout.as_secs()
                    ));
                }
                Health::Progressing => {}
            }
            crate::apply::waiting::pause(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

impl WaveGate for HealthGate<'_> {
    fn before_wave<'a>(
        &'a self,
        wave: i64,
        objects: &'a [InventoryEntry],
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            tracing::debug!(
                wave,
                objects = objects.len(),
                "awaiting the health of the waves before"
            );
            self.report(format!(
                "waiting for the sync waves before wave {wave} to be healthy"
            ))
            .await;
            self.healthy(objects).await
        })
    }

    fn hook_waves(&self) -> Vec<i64> {
        hooks::sync_waves(self.hooks)
    }

    /// Argo CD's `Sync` hooks of `wave`: once this wave and the ones before it are healthy.
    fn after_wave<'a>(
        &'a self,
        wave: i64,
        objects: &'a [InventoryEntry],
    ) -> futures::future::BoxFuture<'a, Result<(), SetError>> {
        Box::pin(async move {
            self.report(format!("running the Sync hooks of wave {wave}"))
                .await;
            self.healthy(objects)
                .await
                .map_err(|message| SetError::WaveNotHealthy {
                    next: wave + 1,
                    message: format!("(before the Sync hooks of wave {wave}) {message}"),
                })?;
            self.target
                .applier
                .run_hooks(
                    self.hooks,
                    hooks::Phase::Sync,
                    Some(wave),
                    self.namespace,
                    self.owner,
                    self.timeout,
                )
                .await?;
            Ok(())
        })
    }
}
