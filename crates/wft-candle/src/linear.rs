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
//!
//! A base kept quantized is never held merged, nor whole in `f32`: its
//! products de-quantize it a slab of rows at a time (`crate::quantized`),
//! and the adapter adds its share through its own factored form
//! (`forward_delta`, and `g · ΔW` from its `backward`).

use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::quantized::QTensor;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Module, Shape, Tensor, Var};
use wft_adapter::ndarray::Array2;
use wft_adapter::{Adapter, ModuleAdapter, Orientation};

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
    /// A constant weight kept quantized: de-quantized a slab at a time for
    /// each product (in the forward pass and again for `∂L/∂x`), never held
    /// whole in `f32`.
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
    /// quantized.
    base: Stored,
    state: Mutex<Merged>,
}

/// The adapter at the parameters last synced, and the weight its products
/// use: `W + ΔW` at those parameters for a dense base, the quantized `W`
/// alone otherwise.
#[derive(Debug, Clone)]
struct Merged {
    adapter: Arc<ModuleAdapter>,
    weight: FrozenWeight,
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

    /// The weight of a frozen dense layer without a bias (`out × in`): what
    /// fused ops may take in place of the layer; `None` for any other kind.
    pub(crate) fn frozen_dense(&self) -> Option<&Tensor> {
        match self.frozen_parts()? {
            (w, None) => Some(w),
            _ => None,
        }
    }

    /// The weight (`out × in`) and bias of a frozen dense layer whose bias
    /// is a constant too; `None` for any other kind.
    pub(crate) fn frozen_parts(&self) -> Option<(&Tensor, Option<&Tensor>)> {
        match (&self.kind, &self.bias) {
            (Kind::Frozen(w), b) if b.as_ref().is_none_or(|b| !b.track_op()) => Some((w, b.as_ref())),
            _ => None,
        }
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
        Self::load_stored(vb, &[out, inp], bias)
    }

    /// A convolution's `[out, in, kh, kw]` weight at `vb`, as the
    /// `out × (in·kh·kw)` layer over its input's patches flattened
    /// channel-major (`wft_adapter::WeightLayout::Conv2d`): the
    /// convolution is this layer applied to them. Frozen, plain or adapted
    /// as [`AdaptedLinear::load`] says; a plain (fully tuned) weight stays
    /// the checkpoint's 4-D variable.
    ///
    /// # Errors
    /// As [`AdaptedLinear::load`]; [`Error::Config`] for a quantized
    /// convolution weight.
    pub fn load_conv(vb: &VarPath<'_>, shape: [usize; 4], bias: Bias) -> Result<Self> {
        Self::load_stored(vb, &shape, bias)
    }

    fn load_stored(vb: &VarPath<'_>, shape: &[usize], bias: Bias) -> Result<Self> {
        let out = shape.first().copied().unwrap_or(0);
        let inp: usize = shape.iter().skip(1).product();
        let stored = match vb.get_stored("weight", shape)? {
            Stored::Dense(t) => Stored::Dense(t.reshape((out, inp))?),
            Stored::Quantized(_) if shape.len() != 2 => {
                return Err(Error::Config(format!(
                    "{}: a quantized convolution weight is not supported",
                    vb.path()
                )));
            }
            q => q,
        };
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
            Kind::Adapted(a) => {
                let merged = a.sync()?;
                match &merged.weight {
                    FrozenWeight::Dense(w) => Ok(w.clone()),
                    FrozenWeight::Quantized(q) => {
                        let mut w = to_array(&q.dequantize(&Device::Cpu)?)?;
                        merged
                            .adapter
                            .as_adapter()
                            .merge_into(w.view_mut(), 1.0, Orientation::Normal)?;
                        from_array(w)
                    }
                }
            }
        }
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// An adapted layer's adapter's `(shape, parameter count)`, without
    /// copying it; `None` unless the layer is adapted.
    pub(crate) fn adapter_size(&self) -> Option<((usize, usize), usize)> {
        match &self.kind {
            Kind::Adapted(a) => {
                let state = lock(&a.state);
                let adapter = state.adapter.as_adapter();
                Some((adapter.shape(), adapter.num_params()))
            }
            _ => None,
        }
    }

