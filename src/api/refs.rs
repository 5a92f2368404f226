//! References between objects, shared by several kinds.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to a Secret in the same namespace as the referring object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A reference to an object of a known kind in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalRef {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Signatures an image or an `oci://` chart must carry before it is used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignatureVerification {
    /// `cosign`: signatures made with `cosign sign --key` (stored beside the artifact in
    /// its registry, as the tag `sha256-<digest>.sig`). Keyless signatures are not checked.
    pub provider: SignatureProvider,
    /// A Secret in the same namespace with the trusted public keys, one per entry named
    /// `*.pub` (ECDSA P-256 in PEM, as `cosign generate-key-pair` writes `cosign.pub`).
    pub secret_ref: SecretRef,
}

/// Who made the signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignatureProvider {
    Cosign,
}
