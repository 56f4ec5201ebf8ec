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

/// How a module's base weight is stored. Every adapter works on an
/// `out × in` matrix; a 2-D convolution's `[out, in, kh, kw]` weight is the
/// `out × (in·kh·kw)` matrix of its row-major flattening, the convention
/// PEFT uses for LoRA on `nn.Conv2d` (its ΔW is `B·A` reshaped). Column
/// `(i·kh + u)·kw + v` of that matrix is input channel `i`, kernel tap
/// `(u, v)`; WaveletFT and FourierFT draw their locations over it exactly
/// as over a linear layer's matrix, so a wavelet atom spans neighbouring
/// taps and channels.
///
/// A convolution's weight has no transposed storage: PEFT's
/// `fan_in_fan_out` applies to linear layers only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum WeightLayout {
    /// A linear layer's `[out, in]` (or `[in, out]` with `fan_in_fan_out`).
    #[default]
    Linear,
    /// A 2-D convolution's `[out, in, kh, kw]`, with `kernel = [kh, kw]`.
    Conv2d {
        /// `[kh, kw]`.
        kernel: [usize; 2],
    },
}

impl WeightLayout {
    /// The layout of a stored weight shape: 2-D is linear, 4-D a 2-D
    /// convolution; `None` for anything else.
    pub fn of_shape(shape: &[usize]) -> Option<Self> {
        match *shape {
            [_, _] => Some(WeightLayout::Linear),
            [_, _, kh, kw] => Some(WeightLayout::Conv2d { kernel: [kh, kw] }),
            _ => None,
        }
    }

    /// The layout a `"kernels"` entry (or its absence) records: a
    /// convolution of that kernel, or a linear layer.
    pub fn from_kernel(kernel: Option<&[usize; 2]>) -> Self {
        kernel.map_or(WeightLayout::Linear, |&kernel| WeightLayout::Conv2d { kernel })
    }

    /// A convolution's `[kh, kw]`; `None` for a linear layer.
    pub fn kernel(self) -> Option<[usize; 2]> {
        match self {
            WeightLayout::Linear => None,
            WeightLayout::Conv2d { kernel } => Some(kernel),
        }
    }

    /// The `(out, in)` matrix of a weight stored as `shape` (in this
    /// layout), before any `fan_in_fan_out` transposition.
    pub fn matrix_shape(shape: &[usize]) -> Option<(usize, usize)> {
        match *shape {
            [a, b] => Some((a, b)),
            [o, i, kh, kw] => Some((o, i.checked_mul(kh)?.checked_mul(kw)?)),
            _ => None,
        }
    }

    /// The stored shape of the `(out, in)` matrix (`in` = `in_channels·kh·kw`
    /// for a convolution), `orientation` applying to linear layers only.
    pub fn stored_shape(self, (out, inp): (usize, usize), orientation: dwt_core::Orientation) -> Vec<usize> {
        match self {
            WeightLayout::Linear => {
                let (a, b) = orientation.stored_shape((out, inp));
                vec![a, b]
            }
            WeightLayout::Conv2d { kernel: [kh, kw] } => vec![out, inp / (kh * kw).max(1), kh, kw],
        }
    }

    /// The orientation a weight of this layout is stored in, given the
    /// config's (convolutions are never transposed).
    pub fn orientation(self, config: dwt_core::Orientation) -> dwt_core::Orientation {
        match self {
            WeightLayout::Linear => config,
            WeightLayout::Conv2d { .. } => dwt_core::Orientation::Normal,
        }
    }

    /// Whether an `(out, in)` matrix can have this layout (a convolution's
    /// `in` must be a whole number of kernels).
    pub fn fits(self, (_, inp): (usize, usize)) -> bool {
        match self {
            WeightLayout::Linear => true,
            WeightLayout::Conv2d { kernel: [kh, kw] } => kh * kw > 0 && inp % (kh * kw) == 0 && inp > 0,
        }
    }
}
