//! Plans: everything about a multilevel transform that depends only on
//! shapes, built once and reused.
//!
//! A plan fixes (shape, axes, wavelet, mode, level). It precomputes every
//! step's geometry, converted filters and boundary stencils, and sizes one
//! scratch buffer. [`Plan::forward`], [`Plan::inverse`] and
//! [`Plan::inverse_adjoint`] then write into caller-provided outputs and that
//! scratch buffer and allocate nothing (on the sequential path; the rayon path
//! allocates one lane buffer per worker task for last-axis steps).

use std::marker::PhantomData;

use ndarray::{ArrayView, ArrayViewMut, Axis, Dimension, IntoDimension};

use crate::coeffs::{CoeffSet, Coeffs1, Coeffs2, standard_slice, standard_slice_mut};
use crate::kernels::{Analysis, Synthesis};

mod steps;
use crate::{Error, Mode, Real, Result, Wavelet, dwt_coeff_len, dwt_max_level, idwt_len};
use steps::{LevelSteps, Regions, Step, check_axes, embed, prod, with};

/// How many decomposition levels a plan uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    /// The deepest level `dwt_max_level` allows (the minimum over the
    /// transformed axes), PyWavelets' `level=None`.
    #[default]
    Max,
    /// Exactly this many levels; deeper than `dwt_max_level` is an
    /// [`Error::LevelTooDeep`].
    Exactly(usize),
    /// Exactly this many levels, however deep. PyWavelets allows this with a
    /// warning; the coefficients are then dominated by the boundary extension.
    Unchecked(usize),
}

impl From<Option<usize>> for Level {
    fn from(level: Option<usize>) -> Self {
        level.map_or(Level::Max, Level::Exactly)
    }
}

/// A reusable multilevel transform over one axis ([`Plan1`]) or two axes
/// ([`Plan2`]) of an N-D array.
///
/// ```
/// use dwt_core::{Level, Mode, Plan2, Wavelet};
/// use ndarray::Array2;
///
/// let w = Wavelet::new("db4")?;
/// let plan = Plan2::<f64>::new((64, 48), &w, Mode::Periodization, Level::Exactly(2))?;
/// let x = Array2::from_shape_fn((64, 48), |(i, j)| (i * j) as f64);
/// let mut coeffs = plan.coeffs_zeros();
/// let mut scratch = vec![0.0; plan.scratch_len()];
/// plan.forward(x.view(), &mut coeffs, &mut scratch)?;
/// let mut y = Array2::zeros(plan.reconstruction_dim());
/// plan.inverse(&coeffs, y.view_mut(), &mut scratch)?;
/// assert!((&y - &x).iter().all(|e| e.abs() < 1e-9));
/// # Ok::<(), dwt_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Plan<T, D, C> {
    axes: Vec<usize>,
    wavelet: String,
    mode: Mode,
    signal: Option<Vec<usize>>,
    approx: Vec<usize>,
    /// Finest level first.
    levels: Vec<LevelSteps<T>>,
    regions: Regions,
    parallel: bool,
    _marker: PhantomData<fn() -> (D, C)>,
}

/// A plan for `wavedec`/`waverec` along one axis.
pub type Plan1<T, D = ndarray::Ix1> = Plan<T, D, Coeffs1<T, D>>;
/// A plan for `wavedec2`/`waverec2` over two axes.
pub type Plan2<T, D = ndarray::Ix2> = Plan<T, D, Coeffs2<T, D>>;

impl<T: Real, D: Dimension, C: CoeffSet<T, D>> Plan<T, D, C> {
    /// A plan for signals of `shape`, transformed over the last axis
    /// ([`Plan1`]) or the last two axes ([`Plan2`]), PyWavelets' defaults.
    ///
    /// # Errors
    /// [`Error::Empty`] for a zero-sized shape, [`Error::AxisOutOfRange`] when
    /// the array has too few dimensions, [`Error::LevelTooDeep`] for
    /// [`Level::Exactly`] beyond `dwt_max_level`, [`Error::TooShortForMode`]
    /// when a level's input is too short for the mode.
    pub fn new(shape: impl IntoDimension<Dim = D>, wavelet: &Wavelet, mode: Mode, level: Level) -> Result<Self> {
        let shape = shape.into_dimension();
        let ndim = shape.ndim();
        if ndim < C::AXES {
            return Err(Error::AxisOutOfRange {
                axis: C::AXES - 1,
                ndim,
            });
        }
        let axes: Vec<usize> = (ndim - C::AXES..ndim).collect();
        Self::for_signal(shape.slice(), &axes, wavelet, mode, level)
    }

