#![allow(clippy::print_stdout)] // a command-line tool reports on stdout
//! `wft`: merge, inspect and take apart WaveletFT / FourierFT / LoRA adapters
//! in Hugging Face PEFT folders (and wft-adapter's native folders), on
//! safetensors checkpoints and GGUF decoders.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use wft_adapter::{
    AdapterModel, BaseShapes, CombineMethod, Dtype, RawTensor, Summary, TensorFile, Weighted, write_atomic,
};
use wft_candle::gguf::Gguf;
use wft_candle::models::llama;

#[derive(Parser, Debug)]
#[command(
    name = "wft",
    version,
    about = "Merge and inspect WaveletFT, FourierFT and LoRA adapters (PEFT folders)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Merge an adapter into a safetensors checkpoint or a Llama-family GGUF
    /// file: adapted weights get ΔW (permuted into GGUF's q/k row order for
    /// a GGUF), every other tensor is copied unchanged. Streams: the base is
    /// memory-mapped and the output written one tensor at a time, so memory
    /// stays near the largest tensor whatever the model's size. The output
    /// is written atomically.
    Merge {
        /// The base checkpoint: a .safetensors file, a sharded checkpoint's
        /// model.safetensors.index.json, a folder holding either, or a
        /// Llama-family .gguf file (then a .gguf comes out).
        #[arg(long)]
        base: PathBuf,
        /// The adapter folder (adapter_config.json + adapter_model.safetensors).
        #[arg(long)]
        adapter: PathBuf,
        /// Where to write the merged checkpoint: a new file, or for a
        /// sharded base a new folder that receives the shards under their
        /// own names and the index. Never the base itself.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing output (atomically; a sharded output folder
        /// must still be empty).
        #[arg(long)]
        force: bool,
        /// For a GGUF base: the type adapted tensors are written in. `source`
        /// re-quantizes to each tensor's own type, which can round away much
        /// of a small update (on SmolLM2's Q4_1, 30% of a WaveFT ΔW's norm
        /// and more than all of a rank-4 LoRA's); `q8_0` and `f16` keep it,
        /// `f32` is exact. Where every adapted tensor keeps its type
        /// (`source`, or an f32/f16 base with that `--dtype`), the file is
        /// copied by the kernel and only the blocks the adapter reaches are
        /// rewritten in place; the others keep their bytes.
        #[arg(long, value_enum, default_value_t = GgufDtype::F32)]
        dtype: GgufDtype,
        /// Where ΔW is built and added: `gpu` uses the adapter wgpu picks
        /// (WGPU_BACKEND / WGPU_ADAPTER_NAME choose; the result matches `cpu`
        /// within 1e-5).
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Describe an adapter folder: method, layers, parameters, file size, and
    /// the LoRA rank with the same parameter count.
    Inspect {
        /// The adapter folder.
        adapter: PathBuf,
        /// The base checkpoint (file, index or folder), for the layer shapes
        /// WaveFT/FourierFT folders do not store.
        #[arg(long)]
        base: Option<PathBuf>,
    },
    /// Write ΔW (out × in, f32) of one adapted module to a safetensors file
    /// (tensor "delta_weight").
    Delta {
        /// The base checkpoint (file, index or folder).
        #[arg(long)]
        base: PathBuf,
        /// The adapter folder.
        #[arg(long)]
        adapter: PathBuf,
        /// The module path, e.g. encoder.layer.0.attention.self.query.
        #[arg(long)]
        module: String,
        /// Where to write ΔW.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing output.
        #[arg(long)]
        force: bool,
    },
    /// Combine adapters of one base into one: a weighted sum, TIES or DARE
    /// of their task vectors (each adapter's coefficients times its own α),
    /// in coefficient space. WaveletFT adapters whose locations differ
    /// combine over the union of their supports (written as a native
    /// WAVELETFT folder); LoRA adapters combine linearly by concatenating
    /// their factors. For `linear` the result's ΔW is `Σ wᵢ·ΔWᵢ`.
    Combine {
        /// An adapter folder (repeat, with one --weight each).
        #[arg(long = "adapter", required = true)]
        adapters: Vec<PathBuf>,
        /// The weight of the --adapter at the same position (all 1 when none is given).
        #[arg(long = "weight", allow_negative_numbers = true)]
        weights: Vec<f64>,
        /// How the task vectors are merged.
        #[arg(long, value_enum, default_value_t = CombineKind::Linear)]
        method: CombineKind,
        /// TIES: the fraction of each adapter's largest coefficients kept;
        /// DARE: the probability of keeping each coefficient. In (0, 1].
        #[arg(long, default_value_t = 0.5)]
        density: f64,
        /// Seed of DARE's drops.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The base model (safetensors file, index or folder, or GGUF), for
        /// the layer shapes PEFT's WaveFT and FourierFT folders do not store.
        #[arg(long)]
        base: Option<PathBuf>,
        /// The folder to write.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing output folder's files.
        #[arg(long)]
        force: bool,
    },
    /// Export an adapter (any method) to a PEFT LoRA folder, for engines
    /// that speak only LoRA: each module's ΔW (transformers layout) truncated
    /// by SVD, `B = U_r Σ_r`, `A = V_rᵀ`, `lora_alpha = r`. Prints each
    /// module's rank and relative error (the Eckart–Young optimum beside it)
    /// and the folder's size.
    #[cfg(feature = "to-lora")]
    ToLora {
        /// The adapter folder.
        #[arg(long)]
        adapter: PathBuf,
        /// The base model (safetensors file, index or folder, or GGUF), for
        /// the layer shapes.
        #[arg(long)]
        base: PathBuf,
        /// The rank of every module.
        #[arg(long, conflicts_with = "energy", required_unless_present = "energy")]
        rank: Option<usize>,
        /// Per module, the smallest rank that keeps this fraction of ‖ΔW‖² (in (0, 1]).
        #[arg(long)]
        energy: Option<f64>,
        /// The LoRA folder to write.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing output folder's files.
        #[arg(long)]
        force: bool,
    },
}

