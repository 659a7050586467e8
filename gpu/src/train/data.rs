//! The fine-tuning dataset: JSONL that a job's submitter wrote by hand or exported, and that
//! every worker on the job must read identically.
//!
//! One record per line, either `{"text": ...}` or `{"prompt": ..., "completion": ...}`, with an
//! optional `"contributor"` (the ed25519 public key that attribution pays) and an optional
//! `"id"`. Parsing is strict: an unknown or repeated field, a wrong type or an empty record is
//! an error naming its line, because a typo silently ignored (`"promt"`) would train on the
//! wrong thing or pay the wrong contributor, and nobody would notice until the adapter is bad.
//! Nothing here panics on input or allocates more than the size caps allow.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::model::{ModelError, Tokenizer};

/// A dataset is read whole into memory and tokenized there; far beyond any LoRA fine-tune, and
/// small enough that a hostile or mistaken file cannot exhaust a worker.
pub const MAX_DATASET_BYTES: u64 = 1 << 30;
/// One record is one training example, which must fit a context window anyway; a longer line
/// is almost certainly a file that is not JSONL (or is missing its newlines).
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Long enough for a UUID, a content hash or a path-like name.
pub const MAX_ID_BYTES: usize = 256;
/// Individual warnings for records left out as too long; past this, one summary, so that a
/// dataset written for a bigger context does not flood the log.
const MAX_TOO_LONG_WARNINGS: usize = 10;

const FIELDS: &str = r#""prompt", "completion", "text", "contributor" or "id""#;

/// Why a dataset was refused. Line errors carry the 1-based line number but not the file
/// name: the caller knows which file it opened and adds it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dataset is {len} bytes, more than the limit of {max} bytes")]
    TooLarge { len: u64, max: u64 },
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("line {line}: {source}")]
    Tokenizer { line: usize, source: ModelError },
    #[error("the dataset has no records")]
    Empty,
    #[error(
        "every record is longer than the model's context of {max_len} tokens \
         (shortest: {shortest} tokens, line {line})"
    )]
    AllTooLong {
        max_len: usize,
        shortest: usize,
        line: usize,
    },
}

impl DataError {
    fn line(line: usize, reason: impl Into<String>) -> Self {
        Self::Line {
            line,
            reason: reason.into(),
        }
    }
}

/// One line of the dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// 1-based, for messages that point the submitter at the line to fix.
    pub line: usize,
    /// The record's `"id"`, or `line-N` when it has none: ids are what attribution and
    /// per-record losses refer to, so every record has one and they are unique.
    pub id: String,
    /// 64 lowercase hex characters, as `olc keys show` prints a public key.
    pub contributor: Option<String>,
    pub content: Content,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Trained on every token.
    Text(String),
    /// Trained on the completion only; the prompt is context.
    PromptCompletion { prompt: String, completion: String },
}

/// A parsed dataset; every worker that holds the same bytes (same `content_id`) gets the same
/// records in the same order.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub records: Vec<Record>,
    /// BLAKE3 of the file's exact bytes, lowercase hex
    pub content_id: String,
}

impl Dataset {
    pub fn from_file(path: &Path) -> Result<Self, DataError> {
        let bytes = read_capped(path, MAX_DATASET_BYTES)?;
        Self::from_bytes(&bytes)
    }

    /// The content id covers the bytes as given (blank lines, a BOM, CRLF and all), so that
    /// it identifies exactly the file that was shared, not our reading of it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DataError> {
        let len = bytes.len() as u64;
        if len > MAX_DATASET_BYTES {
            return Err(DataError::TooLarge {
                len,
                max: MAX_DATASET_BYTES,
            });
        }
        let content_id = blake3::hash(bytes).to_hex().to_string();
        // Editors on Windows start UTF-8 files with a byte order mark, which JSON does not allow.
        let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let mut records = Vec::new();
        let mut first_line_of_id: HashMap<String, usize> = HashMap::new();
        for (index, raw) in body.split(|&b| b == b'\n').enumerate() {
            let line = index + 1;
            let Some(record) = parse_line(line, raw)? else {
                continue;
            };
            if let Some(&first) = first_line_of_id.get(&record.id) {
                return Err(DataError::line(
                    line,
                    format!("duplicate id {:?} (also on line {first})", record.id),
                ));
            }
            first_line_of_id.insert(record.id.clone(), line);
            records.push(record);
        }
        if records.is_empty() {
            return Err(DataError::Empty);
        }
        Ok(Self {
            records,
            content_id,
        })
    }
}

/// A tokenized record ready for training.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Index into [`Dataset::records`].
    pub record: usize,
    pub tokens: Vec<u32>,
    /// index of the first token that is a training label
    pub trained_from: usize,
}

