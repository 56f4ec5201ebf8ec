//! WaveletFT: `ΔW = α · IDWT2(S(c))` with `n` trainable wavelet coefficients.

use dwt_core::{
    BackwardBlock, Coeffs2, Location, Mode, Orientation, SeparableBasis, Wavelet, idwt2, idwt2_adjoint, wavedec2,
    waverec2, waverec2_adjoint,
};
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, s};
use serde::{Deserialize, Serialize};

use crate::adapter::{
    Coverage, Method, ROW_BLOCK, add_dense, add_transposed, check_batch, dx_dense, for_each_block, stored_shape,
    transpose_rows,
};
use crate::error::check_shape;
use crate::layout::{Geometry, Layout};
use crate::rng::{Mt19937, randperm_prefix};
use crate::{Adapter, Element, Error, Result};

/// How the `n` coefficient locations are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Uniformly at random from the seed, the same for every layer of a
    /// shape. With [`Layout::Peft`] or [`Layout::Identity`] these are PEFT's
    /// exact locations, `torch.randperm(out*in, seed)[:n]`; with
    /// [`Layout::Wavedec`] a `randperm` over all coefficient positions.
    #[default]
    Uniform,
    /// The coarsest sub-bands first: whole bands in order
    /// `A_J, H_J, V_J, D_J, H_{J−1}, …`, and a seeded random subset of the
    /// first band that does not fit whole. Needs [`Layout::Wavedec`].
    LowFrequencyFirst,
    /// The `n` largest-magnitude coefficients of `wavedec2` of the frozen
    /// weight itself (ties to the lower flat index). Needs
    /// [`Layout::Wavedec`] and the weight.
    EnergyGuided,
    /// Given by the caller and stored with the coefficients (a
    /// [combination](crate::AdapterModel::combine) over the union of
    /// several adapters' locations, [`WaveletFt::from_parts`]). Nothing is
    /// drawn: [`WaveletFt::new`] refuses it.
    Explicit,
}

/// How the coefficients start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Init {
    /// All zero: ΔW starts at 0 (PEFT's `init_weights=True`).
    #[default]
    Zeros,
    /// Seeded normal values with this standard deviation (PEFT uses 0.01
    /// for `init_weights=False`, from torch's own stream; ours is MT19937
    /// with Box–Muller, so only the distribution matches).
    Normal {
        /// Standard deviation.
        std: f64,
    },
}

/// The per-layer WaveletFT settings. Serialises as JSON (the wavelet and
/// the mode by name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WaveletFtConfig {
    /// The wavelet (`db1`, `sym4`, `coif2`, `bior2.2`, …).
    pub wavelet: Wavelet,
    /// Decomposition levels (1 for the PEFT layout).
    pub level: usize,
    /// Extension mode (`zero` for the PEFT layout).
    pub mode: Mode,
    /// The coefficient layout.
    pub layout: Layout,
    /// Number of trainable coefficients per layer.
    pub n_frequency: usize,
    /// The scaling α.
    pub scaling: f64,
    /// Seed of the location and initialisation draws.
    pub seed: u64,
    /// Location strategy.
    pub strategy: Strategy,
    /// Initial values.
    pub init: Init,
}

impl Default for WaveletFtConfig {
    /// PEFT's WaveFT defaults: db1, n = 2592, α = 25, seed 777, zeros.
    fn default() -> Self {
        WaveletFtConfig {
            wavelet: db1(),
            level: 1,
            mode: Mode::Zero,
            layout: Layout::Peft,
            n_frequency: 2592,
            scaling: 25.0,
            seed: 777,
            strategy: Strategy::Uniform,
            init: Init::Zeros,
        }
    }
}

/// PEFT's default wavelet.
#[allow(clippy::expect_used)]
fn db1() -> Wavelet {
    Wavelet::new("db1").expect("db1 is one of dwt-core's built-in wavelets")
}

impl WaveletFtConfig {
    /// Whether PEFT's WaveFT can express this configuration.
    pub fn is_peft_compatible(&self) -> bool {
        matches!(self.layout, Layout::Peft | Layout::Identity) && self.strategy == Strategy::Uniform
    }
}

/// A WaveletFT adapter for one `out × in` layer.
#[derive(Debug, Clone)]
pub struct WaveletFt<T> {
    config: WaveletFtConfig,
    geometry: Geometry,
    locations: Vec<Location>,
    coeffs: Vec<T>,
    atoms: SeparableBasis<T>,
}

