//! The coordinator's catalog as the gateway serves it: names from the coordinator, and for
//! each model the few small files that say how to talk to it (its context, chat template
//! and special tokens), fetched once per content id: a content id's files never change.

use std::collections::HashMap;
use std::sync::Arc;

use olc_client::Submitter;
use olc_protocol::{CatalogEntry, CatalogKind, ContentId};
use serde_json::Value;

use crate::network::{CatalogModel, ModelKind};

/// The largest config.json read: a model's is a few KB.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The largest tokenizer_config.json read: templates of real models are tens of KB.
const MAX_TOKENIZER_CONFIG_BYTES: u64 = 8 << 20;

/// What a content id's small files say; `None` fields are files or keys it lacks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ModelFiles {
    /// config.json's `max_position_embeddings` (base models).
    pub context_length: Option<u32>,
    /// tokenizer_config.json's `chat_template`.
    pub chat_template: Option<String>,
    /// tokenizer_config.json's `bos_token`.
    pub bos_token: Option<String>,
    /// tokenizer_config.json's `eos_token`.
    pub eos_token: Option<String>,
}

impl ModelFiles {
    /// Reads the files of one catalog entry. `Err` only when the coordinator could not be
    /// asked (the answer may differ next time); a missing or unreadable file is a `None`
    /// field, which is the answer for good.
    pub(crate) async fn fetch(
        submitter: &Submitter,
        entry: &CatalogEntry,
    ) -> Result<Self, olc_client::SubmitError> {
        let mut files = ModelFiles::default();
        if matches!(entry.kind, CatalogKind::Base) {
            let config = submitter
                .fetch_file(entry.content, "config.json", MAX_CONFIG_BYTES)
                .await?;
            files.context_length = config.as_deref().and_then(context_length);
        }
        let tokenizer_config = submitter
            .fetch_file(
                entry.content,
                "tokenizer_config.json",
                MAX_TOKENIZER_CONFIG_BYTES,
            )
            .await?;
        if let Some(bytes) = tokenizer_config {
            files.read_tokenizer_config(&bytes);
        }
        Ok(files)
    }

    fn read_tokenizer_config(&mut self, bytes: &[u8]) {
        let Ok(Value::Object(config)) = serde_json::from_slice::<Value>(bytes) else {
            return;
        };
        self.chat_template = config
            .get("chat_template")
            .and_then(Value::as_str)
            .map(str::to_owned);
        self.bos_token = config.get("bos_token").and_then(token_text);
        self.eos_token = config.get("eos_token").and_then(token_text);
    }
}

/// `max_position_embeddings` of a config.json.
fn context_length(bytes: &[u8]) -> Option<u32> {
    let config: Value = serde_json::from_slice(bytes).ok()?;
    let n = config.get("max_position_embeddings")?.as_u64()?;
    (n > 0).then(|| u32::try_from(n).unwrap_or(u32::MAX))
}

/// A special token as tokenizer_config.json writes it: a string, or an object (an
/// `AddedToken`) whose `content` is the string.
fn token_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Object(token) => token
            .get("content")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

/// One model the gateway serves, with what a job for it needs.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    /// As the HTTP layer sees it.
    pub model: CatalogModel,
    /// The manifest a job names.
    pub content: ContentId,
}

