//! The storage formats a weight matrix may have (GGUF's tensor types): how many weights a
//! block holds and how many bytes it takes, which is what a file reader needs to size and
//! check a tensor before reading a byte of it, and [`dequantize_row`], rule 9 of the spec in
//! `compute/mod.rs` written out as plain Rust. The SIMD kernels (`cpu/quant/`) must equal
//! these functions bit for bit; they are the reference every test compares with.

use half::f16;

use super::{ComputeError, check_len};

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

    /// Where a block keeps its f16 scales and minimums (byte offsets), for the block types.
    fn scale_offsets(self) -> &'static [usize] {
        match self {
            QuantType::F32 | QuantType::F16 | QuantType::BF16 => &[],
            QuantType::Q8_0 | QuantType::Q4_0 => &[0],
            QuantType::Q4_1 | QuantType::Q4_K => &[0, 2],
            QuantType::Q6_K => &[208],
        }
    }

    /// The first block of `bytes` (whole blocks of this block type) whose f16 scale or
    /// minimum is NaN or infinite, with that value. Finite scales make every weight of rule
    /// 9 finite (the largest is far below f32's range), so this is the whole check a loader
    /// needs to refuse non-finite weights, at a few bytes per block.
    pub fn first_non_finite_scale(self, bytes: &[u8]) -> Option<(usize, f32)> {
        let offsets = self.scale_offsets();
        bytes
            .chunks_exact(self.block_bytes())
            .enumerate()
            .find_map(|(i, block)| {
                offsets.iter().find_map(|&o| {
                    let v = f16_le([block[o], block[o + 1]]);
                    (!v.is_finite()).then_some((i, v))
                })
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

/// Rule 9: the f32 values of one row of `out.len()` weights stored as `bytes` in `ty`.
///
/// Refuses (never panics on) a row length that is not a whole number of blocks and a byte
/// count other than `ty.row_bytes(out.len())`.
pub fn dequantize_row(ty: QuantType, bytes: &[u8], out: &mut [f32]) -> Result<(), ComputeError> {
    const OP: &str = "dequantize row";
    check_len(OP, "bytes", ty.row_bytes(out.len())?, bytes.len())?;
    match ty {
        QuantType::F32 => {
            let (words, _) = bytes.as_chunks::<4>();
            for (o, b) in out.iter_mut().zip(words) {
                *o = f32::from_le_bytes(*b);
            }
        }
        QuantType::F16 => {
            let (halves, _) = bytes.as_chunks::<2>();
            for (o, b) in out.iter_mut().zip(halves) {
                *o = f16_le(*b);
            }
        }
        QuantType::BF16 => {
            let (halves, _) = bytes.as_chunks::<2>();
            for (o, b) in out.iter_mut().zip(halves) {
                *o = f32::from_bits(u32::from(u16::from_le_bytes(*b)) << 16);
            }
        }
        QuantType::Q8_0 => blocks::<34, 32>(bytes, out, q8_0_block),
        QuantType::Q4_0 => blocks::<18, 32>(bytes, out, q4_0_block),
        QuantType::Q4_1 => blocks::<20, 32>(bytes, out, q4_1_block),
        QuantType::Q4_K => blocks::<144, 256>(bytes, out, q4_k_block),
        QuantType::Q6_K => blocks::<210, 256>(bytes, out, q6_k_block),
    }
    Ok(())
}

/// Applies `f` to each `B`-byte block and its `E` outputs (lengths already checked).
fn blocks<const B: usize, const E: usize>(
    bytes: &[u8],
    out: &mut [f32],
    f: fn(&[u8; B], &mut [f32; E]),
) {
    let (ins, _) = bytes.as_chunks::<B>();
    let (outs, _) = out.as_chunks_mut::<E>();
    for (b, o) in ins.iter().zip(outs) {
        f(b, o);
    }
}

/// A little-endian IEEE half widened to f32 (exact: every f16, subnormals included, is an
/// f32; the NaN payload is outside the contract).
#[inline]
pub(crate) fn f16_le(b: [u8; 2]) -> f32 {
    f16::from_bits(u16::from_le_bytes(b)).to_f32()
}

/// The 4-bit value of weight `j` (0..32) of a 32-weight block's 16 packed bytes: weights
/// 0..16 are the low nibbles, 16..32 the high nibbles of the same bytes.
#[inline]
fn nibble(qs: &[u8], j: usize) -> u8 {
    (qs[j % 16] >> (4 * (j / 16))) & 0x0F
}

/// Q8_0: `q * d`.
pub(crate) fn q8_0_block(b: &[u8; 34], out: &mut [f32; 32]) {
    let d = f16_le([b[0], b[1]]);
    for (o, &q) in out.iter_mut().zip(&b[2..]) {
        *o = f32::from(q as i8) * d;
    }
}

/// Q4_0: `d * (q - 8)` (the subtraction is exact, in integers).
pub(crate) fn q4_0_block(b: &[u8; 18], out: &mut [f32; 32]) {
    let d = f16_le([b[0], b[1]]);
    for (j, o) in out.iter_mut().enumerate() {
        *o = d * f32::from(nibble(&b[2..], j) as i8 - 8);
    }
}

/// Q4_1: `(d * q) + m`, two roundings.
pub(crate) fn q4_1_block(b: &[u8; 20], out: &mut [f32; 32]) {
    let (d, m) = (f16_le([b[0], b[1]]), f16_le([b[2], b[3]]));
    for (j, o) in out.iter_mut().enumerate() {
        *o = d * f32::from(nibble(&b[4..], j)) + m;
    }
}

/// Q4_K's 6-bit scale and minimum of sub-block `j` (0..8) from its 12 packed bytes.
#[inline]
pub(crate) fn q4_k_scale_min(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 0x3F, s[j + 4] & 0x3F)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q4_K's per-sub-block factors `d * sc` and `dmin * m`, each one rounded product.
#[inline]
pub(crate) fn q4_k_factors(b: &[u8; 144]) -> ([f32; 8], [f32; 8]) {
    let (d, dmin) = (f16_le([b[0], b[1]]), f16_le([b[2], b[3]]));
    let mut ds = [0.0f32; 8];
    let mut dm = [0.0f32; 8];
    for j in 0..8 {
        let (sc, m) = q4_k_scale_min(&b[4..16], j);
        ds[j] = d * f32::from(sc);
        dm[j] = dmin * f32::from(m);
    }
    (ds, dm)
}

/// Q4_K: weight `e` of sub-block `s` is `(d * sc[s]) * q - (dmin * m[s])`, where `q` is
/// nibble `s % 2` of byte `32 * (s / 2) + e` of the 128 value bytes.
pub(crate) fn q4_k_block(b: &[u8; 144], out: &mut [f32; 256]) {
    let (ds, dm) = q4_k_factors(b);
    let qs = &b[16..];
    for (i, o) in out.iter_mut().enumerate() {
        let (s, e) = (i / 32, i % 32);
        let q = (qs[32 * (s / 2) + e] >> (4 * (s % 2))) & 0x0F;
        *o = ds[s] * f32::from(q) - dm[s];
    }
}

/// Q6_K's per-sub-block factors `d * scale` (one rounded product each).
#[inline]
pub(crate) fn q6_k_factors(b: &[u8; 210]) -> [f32; 16] {
    let d = f16_le([b[208], b[209]]);
    std::array::from_fn(|j| d * f32::from(b[192 + j] as i8))
}

/// Q6_K: weight `i` is `(d * scale[i / 16]) * (q - 32)`, `q` being 4 low bits from the
/// first 128 bytes and 2 high bits from the next 64 (ggml's interleaving, below).
pub(crate) fn q6_k_block(b: &[u8; 210], out: &mut [f32; 256]) {
    let ds = q6_k_factors(b);
    for (i, o) in out.iter_mut().enumerate() {
        let (a, r) = (i / 128, i % 128);
        let lo = (b[64 * a + r % 64] >> (4 * (r / 64))) & 0x0F;
        let hi = (b[128 + 32 * a + r % 32] >> (2 * (r / 32))) & 0x03;
        let q = (lo | (hi << 4)) as i8 - 32;
        *o = ds[i / 16] * f32::from(q);
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
        assert!(
            QuantType::Q4_K.row_bytes(576).is_err(),
            "576 is not 256-aligned"
        );
        assert!(QuantType::F16.matrix_bytes(usize::MAX, 2).is_err());
    }
}
