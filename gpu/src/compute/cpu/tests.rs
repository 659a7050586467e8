//! Every fast path against a plain transcription of the spec, bit for bit, plus accuracy
//! against f64. Inputs come from a seeded generator so failures reproduce.

use crate::compute::*;

/// SplitMix64: tiny, seeded, good enough to spread test inputs.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    /// Mixed magnitudes and signs, including exact zeros, so that rounding and signed
    /// zeros are exercised (a sum of plain uniforms rarely hits those).
    fn value(&mut self) -> f32 {
        match self.next_u64() % 16 {
            0 => 0.0,
            1 => -0.0,
            2 => self.unit() * 1e-30,
            3 => self.unit() * 1e4,
            _ => self.unit() * 4.0,
        }
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.value()).collect()
    }
}

const LENGTHS: &[usize] = &[0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 1000];

fn simd_isas() -> Vec<Isa> {
    Isa::supported()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

// ---------- the spec, written plainly ----------

fn ref_tree(l: &[f32; 16]) -> f32 {
    let mut s8 = [0.0f32; 8];
    for j in 0..8 {
        s8[j] = l[j] + l[j + 8];
    }
    let mut s4 = [0.0f32; 4];
    for j in 0..4 {
        s4[j] = s8[j] + s8[j + 4];
    }
    let s2 = [s4[0] + s4[2], s4[1] + s4[3]];
    s2[0] + s2[1]
}

fn ref_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut l = [0.0f32; 16];
    for i in 0..a.len() {
        l[i % 16] = a[i].mul_add(b[i], l[i % 16]);
    }
    ref_tree(&l)
}

fn ref_sum(x: &[f32]) -> f32 {
    let mut l = [0.0f32; 16];
    for i in 0..x.len() {
        l[i % 16] += x[i];
    }
    ref_tree(&l)
}

fn ref_softmax(x: &[f32]) -> Vec<f32> {
    let mut m = f32::NEG_INFINITY;
    for &v in x {
        if v > m {
            m = v;
        }
    }
    let e: Vec<f32> = x.iter().map(|v| exp(v - m)).collect();
    let s = ref_sum(&e);
    e.iter().map(|v| v / s).collect()
}

fn f64_dot(a: &[f32], b: &[f32]) -> (f64, f64) {
    let d = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let mag = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 * *y as f64).abs())
        .sum();
    (d, mag)
}

fn ulp_diff(a: f32, b: f64) -> f64 {
    let bf = b as f32;
    let ulp = if bf == 0.0 {
        f32::from_bits(1) as f64
    } else {
        (f32::from_bits(bf.abs().to_bits() + 1) - bf.abs()) as f64
    };
    (a as f64 - b).abs() / ulp
}

// ---------- rule 1 ----------

#[test]
fn dot_and_sum_match_spec_on_every_isa() {
    let mut rng = Rng(1);
    for &n in LENGTHS {
        for _ in 0..20 {
            let (a, b) = (rng.vec(n), rng.vec(n));
            let want = ref_dot(&a, &b).to_bits();
            let want_sum = ref_sum(&a).to_bits();
            for isa in simd_isas() {
                assert_eq!(
                    dot(isa, &a, &b).unwrap().to_bits(),
                    want,
                    "dot {isa:?} n={n}"
                );
                assert_eq!(
                    sum(isa, &a).unwrap().to_bits(),
                    want_sum,
                    "sum {isa:?} n={n}"
                );
            }
        }
    }
}

