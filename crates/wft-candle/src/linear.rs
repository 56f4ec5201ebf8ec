//! The linear layer with three personalities: frozen, plain (every weight a
//! candle variable, for full fine-tuning) and adapted (WaveletFT, FourierFT
//! or LoRA on a frozen weight).
//!
//! # How the adapted layer computes
//! The layer keeps the merged weight `W' = W + ΔW(c)` and rebuilds it only
//! when the coefficients `c` (a candle [`Var`]) changed since the last call,
//! with `wft-adapter`'s in-place merge (for WaveletFT: the sparse atoms,
//! `O(n·support²)`). The forward pass is then one matrix product, exactly
//! what the frozen layer costs:
//!
//! ```text
//! h = detach(x) · W'ᵀ                    (candle's matmul, no graph)
//! y = tap(h, x, c)                       (the value of h; the graph below)
//! ∂L/∂x = g · W'                         (one matmul, as for a frozen layer)
//! ∂L/∂c = adapter.backward(x, g)         (wft-adapter: for WaveletFT
//!                                         α Σ_b (g_b·u_k)(x_b·v_k), never gᵀx)
//! ```
//!
//! The tap is a candle custom op whose backward returns those two
//! gradients. A frozen layer uses the same tap without `c`, so it never
//! computes the weight gradient `gᵀx` that candle's own matmul backward
//! always forms, even for constants.

use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::quantized::QTensor;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Module, Shape, Tensor, Var};
use wft_adapter::ndarray::{Array2, ArrayView2};
use wft_adapter::{Adapter, ModuleAdapter};

use crate::error::{Error, Result, check_shape};
use crate::weights::{Stored, Tuning, VarPath};

/// Whether [`AdaptedLinear::load`] reads a bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bias {
    /// `weight` and `bias` (BERT, ViT).
    With,
    /// `weight` only (Llama-family decoders).
    Without,
}

/// A linear layer `y = x·Wᵀ + b` over the last axis of `x`, frozen, plain
/// or adapted. Models build it with [`AdaptedLinear::load`] from a
/// [`VarPath`]; the constructors below take tensors directly.
#[derive(Debug)]
pub struct AdaptedLinear {
    kind: Kind,
    bias: Option<Tensor>,
    out: usize,
    inp: usize,
}

#[derive(Debug)]
enum Kind {
    /// A constant weight; only `∂L/∂x` flows.
    Frozen(Tensor),
    /// A constant weight kept quantized: de-quantized for each product (in
    /// the forward pass and again for `∂L/∂x`), never held in `f32`.
    Quantized(Arc<QTensor>),
    /// candle's own matmul: gradients flow to every variable in it.
    Plain(Tensor),
    /// A frozen weight plus an adapter whose parameters are a variable.
    Adapted(Box<Adapted>),
}

#[derive(Debug)]
struct Adapted {
    /// The trainable parameters, in the adapter's own flat order.
    params: Var,
    /// The frozen weight, `out × in`: shared with the checkpoint, or still
    /// quantized (de-quantized only to rebuild `W + ΔW`).
    base: Stored,
    state: Mutex<Merged>,
}

/// The adapter at the parameters last merged, and `W + ΔW` at them.
#[derive(Debug, Clone)]
struct Merged {
    adapter: Arc<ModuleAdapter>,
    weight: Tensor,
}

