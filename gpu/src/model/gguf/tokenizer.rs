//! A `tokenizers` tokenizer from a GGUF file's `tokenizer.ggml.*` metadata, assembled the
//! way `transformers`' GGUF converters do (`integrations/ggml.py`), so that a GGUF model
//! gives the same token ids as `transformers` loading the same file.
//!
//! Two vocabularies are implemented: `gpt2` (byte-level BPE from tokens and merges, as
//! `GGUFGPTConverter`) and `llama` (SentencePiece-style BPE with byte fallback from tokens and
//! scores, as `GGUFLlamaConverter`). Control tokens (type 3) become special tokens and
//! user-defined ones (type 4) added tokens, as llama.cpp treats them.

use std::collections::{HashMap, HashSet};

use serde_json::json;
use tokenizers::AddedToken;
use tokenizers::SplitDelimiterBehavior;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::Replace;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::PostProcessorWrapper;

use super::reader::GgufFile;
use super::value::Array;
use crate::model::error::{ModelError, Result};
use crate::model::tokenizer::Tokenizer;

/// llama.cpp's token types (`enum llama_token_type`).
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;

pub const KEY_MODEL: &str = "tokenizer.ggml.model";
pub const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
pub const KEY_SCORES: &str = "tokenizer.ggml.scores";
pub const KEY_TYPES: &str = "tokenizer.ggml.token_type";
pub const KEY_MERGES: &str = "tokenizer.ggml.merges";
pub const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";
/// llama.cpp's name for how text is split before byte-level BPE (`smollm`, `llama-bpe`, ...).
pub const KEY_PRE: &str = "tokenizer.ggml.pre";

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split a byte-level vocabulary's merges were learned under, by `tokenizer.ggml.pre`,
/// as `transformers` maps them (5.24, `integrations/gguf/gguf_tokenizer_mapping.py`,
/// `GGUF_PRE_TOKENIZER_SPLITS`): Llama 3, Qwen 2 and 3.5, Mistral's Tekken and GPT-4o's. Any
/// other name (`smollm`, `gpt2`, ...) keeps GPT-2's own byte-level regex, as it does there.
fn split_regex(pre: &str) -> Option<&'static str> {
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3_SPLIT,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2_SPLIT,
        "qwen35" => QWEN35_SPLIT,
        "tekken" => TEKKEN_SPLIT,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O_SPLIT,
        _ => return None,
    })
}