    /// Like [`Plan::new`], over the given axes (one for [`Plan1`], two for
    /// [`Plan2`], in transform order).
    ///
    /// # Errors
    /// As [`Plan::new`], plus [`Error::WrongAxisCount`] and
    /// [`Error::RepeatedAxis`].
    pub fn with_axes(
        shape: impl IntoDimension<Dim = D>,
        axes: &[Axis],
        wavelet: &Wavelet,
        mode: Mode,
        level: Level,
    ) -> Result<Self> {
        let shape = shape.into_dimension();
        let axes: Vec<usize> = axes.iter().map(|a| a.index()).collect();
        Self::for_signal(shape.slice(), &axes, wavelet, mode, level)
    }

    fn for_signal(shape: &[usize], axes: &[usize], w: &Wavelet, mode: Mode, level: Level) -> Result<Self> {
        let ndim = shape.len();
        check_axes(ndim, axes, C::AXES)?;
        if shape.contains(&0) {
            return Err(Error::Empty { what: "input" });
        }
        let l = w.filter_len();
        let shortest = axes.iter().map(|&a| shape[a]).min().unwrap_or(0);
        let max_level = dwt_max_level(shortest, l);
        let levels = match level {
            Level::Max => max_level,
            Level::Exactly(n) if n > max_level => {
                return Err(Error::LevelTooDeep {
                    level: n,
                    max_level,
                    len: shortest,
                    filter_len: l,
                });
            }
            Level::Exactly(n) | Level::Unchecked(n) => n,
        };
        let mut shapes = Vec::with_capacity(levels);
        let mut cur = shape.to_vec();
        for _ in 0..levels {
            let mut coeff = cur.clone();
            for &a in axes {
                mode.check_len(cur[a])?;
                coeff[a] = dwt_coeff_len(cur[a], l, mode);
            }
            shapes.push((Some(cur), coeff.clone()));
            cur = coeff;
        }
        Self::build(axes, w, mode, Some(shape.to_vec()), cur, shapes)
    }

    /// An inverse-only plan for coefficients shaped like `coeffs` (the
    /// forward transform is unavailable: a signal shape cannot be recovered
    /// from coefficient shapes).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the subbands do not fit together,
    /// [`Error::InvalidCoeffLength`] when they are too short for the filter.
    pub fn from_coeffs(coeffs: &C, wavelet: &Wavelet, mode: Mode) -> Result<Self> {
        let approx = coeffs.approx_array().shape().to_vec();
        let ndim = approx.len();
        let axes = coeffs.axis_indices().to_vec();
        check_axes(ndim, &axes, C::AXES)?;
        let mut details = Vec::with_capacity(coeffs.level_count());
        for lvl in 0..coeffs.level_count() {
            let arrays = coeffs.detail_arrays(lvl);
            let mut it = arrays.iter().flatten();
            let first = it.next().map(|a| a.shape().to_vec()).unwrap_or_default();
            for a in it {
                if a.shape() != first.as_slice() {
                    return Err(Error::ShapeMismatch {
                        what: "detail subbands of one level",
                        expected: first,
                        found: a.shape().to_vec(),
                    });
                }
            }
            details.push(first);
        }
        Self::for_coeff_shapes(&approx, &details, &axes, wavelet, mode)
    }

    fn for_coeff_shapes(
        approx: &[usize],
        details: &[Vec<usize>],
        axes: &[usize],
        w: &Wavelet,
        mode: Mode,
    ) -> Result<Self> {
        let ndim = approx.len();
        if approx.contains(&0) {
            return Err(Error::Empty { what: "approximation" });
        }
        let l = w.filter_len();
        // Walk coarsest to finest: the approximation entering each level may
        // exceed the details by one sample per transformed axis (it is
        // cropped, as PyWavelets does); every other axis must agree.
        let mut a = approx.to_vec();
        let mut shapes = Vec::with_capacity(details.len());
        for d in details {
            let fits = d.len() == ndim
                && (0..ndim).all(|i| {
                    if axes.contains(&i) {
                        d[i] >= 1 && (a[i] == d[i] || a[i] == d[i] + 1)
                    } else {
                        a[i] == d[i]
                    }
                });
            if !fits {
                return Err(Error::ShapeMismatch {
                    what: "approximation entering a level vs that level's details",
                    expected: d.clone(),
                    found: a,
                });
            }
            let mut recon = d.clone();
            for &ax in axes {
                recon[ax] = idwt_len(d[ax], l, mode)?;
            }
            shapes.push((None, d.clone()));
            a = recon;
        }
        shapes.reverse();
        Self::build(axes, w, mode, None, approx.to_vec(), shapes)
    }

