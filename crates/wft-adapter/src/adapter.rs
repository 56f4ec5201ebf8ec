//! The trait every method implements, and a linear layer that carries one.

use dwt_core::Orientation;
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

    /// `W += sign · ΔW` in place. `w` is `out × in`, or `in × out` for
    /// [`Orientation::Transposed`] (PEFT's `fan_in_fan_out`, GPT-2's
    /// `Conv1D` layout).
    ///
    /// # Errors
    /// [`Error::Shape`] when `w` has the wrong shape.
    fn merge_into(&self, mut w: ArrayViewMut2<'_, T>, sign: T, orientation: Orientation) -> Result<()> {
        check_shape("weight", w.shape(), &stored_shape(self.shape(), orientation))?;
        add_dense(self.delta_weight(), w.view_mut(), sign, orientation);
        Ok(())
    }

    /// Call `f(start, len)` for contiguous runs of the row-major weight,
    /// stored in `orientation`, that together cover every element
    /// [`Adapter::merge_into`] writes (runs may overlap), and say whether it
    /// did: [`Coverage::Everything`] (the default, for LoRA and FourierFT,
    /// which write every element) reports no runs. WaveletFT's runs cover
    /// `O(n · support²)` elements.
    fn for_each_touched_run(&self, orientation: Orientation, f: &mut dyn FnMut(usize, usize)) -> Coverage {
        let _ = (orientation, f);
        Coverage::Everything
    }

    /// The flat indices [`Adapter::for_each_touched_run`] covers, sorted and
    /// without repeats; `None` for [`Coverage::Everything`].
    fn touched(&self, orientation: Orientation) -> Option<Vec<usize>> {
        let mut idx = Vec::new();
        match self.for_each_touched_run(orientation, &mut |start, len| idx.extend(start..start + len)) {
            Coverage::Everything => None,
            Coverage::Runs => {
                idx.sort_unstable();
                idx.dedup();
                Some(idx)
            }
        }
    }

    /// `W += ΔW` in place, as [`Adapter::merge_into`] with sign 1, keeping
    /// the previous value of every element it writes, so that
    /// [`MergeRecord::restore`] puts `W` back **bit for bit** (subtracting
    /// ΔW again does not: float addition does not undo). The record holds
    /// the elements of [`Adapter::for_each_touched_run`]'s runs, or a copy of
    /// all of `W` for an adapter that writes every element or a weight that
    /// is not contiguous.
    ///
    /// # Errors
    /// [`Error::Shape`] when `w` has the wrong shape.
    fn merge_recorded(&self, mut w: ArrayViewMut2<'_, T>, orientation: Orientation) -> Result<MergeRecord<T>> {
        let stored = stored_shape(self.shape(), orientation);
        check_shape("weight", w.shape(), &stored)?;
        let saved = match w.as_slice() {
            Some(buf) => {
                let (mut runs, mut values) = (Vec::new(), Vec::new());
                let coverage = self.for_each_touched_run(orientation, &mut |start, len| {
                    runs.push((start, len));
                    values.extend_from_slice(&buf[start..start + len]);
                });
                match coverage {
                    Coverage::Runs => Saved::Runs { runs, values },
                    Coverage::Everything => Saved::Dense(buf.to_vec()),
                }
            }
            None => Saved::Dense(w.iter().copied().collect()),
        };
        self.merge_into(w.view_mut(), T::one(), orientation)?;
        Ok(MergeRecord { stored, saved })
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

/// The trait's methods, forwarded through a pointer type.
macro_rules! forward_adapter {
    ($($ty:ty),*) => {$(
        impl<T: Element, A: Adapter<T> + ?Sized> Adapter<T> for $ty {
            fn method(&self) -> Method {
                (**self).method()
            }
            fn shape(&self) -> (usize, usize) {
                (**self).shape()
            }
            fn params(&self) -> &[T] {
                (**self).params()
            }
            fn params_mut(&mut self) -> &mut [T] {
                (**self).params_mut()
            }
            fn delta_weight(&self) -> Array2<T> {
                (**self).delta_weight()
            }
            fn merge_into(&self, w: ArrayViewMut2<'_, T>, sign: T, orientation: Orientation) -> Result<()> {
                (**self).merge_into(w, sign, orientation)
            }
            fn for_each_touched_run(&self, orientation: Orientation, f: &mut dyn FnMut(usize, usize)) -> Coverage {
                (**self).for_each_touched_run(orientation, f)
            }
            fn forward_delta(&self, x: ArrayView2<'_, T>, y: ArrayViewMut2<'_, T>) -> Result<()> {
                (**self).forward_delta(x, y)
            }
            fn backward(
                &self,
                x: ArrayView2<'_, T>,
                g: ArrayView2<'_, T>,
                dx: Option<ArrayViewMut2<'_, T>>,
            ) -> Result<Vec<T>> {
                (**self).backward(x, g, dx)
            }
        }
    )*};
}

// A boxed adapter is an adapter (so `AdaptedLinear<T, Box<dyn Adapter<T>>>`
// can hold any method), and so is a mutable borrow of one (a layer can
// train a model's adapter in place).
forward_adapter!(Box<A>, &mut A);

/// What [`Adapter::merge_recorded`] overwrote: the previous values of the
/// weight elements a merge wrote, to put back bit for bit.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeRecord<T> {
    /// The stored weight's shape.
    stored: [usize; 2],
    saved: Saved<T>,
}

