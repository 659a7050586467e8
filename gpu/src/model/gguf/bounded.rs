//! The bounded reader under the GGUF header parser.

use std::io::Read;
use std::path::Path;

use super::reader::MAX_HEADER;
use crate::model::error::{ModelError, Result};

/// A reader that knows how many bytes the file has left, so that every length read from it
/// can be checked before it is used to allocate.
pub(super) struct Bounded<'p, R> {
    pub(super) inner: R,
    /// Bytes consumed so far: the offset of the next field.
    pub(super) pos: u64,
    /// The file's length.
    pub(super) len: u64,
    pub(super) path: &'p Path,
}

impl<R: Read> Bounded<'_, R> {
    pub(super) fn error(&self, reason: impl Into<String>) -> ModelError {
        ModelError::gguf(self.path, reason)
    }

    /// Bytes left for the header: the rest of the file, capped by [`MAX_HEADER`].
    pub(super) fn remaining(&self) -> u64 {
        self.len.min(MAX_HEADER).saturating_sub(self.pos)
    }

    pub(super) fn check_count(&self, count: u64, min_each: u64, what: &str) -> Result<()> {
        if count
            .checked_mul(min_each)
            .is_none_or(|n| n > self.remaining())
        {
            return Err(self.error(format!(
                "{count} {what} cannot fit in the {} bytes that remain",
                self.remaining()
            )));
        }
        Ok(())
    }

    pub(super) fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>> {
        if n > self.remaining() {
            let reason = if self.pos.saturating_add(n) > self.len {
                format!(
                    "{what} needs {n} bytes at offset {}, past the end of the {}-byte file",
                    self.pos, self.len
                )
            } else {
                format!("{what} would make the header longer than {MAX_HEADER} bytes")
            };
            return Err(self.error(reason));
        }
        // `n <= remaining <= MAX_HEADER`.
        let mut buf = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| self.error(format!("reading {what}: {e}")))?;
        self.pos += n;
        Ok(buf)
    }

    /// `count` little-endian values of `N` bytes each.
    pub(super) fn array<const N: usize>(
        &mut self,
        count: usize,
        what: &str,
    ) -> Result<Vec<[u8; N]>> {
        let total = (count as u64)
            .checked_mul(N as u64)
            .ok_or_else(|| self.error(format!("{what} overflow")))?;
        let bytes = self.bytes(total, what)?;
        Ok(bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                a
            })
            .collect())
    }

    pub(super) fn fixed<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let bytes = self.bytes(N as u64, what)?;
        bytes
            .try_into()
            .map_err(|_| self.error(format!("short read of {what}")))
    }

    pub(super) fn u32(&mut self, what: &str) -> Result<u32> {
        self.fixed(what).map(u32::from_le_bytes)
    }

    pub(super) fn u64(&mut self, what: &str) -> Result<u64> {
        self.fixed(what).map(u64::from_le_bytes)
    }

    pub(super) fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(&format!("the length of {what}"))?;
        if len > self.remaining() {
            return Err(self.error(format!(
                "{what} claims {len} bytes but only {} remain",
                self.remaining()
            )));
        }
        let bytes = self.bytes(len, what)?;
        String::from_utf8(bytes).map_err(|e| self.error(format!("{what} is not UTF-8: {e}")))
    }
}
