//! A whole model's adapters: PEFT and native folders, and merging into a
//! safetensors checkpoint.
//!
//! A folder holds `adapter_config.json` and `adapter_model.safetensors`.
//! Tensor keys are `base_model.model.<module path>.<suffix>`:
//!
//! | `peft_type` | tensors per module |
//! |---|---|
//! | `WAVEFT` | `waveft_spectrum` `[n]` |
//! | `FOURIERFT` | `fourierft_spectrum` `[n]` |
//! | `LORA` | `lora_A.weight` `[r, in]`, `lora_B.weight` `[out, r]` |
//! | `WAVELETFT` (native) | `waveletft_coefficients` `[n]`, `waveletft_locations` `[n, 3]` (band, row, column) |
//!
//! PEFT stores no locations; they are regenerated from the seed and the
//! layer's shape, so loading a `WAVEFT` or `FOURIERFT` folder needs the base
//! model. The native format stores locations and shapes and needs nothing.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use ndarray::{Array2, ArrayViewMut2};
use safetensors::Dtype;
use serde_json::{Map, Value, json};

use crate::adapter::{check_finite, stored_shape};
use crate::layout::{Coef, Layout};
use crate::stream::rewrite;
use crate::targets::{ModuleSpec, Targets, pattern_value, proportional};
use crate::tensors::{
    MAX_JSON_BYTES, RawTensor, TensorFile, check_json_keys, encode_f32, read_json_text, write_atomic, write_text_atomic,
};
use crate::{
    Adapter, Error, FourierFt, FourierFtConfig, Init, Lora, LoraConfig, Method, Result, Strategy, WaveletFt,
    WaveletFtConfig,
};

/// The config file's name.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// The weights file's name.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The prefix PEFT puts before module paths.
pub const KEY_PREFIX: &str = "base_model.model.";
/// The PEFT version whose format this crate writes.
pub const PEFT_VERSION: &str = "0.21.2";

/// `(out, in)` per module path, as the native format stores them.
pub type ModuleShapes = BTreeMap<String, (usize, usize)>;

/// One module a config adapts on a given base model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModulePlan {
    /// `(out, in)` of the weight.
    pub shape: (usize, usize),
    /// Trainable coefficients (0 for LoRA, whose size is its rank).
    pub n: usize,
}

/// The method and its per-layer settings.
#[derive(Debug, Clone, PartialEq)]
pub enum MethodConfig {
    /// WaveletFT (PEFT's `WAVEFT` when [`WaveletFtConfig::is_peft_compatible`]).
    WaveletFt(WaveletFtConfig),
    /// FourierFT. `init_weights=False` draws normal values.
    FourierFt {
        /// The settings.
        config: FourierFtConfig,
        /// PEFT's `init_weights` (true: zeros).
        init_zeros: bool,
    },
    /// LoRA.
    Lora(LoraConfig),
}

/// Everything `adapter_config.json` says.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterConfig {
    /// The method.
    pub method: MethodConfig,
    /// Which modules are adapted.
    pub targets: Targets,
    /// Per-module `n` (`n_frequency_pattern`).
    pub n_frequency_pattern: BTreeMap<String, usize>,
    /// Per-module LoRA rank (`rank_pattern`).
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-module LoRA α (`alpha_pattern`).
    pub alpha_pattern: BTreeMap<String, f64>,
    /// PEFT's `proportional_parameters` (WaveFT).
    pub proportional_parameters: bool,
    /// Weights are stored `in × out` (GPT-2 `Conv1D`).
    pub fan_in_fan_out: bool,
    /// Every other field of the file, kept verbatim for writing back.
    pub extra: Map<String, Value>,
}

impl AdapterConfig {
    /// A config for `method` on the modules `targets` names, PEFT's defaults otherwise.
    pub fn new(method: MethodConfig, target_modules: ModuleSpec) -> Self {
        AdapterConfig {
            method,
            targets: Targets {
                target_modules: Some(target_modules),
                ..Targets::default()
            },
            n_frequency_pattern: BTreeMap::new(),
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            proportional_parameters: false,
            fan_in_fan_out: false,
            extra: Map::new(),
        }
    }
}

/// One module's adapter (computing in f32, as PEFT stores them).
#[derive(Debug, Clone)]
pub enum ModuleAdapter {
    /// WaveletFT.
    WaveletFt(Box<WaveletFt<f32>>),
    /// FourierFT.
    FourierFt(Box<FourierFt<f32>>),
    /// LoRA.
    Lora(Box<Lora<f32>>),
}

impl ModuleAdapter {
    /// The adapter behind the common trait.
    pub fn as_adapter(&self) -> &dyn Adapter<f32> {
        match self {
            ModuleAdapter::WaveletFt(a) => a.as_ref(),
            ModuleAdapter::FourierFt(a) => a.as_ref(),
            ModuleAdapter::Lora(a) => a.as_ref(),
        }
    }
    /// The adapter behind the common trait, mutable.
    pub fn as_adapter_mut(&mut self) -> &mut dyn Adapter<f32> {
        match self {
            ModuleAdapter::WaveletFt(a) => a.as_mut(),
            ModuleAdapter::FourierFt(a) => a.as_mut(),
            ModuleAdapter::Lora(a) => a.as_mut(),
        }
    }
}

/// What [`AdapterModel::merge`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeReport {
    /// Base tensors that received a ΔW, with the module that adapted them.
    pub merged: Vec<(String, String)>,
    /// Tensors copied unchanged.
    pub copied: usize,
}