    /// Hot-swap the adapter of an adapted layer for `adapter` (any method,
    /// with as many parameters, for the same shape) and return the old one
    /// at its current values. On a dense `f32` base the merged weight is
    /// rewritten in place: the elements the old adapter touched get the
    /// frozen weight's values back and the new adapter's are added, so the
    /// weight is bit for bit what building the layer with `adapter` gives,
    /// in `O(touched)` for WaveletFT (microseconds), never `O(out·in)`. Other
    /// bases rebuild the merged weight (another dtype) or keep the quantized
    /// one (nothing to rewrite).
    ///
    /// The parameters' variable takes the new values, so training goes on
    /// from them. Swap between passes: a graph built before the swap reads
    /// the new weight in its backward pass.
    ///
    /// # Errors
    /// [`Error::Config`] for a layer that is not adapted, [`Error::Shape`]
    /// for an adapter of another shape or parameter count (the layer is then
    /// unchanged), and candle's errors.
    pub fn swap_adapter(&self, adapter: ModuleAdapter) -> Result<ModuleAdapter> {
        let Kind::Adapted(a) = &self.kind else {
            return Err(Error::Config("only an adapted layer can swap its adapter".into()));
        };
        let new = adapter.as_adapter();
        let (o, i) = new.shape();
        check_shape("adapter", &[o, i], &[self.out, self.inp])?;
        // Bring the state up to the variable's values first (a training step
        // may have moved them), so the touched elements are the current ones.
        a.sync()?;
        let mut state = lock(&a.state);
        check_shape(
            "adapter parameters",
            &[new.num_params()],
            &[state.adapter.as_adapter().num_params()],
        )?;
        let values = Tensor::from_slice(new.params(), new.num_params(), &Device::Cpu)?;
        let patched = match (&a.base, &state.weight) {
            (Stored::Dense(base), FrozenWeight::Dense(w)) if base.dtype() == DType::F32 => {
                let patch = Patch {
                    base,
                    old: state.adapter.as_adapter(),
                    new,
                    shape: (self.out, self.inp),
                };
                w.inplace_op1(&patch)?;
                None
            }
            (base @ Stored::Dense(_), _) => Some(merged_weight(base, new)?),
            (Stored::Quantized(_), _) => None,
        };
        a.params.set(&values)?;
        if let Some(w) = patched {
            state.weight = w;
        }
        let old = std::mem::replace(&mut state.adapter, Arc::new(adapter));
        Ok(Arc::try_unwrap(old).unwrap_or_else(|shared| shared.as_ref().clone()))
    }
}

