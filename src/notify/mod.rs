//! Notifications: what an Application's status says to report (`report`, pure), the request
//! each provider expects (`provider`, pure), and sending it within bounds (`send`). The
//! Notifier reconciler (controller/notifier.rs) keeps the delivery cursor.

pub mod provider;
pub mod report;
pub mod send;
