//! `keys/<id>`: one passphrase's wrapping of the master key (JSON, not sealed:
//! it is what opens the seal).

use serde::{Deserialize, Serialize};

use crate::crypto::KdfParams;

/// A key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    /// Key file format version.
    pub version: u8,
    /// When the key was added (RFC 3339).
    pub created: String,
    /// Host that added it.
    pub hostname: String,
    /// User that added it.
    pub username: String,
    /// Always "argon2id".
    pub kdf: String,
    /// Argon2id cost.
    pub kdf_params: KdfParams,
    /// Argon2 salt, base64.
    pub salt: String,
    /// `nonce || AES-256-GCM(postcard(master key))`, base64.
    pub wrapped: String,
}