#[test]
fn dot_keeps_negative_zero_lanes_in_tails() {
    // Every product underflows to -0.0, so every lane holds -0.0 and so does the result.
    // Zero padding of the tail would turn the untouched lanes into +0.0
    // (fma(0, 0, -0) = +0) and the result with them.
    for n in [17, 33, 47] {
        let a = vec![1e-30f32; n];
        let b = vec![-1e-30f32; n];
        assert_eq!(ref_dot(&a, &b).to_bits(), (-0.0f32).to_bits());
        for isa in simd_isas() {
            let got = dot(isa, &a, &b).unwrap();
            assert_eq!(got.to_bits(), (-0.0f32).to_bits(), "{isa:?}");
            let x = vec![1e-30f32; 3 * n];
            let w = vec![-1e-30f32; 5 * n];
            let mut y = vec![0.0f32; 15];
            matmul(isa, 2, &x, 3, n, &w, 5, None, &mut y).unwrap();
            assert!(
                y.iter().all(|v| v.to_bits() == (-0.0f32).to_bits()),
                "{isa:?}"
            );
        }
        // Lanes start at +0.0, so a sum of -0.0 is +0.0 on every path.
        let x = vec![-0.0f32; n];
        for isa in simd_isas() {
            assert_eq!(sum(isa, &x).unwrap().to_bits(), 0, "{isa:?}");
        }
    }
}

#[test]
fn dot_accuracy_against_f64() {
    // Error bound for a 16-lane fma sum: |err| ≤ (n/16 + 4 + 1) · 2^-24 · Σ|a_i b_i|.
    let mut rng = Rng(2);
    for &n in LENGTHS {
        let a: Vec<f32> = (0..n).map(|_| rng.unit()).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.unit()).collect();
        let (exact, mag) = f64_dot(&a, &b);
        let got = dot(Isa::detect(), &a, &b).unwrap() as f64;
        let bound = (n as f64 / 16.0 + 5.0) * f64::from(f32::EPSILON) / 2.0 * mag;
        assert!((got - exact).abs() <= bound, "n={n} got {got} want {exact}");
    }
}

#[test]
fn dot_rejects_mismatched_lengths() {
    assert!(matches!(
        dot(Isa::Portable, &[1.0; 3], &[1.0; 4]),
        Err(ComputeError::Length { .. })
    ));
}

// ---------- rule 2 ----------

fn ref_matmul(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[f32],
    cols: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let mut y = vec![0.0; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let d = ref_dot(&x[r * k..(r + 1) * k], &w[c * k..(c + 1) * k]);
            y[r * cols + c] = match bias {
                Some(b) => d + b[c],
                None => d,
            };
        }
    }
    y
}

#[test]
fn matmul_matches_spec_for_every_isa_and_thread_count() {
    let mut rng = Rng(3);
    let shapes = [
        (1, 1, 1),
        (1, 0, 3),
        (0, 5, 3),
        (3, 17, 5),
        (5, 16, 7),
        (4, 33, 4),
        (7, 31, 9),
        (9, 64, 35),
        (1, 1000, 18),
        (13, 15, 50),
        (6, 100, 33),
        (16, 48, 70),
        (68, 20, 23),
    ];
    for (rows, k, cols) in shapes {
        let x = rng.vec(rows * k);
        let w = rng.vec(cols * k);
        let b = rng.vec(cols);
        for bias in [None, Some(&b[..])] {
            let want = bits(&ref_matmul(&x, rows, k, &w, cols, bias));
            for isa in simd_isas() {
                for threads in 1..=4 {
                    let mut y = vec![f32::NAN; rows * cols];
                    matmul(isa, threads, &x, rows, k, &w, cols, bias, &mut y).unwrap();
                    assert_eq!(bits(&y), want, "{isa:?} t={threads} {rows}x{k}x{cols}");
                }
            }
        }
    }
}

#[test]
fn matmul_result_does_not_depend_on_alignment() {
    let mut rng = Rng(11);
    let (rows, k, cols) = (6, 48, 20);
    let x = rng.vec(rows * k);
    let w = rng.vec(cols * k);
    let want = bits(&ref_matmul(&x, rows, k, &w, cols, None));
    let (xa, wa) = (AlignedVec::from_slice(&x), AlignedVec::from_slice(&w));
    for isa in simd_isas() {
        let mut y = AlignedVec::zeros(rows * cols);
        matmul(isa, 2, &xa, rows, k, &wa, cols, None, &mut y).unwrap();
        assert_eq!(bits(&y), want, "{isa:?}");
    }
}