impl AdaptedLinear {
    /// A mixed-adapter batch through this layer, for inference: `x` is
    /// `batch × … × in`, and batch row `b` uses `adapters[routes[b]]` (`None`
    /// in either place: the frozen layer alone). The frozen weight `W`
    /// (never the layer's own merged adapter) multiplies every row once;
    /// each adapter adds its share to its rows through its factored form
    /// ([`wft_adapter::forward_mixed`]). No graph is recorded.
    ///
    /// # Errors
    /// [`Error::Shape`] for a wrong input width or a routes count that is not
    /// the batch size, and the adapters' own shape errors.
    pub fn forward_mixed(
        &self,
        x: &Tensor,
        adapters: &[Option<&dyn Adapter<f32>>],
        routes: &[Option<usize>],
    ) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (Some((&inp, lead)), Some(&batch)) = (dims.split_last(), dims.first()) else {
            return Err(Error::Config("linear layer: a scalar input".into()));
        };
        check_shape("linear layer input", &[inp], &[self.inp])?;
        check_shape("routes", &[routes.len()], &[batch])?;
        let rows: usize = lead.iter().product();
        let per_row = rows / batch.max(1);
        let x2 = x.detach().reshape((rows, inp))?.contiguous()?;
        let h = match &self.kind {
            Kind::Frozen(w) | Kind::Plain(w) => self.frozen_product(&x2, rows, w)?,
            Kind::Adapted(a) => match &a.base {
                Stored::Dense(w) => self.frozen_product(&x2, rows, w)?,
                Stored::Quantized(q) => self.quantized_product(&x2, q)?,
            },
            Kind::Quantized(q) => self.quantized_product(&x2, q)?,
        };
        // The adapters that adapt this layer, and each token row's among them.
        let mut present: Vec<&dyn Adapter<f32>> = Vec::new();
        let mut slot = Vec::with_capacity(adapters.len());
        for a in adapters {
            slot.push(a.map(|a| {
                present.push(a);
                present.len() - 1
            }));
        }
        let token_routes: Vec<Option<usize>> = routes
            .iter()
            .flat_map(|r| std::iter::repeat_n(r.and_then(|k| slot.get(k).copied().flatten()), per_row))
            .collect();
        let mut h = h;
        if !present.is_empty() {
            let xa = to_array(&x2)?;
            wft_adapter::forward_mixed(xa.view(), h.view_mut(), &token_routes, &present)?;
        }
        let mut shape = lead.to_vec();
        shape.push(self.out);
        Ok(from_array(h)?.reshape(shape)?)
    }

    /// `x·Wᵀ + b` for a dense frozen `w`, as an array.
    fn frozen_product(&self, x: &Tensor, rows: usize, w: &Tensor) -> Result<Array2<f32>> {
        let w = if w.dtype() == DType::F32 {
            w.clone()
        } else {
            w.to_dtype(DType::F32)?
        };
        let (xs, xl) = x.storage_and_layout();
        let xv = crate::matmul::contiguous(&xs, xl, "linear layer")?;
        let y = crate::matmul::linear(xv, rows, &w, self.bias.as_ref())?;
        Array2::from_shape_vec((rows, self.out), y).map_err(|e| Error::Config(e.to_string()))
    }

    /// `x·Wᵀ + b` for a quantized frozen `q`, as an array.
    fn quantized_product(&self, x: &Tensor, q: &QTensor) -> Result<Array2<f32>> {
        let mut h = crate::quantized::product(x, q)?;
        if let Some(b) = &self.bias {
            h = h.broadcast_add(b)?;
        }
        to_array(&h)
    }
}

/// The in-place rewrite [`AdaptedLinear::swap_adapter`] runs on a merged
/// `f32` weight: `old`'s touched elements back to the frozen `base`, then
/// `new` merged.
struct Patch<'a> {
    base: &'a Tensor,
    old: &'a dyn Adapter<f32>,
    new: &'a dyn Adapter<f32>,
    shape: (usize, usize),
}

