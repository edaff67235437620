//! Rendering benchmark runner (benches/medical_images/run.sh drives it).
//!
//!   medical_bench dicom REPEATS FILE...   per file: median ms of decode + window + preprocess
//!   medical_bench render FILE OUT.png [WINDOW]  write the 8-bit render (a CLI for looking)
//!   medical_bench slide FILE [PATCH]      patches/s of tissue mask + patch cutting + preprocess
//!                                         (no model), and the peak RSS
//! One JSON object per line on stdout.
use biomedclip_core::dicom::{self, WindowSpec};
use biomedclip_core::image_decode::{Decoded, Mode, Pixels};
use biomedclip_core::preprocess::{preprocess_decoded, PreprocessConfig};
use biomedclip_core::slide::{PatchParams, Slide};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn bench_dicom(repeats: usize, files: &[String]) {
    let cfg = PreprocessConfig::default();
    for file in files {
        let data = std::fs::read(file).unwrap();
        let mut times = Vec::new();
        for _ in 0..repeats {
            let t = Instant::now();
            let rendered = dicom::render(&data, &WindowSpec::Auto, 0, 1 << 28).unwrap();
            let mut out = Vec::with_capacity(3 * 224 * 224);
            preprocess_decoded(rendered, &cfg, &mut out);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        println!("{{\"file\": \"{file}\", \"median_ms\": {:.3}}}", median(times));
    }
}

fn bench_slide(file: &str, patch: u32) {
    let data = std::fs::read(file).unwrap();
    let cfg = PreprocessConfig::default();
    let t = Instant::now();
    let slide = Slide::open(&data).unwrap();
    let mask = slide.tissue_mask().unwrap();
    let mask_s = t.elapsed().as_secs_f64();
    let params = PatchParams { patch_size: patch, level: 0, tissue_threshold: 0.0, max_patches: usize::MAX };
    let plan = slide.plan(&params, &mask).unwrap();
    let mut reader = slide.reader(0).unwrap();
    let t = Instant::now();
    let mut out = Vec::with_capacity(3 * 224 * 224);
    for p in &plan.patches {
        let region = reader.read_region(p.x, p.y, patch, patch).unwrap();
        out.clear();
        preprocess_decoded(Decoded { mode: Mode::Rgb, pixels: Pixels::U8(region), palette: Vec::new() }, &cfg, &mut out);
    }
    let s = t.elapsed().as_secs_f64();
    let level = &slide.levels()[0];
    println!(
        "{{\"file\": \"{file}\", \"width\": {}, \"height\": {}, \"patches\": {}, \"tiles_decoded\": {}, \"mask_s\": {:.3}, \"patch_s\": {:.3}, \"patches_per_s\": {:.1}, \"file_mib\": {:.1}, \"decoded_level_mib\": {:.1}, \"peak_rss_mib\": {:.1}}}",
        level.width,
        level.height,
        plan.patches.len(),
        reader.decoded_chunks,
        mask_s,
        s,
        plan.patches.len() as f64 / s,
        data.len() as f64 / 1048576.0,
        level.width as f64 * level.height as f64 * 3.0 / 1048576.0,
        peak_rss_mib()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("dicom") => bench_dicom(args[1].parse().unwrap(), &args[2..]),
        Some("render") => {
            let data = std::fs::read(&args[1]).unwrap();
            let window = WindowSpec::parse(args.get(3).map(String::as_str).unwrap_or("auto")).unwrap();
            match dicom::render(&data, &window, 0, 1 << 28).and_then(|image| biomedclip_core::image_decode::encode_png(&image)) {
                Ok(png) => std::fs::write(&args[2], png).unwrap(),
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(2)
                }
            }
        }
        Some("slide") => bench_slide(&args[1], args.get(2).map(|p| p.parse().unwrap()).unwrap_or(224)),
        _ => eprintln!("usage: medical_bench dicom REPEATS FILE... | slide FILE [PATCH]"),
    }
}
