//! `adapter_config.json` ↔ [`AdapterConfig`]: PEFT's `WAVEFT`,
//! `FOURIERFT` and `LORA` configs and the native `WAVELETFT` one, and which
//! modules of a base model a config adapts.

use std::collections::BTreeMap;
use std::path::Path;

use dwt_core::{Mode, Orientation, Wavelet};
use serde_json::{Map, Value, json};

use crate::model::module_shape;
use crate::shapes::{BaseShapes, WeightLayout};
use crate::targets::{ModuleSpec, Targets, pattern_value, proportional};
use crate::tensors::check_json_keys;
use crate::{Error, FourierFtConfig, Init, Layout, LoraConfig, Method, Result, Strategy, WaveletFtConfig};

/// The PEFT version whose format this crate writes.
pub const PEFT_VERSION: &str = "0.21.2";

/// The `peft_type` of an adapter folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeftType {
    /// PEFT's WaveFT (WaveletFT in PEFT's layout).
    WaveFt,
    /// PEFT's FourierFT.
    FourierFt,
    /// PEFT's LoRA.
    Lora,
    /// This crate's native WaveletFT format (any level, layout, strategy;
    /// locations stored).
    WaveletFt,
}

impl PeftType {
    /// Every type, in the order of the folder format table.
    pub const ALL: [PeftType; 4] = [
        PeftType::WaveFt,
        PeftType::FourierFt,
        PeftType::Lora,
        PeftType::WaveletFt,
    ];

    /// The name in `adapter_config.json`.
    pub fn name(self) -> &'static str {
        match self {
            PeftType::WaveFt => "WAVEFT",
            PeftType::FourierFt => "FOURIERFT",
            PeftType::Lora => "LORA",
            PeftType::WaveletFt => "WAVELETFT",
        }
    }

    /// The type named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The method it stores.
    pub fn method(self) -> Method {
        match self {
            PeftType::WaveFt | PeftType::WaveletFt => Method::WaveletFt,
            PeftType::FourierFt => Method::FourierFt,
            PeftType::Lora => Method::Lora,
        }
    }
}

impl std::fmt::Display for PeftType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a folder's config records of its modules beyond PEFT's fields:
/// the native format's `(out, in)` per module (`"shapes"`), and, for
/// WaveletFT and FourierFT on convolutions, each convolution's `[kh, kw]`
/// (`"kernels"`). LoRA convolutions need neither: PEFT's 4-D factors say it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleShapes {
    /// `(out, in)` per module path (native `WAVELETFT` folders).
    pub shapes: BTreeMap<String, (usize, usize)>,
    /// `[kh, kw]` per convolution module path.
    pub kernels: BTreeMap<String, [usize; 2]>,
}

/// One module a config adapts on a given base model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModulePlan {
    /// `(out, in)` of the weight (`in` = `in_channels·kh·kw` for a convolution).
    pub shape: (usize, usize),
    /// How the base stores it.
    pub layout: WeightLayout,
    /// Trainable coefficients (0 for LoRA, whose size is its rank).
    pub n: usize,
}

