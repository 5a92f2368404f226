//! The staged apply of a whole set, in the manner of Flux's `ResourceManager.ApplyAllStaged`:
//! validate every object by server-side dry-run (nothing is written when one fails), apply
//! and await stage 0 (CRDs, Namespaces), validate what could only be validated after it,
//! then apply the changed objects rank by rank. The staging is pure (apply/stage.rs); the
//! requests go through the [`Applier`].

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;

use super::applier::{Applier, Checked, ObjectError};
use super::discovery::Resolved;
use super::normalize::{Desired, describe};
use super::plan::Change;
pub use super::set_error::SetError;
use super::stage::{deferred, first_stage, ranked};
use crate::api::application::InventoryEntry;

/// A write to make before the first write of objects (e.g. recording the planned
/// inventory, so a crash half-way leaves nothing a later prune cannot see).
pub trait BeforeWrite: Send + Sync {
    fn before_write(&self) -> futures::future::BoxFuture<'_, Result<(), String>>;
}

/// Called before each sync wave but the first: a wave is applied only when the objects of
/// the waves before it are healthy (Argo CD's order). `Err` stops the set with the reason.
pub trait WaveGate: Send + Sync {
    fn before_wave<'a>(
        &'a self,
        wave: i64,
        objects: &'a [InventoryEntry],
    ) -> futures::future::BoxFuture<'a, Result<(), String>>;

    /// The waves that have work of their own once their objects are applied (Argo CD's
    /// `Sync` hooks), in order; such a wave is visited even when none of its objects
    /// changed, or it has none.
    fn hook_waves(&self) -> Vec<i64> {
        vec![]
    }

    /// Called once the objects of `wave` are applied, for a wave of [`Self::hook_waves`];
    /// `objects` are those of this wave and the waves before it.
    fn after_wave<'a>(
        &'a self,
        _wave: i64,
        _objects: &'a [InventoryEntry],
    ) -> futures::future::BoxFuture<'a, Result<(), SetError>> {
        Box::pin(async { Ok(()) })
    }
}

/// How a set is applied.
#[derive(Clone, Copy, Default)]
pub struct SetOptions<'a> {
    /// Take over fields owned by other managers.
    pub force: bool,
    /// Apply objects labelled for another owner (otherwise nothing of the set is applied).
    pub take_ownership: bool,
    /// The owner's label value, for messages.
    pub owner: &'a str,
    /// Objects validated but not applied (stable Deployments whose new template runs as a
    /// canary first).
    pub hold: Option<&'a (dyn Fn(&Desired) -> bool + Sync)>,
    pub before_write: Option<&'a dyn BeforeWrite>,
    /// Recreate every object whose immutable fields changed (otherwise only those annotated
    /// [`RECREATE_ANNOTATION`]).
    pub recreate_on_immutable: bool,
    /// Awaited between sync waves (none: waves are only ordered).
    pub wave_gate: Option<&'a dyn WaveGate>,
    /// Without `force`: fields other managers took (hand edits) are taken back, and the
    /// objects are reported in [`ChangeSet::overwritten`] instead of failing the set.
    pub overwrite_hand_edits: bool,
}

impl SetOptions<'_> {
    fn recreates(&self, d: &Desired) -> bool {
        super::recreate::opted_in(self.recreate_on_immutable, d)
    }
}

/// What an applied set changed.
#[derive(Debug, Default)]
pub struct ChangeSet {
    /// The dry-run's verdict for every object of the set.
    pub changes: HashMap<InventoryEntry, Change>,
    /// Objects that were sent (created or configured).
    pub applied: BTreeSet<InventoryEntry>,
    /// Objects held back by [`SetOptions::hold`].
    pub held: Vec<InventoryEntry>,
    /// Objects deleted and created again because an immutable field changed.
    pub recreated: Vec<InventoryEntry>,
    /// Objects whose fields another manager had taken (hand edits), taken back for the
    /// set ([`SetOptions::overwrite_hand_edits`]): the conflict the API server reported.
    pub overwritten: Vec<ObjectError>,
}

