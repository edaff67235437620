//! Text embeddings cached per backend, keyed by (model manifest SHA-256, text): zero-shot prompts
//! and `biomedclip_embed_text`. A call inline in a query (`WHERE emb <=> biomedclip_embed_text('x')
//! < 0.9`) runs once per row; with the cache, the model runs once per backend for that text.
//! Keyed by the model, so switching models never returns another model's vector, and by the
//! text's SHA-256, not the text: a long report is not held in the cache (2,000 distinct 100 KB
//! texts grew a backend by 257 MiB when the texts were the keys). Bounded: 4,096 entries (about
//! 8.5 MiB with 512-d vectors); the least recently used entry goes first.

use crate::model_cache;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

const CAPACITY: usize = 4096;

#[derive(Default)]
struct Lru {
    map: HashMap<(String, String), (Vec<f32>, u64)>,
    clock: u64,
}

impl Lru {
    fn get(&mut self, key: &(String, String)) -> Option<Vec<f32>> {
        self.clock += 1;
        let clock = self.clock;
        self.map.get_mut(key).map(|(v, used)| {
            *used = clock;
            v.clone()
        })
    }

    fn put(&mut self, key: (String, String), value: Vec<f32>) {
        if self.map.len() >= CAPACITY && !self.map.contains_key(&key) {
            // Evictions scan the map; hits, the common case, are O(1).
            if let Some(oldest) = self.map.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone()) {
                self.map.remove(&oldest);
            }
        }
        self.clock += 1;
        self.map.insert(key, (value, self.clock));
    }
}

thread_local! {
    static CACHE: RefCell<Lru> = RefCell::new(Lru::default());
    static MODEL_TEXTS: Cell<u64> = const { Cell::new(0) };
}

/// Counts texts that went through the text tower in this backend.
pub fn count_model_texts(n: usize) {
    MODEL_TEXTS.with(|c| c.set(c.get() + n as u64));
}

/// Texts embedded by the model in this backend (cache misses and uncached batches).
pub fn model_texts() -> u64 {
    MODEL_TEXTS.with(Cell::get)
}

/// Embeddings of `texts` for the active model, running the model only for texts not cached.
pub fn embeddings(texts: &[String]) -> Vec<Vec<f32>> {
    let sha = model_cache::with_model(|m| m.manifest_sha256().to_string());
    let keys: Vec<(String, String)> = texts.iter().map(|t| (sha.clone(), biomedclip_core::model::sha256_hex(t.as_bytes()))).collect();
    let mut found: Vec<Option<Vec<f32>>> = CACHE.with(|c| keys.iter().map(|k| c.borrow_mut().get(k)).collect());
    let missing: Vec<usize> = (0..keys.len()).filter(|&i| found[i].is_none()).collect();
    if !missing.is_empty() {
        let ids: Vec<Vec<u32>> = missing.iter().map(|&i| crate::embed_sql::tokenize(&texts[i])).collect();
        let rows = crate::embed_sql::embed_token_batches(&ids);
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            for (&i, row) in missing.iter().zip(rows) {
                c.put(keys[i].clone(), row.clone());
                found[i] = Some(row);
            }
        });
    }
    found.into_iter().map(|f| f.expect("every text embedded")).collect()
}
