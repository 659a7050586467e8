//! The x86 kernels of the quantized matmul: R×C register tiles that dequantize each
//! 32-weight group of C weight rows once and feed it to the R rows of `x`, and a row
//! dequantizer for the panel path (many rows, see `mod.rs`).
//!
//! Weight element `i` of a row is in lane `i mod 16` of its group's registers and groups
//! come in ascending order, so every accumulator sees exactly rule 1's sequence of fmas.

// Tile loops index several parallel arrays (x, w, acc) by the same r, c: iterator chains
// would obscure which accumulator each FMA feeds.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::format::Format;
use crate::compute::cpu::dot::x86::{tree_from_s8, tree512, tree512_x16};

/// The weight bytes of a tile: `words` is the matrix as little-endian bytes packed into
/// f32s, `at[c]` the byte offset of weight row `c`, `ahead` a byte range to prefetch.
#[derive(Clone, Copy)]
pub(super) struct TileW<'a, const C: usize> {
    pub words: &'a [f32],
    pub at: [usize; C],
    pub ahead: (usize, usize),
    /// Prefetches per block (the caller divides once per call, not once per tile).
    pub steps: usize,
}

/// Checks everything a tile reads, so that its raw loads stay inside `x` and `words`:
/// returns the block count and the base pointer of the bytes.
fn check<F: Format, const R: usize, const C: usize>(
    x: &[&[f32]; R],
    k: usize,
    w: &TileW<'_, C>,
) -> (usize, *const u8) {
    let per_block = 32 * F::GROUPS;
    let blocks = k / per_block;
    let total = std::mem::size_of_val(w.words);
    assert!(
        k.is_multiple_of(per_block)
            && x.iter().all(|r| r.len() >= k)
            && w.at
                .iter()
                .all(|&a| a <= total && total - a >= blocks * F::BYTES)
            && w.ahead.0 <= w.ahead.1
            && w.ahead.1 <= total,
        "quantized matmul: tile shapes"
    );
    (blocks, w.words.as_ptr().cast::<u8>())
}

/// Blocks whose f16 fields a batched format widens at once.
const BATCH: usize = 16;

/// The f16 pairs in the first 4 bytes of `n <= BATCH` consecutive blocks from `b`, widened
/// into `out` (pair `j` at `2j`, `2j + 1`) by one exact vector conversion per 8 blocks.
///
/// # Safety
/// `n` whole blocks from `b` are readable.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn widen_halves<F: Format>(b: *const u8, n: usize, out: &mut [f32; 2 * BATCH]) {
    let step = F::BYTES as i32;
    let at = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(step),
    );
    let mask: __mmask16 = if n >= BATCH { !0 } else { (1u16 << n) - 1 };
    // One gather, not 16 scalar stores reloaded as a vector: that reload cannot be
    // forwarded from the stores and stalled every batch.
    // SAFETY: lane j < n reads 4 bytes at b + j * BYTES, inside the readable range (n whole
    // blocks of at least 4 bytes each); masked-off lanes read nothing.
    let raw =
        unsafe { _mm512_mask_i32gather_epi32::<1>(_mm512_setzero_si512(), mask, at, b.cast()) };
    // SAFETY: `out` has room for 32 f32.
    unsafe {
        _mm512_storeu_ps(
            out.as_mut_ptr(),
            _mm512_cvtph_ps(_mm512_castsi512_si256(raw)),
        );
        _mm512_storeu_ps(
            out.as_mut_ptr().add(16),
            _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(raw)),
        );
    }
}

/// A block's factors: from the batch of widened halves (pair at `j`) where the format
/// allows it, else from the block itself.
///
/// # Safety
/// `b` points at a whole block; AVX-512F, AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn scales<F: Format>(b: *const u8, halves: &[f32; 2 * BATCH], j: usize) -> F::S512 {
    if F::BATCHED {
        let h = [halves[j % (2 * BATCH)], halves[(j + 1) % (2 * BATCH)]];
        // SAFETY: this function's features.
        unsafe { F::from_halves512(&h) }
    } else {
        // SAFETY: the caller's block and features.
        unsafe { F::scales512(b) }
    }
}

