//! A whole model's adapters: one [`ModuleAdapter`] per module path, with
//! the config they came from. Reading and writing folders is in
//! `folder.rs`, merging into checkpoints in `merge.rs`.

use std::collections::BTreeMap;

use dwt_core::Orientation;
use ndarray::Array2;

use crate::config::{AdapterConfig, MethodConfig, ModulePlan};
use crate::folder::weight_matrix;
use crate::shapes::{BaseShapes, WeightLayout};
use crate::tensors::TensorFile;
use crate::{
    Adapter, Error, FourierFt, FourierFtConfig, Lora, LoraConfig, Result, Strategy, WaveletFt, WaveletFtConfig,
};

/// One module's adapter (computing in f32, as PEFT stores them).
#[derive(Debug, Clone)]
pub enum ModuleAdapter {
    /// WaveletFT.
    WaveletFt(Box<WaveletFt<f32>>),
    /// FourierFT.
    FourierFt(Box<FourierFt<f32>>),
    /// LoRA.
    Lora(Box<Lora<f32>>),
}

impl ModuleAdapter {
    /// The adapter behind the common trait.
    pub fn as_adapter(&self) -> &dyn Adapter<f32> {
        match self {
            ModuleAdapter::WaveletFt(a) => a.as_ref(),
            ModuleAdapter::FourierFt(a) => a.as_ref(),
            ModuleAdapter::Lora(a) => a.as_ref(),
        }
    }
    /// The adapter behind the common trait, mutable.
    pub fn as_adapter_mut(&mut self) -> &mut dyn Adapter<f32> {
        match self {
            ModuleAdapter::WaveletFt(a) => a.as_mut(),
            ModuleAdapter::FourierFt(a) => a.as_mut(),
            ModuleAdapter::Lora(a) => a.as_mut(),
        }
    }
}

impl From<WaveletFt<f32>> for ModuleAdapter {
    fn from(a: WaveletFt<f32>) -> Self {
        ModuleAdapter::WaveletFt(Box::new(a))
    }
}

impl From<FourierFt<f32>> for ModuleAdapter {
    fn from(a: FourierFt<f32>) -> Self {
        ModuleAdapter::FourierFt(Box::new(a))
    }
}

impl From<Lora<f32>> for ModuleAdapter {
    fn from(a: Lora<f32>) -> Self {
        ModuleAdapter::Lora(Box::new(a))
    }
}

/// A model's adapters: the config and one adapter per module path.
#[derive(Debug, Clone)]
pub struct AdapterModel {
    pub(crate) config: AdapterConfig,
    pub(crate) modules: BTreeMap<String, ModuleAdapter>,
    /// The modules that are convolutions, with their kernels (every other
    /// module is linear).
    pub(crate) convolutions: BTreeMap<String, [usize; 2]>,
}

impl AdapterModel {
    /// The config.
    pub fn config(&self) -> &AdapterConfig {
        &self.config
    }
    /// The adapters by module path.
    pub fn modules(&self) -> &BTreeMap<String, ModuleAdapter> {
        &self.modules
    }
    /// The adapters by module path, mutable (for training).
    pub fn modules_mut(&mut self) -> &mut BTreeMap<String, ModuleAdapter> {
        &mut self.modules
    }
    /// How module `module`'s base weight is stored: a convolution's
    /// adapter works on its `out × (in·kh·kw)` matrix ([`WeightLayout`]).
    pub fn layout(&self, module: &str) -> WeightLayout {
        WeightLayout::from_kernel(self.convolutions.get(module))
    }

    /// The convolution modules' kernels, as a folder records them.
    pub(crate) fn record_layout(&mut self, module: &str, layout: WeightLayout) {
        match layout.kernel() {
            Some(kernel) => self.convolutions.insert(module.to_string(), kernel),
            None => self.convolutions.remove(module),
        };
    }

    /// Total trainable parameters.
    pub fn num_params(&self) -> usize {
        self.modules.values().map(|m| m.as_adapter().num_params()).sum()
    }

    /// New adapters for every module of `base` the config targets: 2-D
    /// `*.weight` tensors, matched the way PEFT matches module paths, with
    /// `n` from `n_frequency_pattern` and proportional allocation as in PEFT.
    /// `seed` draws LoRA's `A` (WaveletFT and FourierFT draw random initial
    /// values, when their config asks for them, from their own seed).
    ///
    /// # Errors
    /// [`Error::Invalid`] when nothing matches, and the adapters' own errors.
    pub fn new_for_base(config: AdapterConfig, base: &TensorFile, seed: u64) -> Result<Self> {
        Self::build_for(config, base, Some(base), seed)
    }

    /// [`AdapterModel::new_for_base`] on a base known by its tensors' names
    /// and shapes only ([`ShapeMap`](crate::ShapeMap): a GGUF file, a model
    /// in memory).
    ///
    /// # Errors
    /// As [`AdapterModel::new_for_base`], and [`Error::Invalid`] for
    /// WaveletFT's energy-guided strategy, which reads the frozen weights.
    pub fn new_for_shapes(config: AdapterConfig, base: &dyn BaseShapes, seed: u64) -> Result<Self> {
        Self::build_for(config, base, None, seed)
    }

