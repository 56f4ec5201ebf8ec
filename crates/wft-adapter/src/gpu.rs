//! The GPU path (feature `gpu`): every method's ΔW as separable atoms for
//! `dwt-gpu`'s sparse kernels, so ΔW, the fused merge and the gradient run
//! on whatever GPU wgpu finds.

use dwt_core::{Orientation, SeparableBasis};
use dwt_gpu::{Context, GpuMatrix, GpuVector, SparsePlan};
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use crate::adapter::stored_shape;
use crate::error::check_shape;
use crate::{Adapter, Error, FourierFt, Lora, Method, ModuleAdapter, Result, WaveletFt};

/// ΔW = α · Σ_k c_k · u_k ⊗ v_k: the atoms, their coefficients and α.
#[derive(Debug, Clone)]
pub struct SeparableForm {
    /// The atoms (dwt-core's basis, uploaded as it is).
    pub basis: SeparableBasis<f32>,
    /// One value per atom.
    pub coeffs: Vec<f32>,
    /// The scale α.
    pub alpha: f32,
}

/// Every method's ΔW as separable atoms: compactly supported for
/// WaveletFT, full-length factors for LoRA and FourierFT. The form the GPU
/// kernels take.
pub trait Separable {
    /// The method (how parameters map to coefficients).
    fn method_kind(&self) -> Method;
    /// The atoms, their coefficients and α.
    ///
    /// # Errors
    /// [`Error::Dwt`] when a factor does not fit the shape (a bug).
    fn separable(&self) -> Result<SeparableForm>;
}

impl Separable for WaveletFt<f32> {
    fn method_kind(&self) -> Method {
        Method::WaveletFt
    }
    /// The adapter's own atoms: coefficient `k` is `c_k`.
    fn separable(&self) -> Result<SeparableForm> {
        Ok(SeparableForm {
            basis: self.atoms().clone(),
            coeffs: self.params().to_vec(),
            alpha: self.alpha(),
        })
    }
}

impl Separable for Lora<f32> {
    fn method_kind(&self) -> Method {
        Method::Lora
    }
    /// `s · B·A` as `r` unit coefficients, `B[:, k] ⊗ A[k, :]`.
    fn separable(&self) -> Result<SeparableForm> {
        let (a, b) = (self.a(), self.b());
        let mut basis = SeparableBasis::new(self.shape());
        for k in 0..self.rank() {
            let u: Vec<f32> = b.column(k).to_vec();
            let v: Vec<f32> = a.row(k).to_vec();
            let r = basis.add_row_factor(&[(0, &u)])?;
            let c = basis.add_col_factor(&[(0, &v)])?;
            basis.push(r, c)?;
        }
        Ok(SeparableForm {
            basis,
            coeffs: vec![1.0; self.rank()],
            alpha: self.s(),
        })
    }
}

impl Separable for FourierFt<f32> {
    fn method_kind(&self) -> Method {
        Method::FourierFt
    }
    /// `α/(out·in) · Σ c_n cos(2π(u_n i/out + v_n j/in))`, each entry as
    /// two rank-1 terms: `cos·cos` with `c_n` and `sin·sin` with `−c_n`.
    fn separable(&self) -> Result<SeparableForm> {
        let (out, inp) = self.shape();
        let wave = |f: usize, len: usize, sin: bool| -> Vec<f32> {
            (0..len)
                .map(|i| {
                    // Reduce the phase exactly before scaling by 2π.
                    let t = std::f64::consts::TAU * ((f * i) % len) as f64 / len as f64;
                    (if sin { t.sin() } else { t.cos() }) as f32
                })
                .collect()
        };
        let mut basis = SeparableBasis::new((out, inp));
        let mut coeffs = Vec::with_capacity(2 * self.num_params());
        for (&(u, v), &c) in self.frequencies().iter().zip(self.params()) {
            for sin in [false, true] {
                let r = basis.add_row_factor(&[(0, &wave(u, out, sin))])?;
                let col = basis.add_col_factor(&[(0, &wave(v, inp, sin))])?;
                basis.push(r, col)?;
                coeffs.push(if sin { -c } else { c });
            }
        }
        Ok(SeparableForm {
            basis,
            coeffs,
            alpha: self.norm() as f32,
        })
    }
}

impl Separable for ModuleAdapter {
    fn method_kind(&self) -> Method {
        self.as_adapter().method()
    }
    fn separable(&self) -> Result<SeparableForm> {
        match self {
            ModuleAdapter::WaveletFt(a) => a.separable(),
            ModuleAdapter::FourierFt(a) => a.separable(),
            ModuleAdapter::Lora(a) => a.separable(),
        }
    }
}

/// One adapter uploaded to a GPU: its atoms bucketed on the device and its
/// coefficients in a device buffer. Build once; update the parameters with
/// [`GpuAdapter::set_params`] during training.
///
/// ```
/// use wft_adapter::dwt_gpu::Context;
/// use wft_adapter::{Adapter, GpuAdapter, Orientation, WaveletFt, WaveletFtConfig};
/// use ndarray::Array2;
///
/// # if Context::new().is_err() { return Ok(()); }
/// let ctx = Context::new()?;
/// let config = WaveletFtConfig { n_frequency: 500, ..Default::default() };
/// let mut a = WaveletFt::<f32>::new(&config, (768, 768))?;
/// a.params_mut().iter_mut().enumerate().for_each(|(k, c)| *c = k as f32 * 1e-3);
/// let gpu = GpuAdapter::new(&ctx, &a)?;
/// let mut w = Array2::<f32>::zeros((768, 768));
/// gpu.merge_into(w.view_mut(), 1.0, Orientation::Normal)?; // W += ΔW, on the GPU
/// # Ok::<(), wft_adapter::Error>(())
/// ```
#[derive(Debug)]
pub struct GpuAdapter {
    ctx: Context,
    method: Method,
    plan: SparsePlan,
    coeffs: GpuVector,
    alpha: f32,
}