#[derive(Debug, Clone, PartialEq)]
enum Saved<T> {
    /// `(start, len)` runs of the row-major weight (they may overlap: each
    /// saved copy is the value before the merge) and their values, back to
    /// back.
    Runs { runs: Vec<(usize, usize)>, values: Vec<T> },
    /// Every element, in logical row-major order.
    Dense(Vec<T>),
}

/// Which elements a merge writes, as [`Adapter::for_each_touched_run`]
/// reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// Only the runs reported.
    Runs,
    /// Every element; no runs were reported.
    Everything,
}

impl<T: Element> MergeRecord<T> {
    /// Write the saved values back into `w`, the weight the merge wrote:
    /// `w` is then bit for bit what it was before the merge (if nothing
    /// else wrote those elements since). `O(len)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `w` is not the merged weight's shape.
    pub fn restore(&self, mut w: ArrayViewMut2<'_, T>) -> Result<()> {
        check_shape("weight", w.shape(), &self.stored)?;
        match &self.saved {
            Saved::Runs { runs, values } => {
                let cols = self.stored[1];
                let mut off = 0;
                for &(start, len) in runs {
                    let v = &values[off..off + len];
                    off += len;
                    match w.as_slice_mut() {
                        Some(buf) => buf[start..start + len].copy_from_slice(v),
                        None => {
                            for (i, &x) in (start..start + len).zip(v) {
                                w[[i / cols, i % cols]] = x;
                            }
                        }
                    }
                }
            }
            Saved::Dense(values) => w.iter_mut().zip(values).for_each(|(d, &v)| *d = v),
        }
        Ok(())
    }

    /// How many values it saved (overlapping runs count each time).
    pub fn len(&self) -> usize {
        match &self.saved {
            Saved::Runs { values, .. } => values.len(),
            Saved::Dense(values) => values.len(),
        }
    }

    /// Whether it saved nothing (a merge that wrote nothing).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether it saved the whole weight rather than runs of it.
    pub fn is_dense(&self) -> bool {
        matches!(self.saved, Saved::Dense(_))
    }
}

/// `w += sign · d`, with `d` (`out × in`) transposed for
/// [`Orientation::Transposed`]; shapes already checked.
pub(crate) fn add_dense<T: Element>(d: Array2<T>, mut w: ArrayViewMut2<'_, T>, sign: T, orientation: Orientation) {
    w.scaled_add(sign, &orientation.orient(d));
}

/// The shape of the stored weight: `[out, in]`, or `[in, out]` transposed.
pub(crate) fn stored_shape(shape: (usize, usize), orientation: Orientation) -> [usize; 2] {
    let (a, b) = orientation.stored_shape(shape);
    [a, b]
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

/// Whether [`AdaptedLinear::backward`] computes `∂L/∂x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputGrad {
    /// Only the parameter gradients (the first layer of a network).
    Skip,
    /// The parameter gradients and `∂L/∂x`.
    Compute,
}

/// What [`AdaptedLinear::backward`] and [`crate::AdaptedConv2d::backward`] return.
#[derive(Debug, Clone, PartialEq)]
pub struct Gradients<T, D: ndarray::Dimension = ndarray::Ix2> {
    /// `∂L/∂params`, in [`Adapter::params`] order.
    pub params: Vec<T>,
    /// `∂L/∂x` with [`InputGrad::Compute`]: `batch × in` for a linear
    /// layer, `batch × in × h × w` for a convolution.
    pub input: Option<ndarray::Array<T, D>>,
}

