//! Cases for the inference ops: rules 1–8, weights, embeddings and LoRA products.

use super::inputs::{LENGTHS, Rng};
use super::{Compare, Nan};
use crate::compute::{
    AttentionShape, Backend, ComputeError, HostWeights, KvView, Llama3RopeScaling, LoraProduct,
    MatrixRef, QueryRow, RopeTable, WeightShape,
};

pub(super) fn all<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    dot_and_sum(c, r, cmp);
    exp(c, r, cmp);
    softmax(c, r, cmp);
    rmsnorm(c, r, cmp);
    activations(c, r, cmp);
    matmul(c, r, cmp);
    matmul_slices(c, r, cmp);
    weights_together(c, r, cmp);
    embed(c, r, cmp);
    transposed(c, r, cmp);
    lora(c, r, cmp);
    rope(c, r, cmp);
    attention(c, r, cmp);
}

/// `(rows, k, cols)`: k = 1, k below and around 16, rows around every register tile (1, 2,
/// 4) and past the 64-row cache block, columns around the 16-column thread split.
pub(super) const MATMUL_SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 1, 17),
    (3, 1, 5),
    (1, 5, 3),
    (2, 15, 16),
    (4, 16, 4),
    (5, 17, 33),
    (7, 33, 20),
    (1, 64, 130),
    (8, 100, 9),
    (3, 192, 48),
    (67, 20, 18),
    (0, 8, 4),
];

fn dot_and_sum<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    let mut rng = Rng::new(0x5eed_0001);
    for &n in LENGTHS {
        for special in [false, true] {
            let (a, b) = if special {
                (rng.specials(n), rng.specials(n))
            } else {
                (rng.vec(n), rng.vec(n))
            };
            let case = || format!("n = {n}, special values: {special}");
            let dot = |x: &dyn Fn() -> Result<f32, ComputeError>| x().map(|v| vec![v]);
            cmp.same(
                "dot",
                case,
                Nan::Payload,
                &dot(&|| c.dot(&a, &b)),
                &dot(&|| r.dot(&a, &b)),
            );
            cmp.same(
                "sum",
                case,
                Nan::Payload,
                &Ok(vec![c.sum(&a)]),
                &Ok(vec![r.sum(&a)]),
            );
        }
        // Lanes that only ever see -0.0 must stay -0.0 until the tree, tails included.
        let z = vec![-0.0f32; n];
        let ones = vec![1.0f32; n];
        cmp.same(
            "dot",
            || format!("n = {n} of -0.0 · 1"),
            Nan::Bits,
            &c.dot(&z, &ones).map(|v| vec![v]),
            &r.dot(&z, &ones).map(|v| vec![v]),
        );
        cmp.same(
            "sum",
            || format!("n = {n} of -0.0"),
            Nan::Bits,
            &Ok(vec![c.sum(&z)]),
            &Ok(vec![r.sum(&z)]),
        );
    }
    let (a, b) = (rng.vec(9), rng.vec(8));
    cmp.same(
        "dot",
        || "lengths 9 and 8".into(),
        Nan::Bits,
        &c.dot(&a, &b).map(|v| vec![v]),
        &r.dot(&a, &b).map(|v| vec![v]),
    );
}

fn exp<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    let mut rng = Rng::new(0x5eed_0002);
    let run = |b: &dyn Fn(&mut [f32]) -> Result<(), ComputeError>, x: &[f32]| {
        let mut v = x.to_vec();
        b(&mut v).map(|()| v)
    };
    let edges: Vec<f32> = [
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(0x42b1_7217), // the last x whose exp is finite
        f32::from_bits(0x42b1_7218),
        -104.0,
        f32::from_bits(0xc2cf_ffff), // just above -104
        -87.5,                       // subnormal results from here down
        -100.0,
        -103.9,
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        f32::MIN_POSITIVE,
        f32::from_bits(1),
        f32::MAX,
        -f32::MAX,
        1.0,
        -1.0,
        0.5,
    ]
    .into();
    let sweep: Vec<f32> = (0..4099).map(|i| -110.0 + i as f32 * 0.05).collect();
    let mut cases: Vec<(String, Vec<f32>)> = vec![
        ("edge values".into(), edges),
        ("a sweep over [-110, 95)".into(), sweep),
    ];
    for &n in LENGTHS {
        let mut x = rng.specials(n);
        for v in &mut x {
            *v *= 30.0;
        }
        cases.push((format!("n = {n}, scaled special values"), x));
    }
    for (what, x) in &cases {
        cmp.same(
            "exp",
            || what.clone(),
            Nan::Bits,
            &run(&|v| c.exp(v), x),
            &run(&|v| r.exp(v), x),
        );
    }
}

