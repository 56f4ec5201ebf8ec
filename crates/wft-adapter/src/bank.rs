//! Many adapters of one base, loaded on first use and kept within a memory
//! budget: the store a server or a mixed-adapter batch draws from.
//!
//! Adapters are registered by name (a folder each, PEFT or native) and
//! loaded when first asked for. Loaded adapters are kept while their
//! [`AdapterModel::memory_bytes`] fit the budget; past it, the least
//! recently used ones are dropped (a caller still holding one keeps it
//! alive). Every method takes `&self`: the bank is shared between threads
//! behind an `Arc`, and a load runs outside the lock, so readers of loaded
//! adapters never wait for a slow disk.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::model::{AdapterModel, ModuleAdapter};
use crate::{BaseShapes, CONFIG_FILE, Error, Result};

/// The base model's shapes, shared by every load.
pub type SharedShapes = Arc<dyn BaseShapes + Send + Sync>;

/// A named set of adapter folders, loaded lazily within a byte budget.
pub struct AdapterBank {
    base: Option<SharedShapes>,
    budget: usize,
    sources: BTreeMap<String, PathBuf>,
    state: Mutex<State>,
}

impl std::fmt::Debug for AdapterBank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterBank")
            .field("budget", &self.budget)
            .field("sources", &self.sources)
            .field("report", &self.report())
            .finish()
    }
}

#[derive(Debug, Default)]
struct State {
    loaded: HashMap<String, Entry>,
    clock: u64,
    bytes: usize,
    loads: u64,
    evictions: u64,
}

#[derive(Debug)]
struct Entry {
    model: Arc<AdapterModel>,
    bytes: usize,
    used: u64,
}

/// What an [`AdapterBank`] holds, from [`AdapterBank::report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankReport {
    /// The budget in bytes.
    pub budget: usize,
    /// Bytes of the adapters loaded now.
    pub bytes: usize,
    /// The adapters loaded now with their bytes, most recently used first.
    pub loaded: Vec<(String, usize)>,
    /// Every registered name.
    pub registered: Vec<String>,
    /// Loads from disk so far.
    pub loads: u64,
    /// Adapters dropped for the budget so far.
    pub evictions: u64,
}

impl AdapterBank {
    /// An empty bank of `budget` bytes. `base` gives the layer shapes that
    /// PEFT's WaveFT and FourierFT folders do not store (native and LoRA
    /// folders load without it).
    pub fn new(budget: usize, base: Option<SharedShapes>) -> Self {
        AdapterBank {
            base,
            budget,
            sources: BTreeMap::new(),
            state: Mutex::new(State::default()),
        }
    }

    /// Register the adapter folder `dir` as `name` (nothing is read yet).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a name that is empty, has a path separator,
    /// starts with a dot or is taken, and for a folder without an
    /// `adapter_config.json`.
    pub fn register(&mut self, name: &str, dir: impl Into<PathBuf>) -> Result<()> {
        check_name(name)?;
        if self.sources.contains_key(name) {
            return Err(Error::invalid(format!("adapter name {name:?}"), "registered twice"));
        }
        let dir = dir.into();
        if !dir.join(CONFIG_FILE).is_file() {
            return Err(Error::invalid(
                format!("adapter {name:?}"),
                format!("{} has no {CONFIG_FILE}", dir.display()),
            ));
        }
        self.sources.insert(name.to_string(), dir);
        Ok(())
    }

