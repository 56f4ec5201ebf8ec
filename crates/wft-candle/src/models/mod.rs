//! Models, each built from a [`VarPath`](crate::VarPath) with one table of
//! its adaptable linear paths: [`bert`] (an encoder), [`llama`] (a
//! Llama-family decoder, loaded from GGUF) and [`vit`] (a DINOv2-style
//! Vision Transformer). All implement [`Adaptable`].

use candle_core::Var;
use wft_adapter::AdapterModel;

use crate::error::Result;
use crate::linear::AdaptedLinear;

mod attention;
pub mod bert;
pub mod llama;
mod mlp;
mod ops;
pub mod vit;
mod vmath;

#[cfg(test)]
mod test_util;

pub(crate) use ops::slice;

/// Refuse adapters on modules the model does not have: every module of
/// `tuning`'s adapter model must be one of `known`; `what` names the model
/// in the error ("encoder", "decoder").
pub(crate) fn check_adapted_modules(tuning: crate::Tuning<'_>, known: &[String], what: &str) -> Result<()> {
    if let crate::Tuning::Adapters(model) = tuning
        && let Some(m) = model.modules().keys().find(|m| !known.contains(m))
    {
        return Err(crate::Error::Config(format!(
            "the adapter adapts `{m}`, which this {what} does not have"
        )));
    }
    Ok(())
}

/// What every model here shares: the variables it trains and its
/// adaptable linear layers by module path.
pub trait Adaptable {
    /// The trainable variables with the module or tensor each belongs to,
    /// in creation order.
    fn named_vars(&self) -> &[(String, Var)];

    /// Every adaptable linear layer by module path, in the model's order.
    fn linears(&self) -> Vec<(String, &AdaptedLinear)>;

    /// The trainable variables.
    fn vars(&self) -> Vec<Var> {
        self.named_vars().iter().map(|(_, v)| v.clone()).collect()
    }

    /// The adapters at their current values, as an [`AdapterModel`] with
    /// `template`'s config (the model was built with it); save it with
    /// [`AdapterModel::save`] for a PEFT-compatible folder.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when `template` names a module the model did
    /// not adapt.
    fn adapters(&self, template: &AdapterModel) -> Result<AdapterModel> {
        crate::linear::current_adapters(template, &self.linears())
    }
}
