//! Signal extension modes and the length formulas that go with them.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// How a signal is extended past its ends, PyWavelets' nine modes.
///
/// For a signal `x1 … xn`, the samples left of `x1` are:
///
/// | mode | left side |
/// |---|---|
/// | `Zero` | `0 0 \| x1` |
/// | `Constant` | `x1 x1 \| x1` |
/// | `Symmetric` | `x2 x1 \| x1 x2` (half-sample) |
/// | `Reflect` | `x3 x2 \| x1 x2` (whole-sample) |
/// | `Periodic` | `x(n-1) xn \| x1` |
/// | `Smooth` | `x1 + k(x1 − x2)` at distance `k` |
/// | `Antisymmetric` | `-x2 -x1 \| x1` |
/// | `Antireflect` | `2x1 − x3, 2x1 − x2 \| x1` |
/// | `Periodization` | periodic, odd lengths first padded with `xn`; output `ceil(n/2)` |
///
/// Extensions longer than the signal keep reflecting (or repeating) the way
/// PyWavelets does. Parse the PyWavelets names with [`str::parse`]:
///
/// ```
/// use dwt_core::Mode;
/// assert_eq!("periodization".parse::<Mode>()?, Mode::Periodization);
/// assert!("per".parse::<Mode>().is_err());
/// # Ok::<(), dwt_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Zero padding.
    Zero,
    /// Repeat the edge sample.
    Constant,
    /// Half-sample symmetric (PyWavelets' default).
    #[default]
    Symmetric,
    /// Whole-sample symmetric.
    Reflect,
    /// Periodic.
    Periodic,
    /// First-derivative (linear) extrapolation.
    Smooth,
    /// Half-sample antisymmetric.
    Antisymmetric,
    /// Whole-sample antisymmetric (point reflection).
    Antireflect,
    /// Periodic with the minimal number of coefficients.
    Periodization,
}

impl Mode {
    /// All nine modes, in PyWavelets' `Modes.modes` order.
    pub const ALL: [Mode; 9] = [
        Mode::Zero,
        Mode::Constant,
        Mode::Symmetric,
        Mode::Periodic,
        Mode::Smooth,
        Mode::Periodization,
        Mode::Reflect,
        Mode::Antisymmetric,
        Mode::Antireflect,
    ];

    /// The PyWavelets name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Zero => "zero",
            Mode::Constant => "constant",
            Mode::Symmetric => "symmetric",
            Mode::Reflect => "reflect",
            Mode::Periodic => "periodic",
            Mode::Smooth => "smooth",
            Mode::Antisymmetric => "antisymmetric",
            Mode::Antireflect => "antireflect",
            Mode::Periodization => "periodization",
        }
    }

    /// The shortest signal this mode accepts (2 for the reflecting modes,
    /// as in PyWavelets, otherwise 1).
    pub fn min_len(self) -> usize {
        match self {
            Mode::Reflect | Mode::Antireflect => 2,
            _ => 1,
        }
    }

    pub(crate) fn check_len(self, len: usize) -> Result<()> {
        if len < self.min_len() {
            return Err(Error::TooShortForMode { mode: self, len });
        }
        Ok(())
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = Error;
    /// # Errors
    /// [`Error::UnknownMode`], whose message lists the nine names.
    fn from_str(s: &str) -> Result<Self> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| Error::UnknownMode { name: s.to_owned() })
    }
}

/// Number of coefficients one DWT level produces from `len` samples:
/// `floor((len + L - 1) / 2)`, or `ceil(len / 2)` for periodization
/// (PyWavelets' `dwt_coeff_len`). Zero for an empty input.
pub fn dwt_coeff_len(len: usize, filter_len: usize, mode: Mode) -> usize {
    if len == 0 {
        return 0;
    }
    match mode {
        Mode::Periodization => len.div_ceil(2),
        _ => (len + filter_len - 1) / 2,
    }
}

