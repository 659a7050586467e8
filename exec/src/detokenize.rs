//! Text as tokens arrive. A token need not end on a character boundary (byte-level BPE
//! splits multi-byte characters), and a tokenizer's decoder may change earlier text
//! once it sees what follows (spaces, merges), so decoding token by token and joining
//! the pieces is wrong. This decodes a short window twice and emits only the text that
//! the newer tokens added, holding it back while it ends in an incomplete character: the
//! way serving stacks (TGI, vLLM) stream text.

use olc_gpu::model::tokenizer::Tokenizer;

/// Where the next piece of text starts.
#[derive(Debug, Default, Clone)]
pub struct Detokenizer {
    /// Start of the window that is decoded for context.
    prefix: usize,
    /// Tokens whose text has been emitted.
    read: usize,
    /// Bytes of text emitted.
    emitted: usize,
}

impl Detokenizer {
    /// The text that `tokens` (every token so far) adds to what was emitted before, if
    /// it completes any character.
    pub fn next_piece(&mut self, tokenizer: &Tokenizer, tokens: &[u32]) -> Option<String> {
        let window = tokens.get(self.prefix..)?;
        let seen = tokens.get(self.prefix..self.read)?;
        let before = tokenizer.decode(seen, true).ok()?;
        let now = tokenizer.decode(window, true).ok()?;
        if now.len() <= before.len() || now.ends_with('\u{FFFD}') {
            return None;
        }
        let piece = now.get(before.len()..)?.to_string();
        self.prefix = self.read;
        self.read = tokens.len();
        self.emitted += piece.len();
        Some(piece)
    }

    /// What of `text` (the decoded output) has not been emitted: the end it held back.
    pub fn rest<'t>(&self, text: &'t str) -> Option<&'t str> {
        text.get(self.emitted..).filter(|rest| !rest.is_empty())
    }
}
