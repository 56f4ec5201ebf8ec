//! Instruction-set dispatch for the kernels.
//!
//! The kernels are written once, as plain loops the compiler vectorises.
//! [`dispatch!`] compiles a kernel body a second time with AVX2 enabled and
//! picks that copy at run time when the CPU has it (the check is a cached
//! atomic load). FMA is deliberately not enabled: fused multiply-adds would
//! round differently, and results are bit-identical across instruction sets.

use std::sync::atomic::{AtomicBool, Ordering};

static PORTABLE_ONLY: AtomicBool = AtomicBool::new(false);

/// Force the portable kernels even where AVX2 exists (for tests that
/// compare the two; results are bit-identical by construction).
#[doc(hidden)]
pub fn set_portable_only(on: bool) {
    PORTABLE_ONLY.store(on, Ordering::Relaxed);
}

#[doc(hidden)]
#[inline(always)]
pub fn portable_only() -> bool {
    PORTABLE_ONLY.load(Ordering::Relaxed)
}

/// Run `$body` (a call of an `#[inline(always)]` kernel method) through the
/// best instruction set this CPU supports. Exported (hidden) so the crates
/// above dwt-core dispatch their kernels the same way.
#[doc(hidden)]
#[macro_export]
macro_rules! __dispatch {
    ($body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2")]
            unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if !$crate::__portable_only() && std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked on the line above.
                return unsafe { avx2(|| $body) };
            }
        }
        $body
    }};
}

pub(crate) use crate::__dispatch as dispatch;
