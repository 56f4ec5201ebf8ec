//! Exact unmerge and hot-swap: a recorded merge puts the weight back bit for
//! bit (float subtraction does not), a WaveletFT record holds only the
//! elements its atoms touch, and swapping adapters on a merged layer gives
//! the same bits as merging the new adapter into the frozen weight.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use wft_adapter::dwt_core::{Mode, Wavelet};
use wft_adapter::ndarray::Array2;
use wft_adapter::{
    AdaptedLinear, Adapter, FourierFt, FourierFtConfig, Layout, Lora, LoraConfig, Mt19937, Orientation, WaveletFt,
    WaveletFtConfig,
};

fn bits(a: &Array2<f32>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

fn randomize(a: &mut dyn Adapter<f32>, seed: u64) {
    let mut g = Mt19937::new(seed);
    a.params_mut().iter_mut().for_each(|p| *p = g.next_normal() as f32);
}

fn weight(shape: (usize, usize), seed: u64) -> Array2<f32> {
    let mut g = Mt19937::new(seed);
    Array2::from_shape_simple_fn(shape, || (0.1 * g.next_normal()) as f32)
}

fn wave(name: &str, mode: Mode, layout: Layout, level: usize, n: usize, seed: u64) -> WaveletFtConfig {
    WaveletFtConfig {
        wavelet: Wavelet::new(name).unwrap(),
        mode,
        layout,
        level,
        n_frequency: n,
        scaling: 3.0,
        seed,
        ..Default::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// merge_recorded + restore is the identity on the bits, for WaveletFT
    /// in every layout and both orientations; the record is the touched set.
    #[test]
    fn restore_is_exact(name in prop::sample::select(vec!["db1", "db3", "sym4", "bior2.2"]),
                        periodic: bool, wavedec: bool, transposed: bool,
                        rows in 8usize..40, cols in 8usize..40, n in 1usize..30, seed in 0u64..1000) {
        let (mode, layout, level) = match (wavedec, periodic) {
            (true, true) => (Mode::Periodization, Layout::Wavedec, 2),
            (true, false) => (Mode::Symmetric, Layout::Wavedec, 1),
            _ => (Mode::Zero, Layout::Peft, 1),
        };
        let Ok(mut a) = WaveletFt::<f32>::new(&wave(name, mode, layout, level, n, seed), (rows, cols)) else {
            return Ok(());
        };
        randomize(&mut a, seed);
        let orientation = if transposed { Orientation::Transposed } else { Orientation::Normal };
        let shape = if transposed { (cols, rows) } else { (rows, cols) };
        let w0 = weight(shape, seed + 1);
        let mut w = w0.clone();
        let record = a.merge_recorded(w.view_mut(), orientation).unwrap();
        // The merge changed only touched elements, and the record holds runs.
        prop_assert!(!record.is_dense());
        let touched = a.touched(orientation).unwrap();
        for (i, (x, y)) in w.iter().zip(&w0).enumerate() {
            if x.to_bits() != y.to_bits() {
                prop_assert!(touched.binary_search(&i).is_ok());
            }
        }
        record.restore(w.view_mut()).unwrap();
        prop_assert_eq!(bits(&w), bits(&w0));
    }
}

#[test]
fn dense_adapters_restore_exactly_too() {
    let shape = (24, 40);
    let mut lora = Lora::<f32>::new(
        &LoraConfig {
            r: 4,
            ..Default::default()
        },
        shape,
    )
    .unwrap();
    let mut four = FourierFt::<f32>::new(
        &FourierFtConfig {
            n_frequency: 30,
            ..Default::default()
        },
        shape,
    )
    .unwrap();
    randomize(&mut lora, 1);
    randomize(&mut four, 2);
    for a in [&lora as &dyn Adapter<f32>, &four] {
        let w0 = weight(shape, 3);
        let mut w = w0.clone();
        let record = a.merge_recorded(w.view_mut(), Orientation::Normal).unwrap();
        assert!(record.is_dense());
        assert_eq!(record.len(), 24 * 40);
        assert_eq!(a.touched(Orientation::Normal), None);
        assert_ne!(bits(&w), bits(&w0));
        record.restore(w.view_mut()).unwrap();
        assert_eq!(bits(&w), bits(&w0));
    }
}

/// Swapping A → B → A on a merged layer: after each swap the weight has the
/// bits of a fresh merge into the frozen weight, and only the touched
/// elements were recorded (n = 100 db2 atoms on 64×96: at most 1600 of
/// 6144). Subtracting ΔW instead drifts.
#[test]
fn swap_is_bit_exact_and_sparse() {
    let shape = (64, 96);
    let w0 = weight(shape, 7);
    let config = |seed| wave("db2", Mode::Zero, Layout::Peft, 1, 100, seed);
    let mut a = WaveletFt::<f32>::new(&config(1), shape).unwrap();
    let mut b = WaveletFt::<f32>::new(&config(2), shape).unwrap();
    randomize(&mut a, 11);
    randomize(&mut b, 12);
    let fresh = |x: &WaveletFt<f32>| {
        let mut w = w0.clone();
        x.merge_into(w.view_mut(), 1.0, Orientation::Normal).unwrap();
        bits(&w)
    };
    let record = a.merge_recorded(w0.clone().view_mut(), Orientation::Normal).unwrap();
    // db2 atoms are 4×4: at most 100·16 of the 6144 elements.
    assert!(record.len() <= 100 * 16, "{} recorded", record.len());

    let mut layer = AdaptedLinear::new(w0.clone(), None, a.clone()).unwrap();
    layer.merge().unwrap();
    assert_eq!(bits(layer.weight()), fresh(&a));
    let old = layer.swap(b.clone()).unwrap();
    assert_eq!(old.params(), a.params());
    assert!(layer.is_merged());
    assert_eq!(bits(layer.weight()), fresh(&b));
    layer.swap(a.clone()).unwrap();
    assert_eq!(bits(layer.weight()), fresh(&a));
    layer.unmerge().unwrap();
    assert_eq!(bits(layer.weight()), bits(&w0));
    // An unmerged layer swaps without touching the weight.
    layer.swap(b.clone()).unwrap();
    assert_eq!(bits(layer.weight()), bits(&w0));
    // A wrong shape is refused and changes nothing.
    let c = WaveletFt::<f32>::new(&config(3), (32, 96)).unwrap();
    assert!(layer.swap(c).is_err());
    assert_eq!(layer.adapter().params(), b.params());

    // What exactness buys: W + ΔW − ΔW in f32 is not W.
    let mut w = w0.clone();
    a.merge_into(w.view_mut(), 1.0, Orientation::Normal).unwrap();
    a.merge_into(w.view_mut(), -1.0, Orientation::Normal).unwrap();
    let drifted = bits(&w).iter().zip(bits(&w0)).filter(|(x, y)| *x != y).count();
    assert!(drifted > 0, "subtraction happened to be exact");
}
