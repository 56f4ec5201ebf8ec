//! FourierFT (Gao et al., ICML 2024): `ΔW = α · Re(IFFT2(S(c)))`.
//!
//! Locations are PEFT's (`torch.randperm(out*in, seed)[:n]`), the inverse
//! FFT is torch's default (`1/(out·in)` on the inverse). Transforms run
//! through RustFFT in the adapter's own precision (f32, as PEFT, or f64),
//! only over the distinct frequency rows, then over blocks of columns.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use crate::adapter::{Method, check_batch, dx_dense};
use crate::error::check_shape;
use crate::rng::{Mt19937, randperm_prefix};
use crate::{Adapter, Element, Error, Init, Result};

/// Columns transformed together.
const BLOCK: usize = 64;

/// FourierFT settings (PEFT's names and defaults).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct FourierFtConfig {
    /// Number of trainable spectral entries per layer.
    pub n_frequency: usize,
    /// The scaling α.
    pub scaling: f64,
    /// Location seed.
    pub seed: u64,
    /// Initial values: zeros (PEFT's `init_weights=True`) or seeded normal
    /// values (`init_weights=False` draws `randn`, standard deviation 1;
    /// ours is MT19937 from `seed`, so only the distribution matches).
    pub init: Init,
}

impl Default for FourierFtConfig {
    /// PEFT's defaults: n = 1000, α = 150, seed 777, zeros.
    fn default() -> Self {
        FourierFtConfig {
            n_frequency: 1000,
            scaling: 150.0,
            seed: 777,
            init: Init::Zeros,
        }
    }
}

/// A FourierFT adapter for one `out × in` layer.
#[derive(Debug, Clone)]
pub struct FourierFt<T> {
    shape: (usize, usize),
    scaling: f64,
    /// Row frequency and column frequency of each entry.
    freqs: Vec<(usize, usize)>,
    coeffs: Vec<T>,
}

impl<T: Element> FourierFt<T> {
    /// A new adapter with `config.n_frequency` entries at PEFT's locations,
    /// valued as `config.init` says.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `n_frequency` is 0 or exceeds `out · in`.
    pub fn new(config: &FourierFtConfig, shape: (usize, usize)) -> Result<Self> {
        let mut a = Self::with_values(config, shape, config.n_frequency, None)?;
        if let Init::Normal { std } = config.init {
            let mut g = Mt19937::new(config.seed);
            a.coeffs
                .iter_mut()
                .for_each(|c| *c = T::from_f64(std * g.next_normal()));
        }
        Ok(a)
    }

    /// An adapter at PEFT's locations for `spectrum.len()` entries, with
    /// those values (what a `FOURIERFT` folder stores).
    ///
    /// # Errors
    /// [`Error::Invalid`] when the spectrum is empty or longer than `out · in`.
    pub fn from_spectrum(config: &FourierFtConfig, shape: (usize, usize), spectrum: Vec<T>) -> Result<Self> {
        Self::with_values(config, shape, spectrum.len(), Some(spectrum))
    }

    fn with_values(config: &FourierFtConfig, shape: (usize, usize), n: usize, values: Option<Vec<T>>) -> Result<Self> {
        let (out, inp) = shape;
        let total = out.checked_mul(inp).unwrap_or(0);
        if n == 0 || n > total {
            return Err(Error::invalid(
                "n_frequency",
                format!("{n} entries for a {out}×{inp} layer"),
            ));
        }
        let freqs = randperm_prefix(total as u64, n, config.seed)
            .into_iter()
            .map(|i| ((i / inp as u64) as usize, (i % inp as u64) as usize))
            .collect();
        let coeffs = values.unwrap_or_else(|| vec![T::zero(); n]);
        if coeffs.len() != n {
            return Err(Error::invalid(
                "spectrum",
                format!("{} values for n = {n}", coeffs.len()),
            ));
        }
        Ok(FourierFt {
            shape,
            scaling: config.scaling,
            freqs,
            coeffs,
        })
    }

    /// The scaling α.
    pub fn scaling(&self) -> f64 {
        self.scaling
    }

    /// `(row frequency, column frequency)` of each entry.
    pub fn frequencies(&self) -> &[(usize, usize)] {
        &self.freqs
    }