/// The tokenizer of a GGUF file and what a server needs with it.
#[derive(Debug)]
pub struct GgufTokenizer {
    pub tokenizer: Tokenizer,
    /// `tokenizer.ggml.model`: `gpt2` or `llama`.
    pub model: String,
    /// `tokenizer.chat_template`, a Jinja template.
    pub chat_template: Option<String>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

/// The number of entries in `tokenizer.ggml.tokens`, if the file has a token list.
pub fn token_count(file: &GgufFile) -> Result<Option<u64>> {
    Ok(file.array_key(KEY_TOKENS)?.map(|a| a.len() as u64))
}

/// Builds the tokenizer described by the file's metadata.
pub fn build(file: &GgufFile) -> Result<GgufTokenizer> {
    let model = file
        .required(KEY_MODEL, file.str_key(KEY_MODEL)?)?
        .to_string();
    let tokens =
        strings(file, KEY_TOKENS)?.ok_or_else(|| file.key_error(KEY_TOKENS, "is missing"))?;
    if tokens.is_empty() {
        return Err(file.key_error(KEY_TOKENS, "is empty"));
    }
    let n = tokens.len();
    let id = |key: &str| -> Result<Option<u32>> {
        match file.u64_key(key)? {
            None => Ok(None),
            Some(v) if v < n as u64 => Ok(Some(v as u32)),
            Some(v) => Err(file.key_error(
                key,
                format!("token id {v} is outside the {n}-token vocabulary"),
            )),
        }
    };
    let bos = id("tokenizer.ggml.bos_token_id")?;
    let eos = id("tokenizer.ggml.eos_token_id")?;
    let unk = id("tokenizer.ggml.unknown_token_id")?;
    id("tokenizer.ggml.padding_token_id")?;
    let types = match file.array_key(KEY_TYPES)? {
        None => None,
        Some(Array::I32(v)) if v.len() == n => Some(v.as_slice()),
        Some(a) => {
            return Err(file.key_error(
                KEY_TYPES,
                format!(
                    "expected {n} i32 values (one per token), found [{}; {}]",
                    a.elem_type_name(),
                    a.len()
                ),
            ));
        }
    };
    let merges = match strings(file, KEY_MERGES)? {
        None => None,
        Some(m) => Some(split_merges(file, m)?),
    };
    let text = |i: Option<u32>| i.and_then(|i| tokens.get(i as usize)).cloned();
    let add_bos = file.bool_key("tokenizer.ggml.add_bos_token")?;
    let add_eos = file
        .bool_key("tokenizer.ggml.add_eos_token")?
        .unwrap_or(false);
    let add_space_prefix = file.bool_key("tokenizer.ggml.add_space_prefix")?;

    let mut inner = match model.as_str() {
        "gpt2" => {
            let merges = merges
                .filter(|m| !m.is_empty())
                .ok_or_else(|| file.key_error(KEY_MERGES, "a gpt2 tokenizer needs merges"))?;
            let bpe = BPE::builder()
                .vocab_and_merges(vocab(tokens), merges)
                .build()
                .map_err(|e| tokenizer_error(file, e))?;
            let mut t = tokenizers::Tokenizer::new(bpe);
            let pre = file.str_key(KEY_PRE)?;
            match pre.and_then(split_regex) {
                Some(regex) => {
                    let split = Split::new(
                        SplitPattern::Regex(regex.to_string()),
                        SplitDelimiterBehavior::Isolated,
                        false,
                    )
                    .map_err(|e| tokenizer_error(file, e))?;
                    t.with_pre_tokenizer(Some(PreSequence::new(vec![
                        split.into(),
                        ByteLevel::new(false, true, false).into(),
                    ])));
                }
                None => {
                    t.with_pre_tokenizer(Some(ByteLevel::new(
                        add_space_prefix.unwrap_or(false),
                        true,
                        true,
                    )));
                }
            }
            t.with_decoder(Some(ByteLevel::default()));
            let processor = match (add_bos.unwrap_or(false), bos) {
                (true, Some(b)) => template(file, text(Some(b)), Some(b), None, None, false)?,
                // transformers 5 writes an empty template here (GPT2Converter's ByteLevel
                // processor only differed in offsets).
                _ => template(file, None, None, None, None, false)?,
            };
            t.with_post_processor(Some(processor));
            t
        }
        "llama" => {
            let scores = match file.array_key(KEY_SCORES)? {
                Some(Array::F32(s)) if s.len() == n => s.as_slice(),
                Some(a) => {
                    return Err(file.key_error(
                        KEY_SCORES,
                        format!(
                            "expected {n} f32 values (one per token), found [{}; {}]",
                            a.elem_type_name(),
                            a.len()
                        ),
                    ));
                }
                None => {
                    return Err(file.key_error(KEY_SCORES, "a llama tokenizer needs scores"));
                }
            };
            let merges = match merges {
                Some(m) => m,
                None => merges_from_scores(tokens, scores)
                    .map_err(|why| file.key_error(KEY_TOKENS, why))?,
            };
            // As transformers 5's LlamaTokenizer builds it: no unknown token (byte fallback
            // covers every character), a Metaspace pre-tokenizer that prepends `▁` unless the
            // text already starts with a space, and the matching decoder.
            let bpe = BPE::builder()
                .vocab_and_merges(vocab(tokens), merges)
                .fuse_unk(true)
                .byte_fallback(true)
                .build()
                .map_err(|e| tokenizer_error(file, e))?;
            let mut t = tokenizers::Tokenizer::new(bpe);
            t.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::First, false)));
            let dec = vec![
                DecoderWrapper::Replace(
                    Replace::new("▁", " ").map_err(|e| tokenizer_error(file, e))?,
                ),
                DecoderWrapper::ByteFallback(ByteFallback::new()),
                DecoderWrapper::Fuse(Fuse::new()),
                DecoderWrapper::Strip(Strip::new(' ', 1, 0)),
            ];
            t.with_decoder(Some(DecoderSequence::new(dec)));
            // llama.cpp and LlamaTokenizerFast both add BOS unless told otherwise.
            let bos_added = add_bos.unwrap_or(true);
            let (b, e) = (bos.filter(|_| bos_added), eos.filter(|_| add_eos));
            if b.is_some() || e.is_some() {
                t.with_post_processor(Some(template(file, text(b), b, text(e), e, true)?));
            }
            t
        }
        other => {
            return Err(file.key_error(
                KEY_MODEL,
                format!("tokenizer model `{other}` is not supported; supported: gpt2, llama"),
            ));
        }
    };

    let (mut special, mut added) = (Vec::new(), Vec::new());
    match types {
        Some(types) => {
            for (token, &ty) in tokens.iter().zip(types) {
                match ty {
                    TOKEN_CONTROL => {
                        special.push(AddedToken::from(token.clone(), true).normalized(false))
                    }
                    TOKEN_USER_DEFINED => {
                        added.push(AddedToken::from(token.clone(), false).normalized(false))
                    }
                    _ => {}
                }
            }
        }
        None => {
            for i in [unk, bos, eos].into_iter().flatten() {
                if let Some(t) = text(Some(i)) {
                    special.push(AddedToken::from(t, true).normalized(false));
                }
            }
        }
    }
    if !special.is_empty() {
        inner.add_special_tokens(&special);
    }
    if !added.is_empty() {
        inner.add_tokens(&added);
    }
    let chat_template = file.str_key(KEY_CHAT_TEMPLATE)?.map(str::to_string);
    Ok(GgufTokenizer {
        tokenizer: Tokenizer::from_tokenizer(inner, file.path()),
        model,
        chat_template,
        bos_token_id: bos,
        eos_token_id: eos,
    })
}