/// How many objects an applied set created, configured and left unchanged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub created: u32,
    pub configured: u32,
    pub unchanged: u32,
}

impl ChangeSet {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for (key, change) in &self.changes {
            let applied = self.applied.contains(key);
            match change {
                Change::Created if applied => c.created += 1,
                Change::Configured if applied => c.configured += 1,
                Change::Unchanged => c.unchanged += 1,
                _ => {}
            }
        }
        c
    }
}

type KindKey = (String, String, String);

fn kind_of(d: &Desired) -> KindKey {
    (
        d.key.group.clone(),
        d.key.version.clone(),
        d.key.kind.clone(),
    )
}

fn failures<T>(results: &[Result<T, ObjectError>]) -> Vec<ObjectError> {
    results
        .iter()
        .filter_map(|r| r.as_ref().err().cloned())
        .collect()
}

impl Applier {
    /// Applies the set in stages; see the module documentation.
    pub async fn apply_set(
        &self,
        desired: &[Desired],
        opts: &SetOptions<'_>,
    ) -> Result<ChangeSet, SetError> {
        let mut resolved: HashMap<KindKey, Resolved> = HashMap::new();
        for d in desired {
            if let std::collections::hash_map::Entry::Vacant(slot) = resolved.entry(kind_of(d))
                && let Some(r) = self.resolve_key(&d.key).await?
            {
                slot.insert(r);
            }
        }
        let new_namespaces = self.new_namespaces(desired).await?;
        let deferred = deferred(
            desired,
            |d| resolved.contains_key(&kind_of(d)),
            &new_namespaces,
        );

        // 1. Validate every object that can be validated now. Nothing is applied on failure.
        let now: Vec<&Desired> = desired
            .iter()
            .filter(|d| !deferred.contains(&d.key))
            .collect();
        let mut overwritten = vec![];
        let (changes, recreate) = self
            .validate(&now, &resolved, opts, true, desired.len(), &mut overwritten)
            .await?;
        let mut set = ChangeSet {
            changes,
            recreated: recreate,
            ..ChangeSet::default()
        };
        // Objects whose hand edits are taken back are applied with force (and so the set).
        let mut force = opts.force || !overwritten.is_empty();

        if let Some(hook) = opts.before_write {
            hook.before_write().await.map_err(SetError::BeforeWrite)?;
        }

        // 2. Stage 0: CRDs and Namespaces, applied and awaited.
        let stage0 = first_stage(desired, &deferred, &set.changes);
        let failed = self
            .apply_group(&stage0, &resolved, force, &mut set.applied)
            .await;
        if !failed.is_empty() {
            return Err(SetError::Apply(failed));
        }
        let new_crds: Vec<&Desired> = stage0
            .iter()
            .copied()
            .filter(|d| d.key.kind == "CustomResourceDefinition")
            .collect();
        if !new_crds.is_empty() {
            self.await_established(&new_crds).await;
        }

        // 3. Deferred objects: resolve and validate now.
        let later: Vec<&Desired> = desired
            .iter()
            .filter(|d| deferred.contains(&d.key))
            .collect();
        for d in &later {
            let k = kind_of(d);
            if let std::collections::hash_map::Entry::Vacant(slot) = resolved.entry(k.clone()) {
                let r = self
                    .resolve_new_kind(&d.key, !new_crds.is_empty())
                    .await?
                    .ok_or_else(|| SetError::UnknownKind {
                        object: describe(&d.key),
                        group: k.0.clone(),
                        version: k.1.clone(),
                        kind: k.2.clone(),
                    })?;
                slot.insert(r);
            }
        }
        let (later_changes, later_recreate) = self
            .validate(
                &later,
                &resolved,
                opts,
                false,
                later.len(),
                &mut overwritten,
            )
            .await?;
        force = opts.force || !overwritten.is_empty();
        set.overwritten = overwritten;
        set.changes.extend(later_changes);
        set.recreated.extend(later_recreate);
        if !set.recreated.is_empty() {
            let failed = self.delete_for_recreation(&set.recreated, &resolved).await;
            if !failed.is_empty() {
                return Err(SetError::Apply(failed));
            }
        }

        // 4. Everything else that changes, wave by wave and rank by rank; held objects stay
        //    as they are.
        let held = |d: &Desired| opts.hold.is_some_and(|h| h(d));
        set.held = desired
            .iter()
            .filter(|d| held(d))
            .map(|d| d.key.clone())
            .collect();
        let mut errors = vec![];
        let hook_waves = opts.wave_gate.map(|g| g.hook_waves()).unwrap_or_default();
        let applied_waves = |pick: &dyn Fn(i64) -> bool| -> Vec<InventoryEntry> {
            desired
                .iter()
                .filter(|d| !held(d) && pick(super::stage::wave(d)))
                .map(|d| d.key.clone())
                .collect()
        };
        // Waves already known healthy (or without objects) are below this one.
        let mut open_from = desired
            .iter()
            .filter(|d| !held(d))
            .map(super::stage::wave)
            .chain(hook_waves.iter().copied())
            .min()
            .unwrap_or(0);
        let mut waves: std::collections::BTreeMap<i64, Vec<Vec<&Desired>>> = Default::default();
        for group in ranked(desired, &deferred, &set.changes, held) {
            waves
                .entry(super::stage::wave(group[0]))
                .or_default()
                .push(group);
        }
        for w in &hook_waves {
            waves.entry(*w).or_default();
        }
        for (wave, groups) in waves {
            if wave > open_from {
                // A wave that failed, or is not healthy, holds back the waves after it;
                // earlier waves count whether or not this sync changed them.
                if !errors.is_empty() {
                    return Err(SetError::Apply(errors));
                }
                if let Some(gate) = opts.wave_gate {
                    let objects = applied_waves(&|w| (open_from..wave).contains(&w));
                    gate.before_wave(wave, &objects).await.map_err(|message| {
                        SetError::WaveNotHealthy {
                            next: wave,
                            message,
                        }
                    })?;
                }
                open_from = wave;
            }
            for group in groups {
                let first = group[0];
                let rank = super::order::rank(&first.key.group, &first.key.kind, first.namespaced);
                let phase = std::time::Instant::now();
                let mut failed = self
                    .apply_group(&group, &resolved, force, &mut set.applied)
                    .await;
                errors.append(&mut failed);
                tracing::debug!(
                    wave,
                    rank,
                    objects = group.len(),
                    ms = phase.elapsed().as_millis() as u64,
                    "applied rank"
                );
            }
            if let Some(gate) = opts.wave_gate
                && hook_waves.contains(&wave)
            {
                if !errors.is_empty() {
                    return Err(SetError::Apply(errors));
                }
                let objects = applied_waves(&|w| w <= wave);
                gate.after_wave(wave, &objects).await?;
            }
        }
        if !errors.is_empty() {
            return Err(SetError::Apply(errors));
        }
        Ok(set)
    }