#[test]
fn matmul_accuracy_against_f64() {
    let mut rng = Rng(4);
    let (rows, k, cols) = (5, 576, 11);
    let x: Vec<f32> = (0..rows * k).map(|_| rng.unit()).collect();
    let w: Vec<f32> = (0..cols * k).map(|_| rng.unit()).collect();
    let mut y = vec![0.0; rows * cols];
    matmul(Isa::detect(), 2, &x, rows, k, &w, cols, None, &mut y).unwrap();
    for r in 0..rows {
        for c in 0..cols {
            let (exact, mag) = f64_dot(&x[r * k..][..k], &w[c * k..][..k]);
            let bound = (k as f64 / 16.0 + 5.0) * f64::from(f32::EPSILON) / 2.0 * mag;
            assert!((y[r * cols + c] as f64 - exact).abs() <= bound);
        }
    }
}

#[test]
fn matmul_rejects_bad_shapes() {
    let mut out = vec![0.0; 4];
    let x = vec![0.0; 6];
    let w = vec![0.0; 6];
    let isa = Isa::Portable;
    assert!(matmul(isa, 1, &x, 2, 3, &w, 2, None, &mut out).is_ok());
    assert!(matmul(isa, 1, &x[..5], 2, 3, &w, 2, None, &mut out).is_err());
    assert!(matmul(isa, 1, &x, 2, 3, &w[..5], 2, None, &mut out).is_err());
    assert!(matmul(isa, 1, &x, 2, 3, &w, 2, None, &mut out[..3]).is_err());
    assert!(matmul(isa, 1, &x, 2, 3, &w, 2, Some(&[0.0]), &mut out).is_err());
    assert!(matmul(isa, 0, &x, 2, 3, &w, 2, None, &mut out).is_err());
    assert!(matmul(isa, 1, &x, usize::MAX, 3, &w, 2, None, &mut out).is_err());
}

// ---------- rule 3 ----------

#[test]
fn exp_special_values() {
    assert_eq!(exp(f32::NAN).to_bits(), f32::NAN.to_bits());
    assert_eq!(exp(-f32::NAN).to_bits(), f32::NAN.to_bits());
    assert_eq!(exp(f32::INFINITY), f32::INFINITY);
    assert_eq!(exp(f32::NEG_INFINITY).to_bits(), 0);
    assert_eq!(exp(0.0), 1.0);
    assert_eq!(exp(-0.0), 1.0);
    assert_eq!(exp(89.0), f32::INFINITY);
    assert_eq!(exp(f32::from_bits(0x42b1_7218)), f32::INFINITY);
    assert!(exp(f32::from_bits(0x42b1_7217)).is_finite());
    assert!(exp(f32::from_bits(0x42b1_7217)) > 3.4e38);
    assert_eq!(exp(-104.5).to_bits(), 0);
    assert_eq!(exp(f32::MIN).to_bits(), 0);
    assert_eq!(exp(f32::MAX), f32::INFINITY);
    // Subnormal range: within a subnormal ulp or so of the truth, and monotone.
    for x in [-88.0f32, -95.0, -100.0, -103.0, -103.9] {
        let want = (x as f64).exp();
        let got = exp(x) as f64;
        assert!(
            (got - want).abs() <= 1.5 * f32::from_bits(1) as f64 + want * 1e-6,
            "{x}"
        );
    }
    assert_eq!(exp(1.0), std::f32::consts::E);
}

#[test]
fn exp_constants_are_the_documented_ones() {
    assert_eq!(LOG2E, std::f32::consts::LOG2_E);
    assert_eq!(LN2_HI.to_bits(), 0x3f31_7200);
    assert_eq!(LN2_HI as f64, 0.693_145_751_953_125_f64);
    assert!(((LN2_HI as f64 + LN2_LO as f64) - std::f64::consts::LN_2).abs() < 1e-13);
}

