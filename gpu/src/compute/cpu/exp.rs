//! Rule 3 of the spec: the project's own exp, identical on every backend.
//!
//! Platform exp functions differ in their last bit between libms and GPUs, which would
//! break hash comparison of softmax and SiLU outputs; this one uses only IEEE operations
//! (mul, fma, exact rounding to integer, exponent-bit scaling), so it can be reproduced
//! exactly anywhere.

use super::ComputeError;
use super::Isa;
use super::isa::Checked;

/// log2(e) rounded to f32.
pub const LOG2E: f32 = f32::from_bits(0x3fb8_aa3b);
/// High part of ln 2 (0.693145751953125) with trailing zero bits, so `n * LN2_HI` is exact.
pub const LN2_HI: f32 = f32::from_bits(0x3f31_7200);
/// ln 2 - LN2_HI rounded to f32 (≈ 1.4286068e-6).
pub const LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
/// Coefficients of e^r on |r| ≤ ln2/2, highest degree first (C7 … C0), evaluated by Horner
/// with fma: minimax C7..C3 (the values of SLEEF's expf), then exactly 0.5, 1, 1. Given as
/// bits so that other backends cannot pick a different rounding of a decimal literal.
pub const EXP_POLY: [f32; 8] = [
    f32::from_bits(0x3950_2bda), // ≈ 1.9852762e-4
    f32::from_bits(0x3ab6_96c9), // ≈ 1.3930436e-3
    f32::from_bits(0x3c08_88a6), // ≈ 8.3333608e-3
    f32::from_bits(0x3d2a_aa7a), // ≈ 4.1666485e-2
    f32::from_bits(0x3e2a_aaab), // ≈ 1.6666667e-1
    0.5,
    1.0,
    1.0,
];
/// Above this (0x42b17217 ≈ 88.72283), the true exp overflows f32.
const OVERFLOW: f32 = f32::from_bits(0x42b1_7217);
/// Below this, the true exp is under 2^-150 and rounds to zero.
const UNDERFLOW: f32 = -104.0;

/// The canonical exp; every SIMD version returns these exact bits.
pub fn exp(x: f32) -> f32 {
    if x.is_nan() {
        return f32::NAN;
    }
    if x > OVERFLOW {
        return f32::INFINITY;
    }
    if x < UNDERFLOW {
        return 0.0;
    }
    let n = (x * LOG2E).round_ties_even();
    let r = (-n).mul_add(LN2_HI, x);
    let r = (-n).mul_add(LN2_LO, r);
    let mut p = EXP_POLY[0];
    for c in &EXP_POLY[1..] {
        p = p.mul_add(r, *c);
    }
    // n is an integer in [-150, 128] here, so the conversion is exact.
    let ni = n as i32;
    let n1 = ni >> 1;
    let n2 = ni - n1;
    (p * pow2(n1)) * pow2(n2)
}

/// 2^k for k in [-126, 127], from the exponent bits.
#[inline]
fn pow2(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

/// `x[i] = exp(x[i])` for every element.
pub fn exp_inplace(isa: Isa, x: &mut [f32]) -> Result<(), ComputeError> {
    exp_inplace_checked(isa.checked()?, x);
    Ok(())
}

pub(crate) fn exp_inplace_checked(isa: Checked, x: &mut [f32]) {
    match isa.isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Checked` exists only for ISAs detected on this CPU.
        Isa::Avx512 => unsafe { x86::exp_slice_avx512(x) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::exp_slice_avx2(x) },
        _ => x.iter_mut().for_each(|v| *v = exp(*v)),
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    use super::{EXP_POLY, LN2_HI, LN2_LO, LOG2E, OVERFLOW, UNDERFLOW, exp};

    /// Round to nearest even without raising exceptions (`_MM_FROUND_TO_NEAREST_INT |
    /// _MM_FROUND_NO_EXC`).
    const ROUND_NEAREST: i32 = 0x08;

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(crate) fn exp512(x: __m512) -> __m512 {
        // Clamping keeps the integer steps of out-of-range lanes harmless; those lanes are
        // overwritten below, in-range lanes are unchanged by it.
        let xc = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(UNDERFLOW)),
            _mm512_set1_ps(OVERFLOW),
        );
        let n = _mm512_roundscale_ps::<ROUND_NEAREST>(_mm512_mul_ps(xc, _mm512_set1_ps(LOG2E)));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), xc);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
        }
        let ni = _mm512_cvtps_epi32(n);
        let n1 = _mm512_srai_epi32::<1>(ni);
        let n2 = _mm512_sub_epi32(ni, n1);
        let bias = _mm512_set1_epi32(127);
        let s1 = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n1, bias)));
        let s2 = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n2, bias)));
        let y = _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
        let over = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_set1_ps(OVERFLOW));
        let under = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(UNDERFLOW));
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        let y = _mm512_mask_blend_ps(over, y, _mm512_set1_ps(f32::INFINITY));
        let y = _mm512_mask_blend_ps(under, y, _mm512_setzero_ps());
        _mm512_mask_blend_ps(nan, y, _mm512_set1_ps(f32::NAN))
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn exp256(x: __m256) -> __m256 {
        // See exp512 for the clamp.
        let xc = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(UNDERFLOW)),
            _mm256_set1_ps(OVERFLOW),
        );
        let n = _mm256_round_ps::<ROUND_NEAREST>(_mm256_mul_ps(xc, _mm256_set1_ps(LOG2E)));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), xc);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        let ni = _mm256_cvtps_epi32(n);
        let n1 = _mm256_srai_epi32::<1>(ni);
        let n2 = _mm256_sub_epi32(ni, n1);
        let bias = _mm256_set1_epi32(127);
        let s1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n1, bias)));
        let s2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n2, bias)));
        let y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
        let over = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(OVERFLOW));
        let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(UNDERFLOW));
        let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
        let y = _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), over);
        let y = _mm256_blendv_ps(y, _mm256_setzero_ps(), under);
        _mm256_blendv_ps(y, _mm256_set1_ps(f32::NAN), nan)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(crate) fn exp_slice_avx512(x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(16);
        for c in &mut chunks {
            // SAFETY: the chunk has exactly 16 elements.
            unsafe { _mm512_storeu_ps(c.as_mut_ptr(), exp512(_mm512_loadu_ps(c.as_ptr()))) };
        }
        // The scalar exp is the spec, so the tail gives the same bits.
        for v in chunks.into_remainder() {
            *v = exp(*v);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn exp_slice_avx2(x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: the chunk has exactly 8 elements.
            unsafe { _mm256_storeu_ps(c.as_mut_ptr(), exp256(_mm256_loadu_ps(c.as_ptr()))) };
        }
        for v in chunks.into_remainder() {
            *v = exp(*v);
        }
    }
}
