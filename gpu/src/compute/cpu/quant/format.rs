//! Rule 9 in registers for the 32-weight block formats (Q8_0, Q4_0, Q4_1), and the
//! [`Format`] trait the tile kernels are generic over.
//!
//! A kernel asks a format for one 32-weight group at a time, as two zmm (lanes 0-15 of
//! weights 0-15 and of weights 16-31) or four ymm; each lane holds exactly the value
//! `quant::dequantize_row` gives that weight, computed by the same rounded operations (the
//! f16 and integer conversions to f32 are exact, and intrinsics are never contracted into
//! fmas). The hot code has no closures: `array::from_fn` and `map` closures were left as
//! out-of-line calls per block (with the f16 scale converted in software), which made the
//! first version of these kernels compute-bound at a third of memory bandwidth.
//!
//! The 4-bit formats look their weights up: a block (or sub-block) has only 16 distinct
//! weight values, so its formula is evaluated once per value into a 16-lane table and each
//! weight is one permute. Every table entry is computed by exactly the per-weight
//! operations, so a weight's bits are the same as evaluating the formula on it.

use std::arch::x86_64::*;

use crate::compute::quant::f16_le;

/// A block format as the kernels see it.
pub(super) trait Format {
    /// Bytes of one block.
    const BYTES: usize;
    /// 32-weight groups of one block.
    const GROUPS: usize;
    /// The block's scale factors as the AVX-512 groups use them.
    type S512: Copy;
    /// The same for AVX2.
    type S256: Copy;

    /// # Safety
    /// `b` points at `BYTES` readable bytes and the CPU has AVX-512F, AVX2 and FMA.
    unsafe fn scales512(b: *const u8) -> Self::S512;

    /// Whether the factors are just the f16 fields in the block's first 4 bytes (`d`, then
    /// `m` or a value byte): then a kernel widens them for many blocks at once, with one
    /// vector conversion, instead of one broadcast and conversion per block.
    const BATCHED: bool = false;

    /// [`Format::scales512`] from the block's first two halves, already widened.
    ///
    /// # Safety
    /// The CPU has AVX-512F, AVX2 and FMA; only formats with `BATCHED` are asked.
    unsafe fn from_halves512(_h: &[f32; 2]) -> Self::S512 {
        unreachable!("only batched formats are asked for their factors from halves")
    }

    /// Weights `32 g .. 32 g + 32` of the block at `b` (whose factors are `s`).
    ///
    /// # Safety
    /// As [`Format::scales512`], and `g < GROUPS`.
    unsafe fn group512(b: *const u8, s: &Self::S512, g: usize) -> [__m512; 2];

    /// # Safety
    /// `b` points at `BYTES` readable bytes and the CPU has AVX2 and FMA.
    unsafe fn scales256(b: *const u8) -> Self::S256;

    /// The same as four ymm (weights 0-7, 8-15, 16-23, 24-31 of the group).
    ///
    /// # Safety
    /// As [`Format::scales256`], and `g < GROUPS`.
    unsafe fn group256(b: *const u8, s: &Self::S256, g: usize) -> [__m256; 4];
}

/// The f16 at `b + at` widened, by the portable conversion (AVX2 does not imply F16C).
///
/// # Safety
/// `b + at .. b + at + 2` is readable.
#[inline(always)]
pub(super) unsafe fn f16_at(b: *const u8, at: usize) -> f32 {
    // SAFETY: the caller guarantees the two bytes are readable; u8 has alignment 1.
    let v = unsafe { [*b.add(at), *b.add(at + 1)] };
    f16_le(v)
}

/// The f16 at `b + at` widened (exactly, by the F16C conversion that AVX-512F implies) and
/// broadcast to 16 lanes.
///
/// # Safety
/// `b + at .. b + at + 2` is readable.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn f16_512(b: *const u8, at: usize) -> __m512 {
    // SAFETY: the caller guarantees the two bytes are readable; the read is unaligned.
    let bits = unsafe { b.add(at).cast::<i16>().read_unaligned() };
    _mm512_cvtph_ps(_mm256_set1_epi16(bits))
}

