//! FourierFT (Gao et al., ICML 2024): `ΔW = α · Re(IFFT2(S(c)))`.
//!
//! Locations are PEFT's (`torch.randperm(out*in, seed)[:n]`), the inverse
//! FFT is torch's default (`1/(out·in)` on the inverse). Transforms run in
//! f64 through RustFFT, in blocks of columns so memory stays `O(out · 64)`.

use std::collections::BTreeMap;

use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

use crate::adapter::{Method, check_batch, dx_dense};
use crate::error::check_shape;
use crate::rng::{Mt19937, randperm_prefix};
use crate::{Adapter, Element, Error, Result};

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
}

impl Default for FourierFtConfig {
    /// PEFT's defaults: n = 1000, α = 150, seed 777.
    fn default() -> Self {
        FourierFtConfig {
            n_frequency: 1000,
            scaling: 150.0,
            seed: 777,
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

type C64 = Complex<f64>;

impl<T: Element> FourierFt<T> {
    /// A new adapter with `n` entries at PEFT's locations and the given values
    /// (`None`: zeros).
    ///
    /// # Errors
    /// [`Error::Invalid`] when `n` is 0 or exceeds `out · in`, or the values
    /// have another length.
    pub fn new(config: &FourierFtConfig, shape: (usize, usize), n: usize, values: Option<Vec<T>>) -> Result<Self> {
        let (out, inp) = shape;
        if n == 0 || n > out * inp {
            return Err(Error::invalid(
                "n_frequency",
                format!("{n} entries for a {out}×{inp} layer"),
            ));
        }
        let freqs = randperm_prefix((out * inp) as u64, n, config.seed)
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

    /// Seeded normal values (PEFT's `init_weights=False` draws `randn`).
    pub fn randomize(&mut self, seed: u64, std: f64) {
        let mut g = Mt19937::new(seed);
        self.coeffs
            .iter_mut()
            .for_each(|c| *c = T::from_f64(std * g.next_normal()));
    }

    /// `(row frequency, column frequency)` of each entry.
    pub fn frequencies(&self) -> &[(usize, usize)] {
        &self.freqs
    }

    fn norm(&self) -> f64 {
        self.scaling / (self.shape.0 * self.shape.1) as f64
    }

    /// The distinct row frequencies and, per entry, its slot among them.
    fn row_slots(&self) -> (Vec<usize>, Vec<usize>) {
        let mut map = BTreeMap::new();
        for &(j, _) in &self.freqs {
            let next = map.len();
            map.entry(j).or_insert(next);
        }
        let rows = {
            let mut r = vec![0; map.len()];
            for (&j, &slot) in &map {
                r[slot] = j;
            }
            r
        };
        (rows, self.freqs.iter().map(|(j, _)| map[j]).collect())
    }

    /// `∂L/∂c` from a dense `G = ∂L/∂ΔW`:
    /// `α/(out·in) · Re(Σ_{u,v} G[u,v] e^{2πi(j u/out + k v/in)})`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `g` is not `out × in`.
    pub fn grad_from_dense(&self, g: ArrayView2<'_, T>) -> Result<Vec<T>> {
        let (out, inp) = self.shape;
        check_shape("dL/dW", g.shape(), &[out, inp])?;
        let (rows, slot) = self.row_slots();
        let mut planner = FftPlanner::<f64>::new();
        let (fo, fi) = (planner.plan_fft_inverse(out), planner.plan_fft_inverse(inp));
        // H[slot][v] = Σ_u G[u,v] e^{2πi j u/out}, column block by column block.
        let mut h = vec![C64::default(); rows.len() * inp];
        let mut lane = vec![C64::default(); out * BLOCK];
        for v0 in (0..inp).step_by(BLOCK) {
            let bw = BLOCK.min(inp - v0);
            for b in 0..bw {
                for u in 0..out {
                    lane[b * out + u] = C64::new(g[[u, v0 + b]].as_f64(), 0.0);
                }
            }
            fo.process(&mut lane[..bw * out]);
            for (s, &j) in rows.iter().enumerate() {
                for b in 0..bw {
                    h[s * inp + v0 + b] = lane[b * out + j];
                }
            }
        }
        for row in h.chunks_exact_mut(inp) {
            fi.process(row);
        }
        let a = self.norm();
        Ok(self
            .freqs
            .iter()
            .zip(&slot)
            .map(|(&(_, k), &s)| T::from_f64(a * h[s * inp + k].re))
            .collect())
    }
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
        let (out, inp) = self.shape;
        let (rows, slot) = self.row_slots();
        let mut planner = FftPlanner::<f64>::new();
        let (fo, fi) = (planner.plan_fft_inverse(out), planner.plan_fft_inverse(inp));
        let mut z = vec![C64::default(); rows.len() * inp];
        for ((&(_, k), &s), &c) in self.freqs.iter().zip(&slot).zip(&self.coeffs) {
            z[s * inp + k].re += c.as_f64();
        }
        for row in z.chunks_exact_mut(inp) {
            fi.process(row);
        }
        let a = self.norm();
        let mut w = Array2::zeros((out, inp));
        let mut lane = vec![C64::default(); out * BLOCK];
        for v0 in (0..inp).step_by(BLOCK) {
            let bw = BLOCK.min(inp - v0);
            lane[..bw * out].fill(C64::default());
            for (s, &j) in rows.iter().enumerate() {
                for b in 0..bw {
                    lane[b * out + j] = z[s * inp + v0 + b];
                }
            }
            fo.process(&mut lane[..bw * out]);
            for b in 0..bw {
                for u in 0..out {
                    w[[u, v0 + b]] = T::from_f64(a * lane[b * out + u].re);
                }
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