impl<T: Element> WaveletFt<T> {
    /// A new adapter for an `out × in` layer: `config.n_frequency`
    /// coefficients at the locations `config.strategy` draws, with the
    /// values `config.init` gives.
    ///
    /// # Errors
    /// * [`Error::Dwt`] for a level too deep for the shape;
    /// * [`Error::Invalid`] when `n_frequency` exceeds the available
    ///   positions or the strategy does not fit the layout, and for
    ///   [`Strategy::EnergyGuided`], which needs the frozen weight
    ///   ([`Self::from_frozen`]).
    pub fn new(config: &WaveletFtConfig, shape: (usize, usize)) -> Result<Self> {
        Self::with_weight(config, shape, None)
    }

    /// [`Self::new`] for the layer whose frozen `out × in` weight is
    /// `frozen` ([`Strategy::EnergyGuided`] ranks its coefficients; the
    /// other strategies only take its shape).
    ///
    /// # Errors
    /// As [`Self::new`].
    pub fn from_frozen(config: &WaveletFtConfig, frozen: ArrayView2<'_, T>) -> Result<Self> {
        Self::with_weight(config, frozen.dim(), Some(frozen))
    }

    fn with_weight(config: &WaveletFtConfig, shape: (usize, usize), frozen: Option<ArrayView2<'_, T>>) -> Result<Self> {
        let geometry = Geometry::new(config.layout, &config.wavelet, config.mode, config.level, shape)?;
        let locations = choose_locations(config, &geometry, frozen)?;
        let coeffs = match config.init {
            Init::Zeros => vec![T::zero(); locations.len()],
            Init::Normal { std } => {
                let mut g = Mt19937::new(config.seed ^ 0x5eed_1417);
                (0..locations.len())
                    .map(|_| T::from_f64(std * g.next_normal()))
                    .collect()
            }
        };
        Self::build(config.clone(), geometry, locations, coeffs)
    }

    /// An adapter with explicit locations and coefficient values (what the
    /// native file format stores).
    ///
    /// # Errors
    /// As [`Self::new`], and [`Error::Invalid`] for a location outside the
    /// coefficient array or a count mismatch.
    pub fn from_parts(
        config: &WaveletFtConfig,
        shape: (usize, usize),
        locations: Vec<Location>,
        coeffs: Vec<T>,
    ) -> Result<Self> {
        let geometry = Geometry::new(config.layout, &config.wavelet, config.mode, config.level, shape)?;
        if locations.len() != coeffs.len() {
            return Err(Error::invalid(
                "coefficients",
                format!("{} values for {} locations", coeffs.len(), locations.len()),
            ));
        }
        for &c in &locations {
            geometry.check(c)?;
        }
        Self::build(config.clone(), geometry, locations, coeffs)
    }

