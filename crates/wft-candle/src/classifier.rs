//! A sequence classifier: a BERT encoder, mean pooling and a linear head.
//! The head is trained whatever the encoder's tuning.

use std::path::Path;

use candle_core::{Device, Tensor, Var};
use wft_adapter::{AdapterModel, Mt19937};

use crate::error::{Result, check_shape};
use crate::models::Adaptable;
use crate::models::bert::{Bert, mean_pool};
use crate::weights::{Weights, save_f32};

/// The head's tensor names in [`Classifier::save_head`] files.
pub const HEAD_WEIGHT: &str = "classifier.weight";
/// See [`HEAD_WEIGHT`].
pub const HEAD_BIAS: &str = "classifier.bias";

/// BERT, mean pooling over the attention mask, and a linear head
/// `classes × H`.
#[derive(Debug)]
pub struct Classifier {
    bert: Bert,
    weight: Var,
    bias: Var,
}

impl Classifier {
    /// A new head with normal(0, 0.02) weights drawn from `seed` and zero
    /// bias.
    ///
    /// # Errors
    /// candle's errors.
    pub fn new(bert: Bert, classes: usize, seed: u64) -> Result<Self> {
        let h = bert.config().hidden_size;
        let mut g = Mt19937::new(seed);
        let w: Vec<f32> = (0..classes * h).map(|_| (0.02 * g.next_normal()) as f32).collect();
        let weight = Var::from_vec(w, (classes, h), &Device::Cpu)?;
        let bias = Var::zeros(classes, candle_core::DType::F32, &Device::Cpu)?;
        Ok(Classifier { bert, weight, bias })
    }

    /// A head from a file written by [`Classifier::save_head`].
    ///
    /// # Errors
    /// candle's errors for unreadable files, [`Error::MissingTensor`](crate::Error::MissingTensor) and
    /// [`Error::Shape`](crate::Error::Shape) when the head does not fit the encoder.
    pub fn with_saved_head(bert: Bert, path: impl AsRef<Path>) -> Result<Self> {
        let head = Weights::load(path)?;
        let w = head.get(HEAD_WEIGHT)?;
        let b = head.get(HEAD_BIAS)?;
        let (classes, h) = w.dims2()?;
        check_shape(HEAD_WEIGHT, &[h], &[bert.config().hidden_size])?;
        check_shape(HEAD_BIAS, b.dims(), &[classes])?;
        Ok(Classifier {
            bert,
            weight: Var::from_tensor(w)?,
            bias: Var::from_tensor(b)?,
        })
    }

    /// The encoder.
    pub fn bert(&self) -> &Bert {
        &self.bert
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.bias.as_tensor().dims()[0]
    }

    /// Every trainable variable: the encoder's, then the head's.
    pub fn vars(&self) -> Vec<Var> {
        let mut v = self.bert.vars();
        v.push(self.weight.clone());
        v.push(self.bias.clone());
        v
    }

    /// Number of trainable parameters: the encoder's and the head's.
    pub fn num_trainable(&self) -> (usize, usize) {
        let enc = self.bert.vars().iter().map(|v| v.as_tensor().elem_count()).sum();
        (
            enc,
            self.weight.as_tensor().elem_count() + self.bias.as_tensor().elem_count(),
        )
    }

    /// Logits (`batch × classes`) for `input_ids` and `attention_mask`
    /// (both `batch × len`).
    ///
    /// # Errors
    /// candle's errors for bad shapes or ids.
    pub fn logits(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        self.logits_from_embedded(&self.bert.embed(input_ids)?, attention_mask)
    }

    /// Logits from the embedding layer's output (see [`Bert::embed`]); the
    /// way to time the frozen model with input gradients.
    ///
    /// # Errors
    /// candle's errors for bad shapes.
    pub fn logits_from_embedded(&self, embedded: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let hidden = self.bert.encode(embedded, attention_mask)?;
        let pooled = mean_pool(&hidden, attention_mask)?;
        Ok(pooled
            .matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())?)
    }

    /// Save the head (`classifier.weight`, `classifier.bias`) atomically.
    ///
    /// # Errors
    /// I/O errors.
    pub fn save_head(&self, path: impl AsRef<Path>) -> Result<()> {
        save_f32(
            [
                (HEAD_WEIGHT, self.weight.as_tensor()),
                (HEAD_BIAS, self.bias.as_tensor()),
            ]
            .into_iter(),
            path.as_ref(),
        )
    }

    /// The adapters at their current values, as an [`AdapterModel`] with
    /// `template`'s config (the model the encoder was built with); save it
    /// with [`AdapterModel::save`] for a PEFT-compatible folder.
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) when `template` names a module the encoder did not
    /// adapt.
    pub fn adapters(&self, template: &AdapterModel) -> Result<AdapterModel> {
        self.bert.adapters(template)
    }
}