/// A model's adapters: the config and one adapter per module path.
#[derive(Debug, Clone)]
pub struct AdapterModel {
    config: AdapterConfig,
    modules: BTreeMap<String, ModuleAdapter>,
}

/// Read a JSON field with a default.
fn field<T: serde::de::DeserializeOwned>(obj: &Map<String, Value>, key: &str, default: T, path: &Path) -> Result<T> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            reason: format!("field {key:?}: {e}"),
        }),
    }
}

/// The fields this crate interprets; everything else goes to `extra`.
const KNOWN: &[&str] = &[
    "peft_type",
    "n_frequency",
    "scaling",
    "wavelet_family",
    "use_idwt",
    "random_loc_seed",
    "init_weights",
    "proportional_parameters",
    "n_frequency_pattern",
    "target_modules",
    "exclude_modules",
    "fan_in_fan_out",
    "layers_to_transform",
    "layers_pattern",
    "r",
    "lora_alpha",
    "use_rslora",
    "rank_pattern",
    "alpha_pattern",
    "waveletft",
    "shapes",
];

impl AdapterConfig {
    /// Parse `adapter_config.json` (PEFT's or the native one). Returns the
    /// config and, for the native format, the stored module shapes.
    ///
    /// # Errors
    /// [`Error::Json`] for malformed JSON or fields, [`Error::UnknownPeftType`],
    /// [`Error::Unsupported`] for options this crate cannot honour (DoRA,
    /// trained biases, `modules_to_save`), and an unknown wavelet as
    /// [`Error::Json`] naming the field.
    pub fn from_json(text: &str, path: &Path) -> Result<(Self, ModuleShapes)> {
        let json_err = |reason: String| Error::Json {
            path: path.to_path_buf(),
            reason,
        };
        let obj: Map<String, Value> = serde_json::from_str(text).map_err(|e| json_err(format!("invalid JSON: {e}")))?;
        let peft_type: String = field(&obj, "peft_type", String::new(), path)?;
        let unsupported = |option: &str, reason: &str| Error::Unsupported {
            path: path.to_path_buf(),
            option: option.into(),
            reason: reason.into(),
        };
        if !matches!(obj.get("modules_to_save"), None | Some(Value::Null)) {
            return Err(unsupported(
                "modules_to_save",
                "fully trained modules are not merged by this crate",
            ));
        }
        if !matches!(obj.get("bias").and_then(Value::as_str), None | Some("none")) {
            return Err(unsupported(
                "bias",
                "only bias=\"none\" (no trained biases) is supported",
            ));
        }
        for flag in ["use_dora", "lora_bias"] {
            if obj.get(flag).and_then(Value::as_bool) == Some(true) {
                return Err(unsupported(flag, "not implemented"));
            }
        }
        let init_weights: bool = field(&obj, "init_weights", true, path)?;
        let mut shapes = BTreeMap::new();
        let method = match peft_type.as_str() {
            "WAVEFT" => {
                let wavelet: String = field(&obj, "wavelet_family", "db1".to_string(), path)?;
                dwt_core::Wavelet::new(&wavelet).map_err(|e| json_err(format!("wavelet_family: {e}")))?;
                let use_idwt: bool = field(&obj, "use_idwt", true, path)?;
                MethodConfig::WaveletFt(WaveletFtConfig {
                    wavelet,
                    level: 1,
                    mode: "zero".into(),
                    layout: if use_idwt { Layout::Peft } else { Layout::Identity },
                    n_frequency: field(&obj, "n_frequency", 2592, path)?,
                    scaling: field(&obj, "scaling", 25.0, path)?,
                    seed: field(&obj, "random_loc_seed", 777, path)?,
                    strategy: Strategy::Uniform,
                    init: if init_weights {
                        Init::Zeros
                    } else {
                        Init::Normal { std: 0.01 }
                    },
                })
            }
            "FOURIERFT" => MethodConfig::FourierFt {
                config: FourierFtConfig {
                    n_frequency: field(&obj, "n_frequency", 1000, path)?,
                    scaling: field(&obj, "scaling", 150.0, path)?,
                    seed: field(&obj, "random_loc_seed", 777, path)?,
                },
                init_zeros: init_weights,
            },
            "LORA" => MethodConfig::Lora(LoraConfig {
                r: field(&obj, "r", 8, path)?,
                lora_alpha: field(&obj, "lora_alpha", 8.0, path)?,
                use_rslora: field(&obj, "use_rslora", false, path)?,
            }),
            "WAVELETFT" => {
                let cfg: WaveletFtConfig = field(&obj, "waveletft", WaveletFtConfig::default(), path)?;
                cfg.parse().map_err(|e| json_err(format!("waveletft: {e}")))?;
                shapes = field(&obj, "shapes", BTreeMap::new(), path)?;
                MethodConfig::WaveletFt(cfg)
            }
            other => {
                return Err(Error::UnknownPeftType {
                    path: path.to_path_buf(),
                    found: other.to_string(),
                });
            }
        };
        let extra = obj
            .iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let config = AdapterConfig {
            method,
            targets: Targets {
                target_modules: field(&obj, "target_modules", None, path)?,
                exclude_modules: field(&obj, "exclude_modules", None, path)?,
                layers_to_transform: field(&obj, "layers_to_transform", None, path)?,
                layers_pattern: field(&obj, "layers_pattern", None, path)?,
            },
            n_frequency_pattern: field(&obj, "n_frequency_pattern", BTreeMap::new(), path)?,
            rank_pattern: field(&obj, "rank_pattern", BTreeMap::new(), path)?,
            alpha_pattern: field(&obj, "alpha_pattern", BTreeMap::new(), path)?,
            proportional_parameters: field(&obj, "proportional_parameters", false, path)?,
            fan_in_fan_out: field(&obj, "fan_in_fan_out", false, path)?,
            extra,
        };
        Ok((config, shapes))
    }

