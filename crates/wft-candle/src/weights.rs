//! Checkpoint tensors, and the paths models read them through.
//!
//! A model is built from a [`VarPath`], candle's `VarBuilder` idiom: `pp`
//! descends into a module (`vb.pp("encoder").pp("layer.0")`), and
//! [`AdaptedLinear::load`](crate::AdaptedLinear::load) reads a linear
//! layer's `weight` and `bias` there. The [`VarStore`] behind the path
//! decides, by its [`Tuning`], whether tensors come back as constants, as
//! new variables (full fine-tuning), or with the adapter an
//! [`AdapterModel`] has for that path, and it collects the variables the
//! model creates. Errors are this crate's typed ones.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor, Var};
use wft_adapter::{AdapterModel, ModuleAdapter, RawTensor};

use crate::error::{Error, Result, check_shape};

/// A checkpoint's tensors by name, on the CPU: dense, or still quantized
/// (GGUF blocks, de-quantized only inside the layers that use them).
#[derive(Debug, Clone)]
pub struct Weights {
    tensors: HashMap<String, Tensor>,
    quantized: HashMap<String, Arc<QTensor>>,
}

/// A stored weight: dense, or quantized.
#[derive(Debug, Clone)]
pub(crate) enum Stored {
    Dense(Tensor),
    Quantized(Arc<QTensor>),
}

impl Weights {
    /// Tensors by name, as they are.
    pub fn from_tensors(tensors: HashMap<String, Tensor>) -> Self {
        Weights {
            tensors,
            quantized: HashMap::new(),
        }
    }

    /// Add or replace a quantized tensor (it shadows a dense one of the
    /// same name, which is removed).
    pub fn insert_quantized(&mut self, name: impl Into<String>, tensor: QTensor) {
        let name = name.into();
        self.tensors.remove(&name);
        self.quantized.insert(name, Arc::new(tensor));
    }

    /// The quantized tensors by name.
    pub fn quantized(&self) -> &HashMap<String, Arc<QTensor>> {
        &self.quantized
    }

    /// Bytes the tensors take in memory.
    pub fn bytes(&self) -> usize {
        let dense: usize = self
            .tensors
            .values()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum();
        dense
            + self
                .quantized
                .values()
                .map(|q| q.storage_size_in_bytes())
                .sum::<usize>()
    }

    /// Load a safetensors checkpoint (any float dtype; converted to `f32`).
    ///
    /// # Errors
    /// candle's errors for unreadable or malformed files.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path.as_ref(), &Device::Cpu)?;
        let tensors = tensors
            .into_iter()
            .map(|(k, t)| {
                let t = if t.dtype().is_float() {
                    t.to_dtype(DType::F32)?
                } else {
                    t
                };
                Ok((k, t))
            })
            .collect::<Result<_>>()?;
        Ok(Weights::from_tensors(tensors))
    }

    /// The tensors by name.
    pub fn tensors(&self) -> &HashMap<String, Tensor> {
        &self.tensors
    }

    /// Replace or add a tensor.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        self.tensors.insert(name.into(), tensor);
    }

    /// One tensor.
    ///
    /// # Errors
    /// [`Error::MissingTensor`] when it is absent.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| Error::MissingTensor(name.into()))
    }

    /// Save the float tensors as an `f32` safetensors file, atomically.
    ///
    /// # Errors
    /// candle's errors reading tensors, and [`Error::Adapter`] (I/O) when
    /// writing fails.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        save_f32(self.tensors.iter().map(|(k, v)| (k.as_str(), v)), path.as_ref())
    }
}

/// Save `f32` tensors to a safetensors file atomically (temporary file,
/// then rename), through `wft-adapter`'s writer. Integer tensors are
/// skipped.
pub(crate) fn save_f32<'a>(tensors: impl Iterator<Item = (&'a str, &'a Tensor)>, path: &Path) -> Result<()> {
    let mut raw = BTreeMap::new();
    for (k, t) in tensors {
        if !t.dtype().is_float() {
            continue;
        }
        let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        raw.insert(k.to_string(), RawTensor::from_f32(t.dims(), &v));
    }
    wft_adapter::write_atomic(path, raw.iter().map(|(k, v)| (k.clone(), v)), None)?;
    Ok(())
}