fn softmax<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    let mut rng = Rng::new(0x5eed_0003);
    let mut rows: Vec<(String, Vec<f32>)> = Vec::new();
    for &n in LENGTHS {
        let mut x = rng.plain(n, 10.0);
        rows.push((format!("n = {n}"), x.clone()));
        // Masked positions (-inf), as a causal mask would leave them.
        for (i, v) in x.iter_mut().enumerate() {
            if i % 3 == 1 {
                *v = f32::NEG_INFINITY;
            }
        }
        rows.push((format!("n = {n}, every third -inf"), x));
        rows.push((format!("n = {n}, special values"), rng.specials(n)));
    }
    rows.push(("all -inf".into(), vec![f32::NEG_INFINITY; 19]));
    rows.push(("one +inf".into(), vec![1.0, f32::INFINITY, 2.0]));
    rows.push(("a NaN".into(), vec![1.0, f32::NAN, 2.0, 3.0]));
    rows.push(("huge spread".into(), vec![-1e30, 0.0, 1e30, 88.0, -88.0]));
    for (what, x) in &rows {
        let go = |b: &dyn Fn(&mut [f32]) -> Result<(), ComputeError>| {
            let mut v = x.clone();
            b(&mut v).map(|()| v)
        };
        cmp.same(
            "softmax",
            || what.clone(),
            Nan::Payload,
            &go(&|v| c.softmax(v)),
            &go(&|v| r.softmax(v)),
        );
    }
}

fn rmsnorm<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    let mut rng = Rng::new(0x5eed_0004);
    for &n in &[1usize, 2, 7, 15, 16, 17, 64, 65, 100] {
        for rows in [1usize, 3] {
            for eps in [1e-5f32, 1e-6] {
                let x = rng.vec(rows * n);
                let w = rng.plain(n, 2.0);
                let case = || format!("{rows} rows of {n}, eps {eps:e}");
                let go = |b: &dyn Fn(&mut [f32]) -> Result<(), ComputeError>| {
                    let mut out = vec![0.0f32; rows * n];
                    b(&mut out).map(|()| out)
                };
                cmp.same(
                    "rmsnorm",
                    case,
                    Nan::Payload,
                    &go(&|o| c.rmsnorm(&x, &w, eps, o)),
                    &go(&|o| r.rmsnorm(&x, &w, eps, o)),
                );
            }
        }
    }
    let w = rng.plain(17, 1.0);
    let zeros = vec![0.0f32; 34];
    let huge = vec![1e30f32; 17];
    for (what, x, out_len) in [
        ("a row of zeros", &zeros, 34),
        ("a row whose sum of squares overflows", &huge, 17),
        ("rows that do not tile x", &zeros[..33].to_vec(), 33),
        ("out of the wrong length", &zeros, 17),
    ] {
        let go = |b: &dyn Fn(&mut [f32]) -> Result<(), ComputeError>| {
            let mut out = vec![0.0f32; out_len];
            b(&mut out).map(|()| out)
        };
        cmp.same(
            "rmsnorm",
            || what.into(),
            Nan::Payload,
            &go(&|o| c.rmsnorm(x, &w, 1e-5, o)),
            &go(&|o| r.rmsnorm(x, &w, 1e-5, o)),
        );
    }
}