impl AdaptedLinear {
    /// A frozen layer: `weight` is `out × in`, `bias` has `out` entries.
    /// Gradients flow to `x` only.
    ///
    /// # Errors
    /// [`Error::Shape`] when the weight is not 2-D or the bias does not fit.
    pub fn frozen(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out, inp) = weight.dims2()?;
        check_bias(bias.as_ref(), out)?;
        Ok(AdaptedLinear {
            kind: Kind::Frozen(weight.detach()),
            bias: bias.map(|b| b.detach()),
            out,
            inp,
        })
    }

    /// A frozen layer whose weight stays quantized (`out × in` GGUF blocks):
    /// each product de-quantizes it, computes in `f32` exactly as
    /// [`AdaptedLinear::frozen`] on the de-quantized weight would, and drops
    /// it. Gradients flow to `x` only.
    ///
    /// # Errors
    /// [`Error::Shape`] when the weight is not 2-D or the bias does not fit.
    pub fn quantized(weight: Arc<QTensor>, bias: Option<Tensor>) -> Result<Self> {
        let (out, inp) = weight.shape().dims2()?;
        check_bias(bias.as_ref(), out)?;
        Ok(AdaptedLinear {
            kind: Kind::Quantized(weight),
            bias: bias.map(|b| b.detach()),
            out,
            inp,
        })
    }

    /// A layer computed with candle's own matmul, so that every variable in
    /// `weight` and `bias` receives its gradient (full fine-tuning).
    ///
    /// # Errors
    /// [`Error::Shape`] when the weight is not 2-D or the bias does not fit.
    pub fn plain(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out, inp) = weight.dims2()?;
        check_bias(bias.as_ref(), out)?;
        Ok(AdaptedLinear {
            kind: Kind::Plain(weight),
            bias,
            out,
            inp,
        })
    }

    /// A frozen layer plus `adapter`, whose parameters become a new candle
    /// [`Var`] (see [`AdaptedLinear::vars`]) initialised from the adapter's
    /// current values.
    ///
    /// # Errors
    /// [`Error::Shape`] when the adapter was built for another shape, and
    /// candle's errors (the weight must be `f32` on the CPU, where
    /// `wft-adapter` computes).
    pub fn adapted(weight: Tensor, bias: Option<Tensor>, adapter: impl Into<ModuleAdapter>) -> Result<Self> {
        Self::adapted_stored(Stored::Dense(weight.detach()), bias, adapter.into())
    }

    fn adapted_stored(base: Stored, bias: Option<Tensor>, adapter: ModuleAdapter) -> Result<Self> {
        let (out, inp) = match &base {
            Stored::Dense(t) => t.dims2()?,
            Stored::Quantized(q) => q.shape().dims2()?,
        };
        check_bias(bias.as_ref(), out)?;
        let (ao, ai) = adapter.as_adapter().shape();
        check_shape("adapter", &[ao, ai], &[out, inp])?;
        let params = Var::from_vec(
            adapter.as_adapter().params().to_vec(),
            adapter.as_adapter().num_params(),
            &Device::Cpu,
        )?;
        let weight = merged_weight(&base, adapter.as_adapter())?;
        Ok(AdaptedLinear {
            kind: Kind::Adapted(Box::new(Adapted {
                params,
                base,
                state: Mutex::new(Merged {
                    adapter: Arc::new(adapter),
                    weight,
                }),
            })),
            bias: bias.map(|b| b.detach()),
            out,
            inp,
        })
    }

    /// The `out × in` layer at `vb`: its `weight` (and `bias`), frozen,
    /// plain or adapted as the path's [`Tuning`] says; adapted where the
    /// store's [`wft_adapter::AdapterModel`] has an adapter for this
    /// path, whose parameters are then recorded as the path's variables.
    ///
    /// # Errors
    /// [`Error::MissingTensor`] / [`Error::Shape`] when the checkpoint
    /// lacks the tensors or they have other shapes, and the adapter's shape
    /// errors.
    pub fn load(vb: &VarPath<'_>, (out, inp): (usize, usize), bias: Bias) -> Result<Self> {
        let stored = vb.get_stored("weight", &[out, inp])?;
        let bias = match bias {
            Bias::With => Some(vb.get("bias", &[out])?),
            Bias::Without => None,
        };
        let weight = match (stored, vb.adapter()) {
            (Stored::Quantized(q), None) => return AdaptedLinear::quantized(q, bias),
            // Adapted on a quantized base: `W` stays quantized beside `W + ΔW`.
            (Stored::Quantized(q), Some(adapter)) => {
                let layer = AdaptedLinear::adapted_stored(Stored::Quantized(q), bias, adapter.clone())?;
                vb.add_vars(layer.vars());
                return Ok(layer);
            }
            (Stored::Dense(t), _) => t,
        };
        match (vb.tuning(), vb.adapter()) {
            (Tuning::Full, _) => AdaptedLinear::plain(weight, bias),
            (_, Some(adapter)) => {
                let layer = AdaptedLinear::adapted(weight, bias, adapter.clone())?;
                vb.add_vars(layer.vars());
                Ok(layer)
            }
            (_, None) => AdaptedLinear::frozen(weight, bias),
        }
    }

    /// `(out, in)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    /// The trainable variables of an adapted layer (its parameters); empty
    /// for the other kinds (a plain layer's variables belong to whoever
    /// made its tensors).
    pub fn vars(&self) -> Vec<Var> {
        match &self.kind {
            Kind::Adapted(a) => vec![a.params.clone()],
            _ => Vec::new(),
        }
    }

    /// The adapter, with the parameters' current values; `None` unless
    /// the layer is adapted.
    ///
    /// # Errors
    /// candle's errors reading the parameters.
    pub fn adapter(&self) -> Result<Option<ModuleAdapter>> {
        match &self.kind {
            Kind::Adapted(a) => Ok(Some(a.sync()?.adapter.as_ref().clone())),
            _ => Ok(None),
        }
    }

    /// The effective weight `W` (frozen, plain) or `W + ΔW` (adapted, at
    /// the parameters' current values), `out × in`.
    ///
    /// # Errors
    /// candle's errors reading the parameters.
    pub fn weight(&self) -> Result<Tensor> {
        match &self.kind {
            Kind::Frozen(w) | Kind::Plain(w) => Ok(w.clone()),
            Kind::Quantized(q) => Ok(q.dequantize(&Device::Cpu)?),
            Kind::Adapted(a) => Ok(a.sync()?.weight.clone()),
        }
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Module for AdaptedLinear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let Some((&inp, lead)) = dims.split_last() else {
            candle_core::bail!("linear layer: a scalar input")
        };
        if inp != self.inp {
            candle_core::bail!("linear layer: input has {inp} features, the weight takes {}", self.inp)
        }
        let rows: usize = lead.iter().product();
        let x2 = x.reshape((rows, inp))?;
        let y = match &self.kind {
            Kind::Plain(w) => x2.matmul(&w.t()?)?,
            Kind::Frozen(w) => frozen_product(&x2, w, || FrozenWeight::Dense(w.clone()))?,
            Kind::Quantized(q) => {
                let w = q.dequantize(&Device::Cpu)?;
                frozen_product(&x2, &w, || FrozenWeight::Quantized(q.clone()))?
            }
            Kind::Adapted(a) => {
                let merged = a.sync().map_err(candle_core::Error::wrap)?;
                let h = x2.detach().matmul(&merged.weight.t()?)?;
                x2.apply_op2(
                    a.params.as_tensor(),
                    Tap {
                        product: Mutex::new(Some(h)),
                        weight: FrozenWeight::Dense(merged.weight),
                        adapter: Some(merged.adapter),
                    },
                )?
            }
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut shape = lead.to_vec();
        shape.push(self.out);
        y.reshape(shape)
    }
}

