//! Mixed-adapter batches equal separate runs: every row of a batch whose
//! rows name different adapters (WaveletFT, LoRA, FourierFT, or none) is
//! what that adapter alone gives the same row, bit for bit.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use wft_adapter::dwt_core::Wavelet;
use wft_adapter::ndarray::Array2;
use wft_adapter::{
    Adapter, Error, FourierFt, FourierFtConfig, Lora, LoraConfig, Mt19937, WaveletFt, WaveletFtConfig, forward_mixed,
};

const SHAPE: (usize, usize) = (48, 40);

fn adapters() -> Vec<Box<dyn Adapter<f32>>> {
    let mut out: Vec<Box<dyn Adapter<f32>>> = Vec::new();
    for (seed, wavelet) in [(1, "db1"), (2, "db3")] {
        let c = WaveletFtConfig {
            wavelet: Wavelet::new(wavelet).unwrap(),
            n_frequency: 60,
            seed,
            ..Default::default()
        };
        out.push(Box::new(WaveletFt::<f32>::new(&c, SHAPE).unwrap()));
    }
    out.push(Box::new(
        Lora::<f32>::new(
            &LoraConfig {
                r: 4,
                ..Default::default()
            },
            SHAPE,
        )
        .unwrap(),
    ));
    out.push(Box::new(
        FourierFt::<f32>::new(
            &FourierFtConfig {
                n_frequency: 50,
                ..Default::default()
            },
            SHAPE,
        )
        .unwrap(),
    ));
    for (k, a) in out.iter_mut().enumerate() {
        let mut g = Mt19937::new(k as u64 + 5);
        a.params_mut()
            .iter_mut()
            .for_each(|p| *p = (0.1 * g.next_normal()) as f32);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn mixed_batches_equal_separate_runs(routes in prop::collection::vec(prop::option::of(0usize..4), 1..150), seed: u64) {
        let adapters = adapters();
        let refs: Vec<&dyn Adapter<f32>> = adapters.iter().map(|a| a.as_ref()).collect();
        let mut g = Mt19937::new(seed);
        let x = Array2::from_shape_simple_fn((routes.len(), SHAPE.1), || g.next_normal() as f32);
        let base = Array2::from_shape_simple_fn((routes.len(), SHAPE.0), || g.next_normal() as f32);
        let mut y = base.clone();
        forward_mixed(x.view(), y.view_mut(), &routes, &refs).unwrap();
        // Each adapter alone over the whole batch.
        let alone: Vec<Array2<f32>> = refs
            .iter()
            .map(|a| {
                let mut y = base.clone();
                a.forward_delta(x.view(), y.view_mut()).unwrap();
                y
            })
            .collect();
        for (r, route) in routes.iter().enumerate() {
            let want = match route {
                Some(k) => alone[*k].row(r).to_owned(),
                None => base.row(r).to_owned(),
            };
            for (a, b) in y.row(r).iter().zip(want.iter()) {
                prop_assert!(a.to_bits() == b.to_bits(), "row {r} ({route:?}): {a} vs {b}");
            }
        }
    }
}

#[test]
fn bad_routes_are_typed_errors() {
    let adapters = adapters();
    let refs: Vec<&dyn Adapter<f32>> = adapters.iter().map(|a| a.as_ref()).collect();
    let x = Array2::<f32>::zeros((3, SHAPE.1));
    let mut y = Array2::<f32>::zeros((3, SHAPE.0));
    let e = forward_mixed(x.view(), y.view_mut(), &[Some(0), None], &refs);
    assert!(matches!(e, Err(Error::Invalid { .. })));
    let e = forward_mixed(x.view(), y.view_mut(), &[Some(0), None, Some(4)], &refs);
    assert!(matches!(e, Err(Error::Invalid { .. })));
    let wrong = Array2::<f32>::zeros((3, SHAPE.1 + 1));
    let e = forward_mixed(wrong.view(), y.view_mut(), &[Some(0), None, None], &refs);
    assert!(matches!(e, Err(Error::Shape { .. })));
    // Rows without an adapter are left alone.
    forward_mixed(x.view(), y.view_mut(), &[None, None, None], &refs).unwrap();
    assert!(y.iter().all(|v| *v == 0.0));
}
