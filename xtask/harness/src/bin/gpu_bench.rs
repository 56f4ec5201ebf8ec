//! `cargo xtask bench --gpu` runs this: build, check and time every kernel
//! on the adapter wgpu picks, against dwt-core on the CPU in the same run,
//! with a buffer copy as the memory-bandwidth reference. Prints a Markdown
//! table (and writes it to `--markdown FILE`).
//!
//! ```text
//! cargo run --release -p xtask-harness --features gpu --bin gpu_bench -- [--quick] [--markdown FILE]
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::fmt::Write as _;
use std::time::Instant;

use dwt_core::{Level, Mode, Wavelet, wavedec2, waverec2};
use dwt_gpu::{Context, Dwt2, Orientation, SeparableBasis, SparsePlan};
use ndarray::Array2;

#[path = "../../../../crates/dwt-gpu/benches/support/mod.rs"]
mod support;
use support::{data, locations, scatter};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Median wall time of `reps` runs of `f` (after one warm-up), seconds.
fn time(reps: usize, mut f: impl FnMut() -> Res) -> Res<f64> {
    f()?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

fn rel(a: &Array2<f32>, b: &Array2<f64>) -> f64 {
    let scale = b.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((f64::from(*x) - y).abs())) / scale
}

struct Row {
    op: String,
    shape: (usize, usize),
    gpu: f64,
    cpu: Option<f64>,
    /// Bytes a full-matrix pass moves (read + write), for the bandwidth share.
    bytes: f64,
    err: Option<f64>,
    note: String,
}

