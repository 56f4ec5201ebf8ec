//! The fine-tuning methods compared, by name.

use std::fmt;
use std::str::FromStr;

use wft_adapter::dwt_core::{Mode, Wavelet};
use wft_adapter::{
    AdapterConfig, AdapterModel, FourierFtConfig, Init, Layout, LoraConfig, MethodConfig, ModuleSpec, Strategy,
    TensorFile, WaveletFtConfig,
};

use crate::{Error, Result};

/// Where WaveletFT puts its coefficients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaveletVariant {
    /// PEFT's WaveFT: db1, one level, PEFT's layout, uniform random locations.
    Peft,
    /// db2, two levels (periodization), the coarsest sub-bands first.
    LowFrequency,
    /// db2, two levels (periodization), the largest coefficients of the
    /// frozen weight's own transform.
    EnergyGuided,
}

/// A method and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The frozen encoder; only the head trains.
    HeadOnly,
    /// Every weight trains.
    Full,
    /// LoRA of rank `r` (α = 8, PEFT's default) on `query` and `value`.
    Lora(usize),
    /// FourierFT with `n` coefficients per layer (scaling 150, PEFT's default).
    FourierFt(usize),
    /// WaveletFT with `n` coefficients per layer (α = 25, PEFT's default).
    WaveletFt(WaveletVariant, usize),
}

impl Method {
    /// The comparison: head only, full fine-tuning, LoRA r = 1 and
    /// 8, FourierFT and three WaveletFT variants at n = 1000 and 5000.
    pub fn all() -> Vec<Method> {
        use WaveletVariant::*;
        let mut v = vec![Method::HeadOnly, Method::Full, Method::Lora(1), Method::Lora(8)];
        for n in [1000, 5000] {
            v.push(Method::FourierFt(n));
        }
        for variant in [Peft, LowFrequency, EnergyGuided] {
            for n in [1000, 5000] {
                v.push(Method::WaveletFt(variant, n));
            }
        }
        v
    }

    /// The same methods sized for a tiny model (`n` ≤ 100, rank ≤ 2).
    pub fn tiny() -> Vec<Method> {
        use WaveletVariant::*;
        vec![
            Method::HeadOnly,
            Method::Full,
            Method::Lora(2),
            Method::FourierFt(100),
            Method::WaveletFt(Peft, 100),
            Method::WaveletFt(LowFrequency, 100),
            Method::WaveletFt(EnergyGuided, 100),
        ]
    }

    /// The method family, for choosing a learning rate.
    pub fn family(&self) -> &'static str {
        match self {
            Method::HeadOnly => "head",
            Method::Full => "full",
            Method::Lora(_) => "lora",
            Method::FourierFt(_) => "fourierft",
            Method::WaveletFt(..) => "waveletft",
        }
    }

    /// The adapter config on `query` and `value`; `None` for head-only and
    /// full fine-tuning.
    pub fn adapter_config(&self, seed: u64) -> Option<AdapterConfig> {
        self.adapter_config_for(seed, ModuleSpec::Names(vec!["query".into(), "value".into()]))
    }

    /// [`Method::adapter_config`] on other target modules (a decoder's
    /// `q_proj`, `v_proj`, …).
    pub fn adapter_config_for(&self, seed: u64, targets: ModuleSpec) -> Option<AdapterConfig> {
        let method = match *self {
            Method::HeadOnly | Method::Full => return None,
            Method::Lora(r) => MethodConfig::Lora(LoraConfig {
                r,
                lora_alpha: 8.0,
                use_rslora: false,
                seed,
            }),
            Method::FourierFt(n) => MethodConfig::FourierFt(FourierFtConfig {
                n_frequency: n,
                scaling: 150.0,
                seed: 777 + seed,
                init: Init::Zeros,
            }),
            Method::WaveletFt(variant, n) => {
                let base = WaveletFtConfig {
                    n_frequency: n,
                    seed: 777 + seed,
                    ..Default::default()
                };
                MethodConfig::WaveletFt(match variant {
                    WaveletVariant::Peft => base,
                    WaveletVariant::LowFrequency | WaveletVariant::EnergyGuided => WaveletFtConfig {
                        wavelet: Wavelet::new("db2").expect("db2 is one of dwt-core's wavelets"),
                        level: 2,
                        mode: Mode::Periodization,
                        layout: Layout::Wavedec,
                        strategy: if variant == WaveletVariant::LowFrequency {
                            Strategy::LowFrequencyFirst
                        } else {
                            Strategy::EnergyGuided
                        },
                        ..base
                    },
                })
            }
        };
        Some(AdapterConfig::new(method, targets))
    }

    /// New adapters for the modules of `base` this method adapts (LoRA's
    /// `A` drawn from `seed`; the others start at zero, so ΔW = 0).
    ///
    /// # Errors
    /// `wft-adapter`'s errors (n larger than a layer, …).
    pub fn adapters(&self, base: &TensorFile, seed: u64) -> Result<Option<AdapterModel>> {
        match self.adapter_config(seed) {
            Some(c) => Ok(Some(AdapterModel::new_for_base(c, base, seed)?)),
            None => Ok(None),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::HeadOnly => f.write_str("head"),
            Method::Full => f.write_str("full"),
            Method::Lora(r) => write!(f, "lora-r{r}"),
            Method::FourierFt(n) => write!(f, "fourierft-{n}"),
            Method::WaveletFt(WaveletVariant::Peft, n) => write!(f, "waveletft-{n}"),
            Method::WaveletFt(WaveletVariant::LowFrequency, n) => write!(f, "waveletft-low-{n}"),
            Method::WaveletFt(WaveletVariant::EnergyGuided, n) => write!(f, "waveletft-energy-{n}"),
        }
    }
}

impl FromStr for Method {
    type Err = Error;
    /// The [`Display`](fmt::Display) names: `head`, `full`, `lora-r8`,
    /// `fourierft-1000`, `waveletft-1000`, `waveletft-low-1000`,
    /// `waveletft-energy-1000`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Usage(format!(
                "unknown method `{s}` (try head, full, lora-r8, fourierft-1000, waveletft-1000, waveletft-low-1000, waveletft-energy-1000)"
            ))
        };
        let num = |t: &str| t.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(bad);
        let parts: Vec<&str> = s.split('-').collect();
        Ok(match parts.as_slice() {
            ["head"] => Method::HeadOnly,
            ["full"] => Method::Full,
            ["lora", r] => Method::Lora(num(r.strip_prefix('r').ok_or_else(bad)?)?),
            ["fourierft", n] => Method::FourierFt(num(n)?),
            ["waveletft", n] => Method::WaveletFt(WaveletVariant::Peft, num(n)?),
            ["waveletft", "low", n] => Method::WaveletFt(WaveletVariant::LowFrequency, num(n)?),
            ["waveletft", "energy", n] => Method::WaveletFt(WaveletVariant::EnergyGuided, num(n)?),
            _ => return Err(bad()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() -> Result<()> {
        for m in Method::all().into_iter().chain(Method::tiny()) {
            assert_eq!(m.to_string().parse::<Method>()?, m);
        }
        for bad in [
            "",
            "lora",
            "lora-8",
            "waveletft-0",
            "waveletft-x-10",
            "fourierft-1000-2",
        ] {
            assert!(bad.parse::<Method>().is_err(), "{bad}");
        }
        Ok(())
    }
}
