//! Rule 9 in registers for the 256-weight "K" formats (Q4_K, Q6_K): the block's sub-block
//! factors come once per block from the portable spec functions, then each 32-weight group
//! is unpacked and scaled with the same rounded operations as `quant::dequantize_row`.

use std::arch::x86_64::*;

use super::format::{Format, iota16, lookup16, u8x16_256, u8x16_512};
use crate::compute::quant::{q4_k_factors, q6_k_factors};

/// 16 bytes at `p`, shifted right by `shift` bits within each byte and masked by `mask`.
///
/// # Safety
/// `p .. p + 16` is readable.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn bits(p: *const u8, shift: i32, mask: i8) -> __m128i {
    // SAFETY: the caller guarantees 16 readable bytes; the load is unaligned.
    let v = unsafe { _mm_loadu_si128(p.cast()) };
    // A 16-bit shift moves bits across the byte boundary, but only into the bits the mask
    // then clears.
    _mm_and_si128(
        _mm_srl_epi16(v, _mm_cvtsi32_si128(shift)),
        _mm_set1_epi8(mask),
    )
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Q4K;

impl Q4K {
    /// The 4-bit values of sub-block `g` (weights 0-15, 16-31).
    ///
    /// # Safety
    /// `b` points at a whole block and `g < 8`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn q(b: *const u8, g: usize) -> [__m128i; 2] {
        let shift = 4 * (g % 2) as i32;
        // SAFETY: bytes 16 + 32 (g / 2) .. + 32 lie inside the 144-byte block for g < 8.
        unsafe {
            let p = b.add(16 + 32 * (g / 2));
            [bits(p, shift, 0x0F), bits(p.add(16), shift, 0x0F)]
        }
    }
}

impl Format for Q4K {
    const BYTES: usize = 144;
    const GROUPS: usize = 8;
    type S512 = ([f32; 8], [f32; 8]);
    type S256 = ([f32; 8], [f32; 8]);

    #[inline(always)]
    unsafe fn scales512(b: *const u8) -> Self::S512 {
        // SAFETY: the caller guarantees a whole readable block; u8 has alignment 1.
        q4_k_factors(unsafe { &*b.cast::<[u8; 144]>() })
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn group512(b: *const u8, s: &Self::S512, g: usize) -> [__m512; 2] {
        // The 16 possible weights `(ds * q) - dm` of sub-block g, then one lookup each.
        let (ds, dm) = (_mm512_set1_ps(s.0[g]), _mm512_set1_ps(s.1[g]));
        let table = _mm512_sub_ps(_mm512_mul_ps(ds, iota16()), dm);
        let shift = 4 * (g % 2) as u32;
        // SAFETY: bytes 16 + 32 (g / 2) .. + 32 lie inside the 144-byte block for g < 8.
        unsafe {
            let p = b.add(16 + 32 * (g / 2));
            [lookup16(p, shift, table), lookup16(p.add(16), shift, table)]
        }
    }

    #[inline(always)]
    unsafe fn scales256(b: *const u8) -> Self::S256 {
        // SAFETY: as in `scales512`.
        unsafe { Self::scales512(b) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn group256(b: *const u8, s: &Self::S256, g: usize) -> [__m256; 4] {
        let (ds, dm) = (_mm256_set1_ps(s.0[g]), _mm256_set1_ps(s.1[g]));
        // SAFETY: as above.
        let [lo, hi] = unsafe { Self::q(b, g) };
        let ([q0, q1], [q2, q3]) = (u8x16_256(lo, 0), u8x16_256(hi, 0));
        [
            _mm256_sub_ps(_mm256_mul_ps(ds, q0), dm),
            _mm256_sub_ps(_mm256_mul_ps(ds, q1), dm),
            _mm256_sub_ps(_mm256_mul_ps(ds, q2), dm),
            _mm256_sub_ps(_mm256_mul_ps(ds, q3), dm),
        ]
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Q6K;

impl Q6K {
    /// The 6-bit values (0..64, before the offset) of weights `32 g .. 32 g + 16` and
    /// `32 g + 16 .. 32 g + 32`.
    ///
    /// # Safety
    /// `b` points at a whole block and `g < 8`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn q(b: *const u8, g: usize) -> [__m128i; 2] {
        let (a, t) = (g / 4, g % 4);
        let (lo_shift, hi_shift) = (4 * (t / 2) as i32, 2 * t as i32);
        // SAFETY: the low bits come from bytes 64a + 32(t % 2) .. + 32 < 128 and the high
        // bits from 128 + 32a .. + 32 <= 192, inside the 210-byte block for g < 8.
        unsafe {
            let ql = b.add(64 * a + 32 * (t % 2));
            let qh = b.add(128 + 32 * a);
            [
                _mm_or_si128(
                    bits(ql, lo_shift, 0x0F),
                    _mm_slli_epi16::<4>(bits(qh, hi_shift, 0x03)),
                ),
                _mm_or_si128(
                    bits(ql.add(16), lo_shift, 0x0F),
                    _mm_slli_epi16::<4>(bits(qh.add(16), hi_shift, 0x03)),
                ),
            ]
        }
    }
}

impl Format for Q6K {
    const BYTES: usize = 210;
    const GROUPS: usize = 8;
    type S512 = [f32; 16];
    type S256 = [f32; 16];

    #[inline(always)]
    unsafe fn scales512(b: *const u8) -> [f32; 16] {
        // SAFETY: the caller guarantees a whole readable block; u8 has alignment 1.
        q6_k_factors(unsafe { &*b.cast::<[u8; 210]>() })
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn group512(b: *const u8, s: &[f32; 16], g: usize) -> [__m512; 2] {
        // SAFETY: the caller's block and g < 8.
        let [lo, hi] = unsafe { Self::q(b, g) };
        [
            _mm512_mul_ps(_mm512_set1_ps(s[2 * g]), u8x16_512(lo, 32)),
            _mm512_mul_ps(_mm512_set1_ps(s[2 * g + 1]), u8x16_512(hi, 32)),
        ]
    }

    #[inline(always)]
    unsafe fn scales256(b: *const u8) -> [f32; 16] {
        // SAFETY: as in `scales512`.
        unsafe { Self::scales512(b) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn group256(b: *const u8, s: &[f32; 16], g: usize) -> [__m256; 4] {
        // SAFETY: as above.
        let [lo, hi] = unsafe { Self::q(b, g) };
        let ([q0, q1], [q2, q3]) = (u8x16_256(lo, 32), u8x16_256(hi, 32));
        let (d0, d1) = (_mm256_set1_ps(s[2 * g]), _mm256_set1_ps(s[2 * g + 1]));
        [
            _mm256_mul_ps(d0, q0),
            _mm256_mul_ps(d0, q1),
            _mm256_mul_ps(d1, q2),
            _mm256_mul_ps(d1, q3),
        ]
    }
}