    /// The modules of `base` this config adapts (2-D `*.weight` tensors,
    /// matched the way PEFT matches module paths), each with its `(out, in)`
    /// and its `n`: from proportional allocation, `n_frequency_pattern` or
    /// `n_frequency`, as PEFT decides it (0 for LoRA).
    ///
    /// # Errors
    /// [`Error::Invalid`] when nothing matches or a pattern is not a valid
    /// regular expression.
    pub fn plan(&self, base: &TensorFile) -> Result<BTreeMap<String, ModulePlan>> {
        let mut targets = Vec::new();
        for name in base.names() {
            let Some(m) = name.strip_suffix(".weight") else {
                continue;
            };
            if base.info(&name).is_some_and(|(_, s)| s.len() == 2) && self.targets.matches(m)? {
                targets.push((m.to_string(), module_shape(base, m, self.fan_in_fan_out)?.1));
            }
        }
        if targets.is_empty() {
            return Err(Error::invalid(
                "target_modules",
                format!(
                    "{:?} matches no 2-D weight of {}",
                    self.targets.target_modules,
                    base.path().display()
                ),
            ));
        }
        let n_default = match &self.method {
            MethodConfig::WaveletFt(c) => c.n_frequency,
            MethodConfig::FourierFt { config, .. } => config.n_frequency,
            MethodConfig::Lora(_) => 0,
        };
        let sizes: Vec<(String, usize)> = targets.iter().map(|(m, (o, i))| (m.clone(), o * i)).collect();
        let prop = self.proportional_parameters.then(|| proportional(&sizes, n_default));
        targets
            .into_iter()
            .map(|(m, shape)| {
                let n = match &prop {
                    Some(p) => p[&m],
                    None => pattern_value(&self.n_frequency_pattern, &m)?.unwrap_or(n_default),
                };
                Ok((m, ModulePlan { shape, n }))
            })
            .collect()
    }

    /// The PEFT `peft_type`, or `WAVELETFT` for the native format.
    pub fn peft_type(&self) -> &'static str {
        match &self.method {
            MethodConfig::WaveletFt(c) if c.is_peft_compatible() => "WAVEFT",
            MethodConfig::WaveletFt(_) => "WAVELETFT",
            MethodConfig::FourierFt { .. } => "FOURIERFT",
            MethodConfig::Lora(_) => "LORA",
        }
    }

    /// The JSON this config is written as.
    pub fn to_json(&self, shapes: &BTreeMap<String, (usize, usize)>) -> Value {
        let mut obj = self.extra.clone();
        let mut put = |k: &str, v: Value| {
            obj.insert(k.to_string(), v);
        };
        let t = &self.targets;
        put("peft_type", json!(self.peft_type()));
        put("target_modules", json!(t.target_modules));
        put("exclude_modules", json!(t.exclude_modules));
        put("layers_to_transform", json!(t.layers_to_transform));
        put("layers_pattern", json!(t.layers_pattern));
        put("fan_in_fan_out", json!(self.fan_in_fan_out));
        for (k, v) in [
            ("bias", json!("none")),
            ("modules_to_save", Value::Null),
            ("inference_mode", json!(true)),
        ] {
            obj.entry(k).or_insert(v);
        }
        obj.entry("peft_version").or_insert(json!(PEFT_VERSION));
        let mut put = |k: &str, v: Value| {
            obj.insert(k.to_string(), v);
        };
        match &self.method {
            MethodConfig::WaveletFt(c) if c.is_peft_compatible() => {
                put("n_frequency", json!(c.n_frequency));
                put("scaling", json!(c.scaling));
                put("wavelet_family", json!(c.wavelet));
                put("use_idwt", json!(c.layout == Layout::Peft));
                put("random_loc_seed", json!(c.seed));
                put("init_weights", json!(c.init == Init::Zeros));
                put("proportional_parameters", json!(self.proportional_parameters));
                put("n_frequency_pattern", json!(self.n_frequency_pattern));
            }
            MethodConfig::WaveletFt(c) => {
                put("waveletft", json!(c));
                put("shapes", json!(shapes));
                put("n_frequency_pattern", json!(self.n_frequency_pattern));
                put("proportional_parameters", json!(self.proportional_parameters));
            }
            MethodConfig::FourierFt { config, init_zeros } => {
                put("n_frequency", json!(config.n_frequency));
                put("scaling", json!(config.scaling));
                put("random_loc_seed", json!(config.seed));
                put("init_weights", json!(init_zeros));
                put("n_frequency_pattern", json!(self.n_frequency_pattern));
            }
            MethodConfig::Lora(c) => {
                put("r", json!(c.r));
                put("lora_alpha", whole(c.lora_alpha));
                put("use_rslora", json!(c.use_rslora));
                put("rank_pattern", json!(self.rank_pattern));
                let alphas: Map<String, Value> =
                    self.alpha_pattern.iter().map(|(k, &v)| (k.clone(), whole(v))).collect();
                put("alpha_pattern", Value::Object(alphas));
                obj.entry("lora_dropout").or_insert(json!(0.0));
                obj.entry("init_lora_weights").or_insert(json!(true));
            }
        }
        Value::Object(obj)
    }
}

