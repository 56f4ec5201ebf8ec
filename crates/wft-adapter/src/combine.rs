//! Adapter arithmetic: weighted sums, TIES and DARE over several adapters
//! of one base, in coefficient space.
//!
//! Every method here works on each module's *task vector*: the adapter's
//! coefficients scaled by its own α, so that adapters of different α add
//! up to the ΔW they stand for. The definitions are PEFT's
//! (`peft.utils.merge_utils`, used by `add_weighted_adapter`), after the
//! papers:
//!
//! * **linear**: `Σ_i w_i·τ_i`.
//! * **TIES** (Yadav et al., *TIES-Merging: Resolving Interference When
//!   Merging Models*, NeurIPS 2023): *trim* each `τ_i` to its
//!   `⌊density·len⌋` largest magnitudes (ties to the lower index), *elect*
//!   the sign of each position as the sign of the sum of the trimmed,
//!   unweighted `τ_i` (`+` for a zero sum), and take the *disjoint mean* of
//!   the weighted `w_i·τ_i`: the mean over the adapters whose value there is
//!   non-zero and has the elected sign (0 where none has). PEFT elects
//!   before weighting, so a weight never flips an elected sign; the tests
//!   check this against PEFT's own `ties` (`scripts/make_combine_references.py`).
//! * **DARE** (Yu et al., *Language Models are Super Mario: Absorbing
//!   Abilities from Homologous Models as a Free Lunch*, ICML 2024): *drop*
//!   each value with probability `1 − density` and *rescale* the kept ones
//!   by `1/density`, then sum linearly ([`CombineMethod::Dare`], PEFT's
//!   `dare_linear`) or by TIES' sign election and disjoint mean
//!   ([`CombineMethod::DareTies`], `dare_ties`). The drops come from
//!   MT19937 seeded with `seed` (PEFT draws `torch.bernoulli` from torch's
//!   stream, so only the distribution matches).
//!
//! Trimming and dropping work per adapter and per module, over that
//! adapter's own coefficients, as PEFT prunes per tensor.
//!
//! WaveletFT adapters whose locations differ (other seeds or layouts of the
//! same transform) combine over the union of their supports; the result then
//! stores its locations ([`Strategy::Explicit`], the native folder).
//! FourierFT adapters must share their frequencies. LoRA adapters combine
//! linearly by concatenating their factors, which is exact (rank `Σ r_i`).

use std::collections::HashMap;

use dwt_core::Location;
use ndarray::{Array2, Axis, concatenate};

use crate::config::MethodConfig;
use crate::model::{AdapterModel, ModuleAdapter};
use crate::rng::Mt19937;
use crate::{Adapter, Error, FourierFt, Lora, LoraConfig, Result, Strategy, WaveletFt, WaveletFtConfig};

/// How [`AdapterModel::combine`] merges the task vectors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CombineMethod {
    /// The weighted sum.
    Linear,
    /// TIES: trim to `density` of each adapter's magnitudes, elect signs,
    /// disjoint mean.
    Ties {
        /// The fraction of each adapter's coefficients kept, in `(0, 1]`.
        density: f64,
    },
    /// DARE, summed linearly (PEFT's `dare_linear`).
    Dare {
        /// The probability of keeping each coefficient, in `(0, 1]`.
        density: f64,
        /// Seed of the drops.
        seed: u64,
    },
    /// DARE's drops with TIES' sign election and disjoint mean (PEFT's `dare_ties`).
    DareTies {
        /// The probability of keeping each coefficient, in `(0, 1]`.
        density: f64,
        /// Seed of the drops.
        seed: u64,
    },
}

impl CombineMethod {
    fn density(self) -> Option<f64> {
        match self {
            CombineMethod::Linear => None,
            CombineMethod::Ties { density }
            | CombineMethod::Dare { density, .. }
            | CombineMethod::DareTies { density, .. } => Some(density),
        }
    }