/// A linear layer `y = x·Wᵀ + b` with an adapter, merged or not.
#[derive(Debug, Clone)]
pub struct AdaptedLinear<T, A> {
    weight: Array2<T>,
    bias: Option<Array1<T>>,
    adapter: A,
    /// While merged: what the merge overwrote.
    merged: Option<MergeRecord<T>>,
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
            merged: None,
        })
    }

    /// The adapter.
    pub fn adapter(&self) -> &A {
        &self.adapter
    }
    /// The adapter, for an optimizer step.
    ///
    /// # Errors
    /// [`Error::Merged`] while ΔW is merged into the weight: changing the
    /// parameters then would make [`Self::unmerge`] subtract another ΔW.
    /// Unmerge first.
    pub fn adapter_mut(&mut self) -> Result<&mut A> {
        if self.is_merged() {
            return Err(Error::Merged);
        }
        Ok(&mut self.adapter)
    }
    /// The weight (with ΔW added while merged).
    pub fn weight(&self) -> &Array2<T> {
        &self.weight
    }
    /// Whether ΔW is currently added into the weight.
    pub fn is_merged(&self) -> bool {
        self.merged.is_some()
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
        if !self.is_merged() {
            self.adapter.forward_delta(x, y.view_mut())?;
        }
        Ok(y)
    }

    /// `∂L/∂params` and, with [`InputGrad::Compute`], `∂L/∂x`, given
    /// `g = ∂L/∂y`.
    ///
    /// # Errors
    /// [`Error::Shape`] for mismatched shapes.
    pub fn backward(&self, x: ArrayView2<'_, T>, g: ArrayView2<'_, T>, input: InputGrad) -> Result<Gradients<T>> {
        let (out, inp) = self.adapter.shape();
        check_batch(x, g, inp, out)?;
        let mut dx = (input == InputGrad::Compute).then(|| g.dot(&self.weight));
        // Once merged, W already carries ΔW: the adapter adds nothing to ∂L/∂x.
        let share = if self.is_merged() {
            None
        } else {
            dx.as_mut().map(|d| d.view_mut())
        };
        let params = self.adapter.backward(x, g, share)?;
        Ok(Gradients { params, input: dx })
    }

    /// Add ΔW into the weight, keeping what it overwrote
    /// ([`Adapter::merge_recorded`]). A no-op when already merged.
    ///
    /// # Errors
    /// None in practice: the shapes were checked at construction; an
    /// adapter's own [`Adapter::merge_into`] errors are passed on.
    pub fn merge(&mut self) -> Result<()> {
        if self.merged.is_none() {
            let record = self
                .adapter
                .merge_recorded(self.weight.view_mut(), Orientation::Normal)?;
            self.merged = Some(record);
        }
        Ok(())
    }

    /// Take ΔW out of the weight again, exactly: the overwritten elements
    /// get their saved values back, so the weight is bit for bit what it was
    /// before [`Self::merge`]. A no-op when not merged.
    ///
    /// # Errors
    /// As [`Self::merge`].
    pub fn unmerge(&mut self) -> Result<()> {
        if let Some(record) = self.merged.take() {
            record.restore(self.weight.view_mut())?;
        }
        Ok(())
    }

    /// Replace the adapter with `adapter` and return the old one. A merged
    /// layer stays merged: the old adapter's elements are restored exactly
    /// and the new one merged, `O(touched)` for WaveletFT (never `O(out·in)`),
    /// so the weight is bit for bit what merging `adapter` into the frozen
    /// weight gives.
    ///
    /// # Errors
    /// [`Error::Shape`] when `adapter` has another shape (the layer is then
    /// unchanged), and the merge's errors.
    pub fn swap(&mut self, adapter: A) -> Result<A> {
        check_shape(
            "adapter",
            &[adapter.shape().0, adapter.shape().1],
            &[self.adapter.shape().0, self.adapter.shape().1],
        )?;
        let was_merged = self.is_merged();
        self.unmerge()?;
        let old = std::mem::replace(&mut self.adapter, adapter);
        if was_merged {
            self.merge()?;
        }
        Ok(old)
    }

    /// [`Self::merge`], refusing adapter parameters that are NaN or infinite
    /// and merges that would make the weight non-finite. On refusal the weight
    /// is left as it was.
    ///
    /// # Errors
    /// [`Error::NonFinite`] naming the first offending parameter or weight.
    pub fn merge_safe(&mut self) -> Result<()> {
        if self.is_merged() {
            return Ok(());
        }
        check_finite("adapter parameters", self.adapter.params())?;
        let mut merged = self.weight.clone();
        let record = self.adapter.merge_recorded(merged.view_mut(), Orientation::Normal)?;
        check_finite("merged weight", merged.iter())?;
        self.weight = merged;
        self.merged = Some(record);
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

/// Batch rows per block of the transposed batch kernels.
pub(crate) const ROW_BLOCK: usize = 64;

/// One block of batch rows: first row, row count, and the matching rows of
/// the output (if any).
pub(crate) type Block<'a, T> = (usize, usize, Option<ArrayViewMut2<'a, T>>);