    pub(crate) fn norm(&self) -> f64 {
        self.scaling / (self.shape.0 * self.shape.1) as f64
    }

    /// The distinct column frequencies and, per entry, its slot among them.
    fn col_slots(&self) -> (Vec<usize>, Vec<usize>) {
        let mut map = BTreeMap::new();
        for &(_, k) in &self.freqs {
            let next = map.len();
            map.entry(k).or_insert(next);
        }
        let mut cols = vec![0; map.len()];
        for (&k, &slot) in &map {
            cols[slot] = k;
        }
        (cols, self.freqs.iter().map(|(_, k)| map[k]).collect())
    }

    /// `∂L/∂c` from a dense `G = ∂L/∂ΔW`:
    /// `α/(out·in) · Re(Σ_{u,v} G[u,v] e^{2πi(j u/out + k v/in)})`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `g` is not `out × in`.
    pub fn grad_from_dense(&self, g: ArrayView2<'_, T>) -> Result<Vec<T>> {
        let (out, inp) = self.shape;
        check_shape("dL/dW", g.shape(), &[out, inp])?;
        let g = g.as_standard_layout();
        let gs = g.as_slice().unwrap_or(&[]);
        Ok(if is_f32::<T>() {
            self.grad_in::<f32>(gs)
                .into_iter()
                .map(|v| T::from_f64(f64::from(v)))
                .collect()
        } else {
            self.grad_in::<f64>(gs).into_iter().map(T::from_f64).collect()
        })
    }

    /// [`Self::grad_from_dense`] computed in precision `F`.
    fn grad_in<F: FftFloat>(&self, g: &[T]) -> Vec<F> {
        let (out, inp) = self.shape;
        let (cols, slot) = self.col_slots();
        let nk = cols.len();
        let (fo, fi) = inverse_ffts::<F>(out, inp);
        // H[u][slot] = Σ_v G[u,v] e^{2πi k v/in}: a length-`in` transform of
        // each row of G (blocks of rows on the thread pool), kept at the
        // distinct column frequencies.
        let mut h = vec![Complex::<F>::default(); out * nk];
        par_blocks(&mut h, BLOCK * nk, |b0, hb| {
            let rows = hb.len() / nk.max(1);
            let mut lane = vec![Complex::<F>::default(); inp * rows];
            for (r, l) in lane.chunks_exact_mut(inp).enumerate() {
                let u = b0 * BLOCK + r;
                for (v, c) in l.iter_mut().enumerate() {
                    *c = Complex::new(F::of(g[u * inp + v].as_f64()), F::zero());
                }
            }
            fi.process(&mut lane);
            for (r, l) in lane.chunks_exact(inp).enumerate() {
                for (s, &k) in cols.iter().enumerate() {
                    hb[r * nk + s] = l[k];
                }
            }
        });
        // Then a length-`out` transform along u for each distinct k.
        let mut z = vec![Complex::<F>::default(); nk * out];
        for u in 0..out {
            for s in 0..nk {
                z[s * out + u] = h[u * nk + s];
            }
        }
        par_blocks(&mut z, out, |_, lane| fo.process(lane));
        let a = F::of(self.norm());
        self.freqs
            .iter()
            .zip(&slot)
            .map(|(&(j, _), &s)| a * z[s * out + j].re)
            .collect()
    }

    /// ΔW computed in precision `F` into `w` (row-major `out × in`).
    fn delta_in<F: FftFloat>(&self, w: &mut [T]) {
        let (out, inp) = self.shape;
        let (cols, slot) = self.col_slots();
        let nk = cols.len();
        let (fo, fi) = inverse_ffts::<F>(out, inp);
        // Length-`out` transforms of the distinct frequency columns only:
        // z[slot][u] = Σ_j S[j,k] e^{2πi j u/out}.
        let mut z = vec![Complex::<F>::default(); nk * out];
        for ((&(j, _), &s), &c) in self.freqs.iter().zip(&slot).zip(&self.coeffs) {
            z[s * out + j].re = z[s * out + j].re + F::of(c.as_f64());
        }
        par_blocks(&mut z, out, |_, lane| fo.process(lane));
        // Then a length-`in` transform per output row, written in place.
        let a = F::of(self.norm());
        par_blocks(w, BLOCK * inp, |b0, wb| {
            let rows = wb.len() / inp;
            let mut lane = vec![Complex::<F>::default(); inp * rows];
            for (r, l) in lane.chunks_exact_mut(inp).enumerate() {
                let u = b0 * BLOCK + r;
                for (s, &k) in cols.iter().enumerate() {
                    l[k] = z[s * out + u];
                }
            }
            fi.process(&mut lane);
            for (o, l) in wb.iter_mut().zip(&lane) {
                *o = T::from_f64((a * l.re).to_f64().unwrap_or(f64::NAN));
            }
        });
    }
}

