//! What an adapter folder holds, read without building the adapters
//! (`wft inspect`).

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::Dtype;

use crate::config::{AdapterConfig, PeftType};
use crate::folder::{Folder, TensorRole};
use crate::model::module_shape;
use crate::shapes::{BaseShapes, WeightLayout};
use crate::tensors::TensorFile;
use crate::{Method, Result};

/// One module in a [`Summary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSummary {
    /// Module path.
    pub path: String,
    /// Trainable parameters.
    pub params: usize,
    /// `(out, in)` when known (always for LoRA and native folders; with a
    /// base model for WaveFT and FourierFT); `in` is `in_channels·kh·kw`
    /// for a convolution.
    pub shape: Option<(usize, usize)>,
    /// A linear layer or a convolution.
    pub layout: WeightLayout,
}

/// What an adapter folder holds, read without building the adapters.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// `peft_type`.
    pub peft_type: PeftType,
    /// The method.
    pub method: Method,
    /// Per-module parameters, sorted by path.
    pub modules: Vec<ModuleSummary>,
    /// Size of `adapter_model.safetensors` in bytes.
    pub file_size: usize,
}

impl Summary {
    /// Total trainable parameters.
    pub fn total_params(&self) -> usize {
        self.modules.iter().map(|m| m.params).sum()
    }
    /// The LoRA rank with the same parameter count, `total / Σ(out + in)`,
    /// when every shape is known.
    pub fn equivalent_lora_rank(&self) -> Option<f64> {
        let sides: Option<usize> = self.modules.iter().map(|m| m.shape.map(|(o, i)| o + i)).sum();
        sides.filter(|&s| s > 0).map(|s| self.total_params() as f64 / s as f64)
    }

    /// Summarise an adapter folder; `base` fills in WaveFT/FourierFT shapes.
    /// The config goes through the same guarded reader as
    /// [`crate::AdapterModel::load`] (size cap, UTF-8, duplicate keys).
    ///
    /// # Errors
    /// As [`crate::AdapterModel::load`] for the config and the weights file.
    pub fn read(dir: impl AsRef<Path>, base: Option<&dyn BaseShapes>) -> Result<Self> {
        Self::from_folder(&Folder::read(dir.as_ref())?, base)
    }

    /// [`Summary::read`] from memory, as [`crate::AdapterModel::from_bytes`]
    /// loads: the config's bytes and the weights file's bytes.
    ///
    /// # Errors
    /// As [`Summary::read`].
    pub fn from_bytes(config: &[u8], weights: Vec<u8>, base: Option<&TensorFile>) -> Result<Self> {
        Self::from_folder(
            &Folder::from_bytes(config, weights)?,
            base.map(|b| b as &dyn BaseShapes),
        )
    }

    fn from_folder(folder: &Folder, base: Option<&dyn BaseShapes>) -> Result<Self> {
        let file = &folder.weights;
        let (config, shapes) = AdapterConfig::from_json(&folder.config, &folder.config_path)?;
        let mut modules: BTreeMap<String, ModuleSummary> = BTreeMap::new();
        for name in file.names() {
            let Some((m, role)) = TensorRole::parse(&name).filter(|(_, r)| r.trainable()) else {
                continue;
            };
            let (_, shape) = file.info(&name).unwrap_or((Dtype::F32, &[]));
            let count: usize = shape.iter().product();
            let entry = modules.entry(m.to_string()).or_insert_with(|| ModuleSummary {
                path: m.to_string(),
                params: 0,
                shape: shapes.shapes.get(m).copied(),
                layout: WeightLayout::from_kernel(shapes.kernels.get(m)),
            });
            entry.params += count;
            match (role, shape) {
                (TensorRole::LoraA, [_, i]) => entry.shape = Some((entry.shape.map_or(0, |s| s.0), *i)),
                (TensorRole::LoraA, [_, i, kh, kw]) => {
                    entry.shape = Some((entry.shape.map_or(0, |s| s.0), i * kh * kw));
                    entry.layout = WeightLayout::Conv2d { kernel: [*kh, *kw] };
                }
                (TensorRole::LoraB, [o, ..]) => entry.shape = Some((*o, entry.shape.map_or(0, |s| s.1))),
                _ => {}
            }
        }
        if let Some(base) = base {
            for m in modules.values_mut() {
                let w = module_shape(base, &m.path, config.orientation)?;
                (m.shape, m.layout) = (Some(w.shape), w.layout);
            }
        }
        Ok(Summary {
            peft_type: config.folder_type(!shapes.kernels.is_empty()),
            method: config.method.method(),
            modules: modules.into_values().collect(),
            file_size: file.size(),
        })
    }
}
