//! The AVX2 and portable kernel builds compute bit-identical results (no
//! FMA, same summation order), so results never depend on the CPU. This
//! binary holds one test because the switch is process-wide.
#![allow(clippy::unwrap_used)]

mod common;

use dwt_core::{Level, Mode, Plan2, Wavelet};
use ndarray::Array2;

#[test]
fn portable_and_vectorised_kernels_agree_bit_for_bit() {
    let mut state = 7u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    for (name, shape) in [
        ("haar", (37, 64)),
        ("db4", (100, 61)),
        ("sym8", (64, 64)),
        ("coif17", (90, 33)),
        ("bior3.9", (41, 77)),
    ] {
        let w = Wavelet::new(name).unwrap();
        let x = Array2::from_shape_simple_fn(shape, &mut next);
        for mode in Mode::ALL {
            let plan = Plan2::<f64>::new(shape, &w, mode, Level::Unchecked(2)).unwrap();
            let run = |portable: bool| {
                dwt_core::__set_portable_kernels_only(portable);
                common::plan_round_trip(&plan, &x)
            };
            let (fast, portable) = (run(false), run(true));
            dwt_core::__set_portable_kernels_only(false);
            assert!(fast == portable, "{name} {mode}: AVX2 and portable kernels differ");
        }
    }
}