impl GpuAdapter {
    /// Upload `adapter` (any method).
    ///
    /// # Errors
    /// [`Error::Gpu`] when the tables do not fit the device.
    pub fn new<A: Separable + ?Sized>(ctx: &Context, adapter: &A) -> Result<Self> {
        let form = adapter.separable()?;
        Ok(GpuAdapter {
            ctx: ctx.clone(),
            method: adapter.method_kind(),
            plan: SparsePlan::new(ctx, &form.basis)?,
            coeffs: ctx.upload_vec(&form.coeffs)?,
            alpha: form.alpha,
        })
    }

    /// `(out, in)`.
    pub fn shape(&self) -> (usize, usize) {
        self.plan.shape()
    }

    /// The device plan (for recording into a [`dwt_gpu::Batch`]).
    pub fn plan(&self) -> &SparsePlan {
        &self.plan
    }

    /// Replace the trainable parameters (WaveletFT's coefficients,
    /// FourierFT's spectrum).
    ///
    /// # Errors
    /// [`Error::Invalid`] for LoRA (its factors are the atoms: upload a new
    /// adapter) or a wrong length.
    pub fn set_params(&mut self, params: &[f32]) -> Result<()> {
        let coeffs: Vec<f32> = match self.method {
            Method::WaveletFt => params.to_vec(),
            Method::FourierFt => params.iter().flat_map(|&c| [c, -c]).collect(),
            Method::Lora => {
                return Err(Error::invalid(
                    "GPU LoRA",
                    "its parameters are the atoms; upload a new adapter",
                ));
            }
        };
        self.ctx.write_vec(&self.coeffs, &coeffs)?;
        Ok(())
    }

    /// Record `W += sign · ΔW` on a device matrix (stored `in × out` when
    /// [`Orientation::Transposed`]) into `batch`.
    ///
    /// # Errors
    /// [`Error::Gpu`] when `w` has the wrong shape.
    pub fn record_merge(
        &self,
        batch: &mut dwt_gpu::Batch<'_>,
        w: &GpuMatrix,
        sign: f32,
        orientation: Orientation,
    ) -> Result<()> {
        batch.merge(&self.plan, &self.coeffs, sign * self.alpha, w, orientation)?;
        Ok(())
    }

    /// `W += sign · ΔW` for a host weight: upload, fused merge, readback.
    ///
    /// # Errors
    /// [`Error::Shape`] when `w` has the wrong shape; [`Error::Gpu`].
    pub fn merge_into(&self, mut w: ArrayViewMut2<'_, f32>, sign: f32, orientation: Orientation) -> Result<()> {
        check_shape("weight", w.shape(), &stored_shape(self.shape(), orientation))?;
        let dev = self.ctx.upload(w.view())?;
        let mut batch = self.ctx.batch();
        self.record_merge(&mut batch, &dev, sign, orientation)?;
        batch.submit()?;
        w.assign(&self.ctx.download(&dev)?);
        Ok(())
    }

    /// The dense ΔW (`out × in`).
    ///
    /// # Errors
    /// [`Error::Gpu`].
    pub fn delta_weight(&self) -> Result<Array2<f32>> {
        let out = self.ctx.zeros(self.shape())?;
        self.ctx
            .batch()
            .delta(&self.plan, &self.coeffs, self.alpha, &out, Orientation::Normal)?
            .submit()?;
        Ok(self.ctx.download(&out)?)
    }

    /// `∂L/∂params` through `y = x·(W + ΔW)ᵀ` from the batch factors `x`
    /// (`batch × in`) and `g = ∂L/∂y` (`batch × out`), on the device,
    /// without forming `gᵀ·x` (WaveletFT and FourierFT).
    ///
    /// # Errors
    /// [`Error::Shape`] for mismatched shapes, [`Error::Invalid`] for LoRA.
    pub fn grad_params(&self, x: ArrayView2<'_, f32>, g: ArrayView2<'_, f32>) -> Result<Vec<f32>> {
        let (out, inp) = self.shape();
        check_shape("x", &[x.ncols()], &[inp])?;
        check_shape("dL/dy", g.shape(), &[x.nrows(), out])?;
        if self.method == Method::Lora {
            return Err(Error::invalid(
                "GPU LoRA",
                "gradients of LoRA factors are dense products; use the CPU",
            ));
        }
        let (gy, xb) = (self.ctx.upload(g)?, self.ctx.upload(x)?);
        let grad = self.ctx.upload_vec(&vec![0.0; self.plan.len()])?;
        self.ctx
            .batch()
            .grad_factors(&self.plan, &gy, &xb, self.alpha, &grad)?
            .submit()?;
        let raw = self.ctx.download_vec(&grad)?;
        Ok(match self.method {
            // Each spectrum entry is the pair (c, −c).
            Method::FourierFt => raw.chunks_exact(2).map(|p| p[0] - p[1]).collect(),
            _ => raw,
        })
    }
}