/// The method and its per-layer settings.
#[derive(Debug, Clone, PartialEq)]
pub enum MethodConfig {
    /// WaveletFT (PEFT's `WAVEFT` when [`WaveletFtConfig::is_peft_compatible`]).
    WaveletFt(WaveletFtConfig),
    /// FourierFT (`init_weights=False` is [`Init::Normal`] with std 1).
    FourierFt(FourierFtConfig),
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
    /// How weights are stored: PEFT's `fan_in_fan_out` is
    /// [`Orientation::Transposed`] (`in × out`, GPT-2's `Conv1D`).
    pub orientation: Orientation,
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
            orientation: Orientation::Normal,
            extra: Map::new(),
        }
    }
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
    "kernels",
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
        // The one duplicate-key check of every config reader (serde would
        // keep the last value silently).
        check_json_keys(text, path)?;
        let json_err = |reason: String| Error::Json {
            path: path.to_path_buf(),
            reason,
        };
        let obj: Map<String, Value> = serde_json::from_str(text).map_err(|e| json_err(format!("invalid JSON: {e}")))?;
        let peft_name: String = field(&obj, "peft_type", String::new(), path)?;
        let peft_type = PeftType::from_name(&peft_name).ok_or_else(|| Error::UnknownPeftType {
            path: path.to_path_buf(),
            found: peft_name.clone(),
        })?;
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
        // PEFT's `init_weights=False`: normal values of this std.
        let init = |std| {
            if init_weights {
                Init::Zeros
            } else {
                Init::Normal { std }
            }
        };
        let mut shapes = ModuleShapes {
            kernels: field(&obj, "kernels", BTreeMap::new(), path)?,
            ..ModuleShapes::default()
        };
        let method = match peft_type {
            PeftType::WaveFt => {
                let wavelet: String = field(&obj, "wavelet_family", "db1".to_string(), path)?;
                let wavelet = Wavelet::new(&wavelet).map_err(|e| json_err(format!("wavelet_family: {e}")))?;
                let use_idwt: bool = field(&obj, "use_idwt", true, path)?;
                MethodConfig::WaveletFt(WaveletFtConfig {
                    wavelet,
                    level: 1,
                    mode: Mode::Zero,
                    layout: if use_idwt { Layout::Peft } else { Layout::Identity },
                    n_frequency: field(&obj, "n_frequency", 2592, path)?,
                    scaling: field(&obj, "scaling", 25.0, path)?,
                    seed: field(&obj, "random_loc_seed", 777, path)?,
                    strategy: Strategy::Uniform,
                    init: init(0.01),
                })
            }
            PeftType::FourierFt => MethodConfig::FourierFt(FourierFtConfig {
                n_frequency: field(&obj, "n_frequency", 1000, path)?,
                scaling: field(&obj, "scaling", 150.0, path)?,
                seed: field(&obj, "random_loc_seed", 777, path)?,
                init: init(1.0),
            }),
            PeftType::Lora => MethodConfig::Lora(LoraConfig {
                r: field(&obj, "r", 8, path)?,
                lora_alpha: field(&obj, "lora_alpha", 8.0, path)?,
                use_rslora: field(&obj, "use_rslora", false, path)?,
                seed: 0,
            }),
            PeftType::WaveletFt => {
                shapes.shapes = field(&obj, "shapes", BTreeMap::new(), path)?;
                MethodConfig::WaveletFt(field(&obj, "waveletft", WaveletFtConfig::default(), path)?)
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
            orientation: if field(&obj, "fan_in_fan_out", false, path)? {
                Orientation::Transposed
            } else {
                Orientation::Normal
            },
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
    pub fn plan(&self, base: &dyn BaseShapes) -> Result<BTreeMap<String, ModulePlan>> {
        let mut targets = Vec::new();
        for name in base.tensor_names() {
            let Some(m) = name.strip_suffix(".weight") else {
                continue;
            };
            let adaptable = base
                .tensor_shape(&name)
                .is_some_and(|s| WeightLayout::of_shape(&s).is_some());
            if adaptable && self.targets.matches(m)? {
                let w = module_shape(base, m, self.orientation)?;
                targets.push((m.to_string(), w.shape, w.layout));
            }
        }
        if targets.is_empty() {
            return Err(Error::invalid(
                "target_modules",
                format!(
                    "{:?} matches no linear (2-D) or convolution (4-D) weight of {}",
                    self.targets.target_modules,
                    base.base_path().display()
                ),
            ));
        }
        let n_default = match &self.method {
            MethodConfig::WaveletFt(c) => c.n_frequency,
            MethodConfig::FourierFt(config) => config.n_frequency,
            MethodConfig::Lora(_) => 0,
        };
        let sizes: Vec<(String, usize)> = targets.iter().map(|(m, (o, i), _)| (m.clone(), o * i)).collect();
        let prop = self.proportional_parameters.then(|| proportional(&sizes, n_default));
        targets
            .into_iter()
            .map(|(m, shape, layout)| {
                let n = match &prop {
                    Some(p) => p[&m],
                    None => pattern_value(&self.n_frequency_pattern, &m)?.unwrap_or(n_default),
                };
                Ok((m, ModulePlan { shape, layout, n }))
            })
            .collect()
    }

    /// The `peft_type` of a folder of this config whose modules include
    /// convolutions when `convolutions` is set: WaveletFT then always takes
    /// the native format, since PEFT's WaveFT has no convolutions.
    pub fn folder_type(&self, convolutions: bool) -> PeftType {
        match self.peft_type() {
            PeftType::WaveFt if convolutions => PeftType::WaveletFt,
            t => t,
        }
    }

    /// The PEFT `peft_type`, or [`PeftType::WaveletFt`] for the native format.
    pub fn peft_type(&self) -> PeftType {
        match &self.method {
            MethodConfig::WaveletFt(c) if c.is_peft_compatible() => PeftType::WaveFt,
            MethodConfig::WaveletFt(_) => PeftType::WaveletFt,
            MethodConfig::FourierFt(_) => PeftType::FourierFt,
            MethodConfig::Lora(_) => PeftType::Lora,
        }
    }

    /// The LoRA settings of `module`: `rank_pattern` and `alpha_pattern`
    /// over `lora`'s `r` and `lora_alpha`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a pattern that is not a valid regular expression.
    pub fn lora_for(&self, lora: &LoraConfig, module: &str) -> Result<LoraConfig> {
        let mut c = lora.clone();
        c.r = pattern_value(&self.rank_pattern, module)?.unwrap_or(c.r);
        c.lora_alpha = pattern_value(&self.alpha_pattern, module)?.unwrap_or(c.lora_alpha);
        Ok(c)
    }

    /// The JSON this config is written as, for a folder whose modules are
    /// `modules` (their shapes for the native format, and their
    /// convolutions' kernels).
    pub fn to_json(&self, modules: &ModuleShapes) -> Value {
        let peft_type = self.folder_type(!modules.kernels.is_empty());
        let mut obj = self.extra.clone();
        let mut put = |k: &str, v: Value| {
            obj.insert(k.to_string(), v);
        };
        let t = &self.targets;
        put("peft_type", json!(peft_type.name()));
        put("target_modules", json!(t.target_modules));
        put("exclude_modules", json!(t.exclude_modules));
        put("layers_to_transform", json!(t.layers_to_transform));
        put("layers_pattern", json!(t.layers_pattern));
        put("fan_in_fan_out", json!(self.orientation == Orientation::Transposed));
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
            MethodConfig::WaveletFt(c) if peft_type == PeftType::WaveFt => {
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
                put("shapes", json!(modules.shapes));
                put("n_frequency_pattern", json!(self.n_frequency_pattern));
                put("proportional_parameters", json!(self.proportional_parameters));
            }
            MethodConfig::FourierFt(config) => {
                put("n_frequency", json!(config.n_frequency));
                put("scaling", json!(config.scaling));
                put("random_loc_seed", json!(config.seed));
                put("init_weights", json!(config.init == Init::Zeros));
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
        if !modules.kernels.is_empty() && !matches!(self.method, MethodConfig::Lora(_)) {
            obj.insert("kernels".into(), json!(modules.kernels));
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

impl MethodConfig {
    /// The method.
    pub fn method(&self) -> Method {
        match self {
            MethodConfig::WaveletFt(_) => Method::WaveletFt,
            MethodConfig::FourierFt(_) => Method::FourierFt,
            MethodConfig::Lora(_) => Method::Lora,
        }
    }
}