#[test]
fn exp_within_two_ulp_on_dense_sample() {
    // Every 64th f32 in [-87, 88]: about 4 million inputs covering every binade.
    let mut worst = 0.0f64;
    let mut check = |x: f32| {
        let e = ulp_diff(exp(x), (x as f64).exp());
        if e > worst {
            worst = e;
        }
    };
    for sign_bits in [0u32, 0x8000_0000] {
        let limit = if sign_bits == 0 { 88.0f32 } else { 87.0 };
        let mut b = 0u32;
        while f32::from_bits(b) <= limit {
            check(f32::from_bits(b | sign_bits));
            b += 64;
        }
    }
    eprintln!("exp: max error {worst:.3} ulp over the sample");
    assert!(worst <= 2.0, "max error {worst} ulp");
}

#[test]
fn exp_simd_matches_scalar() {
    let mut rng = Rng(5);
    let mut xs: Vec<f32> = (0..20_000).map(|_| rng.unit() * 110.0).collect();
    xs.extend([
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        88.72283,
        f32::from_bits(0x42b1_7217),
        f32::from_bits(0x42b1_7218),
        -104.0,
        -103.99999,
        -104.00001,
        f32::MAX,
        f32::MIN,
        1e-40,
        -87.33655,
    ]);
    // Plus a sweep of every 4099th f32 bit pattern (all signs, NaNs, infinities, subnormals).
    xs.extend((0..=u32::MAX / 4099).map(|i| f32::from_bits(i * 4099)));
    for n in [xs.len(), 1, 7, 15, 17, 33] {
        let want: Vec<u32> = xs[..n].iter().map(|x| exp(*x).to_bits()).collect();
        for isa in simd_isas() {
            let mut y = xs[..n].to_vec();
            exp_inplace(isa, &mut y).unwrap();
            assert_eq!(bits(&y), want, "{isa:?} n={n}");
        }
    }
}

// ---------- rules 4-6 ----------

#[test]
fn softmax_matches_spec_and_f64() {
    let mut rng = Rng(6);
    for &n in LENGTHS {
        let x: Vec<f32> = (0..n).map(|_| rng.unit() * 20.0).collect();
        let want = ref_softmax(&x);
        for isa in simd_isas() {
            let mut y = x.clone();
            softmax_inplace(isa, &mut y).unwrap();
            assert_eq!(bits(&y), bits(&want), "{isa:?} n={n}");
        }
        // Accuracy: each output within 1e-5 relative (a few ulp of exp, sum and division).
        let m = x.iter().fold(f64::NEG_INFINITY, |m, v| m.max(*v as f64));
        let e: Vec<f64> = x.iter().map(|v| (*v as f64 - m).exp()).collect();
        let s: f64 = e.iter().sum();
        for (got, e) in want.iter().zip(&e) {
            let t = e / s;
            assert!((*got as f64 - t).abs() <= 1e-5 * t + 1e-30, "n={n}");
        }
    }
}

#[test]
fn rmsnorm_matches_spec_and_f64() {
    let mut rng = Rng(7);
    for &n in LENGTHS {
        let x = rng.vec(n);
        let w: Vec<f32> = (0..n).map(|_| rng.unit()).collect();
        let eps = 1e-5f32;
        let inv = 1.0 / (ref_dot(&x, &x) / n as f32 + eps).sqrt();
        let want: Vec<f32> = x.iter().zip(&w).map(|(a, b)| (a * inv) * b).collect();
        for isa in simd_isas() {
            let mut y = vec![f32::NAN; n];
            rmsnorm(isa, &x, &w, eps, &mut y).unwrap();
            assert_eq!(bits(&y), bits(&want), "{isa:?} n={n}");
        }
        if n > 0 {
            let ss: f64 = x.iter().map(|v| *v as f64 * *v as f64).sum();
            let inv64 = 1.0 / (ss / n as f64 + eps as f64).sqrt();
            for i in 0..n {
                let t = x[i] as f64 * inv64 * w[i] as f64;
                assert!(
                    (want[i] as f64 - t).abs() <= 1e-6 * t.abs() + 1e-35,
                    "n={n}"
                );
            }
        }
    }
}

