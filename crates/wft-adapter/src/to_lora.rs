//! Export to LoRA, for engines that speak only LoRA (vLLM, llama.cpp,
//! mistral.rs, candle-lora): each module's ΔW (`out × in`, the
//! transformers layout) truncated by its singular value decomposition.
//!
//! With `ΔW = U Σ Vᵀ` (singular values `σ₁ ≥ σ₂ ≥ …`), rank `r` keeps
//! `B = U_r Σ_r` (`out × r`) and `A = V_rᵀ` (`r × in`) with `lora_alpha = r`
//! (scale 1), as PEFT's SVD combination of LoRA adapters splits the factors.
//! By Eckart–Young this is the best rank-`r` approximation in the Frobenius
//! norm, with error `√(Σ_{i>r} σᵢ²)`. The SVD runs in `f64` (`faer`).

use ndarray::{Array2, ArrayView2};

use crate::combine::set_lora_ranks;
use crate::config::MethodConfig;
use crate::model::{AdapterModel, ModuleAdapter};
use crate::{Error, Lora, LoraConfig, Result};

/// How many singular triplets each module keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoraRank {
    /// This rank for every module (at most `min(out, in)`).
    Rank(usize),
    /// The smallest rank that keeps this fraction of `‖ΔW‖_F²` (in `(0, 1]`).
    Energy(f64),
}

/// One module's truncation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Truncation {
    /// The rank kept.
    pub rank: usize,
    /// `‖ΔW − B·A‖_F / ‖ΔW‖_F` of the factors (in `f32`, as stored).
    pub error: f64,
    /// The Eckart–Young optimum for that rank, `√(Σ_{i>r} σᵢ²) / ‖ΔW‖_F`.
    pub optimal: f64,
    /// `‖ΔW‖_F`.
    pub norm: f64,
}

/// What [`AdapterModel::to_lora`] made.
#[derive(Debug, Clone)]
pub struct LoraExport {
    /// The LoRA adapter (save it with [`AdapterModel::save`]).
    pub adapter: AdapterModel,
    /// Per module path, its truncation.
    pub modules: Vec<(String, Truncation)>,
}

/// The rank-`r` factors `(B, A)` of `delta` (`out × in`) and how well they fit.
///
/// # Errors
/// [`Error::Invalid`] for rank 0, an energy outside `(0, 1]`, an empty or
/// non-finite `delta`, or an SVD that does not converge.
pub fn lora_factors(delta: ArrayView2<'_, f32>, choice: LoraRank) -> Result<(Array2<f32>, Array2<f32>, Truncation)> {
    let (out, inp) = delta.dim();
    let full = out.min(inp);
    if full == 0 {
        return Err(Error::invalid("ΔW", format!("an empty {out}×{inp} matrix")));
    }
    if let Some(i) = delta.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: "ΔW".into(),
            index: i,
        });
    }
    match choice {
        LoraRank::Rank(0) => return Err(Error::invalid("rank", "0: a LoRA needs rank 1 or more")),
        LoraRank::Energy(f) if !(f > 0.0 && f <= 1.0) => {
            return Err(Error::invalid("energy", format!("{f} is not in (0, 1]")));
        }
        _ => {}
    }
    let m = faer::Mat::<f64>::from_fn(out, inp, |i, j| f64::from(delta[[i, j]]));
    let svd = m
        .thin_svd()
        .map_err(|e| Error::invalid("ΔW", format!("the SVD did not converge: {e:?}")))?;
    let s: Vec<f64> = (0..full).map(|k| svd.S().column_vector()[k]).collect();
    let total: f64 = s.iter().map(|v| v * v).sum();
    let rank = match choice {
        LoraRank::Rank(r) => r.min(full),
        LoraRank::Energy(f) => {
            let mut kept = 0.0;
            let mut r = full;
            for (k, v) in s.iter().enumerate() {
                kept += v * v;
                if kept >= f * total {
                    r = k + 1;
                    break;
                }
            }
            r.max(1)
        }
    };
    let (u, v) = (svd.U(), svd.V());
    let b = Array2::from_shape_fn((out, rank), |(i, k)| (u[(i, k)] * s[k]) as f32);
    let a = Array2::from_shape_fn((rank, inp), |(k, j)| v[(j, k)] as f32);
    let norm = total.sqrt();
    let rel = |x: f64| if norm > 0.0 { x / norm } else { 0.0 };
    // `+ 0.0`: an empty sum is −0.0.
    let tail: f64 = s[rank..].iter().map(|v| v * v).sum::<f64>() + 0.0;
    let approx = b.mapv(f64::from).dot(&a.mapv(f64::from));
    let residual: f64 = approx
        .iter()
        .zip(delta.iter())
        .map(|(x, &d)| (x - f64::from(d)).powi(2))
        .sum();
    Ok((
        b,
        a,
        Truncation {
            rank,
            error: rel(residual.sqrt()),
            optimal: rel(tail.sqrt()),
            norm,
        },
    ))
}

impl AdapterModel {
    /// This adapter as a LoRA adapter of the same modules: each module's
    /// ΔW truncated by SVD to the rank `choice` gives. The config keeps the
    /// targets, orientation and unknown fields; ranks that differ between
    /// modules go to `rank_pattern`/`alpha_pattern`.
    ///
    /// # Errors
    /// As [`lora_factors`], naming the module.
    pub fn to_lora(&self, choice: LoraRank) -> Result<LoraExport> {
        let mut adapter = self.clone();
        let mut report = Vec::new();
        for (m, module) in adapter.modules.iter_mut() {
            let delta = module.as_adapter().delta_weight();
            let (b, a, t) = lora_factors(delta.view(), choice).map_err(|e| match e {
                Error::Invalid { what, reason } => Error::invalid(format!("module {m:?}: {what}"), reason),
                e => e,
            })?;
            let config = LoraConfig {
                r: t.rank,
                lora_alpha: t.rank as f64,
                use_rslora: false,
                seed: 0,
            };
            *module = ModuleAdapter::from(Lora::from_factors(&config, a, b)?);
            report.push((m.clone(), t));
        }
        adapter.config.n_frequency_pattern.clear();
        adapter.config.proportional_parameters = false;
        adapter.config.method = MethodConfig::Lora(LoraConfig::default());
        let ranks: Vec<(String, usize)> = report.iter().map(|(m, t)| (m.clone(), t.rank)).collect();
        set_lora_ranks(&mut adapter.config, LoraConfig::default(), &ranks);
        Ok(LoraExport {
            adapter,
            modules: report,
        })
    }
}
