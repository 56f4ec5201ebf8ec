//! Mixed-adapter batches against the merged model and against one adapter
//! at a time.
//!
//! SmolLM2-135M's sizes with random `f32` weights; WaveletFT n = 1000 (db1)
//! on every block's `q_proj` and `v_proj`. 16 requests of 32 prompt tokens
//! each generate 16 tokens (prefill, then 16 one-token steps through the KV
//! cache, greedy):
//!
//! * `merged/1`: all 16 on one adapter, through the decoder built with it
//!   (merged weights: the ceiling);
//! * `mixed/{1,4,16}`: the 16 requests spread over 1, 4 or 16 adapters, one
//!   mixed batch on the frozen decoder ([`Llama::hidden_mixed`]);
//! * `sequential/{4,16}`: the same requests one adapter at a time, each
//!   group as its own batch on a decoder hot-swapped to that adapter.
//!
//! Tokens per second: 16 × 16 divided by the time. `cargo bench -p
//! wft-candle --bench mixed`.

use std::hint::black_box;

use candle_core::{D, Device, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use wft_adapter::{AdapterModel, MethodConfig, WaveletFtConfig};
use wft_candle::models::llama::{Cache, Llama};
use wft_candle::{Adaptable, AdapterMix, Tuning};

mod common;
use common::{adapters, smollm2_sizes};

const REQUESTS: usize = 16;
const PROMPT: usize = 32;
const NEW: usize = 16;

/// Greedy generation of `NEW` tokens for `rows` prompts, as one batch.
fn generate(model: &Llama, rows: usize, mix: Option<&AdapterMix<'_>>) -> Vec<u32> {
    let ids: Vec<u32> = (0..rows * PROMPT).map(|i| (i * 37 % 4000) as u32 + 1).collect();
    let mut input = Tensor::new(ids, &Device::Cpu)
        .and_then(|t| t.reshape((rows, PROMPT)))
        .expect("ids");
    let mut cache = Cache::new();
    let mut last = Vec::new();
    for _ in 0..NEW {
        let hidden = match mix {
            None => model.hidden(&input, &mut cache, None),
            Some(mix) => model.hidden_mixed(&input, &mut cache, None, None, mix),
        }
        .expect("decoder");
        let len = hidden.dim(1).expect("len");
        let logits = model
            .logits(&hidden.narrow(1, len - 1, 1).expect("last"))
            .expect("logits");
        last = logits
            .squeeze(1)
            .and_then(|l| l.argmax(D::Minus1))
            .and_then(|t| t.to_vec1::<u32>())
            .expect("argmax");
        input = Tensor::new(last.as_slice(), &Device::Cpu)
            .and_then(|t| t.reshape((rows, 1)))
            .expect("next");
    }
    last
}

fn mixed(c: &mut Criterion) {
    let config = smollm2_sizes();
    let weights = config.random_weights(1).expect("random weights");
    let method = MethodConfig::WaveletFt(WaveletFtConfig {
        n_frequency: 1000,
        ..Default::default()
    });
    let bank: Vec<AdapterModel> = (0..REQUESTS as u64)
        .map(|k| adapters(&config, &method, k + 1))
        .collect();
    let frozen = Llama::new(&config, &weights, Tuning::Frozen).expect("decoder");
    let mut group = c.benchmark_group("mixed");
    group.sample_size(10);
    group.throughput(criterion::Throughput::Elements((REQUESTS * NEW) as u64));
    let merged = Llama::new(&config, &weights, Tuning::Adapters(&bank[0])).expect("decoder");
    group.bench_function(BenchmarkId::new("merged", 1), |b| {
        b.iter(|| black_box(generate(&merged, REQUESTS, None)))
    });
    for distinct in [1, 4, 16] {
        let routes = (0..REQUESTS).map(|r| Some(r % distinct)).collect();
        let mix = AdapterMix::new(bank[..distinct].iter().collect(), routes).expect("routes");
        group.bench_function(BenchmarkId::new("mixed", distinct), |b| {
            b.iter(|| black_box(generate(&frozen, REQUESTS, Some(&mix))))
        });
    }
    let swapped = Llama::new(&config, &weights, Tuning::Adapters(&bank[0])).expect("decoder");
    for distinct in [4, 16] {
        group.bench_function(BenchmarkId::new("sequential", distinct), |b| {
            b.iter(|| {
                for adapter in &bank[..distinct] {
                    swapped.swap_adapters(adapter).expect("same layout");
                    black_box(generate(&swapped, REQUESTS / distinct, None));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, mixed);
criterion_main!(benches);