#[test]
fn silu_and_swiglu_match_spec_and_f64() {
    let mut rng = Rng(8);
    for &n in LENGTHS {
        let g: Vec<f32> = (0..n).map(|_| rng.unit() * 30.0).collect();
        let u = rng.vec(n);
        let want_silu: Vec<f32> = g.iter().map(|x| x / (1.0 + exp(-x))).collect();
        let want: Vec<f32> = want_silu.iter().zip(&u).map(|(s, u)| s * u).collect();
        for isa in simd_isas() {
            let mut s = g.clone();
            silu_inplace(isa, &mut s).unwrap();
            assert_eq!(bits(&s), bits(&want_silu), "{isa:?} n={n}");
            let mut y = vec![f32::NAN; n];
            swiglu(isa, &g, &u, &mut y).unwrap();
            assert_eq!(bits(&y), bits(&want), "{isa:?} n={n}");
        }
        for (x, got) in g.iter().zip(&want_silu) {
            let t = *x as f64 / (1.0 + (-*x as f64).exp());
            assert!(
                (*got as f64 - t).abs() <= 4e-7 * t.abs() + 1e-37,
                "silu({x})"
            );
            assert_eq!(silu(*x).to_bits(), got.to_bits());
        }
    }
}

// ---------- rule 7 ----------

#[test]
fn rope_tables_match_f64() {
    let (d, theta, max_pos) = (64, 10_000.0, 300);
    let t = RopeTable::new(d, theta, max_pos, None).unwrap();
    for pos in [0, 1, 7, 299] {
        let (c, s) = t.row(pos).unwrap();
        for j in 0..d / 2 {
            let a = pos as f64 / theta.powf(2.0 * j as f64 / d as f64);
            assert_eq!(c[j], a.cos() as f32);
            assert_eq!(s[j], a.sin() as f32);
        }
    }
    assert!(t.row(max_pos).is_err());
}

#[test]
fn rope_apply_is_rotate_half_without_fma() {
    let mut rng = Rng(9);
    let d = 8;
    let t = RopeTable::new(d, 500_000.0, 20, None).unwrap();
    let x: Vec<f32> = (0..2 * d).map(|_| rng.unit()).collect();
    let mut y = x.clone();
    t.apply(13, &mut y).unwrap();
    let (c, s) = t.row(13).unwrap();
    for head in 0..2 {
        let q = &x[head * d..][..d];
        let o = &y[head * d..][..d];
        for j in 0..d / 2 {
            let a = q[j] * c[j];
            let b = q[j + d / 2] * s[j];
            assert_eq!(o[j].to_bits(), (a - b).to_bits());
            let a = q[j + d / 2] * c[j];
            let b = q[j] * s[j];
            assert_eq!(o[j + d / 2].to_bits(), (a + b).to_bits());
        }
    }
    assert!(t.apply(13, &mut vec![0.0; d + 1]).is_err());
    assert!(RopeTable::new(7, 10_000.0, 4, None).is_err());
}

#[test]
fn llama3_scaling_against_hand_computed_values() {
    // d = 8, theta = 10000: inv_freq = 1, 0.1, 0.01, 0.001; wavelengths 2π/f =
    // 6.28, 62.8, 628.3, 6283.2. With original context 1024, low_freq_factor 1,
    // high_freq_factor 4: low_freq_wavelen = 1024, high_freq_wavelen = 256.
    //  j=0,1: wavelen < 256: unchanged.
    //  j=2: 628.3 is medium: smooth = (1024/628.3185 - 1) / 3 = 0.2099155...,
    //       inv = (1 - smooth) * 0.01 / 8 + smooth * 0.01.
    //  j=3: 6283 > 1024: inv = 0.001 / 8.
    let s = Llama3RopeScaling {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 1024.0,
    };
    let inv = rope_inv_freq(8, 10_000.0, Some(&s)).unwrap();
    let smooth = (1024.0 / (2.0 * std::f64::consts::PI / 0.01) - 1.0) / 3.0;
    assert!((smooth - 0.209_915_5).abs() < 1e-7);
    let want = [
        1.0,
        0.1,
        (1.0 - smooth) * 0.01 / 8.0 + smooth * 0.01,
        0.000_125,
    ];
    for (g, w) in inv.iter().zip(want) {
        assert!((g - w).abs() <= 1e-15 * w, "{g} vs {w}");
    }
    assert!((inv[2] - 0.003_086_761).abs() < 1e-10);
    let bad = Llama3RopeScaling {
        high_freq_factor: 1.0,
        ..s
    };
    assert!(rope_inv_freq(8, 10_000.0, Some(&bad)).is_err());
}

