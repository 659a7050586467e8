//! Rule 8 of the spec: attention of one query vector of one head over a KV cache.

use rayon::prelude::*;

use super::dot::{dot_checked, tree16};
use super::isa::Checked;
use super::ops::softmax_checked;
use super::{ComputeError, Isa, LANES, check_len, checked_mul};
use crate::compute::backend::{AttentionShape, KvView, QueryRow};

/// [`Backend::attention`](crate::compute::Backend::attention): every (row, head) in
/// parallel. Each task writes its own `head_dim` slice of `out` (and its own row of `probs`)
/// and reads only its sequence's keys and values, so who runs it does not matter.
pub(super) fn batch(
    isa: Checked,
    shape: AttentionShape,
    q: &[f32],
    kv: &[KvView<'_>],
    rows: &[QueryRow],
    out: &mut [f32],
    probs: Option<&mut [f32]>,
) -> Result<(), ComputeError> {
    const OP: &str = "attention";
    let (hd, heads) = (shape.head_dim, shape.heads);
    let stride = shape.kv_dim();
    let tasks = checked_mul(OP, rows.len(), heads)?;
    check_len(OP, "q", checked_mul(OP, tasks, hd)?, q.len())?;
    check_len(OP, "out", q.len(), out.len())?;
    if hd == 0 || rows.iter().any(|r| r.seq >= kv.len()) {
        return Err(ComputeError::Invalid {
            op: OP,
            reason: "need head_dim > 0 and every row's sequence among the kv views",
        });
    }
    shape.kv_head(0)?;
    let longest = rows.iter().map(|r| r.visible).max().unwrap_or(0);
    let one = |g: usize, scores: &mut [f32], o: &mut [f32]| {
        let (r, h) = (g / heads, g % heads);
        let row = rows[r];
        let view = kv[row.seq];
        let kvh = shape.kv_head(h)?;
        let (k, v) = (
            view.k.get(kvh * hd..).unwrap_or_default(),
            view.v.get(kvh * hd..).unwrap_or_default(),
        );
        attention_checked(
            isa,
            &q[g * hd..][..hd],
            k,
            v,
            row.visible,
            stride,
            scores,
            o,
        )
    };
    // Enough rows to keep every thread busy: one task per row, all of its heads, so that
    // the row's keys and values are read once, whole and in address order, instead of one
    // 256-byte strip per head (which left the hardware prefetchers little to follow and
    // read every kv head's strip once per query head that shares it).
    #[cfg(target_arch = "x86_64")]
    if probs.is_none() && isa.isa() == Isa::Avx512 && rows.len() >= 2 * rayon::current_num_threads()
    {
        let width = heads * hd;
        let group = heads / shape.kv_heads;
        return out
            .par_chunks_mut(width)
            .zip(q.par_chunks(width))
            .zip(rows.par_iter())
            .enumerate()
            .try_for_each_init(
                || vec![0.0f32; heads * longest],
                |scores, (r, ((o, qr), row))| {
                    let view = kv[row.seq];
                    let len = row.visible;
                    let fits = len == 0
                        || (len - 1)
                            .checked_mul(stride)
                            .and_then(|at| at.checked_add(stride))
                            .is_some_and(|need| need <= view.k.len() && need <= view.v.len());
                    if !fits {
                        // Refused head by head, so that the error is the per-head path's.
                        for (h, oh) in o.chunks_exact_mut(hd).enumerate() {
                            one(r * heads + h, &mut scores[..], oh)?;
                        }
                        return Ok(());
                    }
                    let scale = (1.0 / (hd as f64).sqrt()) as f32;
                    let scores = &mut scores[..heads * len];
                    // SAFETY: `Checked` exists only for ISAs detected on this CPU.
                    unsafe {
                        x86::row_scores_avx512(qr, hd, group, view.k, view.v, stride, scale, scores)
                    };
                    for ((p, oh), h) in scores
                        .chunks_exact_mut(len.max(1))
                        .zip(o.chunks_exact_mut(hd))
                        .zip(0..heads)
                    {
                        let p = &mut p[..len];
                        softmax_checked(isa, p);
                        weighted_sum(isa, p, &view.v[(h / group) * hd..], stride, oh);
                    }
                    if len == 0 {
                        // No positions: every head's sum is the tree of sixteen +0.0 lanes.
                        for oh in o.chunks_exact_mut(hd) {
                            weighted_sum(isa, &[], view.v, stride, oh);
                        }
                    }
                    Ok(())
                },
            );
    }
    let width = match &probs {
        Some(p) if tasks > 0 => p.len() / tasks,
        _ => 0,
    };
    match probs {
        // No room asked for and none needed: the same as no probabilities.
        Some(probs) if !(probs.is_empty() && longest == 0) => {
            // After this check `width > 0`: `longest > 0` or `probs` is non-empty.
            if width < longest || width * tasks != probs.len() {
                check_len(OP, "probs", checked_mul(OP, tasks, longest)?, probs.len())?;
            }
            out.par_chunks_mut(hd)
                .zip(probs.par_chunks_mut(width))
                .enumerate()
                .try_for_each(|(g, (o, p))| {
                    one(g, p, o)?;
                    p[rows[g / heads].visible..].fill(0.0);
                    Ok(())
                })
        }
        _ => out
            .par_chunks_mut(hd)
            .enumerate()
            .try_for_each_init(|| vec![0.0f32; longest], |scores, (g, o)| one(g, scores, o)),
    }
}

/// `out = softmax(q·k_j * scale) · v` over the `len` positions passed in.
///
/// `head_dim` is `q.len()` (and `out.len()`).
///
/// Position `j`'s key is `k[j*stride..][..head_dim]` and its value `v[j*stride..][..head_dim]`,
/// so a cache laid out `[pos, kv_head, head_dim]` is read in place by offsetting the slices
/// by `kv_head * head_dim` and passing `stride = n_kv_heads * head_dim`. `scores` is scratch
/// space of at least `len` elements; on return its first `len` hold the probabilities.
#[allow(clippy::too_many_arguments)] // each is a distinct dimension of the cache layout
pub fn attention(
    isa: Isa,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    len: usize,
    stride: usize,
    scores: &mut [f32],
    out: &mut [f32],
) -> Result<(), ComputeError> {
    attention_checked(isa.checked()?, q, k, v, len, stride, scores, out)
}

#[allow(clippy::too_many_arguments)] // as `attention`
pub(crate) fn attention_checked(
    isa: Checked,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    len: usize,
    stride: usize,
    scores: &mut [f32],
    out: &mut [f32],
) -> Result<(), ComputeError> {
    const OP: &str = "attention";
    let head_dim = q.len();
    check_len(OP, "out", head_dim, out.len())?;
    if scores.len() < len {
        check_len(OP, "scores", len, scores.len())?;
    }
    if len > 0 {
        if stride < head_dim {
            return Err(ComputeError::Invalid {
                op: OP,
                reason: "stride must be at least head_dim",
            });
        }
        let need = checked_mul(OP, len - 1, stride)?
            .checked_add(head_dim)
            .ok_or(ComputeError::Overflow { op: OP })?;
        if k.len() < need {
            check_len(OP, "k", need, k.len())?;
        }
        if v.len() < need {
            check_len(OP, "v", need, v.len())?;
        }
    }
    let scale = (1.0 / (head_dim as f64).sqrt()) as f32;
    let scores = &mut scores[..len];
    key_scores(isa, q, k, v, stride, scale, scores);
    softmax_checked(isa, scores);
    weighted_sum(isa, scores, v, stride, out);
    Ok(())
}

/// How many positions ahead the score loop prefetches keys and values.
const PREFETCH_POSITIONS: usize = 8;

/// `scores[j] = dot(q, k[j*stride..][..q.len()]) * scale` for every `j < scores.len()`,
/// prefetching keys and values ahead (a decode batch's caches do not stay in cache between
/// layers, and one head's rows are `stride` apart). Callers have checked that every row
/// lies inside `k` and `v`.
fn key_scores(
    isa: Checked,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    stride: usize,
    scale: f32,
    scores: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if isa.isa() == Isa::Avx512 {
        // SAFETY: `Checked` exists only for ISAs detected on this CPU.
        unsafe { x86::key_scores_avx512(q, k, v, stride, scale, scores) };
        return;
    }
    let (head_dim, len) = (q.len(), scores.len());
    for (j, s) in scores.iter_mut().enumerate() {
        if j + PREFETCH_POSITIONS < len {
            let at = (j + PREFETCH_POSITIONS) * stride;
            prefetch(&k[at..at + head_dim]);
            prefetch(&v[at..at + head_dim]);
        }
        *s = dot_checked(isa, q, &k[j * stride..][..head_dim]) * scale;
    }
}

/// Asks for every cache line of `x` to be brought into L1.
#[inline]
fn prefetch(x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for at in (0..x.len()).step_by(16) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: `at < x.len()`: the address is inside `x`; a prefetch reads no value and
        // never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(x.as_ptr().add(at).cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// `out[e] = Σ_j p_j · v[j*stride + e]` by the 16-lane rule over `j`. Callers have checked
/// that every row `j < p.len()` of `out.len()` elements lies inside `v`.
fn weighted_sum(isa: Checked, p: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
    match isa.isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Checked` exists only for ISAs detected on this CPU.
        Isa::Avx512 => unsafe { x86::weighted_sum_avx512(p, v, stride, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::weighted_sum_avx2(p, v, stride, out) },
        _ => weighted_sum_portable(p, v, stride, out),
    }
}

fn weighted_sum_portable(p: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
    for (e, o) in out.iter_mut().enumerate() {
        let mut l = [0.0f32; LANES];
        for (j, pj) in p.iter().enumerate() {
            l[j % LANES] = pj.mul_add(v[j * stride + e], l[j % LANES]);
        }
        *o = tree16(&l);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::LANES;
    use crate::compute::cpu::dot::x86::{dot_avx512, mask8, mask16, tree512_x16};

    /// Whether row `j`'s `d` elements fit in `v` for every `j < rows`: the SIMD loops
    /// re-check what the caller promised, so a future caller bug is a panic, not UB.
    fn rows_fit(rows: usize, stride: usize, d: usize, v_len: usize) -> bool {
        rows == 0
            || (rows - 1)
                .checked_mul(stride)
                .and_then(|o| o.checked_add(d))
                .is_some_and(|end| end <= v_len)
    }

    /// Asks for every cache line of the `d` floats at `p` to be brought into L1.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn prefetch_row(p: *const f32, d: usize) {
        for at in (0..d).step_by(16) {
            // A prefetch reads no value and never faults, whatever the address.
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(at).cast::<i8>());
        }
    }

    /// [`super::key_scores`] sixteen positions at a time: each position's dot product is
    /// `dot_avx512`'s (one zmm accumulator, the same FMAs in the same order, the same
    /// masked tail), and the sixteen halving trees run together as in the matmul tiles.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) fn key_scores_avx512(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        stride: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        let (d, len) = (q.len(), scores.len());
        assert!(
            rows_fit(len, stride, d, k.len()) && rows_fit(len, stride, d, v.len()),
            "attention: k or v too short"
        );
        let (kp, vp) = (k.as_ptr(), v.as_ptr());
        let mut j = 0;
        if len >= LANES {
            // The first group's keys and values; each group then fetches the next one's
            // (addresses past the cache are harmless) one line per FMA, so that the
            // requests never pile up.
            for t in 0..LANES {
                prefetch_row(kp.wrapping_add(t * stride), d);
                prefetch_row(vp.wrapping_add(t * stride), d);
            }
        }
        let ahead = LANES.wrapping_mul(stride);
        while j + LANES <= len {
            // Row j + t starts at rows[t]; every one fits in k and v (asserted).
            let rows: [usize; LANES] = std::array::from_fn(|t| (j + t) * stride);
            // SAFETY: every row fits in k (asserted), d = q.len(), 16 scores at j < len.
            unsafe {
                group_scores::<true>(q, kp, vp, &rows, ahead, scale, &mut scores[j..j + LANES])
            };
            j += LANES;
        }
        for (t, s) in scores[j..].iter_mut().enumerate() {
            let at = (j + t) * stride;
            *s = dot_avx512(q, &k[at..at + d]) * scale;
        }
    }

    /// The scores of one query against sixteen key rows (`rows[t]` is where row `t` starts
    /// in `kp`), by `dot_avx512`'s FMAs, masked tail and halving tree, each times `scale`:
    /// the one copy of that arithmetic both score kernels use. With `PREFETCH`, each FMA
    /// also asks for the line `ahead` floats on of its key and value rows.
    ///
    /// # Safety
    /// Every `rows[t] + q.len()` floats from `kp` lie inside one slice; `out` holds 16.
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    #[allow(clippy::needless_range_loop)] // `t` indexes the rows and their accumulators
    #[allow(clippy::too_many_arguments)] // the pointers, the group and its prefetch
    unsafe fn group_scores<const PREFETCH: bool>(
        q: &[f32],
        kp: *const f32,
        vp: *const f32,
        rows: &[usize; LANES],
        ahead: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        let d = q.len();
        let mut acc = [_mm512_setzero_ps(); LANES];
        let mut i = 0;
        while i + 16 <= d {
            // SAFETY: i + 16 <= d = q.len().
            let qv = unsafe { _mm512_loadu_ps(q.as_ptr().add(i)) };
            for t in 0..LANES {
                if PREFETCH {
                    let next = rows[t].wrapping_add(ahead).wrapping_add(i);
                    _mm_prefetch::<_MM_HINT_T0>(kp.wrapping_add(next).cast::<i8>());
                    // Values wait for the softmax: into L2, leaving L1 to the keys.
                    _mm_prefetch::<_MM_HINT_T1>(vp.wrapping_add(next).cast::<i8>());
                }
                // SAFETY: row t's d floats are in bounds (the caller's promise), i + 16 <= d.
                let kv = unsafe { _mm512_loadu_ps(kp.add(rows[t] + i)) };
                acc[t] = _mm512_fmadd_ps(qv, kv, acc[t]);
            }
            i += 16;
        }
        if i < d {
            let m = mask16(d - i);
            // SAFETY: only the d - i active lanes, all in bounds, are read.
            let qv = unsafe { _mm512_maskz_loadu_ps(m, q.as_ptr().add(i)) };
            for t in 0..LANES {
                // SAFETY: as above, for row t.
                let kv = unsafe { _mm512_maskz_loadu_ps(m, kp.add(rows[t] + i)) };
                acc[t] = _mm512_mask3_fmadd_ps(qv, kv, acc[t], m);
            }
        }
        let mut lanes = [0.0f32; LANES];
        // SAFETY: `lanes` has room for the 16 floats stored.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), tree512_x16(acc)) };
        for (o, s) in out[..LANES].iter_mut().enumerate() {
            *s = lanes[4 * (o % 4) + o / 4] * scale;
        }
    }

    /// How many 16-position groups ahead [`row_scores_avx512`] prefetches: further (2 and
    /// 4 measured) was slower on the dev VM, whose per-core fill buffers are what limits
    /// the stream.
    const ROW_PREFETCH_GROUPS: usize = 1;

    /// [`key_scores_avx512`] for every head of one query row (`q` is `[heads, hd]`, query
    /// head `h` reading kv head `h / group`), sixteen positions at a time with every head
    /// inner: a group's sixteen whole rows of keys (`stride` floats each, contiguous) are
    /// read from DRAM once and then from L1 by every head. Each score's FMAs, tree and scale
    /// are exactly `key_scores_avx512`'s. Head `h`'s scores go to
    /// `scores[h * len..][..len]`, `len = scores.len() / heads`.
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[allow(clippy::too_many_arguments)] // as `attention`, plus the head layout
    pub(super) fn row_scores_avx512(
        q: &[f32],
        hd: usize,
        group: usize,
        k: &[f32],
        v: &[f32],
        stride: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        let heads = q.len() / hd.max(1);
        assert!(
            hd > 0 && group > 0 && q.len() == heads * hd && heads.div_ceil(group) * hd <= stride,
            "attention: head layout"
        );
        let len = scores.len() / heads.max(1);
        assert!(
            rows_fit(len, stride, stride, k.len()) && rows_fit(len, stride, stride, v.len()),
            "attention: k or v too short"
        );
        let (kp, vp) = (k.as_ptr(), v.as_ptr());
        let ahead = ROW_PREFETCH_GROUPS * LANES;
        for t in 0..ahead.min(len) {
            prefetch_row(kp.wrapping_add(t * stride), stride);
            prefetch_row(vp.wrapping_add(t * stride), stride);
        }
        // The rows `ahead` on from a group are one contiguous block; each head fetches its
        // share.
        let lines = (LANES * stride).div_ceil(16);
        let per_head = lines.div_ceil(heads.max(1));
        let mut j = 0;
        while j + LANES <= len {
            let next = (j + ahead) * stride;
            let mut line = 0;
            for h in 0..heads {
                for _ in 0..per_head {
                    if line < lines {
                        let at = next.wrapping_add(16 * line);
                        // Addresses past the cache are harmless: a prefetch never faults.
                        _mm_prefetch::<_MM_HINT_T0>(kp.wrapping_add(at).cast::<i8>());
                        // Values wait for the softmax: into L2, leaving L1 to the keys.
                        _mm_prefetch::<_MM_HINT_T1>(vp.wrapping_add(at).cast::<i8>());
                        line += 1;
                    }
                }
                let qh = &q[h * hd..(h + 1) * hd];
                let off = (h / group) * hd;
                // Row j + t of head h starts at rows[t]; it fits in k (asserted, off + hd
                // <= stride).
                let rows: [usize; LANES] = std::array::from_fn(|t| (j + t) * stride + off);
                // SAFETY: as just said; 16 scores of head h at j < len.
                unsafe {
                    group_scores::<false>(
                        qh,
                        kp,
                        vp,
                        &rows,
                        0,
                        scale,
                        &mut scores[h * len + j..][..LANES],
                    )
                };
            }
            j += LANES;
        }
        for h in 0..heads {
            let qh = &q[h * hd..(h + 1) * hd];
            let off = (h / group) * hd;
            for jj in j..len {
                let at = jj * stride + off;
                scores[h * len + jj] = dot_avx512(qh, &k[at..at + hd]) * scale;
            }
        }
    }

    /// Sixteen e-lanes per zmm; `acc[t]` is lane `t` of the j-accumulation for all of them.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) fn weighted_sum_avx512(p: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
        let d = out.len();
        assert!(
            rows_fit(p.len(), stride, d, v.len()),
            "attention: v too short"
        );
        let mut e = 0;
        while e < d {
            let m = mask16(d - e);
            let mut acc = [_mm512_setzero_ps(); LANES];
            let mut chunks = p.chunks_exact(LANES);
            let mut j = 0;
            for c in &mut chunks {
                for t in 0..LANES {
                    // SAFETY: row j + t < p.len() fits in v (asserted); only the active
                    // lanes e .. min(e + 16, d) <= d are read.
                    let vv =
                        unsafe { _mm512_maskz_loadu_ps(m, v.as_ptr().add((j + t) * stride + e)) };
                    acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(c[t]), vv, acc[t]);
                }
                j += LANES;
            }
            for (t, pj) in chunks.remainder().iter().enumerate() {
                // SAFETY: as above.
                let vv = unsafe { _mm512_maskz_loadu_ps(m, v.as_ptr().add((j + t) * stride + e)) };
                acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(*pj), vv, acc[t]);
            }
            let s8: [__m512; 8] = std::array::from_fn(|t| _mm512_add_ps(acc[t], acc[t + 8]));
            let s4: [__m512; 4] = std::array::from_fn(|t| _mm512_add_ps(s8[t], s8[t + 4]));
            let s2 = [_mm512_add_ps(s4[0], s4[2]), _mm512_add_ps(s4[1], s4[3])];
            let res = _mm512_add_ps(s2[0], s2[1]);
            // SAFETY: only the active lanes e .. min(e + 16, d) of `out` are written.
            unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(e), m, res) };
            e += 16;
        }
    }

    /// As the AVX-512 version with eight e-lanes per ymm.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn weighted_sum_avx2(p: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
        let d = out.len();
        assert!(
            rows_fit(p.len(), stride, d, v.len()),
            "attention: v too short"
        );
        let mut e = 0;
        while e < d {
            let m = mask8(d - e);
            let mut acc = [_mm256_setzero_ps(); LANES];
            for (j, pj) in p.iter().enumerate() {
                // SAFETY: row j < p.len() fits in v (asserted); maskload reads only the
                // active lanes e .. min(e + 8, d) <= d.
                let vv = unsafe { _mm256_maskload_ps(v.as_ptr().add(j * stride + e), m) };
                acc[j % LANES] = _mm256_fmadd_ps(_mm256_set1_ps(*pj), vv, acc[j % LANES]);
            }
            let s8: [__m256; 8] = std::array::from_fn(|t| _mm256_add_ps(acc[t], acc[t + 8]));
            let s4: [__m256; 4] = std::array::from_fn(|t| _mm256_add_ps(s8[t], s8[t + 4]));
            let s2 = [_mm256_add_ps(s4[0], s4[2]), _mm256_add_ps(s4[1], s4[3])];
            let res = _mm256_add_ps(s2[0], s2[1]);
            // SAFETY: maskstore writes only the active lanes, inside `out`.
            unsafe { _mm256_maskstore_ps(out.as_mut_ptr().add(e), m, res) };
            e += 8;
        }
    }
}
