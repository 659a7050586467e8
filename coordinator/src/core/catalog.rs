//! The coordinator's catalog of names: pure rules, so every case is tested without a
//! network. A name is its first publisher's: nobody else may move it; the owner moves it
//! with a later publish, and an older one replayed changes nothing.

use std::collections::BTreeMap;

use olc_protocol::{CatalogEntry, CatalogKind, PublicKey, Publish, check_name};

use crate::core::verified::Verified;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("{0}")]
    BadName(String),
    #[error("the name {name} belongs to {owner}; publish under another name")]
    Taken { name: String, owner: PublicKey },
    #[error("the name {name} already points at newer content (published at {current_ms})")]
    Stale { name: String, current_ms: u64 },
    #[error("an adapter cannot be its own base model")]
    SelfBase,
}

/// Every name, in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    entries: BTreeMap<String, CatalogEntry>,
}

impl Catalog {
    pub fn restore(entries: impl IntoIterator<Item = CatalogEntry>) -> Self {
        Self {
            entries: entries.into_iter().map(|e| (e.name.clone(), e)).collect(),
        }
    }

    /// Names `publish.content` for its signer, or says why not. The content's presence in
    /// the blob store is the caller's to check (it is I/O). Returns the entry to store.
    pub fn publish(&mut self, publish: &Verified<Publish>) -> Result<CatalogEntry, CatalogError> {
        self.name(publish.signer(), publish.body())
    }

    /// Names content for `owner` by the same rules, on authority the caller has checked:
    /// a settled fine-tune's adapter, named in the job its submitter signed.
    pub fn name(&mut self, owner: PublicKey, p: &Publish) -> Result<CatalogEntry, CatalogError> {
        self.check_free(&p.name, owner)?;
        if let Some(why) = check_name(&p.name) {
            return Err(CatalogError::BadName(why));
        }
        if let CatalogKind::Adapter { base } = p.kind
            && base == p.content
        {
            return Err(CatalogError::SelfBase);
        }
        if let Some(current) = self.entries.get(&p.name)
            && p.published_ms <= current.published_ms
        {
            return Err(CatalogError::Stale {
                name: p.name.clone(),
                current_ms: current.published_ms,
            });
        }
        let entry = CatalogEntry {
            name: p.name.clone(),
            content: p.content,
            kind: p.kind,
            owner,
            published_ms: p.published_ms,
        };
        self.entries.insert(entry.name.clone(), entry.clone());
        Ok(entry)
    }

    /// Whether `owner` may use `name`: it is free or already theirs.
    pub fn check_free(&self, name: &str, owner: PublicKey) -> Result<(), CatalogError> {
        match self.entries.get(name) {
            Some(current) if current.owner != owner => Err(CatalogError::Taken {
                name: name.to_string(),
                owner: current.owner,
            }),
            _ => Ok(()),
        }
    }

    pub fn get(&self, name: &str) -> Option<&CatalogEntry> {
        self.entries.get(name)
    }

    pub fn entries(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.entries.values()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use olc_protocol::{ContentId, Identity, Signed};

    use super::*;

    fn publish(who: &Identity, name: &str, content: &[u8], at: u64) -> Verified<Publish> {
        let body = Publish {
            name: name.into(),
            content: ContentId::of(content),
            kind: CatalogKind::Base,
            published_ms: at,
        };
        Verified::check(Signed::sign(who, &body).unwrap()).unwrap()
    }

    #[test]
    fn a_name_is_its_first_publishers_and_only_they_move_it() {
        let (alice, bob) = (Identity::from_seed(&[1; 32]), Identity::from_seed(&[2; 32]));
        let mut c = Catalog::default();
        let e = c.publish(&publish(&alice, "smol", b"v1", 10)).unwrap();
        assert_eq!(
            (e.owner, e.content),
            (alice.public_key(), ContentId::of(b"v1"))
        );
        assert_eq!(
            c.publish(&publish(&bob, "smol", b"evil", 20)).unwrap_err(),
            CatalogError::Taken {
                name: "smol".into(),
                owner: alice.public_key()
            }
        );
        c.publish(&publish(&alice, "smol", b"v2", 30)).unwrap();
        assert_eq!(c.get("smol").unwrap().content, ContentId::of(b"v2"));
        // The first publish, replayed, does not move it back.
        assert!(matches!(
            c.publish(&publish(&alice, "smol", b"v1", 10)),
            Err(CatalogError::Stale { current_ms: 30, .. })
        ));
        c.publish(&publish(&bob, "bobs", b"b", 5)).unwrap();
        let names: Vec<&str> = c.entries().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["bobs", "smol"]);
        assert_eq!(Catalog::restore(c.entries().cloned()), c);
    }

    #[test]
    fn bad_names_and_self_based_adapters_are_refused() {
        let alice = Identity::from_seed(&[1; 32]);
        let mut c = Catalog::default();
        assert!(matches!(
            c.publish(&publish(&alice, "Base:Adapter", b"x", 1)),
            Err(CatalogError::BadName(_))
        ));
        let body = Publish {
            name: "self".into(),
            content: ContentId::of(b"a"),
            kind: CatalogKind::Adapter {
                base: ContentId::of(b"a"),
            },
            published_ms: 1,
        };
        let signed = Verified::check(Signed::sign(&alice, &body).unwrap()).unwrap();
        assert_eq!(c.publish(&signed).unwrap_err(), CatalogError::SelfBase);
        assert_eq!(c.entries().count(), 0);
    }
}
