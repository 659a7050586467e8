//! Cases for quantized weights (rule 9 under rules 2 and the embedding lookup): GGUF blocks
//! of every block format, loaded as they are, multiplied, looked up and transposed.
//!
//! The blocks are seeded random bytes with their f16 fields drawn from ordinary scales and
//! the awkward ones (both zeros, subnormals, the largest finite half, negatives), so every
//! nibble, sign and sub-block layout is reached; the weights stay finite, so outputs are
//! compared on bits (NaN only through `x`'s own specials, compared by NaN-ness).

use super::inputs::Rng;
use super::{Compare, Nan};
use crate::compute::{Backend, ComputeError, HostWeights, QuantType, WeightShape};

const BLOCK_TYPES: [QuantType; 5] = [
    QuantType::Q8_0,
    QuantType::Q4_0,
    QuantType::Q4_1,
    QuantType::Q4_K,
    QuantType::Q6_K,
];

/// f16 field bits worth reaching, besides ordinary scales.
const AWKWARD_F16: [u16; 8] = [
    0x0000, 0x8000, 0x0001, 0x83ff, 0x0400, 0x7bff, 0xfbff, 0xbc00,
];

/// `(rows, blocks per weight row, weight rows)`: one row and a few (register tiles, the
/// panel path from 8 rows on), columns around the 16-column thread split.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 3, 17),
    (2, 2, 5),
    (3, 1, 33),
    (4, 2, 16),
    (5, 1, 9),
    (9, 2, 20),
    (17, 1, 3),
    (0, 1, 4),
];

fn f16_fields(ty: QuantType) -> &'static [usize] {
    match ty {
        QuantType::Q8_0 | QuantType::Q4_0 => &[0],
        QuantType::Q4_1 | QuantType::Q4_K => &[0, 2],
        QuantType::Q6_K => &[208],
        _ => &[],
    }
}

/// A `[rows, cols]` matrix of random blocks of `ty`.
pub(super) fn blocks(rng: &mut Rng, ty: QuantType, rows: usize, cols: usize) -> HostWeights {
    let n = ty.matrix_bytes(rows, cols).unwrap_or(0);
    let mut data: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
    for block in data.chunks_exact_mut(ty.block_bytes()) {
        for &at in f16_fields(ty) {
            let bits = if rng.below(4) == 0 {
                AWKWARD_F16[rng.below(AWKWARD_F16.len())]
            } else {
                // |v| in [2^-9, 2^-5), either sign.
                (rng.next_u64() as u16 & 0x8fff) | 0x1800
            };
            block[at..at + 2].copy_from_slice(&bits.to_le_bytes());
        }
    }
    HostWeights::quantized(ty, rows, cols, data)
}

pub(super) fn all<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    let mut rng = Rng::new(0x5eed_0051);
    for ty in BLOCK_TYPES {
        for &(rows, nb, cols) in SHAPES {
            let k = nb * ty.block_elems();
            let w = blocks(&mut rng, ty, cols, k);
            let x = if rows % 2 == 1 {
                rng.specials(rows * k)
            } else {
                rng.vec(rows * k)
            };
            let bias = rng.vec(cols);
            for with_bias in [false, true] {
                let bias = with_bias.then_some(&bias[..]);
                cmp.same(
                    "quantized matmul",
                    || format!("{ty} [{rows}, {k}] x [{cols}, {k}]ᵀ, bias: {with_bias}"),
                    Nan::Payload,
                    &super::forward::matmul_once(c, &x, rows, &w, bias),
                    &super::forward::matmul_once(r, &x, rows, &w, bias),
                );
            }
        }
        let (vocab, hidden) = (11, 2 * ty.block_elems());
        let table = blocks(&mut rng, ty, vocab, hidden);
        let tokens = [0u32, 10, 3, 3, 7];
        cmp.same(
            "quantized embed",
            || format!("{ty} [{vocab}, {hidden}]"),
            Nan::Bits,
            &embed(c, &table, &tokens),
            &embed(r, &table, &tokens),
        );
        cmp.same(
            "quantized embed",
            || format!("{ty}: token outside the table"),
            Nan::Bits,
            &embed(c, &table, &[11]),
            &embed(r, &table, &[11]),
        );
        let g = rng.vec(3 * vocab);
        cmp.same(
            "quantized transposed",
            || format!("g [3, {vocab}] · {ty} [{vocab}, {hidden}]"),
            Nan::Payload,
            &transposed_product(c, &table, &g),
            &transposed_product(r, &table, &g),
        );
        // Refusals: a byte short, and a row that is not a whole number of blocks.
        let HostWeights::Quantized { data, .. } = &table else {
            continue;
        };
        for (name, bad) in [
            (
                "a byte short",
                HostWeights::quantized(ty, vocab, hidden, data[1..].to_vec()),
            ),
            (
                "a ragged row",
                HostWeights::quantized(ty, 1, hidden + 16, data[..ty.block_bytes()].to_vec()),
            ),
        ] {
            cmp.same(
                "quantized load_weights",
                || format!("{ty}: {name}"),
                Nan::Bits,
                &c.load_weights(vec![bad.clone()]).map(|_| Vec::new()),
                &r.load_weights(vec![bad]).map(|_| Vec::new()),
            );
        }
    }
}

fn embed<B: Backend>(b: &B, table: &HostWeights, tokens: &[u32]) -> Result<Vec<f32>, ComputeError> {
    let t = b.load_weights(vec![table.clone()])?;
    let t = t.first().ok_or(ComputeError::Invalid {
        op: "conformance",
        reason: "load_weights returned nothing",
    })?;
    let mut out = vec![0.0f32; tokens.len() * t.cols()];
    b.embed(t, tokens, &mut out)?;
    Ok(out)
}

/// `g · w` through the transposed copy (`g` is `[rows, w.rows]`).
fn transposed_product<B: Backend>(
    b: &B,
    w: &HostWeights,
    g: &[f32],
) -> Result<Vec<f32>, ComputeError> {
    let loaded = b.load_weights(vec![w.clone()])?;
    let w = loaded.first().ok_or(ComputeError::Invalid {
        op: "conformance",
        reason: "load_weights returned nothing",
    })?;
    let t = b.transposed(w)?;
    if (t.rows(), t.cols()) != (w.cols(), w.rows()) {
        return Err(ComputeError::Invalid {
            op: "conformance",
            reason: "transposed has the wrong shape",
        });
    }
    let rows = g.len() / w.rows().max(1);
    let mut out = vec![0.0f32; rows * t.rows()];
    b.matmul(g, rows, &t, None, &mut out)?;
    Ok(out)
}
