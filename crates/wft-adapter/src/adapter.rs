//! The trait every method implements, and a linear layer that carries one.

use ndarray::linalg::general_mat_mul;
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Axis};

use crate::error::check_shape;
use crate::{Element, Error, Result};

/// The adapter methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Wavelet-domain coefficients (WaveletFT; PEFT's WaveFT is a special case).
    WaveletFt,
    /// Fourier-domain coefficients (FourierFT).
    FourierFt,
    /// Low-rank factors (LoRA, rsLoRA).
    Lora,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::WaveletFt => "WaveletFT",
            Method::FourierFt => "FourierFT",
            Method::Lora => "LoRA",
        })
    }
}

/// A weight update ΔW for one `out × in` linear layer `y = x·Wᵀ`, with its
/// trainable parameters as one flat vector.
///
/// The provided methods work from the dense [`Adapter::delta_weight`]; each
/// method overrides them where it has something cheaper.
pub trait Adapter<T: Element>: std::fmt::Debug + Send + Sync {
    /// Which method this is.
    fn method(&self) -> Method;
    /// `(out, in)` of the adapted weight.
    fn shape(&self) -> (usize, usize);
    /// The trainable parameters.
    fn params(&self) -> &[T];
    /// The trainable parameters, for an optimizer to update.
    fn params_mut(&mut self) -> &mut [T];
    /// Number of trainable parameters.
    fn num_params(&self) -> usize {
        self.params().len()
    }

    /// The dense `out × in` update ΔW.
    fn delta_weight(&self) -> Array2<T>;

    /// `W += sign · ΔW` in place. `w` is `out × in`, or `in × out` when
    /// `fan_in_fan_out` (GPT-2's `Conv1D` layout).
    ///
    /// # Errors
    /// [`Error::Shape`] when `w` has the wrong shape.
    fn merge_into(&self, mut w: ArrayViewMut2<'_, T>, sign: T, fan_in_fan_out: bool) -> Result<()> {
        check_shape("weight", w.shape(), &stored_shape(self.shape(), fan_in_fan_out))?;
        let d = self.delta_weight();
        let d = if fan_in_fan_out { d.reversed_axes() } else { d };
        w.scaled_add(sign, &d);
        Ok(())
    }

    /// `y += x · ΔWᵀ` for a batch `x` of shape `batch × in` (`y`: `batch × out`).
    ///
    /// # Errors
    /// [`Error::Shape`] for mismatched shapes.
    fn forward_delta(&self, x: ArrayView2<'_, T>, mut y: ArrayViewMut2<'_, T>) -> Result<()> {
        let (out, inp) = self.shape();
        check_batch(x, y.view(), inp, out)?;
        general_mat_mul(T::one(), &x, &self.delta_weight().t(), T::one(), &mut y);
        Ok(())
    }

    /// The gradients of a loss `L` through `y = x·(W + ΔW)ᵀ`, given `x`
    /// (`batch × in`) and `g = ∂L/∂y` (`batch × out`): returns `∂L/∂params`
    /// and, when `dx` is given, adds `g · ΔW` to it (the adapter's share of
    /// `∂L/∂x`; the caller adds `g · W`).
    ///
    /// # Errors
    /// [`Error::Shape`] for mismatched shapes.
    fn backward(&self, x: ArrayView2<'_, T>, g: ArrayView2<'_, T>, dx: Option<ArrayViewMut2<'_, T>>) -> Result<Vec<T>>;
}

/// The shape of the stored weight: `(out, in)`, or `(in, out)` for `fan_in_fan_out`.
pub(crate) fn stored_shape((out, inp): (usize, usize), fan_in_fan_out: bool) -> [usize; 2] {
    if fan_in_fan_out { [inp, out] } else { [out, inp] }
}

/// Check `x: batch × inp` and `y: batch × out`.
pub(crate) fn check_batch<T>(x: ArrayView2<'_, T>, y: ArrayView2<'_, T>, inp: usize, out: usize) -> Result<()> {
    check_shape("x", &[x.ncols()], &[inp])?;
    check_shape("output", y.shape(), &[x.nrows(), out])
}

/// Add `g·ΔW` through the dense ΔW (the fallback for `dx`).
pub(crate) fn dx_dense<T: Element>(
    delta: &Array2<T>,
    g: ArrayView2<'_, T>,
    dx: Option<ArrayViewMut2<'_, T>>,
) -> Result<()> {
    if let Some(mut dx) = dx {
        check_shape("dx", dx.shape(), &[g.nrows(), delta.ncols()])?;
        general_mat_mul(T::one(), &g, delta, T::one(), &mut dx);
    }
    Ok(())
}

/// A linear layer `y = x·Wᵀ + b` with an adapter, merged or not.
#[derive(Debug, Clone)]
pub struct AdaptedLinear<T, A> {
    weight: Array2<T>,
    bias: Option<Array1<T>>,
    adapter: A,
    merged: bool,
}

impl<T: Element, A: Adapter<T>> AdaptedLinear<T, A> {
    /// Wrap a frozen `out × in` weight (and optional bias) with an adapter.
    ///
    /// # Errors
    /// [`Error::Shape`] when the weight, bias and adapter disagree.
    pub fn new(weight: Array2<T>, bias: Option<Array1<T>>, adapter: A) -> Result<Self> {
        let (out, inp) = adapter.shape();
        check_shape("weight", weight.shape(), &[out, inp])?;
        if let Some(b) = &bias {
            check_shape("bias", b.shape(), &[out])?;
        }
        Ok(AdaptedLinear {
            weight,
            bias,
            adapter,
            merged: false,
        })
    }