/// Run `f(state, block)` over blocks of [`ROW_BLOCK`] batch rows, on the
/// thread pool when the `parallel` feature is on. Each run of
/// [`BLOCKS_PER_STATE`] blocks gets its own state from `init`; the states
/// come back in block order for reduction.
pub(crate) fn for_each_block<T: Element, S: Send>(
    rows: usize,
    out: Option<ArrayViewMut2<'_, T>>,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, Block<'_, T>) + Sync + Send,
) -> Vec<S> {
    let blocks: Vec<Block<'_, T>> = match out {
        Some(mut rest) => {
            let mut v = Vec::with_capacity(rows.div_ceil(ROW_BLOCK));
            while rest.nrows() > 0 {
                let k = ROW_BLOCK.min(rest.nrows());
                let (head, tail) = rest.split_at(Axis(0), k);
                v.push((v.len() * ROW_BLOCK, k, Some(head)));
                rest = tail;
            }
            v
        }
        None => (0..rows)
            .step_by(ROW_BLOCK)
            .map(|s| (s, ROW_BLOCK.min(rows - s), None))
            .collect(),
    };
    // One state per run of BLOCKS_PER_STATE blocks, whatever the thread
    // count, returned in block order: the caller's in-order reduction then
    // adds the same partial sums in the same order on 1 thread or 16.
    let mut runs: Vec<Vec<Block<'_, T>>> = Vec::with_capacity(blocks.len().div_ceil(BLOCKS_PER_STATE));
    for b in blocks {
        match runs.last_mut() {
            Some(run) if run.len() < BLOCKS_PER_STATE => run.push(b),
            _ => runs.push(vec![b]),
        }
    }
    let run = |run: Vec<Block<'_, T>>| {
        let mut s = init();
        for b in run {
            f(&mut s, b);
        }
        s
    };
    #[cfg(feature = "parallel")]
    if runs.len() > 1 && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        return runs.into_par_iter().map(run).collect();
    }
    runs.into_iter().map(run).collect()
}

/// Row blocks per state of [`for_each_block`]: scratch is allocated once
/// per 128 rows, and the partial sums do not depend on the thread count.
const BLOCKS_PER_STATE: usize = 2;

/// Side of the square tiles the transposes move through registers.
const TILE: usize = 8;

/// `dst[t·rb + j] = src[start + j, t]`: rows `start..start + rb` of a
/// C-contiguous `src` with `cols` columns, transposed into a `cols × rb`
/// buffer.
pub(crate) fn transpose_rows<T: Element>(src: &[T], cols: usize, start: usize, rb: usize, dst: &mut [T]) {
    let src = &src[start * cols..(start + rb) * cols];
    dwt_core::__dispatch!(transpose_tiles(src, rb, cols, dst, |o: &mut T, v: T| *o = v))
}

/// `dst[j, t] += src[t·rb + j]`: add a transposed `cols × rb` buffer into
/// `rb` rows.
pub(crate) fn add_transposed<T: Element>(src: &[T], rb: usize, mut dst: ArrayViewMut2<'_, T>) {
    let cols = dst.ncols();
    match dst.as_slice_mut() {
        Some(d) => dwt_core::__dispatch!(transpose_tiles(src, cols, rb, d, |o: &mut T, v: T| *o += v)),
        None => {
            for ((j, t), v) in dst.indexed_iter_mut() {
                *v += src[t * rb + j];
            }
        }
    }
}

/// `op(dst[c·rows + r], src[r·cols + c])` for a row-major `rows × cols`
/// `src`: a transpose into `dst`, combined by `op`. Full 8×8 tiles go
/// through a local array so both the loads and the stores are contiguous
/// runs of 8.
#[inline(always)]
fn transpose_tiles<T: Element>(src: &[T], rows: usize, cols: usize, dst: &mut [T], op: impl Fn(&mut T, T)) {
    let (src, dst) = (&src[..rows * cols], &mut dst[..rows * cols]);
    let (rf, cf) = (rows - rows % TILE, cols - cols % TILE);
    for r0 in (0..rf).step_by(TILE) {
        for c0 in (0..cf).step_by(TILE) {
            let mut tile = [[T::zero(); TILE]; TILE];
            for (r, row) in tile.iter_mut().enumerate() {
                row.copy_from_slice(&src[(r0 + r) * cols + c0..(r0 + r) * cols + c0 + TILE]);
            }
            for c in 0..TILE {
                let out = &mut dst[(c0 + c) * rows + r0..(c0 + c) * rows + r0 + TILE];
                for (r, o) in out.iter_mut().enumerate() {
                    op(o, tile[r][c]);
                }
            }
        }
    }
    // Ragged edges: the last columns of every row, and the last rows.
    for r in 0..rows {
        for c in (if r < rf { cf } else { 0 })..cols {
            op(&mut dst[c * rows + r], src[r * cols + c]);
        }
    }
}
