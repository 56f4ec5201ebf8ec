//! Hot-swapping adapters on a loaded decoder against building it again.
//!
//! SmolLM2-135M's sizes (30 blocks, hidden 576, MLP 1536) with random `f32`
//! weights; adapters on `q_proj`, `v_proj` (WaveletFT n = 1000, db1, PEFT's
//! layout; LoRA r = 8), 60 layers:
//!
//! * `swap/<method>`: [`Adaptable::swap_adapters`] A → B (the next
//!   iteration swaps back), bit for bit what a fresh load gives;
//! * `reload/<method>`: [`Llama::new`] with B on the same weights (every
//!   adapted layer's merged weight rebuilt from the frozen one).
//!
//! Per layer: divide by 60. `cargo bench -p wft-candle --bench swap`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use wft_adapter::{LoraConfig, MethodConfig, WaveletFtConfig};
use wft_candle::models::llama::Llama;
use wft_candle::{Adaptable, Tuning};

mod common;
use common::{adapters, smollm2_sizes};

fn swap(c: &mut Criterion) {
    let config = smollm2_sizes();
    let weights = config.random_weights(1).expect("random weights");
    let methods = [
        (
            "waveletft-1000",
            MethodConfig::WaveletFt(WaveletFtConfig {
                n_frequency: 1000,
                ..Default::default()
            }),
        ),
        (
            "lora-r8",
            MethodConfig::Lora(LoraConfig {
                r: 8,
                ..Default::default()
            }),
        ),
    ];
    let mut group = c.benchmark_group("swap");
    group.sample_size(10);
    for (name, method) in &methods {
        let (a, b) = (adapters(&config, method, 1), adapters(&config, method, 2));
        let model = Llama::new(&config, &weights, Tuning::Adapters(&a)).expect("decoder");
        let mut to_b = true;
        group.bench_function(format!("swap/{name}"), |bench| {
            bench.iter(|| {
                model.swap_adapters(if to_b { &b } else { &a }).expect("same layout");
                to_b = !to_b;
            })
        });
        group.bench_function(format!("reload/{name}"), |bench| {
            bench.iter(|| black_box(Llama::new(&config, &weights, Tuning::Adapters(&b)).expect("decoder")))
        });
    }
    group.finish();
}

criterion_group!(benches, swap);
criterion_main!(benches);