fn activations<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    let mut rng = Rng::new(0x5eed_0005);
    for &n in LENGTHS.iter().chain(&[64 * 3 + 5]) {
        let gate: Vec<f32> = rng.specials(n).iter().map(|v| v * 20.0).collect();
        let up = rng.vec(n);
        let silu = |b: &dyn Fn(&mut [f32]) -> Result<(), ComputeError>| {
            let mut v = gate.clone();
            b(&mut v).map(|()| v)
        };
        cmp.same(
            "silu",
            || format!("n = {n}"),
            Nan::Payload,
            &silu(&|v| c.silu(v)),
            &silu(&|v| r.silu(v)),
        );
        let swiglu = |b: &dyn Fn(&mut [f32]) -> Result<(), ComputeError>| {
            let mut out = vec![0.0f32; n];
            b(&mut out).map(|()| out)
        };
        cmp.same(
            "swiglu",
            || format!("n = {n}"),
            Nan::Payload,
            &swiglu(&|o| c.swiglu(&gate, &up, o)),
            &swiglu(&|o| r.swiglu(&gate, &up, o)),
        );
    }
    let (gate, up) = (rng.vec(9), rng.vec(8));
    let mut o = vec![0.0f32; 9];
    cmp.same(
        "swiglu",
        || "up shorter than gate".into(),
        Nan::Payload,
        &c.swiglu(&gate, &up, &mut o).map(|()| Vec::new()),
        &r.swiglu(&gate, &up, &mut o).map(|()| Vec::new()),
    );
}

/// `x·wᵀ (+ bias)` with `w` loaded into `b` first.
pub(super) fn matmul_once<B: Backend>(
    b: &B,
    x: &[f32],
    rows: usize,
    w: &HostWeights,
    bias: Option<&[f32]>,
) -> Result<Vec<f32>, ComputeError> {
    let loaded = b.load_weights(vec![w.clone()])?;
    let w = loaded.first().ok_or(ComputeError::Invalid {
        op: "conformance",
        reason: "load_weights returned nothing",
    })?;
    let mut out = vec![0.0f32; rows * w.rows()];
    b.matmul(x, rows, w, bias, &mut out)?;
    Ok(out)
}

fn matmul<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    let mut rng = Rng::new(0x5eed_0006);
    for (i, &(rows, k, cols)) in MATMUL_SHAPES.iter().enumerate() {
        let x = if i % 4 == 3 {
            rng.specials(rows * k)
        } else {
            rng.vec(rows * k)
        };
        let w = rng.matrix(cols, k);
        let bias = rng.vec(cols);
        for with_bias in [false, true] {
            let bias = with_bias.then_some(&bias[..]);
            let case = || format!("[{rows}, {k}] x [{cols}, {k}]ᵀ, bias: {with_bias}");
            cmp.same(
                "matmul",
                case,
                Nan::Payload,
                &matmul_once(c, &x, rows, &w, bias),
                &matmul_once(r, &x, rows, &w, bias),
            );
        }
    }
    let w = rng.matrix(4, 8);
    let x = rng.vec(3 * 8 - 1);
    cmp.same(
        "matmul",
        || "x one element short".into(),
        Nan::Payload,
        &matmul_once(c, &x, 3, &w, None),
        &matmul_once(r, &x, 3, &w, None),
    );
    let bias = rng.vec(3);
    let x = rng.vec(3 * 8);
    cmp.same(
        "matmul",
        || "bias of the wrong length".into(),
        Nan::Payload,
        &matmul_once(c, &x, 3, &w, Some(&bias)),
        &matmul_once(r, &x, 3, &w, Some(&bias)),
    );
    let bad = HostWeights::f32(4, 8, rng.vec(31));
    cmp.same(
        "load_weights",
        || "data shorter than rows x cols".into(),
        Nan::Payload,
        &c.load_weights(vec![bad.clone()]).map(|_| Vec::new()),
        &r.load_weights(vec![bad]).map(|_| Vec::new()),
    );
}

fn matmul_slices<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    let mut rng = Rng::new(0x5eed_0007);
    for &(rows, k, cols) in MATMUL_SHAPES {
        let (x, w) = (rng.vec(rows * k), rng.vec(cols * k));
        let go = |b: &dyn Fn(&mut [f32]) -> Result<(), ComputeError>| {
            let mut out = vec![0.0f32; rows * cols];
            b(&mut out).map(|()| out)
        };
        cmp.same(
            "matmul_slices",
            || format!("[{rows}, {k}] x [{cols}, {k}]ᵀ"),
            Nan::Payload,
            &go(&|o| c.matmul_slices(&x, rows, k, &w, cols, o)),
            &go(&|o| r.matmul_slices(&x, rows, k, &w, cols, o)),
        );
    }
}

