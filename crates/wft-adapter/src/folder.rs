//! Adapter folders: `adapter_config.json` and `adapter_model.safetensors`.
//!
//! Tensor keys are `base_model.model.<module path>.<suffix>`, one table
//! ([`TensorRole`]) for loading, saving and summaries:
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
//! Both files are written atomically (see [`crate::write_atomic`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use dwt_core::Location;
use ndarray::Array2;

use crate::config::{AdapterConfig, MethodConfig, ModulePlan, ModuleShapes, PeftType};
use crate::model::{AdapterModel, ModuleAdapter, ModuleWeight, module_shape};
use crate::shapes::{BaseShapes, WeightLayout};
use crate::tensors::{RawTensor, TensorFile, read_text_capped, text_capped, write_atomic, write_text_atomic};
use crate::{Adapter, Error, FourierFt, Init, Lora, Result, WaveletFt, WaveletFtConfig};

/// The config file's name.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// The weights file's name.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The prefix PEFT puts before module paths.
pub const KEY_PREFIX: &str = "base_model.model.";

/// What one stored tensor of a module is: the per-method tensor table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TensorRole {
    /// WaveFT's `[n]` spectrum.
    WaveFtSpectrum,
    /// FourierFT's `[n]` spectrum.
    FourierFtSpectrum,
    /// The native format's `[n]` coefficients.
    Coefficients,
    /// The native format's `[n, 3]` (band, row, column) locations.
    Locations,
    /// LoRA's `[r, in]` A.
    LoraA,
    /// LoRA's `[out, r]` B.
    LoraB,
}

impl TensorRole {
    pub(crate) const ALL: [TensorRole; 6] = [
        TensorRole::WaveFtSpectrum,
        TensorRole::FourierFtSpectrum,
        TensorRole::Coefficients,
        TensorRole::Locations,
        TensorRole::LoraA,
        TensorRole::LoraB,
    ];

    /// The key suffix after the module path.
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            TensorRole::WaveFtSpectrum => ".waveft_spectrum",
            TensorRole::FourierFtSpectrum => ".fourierft_spectrum",
            TensorRole::Coefficients => ".waveletft_coefficients",
            TensorRole::Locations => ".waveletft_locations",
            TensorRole::LoraA => ".lora_A.weight",
            TensorRole::LoraB => ".lora_B.weight",
        }
    }

    /// Whether its values are trainable parameters (locations are not).
    pub(crate) fn trainable(self) -> bool {
        self != TensorRole::Locations
    }

    /// The key of this tensor of `module`.
    pub(crate) fn key(self, module: &str) -> String {
        format!("{KEY_PREFIX}{module}{}", self.suffix())
    }

    /// The module path and role of a key, if it is an adapter tensor's.
    pub(crate) fn parse(key: &str) -> Option<(&str, TensorRole)> {
        let rest = key.strip_prefix(KEY_PREFIX)?;
        Self::ALL
            .into_iter()
            .find_map(|r| rest.strip_suffix(r.suffix()).map(|m| (m, r)))
    }

    /// The module paths of `file` that carry this tensor.
    fn modules(self, file: &TensorFile) -> Vec<String> {
        file.names()
            .iter()
            .filter_map(|k| match Self::parse(k) {
                Some((m, r)) if r == self => Some(m.to_string()),
                _ => None,
            })
            .collect()
    }
}

/// A 1-D f32 tensor of any length.
fn vector(file: &TensorFile, key: &str, what: &str) -> Result<Vec<f32>> {
    let a = file.f32(key, what)?;
    if a.ndim() != 1 {
        return Err(Error::ShapeMismatch {
            path: file.path().to_path_buf(),
            tensor: key.into(),
            found: a.shape().to_vec(),
            expected: "a vector".into(),
        });
    }
    Ok(a.into_raw_vec_and_offset().0)
}

