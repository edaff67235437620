//! The same model and pipeline as the SQL functions, without PostgreSQL: the "direct runner"
//! side of benches/inference. Prints one JSON line per measurement.
//!
//! direct_runner images MODEL_DIR ORT_LIB BATCH REPEATS IMAGE...
//! direct_runner texts  MODEL_DIR ORT_LIB BATCH REPEATS CAPTIONS.jsonl [pad256]
//! direct_runner preprocess MODEL_DIR ORT_LIB 1 REPEATS IMAGE...   (decode + preprocess only, per image)
use biomedclip_core::model::Output;
use biomedclip_core::preprocess::preprocess_into;
use biomedclip_core::runtime::{init_ort, Interrupt, LocalModel, Provider, RuntimeConfig};
use std::path::Path;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, dir, lib) = (&args[1], Path::new(&args[2]), Path::new(&args[3]));
    let batch: usize = args[4].parse().unwrap();
    let repeats: usize = args[5].parse().unwrap();
    init_ort(lib).unwrap();
    let mut model = LocalModel::load(dir, &RuntimeConfig { intra_op_threads: 1, provider: Provider::Cpu, pinned_sha256: None }).unwrap();
    let never = Interrupt::never();
    let mut times = Vec::new();
    match mode.as_str() {
        "images" => {
            let files: Vec<Vec<u8>> = args[6..].iter().map(|p| std::fs::read(p).unwrap()).collect();
            for r in 0..repeats {
                let start = Instant::now();
                let mut pixels = Vec::new();
                for i in 0..batch {
                    preprocess_into(&files[(r * batch + i) % files.len()], &model.preprocess, 1 << 28, &mut pixels).unwrap();
                }
                model.embed_images(&pixels, batch, Output::Embeddings, &never).unwrap();
                times.push(start.elapsed().as_secs_f64());
            }
        }
        "texts" => {
            let pad = args.get(7).map(String::as_str) == Some("pad256");
            let captions: Vec<String> = std::fs::read_to_string(&args[6])
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string())
                .collect();
            for r in 0..repeats {
                let start = Instant::now();
                let ids: Vec<Vec<u32>> = (0..batch)
                    .map(|i| model.tokenizer.encode(&captions[(r * batch + i) % captions.len()]).unwrap())
                    .collect();
                // pad256: what open_clip's HFTokenizer does, every text padded to the context length.
                let min_len = if pad { model.tokenizer.context_length() } else { 0 };
                model.embed_token_ids_padded(&ids, min_len, Output::Embeddings, &never).unwrap();
                times.push(start.elapsed().as_secs_f64());
            }
        }
        "preprocess" => {
            let files: Vec<Vec<u8>> = args[6..].iter().map(|p| std::fs::read(p).unwrap()).collect();
            for r in 0..repeats {
                let start = Instant::now();
                let mut pixels = Vec::new();
                preprocess_into(&files[r % files.len()], &model.preprocess, 1 << 28, &mut pixels).unwrap();
                times.push(start.elapsed().as_secs_f64());
            }
        }
        other => panic!("unknown mode {other}"),
    }
    let m = median(times);
    println!("{{\"mode\":\"{mode}\",\"batch\":{batch},\"median_s\":{m:.6},\"items_per_s\":{:.3}}}", batch as f64 / m);
}
