//! Training losses of the decoder, and their gradients with the blocks'
//! activations kept or recomputed.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::head_loss::projected_cross_entropy;
use super::{Cache, Llama};
use crate::error::{Error, Result};
use crate::models::ops::{cross_entropy_rows, rms_norm};

/// How the backward pass gets the blocks' activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activations {
    /// Kept from the forward pass, one graph over the whole model: the
    /// fastest, and what memory grows with (every block's activations of
    /// the batch at once).
    #[default]
    Kept,
    /// Recomputed block by block in the backward pass (activation
    /// checkpointing): only each block's input is kept, so the peak holds
    /// one block's activations; it costs one more forward pass of the
    /// blocks. The gradients are those of [`Activations::Kept`] up to
    /// `f32` rounding.
    Recomputed,
}

impl Llama {
    /// The mean next-token cross-entropy over the positions `weights`
    /// (`batch × len`, 0 or 1) marks, from final hidden states (`batch × len
    /// × H`) and `targets` (`batch × len`, `u32`): the output projection runs
    /// on those positions only, so a batch whose loss covers few tokens
    /// (completions after long prompts) pays for few vocabulary-wide rows.
    ///
    /// # Errors
    /// [`Error::Config`] when no position is marked; candle's errors for
    /// mismatched shapes.
    pub fn selected_loss(&self, hidden: &Tensor, targets: &Tensor, weights: &Tensor) -> Result<Tensor> {
        let (b, t, h) = hidden.dims3()?;
        let w = weights.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let rows: Vec<u32> = w
            .iter()
            .enumerate()
            .filter(|(_, x)| **x != 0.0)
            .map(|(i, _)| i as u32)
            .collect();
        if rows.is_empty() {
            return Err(Error::Config("no completion token to train on".into()));
        }
        let n = rows.len();
        let idx = Tensor::from_vec(rows, n, &Device::Cpu)?;
        let picked = hidden.reshape((b * t, h))?.index_select(&idx, 0)?;
        let targets = targets.flatten_all()?.index_select(&idx, 0)?;
        // A frozen output projection runs fused with the loss, slab by slab
        // (no `rows × vocab` logits); a trained one through its layer.
        let nll = match self.lm_head.frozen_dense() {
            Some(w) => projected_cross_entropy(&picked, w, &targets)?,
            None => cross_entropy_rows(&self.logits(&picked)?, &targets)?,
        };
        Ok((nll.sum_all()? * (1.0 / n as f64))?)
    }
}

/// The mean cross-entropy of next-token predictions where `weights`
/// (`batch × len`, 1 to count a target, 0 to skip it) says, from `logits`
/// (`batch × len × vocab`) and `targets` (`batch × len`, `u32`: the token
/// each position should predict).
///
/// # Errors
/// [`Error::Config`] when nothing is counted; candle's errors for mismatched
/// shapes.
pub fn masked_cross_entropy(logits: &Tensor, targets: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    let nll = cross_entropy_rows(&logits.reshape((b * t, v))?, &targets.reshape(b * t)?)?;
    let w = weights.to_dtype(DType::F32)?.reshape(b * t)?;
    let count = w.sum_all()?.to_scalar::<f32>()?;
    if count <= 0.0 {
        return Err(Error::Config("no completion token to train on".into()));
    }
    Ok(((nll * w)?.sum_all()? * (1.0 / f64::from(count)))?)
}

impl std::fmt::Display for Activations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Activations::Kept => "kept",
            Activations::Recomputed => "recomputed",
        })
    }
}

impl std::str::FromStr for Activations {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "kept" => Ok(Activations::Kept),
            "recomputed" => Ok(Activations::Recomputed),
            _ => Err(format!("`{s}`: the activations are `kept` or `recomputed`")),
        }
    }
}

impl Llama {
    /// The next-token loss of a batch (as [`Llama::selected_loss`] after
    /// [`Llama::hidden`] with the key `mask`) and the gradients of every
    /// variable of the model, the blocks' activations kept or recomputed as
    /// `activations` says.
    ///
    /// # Errors
    /// As [`Llama::hidden`] and [`Llama::selected_loss`]; candle's errors
    /// from the backward pass.
    pub fn loss_and_grads(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        targets: &Tensor,
        weights: &Tensor,
        activations: Activations,
    ) -> Result<(f32, GradStore)> {
        if activations == Activations::Kept {
            let hidden = self.hidden(ids, &mut Cache::new(), Some(mask))?;
            let loss = self.selected_loss(&hidden, targets, weights)?;
            return Ok((loss.to_scalar::<f32>()?, loss.backward()?));
        }
        let embedded = self.embed(ids)?;
        let pass = self.pass(&embedded, 0, Some(mask), None, None)?;
        // Forward: keep each block's input only.
        let mut inputs = Vec::with_capacity(self.blocks.len());
        let mut x = embedded.detach();
        for block in &self.blocks {
            let next = self.block(block, &x, &pass, None)?.detach();
            inputs.push(x);
            x = next;
        }
        // The head, then each block again with its graph, last to first,
        // each backward pass seeded with the gradient to the block above.
        let top = Var::from_tensor(&x)?;
        let hidden = rms_norm(top.as_tensor(), &self.norm, self.config.rms_norm_eps)?;
        let loss = self.selected_loss(&hidden, targets, weights)?;
        let value = loss.to_scalar::<f32>()?;
        let mut grads = loss.backward()?;
        // A gradient candle returns may still carry the graph of the ops
        // that made it (the norm's backward multiplies by its weight):
        // detached, so that seeding the next pass with it adds nothing.
        let mut g = grads.remove(top.as_tensor()).ok_or_else(no_gradient)?.detach();
        for (block, input) in self.blocks.iter().zip(inputs).rev() {
            let input = Var::from_tensor(&input)?;
            let out = self.block(block, input.as_tensor(), &pass, None)?;
            let mut seg = (out * &g)?.sum_all()?.backward()?;
            g = seg.remove(input.as_tensor()).ok_or_else(no_gradient)?.detach();
            self.accumulate(&mut grads, &seg)?;
        }
        // Under full fine-tuning the embedding is a variable too.
        if embedded.track_op() {
            let seg = (embedded * &g)?.sum_all()?.backward()?;
            self.accumulate(&mut grads, &seg)?;
        }
        Ok((value, grads))
    }

    /// Add the model's variables' gradients in `seg` to `grads`, once per
    /// variable (several paths may share one, as a tied head does).
    fn accumulate(&self, grads: &mut GradStore, seg: &GradStore) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for (_, var) in &self.vars {
            if !seen.insert(var.as_tensor().id()) {
                continue;
            }
            if let Some(add) = seg.get(var.as_tensor()) {
                let sum = match grads.remove(var.as_tensor()) {
                    Some(old) => (old + add)?,
                    None => add.clone(),
                };
                grads.insert(var.as_tensor(), sum);
            }
        }
        Ok(())
    }
}

fn no_gradient() -> Error {
    Error::Config("the backward pass reached no block input".into())
}
