//! What adapters need to know of a base model: the names and shapes of its
//! weights. A safetensors checkpoint ([`TensorFile`]) has them, and so does
//! any other container (a GGUF file, a model built in memory) through
//! [`ShapeMap`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::tensors::TensorFile;

/// The names and shapes of a base model's tensors, and where it lives (for
/// error messages). PEFT's WaveFT and FourierFT folders store no locations:
/// these shapes regenerate them.
pub trait BaseShapes {
    /// The model's file (or a name for it).
    fn base_path(&self) -> &Path;
    /// Every tensor name, sorted.
    fn tensor_names(&self) -> Vec<String>;
    /// The shape of tensor `name`, if the model has it.
    fn tensor_shape(&self, name: &str) -> Option<Vec<usize>>;
}

impl BaseShapes for TensorFile {
    fn base_path(&self) -> &Path {
        self.path()
    }
    fn tensor_names(&self) -> Vec<String> {
        self.names()
    }
    fn tensor_shape(&self, name: &str) -> Option<Vec<usize>> {
        self.info(name).map(|(_, s)| s.to_vec())
    }
}

/// Tensor shapes without their data, under the names PEFT uses
/// (`model.layers.0.self_attn.q_proj.weight` → `[576, 576]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShapeMap {
    path: PathBuf,
    shapes: BTreeMap<String, Vec<usize>>,
}

impl ShapeMap {
    /// The shapes of a model at `path`.
    pub fn new(path: impl Into<PathBuf>, shapes: impl IntoIterator<Item = (String, Vec<usize>)>) -> Self {
        ShapeMap {
            path: path.into(),
            shapes: shapes.into_iter().collect(),
        }
    }
}

impl BaseShapes for ShapeMap {
    fn base_path(&self) -> &Path {
        &self.path
    }
    fn tensor_names(&self) -> Vec<String> {
        self.shapes.keys().cloned().collect()
    }
    fn tensor_shape(&self, name: &str) -> Option<Vec<usize>> {
        self.shapes.get(name).cloned()
    }
}