    /// `shapes`: per level, finest first, `(analysis input, coefficient shape)`.
    fn build(
        axes: &[usize],
        w: &Wavelet,
        mode: Mode,
        signal: Option<Vec<usize>>,
        approx: Vec<usize>,
        shapes: Vec<(Option<Vec<usize>>, Vec<usize>)>,
    ) -> Result<Self> {
        let l = w.filter_len();
        let rev = |f: &[f64]| f.iter().rev().copied().collect::<Vec<f64>>();
        let (adj_lo, adj_hi) = (rev(w.rec_lo()), rev(w.rec_hi()));
        let adj_mode = if mode == Mode::Periodization {
            Mode::Periodization
        } else {
            Mode::Zero
        };
        let mut regions = Regions::default();
        let mut levels = Vec::with_capacity(shapes.len());
        // Analysis steps turning `from` into `to`, one axis at a time.
        let analysis_steps =
            |from: &[usize], to: &[usize], mode: Mode, lo: &[f64], hi: &[f64], regions: &mut Regions| {
                let mut cur = from.to_vec();
                let mut steps = Vec::new();
                for (j, &ax) in axes.iter().enumerate() {
                    let next = with(&cur, ax, to[ax]);
                    let kernel = Analysis::new(cur[ax], mode, lo, hi);
                    debug_assert_eq!(kernel.m, to[ax]);
                    let step = Step::new(kernel, &cur, &next, ax);
                    regions.kernel = regions.kernel.max(step.kernel.scratch_len(step.inner));
                    if j + 1 < axes.len() {
                        regions.stage = regions.stage.max(2 * step.out_len);
                    }
                    steps.push(step);
                    cur = next;
                }
                steps
            };
        for (input, coeff) in shapes {
            let mut recon = coeff.clone();
            for &ax in axes {
                recon[ax] = idwt_len(coeff[ax], l, mode)?;
            }
            let analysis = match &input {
                Some(inp) => analysis_steps(inp, &coeff, mode, w.dec_lo(), w.dec_hi(), &mut regions),
                None => Vec::new(),
            };
            let adjoint = analysis_steps(&recon, &coeff, adj_mode, &adj_lo, &adj_hi, &mut regions);
            // Synthesis runs the axes in reverse order.
            let mut synthesis = Vec::new();
            let mut cur = coeff.clone();
            for (j, &ax) in axes.iter().enumerate().rev() {
                let next = with(&cur, ax, recon[ax]);
                let step = Step::new(Synthesis::new(coeff[ax], mode, w.rec_lo(), w.rec_hi()), &cur, &next, ax);
                regions.kernel = regions.kernel.max(step.kernel.scratch_len(step.inner));
                if j > 0 {
                    regions.stage = regions.stage.max((1 << j) * step.out_len);
                }
                synthesis.push(step);
                cur = next;
            }
            synthesis.reverse();
            // Approximation regions hold every level's coefficients and the
            // reconstructions of all but the finest level (which is written
            // straight to the caller's output).
            regions.approx = regions.approx.max(prod(&coeff));
            if !levels.is_empty() {
                regions.approx = regions.approx.max(prod(&recon));
            }
            levels.push(LevelSteps {
                coeff,
                recon,
                analysis,
                synthesis,
                adjoint,
            });
        }
        Ok(Plan {
            axes: axes.to_vec(),
            wavelet: w.name().to_owned(),
            mode,
            signal,
            approx,
            levels,
            regions,
            parallel: cfg!(feature = "parallel"),
            _marker: PhantomData,
        })
    }

    /// Run large steps on rayon's pool (the default with the `parallel`
    /// feature) or always on the calling thread.
    pub fn set_parallel(&mut self, parallel: bool) -> &mut Self {
        self.parallel = parallel;
        self
    }