impl Adapted {
    /// The merged state at the parameters' current values: rebuilt from
    /// the frozen weight when they changed since the last call (so no
    /// rounding accumulates across optimizer steps), reused otherwise.
    fn sync(&self) -> Result<Merged> {
        let values = self.params.as_tensor().to_vec1::<f32>()?;
        let mut state = lock(&self.state);
        let current = state.adapter.as_adapter().params();
        let same =
            current.len() == values.len() && current.iter().zip(&values).all(|(a, b)| a.to_bits() == b.to_bits());
        if !same {
            let mut adapter = state.adapter.as_ref().clone();
            adapter.as_adapter_mut().params_mut().copy_from_slice(&values);
            state.weight = merged_weight(&self.base, adapter.as_adapter())?;
            state.adapter = Arc::new(adapter);
        }
        Ok(state.clone())
    }
}

/// The state lock; a panic elsewhere cannot leave the merged weight half
/// written (it is replaced whole), so a poisoned lock is still usable.
fn lock(m: &Mutex<Merged>) -> MutexGuard<'_, Merged> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `W + ΔW` as a tensor.
fn merged_weight(base: &Stored, adapter: &dyn Adapter<f32>) -> Result<Tensor> {
    let mut w = match base {
        Stored::Dense(t) => to_array(t)?,
        Stored::Quantized(q) => to_array(&q.dequantize(&Device::Cpu)?)?,
    };
    adapter.merge_into(w.view_mut(), 1.0, wft_adapter::Orientation::Normal)?;
    let (out, inp) = w.dim();
    Ok(Tensor::from_vec(
        w.into_raw_vec_and_offset().0,
        (out, inp),
        &Device::Cpu,
    )?)
}

fn check_bias(bias: Option<&Tensor>, out: usize) -> Result<()> {
    match bias {
        Some(b) => check_shape("bias", b.dims(), &[out]),
        None => Ok(()),
    }
}

