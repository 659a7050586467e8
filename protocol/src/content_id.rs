//! Content addressing: every model file, adapter, dataset, output and signed message is
//! named by the BLAKE3-256 hash of its bytes, so a peer can check what it received
//! without trusting who sent it.

use std::fmt;
use std::str::FromStr;

use bincode::{Decode, Encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// BLAKE3-256 of some content. Displayed and parsed as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct ContentId([u8; 32]);

/// Why a string is not a content id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentIdError {
    #[error("a content id has 64 hex digits, this one has {0}")]
    WrongLength(usize),
    #[error("a content id is lowercase hex; {found:?} at position {position} is not a hex digit")]
    NotHex { position: usize, found: char },
}

impl ContentId {
    pub const LEN: usize = 32;

    /// Hashes `bytes` in one go.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Wraps an already computed digest (e.g. from a streaming [`ContentHasher`]).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 hex digits, for tables and logs where the full id is noise.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

/// Hashes content that arrives in pieces (files, chunks) to the same id as [`ContentId::of`].
#[derive(Default, Clone)]
pub struct ContentHasher(blake3::Hasher);

impl fmt::Debug for ContentHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContentHasher")
    }
}

impl ContentHasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(bytes);
        self
    }

    pub fn finalize(&self) -> ContentId {
        ContentId(*self.0.finalize().as_bytes())
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({self})")
    }
}

impl FromStr for ContentId {
    type Err = ContentIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Uppercase is refused on purpose: ids are compared as strings in logs, file names
        // and JSON, and one spelling per id keeps those comparisons honest.
        let len = s.chars().count();
        if len != 64 {
            return Err(ContentIdError::WrongLength(len));
        }
        if let Some((position, found)) = s
            .chars()
            .enumerate()
            .find(|(_, c)| !matches!(c, '0'..='9' | 'a'..='f'))
        {
            return Err(ContentIdError::NotHex { position, found });
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ContentIdError::WrongLength(len))?;
        Ok(Self(out))
    }
}

impl Serialize for ContentId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ContentId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_round_trip() {
        let id = ContentId::of(b"hello");
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(text.parse::<ContentId>().unwrap(), id);
        // BLAKE3 test vector, so the id is the standard hash and not something of our own.
        assert_eq!(
            ContentId::of(b"").to_string(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn streaming_hash_matches_one_shot() {
        let mut h = ContentHasher::new();
        h.update(b"hel").update(b"lo");
        assert_eq!(h.finalize(), ContentId::of(b"hello"));
    }

    #[test]
    fn bad_strings_are_refused_with_a_reason() {
        assert_eq!("".parse::<ContentId>(), Err(ContentIdError::WrongLength(0)));
        assert_eq!(
            "abc".parse::<ContentId>(),
            Err(ContentIdError::WrongLength(3))
        );
        let good = ContentId::of(b"x").to_string();
        assert_eq!(
            format!("{good}00").parse::<ContentId>(),
            Err(ContentIdError::WrongLength(66))
        );
        let mut upper = good.clone();
        upper.replace_range(10..11, "G");
        assert_eq!(
            upper.parse::<ContentId>(),
            Err(ContentIdError::NotHex {
                position: 10,
                found: 'G'
            })
        );
        let uppercase = good.to_uppercase();
        assert!(matches!(
            uppercase.parse::<ContentId>(),
            Err(ContentIdError::NotHex { .. })
        ));
        // Multi-byte characters must not be able to cause a slicing panic.
        let weird = "é".repeat(32);
        assert!(weird.parse::<ContentId>().is_err());
        let weird64 = "é".repeat(64);
        assert!(weird64.parse::<ContentId>().is_err());
    }

    #[test]
    fn json_is_the_hex_string() {
        let id = ContentId::of(b"json");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<ContentId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<ContentId>("\"zz\"").is_err());
    }
}