    /// Number of decomposition levels.
    pub fn levels(&self) -> usize {
        self.levels.len()
    }
    /// The wavelet's name.
    pub fn wavelet_name(&self) -> &str {
        &self.wavelet
    }
    /// The extension mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }
    /// The transformed axes, in transform order.
    pub fn axes(&self) -> Vec<Axis> {
        self.axes.iter().map(|&a| Axis(a)).collect()
    }
    /// Shape of the signal the forward transform takes (`None` for plans made
    /// by [`Plan::from_coeffs`]).
    pub fn signal_shape(&self) -> Option<&[usize]> {
        self.signal.as_deref()
    }
    /// Shape the inverse transform produces. It can exceed the signal shape
    /// by one along a transformed axis of odd length, as in PyWavelets.
    pub fn reconstruction_shape(&self) -> &[usize] {
        self.levels.first().map_or(&self.approx, |l| &l.recon)
    }
    /// [`Plan::reconstruction_shape`] as an ndarray dimension, ready for
    /// `Array::zeros(plan.reconstruction_dim())`.
    pub fn reconstruction_dim(&self) -> D {
        let shape = self.reconstruction_shape();
        let mut dim = D::zeros(shape.len());
        dim.slice_mut().copy_from_slice(shape);
        dim
    }
    /// Shape of the coarsest approximation.
    pub fn approx_shape(&self) -> &[usize] {
        &self.approx
    }
    /// Shape of each detail subband, coarsest level first.
    pub fn detail_shapes(&self) -> Vec<Vec<usize>> {
        self.levels.iter().rev().map(|l| l.coeff.clone()).collect()
    }
    /// Length of the scratch buffer that [`Plan::forward`],
    /// [`Plan::inverse`] and [`Plan::inverse_adjoint`] need.
    pub fn scratch_len(&self) -> usize {
        self.regions.total()
    }
    /// Zeroed coefficients in this plan's layout.
    pub fn coeffs_zeros(&self) -> C {
        C::zeros(&self.approx, &self.detail_shapes(), &self.axes)
    }

    fn check_scratch(&self, scratch: &[T]) -> Result<()> {
        if scratch.len() < self.scratch_len() {
            return Err(Error::ScratchTooSmall {
                needed: self.scratch_len(),
                got: scratch.len(),
            });
        }
        Ok(())
    }

    fn check_shape(what: &'static str, expected: &[usize], found: &[usize]) -> Result<()> {
        if expected != found {
            return Err(Error::ShapeMismatch {
                what,
                expected: expected.to_vec(),
                found: found.to_vec(),
            });
        }
        Ok(())
    }

    fn check_coeffs(&self, c: &C) -> Result<()> {
        if c.axis_indices() != self.axes.as_slice() {
            return Err(Error::ShapeMismatch {
                what: "coefficient axes",
                expected: self.axes.clone(),
                found: c.axis_indices().to_vec(),
            });
        }
        if c.level_count() != self.levels.len() {
            return Err(Error::LevelCountMismatch {
                expected: self.levels.len(),
                found: c.level_count(),
            });
        }
        Self::check_shape("approximation", &self.approx, c.approx_array().shape())?;
        let mut all_standard = c.approx_array().is_standard_layout();
        for (k, lvl) in self.levels.iter().rev().enumerate() {
            for d in c.detail_arrays(k).into_iter().flatten() {
                Self::check_shape("detail subband", &lvl.coeff, d.shape())?;
                all_standard &= d.is_standard_layout();
            }
        }
        // Checked up front so that a bad array never leaves a half-written result.
        if !all_standard {
            return Err(Error::NonContiguous {
                what: "coefficient arrays",
            });
        }
        Ok(())
    }

    /// Forward transform (`wavedec`/`wavedec2`) of `x` into `out`.
    ///
    /// A non-contiguous `x` is copied once; everything else is written in
    /// place.
    ///
    /// # Errors
    /// [`Error::NoSignalShape`] for inverse-only plans,
    /// [`Error::ShapeMismatch`] when `x` or `out` does not match the plan,
    /// [`Error::NonContiguous`] for non-standard-layout outputs,
    /// [`Error::ScratchTooSmall`].
    pub fn forward(&self, x: ArrayView<'_, T, D>, out: &mut C, scratch: &mut [T]) -> Result<()> {
        let signal = self.signal.as_deref().ok_or(Error::NoSignalShape)?;
        Self::check_shape("input", signal, x.shape())?;
        self.check_coeffs(out)?;
        self.check_scratch(scratch)?;
        let x = x.as_standard_layout();
        let x = x.as_slice().ok_or(Error::NonContiguous { what: "input" })?;
        self.analysis_driver(false, x, out, scratch)
    }

