//! What the fused ops' unit tests share.

use candle_core::Tensor;
use candle_core::backprop::GradStore;

/// The largest absolute difference of two tensors of one shape (infinite
/// when they cannot be compared).
pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .unwrap_or(f32::INFINITY)
}

/// A tensor's values as their bit patterns, for bit-for-bit comparisons.
pub(crate) fn bits(t: &Tensor) -> candle_core::Result<Vec<u32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?.iter().map(|v| v.to_bits()).collect())
}

/// Assert that two backward passes gave each named variable gradients
/// within `tol`.
///
/// # Panics
/// When a gradient is missing or off, naming `case` and the variable.
pub(crate) fn assert_grads_match(
    g: &GradStore,
    want: &GradStore,
    vars: &[(&candle_core::Var, &str)],
    tol: f32,
    case: &str,
) {
    for (var, what) in vars {
        let (Some(a), Some(b)) = (g.get(var.as_tensor()), want.get(var.as_tensor())) else {
            panic!("{case}: no gradient for {what}");
        };
        let d = max_diff(a, b);
        assert!(d < tol, "{case}: ∂{what} off by {d}");
    }
}

/// The per-row cross-entropy the fused losses replace, as candle composes
/// it: `−log_softmax(logits)[target]`.
pub(crate) fn reference_nll(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let rows = targets.dim(0)?;
    candle_nn::ops::log_softmax(logits, 1)?
        .gather(&targets.reshape((rows, 1))?, 1)?
        .reshape(rows)?
        .neg()
}
