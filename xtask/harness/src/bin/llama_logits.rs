//! `llama_logits MODEL.gguf ADAPTER_DIR PROMPTS.json OUT.safetensors`: the
//! logits at every position of each prompt (a JSON list of strings, fed as
//! they are), with the adapter applied unmerged (`-`: none), as `logits.<i>` and the ids
//! as `ids.<i>`; `scripts/check_llama_peft_loads_ours.py` compares PEFT's.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use wft_train::llm::Decoder;

fn main() -> std::process::ExitCode {
    wft_test_support::exit(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, adapter, prompts, out] = args.as_slice() else {
        return Err("usage: llama_logits MODEL.gguf ADAPTER_DIR PROMPTS.json OUT.safetensors".into());
    };
    // `-` for no adapter (the base model alone).
    let adapter = (adapter != "-").then(|| Path::new(adapter));
    let d = Decoder::load(Path::new(model), adapter)?;
    let prompts: Vec<String> = serde_json::from_str(&std::fs::read_to_string(prompts)?)?;
    let mut tensors = HashMap::new();
    for (i, p) in prompts.iter().enumerate() {
        let ids = d.tokenizer.encode(p)?;
        let x = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let logits = d.model.forward(&x, &mut Default::default(), None)?.squeeze(0)?;
        tensors.insert(format!("logits.{i}"), logits);
        let ids: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
        tensors.insert(format!("ids.{i}"), Tensor::new(ids.as_slice(), &Device::Cpu)?);
    }
    candle_core::safetensors::save(&tensors, out)?;
    Ok(())
}
