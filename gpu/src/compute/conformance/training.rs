//! Cases for the training ops: rules T3–T7 of `train/mod.rs`.

use super::forward::{ATTENTION_SHAPES, rope_tables};
use super::inputs::{LENGTHS, Rng};
use super::{Compare, Nan};
use crate::compute::{
    AttentionGrads, AttentionShape, AttentionTape, Backend, ComputeError, CpuBackend, Isa, KvView,
    QueryRow,
};

pub(super) fn all<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    outer_fma(c, r, cmp);
    rmsnorm_backward(c, r, cmp);
    swiglu_backward(c, r, cmp);
    rope_backward(c, r, cmp);
    attention_backward(c, r, cmp);
}

fn outer_fma<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    let mut rng = Rng::new(0x5eed_0101);
    for rows in [1usize, 3, 17] {
        for &cols in LENGTHS {
            let (a, b, acc) = (rng.vec(rows), rng.vec(cols), rng.vec(rows * cols));
            let go = |be: &dyn Fn(&mut [f32]) -> Result<(), ComputeError>| {
                let mut v = acc.clone();
                be(&mut v).map(|()| v)
            };
            cmp.same(
                "outer_fma",
                || format!("[{rows}] x [{cols}]"),
                Nan::Payload,
                &go(&|v| c.outer_fma(&a, &b, v)),
                &go(&|v| r.outer_fma(&a, &b, v)),
            );
        }
    }
    let (a, b) = (rng.vec(3), rng.vec(4));
    let mut acc = rng.vec(11);
    cmp.same(
        "outer_fma",
        || "acc of the wrong length".into(),
        Nan::Payload,
        &c.outer_fma(&a, &b, &mut acc).map(|()| Vec::new()),
        &r.outer_fma(&a, &b, &mut acc).map(|()| Vec::new()),
    );
}

fn rmsnorm_backward<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    let mut rng = Rng::new(0x5eed_0102);
    let mut cases: Vec<(String, usize, Vec<f32>)> = Vec::new();
    for &n in &[1usize, 2, 7, 16, 17, 64, 65, 100] {
        for rows in [1usize, 3] {
            cases.push((format!("{rows} rows of {n}"), n, rng.vec(rows * n)));
        }
    }
    cases.push(("a row of zeros".into(), 17, vec![0.0; 17]));
    // T9: the sum of squares overflows, which every backend must refuse.
    let mut huge = rng.vec(34);
    huge[20] = 1e30;
    cases.push((
        "a second row whose sum of squares overflows".into(),
        17,
        huge,
    ));
    for (what, n, x) in &cases {
        let (w, g) = (rng.plain(*n, 2.0), rng.vec(x.len()));
        let go = |b: &dyn Fn(&mut [f32]) -> Result<(), ComputeError>| {
            let mut dx = vec![0.0f32; x.len()];
            b(&mut dx).map(|()| dx)
        };
        cmp.same(
            "rmsnorm_backward",
            || what.clone(),
            Nan::Payload,
            &go(&|d| c.rmsnorm_backward(x, &w, 1e-5, &g, d)),
            &go(&|d| r.rmsnorm_backward(x, &w, 1e-5, &g, d)),
        );
    }
}

fn swiglu_backward<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    let mut rng = Rng::new(0x5eed_0103);
    for &n in LENGTHS {
        for special in [false, true] {
            let gate: Vec<f32> = if special {
                rng.specials(n).iter().map(|v| v * 20.0).collect()
            } else {
                rng.plain(n, 12.0)
            };
            let (up, d_act) = (rng.vec(n), rng.vec(n));
            let go = |b: &TwoOutputs<'_>| {
                let (mut dg, mut du) = (vec![0.0f32; n], vec![0.0f32; n]);
                b(&mut dg, &mut du).map(|()| [dg, du].concat())
            };
            cmp.same(
                "swiglu_backward",
                || format!("n = {n}, special values: {special}"),
                Nan::Payload,
                &go(&|dg, du| c.swiglu_backward(&gate, &up, &d_act, dg, du)),
                &go(&|dg, du| r.swiglu_backward(&gate, &up, &d_act, dg, du)),
            );
        }
    }
}

/// An op writing two gradients.
type TwoOutputs<'a> = dyn Fn(&mut [f32], &mut [f32]) -> Result<(), ComputeError> + 'a;