/// R×C outputs (before bias) of rows `x` against the weight rows of `w`, one zmm
/// accumulator each. `ahead` is prefetched into L2 along the way, spread over the blocks.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) fn tile512<F: Format, const R: usize, const C: usize>(
    x: [&[f32]; R],
    k: usize,
    w: TileW<'_, C>,
    out: &mut [[f32; C]; R],
) {
    let (blocks, base) = check::<F, R, C>(&x, k, &w);
    let steps = w.steps;
    let mut next = w.ahead.0;
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    // Batched formats: the f16 fields of the next BATCH blocks of each row, widened.
    let mut halves = [[0.0f32; 2 * BATCH]; C];
    for blk in 0..blocks {
        if F::BATCHED && blk % BATCH == 0 {
            for c in 0..C {
                // SAFETY: blocks blk .. blk + BATCH (at most `blocks`) lie inside `words`
                // (checked); this function's features.
                unsafe {
                    widen_halves::<F>(
                        base.add(w.at[c] + blk * F::BYTES),
                        (blocks - blk).min(BATCH),
                        &mut halves[c],
                    )
                };
            }
        }
        for _ in 0..steps {
            if next < w.ahead.1 {
                // SAFETY: next < ahead.1 <= the byte length of `words` (checked); a
                // prefetch is a hint that reads nothing into any register.
                _mm_prefetch::<_MM_HINT_T1>(unsafe { base.add(next) }.cast::<i8>());
                next += 64;
            }
        }
        let mut b = [base; C];
        for c in 0..C {
            // SAFETY: at[c] + (blk + 1) * BYTES <= the byte length of `words` (checked).
            b[c] = unsafe { base.add(w.at[c] + blk * F::BYTES) };
        }
        let j = 2 * (blk % BATCH);
        // SAFETY: each b[c] points at a whole block; this function's features.
        let mut s = [unsafe { scales::<F>(b[0], &halves[0], j) }; C];
        for c in 1..C {
            // SAFETY: as above.
            s[c] = unsafe { scales::<F>(b[c], &halves[c], j) };
        }
        for g in 0..F::GROUPS {
            let mut wv = [[_mm512_setzero_ps(); 2]; C];
            for c in 0..C {
                // SAFETY: whole blocks, g < GROUPS, and this function's features.
                wv[c] = unsafe { F::group512(b[c], &s[c], g) };
            }
            let i = (blk * F::GROUPS + g) * 32;
            for r in 0..R {
                // SAFETY: i + 32 <= k <= x[r].len() (checked).
                let (x0, x1) = unsafe {
                    let p = x[r].as_ptr().add(i);
                    (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)))
                };
                for c in 0..C {
                    acc[r][c] = _mm512_fmadd_ps(x0, wv[c][0], acc[r][c]);
                    acc[r][c] = _mm512_fmadd_ps(x1, wv[c][1], acc[r][c]);
                }
            }
        }
    }
    if R * C == 16 {
        let mut flat = [_mm512_setzero_ps(); 16];
        for o in 0..16 {
            flat[o] = acc[o / C][o % C];
        }
        let mut lanes = [0.0f32; 16];
        // SAFETY: `lanes` has room for the 16 floats stored.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), tree512_x16(flat)) };
        for o in 0..16 {
            out[o / C][o % C] = lanes[4 * (o % 4) + o / 4];
        }
    } else {
        for r in 0..R {
            for c in 0..C {
                out[r][c] = tree512(acc[r][c]);
            }
        }
    }
}

