//! Serving thousands of adapters over one base model: adapters are loaded on first use
//! and kept while they fit a memory budget, the least recently used leaving first.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use crate::model::Adapter;

/// Bytes an adapter's weights occupy (f32 A and B matrices).
pub fn adapter_bytes(adapter: &Adapter) -> u64 {
    adapter
        .modules
        .values()
        .map(|m| ((m.a.data.len() + m.b.data.len()) * 4) as u64)
        .sum()
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError<E> {
    #[error("adapter of {size} bytes exceeds the whole cache budget of {budget} bytes")]
    TooLarge { size: u64, budget: u64 },
    #[error(transparent)]
    Load(E),
}

#[derive(Debug)]
struct Entry {
    adapter: Arc<Adapter>,
    bytes: u64,
    last_used: u64,
}

/// An LRU cache of adapters keyed by `K` (a content id, a path, a name).
#[derive(Debug)]
pub struct AdapterCache<K> {
    budget: u64,
    used: u64,
    tick: u64,
    entries: HashMap<K, Entry>,
    loads: u64,
}

impl<K: Hash + Eq + Clone> AdapterCache<K> {
    pub fn new(budget_bytes: u64) -> Self {
        Self {
            budget: budget_bytes,
            used: 0,
            tick: 0,
            entries: HashMap::new(),
            loads: 0,
        }
    }

    /// The adapter for `key`, loading it with `load` if it is not cached. Handed out as an
    /// `Arc`, so an evicted adapter stays valid for a batch still using it.
    pub fn get_or_load<E>(
        &mut self,
        key: &K,
        load: impl FnOnce() -> Result<Adapter, E>,
    ) -> Result<Arc<Adapter>, CacheError<E>> {
        self.tick += 1;
        if let Some(entry) = self.entries.get_mut(key) {
            entry.last_used = self.tick;
            return Ok(entry.adapter.clone());
        }
        let adapter = load().map_err(CacheError::Load)?;
        self.loads += 1;
        let bytes = adapter_bytes(&adapter);
        if bytes > self.budget {
            return Err(CacheError::TooLarge {
                size: bytes,
                budget: self.budget,
            });
        }
        while self.used + bytes > self.budget {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.used -= e.bytes;
            }
        }
        let adapter = Arc::new(adapter);
        self.used += bytes;
        self.entries.insert(
            key.clone(),
            Entry {
                adapter: adapter.clone(),
                bytes,
                last_used: self.tick,
            },
        );
        Ok(adapter)
    }

    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of adapter weights currently held (never above the budget).
    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// How many times an adapter had to be loaded (misses).
    pub fn loads(&self) -> u64 {
        self.loads
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{AdapterConfig, LinearModule, LoraWeights, Matrix};

    fn adapter(r: usize) -> Adapter {
        let m = |rows, cols| Matrix::f32(rows, cols, vec![0.5; rows * cols]);
        let mut modules = BTreeMap::new();
        modules.insert(
            (0, LinearModule::QProj),
            LoraWeights {
                a: m(r, 10),
                b: m(10, r),
                scale: 1.0,
            },
        );
        let json = br#"{"r": 1, "lora_alpha": 1, "target_modules": ["q_proj"]}"#;
        let config = AdapterConfig::from_json_bytes(json, std::path::Path::new("test.json"))
            .expect("minimal adapter config");
        Adapter { config, modules }
    }

    #[test]
    fn keeps_within_budget_and_evicts_the_least_recently_used() {
        let one = adapter_bytes(&adapter(1)); // 80 bytes
        let mut cache = AdapterCache::new(3 * one);
        let load = || Ok::<_, String>(adapter(1));
        for k in ["a", "b", "c"] {
            cache.get_or_load(&k, load).unwrap();
        }
        assert_eq!(
            (cache.len(), cache.loads(), cache.used_bytes()),
            (3, 3, 3 * one)
        );
        cache.get_or_load(&"a", load).unwrap(); // a is now the most recent
        cache.get_or_load(&"d", load).unwrap(); // evicts b, the least recently used
        assert!(cache.contains(&"a") && !cache.contains(&"b"));
        assert!(cache.contains(&"c") && cache.contains(&"d"));
        assert_eq!(cache.loads(), 4, "the hit on a loaded nothing");
        assert!(cache.used_bytes() <= 3 * one);
        // A big one makes room for itself by evicting several.
        cache
            .get_or_load(&"big", || Ok::<_, String>(adapter(2)))
            .unwrap();
        assert!(cache.used_bytes() <= 3 * one);
        assert!(cache.contains(&"big"));
    }

    #[test]
    fn thousands_of_adapters_stream_through_a_small_cache() {
        let one = adapter_bytes(&adapter(1));
        let mut cache = AdapterCache::new(16 * one);
        for i in 0..5000u32 {
            let a = cache
                .get_or_load(&(i % 2000), || Ok::<_, String>(adapter(1)))
                .unwrap();
            assert_eq!(a.modules.len(), 1);
            assert!(cache.len() <= 16);
        }
        assert_eq!(
            cache.loads(),
            5000,
            "a cyclic scan larger than the cache always misses"
        );
    }

    #[test]
    fn too_large_and_failing_loads_are_errors_that_change_nothing() {
        let mut cache = AdapterCache::new(10);
        let err = cache
            .get_or_load(&1, || Ok::<_, String>(adapter(4)))
            .unwrap_err();
        assert!(matches!(err, CacheError::TooLarge { .. }), "{err}");
        let err = cache
            .get_or_load(&2, || Err::<Adapter, _>("no such file".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("no such file"));
        assert!(cache.is_empty() && cache.used_bytes() == 0);
    }
}