    /// The adapter from checked parts: `locations` inside `geometry`, one
    /// value each.
    pub(crate) fn build(
        config: WaveletFtConfig,
        geometry: Geometry,
        locations: Vec<Location>,
        coeffs: Vec<T>,
    ) -> Result<Self> {
        let atoms = geometry.basis(&config.wavelet, &locations)?;
        Ok(WaveletFt {
            config,
            geometry,
            locations,
            coeffs,
            atoms,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &WaveletFtConfig {
        &self.config
    }
    /// The coefficient array's geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }
    /// Where each coefficient sits.
    pub fn locations(&self) -> &[Location] {
        &self.locations
    }
    /// The separable atoms, coefficient `k` of them being `locations()[k]`
    /// (before α): what the kernels run on and `dwt-gpu` uploads.
    pub fn atoms(&self) -> &SeparableBasis<T> {
        &self.atoms
    }
    /// The scaling α as `T`.
    pub(crate) fn alpha(&self) -> T {
        T::from_f64(self.config.scaling)
    }

    /// Whether batches go through the atom kernels (else through the dense
    /// ΔW and a matrix product, cheaper when atoms are wide).
    fn atoms_for_batches(&self) -> bool {
        let (out, inp) = self.geometry.shape();
        self.atoms.cost_per_row() <= out * inp / 2
    }

    /// ΔW the reference way: scatter the coefficients into the full
    /// coefficient array and run dwt-core's inverse transform, then crop.
    /// [`Adapter::delta_weight`] adds the atoms instead; both agree to
    /// rounding.
    ///
    /// # Errors
    /// [`Error::Dwt`] only if the geometry and dwt-core disagree (a bug).
    pub fn delta_weight_by_transform(&self) -> Result<Array2<T>> {
        let (out, inp) = self.geometry.shape();
        let bands = self.geometry.bands();
        let mut arrays: Vec<Array2<T>> = bands.iter().map(|b| Array2::zeros(b.shape)).collect();
        for (c, &v) in self.locations.iter().zip(&self.coeffs) {
            arrays[self.geometry.band_index(*c)?][[c.row, c.col]] += v;
        }
        let a = self.alpha();
        let (wavelet, mode) = (&self.config.wavelet, self.config.mode);
        let full = match self.geometry.layout() {
            Layout::Identity => return Ok(arrays.swap_remove(0) * a),
            Layout::Peft => {
                let [ca, ch, cv, cd] = [&arrays[0], &arrays[1], &arrays[2], &arrays[3]];
                idwt2(ca.view(), [ch.view(), cv.view(), cd.view()], wavelet, Mode::Zero)?
            }
            Layout::Wavedec => {
                let mut it = arrays.into_iter();
                let approx = it.next().unwrap_or_default();
                let mut details = Vec::new();
                while let (Some(h), Some(v), Some(d)) = (it.next(), it.next(), it.next()) {
                    details.push([h, v, d]);
                }
                waverec2(&Coeffs2::from_parts(approx, details, [Axis(0), Axis(1)]), wavelet, mode)?
            }
        };
        let (r0, c0) = self.geometry.crop();
        Ok(full.slice(s![r0..r0 + out, c0..c0 + inp]).to_owned() * a)
    }

    /// `∂L/∂c` from a dense `G = ∂L/∂ΔW` (`out × in`), the adjoint way: embed
    /// G in the inverse transform's output, apply the adjoint transform, and
    /// read the coefficients at the locations.
    ///
    /// # Errors
    /// [`Error::Shape`] when `g` is not `out × in`.
    pub fn grad_from_dense(&self, g: ArrayView2<'_, T>) -> Result<Vec<T>> {
        let (out, inp) = self.geometry.shape();
        check_shape("dL/dW", g.shape(), &[out, inp])?;
        let a = self.alpha();
        if self.geometry.layout() == Layout::Identity {
            return Ok(self.locations.iter().map(|c| a * g[[c.row, c.col]]).collect());
        }
        // G sits at the crop in the inverse transform's (zero-padded) output.
        let (r0, c0) = self.geometry.crop();
        let mut y = Array2::zeros(self.geometry.full_shape());
        y.slice_mut(s![r0..r0 + out, c0..c0 + inp]).assign(&g);
        let (wavelet, mode) = (&self.config.wavelet, self.config.mode);
        let bands: Vec<Array2<T>> = match self.geometry.layout() {
            Layout::Wavedec => {
                let like = wavedec2(
                    Array2::<T>::zeros((out, inp)).view(),
                    wavelet,
                    mode,
                    Some(self.config.level),
                )?;
                let c = waverec2_adjoint(y.view(), &like, wavelet, mode)?;
                let mut v = vec![c.approx().clone()];
                for [h, vv, d] in c.details() {
                    v.extend([h.clone(), vv.clone(), d.clone()]);
                }
                v
            }
            _ => {
                let (ca, [ch, cv, cd]) = idwt2_adjoint(y.view(), wavelet, Mode::Zero)?;
                vec![ca, ch, cv, cd]
            }
        };
        self.locations
            .iter()
            .map(|&c| Ok(a * bands[self.geometry.band_index(c)?][[c.row, c.col]]))
            .collect()
    }
}

impl<T: Element> Adapter<T> for WaveletFt<T> {
    fn method(&self) -> Method {
        Method::WaveletFt
    }
    fn shape(&self) -> (usize, usize) {
        self.geometry.shape()
    }
    fn params(&self) -> &[T] {
        &self.coeffs
    }
    fn params_mut(&mut self) -> &mut [T] {
        &mut self.coeffs
    }

    fn delta_weight(&self) -> Array2<T> {
        let (out, inp) = self.shape();
        let mut w = Array2::zeros((out, inp));
        if let Some(buf) = w.as_slice_mut() {
            self.atoms
                .add_outer(&self.coeffs, self.alpha(), buf, Orientation::Normal);
        }
        w
    }

    /// Adds the atoms in place: `O(n · support²)`, never `O(out · in)`.
    fn merge_into(&self, mut w: ArrayViewMut2<'_, T>, sign: T, orientation: Orientation) -> Result<()> {
        check_shape("weight", w.shape(), &stored_shape(self.shape(), orientation))?;
        let scale = sign * self.alpha();
        match w.as_slice_mut() {
            Some(buf) => self.atoms.add_outer(&self.coeffs, scale, buf, orientation),
            None => add_dense(self.delta_weight(), w, sign, orientation),
        }
        Ok(())
    }

    /// The atoms' rectangles, row by row: `O(n · support²)` elements.
    fn for_each_touched_run(&self, orientation: Orientation, f: &mut dyn FnMut(usize, usize)) -> Coverage {
        self.atoms.for_each_touched_run(orientation, f);
        Coverage::Runs
    }

    /// The atom form, `O(batch · n · support)`, unless a dense ΔW and a
    /// matrix product are cheaper (deep levels with wide atoms).
    fn forward_delta(&self, x: ArrayView2<'_, T>, mut y: ArrayViewMut2<'_, T>) -> Result<()> {
        let (out, inp) = self.shape();
        check_batch(x, y.view(), inp, out)?;
        if !self.atoms_for_batches() {
            general_mat_mul(T::one(), &x, &self.delta_weight().t(), T::one(), &mut y);
            return Ok(());
        }
        let (a, t) = (self.alpha(), &self.atoms);
        let x = x.as_standard_layout();
        let xs = x.as_slice().unwrap_or(&[]);
        let init = || {
            let z = |len| vec![T::zero(); len * ROW_BLOCK];
            (z(inp), z(t.cols().len()), z(out))
        };
        for_each_block(x.nrows(), Some(y), init, |(xt, xv, yt), (start, rb, y)| {
            transpose_rows(xs, inp, start, rb, xt);
            t.forward_block(&self.coeffs, a, &xt[..inp * rb], rb, &mut yt[..out * rb], xv);
            if let Some(y) = y {
                add_transposed(&yt[..out * rb], rb, y);
            }
        });
        Ok(())
    }

    /// `∂L/∂c_k = α Σ_b (g_b·u_k)(x_b·v_k)` from the atoms, never a dense
    /// `gᵀ·x` unless that is cheaper (deep levels with wide atoms).
    fn backward(&self, x: ArrayView2<'_, T>, g: ArrayView2<'_, T>, dx: Option<ArrayViewMut2<'_, T>>) -> Result<Vec<T>> {
        let (out, inp) = self.shape();
        check_batch(x, g, inp, out)?;
        if let Some(d) = &dx {
            check_shape("dx", d.shape(), x.shape())?;
        }
        let a = self.alpha();
        if !self.atoms_for_batches() {
            let gw = g.t().dot(&x);
            dx_dense(&self.delta_weight(), g, dx)?;
            return self.grad_from_dense(gw.view());
        }
        let (x, g) = (x.as_standard_layout(), g.as_standard_layout());
        let (xs, gs) = (x.as_slice().unwrap_or(&[]), g.as_slice().unwrap_or(&[]));
        let t = &self.atoms;
        let want_dx = dx.is_some();
        let init = || {
            let z = |len| vec![T::zero(); len * ROW_BLOCK];
            let dxt = if want_dx { z(inp) } else { Vec::new() };
            (
                vec![T::zero(); t.len()],
                z(inp),
                z(out),
                z(t.rows().len()),
                z(t.cols().len()),
                dxt,
            )
        };
        let parts = for_each_block(x.nrows(), dx, init, |st, (start, rb, dx)| {
            let (grad, xt, gt, gu, xv, dxt) = st;
            transpose_rows(xs, inp, start, rb, xt);
            transpose_rows(gs, out, start, rb, gt);
            let dxt = if want_dx { Some(&mut dxt[..inp * rb]) } else { None };
            let block = BackwardBlock {
                xt: &xt[..inp * rb],
                gt: &gt[..out * rb],
                rb,
                grad,
                dxt,
                gu,
                xv,
            };
            t.backward_block(&self.coeffs, a, block);
            if let Some(dx) = dx {
                add_transposed(&st.5[..inp * rb], rb, dx);
            }
        });
        let mut grad = vec![T::zero(); t.len()];
        for p in parts {
            for (acc, v) in grad.iter_mut().zip(p.0) {
                *acc += v;
            }
        }
        grad.iter_mut().for_each(|v| *v *= a);
        Ok(grad)
    }
}

/// Draw the locations for `config.strategy`.
fn choose_locations<T: Element>(
    config: &WaveletFtConfig,
    geometry: &Geometry,
    frozen: Option<ArrayView2<'_, T>>,
) -> Result<Vec<Location>> {
    let (out, inp) = geometry.shape();
    let n = config.n_frequency;
    let peft_like = matches!(geometry.layout(), Layout::Peft | Layout::Identity);
    let available = if peft_like { out * inp } else { geometry.num_positions() };
    if n == 0 || n > available {
        return Err(Error::invalid(
            "n_frequency",
            format!("{n} coefficients for a {out}×{inp} layer ({available} positions available)"),
        ));
    }
    if peft_like && config.strategy != Strategy::Uniform {
        return Err(Error::invalid(
            "strategy",
            format!(
                "{:?} needs the wavedec layout (PEFT's layouts are uniform only)",
                config.strategy
            ),
        ));
    }
    match config.strategy {
        Strategy::Explicit => Err(Error::invalid(
            "strategy",
            "explicit locations are given, not drawn: build with WaveletFt::from_parts",
        )),
        Strategy::Uniform if peft_like => randperm_prefix((out * inp) as u64, n, config.seed)
            .into_iter()
            .map(|i| geometry.peft_position(i))
            .collect(),
        Strategy::Uniform => randperm_prefix(available as u64, n, config.seed)
            .into_iter()
            .map(|i| geometry.unflatten(i as usize))
            .collect(),
        Strategy::LowFrequencyFirst => {
            let mut locs = Vec::with_capacity(n);
            for b in geometry.bands() {
                let left = n - locs.len();
                if left == 0 {
                    break;
                }
                let pick: Vec<usize> = if b.size() <= left {
                    (0..b.size()).collect()
                } else {
                    randperm_prefix(b.size() as u64, left, config.seed)
                        .into_iter()
                        .map(|i| i as usize)
                        .collect()
                };
                locs.extend(pick.into_iter().map(|i| Location {
                    level: b.level,
                    band: b.kind,
                    row: i / b.shape.1,
                    col: i % b.shape.1,
                }));
            }
            Ok(locs)
        }
        Strategy::EnergyGuided => {
            let w = frozen.ok_or_else(|| {
                Error::invalid(
                    "strategy",
                    "energy_guided needs the frozen weight (WaveletFt::from_frozen)",
                )
            })?;
            check_shape("frozen weight", w.shape(), &[out, inp])?;
            let c = wavedec2(w, &config.wavelet, config.mode, Some(config.level))?;
            // NaN magnitudes rank below every number.
            let mag = |v: &T| if v.is_nan() { -1.0 } else { v.as_f64().abs() };
            let mut mags: Vec<(f64, usize)> = Vec::with_capacity(available);
            mags.extend(c.approx().iter().map(mag).zip(0..));
            for d in c.details() {
                for band in d {
                    let base = mags.len();
                    mags.extend(band.iter().map(mag).zip(base..));
                }
            }
            // Largest first; ties go to the lower flat index.
            mags.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut flat: Vec<usize> = mags[..n].iter().map(|&(_, i)| i).collect();
            flat.sort_unstable();
            flat.into_iter().map(|i| geometry.unflatten(i)).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shapes `tests/gradients.rs` uses for large batches take the atom
    /// kernels (so those tests cover them), and wide atoms on a small matrix
    /// take the dense path.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn batch_path_choice() {
        let atoms = |wavelet: &str, level, mode, layout, n, shape| {
            let c = WaveletFtConfig {
                wavelet: Wavelet::new(wavelet).unwrap(),
                level,
                mode,
                layout,
                n_frequency: n,
                ..Default::default()
            };
            WaveletFt::<f64>::new(&c, shape).unwrap().atoms_for_batches()
        };
        for (layout, level, mode) in [
            (Layout::Peft, 1, Mode::Zero),
            (Layout::Wavedec, 2, Mode::Periodization),
            (Layout::Wavedec, 2, Mode::Symmetric),
        ] {
            assert!(atoms("db3", level, mode, layout, 200, (300, 200)), "{layout:?} {mode}");
        }
        assert!(!atoms("sym8", 1, Mode::Zero, Layout::Wavedec, 300, (40, 40)));
    }
}
