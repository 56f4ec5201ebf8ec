//! Models, each built from a [`VarPath`](crate::VarPath) with one table of
//! its adaptable linear paths: [`bert`] (an encoder), [`llama`] (a
//! Llama-family decoder, loaded from GGUF) and [`vit`] (a DINOv2-style
//! Vision Transformer). All implement [`Adaptable`].

use candle_core::{Module, Tensor, Var};
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

/// A mixed-adapter batch's routing: the adapters it draws from, and which
/// one each batch row uses (`None`: the frozen model alone). A layer's share
/// comes from each adapter's module of that layer's path; an adapter that
/// does not adapt a layer leaves its rows frozen there.
#[derive(Debug, Clone)]
pub struct AdapterMix<'a> {
    adapters: Vec<&'a AdapterModel>,
    routes: Vec<Option<usize>>,
}

impl<'a> AdapterMix<'a> {
    /// Route batch row `b` to `adapters[routes[b]]`.
    ///
    /// # Errors
    /// [`crate::Error::Config`] for a route past `adapters`.
    pub fn new(adapters: Vec<&'a AdapterModel>, routes: Vec<Option<usize>>) -> Result<Self> {
        if let Some((b, k)) = routes
            .iter()
            .enumerate()
            .find_map(|(b, r)| r.filter(|&k| k >= adapters.len()).map(|k| (b, k)))
        {
            return Err(crate::Error::Config(format!(
                "batch row {b} is routed to adapter {k} of {}",
                adapters.len()
            )));
        }
        Ok(AdapterMix { adapters, routes })
    }

    /// Each batch row's adapter.
    pub fn routes(&self) -> &[Option<usize>] {
        &self.routes
    }

    /// The adapters.
    pub fn adapters(&self) -> &[&'a AdapterModel] {
        &self.adapters
    }

    /// Every adapter's module at `path`, if it adapts it.
    pub(crate) fn layer(&self, path: &str) -> Vec<Option<&dyn wft_adapter::Adapter<f32>>> {
        self.adapters
            .iter()
            .map(|a| a.modules().get(path).map(wft_adapter::ModuleAdapter::as_adapter))
            .collect()
    }
}

/// A mixed-adapter pass's routing, as one layer sees it: the mix and each
/// input row's adapter (per batch row, or per packed token).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Routing<'a> {
    mix: &'a AdapterMix<'a>,
    routes: &'a [Option<usize>],
}

impl<'a> Routing<'a> {
    /// The mix's own routes, one per leading (batch) row of the input.
    pub(crate) fn by_row(mix: &'a AdapterMix<'a>) -> Self {
        Routing {
            mix,
            routes: mix.routes(),
        }
    }

    /// The mix with `routes` of its own (one per row of a packed input).
    pub(crate) fn with_routes(mix: &'a AdapterMix<'a>, routes: &'a [Option<usize>]) -> Self {
        Routing { mix, routes }
    }
}

/// `layer` (module `path`) on `x`: its own forward, or the mixed-adapter
/// forward when `routing` is given.
///
/// # Errors
/// The layer's errors.
pub(crate) fn project(layer: &AdaptedLinear, path: &str, x: &Tensor, routing: Option<Routing<'_>>) -> Result<Tensor> {
    match routing {
        None => Ok(layer.forward(x)?),
        Some(r) => layer.forward_mixed(x, &r.mix.layer(path), r.routes),
    }
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

    /// Hot-swap every adapted layer to `adapters`' module of the same path
    /// ([`AdaptedLinear::swap_adapter`]: bit for bit what loading the model
    /// with `adapters` gives, in `O(touched)` per WaveletFT layer). Take
    /// [`Adaptable::adapters`] first to keep the ones it held. Everything is
    /// checked before anything changes.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when `adapters` and the adapted layers do
    /// not name the same modules, [`crate::Error::Shape`] for a module of
    /// another shape or parameter count; the model is then unchanged.
    fn swap_adapters(&self, adapters: &AdapterModel) -> Result<()> {
        let linears = self.linears();
        let mut adapted = Vec::new();
        for (path, layer) in &linears {
            let Some(((out, inp), params)) = layer.adapter_size() else {
                continue;
            };
            let new = adapters.modules().get(path).ok_or_else(|| {
                crate::Error::Config(format!(
                    "the new adapters do not adapt `{path}`, which this model adapts"
                ))
            })?;
            let n = new.as_adapter();
            crate::error::check_shape(
                &format!("adapter of `{path}`"),
                &[n.shape().0, n.shape().1],
                &[out, inp],
            )?;
            crate::error::check_shape(&format!("parameters of `{path}`"), &[n.num_params()], &[params])?;
            adapted.push((path, *layer, new));
        }
        if let Some(m) = adapters
            .modules()
            .keys()
            .find(|m| !adapted.iter().any(|(p, _, _)| p == m))
        {
            return Err(crate::Error::Config(format!(
                "the new adapters adapt `{m}`, which is not an adapted layer of this model"
            )));
        }
        for (_, layer, new) in adapted {
            layer.swap_adapter(new.clone())?;
        }
        Ok(())
    }
}