/// Several matrices loaded in one call (the CPU backend packs them into one arena) must
/// each still be the matrix it was.
fn weights_together<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    let mut rng = Rng::new(0x5eed_0008);
    let shapes = [(17, 5), (16, 16), (3, 33), (1, 1), (40, 7)];
    let matrices: Vec<HostWeights> = shapes.iter().map(|&(o, i)| rng.matrix(o, i)).collect();
    let (cw, rw) = match (c.load_weights(matrices.clone()), r.load_weights(matrices)) {
        (Ok(cw), Ok(rw)) => (cw, rw),
        (cw, rw) => {
            cmp.same(
                "load_weights",
                || "five matrices at once".into(),
                Nan::Payload,
                &cw.map(|_| Vec::new()),
                &rw.map(|_| Vec::new()),
            );
            return;
        }
    };
    for (i, (cw, rw)) in cw.iter().zip(&rw).enumerate() {
        let (rows, k) = (3, shapes[i].1);
        let x = rng.vec(rows * k);
        let mut co = vec![0.0f32; rows * shapes[i].0];
        let mut ro = co.clone();
        let cr = c.matmul(&x, rows, cw, None, &mut co).map(|()| co);
        let rr = r.matmul(&x, rows, rw, None, &mut ro).map(|()| ro);
        cmp.same(
            "load_weights",
            || format!("matrix {i} of five loaded at once"),
            Nan::Payload,
            &cr,
            &rr,
        );
    }
}

fn embed<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    let mut rng = Rng::new(0x5eed_000a);
    for hidden in [1usize, 5, 16, 17] {
        let vocab = 37;
        let table = rng.matrix(vocab, hidden);
        let mut tokens: Vec<u32> = (0..11).map(|_| rng.below(vocab) as u32).collect();
        tokens.extend([0, vocab as u32 - 1]);
        let go = |b: &dyn Fn(&mut [f32]) -> Result<(), ComputeError>| {
            let mut out = vec![0.0f32; tokens.len() * hidden];
            b(&mut out).map(|()| out)
        };
        cmp.same(
            "embed",
            || format!("vocab {vocab}, hidden {hidden}"),
            Nan::Bits,
            &go(&|o| embed_with(c, &table, &tokens, o)),
            &go(&|o| embed_with(r, &table, &tokens, o)),
        );
    }
    let table = rng.matrix(5, 3);
    let mut out = vec![0.0f32; 6];
    cmp.same(
        "embed",
        || "a token id past the table".into(),
        Nan::Bits,
        &embed_with(c, &table, &[1, 5], &mut out).map(|()| Vec::new()),
        &embed_with(r, &table, &[1, 5], &mut out).map(|()| Vec::new()),
    );
}

fn embed_with<B: Backend>(
    b: &B,
    table: &HostWeights,
    tokens: &[u32],
    out: &mut [f32],
) -> Result<(), ComputeError> {
    let t = b.load_weights(vec![table.clone()])?;
    match t.first() {
        Some(t) => b.embed(t, tokens, out),
        None => Err(ComputeError::Invalid {
            op: "conformance",
            reason: "load_weights returned nothing",
        }),
    }
}

/// `wᵀ` is only observable through the products it feeds (training's `g·W`).
fn transposed<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    let mut rng = Rng::new(0x5eed_000b);
    for &(rows, k, cols) in MATMUL_SHAPES {
        // w is [k, cols] as the model holds it; its transpose is [cols, k].
        let w = rng.matrix(k, cols);
        let g = rng.vec(rows * k);
        cmp.same(
            "transposed",
            || format!("g [{rows}, {k}] · w [{k}, {cols}]"),
            Nan::Payload,
            &transposed_product(c, &w, &g, rows),
            &transposed_product(r, &w, &g, rows),
        );
    }
}

fn transposed_product<B: Backend>(
    b: &B,
    w: &HostWeights,
    g: &[f32],
    rows: usize,
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
    let mut out = vec![0.0f32; rows * t.rows()];
    b.matmul(g, rows, &t, None, &mut out)?;
    Ok(out)
}

/// One adapter's matrices, `A` `[r, in]` and `B` `[out, r]`.
struct Lora {
    a: Vec<f32>,
    b: Vec<f32>,
    r: usize,
    scale: f32,
}