    /// The adapter.
    pub fn adapter(&self) -> &A {
        &self.adapter
    }
    /// The adapter, for an optimizer step. Unmerge first if merged.
    pub fn adapter_mut(&mut self) -> &mut A {
        &mut self.adapter
    }
    /// The weight (with ΔW added while merged).
    pub fn weight(&self) -> &Array2<T> {
        &self.weight
    }
    /// Whether ΔW is currently added into the weight.
    pub fn is_merged(&self) -> bool {
        self.merged
    }

    /// `y = x·Wᵀ + b + x·ΔWᵀ` for `x` of shape `batch × in`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `x` has the wrong number of columns.
    pub fn forward(&self, x: ArrayView2<'_, T>) -> Result<Array2<T>> {
        let (out, inp) = self.adapter.shape();
        check_shape("x", &[x.ncols()], &[inp])?;
        let mut y = Array2::zeros((x.nrows(), out));
        general_mat_mul(T::one(), &x, &self.weight.t(), T::zero(), &mut y);
        if let Some(b) = &self.bias {
            y += b;
        }
        if !self.merged {
            self.adapter.forward_delta(x, y.view_mut())?;
        }
        Ok(y)
    }

    /// `∂L/∂params` and, when `want_dx`, `∂L/∂x`, given `g = ∂L/∂y`.
    ///
    /// # Errors
    /// [`Error::Shape`] for mismatched shapes.
    pub fn backward(
        &self,
        x: ArrayView2<'_, T>,
        g: ArrayView2<'_, T>,
        want_dx: bool,
    ) -> Result<(Vec<T>, Option<Array2<T>>)> {
        let (out, inp) = self.adapter.shape();
        check_batch(x, g, inp, out)?;
        let mut dx = want_dx.then(|| g.dot(&self.weight));
        // Once merged, W already carries ΔW: the adapter adds nothing to ∂L/∂x.
        let share = if self.merged {
            None
        } else {
            dx.as_mut().map(|d| d.view_mut())
        };
        let grads = self.adapter.backward(x, g, share)?;
        Ok((grads, dx))
    }

    /// Add ΔW into the weight. A no-op when already merged.
    pub fn merge(&mut self) {
        if !self.merged {
            let res = self.adapter.merge_into(self.weight.view_mut(), T::one(), false);
            debug_assert!(res.is_ok(), "shapes were checked at construction");
            self.merged = true;
        }
    }

    /// Subtract ΔW from the weight again. A no-op when not merged.
    pub fn unmerge(&mut self) {
        if self.merged {
            let res = self.adapter.merge_into(self.weight.view_mut(), -T::one(), false);
            debug_assert!(res.is_ok(), "shapes were checked at construction");
            self.merged = false;
        }
    }

    /// [`Self::merge`], refusing adapter parameters that are NaN or infinite
    /// and merges that would make the weight non-finite. On refusal the weight
    /// is left as it was.
    ///
    /// # Errors
    /// [`Error::NonFinite`] naming the first offending parameter or weight.
    pub fn merge_safe(&mut self) -> Result<()> {
        if self.merged {
            return Ok(());
        }
        check_finite("adapter parameters", self.adapter.params())?;
        let mut merged = self.weight.clone();
        self.adapter.merge_into(merged.view_mut(), T::one(), false)?;
        check_finite("merged weight", merged.iter())?;
        self.weight = merged;
        self.merged = true;
        Ok(())
    }

    /// Unwrap into `(weight, bias, adapter)`.
    pub fn into_parts(self) -> (Array2<T>, Option<Array1<T>>, A) {
        (self.weight, self.bias, self.adapter)
    }
}

/// [`Error::NonFinite`] at the first value that is NaN or infinite.
pub(crate) fn check_finite<'a, T: Element>(what: &str, v: impl IntoIterator<Item = &'a T>) -> Result<()> {
    match v.into_iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(index) => Err(Error::NonFinite {
            what: what.to_string(),
            index,
        }),
    }
}

/// Split a batch into row blocks for the thread pool. Each block gets its own
/// state from `init`; `f(state, row index, x row, y row)` runs per row.
pub(crate) fn for_each_row<T: Element, S: Send>(
    x: ArrayView2<'_, T>,
    mut y: ArrayViewMut2<'_, T>,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize, &[T], &mut [T]) + Sync,
) -> Vec<S> {
    let x = x.as_standard_layout();
    let rows = x.nrows();
    let run = |start: usize, mut ys: ArrayViewMut2<'_, T>| {
        let mut s = init();
        for (i, mut yr) in ys.axis_iter_mut(Axis(0)).enumerate() {
            let xr = x.row(start + i);
            let xr = xr.as_slice().unwrap_or(&[]);
            match yr.as_slice_mut() {
                Some(yr) => f(&mut s, start + i, xr, yr),
                None => {
                    let mut tmp = yr.to_vec();
                    f(&mut s, start + i, xr, &mut tmp);
                    yr.assign(&ndarray::ArrayView1::from(&tmp));
                }
            }
        }
        s
    };
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        let threads = rayon::current_num_threads().max(1);
        if threads > 1 && rows >= 2 * threads {
            let block = rows.div_ceil(threads);
            let chunks: Vec<(usize, ArrayViewMut2<'_, T>)> = y
                .axis_chunks_iter_mut(Axis(0), block)
                .enumerate()
                .map(|(i, c)| (i * block, c))
                .collect();
            return chunks.into_par_iter().map(|(start, c)| run(start, c)).collect();
        }
    }
    let _ = &mut y;
    vec![run(0, y)]
}
