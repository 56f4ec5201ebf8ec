//! LoRA (Hu et al., 2021) and rsLoRA: `ΔW = s · B·A`, `s = α/r` or `α/√r`.

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use crate::adapter::{Method, check_batch};
use crate::error::check_shape;
use crate::rng::Mt19937;
use crate::{Adapter, Element, Error, Result};

/// LoRA settings (PEFT's names).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LoraConfig {
    /// The rank.
    pub r: usize,
    /// α.
    pub lora_alpha: f64,
    /// Scale by `α/√r` instead of `α/r`.
    pub use_rslora: bool,
    /// Seed of `A`'s initial draw (not part of PEFT's config).
    pub seed: u64,
}

impl Default for LoraConfig {
    /// PEFT's defaults: r = 8, α = 8.
    fn default() -> Self {
        LoraConfig {
            r: 8,
            lora_alpha: 8.0,
            use_rslora: false,
            seed: 0,
        }
    }
}

impl LoraConfig {
    /// The factor multiplying `B·A`.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }
}

/// A LoRA adapter for one `out × in` layer. Parameters are `A` (`r × in`)
/// then `B` (`out × r`), row-major, in one vector.
#[derive(Debug, Clone)]
pub struct Lora<T> {
    shape: (usize, usize),
    r: usize,
    scale: f64,
    params: Vec<T>,
}

impl<T: Element> Lora<T> {
    /// A new adapter: `A` normal with standard deviation `1/√in` from
    /// `config.seed`, `B` zero, so ΔW starts at 0 (PEFT draws `A`
    /// Kaiming-uniform from torch's stream; only the role matches).
    ///
    /// # Errors
    /// [`Error::Invalid`] for `r == 0` or an empty shape.
    pub fn new(config: &LoraConfig, shape: (usize, usize)) -> Result<Self> {
        let (out, inp) = shape;
        if config.r == 0 || out == 0 || inp == 0 {
            return Err(Error::invalid(
                "LoRA",
                format!("rank {} for a {out}×{inp} layer", config.r),
            ));
        }
        let mut g = Mt19937::new(config.seed);
        let std = 1.0 / (inp as f64).sqrt();
        let a = Array2::from_shape_simple_fn((config.r, inp), || T::from_f64(std * g.next_normal()));
        Self::from_factors(config, a, Array2::zeros((out, config.r)))
    }

    /// An adapter from its factors `A` (`r × in`) and `B` (`out × r`).
    ///
    /// # Errors
    /// [`Error::Shape`] when the factors do not fit `config.r`.
    pub fn from_factors(config: &LoraConfig, a: Array2<T>, b: Array2<T>) -> Result<Self> {
        let r = config.r;
        check_shape("lora_A", &[a.nrows()], &[r])?;
        check_shape("lora_B", &[b.ncols()], &[r])?;
        let shape = (b.nrows(), a.ncols());
        let mut params: Vec<T> = a.iter().copied().collect();
        params.extend(b.iter().copied());
        Ok(Lora {
            shape,
            r,
            scale: config.scale(),
            params,
        })
    }

    /// The rank.
    pub fn rank(&self) -> usize {
        self.r
    }
    /// `A` (`r × in`).
    pub fn a(&self) -> ArrayView2<'_, T> {
        let n = self.r * self.shape.1;
        ArrayView2::from_shape((self.r, self.shape.1), &self.params[..n])
            .expect("parameters hold r·in then out·r values")
    }
    /// `B` (`out × r`).
    pub fn b(&self) -> ArrayView2<'_, T> {
        let n = self.r * self.shape.1;
        ArrayView2::from_shape((self.shape.0, self.r), &self.params[n..])
            .expect("parameters hold r·in then out·r values")
    }
    pub(crate) fn s(&self) -> T {
        T::from_f64(self.scale)
    }
}

impl<T: Element> Adapter<T> for Lora<T> {
    fn method(&self) -> Method {
        Method::Lora
    }
    fn shape(&self) -> (usize, usize) {
        self.shape
    }
    fn params(&self) -> &[T] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [T] {
        &mut self.params
    }

    fn delta_weight(&self) -> Array2<T> {
        self.b().dot(&self.a()) * self.s()
    }

    /// `y += s · (x·Aᵀ)·Bᵀ`.
    fn forward_delta(&self, x: ArrayView2<'_, T>, mut y: ArrayViewMut2<'_, T>) -> Result<()> {
        let (out, inp) = self.shape;
        check_batch(x, y.view(), inp, out)?;
        let h = x.dot(&self.a().t());
        general_mat_mul(self.s(), &h, &self.b().t(), T::one(), &mut y);
        Ok(())
    }

    /// `∂A = s·(g·B)ᵀ·x`, `∂B = s·gᵀ·(x·Aᵀ)`, `dx += s·(g·B)·A`.
    fn backward(&self, x: ArrayView2<'_, T>, g: ArrayView2<'_, T>, dx: Option<ArrayViewMut2<'_, T>>) -> Result<Vec<T>> {
        let (out, inp) = self.shape;
        check_batch(x, g, inp, out)?;
        let s = self.s();
        let h = x.dot(&self.a().t());
        let gb = g.dot(&self.b());
        let da = gb.t().dot(&x) * s;
        let db = g.t().dot(&h) * s;
        if let Some(mut dx) = dx {
            check_shape("dx", dx.shape(), x.shape())?;
            general_mat_mul(s, &gb, &self.a(), T::one(), &mut dx);
        }
        let mut grads: Vec<T> = da.iter().copied().collect();
        grads.extend(db.iter().copied());
        Ok(grads)
    }
}
