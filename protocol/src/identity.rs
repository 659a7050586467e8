//! Participants are ed25519 keys. The same key signs protocol messages and derives the
//! libp2p `PeerId`, so "who sent this over the network" and "who signed this job" can be
//! checked against each other.

use std::fmt;
use std::str::FromStr;

use bincode::{Decode, Encode};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use libp2p_identity::PeerId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A participant's secret key. Never printed, never serialized except into a key file.
#[derive(Clone)]
pub struct Identity {
    signing: SigningKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public_key", &self.public_key())
            .finish()
    }
}

/// Why a key could not be made or a signature does not verify.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
    #[error("{0} is not a valid ed25519 public key")]
    BadPublicKey(PublicKey),
    #[error("signature does not verify for signer {0}")]
    BadSignature(PublicKey),
}

impl Identity {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, IdentityError> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| IdentityError::Random(e.to_string()))?;
        Ok(Self::from_seed(&seed))
    }

    /// A key from a 32-byte seed: deterministic, for tests and the devnet's fixed actors.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(seed),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    pub fn peer_id(&self) -> PeerId {
        self.public_key()
            .to_peer_id()
            .expect("a public key derived from a signing key is always a valid curve point")
    }

    /// The same key as a libp2p keypair, so the node's transport identity is this identity.
    pub fn to_libp2p_keypair(&self) -> libp2p_identity::Keypair {
        let mut secret = self.signing.to_bytes();
        libp2p_identity::Keypair::ed25519_from_bytes(&mut secret)
            .expect("32 bytes are always a valid ed25519 secret key")
    }

    /// Signs raw bytes. Protocol code signs through [`crate::Signed`], which adds the
    /// domain tag; this is the primitive underneath it.
    pub(crate) fn sign_raw(&self, message: &[u8]) -> Signature {
        Signature(self.signing.sign(message).to_bytes())
    }

    /// The 32-byte secret seed, for writing the key file (olc-content's `keyfile`). It
    /// never goes on the wire.
    pub fn secret_seed(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.signing.to_bytes())
    }
}

/// An ed25519 public key: 32 bytes, shown as 64 lowercase hex digits. The bytes are not
/// checked to be a curve point until they are used to verify.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_peer_id(&self) -> Result<PeerId, IdentityError> {
        let key = libp2p_identity::ed25519::PublicKey::try_from_bytes(&self.0)
            .map_err(|_| IdentityError::BadPublicKey(*self))?;
        Ok(libp2p_identity::PublicKey::from(key).to_peer_id())
    }

    /// Strict verification: rejects small-order keys and non-canonical signatures, so one
    /// message has one valid signature and receipts cannot be re-signed into new ids.
    pub(crate) fn verify_raw(
        &self,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), IdentityError> {
        let key =
            VerifyingKey::from_bytes(&self.0).map_err(|_| IdentityError::BadPublicKey(*self))?;
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(message, &sig)
            .map_err(|_| IdentityError::BadSignature(*self))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// Why a string is not a public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a public key is 64 lowercase hex digits; got {0:?}")]
pub struct PublicKeyParseError(String);

impl FromStr for PublicKey {
    type Err = PublicKeyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower_hex = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let mut out = [0u8; 32];
        if !lower_hex || hex::decode_to_slice(s, &mut out).is_err() {
            let shown: String = s.chars().take(80).collect();
            return Err(PublicKeyParseError(shown));
        }
        Ok(Self(out))
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Signature([u8; 64]);

impl Signature {
    pub const fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_comes_from_the_same_key() {
        let id = Identity::from_seed(&[7; 32]);
        let from_libp2p = id.to_libp2p_keypair().public().to_peer_id();
        assert_eq!(id.peer_id(), from_libp2p);
        assert_eq!(id.public_key().to_peer_id().unwrap(), from_libp2p);
        assert!(id.peer_id().to_string().starts_with("12D3KooW"));
    }

    #[test]
    fn generated_keys_differ() {
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        assert_ne!(a.public_key(), b.public_key());
    }

    #[test]
    fn raw_signatures_verify_and_tampering_fails() {
        let id = Identity::from_seed(&[1; 32]);
        let sig = id.sign_raw(b"message");
        id.public_key().verify_raw(b"message", &sig).unwrap();
        assert!(id.public_key().verify_raw(b"messagf", &sig).is_err());
        let other = Identity::from_seed(&[2; 32]);
        assert!(other.public_key().verify_raw(b"message", &sig).is_err());
    }

    #[test]
    fn public_key_text_round_trip_and_errors() {
        let pk = Identity::from_seed(&[3; 32]).public_key();
        assert_eq!(pk.to_string().parse::<PublicKey>().unwrap(), pk);
        assert!("".parse::<PublicKey>().is_err());
        assert!(pk.to_string().to_uppercase().parse::<PublicKey>().is_err());
        assert!("é".repeat(32).parse::<PublicKey>().is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let id = Identity::from_seed(&[9; 32]);
        let shown = format!("{id:?}");
        assert!(!shown.contains(&hex::encode([9u8; 32])));
        assert!(shown.contains(&id.public_key().to_string()));
    }
}