/// As [`tile512`] with two ymm accumulators per output (lanes 0-7 and 8-15).
#[target_feature(enable = "avx2,fma")]
pub(super) fn tile256<F: Format, const R: usize, const C: usize>(
    x: [&[f32]; R],
    k: usize,
    w: TileW<'_, C>,
    out: &mut [[f32; C]; R],
) {
    let (blocks, base) = check::<F, R, C>(&x, k, &w);
    let steps = w.steps;
    let mut next = w.ahead.0;
    let mut acc = [[[_mm256_setzero_ps(); 2]; C]; R];
    for blk in 0..blocks {
        for _ in 0..steps {
            if next < w.ahead.1 {
                // SAFETY: as in `tile512`.
                _mm_prefetch::<_MM_HINT_T1>(unsafe { base.add(next) }.cast::<i8>());
                next += 64;
            }
        }
        let mut b = [base; C];
        for c in 0..C {
            // SAFETY: as in `tile512`.
            b[c] = unsafe { base.add(w.at[c] + blk * F::BYTES) };
        }
        // SAFETY: each b[c] points at a whole block; this function's features.
        let mut s = [unsafe { F::scales256(b[0]) }; C];
        for c in 1..C {
            // SAFETY: as above.
            s[c] = unsafe { F::scales256(b[c]) };
        }
        for g in 0..F::GROUPS {
            let mut wv = [[_mm256_setzero_ps(); 4]; C];
            for c in 0..C {
                // SAFETY: whole blocks, g < GROUPS, and this function's features.
                wv[c] = unsafe { F::group256(b[c], &s[c], g) };
            }
            let i = (blk * F::GROUPS + g) * 32;
            for r in 0..R {
                for q in 0..4 {
                    // SAFETY: i + 8q + 8 <= i + 32 <= k <= x[r].len() (checked).
                    let xv = unsafe { _mm256_loadu_ps(x[r].as_ptr().add(i + 8 * q)) };
                    for c in 0..C {
                        acc[r][c][q % 2] = _mm256_fmadd_ps(xv, wv[c][q], acc[r][c][q % 2]);
                    }
                }
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            out[r][c] = tree_from_s8(_mm256_add_ps(acc[r][c][0], acc[r][c][1]));
        }
    }
}

/// Rule 9 for one weight row (at byte `at` of `words`) into `out` (`k` values).
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) fn row512<F: Format>(words: &[f32], at: usize, out: &mut [f32]) {
    let k = out.len();
    let w = TileW::<1> {
        words,
        at: [at],
        ahead: (0, 0),
        steps: 0,
    };
    let (blocks, base) = check::<F, 1, 1>(&[&*out], k, &w);
    let o = out.as_mut_ptr();
    for blk in 0..blocks {
        // SAFETY: at + (blk + 1) * BYTES <= the byte length of `words` (checked).
        let b = unsafe { base.add(at + blk * F::BYTES) };
        // SAFETY: b points at a whole block.
        let s = unsafe { F::scales512(b) };
        for g in 0..F::GROUPS {
            let i = (blk * F::GROUPS + g) * 32;
            // SAFETY: a whole block, g < GROUPS, this function's features; i + 32 <= k,
            // the length of `out`.
            unsafe {
                let [w0, w1] = F::group512(b, &s, g);
                _mm512_storeu_ps(o.add(i), w0);
                _mm512_storeu_ps(o.add(i + 16), w1);
            }
        }
    }
}

/// As [`row512`] with AVX2.
#[target_feature(enable = "avx2,fma")]
pub(super) fn row256<F: Format>(words: &[f32], at: usize, out: &mut [f32]) {
    let k = out.len();
    let w = TileW::<1> {
        words,
        at: [at],
        ahead: (0, 0),
        steps: 0,
    };
    let (blocks, base) = check::<F, 1, 1>(&[&*out], k, &w);
    let o = out.as_mut_ptr();
    for blk in 0..blocks {
        // SAFETY: as in `row512`.
        let b = unsafe { base.add(at + blk * F::BYTES) };
        // SAFETY: b points at a whole block.
        let s = unsafe { F::scales256(b) };
        for g in 0..F::GROUPS {
            let i = (blk * F::GROUPS + g) * 32;
            // SAFETY: as in `row512`.
            unsafe {
                let v = F::group256(b, &s, g);
                for (q, v) in v.into_iter().enumerate() {
                    _mm256_storeu_ps(o.add(i + 8 * q), v);
                }
            }
        }
    }
}