fn lora<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    let mut rng = Rng::new(0x5eed_000c);
    for &(d_in, d_out, rank) in &[
        (17usize, 9usize, 1usize),
        (64, 32, 4),
        (33, 65, 16),
        (5, 3, 2),
    ] {
        // Three sequences of different lengths with different adapters, one without.
        let seq_rows = [1usize, 4, 3];
        let adapters: Vec<Option<Lora>> = [Some(2.0f32), None, Some(0.25)]
            .into_iter()
            .map(|scale| {
                scale.map(|scale| Lora {
                    a: rng.vec(rank * d_in),
                    b: rng.vec(d_out * rank),
                    r: rank,
                    scale,
                })
            })
            .collect();
        let total: usize = seq_rows.iter().sum();
        let x = rng.vec(total * d_in);
        let base = rng.vec(total * d_out);
        for keep in [false, true] {
            let case = || format!("in {d_in}, out {d_out}, r {rank}, keep x·Aᵀ: {keep}");
            let go = |b: &dyn LoraRunner| b.run(&x, &base, &seq_rows, &adapters, d_in, d_out, keep);
            cmp.same("lora", case, Nan::Payload, &go(&Runner(c)), &go(&Runner(r)));
        }
    }
}

/// Object-safe access to one backend's `lora`, so one closure serves both backends.
trait LoraRunner {
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        x: &[f32],
        base: &[f32],
        seq_rows: &[usize],
        adapters: &[Option<Lora>],
        d_in: usize,
        d_out: usize,
        keep: bool,
    ) -> Result<Vec<f32>, ComputeError>;
}

struct Runner<'a, B>(&'a B);

impl<B: Backend> LoraRunner for Runner<'_, B> {
    fn run(
        &self,
        x: &[f32],
        base: &[f32],
        seq_rows: &[usize],
        adapters: &[Option<Lora>],
        d_in: usize,
        d_out: usize,
        keep: bool,
    ) -> Result<Vec<f32>, ComputeError> {
        let mut out = base.to_vec();
        let lows: usize = seq_rows
            .iter()
            .zip(adapters)
            .filter_map(|(rows, a)| a.as_ref().map(|a| rows * a.r))
            .sum();
        let mut low = vec![0.0f32; lows];
        let mut products = Vec::new();
        let (mut rest_out, mut rest_low, mut row0) = (&mut out[..], &mut low[..], 0);
        for (&rows, adapter) in seq_rows.iter().zip(adapters) {
            let (mine, tail) = std::mem::take(&mut rest_out).split_at_mut(rows * d_out);
            rest_out = tail;
            if let Some(a) = adapter {
                let (l, tail) = std::mem::take(&mut rest_low).split_at_mut(rows * a.r);
                rest_low = tail;
                products.push(LoraProduct {
                    x: &x[row0 * d_in..(row0 + rows) * d_in],
                    rows,
                    a: MatrixRef {
                        rows: a.r,
                        cols: d_in,
                        data: &a.a,
                    },
                    b: MatrixRef {
                        rows: d_out,
                        cols: a.r,
                        data: &a.b,
                    },
                    scale: a.scale,
                    out: mine,
                    low: keep.then_some(l),
                });
            }
            row0 += rows;
        }
        self.0.lora(products)?;
        if keep {
            out.extend_from_slice(&low);
        }
        Ok(out)
    }
}

/// RoPE tables of several shapes, with and without Llama-3 scaling.
pub(super) fn rope_tables() -> Vec<(String, RopeTable)> {
    let scaling = Llama3RopeScaling {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 16.0,
    };
    let mut out = Vec::new();
    for (hd, theta, scaled) in [
        (2usize, 10_000.0f64, false),
        (8, 10_000.0, false),
        (6, 500_000.0, true),
        (64, 10_000.0, false),
        (64, 500_000.0, true),
    ] {
        if let Ok(t) = RopeTable::new(hd, theta, 64, scaled.then_some(&scaling)) {
            out.push((format!("head_dim {hd}, theta {theta}, llama3: {scaled}"), t));
        }
    }
    out
}

