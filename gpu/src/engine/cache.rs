//! Keys and values of the positions already processed, per layer.

/// `[capacity, kv_dim]` per layer for keys and for values; `len` positions are filled.
#[derive(Debug, Clone)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    kv_dim: usize,
    capacity: usize,
    len: usize,
}

impl KvCache {
    pub fn new(layers: usize, kv_dim: usize, capacity: usize) -> Self {
        // One zeroed allocation per layer (not clones of one, which would write every
        // page): the kernel hands out zero pages lazily, so positions never reached cost
        // no memory.
        let zeroed = || (0..layers).map(|_| vec![0.0; capacity * kv_dim]).collect();
        Self {
            k: zeroed(),
            v: zeroed(),
            kv_dim,
            capacity,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn fits(&self, layers: usize, kv_dim: usize) -> bool {
        self.k.len() == layers && self.kv_dim == kv_dim
    }

    /// Stores rows `[t, kv_dim]` at positions `start..start + t` (the engine checked room).
    pub(super) fn write(&mut self, layer: usize, start: usize, k: &[f32], v: &[f32]) {
        let at = start * self.kv_dim;
        self.k[layer][at..at + k.len()].copy_from_slice(k);
        self.v[layer][at..at + v.len()].copy_from_slice(v);
    }

    pub(super) fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        (&self.k[layer], &self.v[layer])
    }

    /// Forgets every position, keeping the memory: positions are always written before
    /// they are read.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    pub(super) fn advance(&mut self, t: usize) {
        self.len += t;
    }
}