/// A 2-D f32 tensor of the given shape (`None`: any size).
pub(crate) fn matrix(file: &TensorFile, key: &str, shape: [Option<usize>; 2], what: &str) -> Result<Array2<f32>> {
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

/// LoRA's factors as matrices `A: r × in`, `B: out × r`, and the layout
/// they belong to: 2-D factors are a linear layer's; PEFT's convolution
/// factors are `A: [r, in, kh, kw]` and `B: [out, r, 1, 1]`.
fn lora_factors(file: &TensorFile, ka: &str, kb: &str, r: usize) -> Result<(Array2<f32>, Array2<f32>, WeightLayout)> {
    let shape_a = file.info(ka).map(|(_, s)| s.to_vec()).unwrap_or_default();
    let [ra, _, kh, kw] = shape_a[..] else {
        let a = matrix(file, ka, [Some(r), None], "LoRA A (r × in)")?;
        let b = matrix(file, kb, [None, Some(r)], "LoRA B (out × r)")?;
        return Ok((a, b, WeightLayout::Linear));
    };
    let mismatch = |key: &str, found: Vec<usize>, expected: String| Error::ShapeMismatch {
        path: file.path().to_path_buf(),
        tensor: key.into(),
        found,
        expected,
    };
    if ra != r || kh == 0 || kw == 0 {
        return Err(mismatch(
            ka,
            shape_a,
            format!("[{r}, in, kh, kw] (a convolution's LoRA A)"),
        ));
    }
    let a = weight_matrix(file, ka, "LoRA A (r × in × kh × kw)")?;
    let shape_b = file.info(kb).map(|(_, s)| s.to_vec()).unwrap_or_default();
    if !matches!(shape_b[..], [_, rb, 1, 1] if rb == r) {
        let b = file.f32(kb, "LoRA B (out × r × 1 × 1)")?;
        return Err(mismatch(
            kb,
            b.shape().to_vec(),
            format!("[out, {r}, 1, 1] (a convolution's LoRA B)"),
        ));
    }
    let b = weight_matrix(file, kb, "LoRA B (out × r × 1 × 1)")?;
    Ok((a, b, WeightLayout::Conv2d { kernel: [kh, kw] }))
}

/// A base weight as its `out × in` matrix: a 2-D weight as stored, a 4-D
/// convolution weight `[out, in, kh, kw]` flattened to `out × (in·kh·kw)`.
pub(crate) fn weight_matrix(file: &TensorFile, key: &str, what: &str) -> Result<Array2<f32>> {
    let a = file.f32(key, what)?;
    let shape = a.shape().to_vec();
    let mismatch = || Error::ShapeMismatch {
        path: file.path().to_path_buf(),
        tensor: key.into(),
        found: shape.clone(),
        expected: "a 2-D linear weight or a 4-D convolution weight".into(),
    };
    let (rows, cols) = WeightLayout::matrix_shape(&shape).ok_or_else(mismatch)?;
    let values = a.as_standard_layout().iter().copied().collect();
    Array2::from_shape_vec((rows, cols), values).map_err(|_| mismatch())
}

/// A folder's two files, read but not interpreted: the config's text (size
/// capped, UTF-8; its keys are checked when it is parsed) and the weights.
pub(crate) struct Folder {
    pub(crate) config: String,
    pub(crate) config_path: PathBuf,
    pub(crate) weights: TensorFile,
}

impl Folder {
    /// From a folder on disk.
    pub(crate) fn read(dir: &Path) -> Result<Self> {
        let config_path = dir.join(CONFIG_FILE);
        Ok(Folder {
            config: read_text_capped(&config_path)?,
            weights: TensorFile::open(dir.join(WEIGHTS_FILE))?,
            config_path,
        })
    }

    /// From memory; errors name the files in a folder called `<memory>`.
    pub(crate) fn from_bytes(config: &[u8], weights: Vec<u8>) -> Result<Self> {
        let dir = Path::new("<memory>");
        let config_path = dir.join(CONFIG_FILE);
        Ok(Folder {
            config: text_capped(config, &config_path)?.to_string(),
            weights: TensorFile::from_bytes(dir.join(WEIGHTS_FILE), weights)?,
            config_path,
        })
    }
}

/// Name the tensor an adapter-construction error came from.
fn in_tensor(file: &TensorFile, tensor: &str, e: Error) -> Error {
    Error::invalid(format!("{} tensor {tensor:?}", file.path().display()), e.to_string())
}

impl AdapterModel {
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
        Self::from_folder(&Folder::read(dir.as_ref())?, base.map(|b| b as &dyn BaseShapes))
    }

    /// [`AdapterModel::load`] onto a base known by its tensors' names and
    /// shapes only (a GGUF file, a model built in memory: see
    /// [`ShapeMap`](crate::ShapeMap)).
    ///
    /// # Errors
    /// As [`AdapterModel::load`].
    pub fn load_for(dir: impl AsRef<Path>, base: &dyn BaseShapes) -> Result<Self> {
        Self::from_folder(&Folder::read(dir.as_ref())?, Some(base))
    }

    /// [`AdapterModel::load`] from memory: the config's JSON text and the
    /// weights file's bytes (for adapters that arrive over a network, and
    /// for fuzzing). Errors name `adapter_config.json` and
    /// `adapter_model.safetensors` in a folder called `<memory>`.
    ///
    /// # Errors
    /// As [`AdapterModel::load`].
    pub fn from_bytes(config: &[u8], weights: Vec<u8>, base: Option<&TensorFile>) -> Result<Self> {
        Self::from_folder(
            &Folder::from_bytes(config, weights)?,
            base.map(|b| b as &dyn BaseShapes),
        )
    }

    fn from_folder(folder: &Folder, base: Option<&dyn BaseShapes>) -> Result<Self> {
        let (cfg_path, file) = (&folder.config_path, &folder.weights);
        let (config, shapes) = AdapterConfig::from_json(&folder.config, cfg_path)?;
        let orient = config.orientation;
        let weight_in_base = |m: &str| -> Result<ModuleWeight> {
            let base = base.ok_or_else(|| {
                Error::invalid(
                    "base model",
                    format!(
                        "{} adapters store no locations: pass the base model to load them",
                        config.peft_type()
                    ),
                )
            })?;
            module_shape(base, m, orient)
        };
        let shape_from_base = |m: &str| -> Result<(usize, usize)> { Ok(weight_in_base(m)?.shape) };
        // The layout a folder's `"kernels"` records for a module: it must
        // fit the `(out, in)` the native format records (`shape`) and be the
        // base's when a base is given.
        let layout_of = |m: &str, shape: Option<(usize, usize)>| -> Result<WeightLayout> {
            if let Some(k) = shapes.kernels.get(m).filter(|k| k.contains(&0)) {
                return Err(Error::Json {
                    path: cfg_path.clone(),
                    reason: format!("\"kernels\" has an empty kernel {k:?} for module {m:?}"),
                });
            }
            let layout = WeightLayout::from_kernel(shapes.kernels.get(m));
            if let Some(shape) = shape.filter(|&s| !layout.fits(s)) {
                return Err(Error::Json {
                    path: cfg_path.clone(),
                    reason: format!(
                        "module {m:?}: {} columns are not a whole number of {:?} kernels",
                        shape.1,
                        layout.kernel().unwrap_or_default()
                    ),
                });
            }
            let Some(base) = base else { return Ok(layout) };
            let w = module_shape(base, m, orient)?;
            if w.layout == layout {
                return Ok(layout);
            }
            Err(Error::ShapeMismatch {
                path: base.base_path().to_path_buf(),
                found: w.stored(orient),
                tensor: w.key,
                expected: format!(
                    "a {} weight, as {} records for {m:?}",
                    match layout.kernel() {
                        None => "linear".to_string(),
                        Some([kh, kw]) => format!("{kh}×{kw} convolution"),
                    },
                    cfg_path.display()
                ),
            })
        };
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
        // PEFT's spectra (WaveFT, FourierFT): one vector per module, its
        // locations regenerated from the base's shapes.
        type Build<'a> = dyn Fn(Vec<f32>, (usize, usize)) -> Result<ModuleAdapter> + 'a;
        let spectra =
            |role: TensorRole, what: &str, build: &Build<'_>| -> Result<Vec<(String, String, ModuleAdapter)>> {
                role.modules(file)
                    .into_iter()
                    .map(|m| {
                        let k = role.key(&m);
                        let values = vector(file, &k, what)?;
                        check_n(&m, &k, values.len())?;
                        let a = build(values, shape_from_base(&m)?).map_err(|e| in_tensor(file, &k, e))?;
                        Ok((m, k, a))
                    })
                    .collect()
            };
        let mut modules = BTreeMap::new();
        let mut layouts: BTreeMap<String, WeightLayout> = BTreeMap::new();
        let mut expected_keys = Vec::new();
        let native = TensorRole::Coefficients.modules(file);
        match &config.method {
            // Native tensors carry their locations, whatever the config
            // could also be expressed as (a PEFT-compatible config saved natively).
            MethodConfig::WaveletFt(c) if !native.is_empty() => {
                for m in native {
                    let (kc, kl) = (TensorRole::Coefficients.key(&m), TensorRole::Locations.key(&m));
                    let values = vector(file, &kc, "WaveletFT coefficients")?;
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
                    let shape = *shapes.shapes.get(&m).ok_or_else(|| Error::Json {
                        path: cfg_path.clone(),
                        reason: format!("\"shapes\" has no entry for module {m:?}"),
                    })?;
                    layouts.insert(m.clone(), layout_of(&m, Some(shape))?);
                    let geometry = crate::Geometry::new(c.layout, &c.wavelet, c.mode, c.level, shape)
                        .map_err(|e| in_tensor(file, &kl, e))?;
                    let flat = locs.into_raw_vec_and_offset().0;
                    let locations = flat
                        .chunks_exact(3)
                        .map(|c| {
                            let u = |v: i64| usize::try_from(v).map_err(|_| bad(&kl));
                            geometry
                                .location(u(c[0])?, u(c[1])?, u(c[2])?)
                                .map_err(|e| in_tensor(file, &kl, e))
                        })
                        .collect::<Result<Vec<Location>>>()?;
                    if base.is_some() && shape_from_base(&m)? != shape {
                        return Err(Error::ShapeMismatch {
                            path: cfg_path.clone(),
                            tensor: m.clone(),
                            found: vec![shape.0, shape.1],
                            expected: format!("{:?}, the base model's shape", shape_from_base(&m)?),
                        });
                    }
                    // `geometry.location` checked every location already.
                    let a = WaveletFt::build(c.clone(), geometry, locations, values)
                        .map_err(|e| in_tensor(file, &kl, e))?;
                    modules.insert(m, a.into());
                    expected_keys.extend([kc, kl]);
                }
            }
            MethodConfig::WaveletFt(c) => {
                let build = |values: Vec<f32>, shape| -> Result<ModuleAdapter> {
                    // Zeros: the stored values replace them at once.
                    let c = WaveletFtConfig {
                        n_frequency: values.len(),
                        init: Init::Zeros,
                        ..c.clone()
                    };
                    let mut a = WaveletFt::new(&c, shape)?;
                    a.params_mut().copy_from_slice(&values);
                    Ok(a.into())
                };
                for (m, k, a) in spectra(TensorRole::WaveFtSpectrum, "WaveFT spectrum", &build)? {
                    layouts.insert(m.clone(), layout_of(&m, None)?);
                    modules.insert(m, a);
                    expected_keys.push(k);
                }
            }
            MethodConfig::FourierFt(c) => {
                let build = |values, shape| Ok(FourierFt::from_spectrum(c, shape, values)?.into());
                for (m, k, a) in spectra(TensorRole::FourierFtSpectrum, "FourierFT spectrum", &build)? {
                    layouts.insert(m.clone(), layout_of(&m, None)?);
                    modules.insert(m, a);
                    expected_keys.push(k);
                }
            }
            MethodConfig::Lora(c) => {
                for m in TensorRole::LoraA.modules(file) {
                    let (ka, kb) = (TensorRole::LoraA.key(&m), TensorRole::LoraB.key(&m));
                    let c = config.lora_for(c, &m)?;
                    let (a, b, layout) = lora_factors(file, &ka, &kb, c.r)?;
                    if let Some(base) = base {
                        let w = module_shape(base, &m, orient)?;
                        let want = (b.nrows(), a.ncols());
                        if w.shape != want || w.layout != layout {
                            return Err(Error::ShapeMismatch {
                                path: base.base_path().to_path_buf(),
                                found: w.stored(orient),
                                tensor: w.key,
                                expected: format!(
                                    "{:?} to fit the LoRA factors of {m:?} in {}",
                                    layout.stored_shape(want, orient),
                                    file.path().display()
                                ),
                            });
                        }
                    }
                    layouts.insert(m.clone(), layout);
                    modules.insert(m, Lora::from_factors(&c, a, b)?.into());
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
        let mut model = AdapterModel {
            config,
            modules,
            convolutions: BTreeMap::new(),
        };
        for (m, layout) in layouts {
            model.record_layout(&m, layout);
        }
        Ok(model)
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
        let mut stored = ModuleShapes {
            kernels: self.convolutions.clone(),
            ..ModuleShapes::default()
        };
        let native = self.config.folder_type(!self.convolutions.is_empty()) == PeftType::WaveletFt;
        for (m, a) in &self.modules {
            let k = |role: TensorRole| role.key(m);
            match a {
                ModuleAdapter::WaveletFt(w) if native => {
                    stored.shapes.insert(m.clone(), w.shape());
                    tensors.push((
                        k(TensorRole::Coefficients),
                        RawTensor::from_f32(&[w.num_params()], w.params()),
                    ));
                    let mut locs: Vec<i64> = Vec::with_capacity(3 * w.num_params());
                    for &c in w.locations() {
                        let band = w.geometry().band_index(c)?;
                        locs.extend([band as i64, c.row as i64, c.col as i64]);
                    }
                    tensors.push((
                        k(TensorRole::Locations),
                        RawTensor::from_i64(&[w.num_params(), 3], &locs),
                    ));
                }
                ModuleAdapter::WaveletFt(w) => {
                    tensors.push((
                        k(TensorRole::WaveFtSpectrum),
                        RawTensor::from_f32(&[w.num_params()], w.params()),
                    ));
                }
                ModuleAdapter::FourierFt(f) => {
                    tensors.push((
                        k(TensorRole::FourierFtSpectrum),
                        RawTensor::from_f32(&[f.num_params()], f.params()),
                    ));
                }
                ModuleAdapter::Lora(l) => {
                    let (out, inp) = l.shape();
                    let r = l.rank();
                    let a: Vec<f32> = l.a().iter().copied().collect();
                    let b: Vec<f32> = l.b().iter().copied().collect();
                    // PEFT's convolution LoRA: A is a conv `[r, in, kh, kw]`,
                    // B a 1×1 conv `[out, r, 1, 1]`.
                    let (sa, sb) = match self.layout(m) {
                        WeightLayout::Linear => (vec![r, inp], vec![out, r]),
                        WeightLayout::Conv2d { kernel: [kh, kw] } => {
                            (vec![r, inp / (kh * kw).max(1), kh, kw], vec![out, r, 1, 1])
                        }
                    };
                    tensors.push((k(TensorRole::LoraA), RawTensor::from_f32(&sa, &a)));
                    tensors.push((k(TensorRole::LoraB), RawTensor::from_f32(&sb, &b)));
                }
            }
        }
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        write_atomic(
            &dir.join(WEIGHTS_FILE),
            tensors.iter().map(|(k, t)| (k.clone(), t)),
            Some(meta),
        )?;
        let text = serde_json::to_string_pretty(&self.config.to_json(&stored)).map_err(|e| Error::Json {
            path: dir.join(CONFIG_FILE),
            reason: e.to_string(),
        })?;
        write_text_atomic(&dir.join(CONFIG_FILE), &text)
    }
}