/// How `wft combine` merges task vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CombineKind {
    /// The weighted sum.
    Linear,
    /// TIES-Merging (Yadav et al., 2023): trim, elect signs, disjoint mean.
    Ties,
    /// DARE (Yu et al., 2024): drop and rescale, then sum.
    Dare,
    /// DARE's drops with TIES' sign election and disjoint mean.
    DareTies,
}

/// The type adapted GGUF tensors are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GgufDtype {
    /// f32 (exact).
    F32,
    /// f16.
    F16,
    /// q8_0.
    #[value(name = "q8_0")]
    Q8_0,
    /// Each tensor's own type (re-quantized: costs that type's rounding; see --dtype).
    Source,
}

/// What `wft` reports.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Adapter(#[from] wft_adapter::Error),
    #[error(transparent)]
    Model(#[from] wft_candle::Error),
    #[error(transparent)]
    Gguf(#[from] wft_candle::gguf::GgufError),
}

/// Whether `path` is a GGUF file (by its magic).
fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"GGUF"
}

/// A base model's tensor shapes: a GGUF decoder's (in the transformers
/// layout) or a safetensors checkpoint's.
fn base_shapes(path: &Path) -> Result<Box<dyn BaseShapes>, CliError> {
    if is_gguf(path) {
        let gguf = Gguf::open(path)?;
        Ok(Box::new(llama::base_shapes(path, &llama::Config::from_gguf(&gguf)?)))
    } else {
        Ok(Box::new(TensorFile::open(path)?))
    }
}

/// Whether `a` and `b` are the same file (so that a merge never writes over its base).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Where a merge computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Device {
    /// The CPU (rayon threads).
    Cpu,
    /// A GPU through wgpu.
    Gpu,
}

