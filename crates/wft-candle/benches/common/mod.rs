//! What the decoder benchmarks share: SmolLM2-135M's sizes and seeded
//! adapters on them.

use wft_adapter::{AdapterConfig, AdapterModel, MethodConfig, ModuleSpec, Mt19937};
use wft_candle::models::llama::{self, Config};

/// SmolLM2-135M's block sizes (30 blocks, hidden 576, MLP 1536, GQA 9/3)
/// with a 4096-token vocabulary.
pub fn smollm2_sizes() -> Config {
    Config {
        vocab_size: 4096,
        hidden_size: 576,
        intermediate_size: 1536,
        num_hidden_layers: 30,
        num_attention_heads: 9,
        num_key_value_heads: 3,
        head_dim: 64,
        ..Config::tiny(4096)
    }
}

/// `method` on every block's `q_proj` and `v_proj`, seeded values.
pub fn adapters(config: &Config, method: &MethodConfig, seed: u64) -> AdapterModel {
    let shapes = llama::base_shapes(std::path::Path::new("smollm2-sizes"), config);
    let targets = ModuleSpec::Names(vec!["q_proj".into(), "v_proj".into()]);
    let mut model = AdapterModel::new_for_shapes(AdapterConfig::new(method.clone(), targets), &shapes, seed)
        .expect("adapters for the decoder's own shapes");
    let mut g = Mt19937::new(seed);
    for m in model.modules_mut().values_mut() {
        m.as_adapter_mut()
            .params_mut()
            .iter_mut()
            .for_each(|p| *p = (0.01 * g.next_normal()) as f32);
    }
    model
}
