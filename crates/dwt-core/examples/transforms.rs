//! A dwt-core tour: decompose a matrix, print where its energy lives, and
//! reconstruct it.
//!
//! `cargo run --release -p dwt-core --example transforms [WAVELET] [MODE] [LEVEL] [ROWS] [COLS]`
//! (defaults: db4 periodization 3 256 192 on a built-in test image).
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use dwt_core::{Mode, Wavelet, wavedec2, waverec2};
use ndarray::{Array2, s};

/// A test image with smooth shading, sharp edges and fine texture, so every
/// sub-band has something to hold.
fn test_image(rows: usize, cols: usize) -> Array2<f64> {
    Array2::from_shape_fn((rows, cols), |(i, j)| {
        let (y, x) = (i as f64 / rows as f64, j as f64 / cols as f64);
        let shading = 2.0 * (3.0 * x).sin() * (2.0 * y).cos();
        let square = if (0.3..0.6).contains(&x) && (0.25..0.7).contains(&y) {
            3.0
        } else {
            0.0
        };
        let stripes = 0.4 * ((i + 2 * j) % 4) as f64;
        shading + square + stripes
    })
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
    let wavelet = Wavelet::new(&arg(0, "db4"))?;
    let mode: Mode = arg(1, "periodization").parse()?;
    let level: usize = arg(2, "3").parse()?;
    let (rows, cols): (usize, usize) = (arg(3, "256").parse()?, arg(4, "192").parse()?);

    let x = test_image(rows, cols);
    let coeffs = wavedec2(x.view(), &wavelet, mode, Some(level))?;
    let total: f64 = x.iter().map(|v| v * v).sum();
    let energy = |a: &Array2<f64>| a.iter().map(|v| v * v).sum::<f64>();

    println!("dwt-core transforms: {rows}x{cols} test image, wavelet {wavelet}, mode {mode}, {level} levels\n");
    println!(
        "{:<8} {:<6} {:>10} {:>14} {:>9}",
        "level", "band", "shape", "energy", "share"
    );
    let row = |lvl: String, band: &str, a: &Array2<f64>| {
        let (r, c) = a.dim();
        let e = energy(a);
        println!(
            "{lvl:<8} {band:<6} {:>10} {e:>14.3} {:>8.3}%",
            format!("{r}x{c}"),
            100.0 * e / total
        );
    };
    row(format!("{level}"), "cA", coeffs.approx());
    for (k, [h, v, d]) in coeffs.details().iter().enumerate() {
        let lvl = format!("{}", level - k);
        row(lvl.clone(), "cH", h);
        row(lvl.clone(), "cV", v);
        row(lvl, "cD", d);
    }
    let sum: f64 = energy(coeffs.approx()) + coeffs.details().iter().flatten().map(energy).sum::<f64>();
    println!(
        "\nsignal energy {total:.3}; coefficient energy {sum:.3} (equal only for orthogonal wavelets in periodization mode)"
    );

    let y = waverec2(&coeffs, &wavelet, mode)?;
    let err = y
        .slice(s![..rows, ..cols])
        .iter()
        .zip(&x)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    println!(
        "reconstruction: {:?} -> max |x - waverec2(wavedec2(x))| = {err:.2e}",
        y.dim()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