    /// Whether signs are elected (TIES and DARE-TIES).
    fn elects_signs(self) -> bool {
        matches!(self, CombineMethod::Ties { .. } | CombineMethod::DareTies { .. })
    }
}

/// One input of [`AdapterModel::combine`]: an adapter and its weight.
#[derive(Debug, Clone, Copy)]
pub struct Weighted<'a> {
    /// The adapter.
    pub model: &'a AdapterModel,
    /// Its weight `w_i`.
    pub weight: f64,
}

impl AdapterModel {
    /// Combine adapters of one base into one adapter ([module docs](crate::CombineMethod)
    /// give the definitions). The result has the first adapter's config and
    /// α; for [`CombineMethod::Linear`] its ΔW is `Σ_i w_i·ΔW_i` to float
    /// rounding.
    ///
    /// # Errors
    /// * [`Error::Invalid`] for no adapters, a weight that is not finite,
    ///   or a density outside `(0, 1]`;
    /// * [`Error::Incompatible`] when the adapters disagree: method,
    ///   modules, shapes, layouts, orientation, the wavelet transform,
    ///   FourierFT frequencies;
    /// * [`Error::Unsupported`] for TIES or DARE on LoRA (only the linear
    ///   sum has an exact LoRA form).
    pub fn combine(inputs: &[Weighted<'_>], method: CombineMethod) -> Result<AdapterModel> {
        let first = inputs
            .first()
            .ok_or_else(|| Error::invalid("combine", "no adapters to combine"))?;
        for (i, w) in inputs.iter().enumerate() {
            if !w.weight.is_finite() {
                return Err(Error::invalid(
                    "combine",
                    format!("adapter {i}'s weight {} is not finite", w.weight),
                ));
            }
        }
        if let Some(d) = method.density().filter(|d| !(*d > 0.0 && *d <= 1.0)) {
            return Err(Error::invalid("density", format!("{d} is not in (0, 1]")));
        }
        check_models(inputs)?;
        let mut drops = match method {
            CombineMethod::Dare { seed, .. } | CombineMethod::DareTies { seed, .. } => Some(Mt19937::new(seed)),
            _ => None,
        };
        // Locations that differ anywhere make the result store its own.
        let explicit = first.model.modules.iter().any(|(m, a)| {
            as_waveletft(a).is_some_and(|a| {
                inputs
                    .iter()
                    .filter_map(|w| as_waveletft(&w.model.modules[m]))
                    .any(|w| w.locations() != a.locations())
            })
        });
        let strategy = match &first.model.config.method {
            MethodConfig::WaveletFt(_) if explicit => Strategy::Explicit,
            MethodConfig::WaveletFt(c) => c.strategy,
            _ => Strategy::Uniform,
        };
        let mut out = first.model.clone();
        for (m, adapter) in out.modules.iter_mut() {
            let parts: Vec<&ModuleAdapter> = inputs.iter().map(|w| &w.model.modules[m]).collect();
            let weights: Vec<f64> = inputs.iter().map(|w| w.weight).collect();
            match adapter {
                ModuleAdapter::WaveletFt(target) => {
                    let ws: Vec<&WaveletFt<f32>> = parts.iter().filter_map(|p| as_waveletft(p)).collect();
                    **target = combine_waveletft(m, &ws, &weights, method, strategy, drops.as_mut())?;
                }
                ModuleAdapter::FourierFt(target) => {
                    let fs: Vec<&FourierFt<f32>> = parts.iter().filter_map(|p| as_fourierft(p)).collect();
                    **target = combine_fourierft(m, &fs, &weights, method, drops.as_mut())?;
                }
                ModuleAdapter::Lora(target) => {
                    if method != CombineMethod::Linear {
                        return Err(Error::Unsupported {
                            path: "combine".into(),
                            option: format!("{method:?}"),
                            reason: "TIES and DARE are defined on coefficients; LoRA factors combine linearly only (--method linear)".into(),
                        });
                    }
                    let ls: Vec<&Lora<f32>> = parts.iter().filter_map(|p| as_lora(p)).collect();
                    **target = concat_lora(&ls, &weights)?;
                }
            }
        }
        if let MethodConfig::WaveletFt(c) = &mut out.config.method {
            c.strategy = strategy;
        }
        if let MethodConfig::Lora(c) = &out.config.method {
            let ranks: Vec<(String, usize)> = out
                .modules
                .iter()
                .filter_map(|(m, a)| as_lora(a).map(|l| (m.clone(), l.rank())))
                .collect();
            let c = c.clone();
            set_lora_ranks(&mut out.config, c, &ranks);
        }
        Ok(out)
    }
}

fn as_waveletft(a: &ModuleAdapter) -> Option<&WaveletFt<f32>> {
    match a {
        ModuleAdapter::WaveletFt(w) => Some(w),
        _ => None,
    }
}

fn as_fourierft(a: &ModuleAdapter) -> Option<&FourierFt<f32>> {
    match a {
        ModuleAdapter::FourierFt(f) => Some(f),
        _ => None,
    }
}

fn as_lora(a: &ModuleAdapter) -> Option<&Lora<f32>> {
    match a {
        ModuleAdapter::Lora(l) => Some(l),
        _ => None,
    }
}

/// The checks across whole adapters: one method, one orientation, the same
/// modules with the same shapes and layouts.
fn check_models(inputs: &[Weighted<'_>]) -> Result<()> {
    let first = inputs[0].model;
    for (i, w) in inputs.iter().enumerate().skip(1) {
        let other = w.model;
        let bad = |module: Option<&str>, reason: String| Error::Incompatible {
            adapter: i,
            module: module.map(str::to_string),
            reason,
        };
        if other.config.method.method() != first.config.method.method() {
            return Err(bad(
                None,
                format!(
                    "it is {}, adapter 0 is {}",
                    other.config.method.method(),
                    first.config.method.method()
                ),
            ));
        }
        if other.config.orientation != first.config.orientation {
            return Err(bad(None, "fan_in_fan_out differs from adapter 0's".into()));
        }
        if let Some(m) = first.modules.keys().find(|m| !other.modules.contains_key(*m)) {
            return Err(bad(
                Some(m),
                "adapter 0 adapts this module and this adapter does not".into(),
            ));
        }
        if let Some(m) = other.modules.keys().find(|m| !first.modules.contains_key(*m)) {
            return Err(bad(Some(m), "this adapter adapts a module adapter 0 does not".into()));
        }
        for (m, a) in &first.modules {
            let b = &other.modules[m];
            if a.as_adapter().shape() != b.as_adapter().shape() {
                return Err(bad(
                    Some(m),
                    format!(
                        "shape {:?}, adapter 0's is {:?}",
                        b.as_adapter().shape(),
                        a.as_adapter().shape()
                    ),
                ));
            }
            if first.layout(m) != other.layout(m) {
                return Err(bad(Some(m), "linear in one adapter, a convolution in the other".into()));
            }
        }
    }
    Ok(())
}

/// One adapter's task vector `α·c` of one module, trimmed or dropped as
/// `method` says (not yet weighted: signs are elected before weighting).
fn prepare(values: &[f32], alpha: f64, method: CombineMethod, drops: Option<&mut Mt19937>) -> Vec<f64> {
    let mut tau: Vec<f64> = values.iter().map(|&v| alpha * f64::from(v)).collect();
    match method {
        CombineMethod::Linear => {}
        CombineMethod::Ties { density } => trim(&mut tau, density),
        CombineMethod::Dare { density, .. } | CombineMethod::DareTies { density, .. } => {
            if let Some(g) = drops {
                drop_and_rescale(&mut tau, density, g);
            }
        }
    }
    tau
}

/// TIES' trim: keep the `⌊density·len⌋` largest magnitudes (ties to the
/// lower index), zero the rest.
pub(crate) fn trim(tau: &mut [f64], density: f64) {
    let keep = (density * tau.len() as f64).floor() as usize;
    let mut order: Vec<usize> = (0..tau.len()).collect();
    // Stable: equal magnitudes keep index order.
    order.sort_by(|&a, &b| tau[b].abs().total_cmp(&tau[a].abs()));
    for &i in &order[keep..] {
        tau[i] = 0.0;
    }
}

/// DARE's drop: keep each value with probability `density`, scaled by
/// `1/density`.
pub(crate) fn drop_and_rescale(tau: &mut [f64], density: f64, g: &mut Mt19937) {
    for v in tau.iter_mut() {
        *v = if g.next_f64() < density { *v / density } else { 0.0 };
    }
}

/// Sum the prepared task vectors (rows of `tau`, one per adapter, over the
/// same positions) with `weights`: linearly, `Σ w_i·τ_i`, or as PEFT's TIES
/// does: the sign of each position elected from the unweighted `Σ τ_i`
/// (`+` for a zero sum), then the mean of `w_i·τ_i` over the adapters whose
/// `τ_i` there is non-zero and of that sign (0 where none is).
pub(crate) fn merge_vectors(tau: &[Vec<f64>], weights: &[f64], elect_signs: bool) -> Vec<f64> {
    let len = tau.first().map_or(0, Vec::len);
    (0..len)
        .map(|k| {
            let weighted = tau.iter().zip(weights).map(|(t, w)| (t[k], w * t[k]));
            if !elect_signs {
                return weighted.map(|(_, v)| v).sum();
            }
            let sign = if tau.iter().map(|t| t[k]).sum::<f64>() >= 0.0 {
                1.0
            } else {
                -1.0
            };
            let (sum, n) = weighted
                .filter(|(t, _)| *t != 0.0 && t.signum() == sign)
                .fold((0.0, 0usize), |(s, n), (_, v)| (s + v, n + 1));
            if n == 0 { 0.0 } else { sum / n as f64 }
        })
        .collect()
}

/// WaveletFT: over adapter 0's locations when every adapter has the same
/// ones, else over their union (first appearance order); `strategy` is the
/// combined config's.
fn combine_waveletft(
    module: &str,
    ws: &[&WaveletFt<f32>],
    weights: &[f64],
    method: CombineMethod,
    strategy: Strategy,
    mut drops: Option<&mut Mt19937>,
) -> Result<WaveletFt<f32>> {
    let c0 = ws[0].config();
    for (i, w) in ws.iter().enumerate().skip(1) {
        let c = w.config();
        let same = c.wavelet == c0.wavelet && c.level == c0.level && c.mode == c0.mode && c.layout == c0.layout;
        if !same {
            return Err(Error::Incompatible {
                adapter: i,
                module: Some(module.to_string()),
                reason: format!(
                    "its transform ({}, level {}, {:?}, {:?} layout) is not adapter 0's ({}, level {}, {:?}, {:?})",
                    c.wavelet, c.level, c.mode, c.layout, c0.wavelet, c0.level, c0.mode, c0.layout
                ),
            });
        }
    }
    let shared = ws.iter().all(|w| w.locations() == ws[0].locations());
    let mut union: Vec<Location> = ws[0].locations().to_vec();
    let mut slot: HashMap<Location, usize> = union.iter().enumerate().map(|(k, &l)| (l, k)).collect();
    if !shared {
        for w in &ws[1..] {
            for &l in w.locations() {
                slot.entry(l).or_insert_with(|| {
                    union.push(l);
                    union.len() - 1
                });
            }
        }
    }
    let tau: Vec<Vec<f64>> = ws
        .iter()
        .map(|w| {
            let t = prepare(w.params(), w.config().scaling, method, drops.as_deref_mut());
            let mut row = vec![0.0; union.len()];
            for (l, v) in w.locations().iter().zip(t) {
                row[slot[l]] += v;
            }
            row
        })
        .collect();
    let merged = merge_vectors(&tau, weights, method.elects_signs());
    let alpha = c0.scaling;
    let coeffs: Vec<f32> = merged.iter().map(|v| (v / alpha) as f32).collect();
    let config = WaveletFtConfig {
        n_frequency: union.len(),
        strategy,
        ..c0.clone()
    };
    WaveletFt::build(config, ws[0].geometry().clone(), union, coeffs)
}

/// FourierFT: entry by entry, when every adapter has adapter 0's frequencies.
fn combine_fourierft(
    module: &str,
    fs: &[&FourierFt<f32>],
    weights: &[f64],
    method: CombineMethod,
    mut drops: Option<&mut Mt19937>,
) -> Result<FourierFt<f32>> {
    if let Some(i) = fs.iter().position(|f| f.frequencies() != fs[0].frequencies()) {
        return Err(Error::Incompatible {
            adapter: i,
            module: Some(module.to_string()),
            reason: "its FourierFT frequencies are not adapter 0's (another random_loc_seed or n_frequency); FourierFT folders cannot store a union of frequencies".into(),
        });
    }
    let tau: Vec<Vec<f64>> = fs
        .iter()
        .map(|f| prepare(f.params(), f.scaling(), method, drops.as_deref_mut()))
        .collect();
    let merged = merge_vectors(&tau, weights, method.elects_signs());
    let alpha = fs[0].scaling();
    let mut out = fs[0].clone();
    for (p, v) in out.params_mut().iter_mut().zip(merged) {
        *p = (v / alpha) as f32;
    }
    Ok(out)
}

/// LoRA, linearly and exactly: `A = [w_i·s_i·A_i]` stacked, `B = [B_i]`
/// side by side, scale 1.
fn concat_lora(ls: &[&Lora<f32>], weights: &[f64]) -> Result<Lora<f32>> {
    let a: Vec<Array2<f32>> = ls
        .iter()
        .zip(weights)
        .map(|(l, &w)| l.a().mapv(|v| (f64::from(v) * w * f64::from(l.s())) as f32))
        .collect();
    let b: Vec<_> = ls.iter().map(|l| l.b()).collect();
    let a_views: Vec<_> = a.iter().map(|a| a.view()).collect();
    let a = concatenate(Axis(0), &a_views).map_err(|e| Error::invalid("LoRA factors", e.to_string()))?;
    let b = concatenate(Axis(1), &b).map_err(|e| Error::invalid("LoRA factors", e.to_string()))?;
    let r = a.nrows();
    let config = LoraConfig {
        r,
        lora_alpha: r as f64,
        use_rslora: false,
        seed: 0,
    };
    Lora::from_factors(&config, a, b)
}

/// A combined LoRA's config: the most common rank as `r` (with `α = r`, so
/// scale 1), and each other module's rank and α in the patterns, keyed by
/// the module's path (which matches it exactly).
pub(crate) fn set_lora_ranks(config: &mut crate::AdapterConfig, base: LoraConfig, ranks: &[(String, usize)]) {
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for (_, r) in ranks {
        *counts.entry(*r).or_default() += 1;
    }
    let r = counts
        .iter()
        .max_by_key(|(r, n)| (**n, std::cmp::Reverse(**r)))
        .map_or(base.r, |(r, _)| *r);
    config.method = MethodConfig::Lora(LoraConfig {
        r,
        lora_alpha: r as f64,
        use_rslora: false,
        seed: base.seed,
    });
    config.rank_pattern.clear();
    config.alpha_pattern.clear();
    for (m, rm) in ranks.iter().filter(|(_, rm)| *rm != r) {
        config.rank_pattern.insert(m.clone(), *rm);
        config.alpha_pattern.insert(m.clone(), *rm as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-12, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn trim_keeps_the_largest_magnitudes_ties_to_the_lower_index() {
        // ⌊0.5·5⌋ = 2 kept: −0.9 and the first of the two 0.4s.
        let mut t = vec![0.4, -0.9, 0.1, -0.4, 0.0];
        trim(&mut t, 0.5);
        assert_eq!(t, vec![0.4, -0.9, 0.0, 0.0, 0.0]);
        // density 1 keeps everything; below 1/len keeps nothing.
        let mut t = vec![1.0, -2.0];
        trim(&mut t, 1.0);
        assert_eq!(t, vec![1.0, -2.0]);
        trim(&mut t, 0.4);
        assert_eq!(t, vec![0.0, 0.0]);
    }

    /// TIES worked by hand. Trimmed to half: A = [0.5, −0.2, 0, 0] (0.1 and
    /// 0.05 dropped), B = [0, −0.4, 0.6, 0] (−0.3 and 0.01 dropped). The
    /// unweighted sums [0.5, −0.6, 0.6, 0] elect signs [+, −, +, +]. With
    /// weights 1 and 2 (B = [0, −0.8, 1.2, 0]) the disjoint means are 0.5
    /// (A alone); (−0.2 − 0.8)/2 = −0.5; 1.2 (B alone); 0 (nobody).
    #[test]
    fn ties_by_hand() {
        let mut a = vec![0.5, -0.2, 0.1, 0.05];
        let mut b = vec![-0.3, -0.4, 0.6, 0.01];
        trim(&mut a, 0.5);
        trim(&mut b, 0.5);
        close(&merge_vectors(&[a, b], &[1.0, 2.0], true), &[0.5, -0.5, 1.2, 0.0]);
    }

    /// Sign election keeps only the agreeing side: +0.3 and +0.1 against
    /// −0.5 sum to −0.1, so the mean is over −0.5 alone; a zero sum elects +.
    /// Signs are elected before weighting (as PEFT's `ties`): weights
    /// [1, 1, 0.1] leave −0.1·0.5 the only agreeing value, though the
    /// weighted sum would be positive.
    #[test]
    fn disjoint_mean_by_hand() {
        let tau = vec![vec![0.3, 0.2], vec![0.1, -0.2], vec![-0.5, 0.0]];
        close(&merge_vectors(&tau, &[1.0; 3], true), &[-0.5, 0.2]);
        close(&merge_vectors(&tau, &[1.0; 3], false), &[-0.1, 0.0]);
        close(&merge_vectors(&tau, &[1.0, 1.0, 0.1], true), &[-0.05, 0.2]);
    }

    /// DARE keeps each value or zeroes it; kept ones are scaled by 1/density,
    /// about `density` of them are kept, the draws are the seed's, and
    /// density 1 keeps everything unchanged.
    #[test]
    fn dare_drops_and_rescales() {
        let values: Vec<f64> = (0..20_000).map(|i| 1.0 + (i % 7) as f64).collect();
        let mut t = values.clone();
        drop_and_rescale(&mut t, 0.3, &mut Mt19937::new(9));
        let kept = t.iter().filter(|v| **v != 0.0).count();
        for (v, x) in t.iter().zip(&values) {
            assert!(*v == 0.0 || (v - x / 0.3).abs() < 1e-12);
        }
        // Binomial(20000, 0.3): standard deviation ≈ 65.
        assert!((kept as f64 - 6000.0).abs() < 400.0, "{kept} kept");
        let mut again = values.clone();
        drop_and_rescale(&mut again, 0.3, &mut Mt19937::new(9));
        assert_eq!(t, again);
        let mut other = values.clone();
        drop_and_rescale(&mut other, 0.3, &mut Mt19937::new(10));
        assert_ne!(t, other);
        let mut all = values.clone();
        drop_and_rescale(&mut all, 1.0, &mut Mt19937::new(9));
        assert_eq!(all, values);
    }
}
