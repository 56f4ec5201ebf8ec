//! Classifiers: an encoder, a pooling, and a linear [`Head`] that is trained
//! whatever the encoder's tuning. [`Classifier`] classifies sequences (BERT,
//! mean pooling); [`ImageClassifier`] classifies images (a ViT, its CLS token
//! alone or beside the mean patch token).

use std::path::Path;

use candle_core::{Device, Tensor, Var};
use wft_adapter::{AdapterModel, Mt19937};

use crate::error::{Result, check_shape};
use crate::models::Adaptable;
use crate::models::bert::{Bert, mean_pool};
use crate::models::vit::{self, Vit};
use crate::weights::{Weights, save_f32};

/// The head's tensor names in [`Head::save`] files.
pub const HEAD_WEIGHT: &str = "classifier.weight";
/// See [`HEAD_WEIGHT`].
pub const HEAD_BIAS: &str = "classifier.bias";

/// A linear head `classes × width` with a bias.
#[derive(Debug)]
pub struct Head {
    weight: Var,
    bias: Var,
}

impl Head {
    /// A new head with normal(0, 0.02) weights drawn from `seed` and zero
    /// bias.
    ///
    /// # Errors
    /// candle's errors.
    pub fn new(classes: usize, width: usize, seed: u64) -> Result<Self> {
        let mut g = Mt19937::new(seed);
        let w: Vec<f32> = (0..classes * width).map(|_| (0.02 * g.next_normal()) as f32).collect();
        Ok(Head {
            weight: Var::from_vec(w, (classes, width), &Device::Cpu)?,
            bias: Var::zeros(classes, candle_core::DType::F32, &Device::Cpu)?,
        })
    }

    /// A head from a file written by [`Head::save`], for features of
    /// `width`.
    ///
    /// # Errors
    /// candle's errors for unreadable files, [`Error::MissingTensor`](crate::Error::MissingTensor) and
    /// [`Error::Shape`](crate::Error::Shape) when the head does not fit.
    pub fn load(path: impl AsRef<Path>, width: usize) -> Result<Self> {
        let head = Weights::load(path)?;
        let w = head.get(HEAD_WEIGHT)?;
        let b = head.get(HEAD_BIAS)?;
        let (classes, h) = w.dims2()?;
        check_shape(HEAD_WEIGHT, &[h], &[width])?;
        check_shape(HEAD_BIAS, b.dims(), &[classes])?;
        Ok(Head {
            weight: Var::from_tensor(w)?,
            bias: Var::from_tensor(b)?,
        })
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.bias.as_tensor().dims()[0]
    }

    /// The weight and the bias.
    pub fn vars(&self) -> [Var; 2] {
        [self.weight.clone(), self.bias.clone()]
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.weight.as_tensor().elem_count() + self.bias.as_tensor().elem_count()
    }

    /// Logits (`batch × classes`) of pooled features (`batch × width`).
    ///
    /// # Errors
    /// candle's errors for a wrong width.
    pub fn forward(&self, pooled: &Tensor) -> Result<Tensor> {
        Ok(pooled
            .matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())?)
    }

    /// Save the head (`classifier.weight`, `classifier.bias`) atomically.
    ///
    /// # Errors
    /// I/O errors.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        save_f32(
            [
                (HEAD_WEIGHT, self.weight.as_tensor()),
                (HEAD_BIAS, self.bias.as_tensor()),
            ]
            .into_iter(),
            path.as_ref(),
        )
    }
}

/// BERT, mean pooling over the attention mask, and a linear head
/// `classes × H`.
#[derive(Debug)]
pub struct Classifier {
    bert: Bert,
    head: Head,
}

impl Classifier {
    /// A new head (see [`Head::new`]) on `bert`.
    ///
    /// # Errors
    /// candle's errors.
    pub fn new(bert: Bert, classes: usize, seed: u64) -> Result<Self> {
        let head = Head::new(classes, bert.config().hidden_size, seed)?;
        Ok(Classifier { bert, head })
    }

    /// A head from a file written by [`Classifier::save_head`].
    ///
    /// # Errors
    /// As [`Head::load`].
    pub fn with_saved_head(bert: Bert, path: impl AsRef<Path>) -> Result<Self> {
        let head = Head::load(path, bert.config().hidden_size)?;
        Ok(Classifier { bert, head })
    }

    /// The encoder.
    pub fn bert(&self) -> &Bert {
        &self.bert
    }