fn main() -> Res {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let markdown = args
        .iter()
        .position(|a| a == "--markdown")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let reps = if quick { 3 } else { 10 };
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.describe());
    println!("max binding: {} MiB", ctx.max_binding_bytes() >> 20);

    // Memory bandwidth: copy 256 MiB (or what one buffer may hold).
    let elems = ((256u64 << 20) / 4).min(ctx.limits().max_buffer_size / 4) as usize;
    let (a, b) = (ctx.zeros((1, elems))?, ctx.zeros((1, elems))?);
    let t_copy = time(reps, || Ok(ctx.copy(&a, &b)?))?;
    let copy_bw = 2.0 * elems as f64 * 4.0 / t_copy;
    println!(
        "copy bandwidth: {:.1} GB/s (read + write of {} MiB)",
        copy_bw / 1e9,
        (elems * 4) >> 20
    );
    drop((a, b));

    let mut rows: Vec<Row> = Vec::new();
    let sizes: &[(usize, usize)] = if quick {
        &[(1024, 1024), (4096, 4096)]
    } else {
        &[(1024, 1024), (4096, 4096), (4096, 11008)]
    };
    let w4 = Wavelet::new("db4")?;
    let w1 = Wavelet::new("db1")?;
    for &shape in sizes {
        let full = (shape.0 * shape.1) as f64 * 4.0;
        // Dense transforms, db4 periodization, level 3.
        let x = data(shape, 1);
        match Dwt2::new(&ctx, &w4, Mode::Periodization, shape, 3) {
            Ok(plan) => {
                let got = plan.forward(x.view())?;
                let want = wavedec2(x.mapv(f64::from).view(), &w4, Mode::Periodization, Some(3))?;
                let err = rel(got.approx(), want.approx());
                let gpu = time(reps, || Ok(plan.run_forward()?))?;
                let cpu = time(reps.min(5), || {
                    Ok(wavedec2(x.view(), &w4, Mode::Periodization, Some(3)).map(|_| ())?)
                })?;
                rows.push(Row {
                    op: "wavedec2 db4 L3 periodization".into(),
                    shape,
                    gpu,
                    cpu: Some(cpu),
                    bytes: 2.0 * full,
                    err: Some(err),
                    note: String::new(),
                });
                let back = plan.inverse(&got)?;
                let err = rel(&back, &x.mapv(f64::from));
                let gpu = time(reps, || Ok(plan.run_inverse()?))?;
                let cpu = time(
                    reps.min(5),
                    || Ok(waverec2(&got, &w4, Mode::Periodization).map(|_| ())?),
                )?;
                rows.push(Row {
                    op: "waverec2 db4 L3 periodization".into(),
                    shape,
                    gpu,
                    cpu: Some(cpu),
                    bytes: 2.0 * full,
                    err: Some(err),
                    note: String::new(),
                });
            }
            Err(e) => rows.push(Row {
                op: "wavedec2/waverec2 db4 L3".into(),
                shape,
                gpu: f64::NAN,
                cpu: None,
                bytes: 0.0,
                err: None,
                note: format!("not run: {e}"),
            }),
        }

        // Sparse: PEFT-style db1 level 1, n = 1000 and 5000.
        for n in [1000, 5000] {
            let coeff = (shape.0.div_ceil(2), shape.1.div_ceil(2));
            let locs = locations(coeff, n, 2);
            let c: Vec<f32> = data((1, n), 3).into_iter().collect();
            let plan = SparsePlan::new(
                &ctx,
                &SeparableBasis::wavedec2(&w1, Mode::Zero, shape, Level::Exactly(1), None, &locs)?,
            )?;
            let coeffs = ctx.upload_vec(&c)?;
            let base = data(plan.shape(), 4);
            let w = ctx.upload(base.view())?;
            // Check once: merge against dwt-core's dense waverec2 of the scattered coefficients.
            let dense = waverec2(&scatter::<f64>(&w1, Mode::Zero, shape, 1, &locs, &c), &w1, Mode::Zero)?;
            ctx.batch()
                .merge(&plan, &coeffs, 0.5, &w, Orientation::Normal)?
                .submit()?;
            let err = rel(&ctx.download(&w)?, &(base.mapv(f64::from) + &dense * 0.5));
            let touched = plan.touched_fraction();
            let gpu = time(reps, || {
                Ok(ctx
                    .batch()
                    .merge(&plan, &coeffs, 0.5, &w, Orientation::Normal)?
                    .submit()?)
            })?;
            // The CPU way with dwt-core: dense waverec2 of the coefficients, then add.
            let zf = scatter::<f32>(&w1, Mode::Zero, shape, 1, &locs, &c);
            let mut wc = base.clone();
            let cpu = time(reps.min(5), || {
                let d = waverec2(&zf, &w1, Mode::Zero)?;
                wc.zip_mut_with(&d, |a, b| *a += 0.5 * b);
                Ok(())
            })?;
            rows.push(Row {
                op: format!("sparse merge db1 n={n}"),
                shape,
                gpu,
                cpu: Some(cpu),
                bytes: 2.0 * full,
                err: Some(err),
                note: format!("{:.1}% of tiles touched", 100.0 * touched),
            });
            let out = ctx.zeros(plan.shape())?;
            let gpu = time(reps, || {
                Ok(ctx
                    .batch()
                    .delta(&plan, &coeffs, 0.5, &out, Orientation::Normal)?
                    .submit()?)
            })?;
            rows.push(Row {
                op: format!("sparse ΔW db1 n={n}"),
                shape,
                gpu,
                cpu: None,
                bytes: full,
                err: None,
                note: "writes every element".into(),
            });
            let grad = ctx.upload_vec(&vec![0.0; n])?;
            let gpu = time(reps, || {
                Ok(ctx.batch().grad(&plan, &w, 0.5, &grad, Orientation::Normal)?.submit()?)
            })?;
            rows.push(Row {
                op: format!("gradient from dense G, n={n}"),
                shape,
                gpu,
                cpu: None,
                bytes: 0.0,
                err: None,
                note: String::new(),
            });
        }
    }

    // A whole model: 24 layers of 768×768, n = 1000 each, one submission.
    let locs = locations((384, 384), 1000, 5);
    let plan = SparsePlan::new(
        &ctx,
        &SeparableBasis::wavedec2(&w1, Mode::Zero, (768, 768), Level::Exactly(1), None, &locs)?,
    )?;
    let coeffs = ctx.upload_vec(&data((1, 1000), 6).into_iter().collect::<Vec<_>>())?;
    let layers: Vec<_> = (0..24)
        .map(|k| ctx.upload(data((768, 768), 10 + k).view()))
        .collect::<Result<_, _>>()?;
    let gpu = time(reps, || {
        let mut b = ctx.batch();
        for w in &layers {
            b.merge(&plan, &coeffs, 0.5, w, Orientation::Normal)?;
        }
        Ok(b.submit()?)
    })?;
    rows.push(Row {
        op: "24 layers merged, one submission, n=1000 each".into(),
        shape: (768, 768),
        gpu,
        cpu: None,
        bytes: 24.0 * 2.0 * 768.0 * 768.0 * 4.0,
        err: None,
        note: String::new(),
    });

    let mut md = String::new();
    writeln!(
        md,
        "Adapter: {}. Copy bandwidth {:.1} GB/s (copy of {} MiB, read + write).",
        ctx.describe(),
        copy_bw / 1e9,
        (elems * 4) >> 20
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "| operation | shape | GPU ms | dwt-core CPU ms | CPU / GPU | full-matrix bandwidth share | max rel err | note |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|---|")?;
    for r in &rows {
        let cpu = r.cpu.map_or("–".into(), |c| format!("{:.2}", c * 1e3));
        let ratio = r.cpu.map_or("–".into(), |c| format!("{:.2}×", c / r.gpu));
        let share = if r.bytes > 0.0 && r.gpu.is_finite() {
            format!("{:.0}%", 100.0 * r.bytes / r.gpu / copy_bw)
        } else {
            "–".into()
        };
        let err = r.err.map_or("–".into(), |e| format!("{e:.1e}"));
        writeln!(
            md,
            "| {} | {}×{} | {:.3} | {cpu} | {ratio} | {share} | {err} | {} |",
            r.op,
            r.shape.0,
            r.shape.1,
            r.gpu * 1e3,
            r.note
        )?;
    }
    println!("{md}");
    if let Some(path) = markdown {
        std::fs::write(&path, &md)?;
    }
    let worst = rows.iter().filter_map(|r| r.err).fold(0.0, f64::max);
    if worst > 1e-5 {
        return Err(format!("a kernel disagrees with dwt-core: max rel err {worst:e}").into());
    }
    Ok(())
}
