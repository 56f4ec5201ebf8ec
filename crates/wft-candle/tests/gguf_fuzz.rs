//! The `gguf` fuzz target's body on 400 seeded mutations of a valid tiny
//! decoder file (bytes flipped, runs overwritten with extreme values, cut
//! short, lengths and counts set to powers of two): no panic, whatever the
//! bytes. The fuzzer itself runs from `fuzz/` on nightly; what it found is
//! replayed from `tests/fuzz/regressions/gguf`.

mod fuzz {
    pub mod harness;
}

use candle_core::quantized::GgmlDType;
use wft_candle::models::llama::{self, Config};
use wft_test_support::XorShift;

#[test]
fn mutated_gguf_files_never_panic() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tiny.gguf");
    let mut config = Config::tiny(300);
    config.num_hidden_layers = 1;
    let weights = config.random_weights(1)?;
    llama::write_gguf(&path, &config, &weights, GgmlDType::Q8_0, llama::tiny_vocab(300)?)?;
    let good = std::fs::read(&path)?;
    fuzz::harness::gguf(&good);
    // `WFT_GGUF_SEED_DIR=DIR cargo test --test gguf_fuzz` also writes the
    // valid file, in three tensor types, as the libFuzzer run's seeds.
    if let Some(seeds) = std::env::var_os("WFT_GGUF_SEED_DIR") {
        let seeds = std::path::Path::new(&seeds);
        std::fs::create_dir_all(seeds)?;
        for dtype in [GgmlDType::F32, GgmlDType::Q8_0, GgmlDType::Q4_1] {
            let seed = seeds.join(format!("tiny-{dtype:?}.gguf"));
            llama::write_gguf(&seed, &config, &weights, dtype, llama::tiny_vocab(300)?)?;
        }
    }
    let mut g = XorShift::new(0x9e37_79b9);
    for round in 0..400 {
        let mut b = good.clone();
        let mut pick = |n: usize| (g.next_u64() % n as u64) as usize;
        match round % 4 {
            0 => {
                for _ in 0..1 + pick(8) {
                    let i = pick(b.len());
                    b[i] ^= 1 << pick(8);
                }
            }
            1 => {
                let i = pick(b.len().saturating_sub(8));
                let v = [u64::MAX, 1 << 40, 1 << 31, 0, 5][pick(5)];
                b[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            2 => b.truncate(pick(b.len())),
            _ => {
                // The header region, where lengths and counts live.
                let i = pick(4096.min(b.len() - 8));
                let v = 1u64 << pick(64);
                b[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
        }
        fuzz::harness::gguf(&b);
    }
    Ok(())
}

/// Every input the libFuzzer runs found (crashes, out-of-memory), replayed:
/// each must now be a typed error, cheaply (the harness itself asserts no
/// panic; an unbounded allocation would abort the test process).
#[test]
fn fuzzer_finds_stay_fixed() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/regressions/gguf");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let bytes = std::fs::read(&path)?;
        fuzz::harness::gguf(&bytes);
        replayed += 1;
    }
    assert!(replayed >= 1, "{}: no regression inputs", dir.display());
    Ok(())
}