impl Example {
    /// number of next-token predictions trained: tokens in trained_from.max(1)..len
    ///
    /// Token 0 is never a label: nothing comes before it to predict it from.
    pub fn trained_tokens(&self) -> usize {
        self.tokens.len().saturating_sub(self.trained_from.max(1))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Tokenized {
    /// In record order, without the records that were too long.
    pub examples: Vec<Example>,
    /// records left out because longer than max_len, with their length: `(index into
    /// records, tokens)`
    pub too_long: Vec<(usize, usize)>,
}

/// Tokenizes every record with the checkpoint's own tokenizer.
///
/// A record's tokens are exactly what tokenizer.json produces for it (its post-processor
/// decides about special tokens); a prompt/completion record is the prompt's tokens followed
/// by the completion's. So the prompt is encoded as a sequence of its own, with whatever the
/// post-processor adds (typically a BOS token), and the completion without special tokens: it
/// continues the prompt, and a BOS (or EOS) in the middle of one example would teach the
/// model something it never sees at inference, where the same tokenizer encodes the prompt
/// and generation continues it. Labels start at the completion's first token, so the model
/// learns to produce completions, not to reproduce prompts; a text record is all labels.
///
/// Records longer than `max_len` (the model's context) cannot be trained whole and are left
/// out with a warning rather than truncated, since a cut completion teaches the model to stop
/// mid-sentence; only a dataset with nothing left is an error. Records that encode to fewer
/// than 2 tokens, or to no label at all, are errors: they are mistakes in the data, not
/// examples.
pub fn tokenize(
    dataset: &Dataset,
    tokenizer: &Tokenizer,
    max_len: usize,
) -> Result<Tokenized, DataError> {
    // Encoding is independent per record and dominates for large files; the results are
    // checked in order afterwards so that the error reported is the first line's.
    let encoded: Vec<Result<Example, DataError>> = dataset
        .records
        .par_iter()
        .enumerate()
        .map(|(index, record)| encode_record(index, record, tokenizer))
        .collect();
    let mut out = Tokenized::default();
    for example in encoded {
        let example = example?;
        if example.tokens.len() > max_len {
            out.too_long.push((example.record, example.tokens.len()));
        } else {
            out.examples.push(example);
        }
    }
    warn_too_long(dataset, &out.too_long, max_len);
    if out.examples.is_empty() {
        // `too_long` is empty only when the dataset is (records are public, so it can be).
        let shortest = out
            .too_long
            .iter()
            .min_by_key(|&&(index, len)| (len, index));
        return Err(match shortest {
            Some(&(index, shortest)) => DataError::AllTooLong {
                max_len,
                shortest,
                line: line_of(dataset, index),
            },
            None => DataError::Empty,
        });
    }
    Ok(out)
}

fn encode_record(
    index: usize,
    record: &Record,
    tokenizer: &Tokenizer,
) -> Result<Example, DataError> {
    let line = record.line;
    let encode = |text: &str, special: bool| {
        tokenizer
            .encode_with(text, special)
            .map_err(|source| DataError::Tokenizer { line, source })
    };
    let (tokens, trained_from) = match &record.content {
        Content::Text(text) => (encode(text, true)?, 0),
        Content::PromptCompletion { prompt, completion } => {
            let mut tokens = encode(prompt, true)?;
            let trained_from = tokens.len();
            tokens.extend(encode(completion, false)?);
            (tokens, trained_from)
        }
    };
    let example = Example {
        record: index,
        tokens,
        trained_from,
    };
    if example.tokens.len() < 2 {
        return Err(DataError::line(
            line,
            format!(
                "encodes to {} token(s); a training example needs at least 2",
                example.tokens.len()
            ),
        ));
    }
    if example.trained_tokens() == 0 {
        return Err(DataError::line(
            line,
            "\"completion\" encodes to no tokens, so there is nothing to train on",
        ));
    }
    Ok(example)
}

fn warn_too_long(dataset: &Dataset, too_long: &[(usize, usize)], max_len: usize) {
    for &(index, len) in too_long.iter().take(MAX_TOO_LONG_WARNINGS) {
        tracing::warn!(
            line = line_of(dataset, index),
            tokens = len,
            max_len,
            "skipping record: longer than the model's context"
        );
    }
    if too_long.len() > MAX_TOO_LONG_WARNINGS {
        tracing::warn!(
            more = too_long.len() - MAX_TOO_LONG_WARNINGS,
            total = too_long.len(),
            max_len,
            "skipping more records longer than the model's context"
        );
    }
}

fn line_of(dataset: &Dataset, index: usize) -> usize {
    dataset.records.get(index).map_or(0, |r| r.line)
}

/// `Ok(None)` for a blank line.
fn parse_line(line: usize, raw: &[u8]) -> Result<Option<Record>, DataError> {
    if raw.len() > MAX_LINE_BYTES {
        return Err(DataError::line(
            line,
            format!(
                "is {} bytes long, more than the limit of {MAX_LINE_BYTES} bytes",
                raw.len()
            ),
        ));
    }
    let text = std::str::from_utf8(raw).map_err(|e| {
        DataError::line(
            line,
            format!("not valid UTF-8 (at byte {})", e.valid_up_to() + 1),
        )
    })?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let fields = match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(fields)) => fields,
        Ok(other) => {
            return Err(DataError::line(
                line,
                format!("expected a JSON object, found {}", other.kind()),
            ));
        }
        Err(e) => return Err(DataError::line(line, json_error(&e))),
    };