    fn build_for(
        config: AdapterConfig,
        base: &dyn BaseShapes,
        weights: Option<&TensorFile>,
        seed: u64,
    ) -> Result<Self> {
        let mut model = AdapterModel {
            config: config.clone(),
            modules: BTreeMap::new(),
            convolutions: BTreeMap::new(),
        };
        for (m, ModulePlan { shape, layout, n }) in config.plan(base)? {
            let adapter: ModuleAdapter = match &config.method {
                MethodConfig::WaveletFt(c) => {
                    let c = WaveletFtConfig {
                        n_frequency: n,
                        ..c.clone()
                    };
                    if c.strategy == Strategy::EnergyGuided {
                        let weights = weights.ok_or_else(|| {
                            Error::invalid(
                                "strategy",
                                "energy-guided locations are chosen from the frozen weights: build from the checkpoint (new_for_base)",
                            )
                        })?;
                        let key = resolve_weight(base, &m)?;
                        let w = weight_matrix(weights, &key, "the frozen weight")?;
                        WaveletFt::from_frozen(&c, layout.orientation(config.orientation).orient(w.view()))?.into()
                    } else {
                        WaveletFt::new(&c, shape)?.into()
                    }
                }
                MethodConfig::FourierFt(c) => {
                    let c = FourierFtConfig {
                        n_frequency: n,
                        ..c.clone()
                    };
                    FourierFt::new(&c, shape)?.into()
                }
                MethodConfig::Lora(c) => {
                    let c = LoraConfig {
                        seed,
                        ..config.lora_for(c, &m)?
                    };
                    Lora::new(&c, shape)?.into()
                }
            };
            model.record_layout(&m, layout);
            model.modules.insert(m, adapter);
        }
        Ok(model)
    }

    /// ΔW of one module (`out × in`, even for `fan_in_fan_out`).
    ///
    /// # Errors
    /// [`Error::Invalid`] when the module is not adapted.
    pub fn delta(&self, module: &str) -> Result<Array2<f32>> {
        let a = self.modules.get(module).ok_or_else(|| {
            Error::invalid(
                "module",
                format!(
                    "{module:?} is not adapted (adapted: {:?})",
                    self.modules.keys().take(5).collect::<Vec<_>>()
                ),
            )
        })?;
        Ok(a.as_adapter().delta_weight())
    }
}

/// Finds a module's weight in a base checkpoint.
pub(crate) fn resolve_weight(base: &dyn BaseShapes, module: &str) -> Result<String> {
    let want = format!("{module}.weight");
    if base.tensor_shape(&want).is_some() {
        return Ok(want);
    }
    // PEFT paths and checkpoint keys can differ by a wrapper prefix
    // (`bert.encoder…` vs `encoder…`): accept a unique match on whole
    // components in either direction.
    let names = base.tensor_names();
    let candidates: Vec<String> = names
        .iter()
        .filter(|k| k.ends_with(&format!(".{want}")) || want.ends_with(&format!(".{k}")))
        .cloned()
        .collect();
    match candidates.len() {
        1 => Ok(candidates.into_iter().next().unwrap_or_default()),
        0 => Err(Error::ModuleNotInBase {
            path: base.base_path().to_path_buf(),
            module: module.to_string(),
            tensor: want,
            example: names.into_iter().filter(|n| n.ends_with(".weight")).take(3).collect(),
        }),
        _ => Err(Error::AmbiguousModule {
            path: base.base_path().to_path_buf(),
            module: module.to_string(),
            candidates,
        }),
    }
}

/// A module's weight in a base model: its key, its `(out, in)` matrix
/// (`in` = `in_channels·kh·kw` for a convolution) and how it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModuleWeight {
    pub(crate) key: String,
    pub(crate) shape: (usize, usize),
    pub(crate) layout: WeightLayout,
}

impl ModuleWeight {
    /// Its stored shape, under the config's orientation.
    pub(crate) fn stored(&self, orientation: Orientation) -> Vec<usize> {
        self.layout.stored_shape(self.shape, orientation)
    }
}

/// A module's weight from the base checkpoint: a 2-D linear weight or a
/// 4-D convolution ([`WeightLayout`]).
pub(crate) fn module_shape(base: &dyn BaseShapes, module: &str, orientation: Orientation) -> Result<ModuleWeight> {
    let key = resolve_weight(base, module)?;
    let shape = base.tensor_shape(&key).ok_or_else(|| Error::MissingTensor {
        path: base.base_path().to_path_buf(),
        tensor: key.clone(),
        expected: "the module's weight".into(),
    })?;
    let (Some(layout), Some(matrix)) = (WeightLayout::of_shape(&shape), WeightLayout::matrix_shape(&shape)) else {
        return Err(Error::ShapeMismatch {
            path: base.base_path().to_path_buf(),
            tensor: key,
            found: shape.to_vec(),
            expected: "a 2-D linear weight or a 4-D convolution weight".into(),
        });
    };
    let shape = match layout {
        WeightLayout::Linear => orientation.stored_shape(matrix),
        WeightLayout::Conv2d { .. } => matrix,
    };
    Ok(ModuleWeight { key, shape, layout })
}
