//! What the reconcilers need to know about each Gantry kind, behind one trait.

use std::fmt::Debug;

use kube::Resource;
use kube::core::NamespaceResourceScope;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::conditions::Condition;
use crate::api::{Application, GitRepository, ImagePolicy, Notifier, Receiver};

/// A namespaced Gantry resource with standard status conditions.
pub trait GantryKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// The conditions in status, empty when there is no status yet.
    fn conditions(&self) -> &[Condition];
    /// `status.observedGeneration`.
    fn observed_generation(&self) -> Option<i64>;
}

macro_rules! gantry_kind {
    ($($kind:ty),*) => {$(
        impl GantryKind for $kind {
            fn conditions(&self) -> &[Condition] {
                self.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or(&[])
            }
            fn observed_generation(&self) -> Option<i64> {
                self.status.as_ref().and_then(|s| s.observed_generation)
            }
        }
    )*};
}

gantry_kind!(GitRepository, ImagePolicy, Application, Receiver, Notifier);