/// Inverse FFTs of lengths `out` and `in`, from one planner per precision
/// for the whole process: RustFFT's planner keeps every plan it made, so a
/// training loop plans each length once, not once per call.
fn inverse_ffts<F: FftFloat>(out: usize, inp: usize) -> (Arc<dyn Fft<F>>, Arc<dyn Fft<F>>) {
    // A poisoned lock only means another thread panicked mid-plan; the
    // planner's cache is still valid.
    let mut planner = F::planner().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    (planner.plan_fft_inverse(out), planner.plan_fft_inverse(inp))
}

/// Whether `T` is `f32` (FourierFT then transforms in f32, as PEFT does).
fn is_f32<T: 'static>() -> bool {
    std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
}

/// The precisions RustFFT transforms in.
trait FftFloat: rustfft::FftNum + Default + rustfft::num_traits::ToPrimitive {
    fn of(v: f64) -> Self;
    /// The process-wide planner of this precision.
    fn planner() -> &'static Mutex<FftPlanner<Self>>;
}
impl FftFloat for f32 {
    fn of(v: f64) -> Self {
        v as f32
    }
    fn planner() -> &'static Mutex<FftPlanner<Self>> {
        static PLANNER: OnceLock<Mutex<FftPlanner<f32>>> = OnceLock::new();
        PLANNER.get_or_init(|| Mutex::new(FftPlanner::new()))
    }
}
impl FftFloat for f64 {
    fn of(v: f64) -> Self {
        v
    }
    fn planner() -> &'static Mutex<FftPlanner<Self>> {
        static PLANNER: OnceLock<Mutex<FftPlanner<f64>>> = OnceLock::new();
        PLANNER.get_or_init(|| Mutex::new(FftPlanner::new()))
    }
}

/// Run `f(block index, block)` over `chunk`-sized blocks of `buf`, on the
/// thread pool when the `parallel` feature is on.
fn par_blocks<E: Send>(buf: &mut [E], chunk: usize, f: impl Fn(usize, &mut [E]) + Sync) {
    let chunk = chunk.max(1);
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        buf.par_chunks_mut(chunk).enumerate().for_each(|(i, b)| f(i, b));
    }
    #[cfg(not(feature = "parallel"))]
    buf.chunks_mut(chunk).enumerate().for_each(|(i, b)| f(i, b));
}

impl<T: Element> Adapter<T> for FourierFt<T> {
    fn method(&self) -> Method {
        Method::FourierFt
    }
    fn shape(&self) -> (usize, usize) {
        self.shape
    }
    fn params(&self) -> &[T] {
        &self.coeffs
    }
    fn params_mut(&mut self) -> &mut [T] {
        &mut self.coeffs
    }

    /// A sparse 2-D inverse FFT: length-`in` transforms of the distinct
    /// frequency rows only, then length-`out` transforms of every column.
    fn delta_weight(&self) -> Array2<T> {
        let mut w = Array2::zeros(self.shape);
        if let Some(buf) = w.as_slice_mut() {
            if is_f32::<T>() {
                self.delta_in::<f32>(buf);
            } else {
                self.delta_in::<f64>(buf);
            }
        }
        w
    }

    /// Through the dense `gᵀ·x` and one sparse 2-D FFT (FourierFT's atoms
    /// span the whole matrix, so there is no cheaper form).
    fn backward(&self, x: ArrayView2<'_, T>, g: ArrayView2<'_, T>, dx: Option<ArrayViewMut2<'_, T>>) -> Result<Vec<T>> {
        let (out, inp) = self.shape;
        check_batch(x, g, inp, out)?;
        let gw = g.t().dot(&x);
        if dx.is_some() {
            dx_dense(&self.delta_weight(), g, dx)?;
        }
        self.grad_from_dense(gw.view())
    }
}