fn tokenizer_error(file: &GgufFile, e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer {
        path: file.path().to_path_buf(),
        message: e.to_string(),
    }
}

fn strings<'f>(file: &'f GgufFile, key: &str) -> Result<Option<&'f [String]>> {
    match file.array_key(key)? {
        None => Ok(None),
        Some(Array::String(v)) => Ok(Some(v)),
        Some(a) => Err(file.key_error(
            key,
            format!(
                "expected an array of strings, found [{}; {}]",
                a.elem_type_name(),
                a.len()
            ),
        )),
    }
}

/// Token to id; a repeated token keeps its last id, as a Python dict comprehension does.
fn vocab(tokens: &[String]) -> Vocab {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect()
}

fn split_merges(file: &GgufFile, merges: &[String]) -> Result<Vec<(String, String)>> {
    merges
        .iter()
        .enumerate()
        .map(|(i, m)| match m.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                Ok((a.to_string(), b.to_string()))
            }
            _ => Err(file.key_error(
                KEY_MERGES,
                format!("merge #{i} {m:?} is not two tokens separated by one space"),
            )),
        })
        .collect()
}

/// The longest token merges are derived for. Every split of a token is looked up, so the
/// work grows with the square of its length; real SentencePiece vocabularies stay far below
/// this (Llama 2's longest token is 16 characters).
const MAX_DERIVED_TOKEN_BYTES: usize = 128;
/// At most this many merges per token are derived (Llama 2's 32,000 tokens give about two
/// each), which bounds the memory a hostile vocabulary can ask for.
const MAX_DERIVED_MERGES_PER_TOKEN: usize = 8;