/// A 2-D `f32` tensor as an ndarray array (copied).
pub(crate) fn to_array(t: &Tensor) -> Result<Array2<f32>> {
    let (r, c) = t.dims2()?;
    let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Array2::from_shape_vec((r, c), v).map_err(|e| Error::Config(e.to_string()))
}

/// `x·Wᵀ` of a frozen layer, outside the graph, tapped for `∂L/∂x` when a
/// gradient will flow to `x` (the tap keeps what `weight` gives).
fn frozen_product(x: &Tensor, w: &Tensor, weight: impl FnOnce() -> FrozenWeight) -> candle_core::Result<Tensor> {
    let h = x.detach().matmul(&w.t()?)?;
    if x.track_op() {
        x.apply_op1(Tap {
            product: Mutex::new(Some(h)),
            weight: weight(),
            adapter: None,
        })
    } else {
        Ok(h)
    }
}

/// The weight a tap multiplies gradients by.
enum FrozenWeight {
    Dense(Tensor),
    /// De-quantized again in the backward pass, so that no layer's `f32`
    /// weight lives from the forward pass to the backward pass.
    Quantized(Arc<QTensor>),
}

/// The gradient tap over `x` (and `c`): forward, the value of `h = x·W'ᵀ`,
/// already computed by a matmul outside the graph and handed over in
/// `product`, which the forward pass empties (so the graph keeps only the
/// tap's output, not `h` as well); backward, `∂L/∂x = g·W'` and, with an
/// adapter, `∂L/∂c` from `wft-adapter`.
struct Tap {
    product: Mutex<Option<Tensor>>,
    weight: FrozenWeight,
    adapter: Option<Arc<ModuleAdapter>>,
}

impl Tap {
    /// The product handed over, as the op's output (its one use).
    fn take(&self) -> candle_core::Result<(CpuStorage, Shape)> {
        let h = self
            .product
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(h) = h else {
            candle_core::bail!("linear layer: the tap's forward pass ran twice")
        };
        let shape = h.shape().clone();
        Ok((CpuStorage::F32(h.flatten_all()?.to_vec1::<f32>()?), shape))
    }

    fn grad_x(&self, x: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        if x.track_op() {
            match &self.weight {
                FrozenWeight::Dense(w) => Ok(Some(g.matmul(w)?)),
                FrozenWeight::Quantized(q) => Ok(Some(g.matmul(&q.dequantize(&Device::Cpu)?)?)),
            }
        } else {
            Ok(None)
        }
    }

    fn grad_params(&self, x: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let Some(adapter) = &self.adapter else { return Ok(None) };
        let (rows, inp) = x.dims2()?;
        let out = g.dim(1)?;
        let xv = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let gv = g.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let xa = ArrayView2::from_shape((rows, inp), &xv).map_err(candle_core::Error::wrap)?;
        let ga = ArrayView2::from_shape((rows, out), &gv).map_err(candle_core::Error::wrap)?;
        let grads = adapter
            .as_adapter()
            .backward(xa, ga, None)
            .map_err(candle_core::Error::wrap)?;
        let n = grads.len();
        Ok(Some(Tensor::from_vec(grads, n, &Device::Cpu)?))
    }
}

impl CustomOp1 for Tap {
    fn name(&self) -> &'static str {
        "wft-frozen-linear"
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.take()
    }
    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        self.grad_x(x, g)
    }
}

impl CustomOp2 for Tap {
    fn name(&self) -> &'static str {
        "wft-adapted-linear"
    }
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.take()
    }
    fn bwd(
        &self,
        x: &Tensor,
        _c: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((self.grad_x(x, g)?, self.grad_params(x, g)?))
    }
}

/// `template` with each module's adapter replaced by its current value in
/// `linears` (module path → layer): what a trained model saves.
pub(crate) fn current_adapters(
    template: &wft_adapter::AdapterModel,
    linears: &[(String, &AdaptedLinear)],
) -> Result<wft_adapter::AdapterModel> {
    let mut model = template.clone();
    for (path, module) in model.modules_mut() {
        let adapter = linears
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, l)| l.adapter())
            .transpose()?
            .flatten()
            .ok_or_else(|| crate::Error::Config(format!("module `{path}` is not adapted in this model")))?;
        *module = adapter;
    }
    Ok(model)
}