    /// Register every sub-folder of `dir` that holds an `adapter_config.json`,
    /// under its own name. Symbolic links are skipped: a name can never
    /// reach outside `dir`.
    ///
    /// # Errors
    /// [`Error::Io`] when `dir` cannot be read, and [`AdapterBank::register`]'s.
    pub fn register_dir(&mut self, dir: &Path) -> Result<usize> {
        let mut n = 0;
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut names: Vec<(String, PathBuf)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let kind = entry.file_type().map_err(|e| Error::io(dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if kind.is_dir()
                && !kind.is_symlink()
                && entry.path().join(CONFIG_FILE).is_file()
                && check_name(&name).is_ok()
            {
                names.push((name, entry.path()));
            }
        }
        names.sort();
        for (name, path) in names {
            self.register(&name, path)?;
            n += 1;
        }
        Ok(n)
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.sources.contains_key(name)
    }

    /// The adapter `name`: from memory, or loaded now and kept if the budget
    /// allows (the least recently used others dropped to make room).
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unknown name, [`Error::OverBudget`] for an
    /// adapter larger than the whole budget (it is not kept), and the load's
    /// errors (a bad folder, an adapter that does not fit the base).
    pub fn get(&self, name: &str) -> Result<Arc<AdapterModel>> {
        let dir = self.sources.get(name).ok_or_else(|| {
            Error::invalid(
                format!("adapter {name:?}"),
                format!(
                    "not registered (known: {:?})",
                    self.sources.keys().take(8).collect::<Vec<_>>()
                ),
            )
        })?;
        {
            let mut state = self.lock();
            state.clock += 1;
            let clock = state.clock;
            if let Some(e) = state.loaded.get_mut(name) {
                e.used = clock;
                return Ok(e.model.clone());
            }
        }
        // Load outside the lock; two threads may load the same adapter at
        // once, and the second insert finds the first.
        let model = match &self.base {
            Some(base) => AdapterModel::load_for(dir, base.as_ref())?,
            None => AdapterModel::load(dir, None)?,
        };
        let bytes = model.memory_bytes();
        if bytes > self.budget {
            return Err(Error::OverBudget {
                name: name.to_string(),
                bytes,
                budget: self.budget,
            });
        }
        let model = Arc::new(model);
        let mut state = self.lock();
        state.loads += 1;
        state.clock += 1;
        let clock = state.clock;
        if let Some(e) = state.loaded.get_mut(name) {
            e.used = clock;
            return Ok(e.model.clone());
        }
        while state.bytes + bytes > self.budget {
            let Some(oldest) = state.loaded.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone()) else {
                break;
            };
            if let Some(e) = state.loaded.remove(&oldest) {
                state.bytes -= e.bytes;
                state.evictions += 1;
            }
        }
        state.bytes += bytes;
        state.loaded.insert(
            name.to_string(),
            Entry {
                model: model.clone(),
                bytes,
                used: clock,
            },
        );
        Ok(model)
    }

    /// What the bank holds now.
    pub fn report(&self) -> BankReport {
        let state = self.lock();
        let mut loaded: Vec<(u64, String, usize)> =
            state.loaded.iter().map(|(k, e)| (e.used, k.clone(), e.bytes)).collect();
        loaded.sort_by_key(|e| std::cmp::Reverse(e.0));
        BankReport {
            budget: self.budget,
            bytes: state.bytes,
            loaded: loaded.into_iter().map(|(_, k, b)| (k, b)).collect(),
            registered: self.sources.keys().cloned().collect(),
            loads: state.loads,
            evictions: state.evictions,
        }
    }

    /// The state lock; every update leaves the state consistent before it
    /// can panic, so a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A name that can be a folder name inside the bank's folder and nothing else.
fn check_name(name: &str) -> Result<()> {
    let bad = name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) || name.len() > 255;
    if bad {
        return Err(Error::invalid(
            format!("adapter name {name:?}"),
            "names are plain folder names: not empty, no path separators, not starting with a dot",
        ));
    }
    Ok(())
}

impl AdapterModel {
    /// About how many bytes of memory the adapters take: their parameters
    /// and, for WaveletFT, the atoms and locations (FourierFT adds its
    /// frequencies). Not counted: allocator overhead and the config.
    pub fn memory_bytes(&self) -> usize {
        self.modules
            .iter()
            .map(|(path, m)| {
                let a = m.as_adapter();
                let extra = match m {
                    ModuleAdapter::WaveletFt(w) => {
                        let atoms = w.atoms();
                        4 * (atoms.rows().support() + atoms.cols().support())
                            + 40 * (atoms.rows().len() + atoms.cols().len())
                            + (std::mem::size_of::<dwt_core::Location>() + 16) * w.locations().len()
                    }
                    ModuleAdapter::FourierFt(f) => 16 * f.frequencies().len(),
                    ModuleAdapter::Lora(_) => 0,
                };
                path.len() + 4 * a.num_params() + extra
            })
            .sum()
    }
}