    /// Dry-runs `objects` (whose kinds are all resolved): the change of each, or the
    /// objects the API server refused, or the objects of another owner.
    async fn validate(
        &self,
        objects: &[&Desired],
        resolved: &HashMap<KindKey, Resolved>,
        opts: &SetOptions<'_>,
        first: bool,
        total: usize,
        overwritten: &mut Vec<ObjectError>,
    ) -> Result<(HashMap<InventoryEntry, Change>, Vec<InventoryEntry>), SetError> {
        let items: Vec<(&Desired, &Resolved)> = objects
            .iter()
            .map(|d| (*d, &resolved[&kind_of(d)]))
            .collect();
        let phase = std::time::Instant::now();
        let mut checked = self.dry_run(&items, opts.force).await;
        if opts.overwrite_hand_edits && !opts.force {
            // Conflicts with other managers: checked again as the forced apply would be.
            let conflicted: Vec<usize> = (0..checked.len())
                .filter(|&i| matches!(&checked[i], Err(e) if e.conflict))
                .collect();
            if !conflicted.is_empty() {
                let again: Vec<(&Desired, &Resolved)> =
                    conflicted.iter().map(|&i| items[i]).collect();
                let forced = self.dry_run(&again, true).await;
                for (i, result) in conflicted.into_iter().zip(forced) {
                    if let Err(e) = std::mem::replace(&mut checked[i], result) {
                        overwritten.push(e);
                    }
                }
            }
        }
        // Opted-in objects refused for an immutable field, and owned by this Application,
        // are recreated instead of failing the set.
        let mut recreate = vec![];
        for ((d, r), result) in items.iter().zip(checked.iter_mut()) {
            if let Err(e) = result
                && super::recreate::immutable(e)
                && opts.recreates(d)
                && self.owned_by(r, d, opts.owner).await
            {
                recreate.push(d.key.clone());
                *result = Ok(Checked {
                    change: Change::Configured,
                    foreign_owner: None,
                });
            }
        }
        tracing::debug!(
            objects = items.len(),
            ms = phase.elapsed().as_millis() as u64,
            "validated (server-side dry-run)"
        );
        let failed = failures(&checked);
        if !failed.is_empty() {
            return Err(SetError::Validation {
                failed,
                total,
                nothing_applied: first,
            });
        }
        refuse_foreign(opts, objects.iter().copied().zip(&checked))?;
        Ok((record_changes(objects, checked), recreate))
    }

