//! Standard `metav1.Condition` handling shared by every Gantry kind.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Condition types.
pub const READY: &str = "Ready";
pub const HEALTHY: &str = "Healthy";
pub const DRIFTED: &str = "Drifted";
pub const PROGRESSING: &str = "Progressing";

/// Reasons used before a kind's reconciler exists.
pub const REASON_NOT_IMPLEMENTED: &str = "NotImplemented";

/// `True`, `False` or `Unknown`, as the API spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }

    /// The status a condition carries (anything but `True` or `False` is `Unknown`).
    pub fn of(condition: &Condition) -> Status {
        match condition.status.as_str() {
            "True" => Status::True,
            "False" => Status::False,
            _ => Status::Unknown,
        }
    }
}

/// Whether `condition` has `status` (compared as a type, never as a string).
pub fn is(condition: &Condition, status: Status) -> bool {
    Status::of(condition) == status
}

/// Builds a condition stamped with `now`.
pub fn new_condition(
    type_: &str,
    status: Status,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status.as_str().to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation,
        last_transition_time: Time(now),
    }
}

/// Inserts or replaces the condition of the same type. The transition time of an existing
/// condition is kept when its status does not change, as `meta.SetStatusCondition` does.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            if existing.status == new.status {
                new.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = new;
        }
        None => conditions.push(new),
    }
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn keeps_transition_time_when_status_unchanged() {
        let mut conds = vec![];
        set_condition(
            &mut conds,
            new_condition(READY, Status::Unknown, "A", "first", Some(1), at(10)),
        );
        set_condition(
            &mut conds,
            new_condition(READY, Status::Unknown, "B", "second", Some(2), at(20)),
        );
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].reason, "B");
        assert_eq!(conds[0].observed_generation, Some(2));
        assert_eq!(conds[0].last_transition_time, Time(at(10)));
    }

    #[test]
    fn moves_transition_time_when_status_changes() {
        let mut conds = vec![new_condition(READY, Status::Unknown, "A", "", None, at(10))];
        set_condition(
            &mut conds,
            new_condition(READY, Status::True, "Ok", "", None, at(30)),
        );
        assert_eq!(conds[0].last_transition_time, Time(at(30)));
        assert_eq!(find(&conds, READY).unwrap().status, "True");
        assert!(find(&conds, HEALTHY).is_none());
    }

    #[test]
    fn other_types_are_untouched() {
        let mut conds = vec![new_condition(HEALTHY, Status::True, "Ok", "", None, at(1))];
        set_condition(
            &mut conds,
            new_condition(READY, Status::False, "Bad", "", None, at(2)),
        );
        assert_eq!(conds.len(), 2);
        assert_eq!(find(&conds, HEALTHY).unwrap().reason, "Ok");
    }
}
