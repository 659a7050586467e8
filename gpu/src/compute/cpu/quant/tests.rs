//! Every path of the quantized matmul against its definition: `dequantize_row` of each
//! weight row, then the portable single-threaded f32 matmul, bit for bit.

use crate::compute::backend::{Backend, HostWeights, WeightShape};
use crate::compute::{ComputeError, CpuBackend, Isa, QuantType, dequantize_row, matmul};

const BLOCK_TYPES: [QuantType; 5] = [
    QuantType::Q8_0,
    QuantType::Q4_0,
    QuantType::Q4_1,
    QuantType::Q4_K,
    QuantType::Q6_K,
];

/// Scale bits worth covering: ordinary, both zeros, subnormals, the largest finite halves,
/// negatives.
const SPECIAL_F16: [u16; 10] = [
    0x3c00, 0x8000, 0x0000, 0x0001, 0x03ff, 0x83ff, 0x7bff, 0xfbff, 0x2e66, 0xb4cd,
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn byte(&mut self) -> u8 {
        (self.next() >> 32) as u8
    }

    /// A small random half (|v| < 0.06), or one of the special ones now and then.
    fn scale(&mut self) -> [u8; 2] {
        let bits = if self.next().is_multiple_of(5) {
            SPECIAL_F16[(self.next() % SPECIAL_F16.len() as u64) as usize]
        } else {
            (self.next() as u16 & 0x83ff) | 0x2400
        };
        bits.to_le_bytes()
    }

    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn xs(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| match i % 29 {
                7 => -0.0,
                13 => 1.0e-40,
                _ => self.unit(),
            })
            .collect()
    }
}

/// Where each format keeps its f16 fields.
fn f16_fields(ty: QuantType) -> &'static [usize] {
    match ty {
        QuantType::Q8_0 | QuantType::Q4_0 => &[0],
        QuantType::Q4_1 | QuantType::Q4_K => &[0, 2],
        QuantType::Q6_K => &[208],
        _ => &[],
    }
}

/// `rows` rows of `cols` random weights of `ty`: random value bytes, f16 fields from
/// [`Rng::scale`].
fn random_matrix(rng: &mut Rng, ty: QuantType, rows: usize, cols: usize) -> Vec<u8> {
    let mut data: Vec<u8> = (0..ty.matrix_bytes(rows, cols).expect("shape"))
        .map(|_| rng.byte())
        .collect();
    for block in data.chunks_exact_mut(ty.block_bytes()) {
        for &at in f16_fields(ty) {
            block[at..at + 2].copy_from_slice(&rng.scale());
        }
    }
    data
}

fn dequantized(ty: QuantType, rows: usize, cols: usize, data: &[u8]) -> Vec<f32> {
    let rb = ty.row_bytes(cols).expect("row");
    let mut out = vec![0.0f32; rows * cols];
    for (r, o) in out.chunks_exact_mut(cols).enumerate() {
        dequantize_row(ty, &data[r * rb..(r + 1) * rb], o).expect("dequantize");
    }
    out
}

fn same_bits(a: &[f32], b: &[f32]) -> Option<usize> {
    assert_eq!(a.len(), b.len());
    (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits() && !(a[i].is_nan() && b[i].is_nan()))
}

fn k_values(ty: QuantType) -> &'static [usize] {
    if ty.block_elems() == 256 {
        &[256, 768]
    } else {
        &[32, 96, 576]
    }
}