// ---------- rule 8 ----------

fn ref_attention(q: &[f32], k: &[f32], v: &[f32], len: usize, stride: usize) -> Vec<f32> {
    let d = q.len();
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    let scores: Vec<f32> = (0..len)
        .map(|j| ref_dot(q, &k[j * stride..j * stride + d]) * scale)
        .collect();
    let p = ref_softmax(&scores);
    (0..d)
        .map(|e| {
            let mut l = [0.0f32; 16];
            for j in 0..len {
                l[j % 16] = p[j].mul_add(v[j * stride + e], l[j % 16]);
            }
            ref_tree(&l)
        })
        .collect()
}

#[test]
fn attention_matches_spec_and_f64() {
    let mut rng = Rng(10);
    for d in [1, 8, 15, 16, 17, 64, 72] {
        for len in [0, 1, 2, 15, 16, 17, 33, 100] {
            let stride = d * 3;
            let q: Vec<f32> = (0..d).map(|_| rng.unit()).collect();
            let kv_len = (len * stride).max(1);
            let k: Vec<f32> = (0..kv_len).map(|_| rng.unit()).collect();
            let v: Vec<f32> = (0..kv_len).map(|_| rng.unit()).collect();
            let want = ref_attention(&q, &k, &v, len, stride);
            for isa in simd_isas() {
                let mut scores = vec![0.0; len];
                let mut out = vec![f32::NAN; d];
                attention(isa, &q, &k, &v, len, stride, &mut scores, &mut out).unwrap();
                assert_eq!(bits(&out), bits(&want), "{isa:?} d={d} len={len}");
            }
            if len > 0 {
                let s: Vec<f64> = (0..len)
                    .map(|j| f64_dot(&q, &k[j * stride..][..d]).0 / (d as f64).sqrt())
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for i in 0..d {
                    let t: f64 = (0..len).map(|j| e[j] / z * v[j * stride + i] as f64).sum();
                    assert!((want[i] as f64 - t).abs() <= 1e-5, "d={d} len={len}");
                }
            }
        }
    }
}

#[test]
fn attention_rejects_short_cache() {
    let q = [0.0f32; 4];
    let mut scores = [0.0f32; 3];
    let mut out = [0.0f32; 4];
    let kv = vec![0.0f32; 4 * 3 - 1];
    let isa = Isa::detect();
    assert!(attention(isa, &q, &kv, &kv, 3, 4, &mut scores, &mut out).is_err());
    assert!(attention(isa, &q, &kv, &kv, 2, 4, &mut scores, &mut out).is_ok());
    assert!(attention(isa, &q, &kv, &kv, 2, 3, &mut scores, &mut out).is_err());
    assert!(attention(isa, &q, &kv, &kv, 3, 4, &mut scores[..2], &mut out).is_err());
}

#[test]
fn gqa_head_mapping() {
    assert_eq!(kv_head(0, 9, 3).unwrap(), 0);
    assert_eq!(kv_head(2, 9, 3).unwrap(), 0);
    assert_eq!(kv_head(3, 9, 3).unwrap(), 1);
    assert_eq!(kv_head(8, 9, 3).unwrap(), 2);
    assert_eq!(kv_head(5, 8, 8).unwrap(), 5);
    assert!(kv_head(9, 9, 3).is_err());
    assert!(kv_head(0, 9, 2).is_err());
    assert!(kv_head(0, 9, 0).is_err());
}

#[test]
fn isa_detection_is_consistent() {
    assert!(Isa::detect().is_supported());
    assert!(Isa::supported().contains(&Isa::Portable));
    assert!(Isa::supported().contains(&Isa::detect()));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        assert_eq!(Isa::detect(), Isa::Avx512);
        assert!(Isa::supported().contains(&Isa::Avx2));
    }
}
