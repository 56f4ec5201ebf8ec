//! The native WAVELETFT folder: what PEFT cannot express (deeper levels,
//! other layouts and strategies) round-trips with its locations and shapes,
//! without the base model and without any RNG.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use wft_adapter::dwt_core::{Mode, Wavelet};
use wft_adapter::{
    Adapter, AdapterConfig, AdapterModel, CONFIG_FILE, Init, Layout, MethodConfig, ModuleAdapter, ModuleSpec, Mt19937,
    Strategy, TensorFile, WaveletFtConfig,
};

fn base() -> TensorFile {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peft_refs/waveft_pattern_regex/base.safetensors");
    TensorFile::open(p).unwrap()
}

#[test]
fn native_folders_round_trip_without_the_base() {
    let base = base();
    for strategy in [Strategy::Uniform, Strategy::LowFrequencyFirst, Strategy::EnergyGuided] {
        let wave = WaveletFtConfig {
            wavelet: Wavelet::new("sym3").unwrap(),
            level: 2,
            mode: Mode::Periodization,
            layout: Layout::Wavedec,
            n_frequency: 40,
            scaling: 3.0,
            seed: 5,
            strategy,
            init: Init::Normal { std: 0.1 },
        };
        let config = AdapterConfig::new(
            MethodConfig::WaveletFt(wave),
            ModuleSpec::Names(vec!["q".into(), "v".into()]),
        );
        let mut model = AdapterModel::new_for_base(config, &base, 1).unwrap();
        let mut g = Mt19937::new(3);
        for m in model.modules_mut().values_mut() {
            for p in m.as_adapter_mut().params_mut() {
                *p = g.next_normal() as f32;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path()).unwrap();
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap()).unwrap();
        assert_eq!(cfg["peft_type"], "WAVELETFT", "{strategy:?}");
        // No base needed: shapes and locations are in the folder.
        let loaded = AdapterModel::load(dir.path(), None).unwrap();
        assert_eq!(loaded.modules().len(), 4);
        for (m, a) in model.modules() {
            let (ModuleAdapter::WaveletFt(x), ModuleAdapter::WaveletFt(y)) = (a, &loaded.modules()[m]) else {
                panic!("not WaveletFT");
            };
            assert_eq!(x.locations(), y.locations(), "{strategy:?} {m}");
            assert_eq!(x.params(), y.params());
            assert_eq!(x.config(), y.config());
            assert_eq!(x.delta_weight(), y.delta_weight());
        }
        // With the base, shapes are checked and the merge works.
        let with_base = AdapterModel::load(dir.path(), Some(&base)).unwrap();
        let out = dir.path().join("merged.safetensors");
        let report = with_base.merge(&base, &out, &mut |_, _| {}).unwrap();
        assert_eq!(report.merged.len(), 4);
    }
}

#[test]
fn native_locations_out_of_range_are_refused() {
    let base = base();
    let wave = WaveletFtConfig {
        layout: Layout::Wavedec,
        mode: Mode::Symmetric,
        n_frequency: 10,
        ..Default::default()
    };
    let config = AdapterConfig::new(MethodConfig::WaveletFt(wave), ModuleSpec::Names(vec!["o".into()]));
    let model = AdapterModel::new_for_base(config, &base, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    // Shrink the recorded shape: the stored locations no longer fit.
    let p = dir.path().join(CONFIG_FILE);
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    for shape in v["shapes"].as_object_mut().unwrap().values_mut() {
        *shape = serde_json::json!([2, 2]);
    }
    std::fs::write(&p, v.to_string()).unwrap();
    let e = AdapterModel::load(dir.path(), None).unwrap_err();
    assert!(
        e.to_string().contains("location") || e.to_string().contains("level"),
        "{e}"
    );
    // And a recorded shape that disagrees with the base is refused.
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    for shape in v["shapes"].as_object_mut().unwrap().values_mut() {
        *shape = serde_json::json!([24, 25]);
    }
    std::fs::write(&p, v.to_string()).unwrap();
    assert!(AdapterModel::load(dir.path(), Some(&base)).is_err());
}
