//! The body of the `gguf` fuzz target (`fuzz/fuzz_targets/gguf.rs`), also
//! run by `tests/gguf_fuzz.rs` on mutations of a valid file: any bytes given
//! to the GGUF reader and the decoder loader give a value or a typed error,
//! never a panic, and never an allocation the file's size does not bound.

use wft_candle::gguf::Gguf;
use wft_candle::models::llama;

/// Read `data` as a GGUF file; on success, de-quantize every tensor and try
/// to load it as a decoder.
pub fn gguf(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = dir.path().join("fuzz.gguf");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let Ok(file) = Gguf::open(&path) else { return };
    for t in file.tensors() {
        // Every tensor's bytes lie inside the file, so this is bounded.
        let _ = file.dequantize(&t.name);
    }
    if let Ok((config, weights)) = llama::load_gguf(&file) {
        let _ = llama::Llama::new(&config, &weights, wft_candle::Tuning::Frozen);
    }
    let _ = llama::load_gguf_quantized(&file);
}