/// The merges `GGUFTokenizerSkeleton` derives when a SentencePiece file has none: every split
/// of every token into two known tokens, ranked by the whole token's score (ties broken by
/// the parts' scores, then file order).
fn merges_from_scores(tokens: &[String], scores: &[f32]) -> Result<Vec<(String, String)>, String> {
    if let Some(t) = tokens.iter().find(|t| t.len() > MAX_DERIVED_TOKEN_BYTES) {
        return Err(format!(
            "without merges, tokens may be at most {MAX_DERIVED_TOKEN_BYTES} bytes, but one \
             is {} bytes",
            t.len()
        ));
    }
    let max_merges = MAX_DERIVED_MERGES_PER_TOKEN.saturating_mul(tokens.len()) + 1024;
    // A dict keeps the first position of a repeated token and its last score.
    let mut order: Vec<&str> = Vec::new();
    let mut score: HashMap<&str, f32> = HashMap::new();
    for (t, &s) in tokens.iter().zip(scores) {
        if score.insert(t.as_str(), s).is_none() {
            order.push(t.as_str());
        }
    }
    let known: HashSet<&str> = tokens.iter().map(String::as_str).collect();
    let mut merges: Vec<(&str, &str, f32)> = Vec::new();
    for &token in &order {
        let whole = score.get(token).copied().unwrap_or(0.0);
        let mut local: Vec<(&str, &str, f32)> = token
            .char_indices()
            .skip(1)
            .map(|(at, _)| token.split_at(at))
            .filter(|(l, r)| known.contains(l) && known.contains(r))
            .map(|(l, r)| (l, r, whole))
            .collect();
        let key = |m: &(&str, &str, f32)| {
            (
                score.get(m.0).copied().unwrap_or(0.0),
                score.get(m.1).copied().unwrap_or(0.0),
            )
        };
        // Python's `sorted(reverse=True)` is stable: equal keys keep their order.
        local.sort_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            kb.0.total_cmp(&ka.0).then(kb.1.total_cmp(&ka.1))
        });
        merges.extend(local);
        if merges.len() > max_merges {
            return Err(format!(
                "its tokens split into more than {max_merges} merges ({MAX_DERIVED_MERGES_PER_TOKEN} \
                 a token), which no real vocabulary does"
            ));
        }
    }
    merges.sort_by(|a, b| b.2.total_cmp(&a.2));
    Ok(merges
        .into_iter()
        .map(|(l, r, _)| (l.to_string(), r.to_string()))
        .collect())
}

/// A `TemplateProcessing` adding BOS before and/or EOS after each sequence. Built from JSON
/// because token texts may contain the `:` and spaces of the template string syntax.
/// `per_sequence`: LlamaTokenizerFast's template (specials around both sequences of a pair)
/// rather than GPT-2's (BOS once).
fn template(
    file: &GgufFile,
    bos: Option<String>,
    bos_id: Option<u32>,
    eos: Option<String>,
    eos_id: Option<u32>,
    per_sequence: bool,
) -> Result<PostProcessorWrapper> {
    let special = |t: &String, ty: u32| json!({"SpecialToken": {"id": t, "type_id": ty}});
    let seq = |s: &str, ty: u32| json!({"Sequence": {"id": s, "type_id": ty}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = serde_json::Map::new();
    if let (Some(b), Some(id)) = (&bos, bos_id) {
        single.push(special(b, 0));
        pair.push(special(b, 0));
        specials.insert(b.clone(), json!({"id": b, "ids": [id], "tokens": [b]}));
    }
    single.push(seq("A", 0));
    pair.push(seq("A", 0));
    if let (Some(e), Some(id)) = (&eos, eos_id) {
        single.push(special(e, 0));
        pair.push(special(e, 0));
        specials.insert(e.clone(), json!({"id": e, "ids": [id], "tokens": [e]}));
    }
    if per_sequence && let Some(b) = &bos {
        pair.push(special(b, 1));
    }
    pair.push(seq("B", 1));
    if per_sequence && let Some(e) = &eos {
        pair.push(special(e, 1));
    }
    let value = json!({
        "type": "TemplateProcessing",
        "single": single,
        "pair": pair,
        "special_tokens": specials,
    });
    serde_json::from_value(value).map_err(|e| tokenizer_error(file, e))
}
