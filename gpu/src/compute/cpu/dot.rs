//! Rule 1 of the spec: 16-lane dot products and sums with the fixed halving tree.

use super::isa::Checked;
use super::{ComputeError, Isa, LANES, check_len};

/// `dot(a, b)` by the 16-lane rule; `a` and `b` must have the same length.
pub fn dot(isa: Isa, a: &[f32], b: &[f32]) -> Result<f32, ComputeError> {
    check_len("dot", "b", a.len(), b.len())?;
    Ok(dot_checked(isa.checked()?, a, b))
}

/// `sum(x)` by the 16-lane rule (plain adds instead of fma).
pub fn sum(isa: Isa, x: &[f32]) -> Result<f32, ComputeError> {
    Ok(sum_checked(isa.checked()?, x))
}

/// Callers guarantee `a.len() == b.len()`; with unequal lengths only the common prefix
/// would be used, which is safe but not what the spec means.
pub(crate) fn dot_checked(isa: Checked, a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    match isa.isa() {
        Isa::Portable => dot_portable(a, b),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Checked` exists only for ISAs detected on this CPU.
        Isa::Avx2 => unsafe { x86::dot_avx2(a, b) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx512 => unsafe { x86::dot_avx512(a, b) },
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx2 | Isa::Avx512 => dot_portable(a, b),
    }
}

pub(crate) fn sum_checked(isa: Checked, x: &[f32]) -> f32 {
    match isa.isa() {
        Isa::Portable => sum_portable(x),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Checked` exists only for ISAs detected on this CPU.
        Isa::Avx2 => unsafe { x86::sum_avx2(x) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx512 => unsafe { x86::sum_avx512(x) },
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx2 | Isa::Avx512 => sum_portable(x),
    }
}

/// The halving tree that combines the 16 lanes.
#[inline]
pub(crate) fn tree16(l: &[f32; LANES]) -> f32 {
    let s8: [f32; 8] = std::array::from_fn(|j| l[j] + l[j + 8]);
    let s4: [f32; 4] = std::array::from_fn(|j| s8[j] + s8[j + 4]);
    let s2 = [s4[0] + s4[2], s4[1] + s4[3]];
    s2[0] + s2[1]
}

pub(crate) fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut l = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for t in 0..LANES {
            l[t] = xa[t].mul_add(xb[t], l[t]);
        }
    }
    for (t, (x, y)) in ra.iter().zip(rb).enumerate() {
        l[t] = x.mul_add(*y, l[t]);
    }
    tree16(&l)
}