/// `[0.0, 1.0, ..., 15.0]`: every 4-bit value as f32.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) fn iota16() -> __m512 {
    _mm512_setr_ps(
        0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
    )
}

/// The 4-bit formats' trick: a group's weights take only 16 values, so the block's
/// formula is evaluated once for each (lane `q` of `table` holds the weight value of
/// `q`, by exactly the per-weight operations) and each weight is then one permute, whose
/// index is the low 4 bits of its 32-bit lane: the 16 value bytes at `p` widened give the
/// low nibbles, shifted right by 4 the high ones (`shift` is 0 or 4).
///
/// # Safety
/// `p .. p + 16` is readable.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn lookup16(p: *const u8, shift: u32, table: __m512) -> __m512 {
    // SAFETY: the caller guarantees 16 readable bytes; the load is unaligned.
    let idx = _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(p.cast()) });
    let idx = _mm512_srlv_epi32(idx, _mm512_set1_epi32(shift as i32));
    _mm512_permutexvar_ps(idx, table)
}

/// 16 unsigned bytes minus `off` as 16 exact f32.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) fn u8x16_512(v: __m128i, off: i32) -> __m512 {
    _mm512_cvtepi32_ps(_mm512_sub_epi32(
        _mm512_cvtepu8_epi32(v),
        _mm512_set1_epi32(off),
    ))
}

/// The low and high 8 of 16 unsigned bytes, minus `off`, as exact f32.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn u8x16_256(v: __m128i, off: i32) -> [__m256; 2] {
    let o = _mm256_set1_epi32(off);
    let lo = _mm256_sub_epi32(_mm256_cvtepu8_epi32(v), o);
    let hi = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(v, v)), o);
    [_mm256_cvtepi32_ps(lo), _mm256_cvtepi32_ps(hi)]
}

/// Low nibbles (weights 0-15) and high nibbles (16-31) of the 16 bytes at `p`.
///
/// # Safety
/// `p .. p + 16` is readable.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn nibbles(p: *const u8) -> [__m128i; 2] {
    // SAFETY: the caller guarantees 16 readable bytes; the load is unaligned.
    let v = unsafe { _mm_loadu_si128(p.cast()) };
    let m = _mm_set1_epi8(0x0F);
    [
        _mm_and_si128(v, m),
        _mm_and_si128(_mm_srli_epi16::<4>(v), m),
    ]
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Q8_0;

