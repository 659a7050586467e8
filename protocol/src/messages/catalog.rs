//! The model catalog: names for content, so a submitter (or an HTTP client) asks for
//! `smollm2-135m` instead of a 64-digit content id. A name belongs to the key that first
//! published it at a coordinator; only that key may point it at other content.

use bincode::{Decode, Encode};
use serde::Serialize;

use crate::codec::Message;
use crate::{ContentId, PublicKey};

/// The longest catalog name.
pub const MAX_NAME_LEN: usize = 64;

/// What a name points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CatalogKind {
    /// A base model's manifest.
    Base,
    /// An adapter's manifest, trained on (and served with) this base model.
    Adapter { base: ContentId },
}

/// A publisher's request to name content. Signed by the publisher; a later one (by
/// `published_ms`) from the same key moves the name, an earlier one replayed does not.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Publish {
    pub name: String,
    pub content: ContentId,
    pub kind: CatalogKind,
    pub published_ms: u64,
}

impl Message for Publish {
    const NAME: &'static str = "olc/catalog-publish";
    const MAX_SIZE: usize = 4 * 1024;
}

/// One name in a coordinator's catalog.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct CatalogEntry {
    pub name: String,
    pub content: ContentId,
    pub kind: CatalogKind,
    pub owner: PublicKey,
    pub published_ms: u64,
}

impl Message for CatalogEntry {
    const NAME: &'static str = "olc/catalog-entry";
    const MAX_SIZE: usize = 4 * 1024;
}

/// Why a name is not a catalog name; `None` if it is one. Names are what URLs, shells
/// and OpenAI's `model` field carry: lowercase ASCII letters, digits, `.`, `_` and `-`,
/// starting with a letter or digit, and no `:` (it separates `BASE:ADAPTER`).
pub fn check_name(name: &str) -> Option<String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Some(format!(
            "a catalog name has 1 to {MAX_NAME_LEN} characters, got {}",
            name.len()
        ));
    }
    if !name.chars().all(ok_char) || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        let shown: String = name.chars().take(MAX_NAME_LEN).collect();
        return Some(format!(
            "catalog name {shown:?}: use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_lowercase_words() {
        for good in ["smollm2-135m", "a", "llama-3.1_8b", "9lives"] {
            assert_eq!(check_name(good), None, "{good}");
        }
        for bad in [
            "",
            "Big",
            "base:adapter",
            "-x",
            ".hidden",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(check_name(bad).is_some(), "{bad:?}");
        }
        assert_eq!(
            check_name(""),
            Some("a catalog name has 1 to 64 characters, got 0".into())
        );
    }
}