    /// Applies a group of objects concurrently; records the applied ones and returns the
    /// errors of the others.
    async fn apply_group(
        &self,
        group: &[&Desired],
        resolved: &HashMap<KindKey, Resolved>,
        force: bool,
        applied: &mut BTreeSet<InventoryEntry>,
    ) -> Vec<ObjectError> {
        let items: Vec<(&Desired, &Resolved)> =
            group.iter().map(|d| (*d, &resolved[&kind_of(d)])).collect();
        let mut errors = vec![];
        for (d, r) in group.iter().zip(self.apply(&items, force).await) {
            match r {
                Ok(_) => {
                    applied.insert(d.key.clone());
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// The Namespaces of the set that do not exist yet.
    async fn new_namespaces(&self, desired: &[Desired]) -> Result<BTreeSet<String>, SetError> {
        let api: Api<Namespace> = Api::all(self.client().clone());
        let mut out = BTreeSet::new();
        for d in desired
            .iter()
            .filter(|d| d.key.group.is_empty() && d.key.kind == "Namespace")
        {
            match api.get_opt(&d.key.name).await {
                Ok(None) => {
                    out.insert(d.key.name.clone());
                }
                Ok(Some(_)) => {}
                // An identity that may not read Namespaces validates the object now, and
                // the dry-run's answer names it.
                Err(kube::Error::Api(s)) if s.code == 403 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// Waits (at most 30 s) until the CRDs just applied are Established, then forgets what
    /// discovery knew about their groups.
    async fn await_established(&self, crds: &[&Desired]) {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let api: Api<CustomResourceDefinition> = Api::all(self.client().clone());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for d in crds {
            while tokio::time::Instant::now() < deadline {
                let ok = api
                    .get_opt(&d.key.name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|c| c.status)
                    .and_then(|s| s.conditions)
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    });
                if ok {
                    break;
                }
                super::waiting::pause(Duration::from_millis(200)).await;
            }
        }
        for d in crds {
            if let Some(g) = d.object["spec"]["group"].as_str() {
                self.invalidate(g);
            }
        }
    }

    /// Resolves a kind that may have been defined by a CRD of this set a moment ago: API
    /// discovery serves a new group shortly after the CRD is Established, so look a few
    /// times.
    async fn resolve_new_kind(
        &self,
        key: &InventoryEntry,
        crds_just_applied: bool,
    ) -> Result<Option<Resolved>, kube::Error> {
        let wait = Duration::from_secs(if crds_just_applied { 15 } else { 0 });
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(r) = self.resolve_key(key).await? {
                return Ok(Some(r));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            super::waiting::pause(Duration::from_millis(250)).await;
        }
    }
}

fn record_changes(
    objects: &[&Desired],
    checked: Vec<Result<Checked, ObjectError>>,
) -> HashMap<InventoryEntry, Change> {
    objects
        .iter()
        .zip(checked)
        .map(|(d, c)| {
            (
                d.key.clone(),
                c.map(|c| c.change).unwrap_or(Change::Configured),
            )
        })
        .collect()
}

/// Refuses the set when objects are labelled for another owner, unless it may take them.
fn refuse_foreign<'d>(
    opts: &SetOptions<'_>,
    checked: impl Iterator<Item = (&'d Desired, &'d Result<Checked, ObjectError>)>,
) -> Result<(), SetError> {
    if opts.take_ownership {
        return Ok(());
    }
    let conflicts: Vec<(String, String)> = checked
        .filter_map(|(d, c)| {
            let other = c.as_ref().ok()?.foreign_owner.as_ref()?;
            Some((describe(&d.key), other.clone()))
        })
        .collect();
    if conflicts.is_empty() {
        return Ok(());
    }
    Err(SetError::Ownership {
        owner: opts.owner.to_string(),
        conflicts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::stage::tests::{obj, set};

    #[test]
    fn an_unknown_kind_says_which_crd_to_install_first() {
        let custom = SetError::UnknownKind {
            object: "Widget shop/w".into(),
            group: "example.com".into(),
            version: "v1".into(),
            kind: "Widget".into(),
        }
        .to_string();
        assert!(
            custom.contains("install the CustomResourceDefinition")
                && custom.contains("widgets.example.com")
                && custom.starts_with("Widget shop/w"),
            "{custom}"
        );
        let built_in = SetError::UnknownKind {
            object: "FlowSchema x".into(),
            group: "flowcontrol.apiserver.k8s.io".into(),
            version: "v1alpha9".into(),
            kind: "FlowSchema".into(),
        }
        .to_string();
        assert!(built_in.contains("a built-in API"), "{built_in}");
    }

    #[test]
    fn counts_are_of_applied_objects_and_unchanged_ones() {
        let desired = set();
        let mut cs = ChangeSet::default();
        cs.changes.insert(desired[0].key.clone(), Change::Created);
        cs.changes
            .insert(desired[1].key.clone(), Change::Configured);
        cs.changes.insert(desired[2].key.clone(), Change::Unchanged);
        cs.changes
            .insert(desired[4].key.clone(), Change::Configured); // held
        cs.applied.insert(desired[0].key.clone());
        cs.applied.insert(desired[1].key.clone());
        assert_eq!(
            cs.counts(),
            Counts {
                created: 1,
                configured: 1,
                unchanged: 1
            }
        );
    }

    #[test]
    fn messages_name_the_objects_and_say_what_was_applied() {
        let failed = vec![ObjectError::other("ConfigMap a/b".into(), "bad")];
        let first = SetError::Validation {
            failed: failed.clone(),
            total: 3,
            nothing_applied: true,
        };
        assert_eq!(
            first.to_string(),
            "1 of 3 objects failed validation, nothing was applied: ConfigMap a/b: bad"
        );
        let later = SetError::Validation {
            failed,
            total: 1,
            nothing_applied: false,
        };
        assert_eq!(
            later.to_string(),
            "1 object failed validation: ConfigMap a/b: bad"
        );
        let owned = SetError::Ownership {
            owner: "a.web".into(),
            conflicts: vec![("ConfigMap a/b".into(), "b.api".into())],
        };
        assert!(
            owned
                .to_string()
                .contains("ConfigMap a/b belongs to Application b.api")
        );
        assert!(owned.to_string().contains("on Application a.web"));
    }

    #[test]
    fn foreign_objects_refuse_the_set_unless_taken_over() {
        let d = obj("", "ConfigMap", Some("a"), "b");
        let checked: Result<Checked, ObjectError> = Ok(Checked {
            change: Change::Configured,
            foreign_owner: Some("b.api".into()),
        });
        let opts = SetOptions {
            owner: "a.web",
            ..SetOptions::default()
        };
        assert!(matches!(
            refuse_foreign(&opts, std::iter::once((&d, &checked))),
            Err(SetError::Ownership { .. })
        ));
        let take = SetOptions {
            take_ownership: true,
            ..opts
        };
        assert!(refuse_foreign(&take, std::iter::once((&d, &checked))).is_ok());
    }
}
