//! Rule 9 against the `gguf` Python package: each fixture in `fixtures/quant` holds ggml
//! blocks and what `gguf.quants.dequantize` makes of them (made once, offline, by
//! `make_quant_fixtures.py`); our `dequantize_row`, and the CPU backend's embedding lookup
//! (the SIMD-free path) and quantized matmul (the SIMD paths), must give the same bits.

use std::path::PathBuf;

use olc_gpu::compute::{Backend, CpuBackend, HostWeights, Isa, QuantType, dequantize_row};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/quant")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixture's blocks and reference values.
fn load(ty: QuantType) -> (Vec<u8>, Vec<f32>) {
    let blocks = fixture(&format!("{}.blocks", ty.name()));
    let values: Vec<f32> = fixture(&format!("{}.f32", ty.name()))
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(
        blocks.len() / ty.block_bytes() * ty.block_elems(),
        values.len(),
        "{ty}: fixture sizes"
    );
    assert!(
        values.len() >= 64,
        "{ty}: fixture too small to mean anything"
    );
    (blocks, values)
}

fn first_difference(got: &[f32], want: &[f32]) -> Option<(usize, u32, u32)> {
    got.iter()
        .zip(want)
        .enumerate()
        .find(|(_, (g, w))| g.to_bits() != w.to_bits())
        .map(|(i, (g, w))| (i, g.to_bits(), w.to_bits()))
}

const ALL: [QuantType; 7] = [
    QuantType::F16,
    QuantType::BF16,
    QuantType::Q8_0,
    QuantType::Q4_0,
    QuantType::Q4_1,
    QuantType::Q4_K,
    QuantType::Q6_K,
];

#[test]
fn dequantize_row_matches_gguf_bit_for_bit() {
    for ty in ALL {
        let (blocks, want) = load(ty);
        let mut got = vec![0.0f32; want.len()];
        dequantize_row(ty, &blocks, &mut got).expect("dequantize");
        assert_eq!(
            first_difference(&got, &want),
            None,
            "{ty}: (index, ours, gguf's)"
        );
    }
}

#[test]
fn backend_embed_matches_gguf_bit_for_bit() {
    for ty in ALL {
        let (blocks, want) = load(ty);
        let cols = ty.block_elems().max(32);
        let rows = want.len() / cols;
        let used = rows * cols;
        let bytes = ty.matrix_bytes(rows, cols).expect("size");
        let b = CpuBackend::new(Isa::detect(), 2).expect("backend");
        let table = b
            .load_weights(vec![HostWeights::quantized(
                ty,
                rows,
                cols,
                blocks[..bytes].to_vec(),
            )])
            .expect("load");
        let tokens: Vec<u32> = (0..rows as u32).rev().collect();
        let mut got = vec![0.0f32; used];
        b.embed(&table[0], &tokens, &mut got).expect("embed");
        for (row, &t) in got.chunks_exact(cols).zip(&tokens) {
            let w = &want[t as usize * cols..][..cols];
            assert_eq!(first_difference(row, w), None, "{ty}: row {t}");
        }
    }
}

#[test]
fn quantized_matmul_reads_the_same_values_as_gguf() {
    // A one-hot x picks weight j of every row out of the dot product exactly
    // (fma(1, w, 0) = w, the other lanes stay +0, and w + 0 = w unless w = -0).
    for ty in ALL.into_iter().filter(|t| t.is_block_quantized()) {
        let (blocks, want) = load(ty);
        let cols = ty.block_elems();
        let rows = want.len() / cols;
        for isa in Isa::supported() {
            let b = CpuBackend::new(isa, 2).expect("backend");
            let w = b
                .load_weights(vec![HostWeights::quantized(ty, rows, cols, blocks.clone())])
                .expect("load");
            for j in [0, 1, 15, 16, 17, cols - 1] {
                let mut x = vec![0.0f32; cols];
                x[j] = 1.0;
                let mut got = vec![0.0f32; rows];
                b.matmul(&x, 1, &w[0], None, &mut got).expect("matmul");
                for (r, g) in got.iter().enumerate() {
                    let v = want[r * cols + j];
                    let v = if v == 0.0 { 0.0 } else { v };
                    assert_eq!(
                        g.to_bits(),
                        v.to_bits(),
                        "{ty} {isa:?}: row {r}, weight {j}"
                    );
                }
            }
        }
    }
}