    let mut prompt = None;
    let mut completion = None;
    let mut text = None;
    let mut contributor = None;
    let mut id = None;
    for (key, value) in fields {
        let slot = match key.as_str() {
            "prompt" => &mut prompt,
            "completion" => &mut completion,
            "text" => &mut text,
            "contributor" => &mut contributor,
            "id" => &mut id,
            _ => {
                return Err(DataError::line(
                    line,
                    format!("unknown field {key:?} (expected {FIELDS})"),
                ));
            }
        };
        if slot.is_some() {
            return Err(DataError::line(line, format!("{key:?} appears twice")));
        }
        match value {
            Json::String(s) => *slot = Some(s),
            other => {
                return Err(DataError::line(
                    line,
                    format!("{key:?} must be a string, not {}", other.kind()),
                ));
            }
        }
    }

    let content = match (text, prompt, completion) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(DataError::line(
                line,
                r#"has both "text" and "prompt"/"completion"; a record is one or the other"#,
            ));
        }
        (Some(text), None, None) => {
            if text.is_empty() {
                return Err(DataError::line(line, r#""text" is empty"#));
            }
            Content::Text(text)
        }
        (None, Some(prompt), Some(completion)) => {
            if completion.is_empty() {
                return Err(DataError::line(line, r#""completion" is empty"#));
            }
            Content::PromptCompletion { prompt, completion }
        }
        (None, Some(_), None) => {
            return Err(DataError::line(line, r#""prompt" without "completion""#));
        }
        (None, None, Some(_)) => {
            return Err(DataError::line(line, r#""completion" without "prompt""#));
        }
        (None, None, None) => {
            return Err(DataError::line(
                line,
                r#"needs either "text" or "prompt" and "completion""#,
            ));
        }
    };

    if let Some(key) = &contributor
        && !is_public_key_hex(key)
    {
        return Err(DataError::line(
            line,
            r#""contributor" must be 64 lowercase hex characters (an ed25519 public key)"#,
        ));
    }
    let id = match id {
        Some(id) if id.is_empty() => {
            return Err(DataError::line(line, r#""id" is empty"#));
        }
        Some(id) if id.len() > MAX_ID_BYTES => {
            return Err(DataError::line(
                line,
                format!(
                    r#""id" is {} bytes, more than the limit of {MAX_ID_BYTES}"#,
                    id.len()
                ),
            ));
        }
        Some(id) => id,
        None => format!("line-{line}"),
    };
    Ok(Some(Record {
        line,
        id,
        contributor,
        content,
    }))
}

fn is_public_key_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// serde_json's message without its position: "line 1" would contradict the dataset line the
/// error is reported on, so only the column is kept.
fn json_error(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match message.strip_suffix(&suffix) {
        Some(bare) => format!("invalid JSON at column {}: {bare}", e.column()),
        None => format!("invalid JSON: {message}"),
    }
}

/// A JSON value as far as a record needs it. Objects keep every entry in order, which
/// `serde_json::Value` does not: it keeps the last of repeated keys, and `{"text": "a",
/// "text": "b"}` must be an error, not a guess.
#[derive(Debug)]
enum Json {
    Object(Vec<(String, Json)>),
    String(String),
    Other(&'static str),
}

impl Json {
    fn kind(&self) -> &'static str {
        match self {
            Self::Object(_) => "an object",
            Self::String(_) => "a string",
            Self::Other(kind) => kind,
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, Json>()? {
            entries.push(entry);
        }
        Ok(Json::Object(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Json::Other("an array"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Json, E> {
        Ok(Json::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Json, E> {
        Ok(Json::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Json, E> {
        Ok(Json::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Json, E> {
        Ok(Json::Other("a number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Other("null"))
    }
}

/// Reads `path` whole, refusing it when it is longer than `max` bytes: checked against the
/// length before allocating, and again while reading, since the file may grow in between.
fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len > max {
        return Err(DataError::TooLarge { len, max });
    }
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > max {
        return Err(DataError::TooLarge {
            len: buf.len() as u64,
            max,
        });
    }
    Ok(buf)
}

#[cfg(test)]
mod tests;