    /// The head.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.head.classes()
    }

    /// Every trainable variable: the encoder's, then the head's.
    pub fn vars(&self) -> Vec<Var> {
        let mut v = self.bert.vars();
        v.extend(self.head.vars());
        v
    }

    /// Number of trainable parameters: the encoder's and the head's.
    pub fn num_trainable(&self) -> (usize, usize) {
        let enc = self.bert.vars().iter().map(|v| v.as_tensor().elem_count()).sum();
        (enc, self.head.num_params())
    }

    /// Logits (`batch × classes`) for `input_ids` and `attention_mask`
    /// (both `batch × len`).
    ///
    /// # Errors
    /// candle's errors for bad shapes or ids.
    pub fn logits(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        self.logits_from_embedded(&self.bert.embed(input_ids)?, attention_mask)
    }

    /// [`Classifier::logits`] with BERT's segment ids for sentence pairs
    /// (see [`Bert::embed_segments`]).
    ///
    /// # Errors
    /// As [`Bert::embed_segments`].
    pub fn logits_segments(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.logits_from_embedded(&self.bert.embed_segments(input_ids, token_type_ids)?, attention_mask)
    }

    /// Logits from the embedding layer's output (see [`Bert::embed`]); the
    /// way to time the frozen model with input gradients.
    ///
    /// # Errors
    /// candle's errors for bad shapes.
    pub fn logits_from_embedded(&self, embedded: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let hidden = self.bert.encode(embedded, attention_mask)?;
        self.head.forward(&mean_pool(&hidden, attention_mask)?)
    }

    /// Save the head (`classifier.weight`, `classifier.bias`) atomically.
    ///
    /// # Errors
    /// I/O errors.
    pub fn save_head(&self, path: impl AsRef<Path>) -> Result<()> {
        self.head.save(path)
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

/// What an [`ImageClassifier`]'s head sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The final layer norm's CLS token (`H` features).
    Cls,
    /// The CLS token beside the mean patch token (`2H`), as DINOv2's linear
    /// evaluation does.
    ClsAndMeanPatch,
}

impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pooling::Cls => "cls",
            Pooling::ClsAndMeanPatch => "cls-and-mean-patch",
        })
    }
}

impl std::str::FromStr for Pooling {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cls" => Ok(Pooling::Cls),
            "cls-and-mean-patch" => Ok(Pooling::ClsAndMeanPatch),
            _ => Err(format!("`{s}`: the pooling is `cls` or `cls-and-mean-patch`")),
        }
    }
}

impl Pooling {
    /// The head's input width for hidden size `h`.
    pub fn width(self, h: usize) -> usize {
        match self {
            Pooling::Cls => h,
            Pooling::ClsAndMeanPatch => 2 * h,
        }
    }
}

/// A ViT, a [`Pooling`] of its hidden states, and a linear head.
#[derive(Debug)]
pub struct ImageClassifier {
    vit: Vit,
    pooling: Pooling,
    head: Head,
}

impl ImageClassifier {
    /// A new head (see [`Head::new`]) on `vit`.
    ///
    /// # Errors
    /// candle's errors.
    pub fn new(vit: Vit, pooling: Pooling, classes: usize, seed: u64) -> Result<Self> {
        let head = Head::new(classes, pooling.width(vit.config().hidden_size), seed)?;
        Ok(ImageClassifier { vit, pooling, head })
    }

    /// A head from a file written by [`ImageClassifier::save_head`].
    ///
    /// # Errors
    /// As [`Head::load`].
    pub fn with_saved_head(vit: Vit, pooling: Pooling, path: impl AsRef<Path>) -> Result<Self> {
        let head = Head::load(path, pooling.width(vit.config().hidden_size))?;
        Ok(ImageClassifier { vit, pooling, head })
    }

    /// The encoder.
    pub fn vit(&self) -> &Vit {
        &self.vit
    }

    /// The pooling.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.head.classes()
    }

    /// Every trainable variable: the encoder's, then the head's.
    pub fn vars(&self) -> Vec<Var> {
        let mut v = self.vit.vars();
        v.extend(self.head.vars());
        v
    }

    /// Number of trainable parameters: the encoder's and the head's.
    pub fn num_trainable(&self) -> (usize, usize) {
        let enc = self.vit.vars().iter().map(|v| v.as_tensor().elem_count()).sum();
        (enc, self.head.num_params())
    }

    /// Logits (`batch × classes`) of normalised `pixels` (`batch × channels
    /// × height × width`).
    ///
    /// # Errors
    /// As [`Vit::forward`].
    pub fn logits(&self, pixels: &Tensor) -> Result<Tensor> {
        let hidden = self.vit.forward(pixels)?;
        let pooled = match self.pooling {
            Pooling::Cls => vit::cls(&hidden)?,
            Pooling::ClsAndMeanPatch => Tensor::cat(&[vit::cls(&hidden)?, vit::mean_patch(&hidden)?], 1)?,
        };
        self.head.forward(&pooled)
    }

    /// Save the head (`classifier.weight`, `classifier.bias`) atomically.
    ///
    /// # Errors
    /// I/O errors.
    pub fn save_head(&self, path: impl AsRef<Path>) -> Result<()> {
        self.head.save(path)
    }

    /// The adapters at their current values (see [`Classifier::adapters`]).
    ///
    /// # Errors
    /// As [`Classifier::adapters`].
    pub fn adapters(&self, template: &AdapterModel) -> Result<AdapterModel> {
        self.vit.adapters(template)
    }
}
