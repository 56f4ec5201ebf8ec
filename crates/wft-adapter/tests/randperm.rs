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
