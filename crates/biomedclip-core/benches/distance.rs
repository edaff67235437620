//! Distance kernels per ISA at 512 dimensions (BiomedCLIP's embedding size) and 2000.
//! Run: cargo bench -p biomedclip-core --bench distance
use biomedclip_core::distance::forced;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use half::f16;

fn kernels(c: &mut Criterion) {
    for n in [512usize, 2000] {
        let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
        let ah: Vec<f16> = a.iter().map(|&x| f16::from_f32(x)).collect();
        let bh: Vec<f16> = b.iter().map(|&x| f16::from_f32(x)).collect();
        let mut group = c.benchmark_group(format!("l2+dot+l1/{n}"));
        for isa in forced::available() {
            group.bench_with_input(BenchmarkId::new("f32", isa.name()), &isa, |bench, &isa| {
                bench.iter(|| forced::f32_all(isa, black_box(&a), black_box(&b)))
            });
            group.bench_with_input(BenchmarkId::new("f16", isa.name()), &isa, |bench, &isa| {
                bench.iter(|| forced::f16_all(isa, black_box(&ah), black_box(&bh)))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
