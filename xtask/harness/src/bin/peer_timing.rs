//! Timing harness behind `cargo xtask bench --peer pywt` (not a benchmark on
//! its own: criterion's `benches/transforms.rs` is). It times `wavedec2` and
//! `waverec2` exactly like `scripts/bench_pywt.py` times PyWavelets, so the two
//! can be compared in the same run, and it measures the machine's copy
//! bandwidth.
//!
//! Usage: `peer_timing ROWSxCOLS:WAVELET:MODE:DTYPE:LEVEL ...`
//! Output: one line per case and op: `case op seconds`, plus
//! `bandwidth copy BYTES_PER_SECOND`.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use dwt_core::{Mode, Real, Wavelet, wavedec2, waverec2};
use ndarray::Array2;

/// Median wall time of `f`, repeated for at least `budget` (3..=50 runs).
fn time(mut f: impl FnMut(), budget: Duration) -> f64 {
    f(); // warm-up
    let mut runs = Vec::new();
    let start = Instant::now();
    while runs.len() < 3 || (start.elapsed() < budget && runs.len() < 50) {
        let t = Instant::now();
        f();
        runs.push(t.elapsed().as_secs_f64());
    }
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn case<T: Real>(shape: (usize, usize), w: &Wavelet, mode: Mode, level: usize, label: &str) {
    let mut g = wft_test_support::XorShift::new(0x2545_f491_4f6c_dd1d);
    let x = Array2::from_shape_simple_fn(shape, || {
        T::from_f64((g.next_u64() >> 11) as f64 / (1u64 << 53) as f64 - 0.5)
    });
    let budget = Duration::from_millis(400);
    let t = time(
        || drop(black_box(wavedec2(x.view(), w, mode, Some(level)).unwrap())),
        budget,
    );
    println!("{label} wavedec2 {t:.6e}");
    let c = wavedec2(x.view(), w, mode, Some(level)).unwrap();
    let t = time(|| drop(black_box(waverec2(&c, w, mode).unwrap())), budget);
    println!("{label} waverec2 {t:.6e}");
}

fn main() {
    // Copy bandwidth: one read and one write of a 256 MiB buffer.
    let n = 32 << 20;
    let src = vec![1.0f64; n];
    let mut dst = vec![0.0f64; n];
    let t = time(|| dst.copy_from_slice(black_box(&src)), Duration::from_millis(500));
    black_box(&dst);
    println!("bandwidth copy {:.6e}", (2 * 8 * n) as f64 / t);
    drop((src, dst));

    for spec in std::env::args().skip(1) {
        let parts: Vec<&str> = spec.split(':').collect();
        let (r, c) = parts[0].split_once('x').unwrap();
        let shape = (r.parse().unwrap(), c.parse().unwrap());
        let w = Wavelet::new(parts[1]).unwrap();
        let mode: Mode = parts[2].parse().unwrap();
        let level: usize = parts[4].parse().unwrap();
        match parts[3] {
            "f32" => case::<f32>(shape, &w, mode, level, &spec),
            _ => case::<f64>(shape, &w, mode, level, &spec),
        }
    }
}