fn rope_backward<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    let mut rng = Rng::new(0x5eed_0104);
    for (what, table) in rope_tables() {
        let hd = table.head_dim();
        for (heads, first, rows) in [(1usize, 0usize, 1usize), (3, 0, 20), (2, 9, 5)] {
            let width = heads * hd;
            let d = rng.vec(rows * width);
            let go = |b: &dyn Fn(&mut [f32]) -> Result<(), ComputeError>| {
                let mut v = d.clone();
                b(&mut v).map(|()| v)
            };
            cmp.same(
                "rope_backward",
                || format!("{what}, {heads} heads, positions {first}..{}", first + rows),
                Nan::Payload,
                &go(&|v| c.rope_backward(&table, first, width, v)),
                &go(&|v| r.rope_backward(&table, first, width, v)),
            );
        }
    }
}

/// One example's saved attention, as a forward pass leaves it.
struct Example {
    shape: AttentionShape,
    len: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    probs: Vec<f32>,
    g: Vec<f32>,
}

impl Example {
    /// Realistic probabilities come from a forward pass; the reference CPU backend makes
    /// them, so both backends differentiate the very same tape.
    fn new(rng: &mut Rng, shape: AttentionShape, len: usize, width: usize) -> Option<Self> {
        let (q_dim, kv_dim) = (shape.q_dim(), shape.kv_dim());
        let q = rng.plain(len * q_dim, 2.0);
        let k = rng.plain(len * kv_dim, 2.0);
        let v = rng.plain(len * kv_dim, 2.0);
        let rows: Vec<QueryRow> = (0..len)
            .map(|t| QueryRow {
                seq: 0,
                visible: t + 1,
            })
            .collect();
        let mut probs = vec![0.0f32; len * shape.heads * width];
        let mut out = vec![0.0f32; len * q_dim];
        let cpu = CpuBackend::new(Isa::Portable, 1).ok()?;
        let kv = [KvView { k: &k, v: &v }];
        cpu.attention(shape, &q, &kv, &rows, &mut out, Some(&mut probs))
            .ok()?;
        let g = rng.vec(len * q_dim);
        Some(Self {
            shape,
            len,
            q,
            k,
            v,
            probs,
            g,
        })
    }

    fn grads<B: Backend>(&self, b: &B) -> Result<Vec<f32>, ComputeError> {
        let (q_dim, kv_dim) = (self.shape.q_dim(), self.shape.kv_dim());
        // Garbage in the outputs: a backend must overwrite them, not add to them.
        let mut dq = vec![f32::NAN; self.len * q_dim];
        let mut dk = vec![7.0f32; self.len * kv_dim];
        let mut dv = vec![-3.0f32; self.len * kv_dim];
        let tape = AttentionTape {
            len: self.len,
            q: &self.q,
            k: &self.k,
            v: &self.v,
            probs: &self.probs,
        };
        let grads = AttentionGrads {
            dq: &mut dq,
            dk: &mut dk,
            dv: &mut dv,
        };
        b.attention_backward(self.shape, tape, &self.g, grads)?;
        Ok([dq, dk, dv].concat())
    }
}

fn attention_backward<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    let mut rng = Rng::new(0x5eed_0105);
    for &(heads, kv_heads, head_dim) in ATTENTION_SHAPES {
        let shape = AttentionShape {
            heads,
            kv_heads,
            head_dim,
        };
        for (len, width) in [
            (1usize, 1usize),
            (2, 5),
            (7, 7),
            (16, 16),
            (17, 20),
            (33, 33),
        ] {
            let Some(ex) = Example::new(&mut rng, shape, len, width) else {
                panic!("the reference forward refused {shape:?} over {len} positions");
            };
            cmp.same(
                "attention_backward",
                || format!("{shape:?}, {len} positions, probability rows of {width}"),
                Nan::Payload,
                &ex.grads(c),
                &ex.grads(r),
            );
        }
    }
    let shape = AttentionShape {
        heads: 2,
        kv_heads: 1,
        head_dim: 4,
    };
    if let Some(mut ex) = Example::new(&mut rng, shape, 5, 5) {
        ex.probs.truncate(ex.probs.len() - 1);
        cmp.same(
            "attention_backward",
            || "probabilities one short".into(),
            Nan::Payload,
            &ex.grads(c),
            &ex.grads(r),
        );
    }
}