/// `wft merge` onto a GGUF decoder.
fn merge_gguf(base: &Path, adapter: &Path, out: &Path, dtype: GgufDtype, device: Device) -> Result<(), CliError> {
    if device == Device::Gpu {
        return Err(wft_adapter::Error::Invalid {
            what: "--device gpu".into(),
            reason: "GGUF merges run on the CPU".into(),
        }
        .into());
    }
    if same_file(base, out) {
        return Err(wft_adapter::Error::OutputExists {
            path: out.to_path_buf(),
            reason: "is the base model itself".into(),
        }
        .into());
    }
    let gguf = Gguf::open(base)?;
    let config = llama::Config::from_gguf(&gguf)?;
    let model = AdapterModel::load_for(adapter, &llama::base_shapes(base, &config))?;
    let dtype = match dtype {
        GgufDtype::F32 => llama::MergeDtype::F32,
        GgufDtype::F16 => llama::MergeDtype::F16,
        GgufDtype::Q8_0 => llama::MergeDtype::Q8_0,
        GgufDtype::Source => llama::MergeDtype::Source,
    };
    let report = llama::merge_gguf(&gguf, &model, out, dtype)?;
    println!(
        "merged {} tensors ({}), copied {} tensors byte for byte -> {}",
        report.replaced.len(),
        model.config().peft_type(),
        report.copied,
        out.display()
    );
    Ok(())
}

/// Die of SIGPIPE like other Unix tools when the reader of our output goes
/// away (`wft inspect … | head`), instead of panicking in `println!`.
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal, before any
    // other thread exists; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    default_sigpipe();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An existing output is refused unless `--force`: one typo should not
/// cost a 100 GB checkpoint.
fn refuse_existing(out: &Path, force: bool) -> wft_adapter::Result<()> {
    // `symlink_metadata`: a dangling link is an existing path too.
    if !force && std::fs::symlink_metadata(out).is_ok() {
        return Err(wft_adapter::Error::OutputExists {
            path: out.to_path_buf(),
            reason: "exists; pass --force to replace it".into(),
        });
    }
    Ok(())
}

fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Merge {
            base,
            adapter,
            out,
            force,
            dtype,
            device,
            quiet,
        } => {
            refuse_existing(&out, force)?;
            if is_gguf(&base) {
                return merge_gguf(&base, &adapter, &out, dtype, device);
            }
            #[cfg(feature = "gpu")]
            let gpu = match device {
                Device::Gpu => {
                    let ctx = wft_adapter::dwt_gpu::Context::new().map_err(wft_adapter::Error::from)?;
                    if !quiet {
                        eprintln!("merging on {}", ctx.describe());
                    }
                    Some(ctx)
                }
                Device::Cpu => None,
            };
            #[cfg(not(feature = "gpu"))]
            if device == Device::Gpu {
                return Err(wft_adapter::Error::Invalid {
                    what: "--device gpu".into(),
                    reason: "this wft was built without the `gpu` feature".into(),
                }
                .into());
            }
            let base = TensorFile::open(&base)?;
            let model = AdapterModel::load(&adapter, Some(&base))?;
            let bar = if quiet {
                ProgressBar::hidden()
            } else {
                ProgressBar::new(base.names().len() as u64)
            };
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} tensors {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let mut progress = |done: usize, _| bar.set_position(done as u64);
            #[cfg(feature = "gpu")]
            let report = match &gpu {
                Some(ctx) => model.merge_gpu(&base, &out, ctx, &mut progress)?,
                None => model.merge(&base, &out, &mut progress)?,
            };
            #[cfg(not(feature = "gpu"))]
            let report = model.merge(&base, &out, &mut progress)?;
            bar.finish_and_clear();
            println!(
                "merged {} weights ({}), copied {} tensors unchanged -> {}",
                report.merged.len(),
                model.config().peft_type(),
                report.copied,
                out.display()
            );
            Ok(())
        }
        Command::Inspect { adapter, base } => {
            let shapes = base.as_deref().map(base_shapes).transpose()?;
            let s = Summary::read(&adapter, shapes.as_deref())?;
            println!("adapter     {}", adapter.display());
            println!("method      {} (peft_type {})", s.method, s.peft_type);
            println!("layers      {}", s.modules.len());
            println!("parameters  {}", s.total_params());
            println!("file size   {} bytes", s.file_size);
            match s.equivalent_lora_rank() {
                Some(r) => println!("LoRA rank with the same parameter count: {r:.2}"),
                None => println!("LoRA rank with the same parameter count: unknown (pass --base for layer shapes)"),
            }
            println!();
            println!("{:<60} {:>12} {:>10}", "module", "shape", "params");
            for m in &s.modules {
                let mut shape = m.shape.map_or("?".to_string(), |(o, i)| format!("{o}×{i}"));
                if let wft_adapter::WeightLayout::Conv2d { kernel: [kh, kw] } = m.layout {
                    shape = format!("{shape} (conv {kh}×{kw})");
                }
                println!("{:<60} {:>12} {:>10}", m.path, shape, m.params);
            }
            Ok(())
        }
        Command::Combine {
            adapters,
            weights,
            method,
            density,
            seed,
            base,
            out,
            force,
        } => {
            refuse_existing(&out, force)?;
            let weights = if weights.is_empty() {
                vec![1.0; adapters.len()]
            } else {
                weights
            };
            if weights.len() != adapters.len() {
                return Err(wft_adapter::Error::Invalid {
                    what: "--weight".into(),
                    reason: format!(
                        "{} weights for {} adapters: give one per --adapter",
                        weights.len(),
                        adapters.len()
                    ),
                }
                .into());
            }
            let shapes = base.as_deref().map(base_shapes).transpose()?;
            let models = adapters
                .iter()
                .map(|a| match &shapes {
                    Some(b) => AdapterModel::load_for(a, b.as_ref()),
                    None => AdapterModel::load(a, None),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let inputs: Vec<Weighted<'_>> = models
                .iter()
                .zip(&weights)
                .map(|(model, &weight)| Weighted { model, weight })
                .collect();
            let method = match method {
                CombineKind::Linear => CombineMethod::Linear,
                CombineKind::Ties => CombineMethod::Ties { density },
                CombineKind::Dare => CombineMethod::Dare { density, seed },
                CombineKind::DareTies => CombineMethod::DareTies { density, seed },
            };
            let combined = AdapterModel::combine(&inputs, method)?;
            combined.save(&out)?;
            println!(
                "combined {} adapters ({method:?}, {} modules, {} parameters, {}) -> {}",
                models.len(),
                combined.modules().len(),
                combined.num_params(),
                combined.config().peft_type(),
                out.display()
            );
            Ok(())
        }
        #[cfg(feature = "to-lora")]
        Command::ToLora {
            adapter,
            base,
            rank,
            energy,
            out,
            force,
        } => {
            refuse_existing(&out, force)?;
            let shapes = base_shapes(&base)?;
            let model = AdapterModel::load_for(&adapter, shapes.as_ref())?;
            let choice = match (rank, energy) {
                (Some(r), _) => wft_adapter::LoraRank::Rank(r),
                (None, Some(f)) => wft_adapter::LoraRank::Energy(f),
                (None, None) => wft_adapter::LoraRank::Rank(8),
            };
            let export = model.to_lora(choice)?;
            export.adapter.save(&out)?;
            println!("{:<60} {:>5} {:>12} {:>12}", "module", "rank", "rel. error", "optimum");
            for (m, t) in &export.modules {
                println!("{m:<60} {:>5} {:>12.3e} {:>12.3e}", t.rank, t.error, t.optimal);
            }
            let size: u64 = [wft_adapter::CONFIG_FILE, wft_adapter::WEIGHTS_FILE]
                .iter()
                .filter_map(|f| std::fs::metadata(out.join(f)).ok())
                .map(|m| m.len())
                .sum();
            println!(
                "LoRA of {} modules, {} parameters, {size} bytes -> {}",
                export.modules.len(),
                export.adapter.num_params(),
                out.display()
            );
            Ok(())
        }
        Command::Delta {
            base,
            adapter,
            module,
            out,
            force,
        } => {
            refuse_existing(&out, force)?;
            let base = TensorFile::open(&base)?;
            let model = AdapterModel::load(&adapter, Some(&base))?;
            let d = model.delta(&module)?;
            let (o, i) = d.dim();
            let values: Vec<f32> = d.iter().copied().collect();
            // A convolution's ΔW in its weight's `[out, in, kh, kw]` shape.
            let shape = model
                .layout(&module)
                .stored_shape((o, i), wft_adapter::Orientation::Normal);
            let t = RawTensor::from_f32_as(Dtype::F32, &shape, &values)?;
            write_atomic(&out, [("delta_weight".to_string(), &t)], None)?;
            println!("ΔW of {module} ({shape:?}) -> {}", out.display());
            Ok(())
        }
    }
}
