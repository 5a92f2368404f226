//! A rendered set as the Application reconciler keeps it between reconciles: packed as JSON
//! text, with the hashes of the metadata each object declares for the drift watches.

use crate::api::application::InventoryEntry;
use crate::apply::normalize::Desired;

/// A rendered set as kept between reconciles: each object as its JSON text, about a third of
/// its parsed size (a parsed set was the largest thing kept per Application, ~10 KiB for
/// four objects), parsed again when read; and the hashes of the labels and annotations each
/// declares, so that a drift watch can vouch for an object without the set being parsed.
pub struct PackedSet(Vec<Packed>);

struct Packed {
    key: InventoryEntry,
    namespaced: bool,
    text: Box<str>,
    declared: Box<[u64]>,
}

/// The hashes of the labels and annotations an object declares (values that are not
/// strings as their JSON text, as the API server would refuse them anyway).
fn declared_metadata(object: &serde_json::Value) -> Vec<u64> {
    let section = |name: &str| -> Option<std::collections::BTreeMap<String, String>> {
        object["metadata"][name].as_object().map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    (k.clone(), v)
                })
                .collect()
        })
    };
    crate::drift::view::metadata_hashes(section("labels").as_ref(), section("annotations").as_ref())
}

impl PackedSet {
    pub fn pack(set: &[Desired]) -> Self {
        PackedSet(
            set.iter()
                .map(|d| Packed {
                    key: d.key.clone(),
                    namespaced: d.namespaced,
                    text: serde_json::to_string(&d.object)
                        .unwrap_or_default()
                        .into_boxed_str(),
                    declared: declared_metadata(&d.object).into_boxed_slice(),
                })
                .collect(),
        )
    }

    /// The set as it was packed; `None` if a text does not parse (never expected: the
    /// caller renders again).
    pub fn unpack(&self) -> Option<Vec<Desired>> {
        self.0
            .iter()
            .map(|p| {
                Some(Desired {
                    key: p.key.clone(),
                    object: serde_json::from_str(&p.text).ok()?,
                    namespaced: p.namespaced,
                })
            })
            .collect()
    }

    /// The hashes of the labels and annotations the set declares for the object `e`, if
    /// the set holds it.
    pub fn declared(&self, e: &InventoryEntry) -> Option<&[u64]> {
        self.0
            .iter()
            .find(|p| p.key.same_object(e))
            .map(|p| &*p.declared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_packed_set_unpacks_to_the_same_objects() {
        let object = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"z": "1", "a": "2"}},
            "spec": {"replicas": 3, "ratio": 0.1, "big": 18446744073709551615u64, "neg": -7,
                     "list": [1.5, "x", null, true, {"k": []}]}
        });
        let set = vec![Desired {
            key: InventoryEntry {
                group: "apps".into(),
                version: "v1".into(),
                kind: "Deployment".into(),
                namespace: Some("ns".into()),
                name: "web".into(),
            },
            object,
            namespaced: true,
        }];
        let packed = PackedSet::pack(&set);
        assert_eq!(packed.unpack().unwrap(), set);
    }

    #[test]
    fn a_packed_set_declares_the_metadata_hashes_a_view_keeps_of_the_live_object() {
        let key = InventoryEntry {
            group: String::new(),
            version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("ns".into()),
            name: "cfg".into(),
        };
        let set = vec![Desired {
            key: key.clone(),
            object: json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cfg", "namespace": "ns",
                    "labels": {"team": "a"}, "annotations": {"n": 3}}}),
            namespaced: true,
        }];
        let packed = PackedSet::pack(&set);
        let live = |labels: &[(&str, &str)], annotations: &[(&str, &str)]| {
            let map = |pairs: &[(&str, &str)]| {
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<std::collections::BTreeMap<_, _>>()
            };
            crate::drift::view::metadata_hashes(Some(&map(labels)), Some(&map(annotations)))
        };
        let declared = packed.declared(&key).expect("held");
        let holds = |live: &[u64]| declared.iter().all(|h| live.binary_search(h).is_ok());
        // The live object may carry more (the Application label, the API server's own).
        assert!(holds(&live(
            &[("team", "a"), ("gantry.dev/application", "x")],
            &[("n", "3")]
        )));
        assert!(
            !holds(&live(&[("team", "b")], &[("n", "3")])),
            "a label changed"
        );
        assert!(
            !holds(&live(&[("team", "a")], &[])),
            "an annotation removed"
        );
        let other = InventoryEntry {
            name: "other".into(),
            ..key
        };
        assert!(packed.declared(&other).is_none());
    }
}
