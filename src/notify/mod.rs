//! Notifications: what an Application's status says to report (`report`, pure), the
//! requests each provider expects (`provider`, pure), sending within bounds (`send`) and
//! delivering one report to one Notifier's target (`deliver`). The Notifier reconciler
//! (controller/notifier.rs) keeps the delivery cursor.

pub mod deliver;
pub mod provider;
pub mod report;
pub mod send;
