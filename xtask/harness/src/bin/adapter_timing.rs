//! Median timings of wft-adapter's operations for `cargo xtask bench --peer
//! peft` (which times PEFT on the same cases in the same run with
//! `scripts/bench_peft.py`). Prints `case op seconds` lines.
//!
//! Cases: `delta:METHOD:OUTxIN:N` (METHOD `db1`, `db2` or `fourierft`) and
//! `fb:METHOD:OUTxIN:N:BATCH` (METHOD `db1`, `db2`, `lora8` or `frozen`).
//!
//! `cargo run --release -p xtask-harness --features adapter --bin adapter_timing -- delta:db1:4096x4096:5000 fb:db1:768x768:1000:4096`
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use ndarray::Array2;
use wft_adapter::dwt_core::Wavelet;
use wft_adapter::{
    AdaptedLinear, Adapter, FourierFt, FourierFtConfig, InputGrad, Lora, LoraConfig, Mt19937, Orientation, WaveletFt,
    WaveletFtConfig,
};

/// Median seconds of `f` over at least 3 runs and about `budget` seconds.
fn median(budget: f64, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 3 || (start.elapsed().as_secs_f64() < budget && times.len() < 200) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn randn(g: &mut Mt19937, shape: (usize, usize), std: f64) -> Array2<f32> {
    Array2::from_shape_simple_fn(shape, || (std * g.next_normal()) as f32)
}

fn parse_shape(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s.split_once('x').ok_or(format!("bad shape {s}"))?;
    Ok((
        a.parse().map_err(|e| format!("{s}: {e}"))?,
        b.parse().map_err(|e| format!("{s}: {e}"))?,
    ))
}

fn adapter(method: &str, shape: (usize, usize), n: usize, g: &mut Mt19937) -> Result<Box<dyn Adapter<f32>>, String> {
    let mut a: Box<dyn Adapter<f32>> = match method {
        "db1" | "db2" => {
            let c = WaveletFtConfig {
                wavelet: Wavelet::new(method).map_err(|e| e.to_string())?,
                n_frequency: n,
                ..Default::default()
            };
            Box::new(WaveletFt::<f32>::new(&c, shape).map_err(|e| e.to_string())?)
        }
        "fourierft" => {
            let c = FourierFtConfig {
                n_frequency: n,
                ..Default::default()
            };
            Box::new(FourierFt::<f32>::new(&c, shape).map_err(|e| e.to_string())?)
        }
        "lora8" => {
            let c = LoraConfig {
                r: 8,
                lora_alpha: 16.0,
                use_rslora: false,
                seed: 1,
            };
            Box::new(Lora::<f32>::new(&c, shape).map_err(|e| e.to_string())?)
        }
        other => return Err(format!("unknown method {other}")),
    };
    for p in a.params_mut() {
        *p = (0.01 * g.next_normal()) as f32;
    }
    Ok(a)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut g = Mt19937::new(5);
    for case in std::env::args().skip(1) {
        let parts: Vec<&str> = case.split(':').collect();
        match parts.as_slice() {
            ["delta", method, shape, n] => {
                let shape = parse_shape(shape)?;
                let n: usize = n.parse().map_err(|e| format!("{case}: {e}"))?;
                let a = adapter(method, shape, n, &mut g)?;
                let mut w = randn(&mut g, shape, 0.02);
                let budget = 2.0;
                let t = median(budget, || {
                    black_box(a.delta_weight());
                });
                println!("{case} delta {t:.9}");
                // ΔW formed, then added (what PEFT's merge does).
                let t = median(budget, || {
                    let d = a.delta_weight();
                    w += &d;
                });
                println!("{case} delta_then_add {t:.9}");
                // A failed call is an error, never timed as a no-op.
                a.merge_into(w.view_mut(), 1.0, Orientation::Normal)?;
                let t = median(budget, || {
                    black_box(a.merge_into(w.view_mut(), 1.0, Orientation::Normal)).ok();
                });
                println!("{case} merge {t:.9}");
            }
            ["fb", method, shape, _n, batch] => {
                let shape = parse_shape(shape)?;
                let n: usize = parts[3].parse().map_err(|e| format!("{case}: {e}"))?;
                let b: usize = batch.parse().map_err(|e| format!("{case}: {e}"))?;
                let (out, inp) = shape;
                let w = randn(&mut g, shape, 0.02);
                let x = randn(&mut g, (b, inp), 1.0);
                let gy = randn(&mut g, (b, out), 1.0);
                let t = if *method == "frozen" {
                    // The frozen layer alone: forward, then the input gradient.
                    median(3.0, || {
                        black_box((x.dot(&w.t()), gy.dot(&w)));
                    })
                } else {
                    let layer = AdaptedLinear::new(w.clone(), None, adapter(method, shape, n, &mut g)?)
                        .map_err(|e| e.to_string())?;
                    // A failed call is an error, never timed as a no-op.
                    layer.forward(x.view())?;
                    layer.backward(x.view(), gy.view(), InputGrad::Compute)?;
                    median(3.0, || {
                        let y = layer.forward(x.view());
                        let _ = black_box((y, layer.backward(x.view(), gy.view(), InputGrad::Compute)));
                    })
                };
                println!("{case} forward_backward {t:.9}");
            }
            _ => return Err(format!("bad case {case}").into()),
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    wft_test_support::exit(run())
}