pub(crate) fn sum_portable(x: &[f32]) -> f32 {
    let mut l = [0.0f32; LANES];
    let c = x.chunks_exact(LANES);
    let r = c.remainder();
    for xs in c {
        for t in 0..LANES {
            l[t] += xs[t];
        }
    }
    for (t, v) in r.iter().enumerate() {
        l[t] += *v;
    }
    tree16(&l)
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// Mask of the first `n` of 16 lanes (`n <= 16`).
    #[inline]
    pub(crate) fn mask16(n: usize) -> __mmask16 {
        ((1u32 << n.min(16)) - 1) as __mmask16
    }

    /// Mask of the first `n` of 8 lanes (`n <= 8`), in the AVX2 maskload format.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn mask8(n: usize) -> __m256i {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n.min(8) as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }

    /// The halving tree from `s8` (lanes j and j+8 already added).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn tree_from_s8(s8: __m256) -> f32 {
        let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
        // movehl puts s4[2], s4[3] in lanes 0, 1: s2[j] = s4[j] + s4[j+2].
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps::<1>(s2, s2)))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(crate) fn tree512(v: __m512) -> f32 {
        let lo = _mm512_castps512_ps256(v);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        tree_from_s8(_mm256_add_ps(lo, hi))
    }

    /// The halving tree for 16 accumulators at once, so that each shuffle serves several
    /// outputs. Every add combines exactly the two values the spec's tree combines; only
    /// their placement in registers differs. Output `o` ends up in lane `4*(o%4) + o/4`.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(crate) fn tree512_x16(a: [__m512; 16]) -> __m512 {
        // s8: 128-bit blocks 0,1 (lanes 0-7) + blocks 2,3 (lanes 8-15) of a pair of outputs;
        // v[i] holds s8 of output 2i in blocks 0,1 and of output 2i+1 in blocks 2,3.
        let v: [__m512; 8] = std::array::from_fn(|i| {
            let (x, y) = (a[2 * i], a[2 * i + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x44>(x, y),
                _mm512_shuffle_f32x4::<0xEE>(x, y),
            )
        });
        // s4: block b of u[i] holds s4 of output 4i+b.
        let u: [__m512; 4] = std::array::from_fn(|i| {
            let (x, y) = (v[2 * i], v[2 * i + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x88>(x, y),
                _mm512_shuffle_f32x4::<0xDD>(x, y),
            )
        });
        // s2: block b of w[i] holds s2 of output 8i+b (lanes 0,1) and 8i+4+b (lanes 2,3).
        let w: [__m512; 2] = std::array::from_fn(|i| {
            let (x, y) = (u[2 * i], u[2 * i + 1]);
            _mm512_add_ps(
                _mm512_shuffle_ps::<0x44>(x, y),
                _mm512_shuffle_ps::<0xEE>(x, y),
            )
        });
        // s2[0] + s2[1]: lane t of block b is output 4t+b.
        _mm512_add_ps(
            _mm512_shuffle_ps::<0x88>(w[0], w[1]),
            _mm512_shuffle_ps::<0xDD>(w[0], w[1]),
        )
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(crate) fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n <= both lengths, so all 16 reads are in bounds.
            let (va, vb) = unsafe { (_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i))) };
            acc = _mm512_fmadd_ps(va, vb, acc);
            i += 16;
        }
        if i < n {
            let m = mask16(n - i);
            // SAFETY: only the n - i active lanes (in bounds) are read; masked lanes never fault.
            let (va, vb) = unsafe {
                (
                    _mm512_maskz_loadu_ps(m, pa.add(i)),
                    _mm512_maskz_loadu_ps(m, pb.add(i)),
                )
            };
            acc = _mm512_mask3_fmadd_ps(va, vb, acc, m);
        }
        tree512(acc)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(crate) fn sum_avx512(x: &[f32]) -> f32 {
        let n = x.len();
        let p = x.as_ptr();
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n: in bounds.
            let v = unsafe { _mm512_loadu_ps(p.add(i)) };
            acc = _mm512_add_ps(acc, v);
            i += 16;
        }
        if i < n {
            let m = mask16(n - i);
            // SAFETY: only the active, in-bounds lanes are read.
            let v = unsafe { _mm512_maskz_loadu_ps(m, p.add(i)) };
            acc = _mm512_mask_add_ps(acc, m, acc, v);
        }
        tree512(acc)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n <= both lengths.
            let (a0, a1, b0, b1) = unsafe {
                (
                    _mm256_loadu_ps(pa.add(i)),
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                )
            };
            lo = _mm256_fmadd_ps(a0, b0, lo);
            hi = _mm256_fmadd_ps(a1, b1, hi);
            i += 16;
        }
        let r = n - i;
        if r > 0 {
            let m = mask8(r);
            // SAFETY: maskload reads only the min(r, 8) active lanes, all in bounds.
            let (a0, b0) = unsafe {
                (
                    _mm256_maskload_ps(pa.add(i), m),
                    _mm256_maskload_ps(pb.add(i), m),
                )
            };
            lo = _mm256_blendv_ps(lo, _mm256_fmadd_ps(a0, b0, lo), _mm256_castsi256_ps(m));
        }
        if r > 8 {
            let m = mask8(r - 8);
            // SAFETY: as above, for lanes i + 8 .. n.
            let (a1, b1) = unsafe {
                (
                    _mm256_maskload_ps(pa.add(i + 8), m),
                    _mm256_maskload_ps(pb.add(i + 8), m),
                )
            };
            hi = _mm256_blendv_ps(hi, _mm256_fmadd_ps(a1, b1, hi), _mm256_castsi256_ps(m));
        }
        tree_from_s8(_mm256_add_ps(lo, hi))
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn sum_avx2(x: &[f32]) -> f32 {
        let n = x.len();
        let p = x.as_ptr();
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n.
            let (v0, v1) = unsafe { (_mm256_loadu_ps(p.add(i)), _mm256_loadu_ps(p.add(i + 8))) };
            lo = _mm256_add_ps(lo, v0);
            hi = _mm256_add_ps(hi, v1);
            i += 16;
        }
        let r = n - i;
        if r > 0 {
            let m = mask8(r);
            // SAFETY: maskload reads only the active, in-bounds lanes.
            let v0 = unsafe { _mm256_maskload_ps(p.add(i), m) };
            lo = _mm256_blendv_ps(lo, _mm256_add_ps(lo, v0), _mm256_castsi256_ps(m));
        }
        if r > 8 {
            let m = mask8(r - 8);
            // SAFETY: as above.
            let v1 = unsafe { _mm256_maskload_ps(p.add(i + 8), m) };
            hi = _mm256_blendv_ps(hi, _mm256_add_ps(hi, v1), _mm256_castsi256_ps(m));
        }
        tree_from_s8(_mm256_add_ps(lo, hi))
    }
}
