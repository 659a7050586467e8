//! A byte-level BPE `tokenizer.json` in the format `tokenizers` and `transformers` read, for
//! generated checkpoints.
//!
//! 256 byte tokens make every UTF-8 string encodable and decodable exactly; merges of pairs of
//! byte tokens (most common English letters first) fill the vocabulary up to whatever size the
//! model wants, so a 49152-token vocabulary is just a long, valid merge list.

use serde::Serialize;
use serde::ser::Serializer;

/// Ids 0, 1, 2, as in SmolLM2.
pub(crate) const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
pub(crate) const MIN_VOCAB: usize = SPECIAL_TOKENS.len() + 256;
pub(crate) const MAX_VOCAB: usize = MIN_VOCAB + 256 * 256;

/// GPT-2's byte-to-character table: printable bytes map to themselves, the rest to code
/// points from U+0100 up, so every token is a visible, whitespace-free string.
pub(crate) fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            u32::from(b)
        } else {
            let c = next;
            next += 1;
            c
        };
        table[usize::from(b)] = char::from_u32(code).unwrap_or('\u{FFFD}');
    }
    table
}

/// Bytes in the order their pairs are merged: space and frequent English letters first.
fn byte_priority() -> Vec<u8> {
    let mut order: Vec<u8> =
        b" etaoinshrdlcumwfgypbvkjxqzETAOINSHRDLCUMWFGYPBVKJXQZ0123456789.,'\"-\n".to_vec();
    for b in 0..=255u8 {
        if !order.contains(&b) {
            order.push(b);
        }
    }
    order
}

#[derive(Serialize)]
struct AddedToken {
    id: usize,
    content: &'static str,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
    special: bool,
}

#[derive(Serialize)]
struct ByteLevel {
    #[serde(rename = "type")]
    kind: &'static str,
    add_prefix_space: bool,
    trim_offsets: bool,
    use_regex: bool,
}

/// A JSON object in id order, independent of serde_json's map implementation.
struct Vocab<'a>(&'a [String]);

impl Serialize for Vocab<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().enumerate().map(|(id, tok)| (tok, id)))
    }
}

#[derive(Serialize)]
struct Bpe<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    dropout: Option<f32>,
    unk_token: Option<&'static str>,
    continuing_subword_prefix: Option<&'static str>,
    end_of_word_suffix: Option<&'static str>,
    fuse_unk: bool,
    byte_fallback: bool,
    ignore_merges: bool,
    vocab: Vocab<'a>,
    merges: &'a [(String, String)],
}

#[derive(Serialize)]
struct TokenizerJson<'a> {
    version: &'static str,
    truncation: Option<()>,
    padding: Option<()>,
    added_tokens: Vec<AddedToken>,
    normalizer: Option<()>,
    pre_tokenizer: ByteLevel,
    post_processor: ByteLevel,
    decoder: ByteLevel,
    model: Bpe<'a>,
}

/// The tokenizer JSON for exactly `vocab_size` tokens, or `None` when the size is outside
/// `MIN_VOCAB..=MAX_VOCAB`.
pub(crate) fn tokenizer_json(vocab_size: usize) -> Option<String> {
    if !(MIN_VOCAB..=MAX_VOCAB).contains(&vocab_size) {
        return None;
    }
    let chars = byte_chars();
    let mut vocab: Vec<String> = SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect();
    vocab.extend(chars.iter().map(char::to_string));
    let order = byte_priority();
    // Pairs by the sum of their ranks, so that frequent-with-frequent pairs come first.
    let mut pairs: Vec<(usize, usize)> = (0..256)
        .flat_map(|i| (0..256).map(move |j| (i, j)))
        .collect();
    pairs.sort_by_key(|&(i, j)| (i + j, i));
    let merges: Vec<(String, String)> = pairs
        .into_iter()
        .take(vocab_size - MIN_VOCAB)
        .map(|(i, j)| {
            (
                chars[usize::from(order[i])].to_string(),
                chars[usize::from(order[j])].to_string(),
            )
        })
        .collect();
    vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
    let byte_level = |add_prefix_space, trim_offsets| ByteLevel {
        kind: "ByteLevel",
        add_prefix_space,
        trim_offsets,
        use_regex: true,
    };
    let json = TokenizerJson {
        version: "1.0",
        truncation: None,
        padding: None,
        added_tokens: SPECIAL_TOKENS
            .iter()
            .enumerate()
            .map(|(id, content)| AddedToken {
                id,
                content,
                single_word: false,
                lstrip: false,
                rstrip: false,
                normalized: false,
                special: true,
            })
            .collect(),
        normalizer: None,
        pre_tokenizer: byte_level(false, true),
        post_processor: byte_level(true, false),
        decoder: byte_level(true, true),
        model: Bpe {
            kind: "BPE",
            dropout: None,
            unk_token: None,
            continuing_subword_prefix: None,
            end_of_word_suffix: None,
            fuse_unk: false,
            byte_fallback: false,
            ignore_merges: false,
            vocab: Vocab(&vocab),
            merges: &merges,
        },
    };
    serde_json::to_string(&json).ok()
}