/// The catalog entries with their files, as the HTTP layer's models: bases whose context
/// is known, and adapters over a base that is served (named by that base's name). A base
/// without a config.json that gives its context cannot be checked against it, and is left
/// out; so is an adapter whose base is not in the catalog.
pub(crate) fn served(
    entries: &[CatalogEntry],
    files: &HashMap<ContentId, Arc<ModelFiles>>,
) -> Vec<Served> {
    let mut out: Vec<Served> = Vec::new();
    let mut bases: HashMap<ContentId, (String, Arc<ModelFiles>)> = HashMap::new();
    for entry in entries {
        let (CatalogKind::Base, Some(f)) = (&entry.kind, files.get(&entry.content)) else {
            continue;
        };
        let Some(context_length) = f.context_length else {
            continue;
        };
        // Entries come in name order: the first name of a content id is the one its
        // adapters are served under.
        bases
            .entry(entry.content)
            .or_insert_with(|| (entry.name.clone(), f.clone()));
        out.push(Served {
            model: CatalogModel {
                name: entry.name.clone(),
                kind: ModelKind::Base,
                created: entry.published_ms / 1000,
                owner: entry.owner.to_string(),
                chat_template: f.chat_template.clone(),
                bos_token: f.bos_token.clone(),
                eos_token: f.eos_token.clone(),
                context_length,
            },
            content: entry.content,
        });
    }
    for entry in entries {
        let CatalogKind::Adapter { base } = &entry.kind else {
            continue;
        };
        let (Some((base_name, base_files)), Some(f)) = (bases.get(base), files.get(&entry.content))
        else {
            continue;
        };
        let Some(context_length) = base_files.context_length else {
            continue;
        };
        let own = f.chat_template.is_some();
        out.push(Served {
            model: CatalogModel {
                name: entry.name.clone(),
                kind: ModelKind::Adapter {
                    base: base_name.clone(),
                },
                created: entry.published_ms / 1000,
                owner: entry.owner.to_string(),
                // An adapter trained on a chat format ships its template; without one it
                // speaks its base's, with its base's special tokens.
                chat_template: f
                    .chat_template
                    .clone()
                    .or_else(|| base_files.chat_template.clone()),
                bos_token: if own {
                    f.bos_token.clone()
                } else {
                    f.bos_token.clone().or_else(|| base_files.bos_token.clone())
                },
                eos_token: if own {
                    f.eos_token.clone()
                } else {
                    f.eos_token.clone().or_else(|| base_files.eos_token.clone())
                },
                context_length,
            },
            content: entry.content,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use olc_protocol::PublicKey;

    use super::*;

    fn entry(name: &str, content: u8, kind: CatalogKind) -> CatalogEntry {
        CatalogEntry {
            name: name.into(),
            content: ContentId::of(&[content]),
            kind,
            owner: PublicKey::from_bytes([7; 32]),
            published_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn special_tokens_are_read_as_strings_or_added_tokens() {
        let mut f = ModelFiles::default();
        f.read_tokenizer_config(
            br#"{"chat_template": "{{ x }}", "bos_token": {"content": "<s>", "lstrip": false},
                 "eos_token": "</s>"}"#,
        );
        assert_eq!(f.chat_template.as_deref(), Some("{{ x }}"));
        assert_eq!(f.bos_token.as_deref(), Some("<s>"));
        assert_eq!(f.eos_token.as_deref(), Some("</s>"));
        let mut none = ModelFiles::default();
        none.read_tokenizer_config(br#"{"bos_token": null, "eos_token": 3}"#);
        assert_eq!(none, ModelFiles::default());
        none.read_tokenizer_config(b"not json");
        assert_eq!(none, ModelFiles::default());
        assert_eq!(
            context_length(br#"{"max_position_embeddings": 2048}"#),
            Some(2048)
        );
        assert_eq!(context_length(br#"{"max_position_embeddings": 0}"#), None);
        assert_eq!(context_length(br#"{}"#), None);
    }

    #[test]
    fn adapters_are_served_under_their_base_name_and_need_it() {
        let base = entry("base", 1, CatalogKind::Base);
        let entries = vec![
            entry(
                "orphan",
                3,
                CatalogKind::Adapter {
                    base: ContentId::of(&[9]),
                },
            ),
            entry("poet", 2, CatalogKind::Adapter { base: base.content }),
            base.clone(),
            entry("no-config", 4, CatalogKind::Base),
        ];
        let mut files = HashMap::new();
        files.insert(
            base.content,
            Arc::new(ModelFiles {
                context_length: Some(64),
                chat_template: Some("T".into()),
                bos_token: Some("<s>".into()),
                eos_token: None,
            }),
        );
        files.insert(ContentId::of(&[2]), Arc::new(ModelFiles::default()));
        files.insert(ContentId::of(&[3]), Arc::new(ModelFiles::default()));
        files.insert(ContentId::of(&[4]), Arc::new(ModelFiles::default()));
        let served = served(&entries, &files);
        let names: Vec<&str> = served.iter().map(|s| s.model.name.as_str()).collect();
        assert_eq!(names, ["base", "poet"]);
        let poet = &served[1].model;
        assert_eq!(
            poet.kind,
            ModelKind::Adapter {
                base: "base".into()
            }
        );
        assert_eq!(poet.chat_template.as_deref(), Some("T"));
        assert_eq!(poet.bos_token.as_deref(), Some("<s>"));
        assert_eq!(poet.context_length, 64);
        assert_eq!(poet.created, 1_700_000_000);
        assert_eq!(poet.owner, PublicKey::from_bytes([7; 32]).to_string());
    }
}
