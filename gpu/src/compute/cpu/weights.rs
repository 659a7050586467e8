//! The CPU backend's weight matrices: f32 values, or GGUF blocks kept as they are, in
//! 64-byte-aligned, huge-page-backed storage (see [`AlignedVec`] for why both matter to
//! speed, never to bits).

use std::ops::Range;
use std::sync::Arc;

use super::buf::AlignedVec;
use super::quant::QMatrix;
use crate::compute::backend::{HostWeights, WeightShape};
use crate::compute::quant::dequantize_row;
use crate::compute::{ComputeError, QuantType};

/// One `[rows, cols]` matrix: a range of a shared arena (a loaded model) or a buffer of its
/// own (a transposed copy). A block-quantized matrix occupies its range as its raw bytes
/// packed little-endian into f32 words, so one arena (one huge-page mapping) holds a
/// model whatever the mix of types; only the kernels ever look at those words.
#[derive(Clone)]
pub struct CpuWeights {
    store: Arc<AlignedVec>,
    range: Range<usize>,
    rows: usize,
    cols: usize,
    ty: QuantType,
    /// Block-quantized only: the handle stands for the transpose of the blocks it shares
    /// (`rows`/`cols` are the transpose's), which no copy was made for.
    transposed: bool,
}

impl CpuWeights {
    /// The `[rows, cols]` values, row-major, of an f32 matrix; empty for a block-quantized
    /// one, whose values exist only one block at a time (see [`CpuWeights::dequantized`]).
    pub fn values(&self) -> &[f32] {
        match self.ty {
            QuantType::F32 => &self.store[self.range.clone()],
            _ => &[],
        }
    }

    /// How the values are held: `F32` (also for f16/bf16 files, widened exactly at load) or
    /// the block format the file had.
    pub fn storage(&self) -> QuantType {
        self.ty
    }

    /// Bytes of memory the values take (without the arena's alignment padding).
    pub fn resident_bytes(&self) -> usize {
        match self.ty {
            QuantType::F32 => self.rows * self.cols * 4,
            ty if self.transposed => ty.matrix_bytes(self.cols, self.rows).unwrap_or(0),
            ty => ty.matrix_bytes(self.rows, self.cols).unwrap_or(0),
        }
    }

    /// The `[rows, cols]` values by rule 9, whatever the storage (a full f32 copy).
    pub fn dequantized(&self) -> Result<Vec<f32>, ComputeError> {
        match self.quantized()? {
            Some(q) => q.dequantize_all(),
            None => Ok(self.values().to_vec()),
        }
    }

    /// The block view of a quantized matrix, `None` for an f32 one.
    pub(super) fn quantized(&self) -> Result<Option<QMatrix<'_>>, ComputeError> {
        if self.ty == QuantType::F32 {
            return Ok(None);
        }
        let words = &self.store[self.range.clone()];
        if self.transposed {
            return QMatrix::new(self.ty, words, self.cols, self.rows)
                .map(|q| Some(q.as_transpose()));
        }
        QMatrix::new(self.ty, words, self.rows, self.cols).map(Some)
    }

    /// `wᵀ`. For a quantized matrix this shares the blocks (LoRA training's input gradient
    /// through a frozen quantized base, `g·W`, then widens one panel of columns at a time);
    /// for an f32 one it is an f32 copy.
    pub(super) fn transposed(&self) -> Result<CpuWeights, ComputeError> {
        if self.ty != QuantType::F32 {
            return Ok(CpuWeights {
                store: self.store.clone(),
                range: self.range.clone(),
                rows: self.cols,
                cols: self.rows,
                ty: self.ty,
                transposed: !self.transposed,
            });
        }
        let t = crate::compute::transpose(self.values(), self.rows, self.cols);
        let store = Arc::new(AlignedVec::from_slice(&t));
        Ok(CpuWeights {
            range: 0..store.len(),
            store,
            rows: self.cols,
            cols: self.rows,
            ty: QuantType::F32,
            transposed: false,
        })
    }
}