impl candle_core::InplaceOp1 for Patch<'_> {
    fn name(&self) -> &'static str {
        "wft-swap-adapter"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let wrap = |what: &str| candle_core::Error::Msg(format!("swap_adapter: {what}"));
        let CpuStorage::F32(buf) = storage else {
            return Err(wrap("the merged weight is not f32"));
        };
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| wrap("the merged weight is not contiguous"))?;
        let w = &mut buf[start..end];
        let (base, base_layout) = self.base.storage_and_layout();
        let candle_core::Storage::Cpu(CpuStorage::F32(b)) = &*base else {
            return Err(wrap("the frozen weight is not f32 on the CPU"));
        };
        let (bs, be) = base_layout
            .contiguous_offsets()
            .ok_or_else(|| wrap("the frozen weight is not contiguous"))?;
        let b = &b[bs..be];
        if b.len() != w.len() {
            return Err(wrap("the frozen and merged weights differ in size"));
        }
        let restore = &mut |start: usize, len: usize| w[start..start + len].copy_from_slice(&b[start..start + len]);
        if self.old.for_each_touched_run(Orientation::Normal, restore) == wft_adapter::Coverage::Everything {
            w.copy_from_slice(b);
        }
        let view = wft_adapter::ndarray::ArrayViewMut2::from_shape(self.shape, w).map_err(candle_core::Error::wrap)?;
        self.new
            .merge_into(view, 1.0, Orientation::Normal)
            .map_err(candle_core::Error::wrap)
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
        let x2 = x.reshape((rows, inp))?.contiguous()?;
        // A constant bias is the dense products' starting value.
        let folded = self.bias.as_ref().filter(|b| !b.track_op()).cloned();
        let (y, bias_added) = match &self.kind {
            Kind::Plain(w) => (x2.matmul(&w.t()?)?, false),
            Kind::Frozen(w) => {
                let added = folded.is_some();
                let tap = Tap {
                    value: Value::Dense(folded),
                    weight: FrozenWeight::Dense(w.clone()),
                    adapter: None,
                };
                let y = if x2.track_op() {
                    x2.apply_op1(tap)?
                } else {
                    x2.apply_op1_no_bwd(&tap)?
                };
                (y, added)
            }
            Kind::Quantized(q) => {
                let h = crate::quantized::product(&x2.detach(), q)?;
                (tap_frozen(&x2, h, FrozenWeight::Quantized(q.clone()))?, false)
            }
            Kind::Adapted(a) => {
                let merged = a.sync().map_err(candle_core::Error::wrap)?;
                let (value, added) = match &merged.weight {
                    FrozenWeight::Dense(_) => {
                        let added = folded.is_some();
                        (Value::Dense(folded), added)
                    }
                    FrozenWeight::Quantized(q) => {
                        let x = x2.detach();
                        let h = crate::quantized::product(&x, q)?;
                        let h = add_delta(&x, h, merged.adapter.as_adapter())?;
                        (Value::Handed(Mutex::new(Some(h))), false)
                    }
                };
                let tap = Tap {
                    value,
                    weight: merged.weight,
                    adapter: Some(merged.adapter),
                };
                (x2.apply_op2(a.params.as_tensor(), tap)?, added)
            }
        };
        let y = match &self.bias {
            Some(b) if !bias_added => y.broadcast_add(b)?,
            _ => y,
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

/// The weight the products of `adapter` on `base` use: `W + ΔW` for a
/// dense base, the quantized `W` itself otherwise.
fn merged_weight(base: &Stored, adapter: &dyn Adapter<f32>) -> Result<FrozenWeight> {
    match base {
        Stored::Dense(t) => {
            let mut w = to_array(t)?;
            adapter.merge_into(w.view_mut(), 1.0, Orientation::Normal)?;
            Ok(FrozenWeight::Dense(from_array(w)?))
        }
        Stored::Quantized(q) => Ok(FrozenWeight::Quantized(q.clone())),
    }
}

/// `h + x · ΔWᵀ` through the adapter's own forward form.
fn add_delta(x: &Tensor, h: Tensor, adapter: &dyn Adapter<f32>) -> candle_core::Result<Tensor> {
    let x = to_array(x).map_err(candle_core::Error::wrap)?;
    let mut h = to_array(&h).map_err(candle_core::Error::wrap)?;
    adapter
        .forward_delta(x.view(), h.view_mut())
        .map_err(candle_core::Error::wrap)?;
    from_array(h).map_err(candle_core::Error::wrap)
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

/// An ndarray array as a 2-D tensor.
fn from_array(a: Array2<f32>) -> Result<Tensor> {
    let shape = a.dim();
    let a = if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    };
    Ok(Tensor::from_vec(a.into_raw_vec_and_offset().0, shape, &Device::Cpu)?)
}

/// A frozen quantized layer's product `h = x·Wᵀ`, computed outside the
/// graph, tapped for `∂L/∂x` when a gradient will flow to `x`.
fn tap_frozen(x: &Tensor, h: Tensor, weight: FrozenWeight) -> candle_core::Result<Tensor> {
    if x.track_op() {
        x.apply_op1(Tap {
            value: Value::Handed(Mutex::new(Some(h))),
            weight,
            adapter: None,
        })
    } else {
        Ok(h)
    }
}

/// The weight a layer's products use.
#[derive(Debug, Clone)]
enum FrozenWeight {
    /// `W`, or `W + ΔW` with the tap's adapter merged into it.
    Dense(Tensor),
    /// `W` in its GGUF blocks, de-quantized a slab at a time in each
    /// product (forward, and again backward: no layer's `f32` weight lives
    /// from one to the other). A tap's adapter is never merged into it.
    Quantized(Arc<QTensor>),
}

impl FrozenWeight {
    /// `g · W`.
    fn grad_input(&self, g: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            FrozenWeight::Dense(w) => {
                let g = g.contiguous()?;
                let (rows, _) = g.dims2()?;
                let (gs, gl) = g.storage_and_layout();
                let dx =
                    crate::matmul::linear_input_grad(crate::matmul::contiguous(&gs, gl, "linear layer")?, rows, w)?;
                Tensor::from_vec(dx, (rows, w.dim(1)?), g.device())
            }
            FrozenWeight::Quantized(q) => crate::quantized::grad_input(g, q),
        }
    }
}

