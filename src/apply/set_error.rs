//! Why a set was not (wholly) applied: the errors of [`super::set`], with messages that
//! name the objects and say what was applied.

use super::applier::ObjectError;

/// Why a set was not (wholly) applied.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    /// Objects the API server refused in a dry-run; `nothing_applied` when it was the first
    /// validation (before stage 0).
    #[error("{}", validation_message(.failed, *.total, *.nothing_applied))]
    Validation {
        failed: Vec<ObjectError>,
        total: usize,
        nothing_applied: bool,
    },
    #[error("{}", super::unknown_kind_message(.object, .group, .version, .kind))]
    UnknownKind {
        object: String,
        group: String,
        version: String,
        kind: String,
    },
    /// Objects labelled for another owner: (object, other owner).
    #[error(
        "{} {} labelled for another Application and not taken over (set \
         spec.takeOwnership on Application {owner} to take them), nothing was applied: {}",
        crate::text::counted(.conflicts.len(), "object"),
        crate::text::agree(.conflicts.len(), "is", "are"),
        super::join_errors(.conflicts.iter().map(|(o, other)| format!("{o} belongs to Application {other}")))
    )]
    Ownership {
        owner: String,
        conflicts: Vec<(String, String)>,
    },
    #[error("cannot record the planned inventory: {0}")]
    BeforeWrite(String),
    #[error(
        "the sync waves before wave {next} are not healthy, so wave {next} and later were not applied: {message}"
    )]
    WaveNotHealthy { next: i64, message: String },
    #[error("{}", super::join_errors(.0))]
    Apply(Vec<ObjectError>),
    /// A `Sync` hook between the set's waves failed; the waves after it were not applied.
    #[error("{0}; the sync waves after it were not applied")]
    Hook(#[from] super::hooks::HookError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

fn validation_message(failed: &[ObjectError], total: usize, nothing_applied: bool) -> String {
    if nothing_applied {
        format!(
            "{} of {total} objects failed validation, nothing was applied: {}",
            failed.len(),
            super::join_errors(failed)
        )
    } else {
        format!(
            "{} failed validation: {}",
            crate::text::counted(failed.len(), "object"),
            super::join_errors(failed)
        )
    }
    .to_string()
        + immutable_hint(failed).as_str()
}

/// What to do about a change to an immutable field (the API server only says it is one).
fn immutable_hint(failed: &[ObjectError]) -> String {
    if failed.iter().any(super::recreate::immutable) {
        format!(
            " (to delete and recreate an object whose immutable fields changed, set \
             spec.recreateOnImmutable on the Application or annotate the object {}: \"true\")",
            super::recreate::RECREATE_ANNOTATION
        )
    } else {
        String::new()
    }
}
