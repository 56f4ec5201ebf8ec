//! Criterion benches of every kernel at 1024², 4096² and 4096×11008, and a
//! whole model's worth of layers, against dwt-core on the CPU. On lavapipe
//! these numbers only show that the path works; they are not GPU speed.
//! `cargo xtask bench --gpu` prints the summary table with the copy
//! bandwidth reference.
#![allow(clippy::unwrap_used)]

mod support;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use dwt_core::{Level, Mode, Wavelet, wavedec2, waverec2};
use dwt_gpu::{Context, Dwt2, Orientation, SeparableBasis, SparsePlan};
use support::{data, locations, scatter};

const SIZES: [(usize, usize); 3] = [(1024, 1024), (4096, 4096), (4096, 11008)];

fn context() -> Option<Context> {
    match Context::new() {
        Ok(c) => {
            eprintln!("benchmarking on {}", c.describe());
            Some(c)
        }
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            None
        }
    }
}

fn dense(c: &mut Criterion) {
    let Some(ctx) = context() else { return };
    let w = Wavelet::new("db4").unwrap();
    let mut g = c.benchmark_group("dense_db4_L3_periodization");
    g.sample_size(10);
    for shape in SIZES {
        let id = format!("{}x{}", shape.0, shape.1);
        let x = data(shape, 1);
        let coeffs = wavedec2(x.view(), &w, Mode::Periodization, Some(3)).unwrap();
        g.bench_function(BenchmarkId::new("cpu_wavedec2", &id), |b| {
            b.iter(|| wavedec2(x.view(), &w, Mode::Periodization, Some(3)).unwrap())
        });
        g.bench_function(BenchmarkId::new("cpu_waverec2", &id), |b| {
            b.iter(|| waverec2(&coeffs, &w, Mode::Periodization).unwrap())
        });
        // Beyond the binding limit (lavapipe: 128 MiB) the dense plan is refused.
        let Ok(plan) = Dwt2::new(&ctx, &w, Mode::Periodization, shape, 3) else {
            continue;
        };
        plan.forward(x.view()).unwrap();
        g.bench_function(BenchmarkId::new("gpu_wavedec2", &id), |b| {
            b.iter(|| plan.run_forward().unwrap())
        });
        plan.inverse(&coeffs).unwrap();
        g.bench_function(BenchmarkId::new("gpu_waverec2", &id), |b| {
            b.iter(|| plan.run_inverse().unwrap())
        });
    }
    g.finish();
}

fn sparse(c: &mut Criterion) {
    let Some(ctx) = context() else { return };
    let w = Wavelet::new("db1").unwrap();
    let mut g = c.benchmark_group("sparse_db1_level1_n1000");
    g.sample_size(10);
    for shape in SIZES {
        let id = format!("{}x{}", shape.0, shape.1);
        let locs = locations((shape.0 / 2, shape.1 / 2), 1000, 2);
        let plan = SparsePlan::new(
            &ctx,
            &SeparableBasis::wavedec2(&w, Mode::Zero, shape, Level::Exactly(1), None, &locs).unwrap(),
        )
        .unwrap();
        let coeffs = ctx
            .upload_vec(&data((1, 1000), 3).into_iter().collect::<Vec<_>>())
            .unwrap();
        let m = ctx.upload(data(shape, 4).view()).unwrap();
        let grad = ctx.upload_vec(&[0.0; 1000]).unwrap();
        // The CPU way with dwt-core: dense waverec2 of the scattered
        // coefficients, then add.
        let dense = scatter::<f32>(&w, Mode::Zero, shape, 1, &locs, &[1.0; 1000]);
        let mut wc = data(shape, 4);
        g.bench_function(BenchmarkId::new("cpu_waverec2_add", &id), |b| {
            b.iter(|| {
                let d = waverec2(&dense, &w, Mode::Zero).unwrap();
                wc.zip_mut_with(&d, |a, b| *a += 0.5 * b);
            })
        });
        let (gy, x) = (
            ctx.upload(data((256, shape.0), 5).view()).unwrap(),
            ctx.upload(data((256, shape.1), 6).view()).unwrap(),
        );
        g.bench_function(BenchmarkId::new("merge", &id), |b| {
            b.iter(|| {
                ctx.batch()
                    .merge(&plan, &coeffs, 0.5, &m, Orientation::Normal)
                    .unwrap()
                    .submit()
                    .unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("delta", &id), |b| {
            b.iter(|| {
                ctx.batch()
                    .delta(&plan, &coeffs, 0.5, &m, Orientation::Normal)
                    .unwrap()
                    .submit()
                    .unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("grad_dense", &id), |b| {
            b.iter(|| {
                ctx.batch()
                    .grad(&plan, &m, 0.5, &grad, Orientation::Normal)
                    .unwrap()
                    .submit()
                    .unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("grad_factors_batch256", &id), |b| {
            b.iter(|| {
                ctx.batch()
                    .grad_factors(&plan, &gy, &x, 0.5, &grad)
                    .unwrap()
                    .submit()
                    .unwrap()
            })
        });
    }
    g.finish();
}

fn model(c: &mut Criterion) {
    let Some(ctx) = context() else { return };
    let w = Wavelet::new("db1").unwrap();
    let locs = locations((384, 384), 1000, 7);
    let plan = SparsePlan::new(
        &ctx,
        &SeparableBasis::wavedec2(&w, Mode::Zero, (768, 768), Level::Exactly(1), None, &locs).unwrap(),
    )
    .unwrap();
    let coeffs = ctx
        .upload_vec(&data((1, 1000), 8).into_iter().collect::<Vec<_>>())
        .unwrap();
    let layers: Vec<_> = (0..24)
        .map(|k| ctx.upload(data((768, 768), 10 + k).view()).unwrap())
        .collect();
    let mut g = c.benchmark_group("model_24x768x768_n1000");
    g.sample_size(10);
    let dense = scatter::<f32>(&w, Mode::Zero, (768, 768), 1, &locs, &[1.0; 1000]);
    let mut cpu_layers: Vec<_> = (0..24).map(|k| data((768, 768), 10 + k)).collect();
    g.bench_function("cpu_waverec2_add", |b| {
        b.iter(|| {
            for m in &mut cpu_layers {
                let d = waverec2(&dense, &w, Mode::Zero).unwrap();
                m.zip_mut_with(&d, |a, b| *a += 0.5 * b);
            }
        })
    });
    g.bench_function("merge_one_submission", |b| {
        b.iter(|| {
            let mut batch = ctx.batch();
            for m in &layers {
                batch.merge(&plan, &coeffs, 0.5, m, Orientation::Normal).unwrap();
            }
            batch.submit().unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, dense, sparse, model);
criterion_main!(benches);
