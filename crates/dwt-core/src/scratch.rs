//! A per-thread scratch buffer for the allocating convenience functions, so
//! that repeated calls do not allocate (and page-fault in) a fresh
//! multi-megabyte buffer each time. Plans take the caller's own scratch.

use std::cell::RefCell;

/// Buffers larger than this are not kept between calls.
const KEEP_MAX_BYTES: usize = 256 << 20;

thread_local! {
    static F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static F64: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// Element types with a per-thread scratch buffer.
pub trait WithScratch: Sized + Copy + Default + 'static {
    /// Run `f` with at least `len` elements of scratch (contents unspecified).
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
}

fn with<T: Copy + Default, R>(cell: &RefCell<Vec<T>>, len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    // Re-entrant use (a callback transforming inside a transform) falls back
    // to a fresh buffer instead of panicking.
    let Ok(mut buf) = cell.try_borrow_mut() else {
        return f(&mut vec![T::default(); len]);
    };
    if buf.len() < len {
        buf.resize(len, T::default());
    }
    let out = f(&mut buf[..len]);
    if buf.len() * size_of::<T>() > KEEP_MAX_BYTES {
        *buf = Vec::new();
    }
    out
}

impl WithScratch for f32 {
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
        F32.with(|c| with(c, len, f))
    }
}

impl WithScratch for f64 {
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
        F64.with(|c| with(c, len, f))
    }
}
