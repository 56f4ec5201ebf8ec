//! Criterion benchmarks for `wavedec2`/`waverec2`: 256², 1024² and
//! 4096×1024; haar, db4 and sym8; symmetric and periodization; f32 and f64;
//! level 3. Plus the allocation-free plan path for one case.
//!
//! `cargo bench -p dwt-core` (or `cargo xtask bench`). For the same-run
//! comparison with PyWavelets, see `cargo xtask bench --peer pywt`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dwt_core::{Level, Mode, Plan2, Real, Wavelet, wavedec2, waverec2};
use ndarray::Array2;

const SIZES: [(usize, usize); 3] = [(256, 256), (1024, 1024), (4096, 1024)];
const WAVELETS: [&str; 3] = ["haar", "db4", "sym8"];
const MODES: [Mode; 2] = [Mode::Symmetric, Mode::Periodization];

fn input<T: Real>(shape: (usize, usize)) -> Array2<T> {
    Array2::from_shape_fn(shape, |(i, j)| {
        T::from_f64((((i * 7919 + j * 104_729) % 1000) as f64) / 500.0 - 1.0)
    })
}

fn matrix<T: Real>(c: &mut Criterion, dtype: &str) {
    for (op, inverse) in [("wavedec2", false), ("waverec2", true)] {
        let mut group = c.benchmark_group(format!("{op}/{dtype}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        for shape in SIZES {
            group.throughput(Throughput::Bytes((shape.0 * shape.1 * size_of::<T>()) as u64));
            let x = input::<T>(shape);
            for name in WAVELETS {
                let w = Wavelet::new(name).expect("built-in wavelet");
                for mode in MODES {
                    let id = BenchmarkId::new(format!("{name}/{mode}"), format!("{}x{}", shape.0, shape.1));
                    let coeffs = wavedec2(x.view(), &w, mode, Some(3)).expect("valid case");
                    if inverse {
                        group.bench_with_input(id, &coeffs, |b, c| b.iter(|| waverec2(black_box(c), &w, mode)));
                    } else {
                        group.bench_with_input(id, &x, |b, x| {
                            b.iter(|| wavedec2(black_box(x.view()), &w, mode, Some(3)))
                        });
                    }
                }
            }
        }
        group.finish();
    }
}

/// The plan API with reused outputs and scratch (no allocation per call).
fn plan(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan/f64");
    group.sample_size(10).measurement_time(Duration::from_secs(2));
    let shape = (1024, 1024);
    let x = input::<f64>(shape);
    let w = Wavelet::new("db4").expect("built-in wavelet");
    let plan = Plan2::<f64>::new(shape, &w, Mode::Periodization, Level::Exactly(3)).expect("valid plan");
    let mut coeffs = plan.coeffs_zeros();
    let mut scratch = vec![0.0; plan.scratch_len()];
    let mut y = Array2::zeros(plan.reconstruction_dim());
    group.bench_function("forward/db4/periodization/1024x1024", |b| {
        b.iter(|| plan.forward(black_box(x.view()), &mut coeffs, &mut scratch))
    });
    group.bench_function("inverse/db4/periodization/1024x1024", |b| {
        b.iter(|| plan.inverse(black_box(&coeffs), y.view_mut(), &mut scratch))
    });
    group.finish();
}

fn all(c: &mut Criterion) {
    matrix::<f64>(c, "f64");
    matrix::<f32>(c, "f32");
    plan(c);
}

criterion_group!(benches, all);
criterion_main!(benches);