    /// Inverse transform (`waverec`/`waverec2`) of `c` into `out`, whose
    /// shape must be [`Plan::reconstruction_shape`].
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`], [`Error::NonContiguous`],
    /// [`Error::ScratchTooSmall`].
    pub fn inverse(&self, c: &C, mut out: ArrayViewMut<'_, T, D>, scratch: &mut [T]) -> Result<()> {
        self.check_coeffs(c)?;
        Self::check_shape("output", self.reconstruction_shape(), out.shape())?;
        self.check_scratch(scratch)?;
        let y = out.as_slice_mut().ok_or(Error::NonContiguous { what: "output" })?;
        self.synthesis_driver(c, y, scratch)
    }

    /// The exact transpose of [`Plan::inverse`]: for every `c` and `y`,
    /// `⟨inverse(c), y⟩ = ⟨c, inverse_adjoint(y)⟩`. `y` has the
    /// reconstruction shape. For orthogonal wavelets in periodization mode it
    /// equals the forward transform; in every other mode it is the forward
    /// transform in zero mode with the synthesis filters, plus the transpose of
    /// PyWavelets' one-sample crops.
    ///
    /// # Errors
    /// As [`Plan::inverse`].
    pub fn inverse_adjoint(&self, y: ArrayView<'_, T, D>, out: &mut C, scratch: &mut [T]) -> Result<()> {
        Self::check_shape("adjoint input", self.reconstruction_shape(), y.shape())?;
        self.check_coeffs(out)?;
        self.check_scratch(scratch)?;
        let y = y.as_standard_layout();
        let y = y.as_slice().ok_or(Error::NonContiguous { what: "adjoint input" })?;
        self.analysis_driver(true, y, out, scratch)
    }

    fn split_scratch<'a>(&self, scratch: &'a mut [T]) -> [&'a mut [T]; 4] {
        let r = self.regions;
        let (p0, rest) = scratch.split_at_mut(r.approx);
        let (p1, rest) = rest.split_at_mut(r.approx);
        let (stage, rest) = rest.split_at_mut(r.stage);
        [p0, p1, stage, &mut rest[..r.kernel]]
    }

    /// Forward analysis (`adjoint = false`) or the adjoint of synthesis.
    fn analysis_driver(&self, adjoint: bool, x: &[T], c: &mut C, scratch: &mut [T]) -> Result<()> {
        let nl = self.levels.len();
        if nl == 0 {
            let a = standard_slice_mut(c.approx_array_mut(), "approximation")?;
            a.copy_from_slice(x);
            return Ok(());
        }
        let [mut src, mut dst, stage, kernel] = self.split_scratch(scratch);
        let mut input_is_x = true;
        for (k, lvl) in self.levels.iter().enumerate() {
            let steps = if adjoint { &lvl.adjoint } else { &lvl.analysis };
            let in_len = steps.first().map_or(0, |s| s.in_len);
            let last = k + 1 == nl;
            let coeff_len = prod(&lvl.coeff);
            let direct = last && self.approx == lvl.coeff;
            let (approx, details) = c.detail_arrays_mut(nl - 1 - k);
            let mut approx = Some(standard_slice_mut(approx, "approximation")?);
            let mut outs: [&mut [T]; 4] = Default::default();
            outs[0] = match direct {
                true => approx.take().unwrap_or_default(),
                false => &mut dst[..coeff_len],
            };
            for (slot, d) in outs[1..].iter_mut().zip(details.into_iter().flatten()) {
                *slot = standard_slice_mut(d, "detail subband")?;
            }
            let input: &[T] = if input_is_x { x } else { &src[..in_len] };
            self.analyze_level(steps, input, &mut outs, stage, kernel);
            if last {
                if let Some(approx) = approx {
                    embed(&dst[..coeff_len], &lvl.coeff, approx, &self.approx);
                }
                break;
            }
            let next = if adjoint { &self.levels[k + 1].recon } else { &lvl.coeff };
            if *next == lvl.coeff {
                std::mem::swap(&mut src, &mut dst);
            } else {
                embed(&dst[..coeff_len], &lvl.coeff, &mut src[..prod(next)], next);
            }
            input_is_x = false;
        }
        Ok(())
    }

    fn synthesis_driver(&self, c: &C, y: &mut [T], scratch: &mut [T]) -> Result<()> {
        let nl = self.levels.len();
        let approx = standard_slice(c.approx_array(), "approximation")?;
        if nl == 0 {
            y.copy_from_slice(approx);
            return Ok(());
        }
        let [mut src, mut dst, stage, kernel] = self.split_scratch(scratch);
        let coarsest = &self.levels[nl - 1].coeff;
        let mut in_scratch = self.approx != *coarsest;
        if in_scratch {
            embed(approx, &self.approx, &mut src[..prod(coarsest)], coarsest);
        }
        for k in (0..nl).rev() {
            let lvl = &self.levels[k];
            let a: &[T] = if in_scratch { &src[..prod(&lvl.coeff)] } else { approx };
            let mut bands: [&[T]; 4] = [a, &[], &[], &[]];
            for (slot, d) in bands[1..]
                .iter_mut()
                .zip(c.detail_arrays(nl - 1 - k).into_iter().flatten())
            {
                *slot = standard_slice(d, "detail subband")?;
            }
            let recon_len = prod(&lvl.recon);
            let out: &mut [T] = if k == 0 { &mut *y } else { &mut dst[..recon_len] };
            self.synthesize_level(&lvl.synthesis, &bands, out, stage, kernel);
            if k > 0 {
                let next = &self.levels[k - 1].coeff;
                if *next == lvl.recon {
                    std::mem::swap(&mut src, &mut dst);
                } else {
                    embed(&dst[..recon_len], &lvl.recon, &mut src[..prod(next)], next);
                }
                in_scratch = true;
            }
        }
        Ok(())
    }

    /// One level of analysis over every axis (one or two): `x` into `2^k`
    /// subbands, in bit order (first axis most significant; 0 =
    /// approximation). With two axes the first step's two outputs live in
    /// `stage`.
    fn analyze_level(
        &self,
        steps: &[Step<Analysis<T>>],
        x: &[T],
        outs: &mut [&mut [T]; 4],
        stage: &mut [T],
        kernel: &mut [T],
    ) {
        let [a0, d0, a1, d1] = outs;
        match steps {
            [st] => st.kernel.run(x, st.outer, st.inner, a0, d0, kernel, self.parallel),
            [s0, s1] => {
                let (lo, rest) = stage.split_at_mut(s0.out_len);
                let hi = &mut rest[..s0.out_len];
                s0.kernel.run(x, s0.outer, s0.inner, lo, hi, kernel, self.parallel);
                s1.kernel.run(lo, s1.outer, s1.inner, a0, d0, kernel, self.parallel);
                s1.kernel.run(hi, s1.outer, s1.inner, a1, d1, kernel, self.parallel);
            }
            _ => unreachable!("plans transform one or two axes"),
        }
    }

    /// One level of synthesis: `2^k` subbands (bit order) into `y`, the last
    /// axis first.
    fn synthesize_level(
        &self,
        steps: &[Step<Synthesis<T>>],
        bands: &[&[T]; 4],
        y: &mut [T],
        stage: &mut [T],
        kernel: &mut [T],
    ) {
        match steps {
            [st] => st
                .kernel
                .run(bands[0], bands[1], st.outer, st.inner, y, kernel, self.parallel),
            [s0, s1] => {
                let (lo, rest) = stage.split_at_mut(s1.out_len);
                let hi = &mut rest[..s1.out_len];
                s1.kernel
                    .run(bands[0], bands[1], s1.outer, s1.inner, lo, kernel, self.parallel);
                s1.kernel
                    .run(bands[2], bands[3], s1.outer, s1.inner, hi, kernel, self.parallel);
                s0.kernel.run(lo, hi, s0.outer, s0.inner, y, kernel, self.parallel);
            }
            _ => unreachable!("plans transform one or two axes"),
        }
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn f<X: Send + Sync>() {}
    f::<Plan2<f64>>();
    f::<Plan1<f32>>();
}