impl Format for Q8_0 {
    const BYTES: usize = 34;
    const GROUPS: usize = 1;
    type S512 = __m512;
    type S256 = f32;
    const BATCHED: bool = true;

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn scales512(b: *const u8) -> __m512 {
        // SAFETY: the block's first two bytes are its f16 `d`.
        unsafe { f16_512(b, 0) }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn from_halves512(h: &[f32; 2]) -> __m512 {
        _mm512_set1_ps(h[0])
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn group512(b: *const u8, d: &__m512, _g: usize) -> [__m512; 2] {
        // SAFETY: bytes 2..34 of the block are its 32 signed values.
        let (lo, hi) = unsafe {
            (
                _mm_loadu_si128(b.add(2).cast()),
                _mm_loadu_si128(b.add(18).cast()),
            )
        };
        [
            _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo)), *d),
            _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi)), *d),
        ]
    }

    #[inline(always)]
    unsafe fn scales256(b: *const u8) -> f32 {
        // SAFETY: the block's first two bytes are its f16 `d`.
        unsafe { f16_at(b, 0) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn group256(b: *const u8, d: &f32, _g: usize) -> [__m256; 4] {
        let d = _mm256_set1_ps(*d);
        let mut out = [_mm256_setzero_ps(); 4];
        for (t, o) in out.iter_mut().enumerate() {
            // SAFETY: bytes 2 + 8t .. 10 + 8t lie inside the 34-byte block.
            let v = unsafe { _mm_loadl_epi64(b.add(2 + 8 * t).cast()) };
            *o = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), d);
        }
        out
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Q4_0;

impl Format for Q4_0 {
    const BYTES: usize = 18;
    const GROUPS: usize = 1;
    type S512 = __m512;
    type S256 = f32;

    const BATCHED: bool = true;

    /// The 16 possible weights `d * (q - 8)`.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn scales512(b: *const u8) -> __m512 {
        // SAFETY: the block's first two bytes are its f16 `d`.
        let d = unsafe { f16_512(b, 0) };
        _mm512_mul_ps(d, _mm512_sub_ps(iota16(), _mm512_set1_ps(8.0)))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn from_halves512(h: &[f32; 2]) -> __m512 {
        _mm512_mul_ps(
            _mm512_set1_ps(h[0]),
            _mm512_sub_ps(iota16(), _mm512_set1_ps(8.0)),
        )
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn group512(b: *const u8, table: &__m512, _g: usize) -> [__m512; 2] {
        // SAFETY: bytes 2..18 of the block are its packed nibbles.
        unsafe { [lookup16(b.add(2), 0, *table), lookup16(b.add(2), 4, *table)] }
    }

    #[inline(always)]
    unsafe fn scales256(b: *const u8) -> f32 {
        // SAFETY: the block's first two bytes are its f16 `d`.
        unsafe { f16_at(b, 0) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn group256(b: *const u8, d: &f32, _g: usize) -> [__m256; 4] {
        let d = _mm256_set1_ps(*d);
        // SAFETY: as above.
        let [lo, hi] = unsafe { nibbles(b.add(2)) };
        let ([q0, q1], [q2, q3]) = (u8x16_256(lo, 8), u8x16_256(hi, 8));
        [
            _mm256_mul_ps(d, q0),
            _mm256_mul_ps(d, q1),
            _mm256_mul_ps(d, q2),
            _mm256_mul_ps(d, q3),
        ]
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Q4_1;

impl Format for Q4_1 {
    const BYTES: usize = 20;
    const GROUPS: usize = 1;
    type S512 = __m512;
    type S256 = [f32; 2];

    const BATCHED: bool = true;

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn from_halves512(h: &[f32; 2]) -> __m512 {
        _mm512_add_ps(
            _mm512_mul_ps(_mm512_set1_ps(h[0]), iota16()),
            _mm512_set1_ps(h[1]),
        )
    }

    /// The 16 possible weights `(d * q) + m`.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn scales512(b: *const u8) -> __m512 {
        // SAFETY: bytes 0..4 of the block are its f16 `d` and `m`; one broadcast load of
        // both, widened to [d, m, d, m, ...], then each spread to every lane.
        let dm = unsafe { b.cast::<i32>().read_unaligned() };
        let dm = _mm512_cvtph_ps(_mm256_set1_epi32(dm));
        let (d, m) = (_mm512_moveldup_ps(dm), _mm512_movehdup_ps(dm));
        _mm512_add_ps(_mm512_mul_ps(d, iota16()), m)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn group512(b: *const u8, table: &__m512, _g: usize) -> [__m512; 2] {
        // SAFETY: bytes 4..20 of the block are its packed nibbles.
        unsafe { [lookup16(b.add(4), 0, *table), lookup16(b.add(4), 4, *table)] }
    }

    #[inline(always)]
    unsafe fn scales256(b: *const u8) -> [f32; 2] {
        // SAFETY: bytes 0..2 and 2..4 of the block are its f16 `d` and `m`.
        unsafe { [f16_at(b, 0), f16_at(b, 2)] }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn group256(b: *const u8, s: &[f32; 2], _g: usize) -> [__m256; 4] {
        let (d, m) = (_mm256_set1_ps(s[0]), _mm256_set1_ps(s[1]));
        // SAFETY: as above.
        let [lo, hi] = unsafe { nibbles(b.add(4)) };
        let ([q0, q1], [q2, q3]) = (u8x16_256(lo, 0), u8x16_256(hi, 0));
        [
            _mm256_add_ps(_mm256_mul_ps(d, q0), m),
            _mm256_add_ps(_mm256_mul_ps(d, q1), m),
            _mm256_add_ps(_mm256_mul_ps(d, q2), m),
            _mm256_add_ps(_mm256_mul_ps(d, q3), m),
        ]
    }
}