/// The gradient tap over `x` (and `c`): forward, the value of `h = x·W'ᵀ`
/// (see [`Value`]); backward, `∂L/∂x = g·W'` and, with an adapter, `∂L/∂c`
/// from `wft-adapter`.
struct Tap {
    value: Value,
    weight: FrozenWeight,
    adapter: Option<Arc<ModuleAdapter>>,
}

/// A tap's forward value.
enum Value {
    /// `x·W'ᵀ + b`, computed by the op from its input and a dense `W'`, the
    /// constant bias `b` (if any) as the product's starting value.
    Dense(Option<Tensor>),
    /// A product computed outside the graph and handed over (a quantized
    /// weight's), which the forward pass empties, so that the graph keeps
    /// only the tap's output, not `h` as well.
    Handed(Mutex<Option<Tensor>>),
}

impl Tap {
    /// The forward value, from the input `x`'s storage.
    fn value(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        match (&self.value, &self.weight) {
            (Value::Dense(bias), FrozenWeight::Dense(w)) => {
                let x = crate::models::slice(s, l, "linear layer")?;
                let (rows, _) = l.shape().dims2()?;
                let y = crate::matmul::linear(x, rows, w, bias.as_ref())?;
                Ok((CpuStorage::F32(y), Shape::from((rows, w.dim(0)?))))
            }
            (Value::Dense(_), FrozenWeight::Quantized(_)) => {
                candle_core::bail!("linear layer: a dense product of a quantized weight")
            }
            (Value::Handed(h), _) => {
                let h = h.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
                let Some(h) = h else {
                    candle_core::bail!("linear layer: the tap's forward pass ran twice")
                };
                let shape = h.shape().clone();
                Ok((CpuStorage::F32(h.flatten_all()?.to_vec1::<f32>()?), shape))
            }
        }
    }

    /// `∂L/∂x` (when a gradient flows to `x`) and, with an adapter,
    /// `∂L/∂c`.
    fn grads(&self, x: &Tensor, g: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = if x.track_op() {
            Some(self.weight.grad_input(g)?)
        } else {
            None
        };
        let Some(adapter) = &self.adapter else {
            return Ok((dx, None));
        };
        let (xa, ga) = (
            to_array(x).map_err(candle_core::Error::wrap)?,
            to_array(g).map_err(candle_core::Error::wrap)?,
        );
        let (dx, dc) = match (dx, &self.weight) {
            // The adapter is not in a quantized weight: add its `g · ΔW`.
            (Some(dx), FrozenWeight::Quantized(_)) => {
                let mut dx = to_array(&dx).map_err(candle_core::Error::wrap)?;
                let dc = adapter
                    .as_adapter()
                    .backward(xa.view(), ga.view(), Some(dx.view_mut()))
                    .map_err(candle_core::Error::wrap)?;
                (Some(from_array(dx).map_err(candle_core::Error::wrap)?), dc)
            }
            (dx, _) => (
                dx,
                adapter
                    .as_adapter()
                    .backward(xa.view(), ga.view(), None)
                    .map_err(candle_core::Error::wrap)?,
            ),
        };
        let n = dc.len();
        Ok((dx, Some(Tensor::from_vec(dc, n, &Device::Cpu)?)))
    }
}

impl CustomOp1 for Tap {
    fn name(&self) -> &'static str {
        "wft-frozen-linear"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.value(s, l)
    }
    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(self.grads(x, g)?.0)
    }
}

impl CustomOp2 for Tap {
    fn name(&self) -> &'static str {
        "wft-adapted-linear"
    }
    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.value(s, l)
    }
    fn bwd(
        &self,
        x: &Tensor,
        _c: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        self.grads(x, g)
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