/// Number of samples one inverse level produces from `coeff_len`
/// coefficients: `2n - L + 2`, or `2n` for periodization.
///
/// # Errors
/// [`Error::InvalidCoeffLength`] when that length would not be positive.
pub fn idwt_len(coeff_len: usize, filter_len: usize, mode: Mode) -> Result<usize> {
    let out = match mode {
        Mode::Periodization => 2 * coeff_len,
        _ => (2 * coeff_len + 2).saturating_sub(filter_len),
    };
    if coeff_len == 0 || out == 0 {
        return Err(Error::InvalidCoeffLength {
            len: coeff_len,
            filter_len,
            mode,
        });
    }
    Ok(out)
}

/// The deepest decomposition level before every coefficient is affected by
/// the boundary: PyWavelets' `dwt_max_level`. Zero when `filter_len <= 1` or
/// `len < filter_len - 1`, otherwise `floor(log2(len / (filter_len - 1)))`
/// with integer division.
///
/// ```
/// assert_eq!(dwt_core::dwt_max_level(64, 2), 6);
/// assert_eq!(dwt_core::dwt_max_level(64, 4), 4);
/// assert_eq!(dwt_core::dwt_max_level(768, 8), 6);
/// ```
pub fn dwt_max_level(len: usize, filter_len: usize) -> usize {
    if filter_len <= 1 || len < filter_len - 1 {
        return 0;
    }
    (len / (filter_len - 1)).ilog2() as usize
}

/// One extended sample as a linear combination of signal samples.
pub(crate) type Term = (usize, f64);

/// The value of the extended signal at index `i` (which may lie outside
/// `0..n`), as a short list of `(index, weight)` terms pushed onto `out`.
/// An empty list means zero.
pub(crate) fn stencil(mode: Mode, n: usize, i: isize, out: &mut Vec<Term>) {
    debug_assert!(n >= mode.min_len());
    let ni = n as isize;
    if (0..ni).contains(&i) {
        out.push((i as usize, 1.0));
        return;
    }
    let at = |k: isize| k as usize;
    match mode {
        Mode::Zero => {}
        Mode::Constant => out.push((if i < 0 { 0 } else { n - 1 }, 1.0)),
        Mode::Symmetric => {
            let j = i.rem_euclid(2 * ni);
            out.push((at(if j < ni { j } else { 2 * ni - 1 - j }), 1.0));
        }
        Mode::Antisymmetric => {
            let j = i.rem_euclid(2 * ni);
            if j < ni {
                out.push((at(j), 1.0));
            } else {
                out.push((at(2 * ni - 1 - j), -1.0));
            }
        }
        Mode::Reflect => {
            let p = 2 * ni - 2;
            let j = i.rem_euclid(p);
            out.push((at(if j < ni { j } else { p - j }), 1.0));
        }
        Mode::Periodic => out.push((at(i.rem_euclid(ni)), 1.0)),
        Mode::Periodization => {
            // Odd lengths are padded with one copy of the last sample first.
            let j = i.rem_euclid(ni + (ni & 1));
            out.push((at(j.min(ni - 1)), 1.0));
        }
        Mode::Smooth => {
            if n == 1 {
                out.push((0, 1.0));
            } else if i < 0 {
                let k = (-i) as f64;
                out.extend([(0, 1.0 + k), (1, -k)]);
            } else {
                let k = (i - (ni - 1)) as f64;
                out.extend([(n - 1, 1.0 + k), (n - 2, -k)]);
            }
        }
        Mode::Antireflect => {
            // Repeated point reflections about the end samples: a shift by
            // one period 2(n-1) adds 2(x[n-1] - x[0]).
            let p = 2 * ni - 2;
            let (q, j) = (i.div_euclid(p), i.rem_euclid(p));
            if j < ni {
                out.push((at(j), 1.0));
            } else {
                out.extend([(n - 1, 2.0), (at(p - j), -1.0)]);
            }
            if q != 0 {
                let q = 2.0 * q as f64;
                out.extend([(n - 1, q), (0, -q)]);
            }
        }
    }
}
