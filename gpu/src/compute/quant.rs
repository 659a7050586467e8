//! The storage formats a weight matrix may have (GGUF's tensor types): how many weights a
//! block holds and how many bytes it takes. Their dequantization rules (rule 9 of the spec in
//! `compute/mod.rs`) live with the kernels; this table is what a file reader needs to size
//! and check a tensor before reading a byte of it.

use super::ComputeError;

/// A tensor type: f32, a 16-bit float, or a block quantization. A row of `cols` weights is
/// `cols / block_elems()` blocks, stored one after another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(non_camel_case_types)] // GGUF's own names, which users see in `olc model show`
pub enum QuantType {
    F32,
    F16,
    BF16,
    /// 32 weights: an f16 scale `d`, 32 signed bytes.
    Q8_0,
    /// 32 weights: an f16 scale `d`, 16 bytes of 4-bit values (offset 8).
    Q4_0,
    /// 32 weights: f16 scale `d` and minimum `m`, 16 bytes of 4-bit values.
    Q4_1,
    /// 256 weights in 8 sub-blocks of 32: f16 `d` and `dmin`, 12 bytes of 6-bit sub-block
    /// scales and minimums, 128 bytes of 4-bit values.
    Q4_K,
    /// 256 weights in 16 sub-blocks of 16: 128 bytes of low nibbles, 64 bytes of high 2-bit
    /// pairs, 16 signed 8-bit sub-block scales, an f16 `d`.
    Q6_K,
}

impl QuantType {
    pub const ALL: [QuantType; 8] = [
        QuantType::F32,
        QuantType::F16,
        QuantType::BF16,
        QuantType::Q8_0,
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q4_K,
        QuantType::Q6_K,
    ];

    /// The type from its number in GGUF's tensor infos (ggml's `enum ggml_type`).
    pub fn from_ggml(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.ggml_id() == id)
    }

    /// Its number in ggml's `enum ggml_type`.
    pub fn ggml_id(self) -> u32 {
        match self {
            QuantType::F32 => 0,
            QuantType::F16 => 1,
            QuantType::Q4_0 => 2,
            QuantType::Q4_1 => 3,
            QuantType::Q8_0 => 8,
            QuantType::Q4_K => 12,
            QuantType::Q6_K => 14,
            QuantType::BF16 => 30,
        }
    }

    /// GGUF's name for it (`Q4_K`), as `olc model show` prints it.
    pub fn name(self) -> &'static str {
        match self {
            QuantType::F32 => "F32",
            QuantType::F16 => "F16",
            QuantType::BF16 => "BF16",
            QuantType::Q8_0 => "Q8_0",
            QuantType::Q4_0 => "Q4_0",
            QuantType::Q4_1 => "Q4_1",
            QuantType::Q4_K => "Q4_K",
            QuantType::Q6_K => "Q6_K",
        }
    }

    /// The type named `name` (as [`QuantType::name`] spells it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Weights per block.
    pub fn block_elems(self) -> usize {
        match self {
            QuantType::F32 | QuantType::F16 | QuantType::BF16 => 1,
            QuantType::Q8_0 | QuantType::Q4_0 | QuantType::Q4_1 => 32,
            QuantType::Q4_K | QuantType::Q6_K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            QuantType::F32 => 4,
            QuantType::F16 | QuantType::BF16 => 2,
            QuantType::Q8_0 => 34,
            QuantType::Q4_0 => 18,
            QuantType::Q4_1 => 20,
            QuantType::Q4_K => 144,
            QuantType::Q6_K => 210,
        }
    }

    /// Whether the values are stored as blocks with scales (not plain floats).
    pub fn is_block_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// Bytes of one row of `cols` weights; `cols` must be a whole number of blocks.
    pub fn row_bytes(self, cols: usize) -> Result<usize, ComputeError> {
        if !cols.is_multiple_of(self.block_elems()) {
            return Err(ComputeError::Invalid {
                op: "quantized row",
                reason: "the row length is not a whole number of blocks of its type",
            });
        }
        (cols / self.block_elems())
            .checked_mul(self.block_bytes())
            .ok_or(ComputeError::Overflow {
                op: "quantized row",
            })
    }

    /// Bytes of a `[rows, cols]` matrix.
    pub fn matrix_bytes(self, rows: usize, cols: usize) -> Result<usize, ComputeError> {
        rows.checked_mul(self.row_bytes(cols)?)
            .ok_or(ComputeError::Overflow {
                op: "quantized matrix",
            })
    }
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_round_trip() {
        for t in QuantType::ALL {
            assert_eq!(QuantType::from_ggml(t.ggml_id()), Some(t));
            assert_eq!(QuantType::from_name(t.name()), Some(t));
        }
        assert_eq!(QuantType::from_ggml(6), None, "Q5_0 is not supported");
    }

    #[test]
    fn sizes_follow_ggml() {
        assert_eq!(QuantType::Q4_1.row_bytes(576), Ok(18 * 20));
        assert_eq!(QuantType::Q6_K.row_bytes(512), Ok(420));
        assert!(QuantType::Q4_K.row_bytes(576).is_err(), "576 is not 256-aligned");
        assert!(QuantType::F16.matrix_bytes(usize::MAX, 2).is_err());
    }
}