/// PEFT types LoRA's α as an int: keep whole values whole in JSON.
fn whole(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

/// Finds a module's weight in a base checkpoint.
fn resolve_weight(base: &TensorFile, module: &str) -> Result<String> {
    let want = format!("{module}.weight");
    if base.info(&want).is_some() {
        return Ok(want);
    }
    // PEFT paths and checkpoint keys can differ by a wrapper prefix
    // (`bert.encoder…` vs `encoder…`): accept a unique match on whole
    // components in either direction.
    let names = base.names();
    let candidates: Vec<String> = names
        .iter()
        .filter(|k| k.ends_with(&format!(".{want}")) || want.ends_with(&format!(".{k}")))
        .cloned()
        .collect();
    match candidates.len() {
        1 => Ok(candidates.into_iter().next().unwrap_or_default()),
        0 => Err(Error::ModuleNotInBase {
            path: base.path().to_path_buf(),
            module: module.to_string(),
            tensor: want,
            example: names.into_iter().filter(|n| n.ends_with(".weight")).take(3).collect(),
        }),
        _ => Err(Error::AmbiguousModule {
            path: base.path().to_path_buf(),
            module: module.to_string(),
            candidates,
        }),
    }
}

/// `(out, in)` of a module from the base checkpoint.
fn module_shape(base: &TensorFile, module: &str, fan_in_fan_out: bool) -> Result<(String, (usize, usize))> {
    let key = resolve_weight(base, module)?;
    let (_, shape) = base.info(&key).ok_or_else(|| Error::MissingTensor {
        path: base.path().to_path_buf(),
        tensor: key.clone(),
        expected: "the module's weight".into(),
    })?;
    let &[a, b] = shape else {
        return Err(Error::ShapeMismatch {
            path: base.path().to_path_buf(),
            tensor: key,
            found: shape.to_vec(),
            expected: "a 2-D weight".into(),
        });
    };
    Ok((key, if fan_in_fan_out { (b, a) } else { (a, b) }))
}

/// A 1-D f32 tensor of length `n` (or any length when `n` is `None`).
fn vector(file: &TensorFile, key: &str, n: Option<usize>, what: &str) -> Result<Vec<f32>> {
    let a = file.f32(key, what)?;
    if a.ndim() != 1 || n.is_some_and(|n| a.len() != n) {
        return Err(Error::ShapeMismatch {
            path: file.path().to_path_buf(),
            tensor: key.into(),
            found: a.shape().to_vec(),
            expected: n.map_or("a vector".into(), |n| format!("[{n}]")),
        });
    }
    Ok(a.into_raw_vec_and_offset().0)
}

/// A 2-D f32 tensor of the given shape.
fn matrix(file: &TensorFile, key: &str, shape: [Option<usize>; 2], what: &str) -> Result<Array2<f32>> {
    let a = file.f32(key, what)?;
    let ok = a.ndim() == 2
        && shape
            .iter()
            .zip(a.shape())
            .all(|(want, got)| want.is_none_or(|w| w == *got));
    let found = a.shape().to_vec();
    let mismatch = || Error::ShapeMismatch {
        path: file.path().to_path_buf(),
        tensor: key.into(),
        found: found.clone(),
        expected: format!(
            "{:?} (? = any)",
            shape.map(|d| d.map_or("?".to_string(), |d| d.to_string()))
        ),
    };
    if !ok {
        return Err(mismatch());
    }
    a.into_dimensionality().map_err(|_| mismatch())
}

/// The module paths that carry a tensor with `suffix`.
fn modules_with(file: &TensorFile, suffix: &str) -> Vec<String> {
    file.names()
        .iter()
        .filter_map(|k| k.strip_prefix(KEY_PREFIX)?.strip_suffix(suffix).map(str::to_string))
        .collect()
}

impl AdapterModel {
    /// The config.
    pub fn config(&self) -> &AdapterConfig {
        &self.config
    }
    /// The adapters by module path.
    pub fn modules(&self) -> &BTreeMap<String, ModuleAdapter> {
        &self.modules
    }
    /// The adapters by module path, mutable (for training).
    pub fn modules_mut(&mut self) -> &mut BTreeMap<String, ModuleAdapter> {
        &mut self.modules
    }
    /// Total trainable parameters.
    pub fn num_params(&self) -> usize {
        self.modules.values().map(|m| m.as_adapter().num_params()).sum()
    }

    /// Load an adapter folder. `base` supplies the layer shapes PEFT's
    /// WaveFT and FourierFT locations depend on; LoRA and native folders
    /// do not need it (if given, their shapes are checked against it).
    ///
    /// # Errors
    /// Everything [`AdapterConfig::from_json`] and [`TensorFile::open`]
    /// report; [`Error::MissingTensor`]/[`Error::ShapeMismatch`] for
    /// incomplete or inconsistent tensors; [`Error::ModuleNotInBase`] when
    /// the base lacks an adapted module; [`Error::Invalid`] when a WaveFT
    /// or FourierFT folder is loaded without a base.
    pub fn load(dir: impl AsRef<Path>, base: Option<&TensorFile>) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg_path = dir.join(CONFIG_FILE);
        let text = read_json_text(&cfg_path)?;
        let file = TensorFile::open(dir.join(WEIGHTS_FILE))?;
        Self::from_parts(&text, &cfg_path, &file, base)
    }

    /// [`AdapterModel::load`] from memory: the config's JSON text and the
    /// weights file's bytes (for adapters that arrive over a network, and
    /// for fuzzing). Errors name `adapter_config.json` and
    /// `adapter_model.safetensors` in a folder called `<memory>`.
    ///
    /// # Errors
    /// As [`AdapterModel::load`].
    pub fn from_bytes(config: &[u8], weights: Vec<u8>, base: Option<&TensorFile>) -> Result<Self> {
        let dir = Path::new("<memory>");
        let cfg_path = dir.join(CONFIG_FILE);
        if config.len() as u64 > MAX_JSON_BYTES {
            return Err(Error::TooLarge {
                path: cfg_path,
                limit: MAX_JSON_BYTES,
            });
        }
        let text = std::str::from_utf8(config).map_err(|e| Error::Json {
            path: cfg_path.clone(),
            reason: e.to_string(),
        })?;
        check_json_keys(text, &cfg_path)?;
        let file = TensorFile::from_bytes(dir.join(WEIGHTS_FILE), weights)?;
        Self::from_parts(text, &cfg_path, &file, base)
    }

    fn from_parts(text: &str, cfg_path: &Path, file: &TensorFile, base: Option<&TensorFile>) -> Result<Self> {
        let cfg_path = cfg_path.to_path_buf();
        let (config, shapes) = AdapterConfig::from_json(text, &cfg_path)?;
        let fifo = config.fan_in_fan_out;
        let shape_from_base = |m: &str| -> Result<(usize, usize)> {
            let base = base.ok_or_else(|| {
                Error::invalid(
                    "base model",
                    format!(
                        "{} adapters store no locations: pass the base model to load them",
                        config.peft_type()
                    ),
                )
            })?;
            Ok(module_shape(base, m, fifo)?.1)
        };
        let key = |m: &str, s: &str| format!("{KEY_PREFIX}{m}{s}");
        // What PEFT would allocate on this base; a spectrum of another length
        // belongs to another config or model. (Skipped when the base's names
        // do not match the config's targets directly.)
        let plan = base.and_then(|b| config.plan(b).ok()).unwrap_or_default();
        let check_n = |m: &str, k: &str, len: usize| match plan.get(m) {
            Some(&ModulePlan { n, .. }) if n != len => Err(Error::ShapeMismatch {
                path: file.path().to_path_buf(),
                tensor: k.to_string(),
                found: vec![len],
                expected: format!(
                    "[{n}], the n that {} allocates to this module of the base model",
                    cfg_path.display()
                ),
            }),
            _ => Ok(()),
        };
        let mut modules = BTreeMap::new();
        let mut expected_keys = Vec::new();
        match &config.method {
            // Native tensors carry their locations, whatever the config
            // could also be expressed as (a PEFT-compatible config saved natively).
            MethodConfig::WaveletFt(c) if !modules_with(file, ".waveletft_coefficients").is_empty() => {
                for m in modules_with(file, ".waveletft_coefficients") {
                    let (kc, kl) = (key(&m, ".waveletft_coefficients"), key(&m, ".waveletft_locations"));
                    let values = vector(file, &kc, None, "WaveletFT coefficients")?;
                    let locs = file.i64(&kl, "WaveletFT locations (band, row, column)")?;
                    if locs.shape() != [values.len(), 3] {
                        return Err(Error::ShapeMismatch {
                            path: file.path().to_path_buf(),
                            tensor: kl,
                            found: locs.shape().to_vec(),
                            expected: format!("[{}, 3]", values.len()),
                        });
                    }
                    let bad =
                        |k: &str| Error::invalid(format!("{} tensor {k}", file.path().display()), "negative location");
                    let flat = locs.into_raw_vec_and_offset().0;
                    let locations = flat
                        .chunks_exact(3)
                        .map(|c| {
                            let u = |v: i64| usize::try_from(v).map_err(|_| bad(&kl));
                            Ok(Coef {
                                band: u(c[0])?,
                                row: u(c[1])?,
                                col: u(c[2])?,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let shape = *shapes.get(&m).ok_or_else(|| Error::Json {
                        path: cfg_path.clone(),
                        reason: format!("\"shapes\" has no entry for module {m:?}"),
                    })?;
                    if base.is_some() && shape_from_base(&m)? != shape {
                        return Err(Error::ShapeMismatch {
                            path: cfg_path.clone(),
                            tensor: m.clone(),
                            found: vec![shape.0, shape.1],
                            expected: format!("{:?}, the base model's shape", shape_from_base(&m)?),
                        });
                    }
                    let a = WaveletFt::from_parts(c, shape, locations, values).map_err(|e| in_tensor(file, &kl, e))?;
                    modules.insert(m, ModuleAdapter::WaveletFt(Box::new(a)));
                    expected_keys.extend([kc, kl]);
                }
            }
            MethodConfig::WaveletFt(c) => {
                for m in modules_with(file, ".waveft_spectrum") {
                    let k = key(&m, ".waveft_spectrum");
                    let values = vector(file, &k, None, "WaveFT spectrum")?;
                    check_n(&m, &k, values.len())?;
                    let shape = shape_from_base(&m)?;
                    let mut a = WaveletFt::new(c, shape, values.len(), None).map_err(|e| in_tensor(file, &k, e))?;
                    a.params_mut().copy_from_slice(&values);
                    modules.insert(m, ModuleAdapter::WaveletFt(Box::new(a)));
                    expected_keys.push(k);
                }
            }
            MethodConfig::FourierFt { config: c, .. } => {
                for m in modules_with(file, ".fourierft_spectrum") {
                    let k = key(&m, ".fourierft_spectrum");
                    let values = vector(file, &k, None, "FourierFT spectrum")?;
                    check_n(&m, &k, values.len())?;
                    let shape = shape_from_base(&m)?;
                    let a = FourierFt::new(c, shape, values.len(), Some(values)).map_err(|e| in_tensor(file, &k, e))?;
                    modules.insert(m, ModuleAdapter::FourierFt(Box::new(a)));
                    expected_keys.push(k);
                }
            }
            MethodConfig::Lora(c) => {
                for m in modules_with(file, ".lora_A.weight") {
                    let (ka, kb) = (key(&m, ".lora_A.weight"), key(&m, ".lora_B.weight"));
                    let mut c = c.clone();
                    c.r = pattern_value(&config.rank_pattern, &m)?.unwrap_or(c.r);
                    c.lora_alpha = pattern_value(&config.alpha_pattern, &m)?.unwrap_or(c.lora_alpha);
                    let a = matrix(file, &ka, [Some(c.r), None], "LoRA A (r × in)")?;
                    let b = matrix(file, &kb, [None, Some(c.r)], "LoRA B (out × r)")?;
                    if let Some(base) = base {
                        let (key, shape) = module_shape(base, &m, fifo)?;
                        let want = (b.nrows(), a.ncols());
                        if shape != want {
                            return Err(Error::ShapeMismatch {
                                path: base.path().to_path_buf(),
                                tensor: key,
                                found: stored_shape(shape, fifo).to_vec(),
                                expected: format!(
                                    "{:?} to fit the LoRA factors of {m:?} in {}",
                                    stored_shape(want, fifo),
                                    file.path().display()
                                ),
                            });
                        }
                    }
                    modules.insert(m, ModuleAdapter::Lora(Box::new(Lora::from_factors(&c, a, b)?)));
                    expected_keys.extend([ka, kb]);
                }
            }
        }
        // Anything else in the file would be silently dropped: refuse it.
        if let Some(extra) = file.names().into_iter().find(|k| !expected_keys.contains(k)) {
            return Err(Error::Unsupported {
                path: file.path().to_path_buf(),
                option: extra,
                reason: format!("not a {} tensor this crate knows", config.peft_type()),
            });
        }
        if modules.is_empty() {
            return Err(Error::MissingTensor {
                path: file.path().to_path_buf(),
                tensor: format!("{KEY_PREFIX}<module>.<adapter tensor>"),
                expected: format!("at least one {} module", config.peft_type()),
            });
        }
        Ok(AdapterModel { config, modules })
    }

    /// New adapters for every module of `base` the config targets: 2-D
    /// `*.weight` tensors, matched the way PEFT matches module paths, with
    /// `n` from `n_frequency_pattern` and proportional allocation as in PEFT.
    ///
    /// # Errors
    /// [`Error::Invalid`] when nothing matches, and the adapters' own errors.
    pub fn new_for_base(config: AdapterConfig, base: &TensorFile, seed: u64) -> Result<Self> {
        let mut modules = BTreeMap::new();
        for (m, ModulePlan { shape, n }) in config.plan(base)? {
            let w = match &config.method {
                MethodConfig::WaveletFt(c) if c.strategy == Strategy::EnergyGuided => {
                    let key = resolve_weight(base, &m)?;
                    let w = matrix(base, &key, [None, None], "the frozen weight")?;
                    Some(if config.fan_in_fan_out { w.reversed_axes() } else { w })
                }
                _ => None,
            };
            let adapter = match &config.method {
                MethodConfig::WaveletFt(c) => {
                    ModuleAdapter::WaveletFt(Box::new(WaveletFt::new(c, shape, n, w.as_ref().map(|w| w.view()))?))
                }
                MethodConfig::FourierFt { config: c, init_zeros } => {
                    let mut a = FourierFt::new(c, shape, n, None)?;
                    if !init_zeros {
                        a.randomize(seed, 1.0);
                    }
                    ModuleAdapter::FourierFt(Box::new(a))
                }
                MethodConfig::Lora(c) => {
                    let mut c = c.clone();
                    c.r = pattern_value(&config.rank_pattern, &m)?.unwrap_or(c.r);
                    c.lora_alpha = pattern_value(&config.alpha_pattern, &m)?.unwrap_or(c.lora_alpha);
                    ModuleAdapter::Lora(Box::new(Lora::new(&c, shape, seed)?))
                }
            };
            modules.insert(m, adapter);
        }
        Ok(AdapterModel { config, modules })
    }

    /// Save as a folder: PEFT's format when PEFT can express the config,
    /// the native `WAVELETFT` format otherwise. Both files are written
    /// atomically; the folder is created if needed.
    ///
    /// # Errors
    /// [`Error::Io`] when writing fails.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut tensors: Vec<(String, RawTensor<'static>)> = Vec::new();
        let mut shapes = BTreeMap::new();
        let native = self.config.peft_type() == "WAVELETFT";
        for (m, a) in &self.modules {
            let k = |s: &str| format!("{KEY_PREFIX}{m}{s}");
            match a {
                ModuleAdapter::WaveletFt(w) if native => {
                    shapes.insert(m.clone(), w.shape());
                    tensors.push((
                        k(".waveletft_coefficients"),
                        RawTensor::from_f32(&[w.num_params()], w.params()),
                    ));
                    let locs: Vec<i64> = w
                        .locations()
                        .iter()
                        .flat_map(|c| [c.band as i64, c.row as i64, c.col as i64])
                        .collect();
                    tensors.push((
                        k(".waveletft_locations"),
                        RawTensor::from_i64(&[w.num_params(), 3], &locs),
                    ));
                }
                ModuleAdapter::WaveletFt(w) => {
                    tensors.push((
                        k(".waveft_spectrum"),
                        RawTensor::from_f32(&[w.num_params()], w.params()),
                    ));
                }
                ModuleAdapter::FourierFt(f) => {
                    tensors.push((
                        k(".fourierft_spectrum"),
                        RawTensor::from_f32(&[f.num_params()], f.params()),
                    ));
                }
                ModuleAdapter::Lora(l) => {
                    let (out, inp) = l.shape();
                    let r = l.rank();
                    let a: Vec<f32> = l.a().iter().copied().collect();
                    let b: Vec<f32> = l.b().iter().copied().collect();
                    tensors.push((k(".lora_A.weight"), RawTensor::from_f32(&[r, inp], &a)));
                    tensors.push((k(".lora_B.weight"), RawTensor::from_f32(&[out, r], &b)));
                }
            }
        }
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        write_atomic(
            &dir.join(WEIGHTS_FILE),
            tensors.iter().map(|(k, t)| (k.clone(), t)),
            Some(meta),
        )?;
        let text = serde_json::to_string_pretty(&self.config.to_json(&shapes)).map_err(|e| Error::Json {
            path: dir.join(CONFIG_FILE),
            reason: e.to_string(),
        })?;
        write_text_atomic(&dir.join(CONFIG_FILE), &text)
    }

    /// ΔW of one module (`out × in`, even for `fan_in_fan_out`).
    ///
    /// # Errors
    /// [`Error::Invalid`] when the module is not adapted.
    pub fn delta(&self, module: &str) -> Result<Array2<f32>> {
        let a = self.modules.get(module).ok_or_else(|| {
            Error::invalid(
                "module",
                format!(
                    "{module:?} is not adapted (adapted: {:?})",
                    self.modules.keys().take(5).collect::<Vec<_>>()
                ),
            )
        })?;
        Ok(a.as_adapter().delta_weight())
    }

    /// Merge every adapter into the matching weights of `base` and write
    /// the result to `out` atomically. Every other tensor is copied with its
    /// dtype; the header metadata is kept. F16/BF16 weights are merged in f32
    /// and rounded back; F64 weights get the f32 ΔW added in f64.
    /// `progress(done, total)` is called once per tensor.
    ///
    /// # Errors
    /// [`Error::ModuleNotInBase`]/[`Error::AmbiguousModule`] when a module
    /// cannot be found, [`Error::ShapeMismatch`] when its weight has the
    /// wrong shape, [`Error::DtypeMismatch`] for a non-float weight,
    /// [`Error::NonFinite`] when adapter values are NaN or infinite, and
    /// write errors. Nothing is written unless everything checks out.
    pub fn merge(&self, base: &TensorFile, out: &Path, progress: &mut dyn FnMut(usize, usize)) -> Result<MergeReport> {
        self.merge_on(base, out, Device::Cpu, progress)
    }

    /// [`AdapterModel::merge`] with ΔW built and added on a GPU (every
    /// method; see [`crate::GpuAdapter`]). The output matches the CPU merge
    /// to `f32` rounding.
    ///
    /// # Errors
    /// As [`AdapterModel::merge`], plus [`Error::Gpu`].
    #[cfg(feature = "gpu")]
    pub fn merge_gpu(
        &self,
        base: &TensorFile,
        out: &Path,
        ctx: &dwt_gpu::Context,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<MergeReport> {
        self.merge_on(base, out, Device::Gpu(ctx), progress)
    }

    fn merge_on(
        &self,
        base: &TensorFile,
        out: &Path,
        device: Device<'_>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<MergeReport> {
        let fifo = self.config.fan_in_fan_out;
        let mut plan: BTreeMap<String, &str> = BTreeMap::new();
        for (m, a) in &self.modules {
            let (key, shape) = module_shape(base, m, fifo)?;
            if shape != a.as_adapter().shape() {
                let (o, i) = a.as_adapter().shape();
                return Err(Error::ShapeMismatch {
                    path: base.path().to_path_buf(),
                    tensor: key,
                    found: stored_shape(shape, fifo).to_vec(),
                    expected: format!("{:?} for the adapter of {m:?}", stored_shape((o, i), fifo)),
                });
            }
            check_finite(&format!("adapter of {m:?}"), a.as_adapter().params())?;
            match base.info(&key) {
                Some((Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16, _)) => {}
                found => {
                    return Err(Error::DtypeMismatch {
                        path: base.path().to_path_buf(),
                        tensor: key,
                        found: found.map_or("nothing".into(), |(d, _)| format!("{d:?}")),
                        expected: "F32, F64, F16 or BF16".into(),
                    });
                }
            }
            plan.insert(key, m);
        }
        let mut report = MergeReport {
            merged: Vec::new(),
            copied: 0,
        };
        let mut replace = |name: &str, w: &mut dyn Write| -> Result<bool> {
            let Some(m) = plan.get(name) else {
                report.copied += 1;
                return Ok(false);
            };
            self.merge_one(base, name, &self.modules[*m], device, w)?;
            report.merged.push((name.to_string(), m.to_string()));
            Ok(true)
        };
        rewrite(base, out, &mut replace, progress)?;
        report.merged.sort();
        Ok(report)
    }

    /// Merge one weight and write its bytes (same dtype and length) to `w`.
    fn merge_one(
        &self,
        base: &TensorFile,
        name: &str,
        module: &ModuleAdapter,
        device: Device<'_>,
        w: &mut dyn Write,
    ) -> Result<()> {
        let fifo = self.config.fan_in_fan_out;
        let raw = base.raw(name, "")?;
        let (dtype, dims) = (raw.dtype, raw.shape.clone());
        let not_float = || Error::DtypeMismatch {
            path: base.path().to_path_buf(),
            tensor: name.to_string(),
            found: format!("{dtype:?}"),
            expected: "F32, F64, F16 or BF16".into(),
        };
        let io = |e| Error::io(base.path(), e);
        if dtype == Dtype::F64 {
            let d = device.delta(module)?;
            let d = if fifo { d.reversed_axes() } else { d };
            let mut buf = Vec::with_capacity(1 << 16);
            for (c, &v) in raw.data.chunks_exact(8).zip(d.iter()) {
                let t = f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) + f64::from(v);
                buf.extend_from_slice(&t.to_le_bytes());
                if buf.len() >= 1 << 16 {
                    w.write_all(&buf).map_err(io)?;
                    buf.clear();
                }
            }
            return w.write_all(&buf).map_err(io);
        }
        drop(raw);
        let mut values = base.f32_releasing(name)?.ok_or_else(not_float)?;
        let view = ArrayViewMut2::from_shape([dims[0], dims[1]], &mut values)
            .map_err(|e| Error::invalid(name, e.to_string()))?;
        device.merge(module, view, fifo)?;
        encode_f32(dtype, &values, w).map_err(io)?.ok_or_else(not_float)
    }
}

/// Where a merge computes.
#[derive(Debug, Clone, Copy)]
enum Device<'a> {
    Cpu,
    #[cfg(feature = "gpu")]
    Gpu(&'a dwt_gpu::Context),
    /// Keeps the lifetime used when the `gpu` feature is off.
    #[cfg(not(feature = "gpu"))]
    #[allow(dead_code)]
    Unused(std::convert::Infallible, std::marker::PhantomData<&'a ()>),
}

impl Device<'_> {
    /// The module's dense ΔW.
    fn delta(&self, module: &ModuleAdapter) -> Result<Array2<f32>> {
        match self {
            Device::Cpu => Ok(module.as_adapter().delta_weight()),
            #[cfg(feature = "gpu")]
            Device::Gpu(ctx) => crate::GpuAdapter::new(ctx, module)?.delta_weight(),
            #[cfg(not(feature = "gpu"))]
            Device::Unused(never, _) => match *never {},
        }
    }

    /// `W += ΔW` in place.
    fn merge(&self, module: &ModuleAdapter, w: ArrayViewMut2<'_, f32>, fifo: bool) -> Result<()> {
        match self {
            Device::Cpu => module.as_adapter().merge_into(w, 1.0, fifo),
            #[cfg(feature = "gpu")]
            Device::Gpu(ctx) => crate::GpuAdapter::new(ctx, module)?.merge_into(w, 1.0, fifo),
            #[cfg(not(feature = "gpu"))]
            Device::Unused(never, _) => match *never {},
        }
    }
}

/// Name the tensor an adapter-construction error came from.
fn in_tensor(file: &TensorFile, tensor: &str, e: Error) -> Error {
    Error::invalid(format!("{} tensor {tensor:?}", file.path().display()), e.to_string())
}

impl Method {
    /// The method of a config.
    pub fn of(config: &MethodConfig) -> Method {
        match config {
            MethodConfig::WaveletFt(_) => Method::WaveletFt,
            MethodConfig::FourierFt { .. } => Method::FourierFt,
            MethodConfig::Lora(_) => Method::Lora,
        }
    }
}

/// One module in a [`Summary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSummary {
    /// Module path.
    pub path: String,
    /// Trainable parameters.
    pub params: usize,
    /// `(out, in)` when known (always for LoRA and native folders; with a
    /// base model for WaveFT and FourierFT).
    pub shape: Option<(usize, usize)>,
}

/// What an adapter folder holds, read without building the adapters.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// `peft_type`.
    pub peft_type: String,
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
    ///
    /// # Errors
    /// As [`AdapterModel::load`] for the config and the weights file.
    pub fn read(dir: impl AsRef<Path>, base: Option<&TensorFile>) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let (config, shapes) = AdapterConfig::from_json(&text, &cfg_path)?;
        let file = TensorFile::open(dir.join(WEIGHTS_FILE))?;
        let mut modules: BTreeMap<String, ModuleSummary> = BTreeMap::new();
        for name in file.names() {
            let Some(rest) = name.strip_prefix(KEY_PREFIX) else {
                continue;
            };
            let suffixes = [
                ".waveft_spectrum",
                ".fourierft_spectrum",
                ".waveletft_coefficients",
                ".lora_A.weight",
                ".lora_B.weight",
            ];
            let Some((m, suffix)) = suffixes.iter().find_map(|s| rest.strip_suffix(s).map(|m| (m, *s))) else {
                continue;
            };
            let (_, shape) = file.info(&name).unwrap_or((Dtype::F32, &[]));
            let count: usize = shape.iter().product();
            let entry = modules.entry(m.to_string()).or_insert_with(|| ModuleSummary {
                path: m.to_string(),
                params: 0,
                shape: shapes.get(m).copied(),
            });
            entry.params += count;
            if let (".lora_A.weight", [_, i]) = (suffix, shape) {
                entry.shape = Some((entry.shape.map_or(0, |s| s.0), *i));
            }
            if let (".lora_B.weight", [o, _]) = (suffix, shape) {
                entry.shape = Some((*o, entry.shape.map_or(0, |s| s.1)));
            }
        }
        if let Some(base) = base {
            for m in modules.values_mut() {
                m.shape = Some(module_shape(base, &m.path, config.fan_in_fan_out)?.1);
            }
        }
        Ok(Summary {
            peft_type: config.peft_type().to_string(),
            method: Method::of(&config.method),
            modules: modules.into_values().collect(),
            file_size: file.size(),
        })
    }
}
