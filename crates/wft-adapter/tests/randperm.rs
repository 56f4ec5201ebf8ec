//! torch.randperm vectors recorded from real torch 2.15 (seed 777), both
//! branches, from `../shared/spec/REFERENCE.md` §3.
#![allow(clippy::unwrap_used)]

use wft_adapter::{RANDPERM_SMALL_LIMIT, randperm_prefix};

#[test]
fn small_branch_vectors() {
    let cases: [(u64, [u64; 8]); 3] = [
        (
            768 * 768,
            [391271, 183699, 413551, 384200, 435559, 59955, 374469, 198662],
        ),
        (
            4096 * 4096,
            [
                1374311, 8240085, 6766295, 6474818, 14786199, 14783200, 12151563, 8443997,
            ],
        ),
        (
            1024 * 768,
            [587879, 379130, 215843, 186497, 631715, 643984, 369447, 588714],
        ),
    ];
    for (total, want) in cases {
        assert!(total < RANDPERM_SMALL_LIMIT);
        assert_eq!(randperm_prefix(total, 8, 777), want, "N = {total}");
    }
}

/// 8192×28672 = 234,881,024 elements: torch's inside-out branch with 64-bit
/// draws (the whole stream is drawn, about a second).
#[test]
fn large_branch_vector() {
    let total = 8192 * 28672;
    assert!(total >= RANDPERM_SMALL_LIMIT);
    let want = [
        150358698, 199533091, 83306822, 145970095, 40813261, 111338416, 71047571, 163718730,
    ];
    assert_eq!(randperm_prefix(total, 8, 777), want);
}

/// The prefix of a prefix is a prefix, and a prefix holds distinct indices.
#[test]
fn prefixes_are_consistent() {
    let long = randperm_prefix(1 << 20, 5000, 3);
    assert_eq!(randperm_prefix(1 << 20, 100, 3), long[..100]);
    let mut s = long.clone();
    s.sort_unstable();
    s.dedup();
    assert_eq!(s.len(), 5000);
    assert!(s.iter().all(|&i| i < 1 << 20));
}

/// Real torch 2.15 prefixes on the large branch, from
/// `scripts/make_randperm_large.py` (committed output): Llama-70B layer
/// shapes in both orientations, 16384², and the first size on the branch,
/// 2048–4096 indices each, compared index by index.
#[test]
fn large_branch_matches_torch_prefixes() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/randperm_large.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = json["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let (out, inp, seed) = (
            case["out"].as_u64().unwrap(),
            case["in"].as_u64().unwrap(),
            case["seed"].as_u64().unwrap(),
        );
        let want: Vec<u64> = case["indices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert!(out * inp >= RANDPERM_SMALL_LIMIT);
        let got = randperm_prefix(out * inp, want.len(), seed);
        let first_bad = got.iter().zip(&want).position(|(a, b)| a != b);
        assert_eq!(
            first_bad, None,
            "{out}x{inp} seed {seed}: first difference at index {first_bad:?}"
        );
        assert_eq!(got.len(), want.len());
    }
}