#[test]
fn every_type_isa_thread_count_and_shape_matches_the_definition() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for ty in BLOCK_TYPES {
        for &k in k_values(ty) {
            for cols in [1, 5, 50] {
                let data = random_matrix(&mut rng, ty, cols, k);
                let values = dequantized(ty, cols, k, &data);
                let bias = rng.xs(cols);
                for rows in [1, 2, 3, 4, 5, 17, 33] {
                    let x = rng.xs(rows * k);
                    for with_bias in [false, true] {
                        let bias = with_bias.then_some(&bias[..]);
                        let mut want = vec![0.0f32; rows * cols];
                        matmul(
                            Isa::Portable,
                            1,
                            &x,
                            rows,
                            k,
                            &values,
                            cols,
                            bias,
                            &mut want,
                        )
                        .expect("reference");
                        for isa in Isa::supported() {
                            for threads in [1, 2, 3] {
                                let b = CpuBackend::new(isa, threads).expect("backend");
                                let w = b
                                    .load_weights(vec![HostWeights::quantized(
                                        ty,
                                        cols,
                                        k,
                                        data.clone(),
                                    )])
                                    .expect("load");
                                assert_eq!(w[0].storage(), ty);
                                let mut got = vec![f32::NAN; rows * cols];
                                b.matmul(&x, rows, &w[0], bias, &mut got).expect("matmul");
                                if let Some(i) = same_bits(&got, &want) {
                                    panic!(
                                        "{ty} {isa:?}x{threads} [{rows}, {k}] x [{cols}, {k}] \
                                         bias {with_bias}: element {i} is {:e}, want {:e}",
                                        got[i], want[i]
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn wide_outputs_split_over_threads_match() {
    // Enough columns for every thread to get several tiles, including the prefetching ones,
    // and a column count that is not a multiple of 16 or of the split.
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let (k, cols) = (576, 403);
    for ty in [QuantType::Q8_0, QuantType::Q4_1] {
        let data = random_matrix(&mut rng, ty, cols, k);
        let values = dequantized(ty, cols, k, &data);
        for rows in [1, 16] {
            let x = rng.xs(rows * k);
            let mut want = vec![0.0f32; rows * cols];
            matmul(
                Isa::Portable,
                1,
                &x,
                rows,
                k,
                &values,
                cols,
                None,
                &mut want,
            )
            .expect("ref");
            for isa in Isa::supported() {
                for threads in [1, 2, 3] {
                    let b = CpuBackend::new(isa, threads).expect("backend");
                    let w = b
                        .load_weights(vec![HostWeights::quantized(ty, cols, k, data.clone())])
                        .expect("load");
                    let mut got = vec![0.0f32; rows * cols];
                    b.matmul(&x, rows, &w[0], None, &mut got).expect("matmul");
                    assert_eq!(
                        same_bits(&got, &want),
                        None,
                        "{ty} {isa:?}x{threads} rows {rows}"
                    );
                }
            }
        }
    }
}

#[test]
fn embed_and_transpose_use_rule_9() {
    let mut rng = Rng(0x0bad_cafe_f00d_1234);
    for ty in BLOCK_TYPES {
        let (rows, cols) = (7, ty.block_elems() * 2);
        let data = random_matrix(&mut rng, ty, rows, cols);
        let values = dequantized(ty, rows, cols, &data);
        for isa in Isa::supported() {
            let b = CpuBackend::new(isa, 2).expect("backend");
            let w = b
                .load_weights(vec![HostWeights::quantized(ty, rows, cols, data.clone())])
                .expect("load");
            assert_eq!(w[0].resident_bytes(), data.len());
            assert!(w[0].values().is_empty());
            assert_eq!(w[0].dequantized().expect("values"), values);
            let tokens = [3u32, 0, 6, 3];
            let mut out = vec![0.0f32; tokens.len() * cols];
            b.embed(&w[0], &tokens, &mut out).expect("embed");
            for (row, &t) in out.chunks_exact(cols).zip(&tokens) {
                let want = &values[t as usize * cols..][..cols];
                assert_eq!(same_bits(row, want), None, "{ty} embed");
            }
            assert!(
                b.embed(&w[0], &[7], &mut out[..cols]).is_err(),
                "outside the table"
            );
            // The transpose shares the blocks (no f32 copy) and computes exactly what the
            // f32 transpose of the dequantized values computes, on every ISA and split.
            let t = b.transposed(&w[0]).expect("transposed");
            assert_eq!((t.rows(), t.cols(), t.storage()), (cols, rows, ty));
            assert_eq!(t.resident_bytes(), data.len());
            let wide = crate::compute::transpose(&values, rows, cols);
            assert_eq!(t.dequantized().expect("values"), wide);
            assert!(b.embed(&t, &[0], &mut out[..rows]).is_err(), "no rows");
            let n = 5;
            let x: Vec<f32> = (0..n * rows)
                .map(|i| ((i * 7919) % 23) as f32 * 0.37 - 4.0)
                .collect();
            let mut want = vec![0.0f32; n * cols];
            crate::compute::matmul(Isa::Portable, 1, &x, n, rows, &wide, cols, None, &mut want)
                .expect("f32 matmul");
            for isa in Isa::supported() {
                for threads in [1, 2, 3] {
                    let bt = CpuBackend::new(isa, threads).expect("backend");
                    let mut got = vec![0.0f32; n * cols];
                    bt.matmul(&x, n, &t, None, &mut got)
                        .expect("transposed matmul");
                    assert_eq!(same_bits(&got, &want), None, "{ty} {isa:?} x{threads}");
                    // Transposed back, it is the original matrix again.
                    let back = bt.transposed(&t).expect("back");
                    let y: Vec<f32> = (0..n * cols).map(|i| (i % 11) as f32 - 5.0).collect();
                    let (mut a, mut c) = (vec![0.0f32; n * rows], vec![0.0f32; n * rows]);
                    bt.matmul(&y, n, &back, None, &mut a).expect("back");
                    bt.matmul(&y, n, &w[0], None, &mut c).expect("original");
                    assert_eq!(same_bits(&a, &c), None, "{ty} transposed twice");
                }
            }
        }
    }
}

#[test]
fn f16_and_bf16_files_are_widened_at_load() {
    let halves: Vec<u16> = vec![0x3c00, 0x8000, 0x0001, 0x7bff, 0xc000, 0x3555, 0x0400];
    let data: Vec<u8> = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
    let b = CpuBackend::new(Isa::Portable, 1).expect("backend");
    for ty in [QuantType::F16, QuantType::BF16] {
        let w = b
            .load_weights(vec![HostWeights::quantized(ty, 1, 7, data.clone())])
            .expect("load");
        assert_eq!(w[0].storage(), QuantType::F32);
        let want: Vec<f32> = halves
            .iter()
            .map(|&h| match ty {
                QuantType::F16 => half::f16::from_bits(h).to_f32(),
                _ => f32::from_bits(u32::from(h) << 16),
            })
            .collect();
        assert_eq!(same_bits(w[0].values(), &want), None);
    }
}

#[test]
fn bad_lengths_are_errors() {
    let mut out = [0.0f32; 64];
    for ty in BLOCK_TYPES {
        let n = ty.block_elems();
        let good = vec![0u8; ty.block_bytes()];
        let mut big = vec![0.0f32; n + 1];
        assert!(
            dequantize_row(ty, &good, &mut big).is_err(),
            "{ty}: not whole blocks"
        );
        let mut row = vec![0.0f32; n];
        assert!(
            dequantize_row(ty, &good[1..], &mut row).is_err(),
            "{ty}: short"
        );
        assert!(dequantize_row(ty, &[good.clone(), vec![0]].concat(), &mut row).is_err());
        assert!(dequantize_row(ty, &good, &mut row).is_ok());

        let b = CpuBackend::new(Isa::detect(), 2).expect("backend");
        let short = HostWeights::quantized(ty, 2, n, good.clone());
        assert!(matches!(
            b.load_weights(vec![short]),
            Err(ComputeError::Length { .. })
        ));
        let ragged = HostWeights::quantized(ty, 1, n + 16, good.clone());
        assert!(b.load_weights(vec![ragged]).is_err(), "{ty}: ragged row");
        let huge = HostWeights::quantized(ty, usize::MAX, n, good.clone());
        assert!(b.load_weights(vec![huge]).is_err(), "{ty}: overflow");

        let w = b
            .load_weights(vec![HostWeights::quantized(ty, 1, n, good)])
            .expect("load");
        let x = vec![1.0f32; n];
        assert!(
            b.matmul(&x[1..], 1, &w[0], None, &mut out[..1]).is_err(),
            "{ty}: x"
        );
        assert!(
            b.matmul(&x, 1, &w[0], None, &mut out[..2]).is_err(),
            "{ty}: out"
        );
        assert!(
            b.matmul(&x, 1, &w[0], Some(&[0.0; 2]), &mut out[..1])
                .is_err(),
            "{ty}: bias"
        );
        assert!(b.matmul(&x, 1, &w[0], Some(&[0.5]), &mut out[..1]).is_ok());
        assert_eq!(out[0], 0.5);
    }
}

#[test]
fn special_scales_follow_the_formulas() {
    // Q4_1 with d = -0 and m = the smallest subnormal: (-0 * q) + m = m for every weight.
    let mut block = vec![0u8; 20];
    block[..2].copy_from_slice(&0x8000u16.to_le_bytes());
    block[2..4].copy_from_slice(&0x0001u16.to_le_bytes());
    block[4..].fill(0xF7);
    let mut out = [0.0f32; 32];
    dequantize_row(QuantType::Q4_1, &block, &mut out).expect("q4_1");
    assert!(
        out.iter()
            .all(|v| v.to_bits() == 2.0f32.powi(-24).to_bits())
    );
    // Q8_0 with d = -0: q * -0 is -0 for q >= 0 and +0 for q < 0.
    let mut block = vec![0u8; 34];
    block[..2].copy_from_slice(&0x8000u16.to_le_bytes());
    block[2] = 5;
    block[3] = 0xFB;
    dequantize_row(QuantType::Q8_0, &block, &mut out).expect("q8_0");
    assert_eq!(out[0].to_bits(), (-0.0f32).to_bits());
    assert_eq!(out[1].to_bits(), 0.0f32.to_bits());
    // Q4_0 with the largest half: 65504 * (15 - 8) and 65504 * (0 - 8).
    let mut block = vec![0u8; 18];
    block[..2].copy_from_slice(&0x7bffu16.to_le_bytes());
    block[2] = 0x0F;
    dequantize_row(QuantType::Q4_0, &block, &mut out).expect("q4_0");
    assert_eq!(
        (out[0], out[16], out[1]),
        (65504.0 * 7.0, -65504.0 * 8.0, -65504.0 * 8.0)
    );
}
