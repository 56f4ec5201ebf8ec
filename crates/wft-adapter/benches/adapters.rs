//! Criterion benchmarks of the adapter operations (f32):
//!
//! * `delta`: dense ΔW and the in-place merge at 768² and 4096², n = 1000
//!   and 5000, WaveletFT db1/db2 (PEFT layout) and FourierFT;
//! * `forward_backward`: one adapted 768×768 layer at batch 4096 (forward,
//!   then backward with the input gradient) for the frozen layer, WaveletFT
//!   n = 1000 and LoRA r = 8.
//!
//! The same-run comparison with PEFT is `cargo xtask bench --peer peft`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ndarray::Array2;
use wft_adapter::dwt_core::Wavelet;
use wft_adapter::{
    AdaptedLinear, Adapter, FourierFt, FourierFtConfig, InputGrad, Lora, LoraConfig, Mt19937, Orientation, WaveletFt,
    WaveletFtConfig,
};

fn randn(g: &mut Mt19937, shape: (usize, usize)) -> Array2<f32> {
    Array2::from_shape_simple_fn(shape, || (0.02 * g.next_normal()) as f32)
}

fn randomized<A: Adapter<f32>>(mut a: A, g: &mut Mt19937) -> A {
    for p in a.params_mut() {
        *p = (0.01 * g.next_normal()) as f32;
    }
    a
}

fn delta(c: &mut Criterion) {
    let mut group = c.benchmark_group("delta");
    group.sample_size(10);
    let mut g = Mt19937::new(1);
    for shape in [(768, 768), (4096, 4096)] {
        for n in [1000, 5000] {
            let id = format!("{}x{}/n{n}", shape.0, shape.1);
            for wavelet in ["db1", "db2"] {
                let cfg = WaveletFtConfig {
                    wavelet: Wavelet::new(wavelet).expect("a built-in wavelet"),
                    n_frequency: n,
                    ..Default::default()
                };
                let a = randomized(WaveletFt::<f32>::new(&cfg, shape).expect("valid config"), &mut g);
                let mut w = randn(&mut g, shape);
                group.bench_function(BenchmarkId::new(format!("{wavelet}/delta_weight"), &id), |b| {
                    b.iter(|| black_box(a.delta_weight()))
                });
                group.bench_function(BenchmarkId::new(format!("{wavelet}/merge_in_place"), &id), |b| {
                    b.iter(|| {
                        a.merge_into(w.view_mut(), 1.0, Orientation::Normal)
                            .expect("shapes match")
                    })
                });
            }
            let cfg = FourierFtConfig {
                n_frequency: n,
                ..Default::default()
            };
            let f = randomized(FourierFt::<f32>::new(&cfg, shape).expect("valid config"), &mut g);
            group.bench_function(BenchmarkId::new("fourierft/delta_weight", &id), |b| {
                b.iter(|| black_box(f.delta_weight()))
            });
        }
    }
    group.finish();
}

fn forward_backward(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward_backward");
    group.sample_size(10);
    let mut g = Mt19937::new(2);
    let (shape, batch) = ((768, 768), 4096);
    let w = randn(&mut g, shape);
    let x = randn(&mut g, (batch, shape.1));
    let gy = randn(&mut g, (batch, shape.0));
    group.bench_function("768x768/frozen", |b| b.iter(|| black_box((x.dot(&w.t()), gy.dot(&w)))));
    let cfg = WaveletFtConfig {
        n_frequency: 1000,
        ..Default::default()
    };
    let wft = randomized(WaveletFt::<f32>::new(&cfg, shape).expect("valid config"), &mut g);
    let lora = Lora::<f32>::new(
        &LoraConfig {
            r: 8,
            lora_alpha: 16.0,
            use_rslora: false,
            seed: 3,
        },
        shape,
    )
    .expect("valid");
    type Layer = AdaptedLinear<f32, Box<dyn Adapter<f32>>>;
    let layers: Vec<(&str, Layer)> = vec![
        (
            "waveletft_db1_n1000",
            AdaptedLinear::new(w.clone(), None, Box::new(wft) as Box<dyn Adapter<f32>>).expect("shapes"),
        ),
        (
            "lora_r8",
            AdaptedLinear::new(w.clone(), None, Box::new(lora) as Box<dyn Adapter<f32>>).expect("shapes"),
        ),
    ];
    for (name, layer) in &layers {
        group.bench_function(format!("768x768/{name}"), |b| {
            b.iter(|| {
                let y = layer.forward(x.view()).expect("shapes");
                black_box((
                    y,
                    layer.backward(x.view(), gy.view(), InputGrad::Compute).expect("shapes"),
                ))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, delta, forward_backward);
criterion_main!(benches);
