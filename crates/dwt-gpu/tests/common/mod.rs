//! Shared test harness: one GPU context per test binary, the per-device test
//! macro, CPU references from dwt-core, and comparisons.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::Write;
use std::sync::OnceLock;

use dwt_gpu::Context;
use ndarray::{Array2, ArrayView2};

/// The context of the adapter the environment picks (`WGPU_BACKEND`,
/// `WGPU_ADAPTER_NAME`), opened once. Without an adapter: a failure when
/// `CI=true`, otherwise a loud skip on the terminal (not captured).
pub fn device(test: &str) -> Option<&'static Context> {
    static CTX: OnceLock<Result<Context, String>> = OnceLock::new();
    let ctx = CTX.get_or_init(|| {
        let r = Context::new().map_err(|e| e.to_string());
        if let Ok(c) = &r {
            let _ = writeln!(std::io::stderr(), "dwt-gpu tests run on: {}", c.describe());
        }
        r
    });
    match ctx {
        Ok(c) => Some(c),
        Err(e) => {
            wft_test_support::skip_or_fail(test, format!("no GPU adapter ({e})"));
            None
        }
    }
}

/// Candle-style per-device test: the body gets `&Context` for the adapter
/// under test; the same bodies run on lavapipe (Vulkan), llvmpipe (GL) or a
/// real GPU, whichever `WGPU_BACKEND` selects.
#[macro_export]
macro_rules! device_test {
    ($(#[$m:meta])* fn $name:ident($ctx:ident) $body:block) => {
        $(#[$m])*
        #[test]
        fn $name() {
            let Some($ctx) = common::device(stringify!($name)) else { return };
            $body
        }
    };
}

/// Deterministic pseudo-random values in [-1, 1) (xorshift), so a failing
/// proptest case reproduces from its seed.
pub fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut g = wft_test_support::XorShift::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    (0..n).map(|_| g.next_signed()).collect()
}

pub fn matrix(seed: u64, shape: (usize, usize)) -> Array2<f32> {
    Array2::from_shape_vec(shape, values(seed, shape.0 * shape.1)).unwrap()
}

/// `max |gpu − reference| / max |reference|`, after checking that every
/// element was written (no NaN left from the poisoned buffer) where the
/// reference is finite.
pub fn rel_err(gpu: ArrayView2<'_, f32>, reference: ArrayView2<'_, f64>) -> f64 {
    assert_eq!(gpu.dim(), reference.dim(), "shape");
    let mut scale: f64 = 1e-30;
    let mut err: f64 = 0.0;
    for (&g, &r) in gpu.iter().zip(reference) {
        if r.is_finite() {
            assert!(
                g.is_finite(),
                "unwritten or non-finite output {g} where the reference is {r}"
            );
            scale = scale.max(r.abs());
            err = err.max((f64::from(g) - r).abs());
        } else {
            assert!(g.is_nan() || g == r as f32, "reference {r}, gpu {g}");
        }
    }
    err / scale
}

pub const TOL: f64 = 1e-5;