/// How a model's weights are tuned.
#[derive(Debug, Clone, Copy)]
pub enum Tuning<'a> {
    /// Nothing trains (gradients can still flow to the inputs).
    Frozen,
    /// Every weight is a variable (full fine-tuning).
    Full,
    /// The modules `AdapterModel` adapts get its adapters (their
    /// parameters become variables); everything else is frozen.
    Adapters(&'a AdapterModel),
}

/// Where a model's tensors come from while it is built, and the variables
/// it creates on the way. Hand out paths with [`VarStore::root`].
#[derive(Debug)]
pub struct VarStore<'a> {
    weights: &'a Weights,
    tuning: Tuning<'a>,
    vars: RefCell<Vec<(String, Var)>>,
}

impl<'a> VarStore<'a> {
    /// A store over `weights`, tuned as `tuning` says.
    pub fn new(weights: &'a Weights, tuning: Tuning<'a>) -> Self {
        VarStore {
            weights,
            tuning,
            vars: RefCell::new(Vec::new()),
        }
    }

    /// The path at the checkpoint's root.
    pub fn root(&self) -> VarPath<'_> {
        VarPath {
            store: self,
            prefix: String::new(),
        }
    }

    /// The tuning.
    pub fn tuning(&self) -> Tuning<'a> {
        self.tuning
    }

    /// The variables created so far, with the tensor or module each
    /// belongs to, in creation order.
    pub fn into_vars(self) -> Vec<(String, Var)> {
        self.vars.into_inner()
    }
}

/// A path into a [`VarStore`], candle's `VarBuilder` style.
#[derive(Debug, Clone)]
pub struct VarPath<'a> {
    store: &'a VarStore<'a>,
    prefix: String,
}

impl<'a> VarPath<'a> {
    /// The path one module further down (`"encoder"`, `"layer.0"`).
    pub fn pp(&self, name: impl AsRef<str>) -> Self {
        VarPath {
            store: self.store,
            prefix: self.join(name.as_ref()),
        }
    }

    /// The module path (`encoder.layer.0.attention.self.query`).
    pub fn path(&self) -> &str {
        &self.prefix
    }

    /// The store's tuning.
    pub fn tuning(&self) -> Tuning<'a> {
        self.store.tuning
    }

    fn join(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The tensor `name` under this path, of shape `shape`: a new variable
    /// under [`Tuning::Full`], a constant otherwise.
    ///
    /// # Errors
    /// [`Error::MissingTensor`] when the checkpoint lacks it,
    /// [`Error::Shape`] when it has another shape.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let full = self.join(name);
        let t = self.store.weights.get(&full)?;
        check_shape(&full, t.dims(), shape)?;
        if let Tuning::Full = self.store.tuning {
            let v = Var::from_tensor(t)?;
            let t = v.as_tensor().clone();
            self.store.vars.borrow_mut().push((full, v));
            Ok(t)
        } else {
            Ok(t.clone())
        }
    }

    /// [`VarPath::get`] for a weight that may be stored quantized: a
    /// quantized one comes back as it is, unless it must become a variable
    /// (full fine-tuning), when it is de-quantized.
    pub(crate) fn get_stored(&self, name: &str, shape: &[usize]) -> Result<Stored> {
        let full = self.join(name);
        match self.store.weights.quantized.get(&full) {
            None => Ok(Stored::Dense(self.get(name, shape)?)),
            Some(q) => {
                check_shape(&full, q.shape().dims(), shape)?;
                if let Tuning::Full = self.store.tuning {
                    let v = Var::from_tensor(&q.dequantize(&Device::Cpu)?)?;
                    let t = v.as_tensor().clone();
                    self.store.vars.borrow_mut().push((full, v));
                    Ok(Stored::Dense(t))
                } else {
                    Ok(Stored::Quantized(q.clone()))
                }
            }
        }
    }

    /// The adapter the store's [`AdapterModel`] has for this path, if any.
    pub fn adapter(&self) -> Option<&'a ModuleAdapter> {
        match self.store.tuning {
            Tuning::Adapters(model) => model.modules().get(&self.prefix),
            _ => None,
        }
    }

    /// Record variables a layer created for this path.
    pub(crate) fn add_vars(&self, vars: Vec<Var>) {
        let mut all = self.store.vars.borrow_mut();
        all.extend(vars.into_iter().map(|v| (self.prefix.clone(), v)));
    }
}