fn rope<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    let mut rng = Rng::new(0x5eed_000d);
    for (what, table) in rope_tables() {
        let hd = table.head_dim();
        for (heads, first, rows) in [(1usize, 0usize, 1usize), (3, 0, 20), (2, 5, 7), (1, 40, 24)] {
            let width = heads * hd;
            let x = rng.vec(rows * width);
            let go = |b: &dyn Fn(&mut [f32]) -> Result<(), ComputeError>| {
                let mut v = x.clone();
                b(&mut v).map(|()| v)
            };
            cmp.same(
                "rope",
                || format!("{what}, {heads} heads, positions {first}..{}", first + rows),
                Nan::Payload,
                &go(&|v| c.rope(&table, first, width, v)),
                &go(&|v| r.rope(&table, first, width, v)),
            );
        }
        let x = rng.vec(2 * hd);
        for (why, first, width) in [
            ("past the table", 63, hd),
            ("a width that does not tile x", 0, 3 * hd),
        ] {
            let go = |b: &dyn Fn(&mut [f32]) -> Result<(), ComputeError>| {
                let mut v = x.clone();
                b(&mut v).map(|()| v)
            };
            cmp.same(
                "rope",
                || format!("{what}: {why}"),
                Nan::Payload,
                &go(&|v| c.rope(&table, first, width, v)),
                &go(&|v| r.rope(&table, first, width, v)),
            );
        }
    }
}

/// `(heads, kv_heads, head_dim)`: one head, grouped-query heads, odd and SIMD-sized dims.
pub(super) const ATTENTION_SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (2, 1, 4),
    (4, 2, 8),
    (3, 3, 17),
    (8, 2, 64),
    (2, 2, 33),
];

/// Keys and values of a few sequences (with room past their length, like a cache) and
/// query rows reading them.
struct AttentionCase {
    shape: AttentionShape,
    kv: Vec<(Vec<f32>, Vec<f32>)>,
    rows: Vec<QueryRow>,
    q: Vec<f32>,
}

impl AttentionCase {
    fn new(rng: &mut Rng, shape: AttentionShape, lens: &[usize]) -> Self {
        let kv_dim = shape.kv_dim();
        let kv = lens
            .iter()
            .map(|&len| {
                let room = (len + 3) * kv_dim;
                (rng.plain(room, 2.0), rng.plain(room, 2.0))
            })
            .collect();
        let mut rows = Vec::new();
        for (seq, &len) in lens.iter().enumerate() {
            for visible in [1, len, len.div_ceil(2), 1 + rng.below(len)] {
                rows.push(QueryRow { seq, visible });
            }
        }
        let q = rng.plain(rows.len() * shape.q_dim(), 2.0);
        Self { shape, kv, rows, q }
    }

    fn run<B: Backend>(&self, b: &B, with_probs: bool) -> Result<Vec<f32>, ComputeError> {
        let views: Vec<KvView<'_>> = self.kv.iter().map(|(k, v)| KvView { k, v }).collect();
        let mut out = vec![0.0f32; self.q.len()];
        let width = self.rows.iter().map(|r| r.visible).max().unwrap_or(0) + 2;
        let mut probs = vec![f32::NAN; self.rows.len() * self.shape.heads * width];
        let p = with_probs.then_some(&mut probs[..]);
        b.attention(self.shape, &self.q, &views, &self.rows, &mut out, p)?;
        if with_probs {
            out.extend_from_slice(&probs);
        }
        Ok(out)
    }
}

fn attention<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    let mut rng = Rng::new(0x5eed_000e);
    for &(heads, kv_heads, head_dim) in ATTENTION_SHAPES {
        let shape = AttentionShape {
            heads,
            kv_heads,
            head_dim,
        };
        for lens in [&[1usize][..], &[5, 16, 17], &[40, 2]] {
            let case = AttentionCase::new(&mut rng, shape, lens);
            for with_probs in [false, true] {
                cmp.same(
                    "attention",
                    || format!("{shape:?}, sequences of {lens:?}, probabilities: {with_probs}"),
                    Nan::Payload,
                    &case.run(c, with_probs),
                    &case.run(r, with_probs),
                );
            }
        }
    }
    let shape = AttentionShape {
        heads: 2,
        kv_heads: 1,
        head_dim: 4,
    };
    let mut case = AttentionCase::new(&mut rng, shape, &[3]);
    case.rows[0].visible = 7; // past the keys it was given
    cmp.same(
        "attention",
        || "a row that sees past its keys".into(),
        Nan::Payload,
        &case.run(c, false),
        &case.run(r, false),
    );
    let bad = AttentionShape {
        heads: 3,
        kv_heads: 2,
        head_dim: 4,
    };
    let case = AttentionCase::new(&mut rng, bad, &[3]);
    cmp.same(
        "attention",
        || "kv heads that do not divide the heads".into(),
        Nan::Payload,
        &case.run(c, false),
        &case.run(r, false),
    );
}