impl WeightShape for CpuWeights {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }
}

/// Shape and storage only: the values are megabytes.
impl std::fmt::Debug for CpuWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuWeights {} [{}, {}]", self.ty, self.rows, self.cols)
    }
}

/// Floats pushed at a time when packing bytes: a multiple of 16, so that the pieces land
/// back to back in the arena.
const PACK_CHUNK: usize = 4096;

/// `bytes` packed little-endian into f32 words at the arena's next 64-byte boundary.
fn push_bytes(arena: &mut AlignedVec, bytes: &[u8]) -> Range<usize> {
    let mut words = Vec::with_capacity(PACK_CHUNK);
    let mut placed = arena.push_aligned(&[]);
    for piece in bytes.chunks(PACK_CHUNK * 4) {
        words.clear();
        words.extend(piece.chunks(4).map(|b| {
            let mut w = [0u8; 4];
            w[..b.len()].copy_from_slice(b);
            f32::from_bits(u32::from_le_bytes(w))
        }));
        let r = arena.push_aligned(&words);
        placed = placed.start..r.end;
    }
    placed
}

/// What one host matrix becomes: f32 values or packed blocks, and its arena footprint.
fn checked(m: &HostWeights) -> Result<usize, ComputeError> {
    const OP: &str = "load weights";
    let (rows, cols) = (m.rows(), m.cols());
    let floats = match m {
        HostWeights::F32 { data, .. } => {
            let expected = rows
                .checked_mul(cols)
                .ok_or(ComputeError::Overflow { op: OP })?;
            crate::compute::check_len(OP, "data", expected, data.len())?;
            expected
        }
        HostWeights::Quantized { ty, data, .. } => {
            crate::compute::check_len(OP, "data", ty.matrix_bytes(rows, cols)?, data.len())?;
            if ty.is_block_quantized() {
                data.len().div_ceil(4)
            } else {
                rows.checked_mul(cols)
                    .ok_or(ComputeError::Overflow { op: OP })?
            }
        }
    };
    Ok(floats.next_multiple_of(16))
}

/// Every matrix of a model in one arena, each starting on a 64-byte boundary and the whole
/// backed by huge pages where possible: loaded `Vec`s start 16 bytes past a cache line and
/// sit on 4 KiB pages, which costs prefill split loads and decode TLB misses (a decode step
/// streams every weight once). Each host matrix is freed as soon as it is copied, so at most
/// one matrix exists twice at any moment. Block formats stay as they are; f16 and bf16 are
/// widened to f32 here (exactly), as the arithmetic contract says.
pub(super) fn load(matrices: Vec<HostWeights>) -> Result<Vec<CpuWeights>, ComputeError> {
    let mut total = 0usize;
    for m in &matrices {
        total = total
            .checked_add(checked(m)?)
            .ok_or(ComputeError::Overflow { op: "load weights" })?;
    }
    let mut arena = AlignedVec::with_capacity(total);
    let mut placed = Vec::with_capacity(matrices.len());
    for m in matrices {
        let (rows, cols) = (m.rows(), m.cols());
        let (range, ty) = match m {
            HostWeights::F32 { data, .. } => (arena.push_aligned(&data), QuantType::F32),
            HostWeights::Quantized { ty, data, .. } if ty.is_block_quantized() => {
                (push_bytes(&mut arena, &data), ty)
            }
            HostWeights::Quantized { ty, data, .. } => {
                let mut values = vec![0.0f32; rows * cols];
                dequantize_row(ty, &data, &mut values)?;
                drop(data);
                (arena.push_aligned(&values), QuantType::F32)
            }
        };
        placed.push((range, rows, cols, ty));
    }
    let store = Arc::new(arena);
    Ok(placed
        .into_iter()
        .map(|(range, rows, cols, ty)| CpuWeights {
            store: store.clone(),
            range,
            rows,
            cols,
            ty,
            transposed: false,
        })
        .collect())
}
