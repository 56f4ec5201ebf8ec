//! Synthesis atoms: the inverse transform of a single unit coefficient.
//!
//! A multilevel 1-D inverse DWT is linear, so its output is
//! `Σ_k c_k · atom_k`, where `atom_k = waverec(e_k)` is compactly supported:
//! about `(L − 1)·2^j` samples for a coefficient of level `j`. 2-D bases are
//! separable, so every 2-D atom is the outer product of two 1-D atoms. An
//! [`AtomBasis`] computes these atoms in `O(support)` work each, without ever
//! touching the other coefficients, exactly as [`crate::waverec`] would
//! produce them (PyWavelets' lengths, trimming and boundary handling).
//!
//! ```
//! use dwt_core::{AtomBasis, Band, Mode, Wavelet, waverec, wavedec};
//! use ndarray::Array1;
//!
//! let w = Wavelet::new("db2")?;
//! let basis = AtomBasis::new(&w, Mode::Zero, 20, 2)?;
//! let atom = basis.atom(2, Band::Detail, 1)?;
//!
//! // The same thing, the slow way: waverec of a unit coefficient.
//! let mut c = wavedec(Array1::<f64>::zeros(20).view(), &w, Mode::Zero, Some(2))?;
//! c.details_mut()[0][1] = 1.0;
//! let dense = waverec(&c, &w, Mode::Zero)?;
//! assert_eq!(dense.len(), atom.len());
//! let mut from_atom = vec![0.0; atom.len()];
//! atom.for_each(|i, v| from_atom[i] += v);
//! assert!(dense.iter().zip(&from_atom).all(|(a, b)| (a - b).abs() < 1e-12));
//! # Ok::<(), dwt_core::Error>(())
//! ```

use std::collections::BTreeMap;

use crate::{Error, Mode, Result, Wavelet, dwt_coeff_len, idwt_len};

/// Which half of a one-level filter bank a coefficient belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Band {
    /// The low-pass (approximation) band.
    Approx,
    /// The high-pass (detail) band.
    Detail,
}

/// One synthesis atom: `values[i]` sits at position `(start + i) % len` of a
/// signal of `len` samples. Atoms wrap around only in periodization mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Atom {
    len: usize,
    start: usize,
    values: Vec<f64>,
}

impl Atom {
    /// Build an atom from positions and values; repeated positions add up.
    /// Positions must be below `len`. The atom covers the shortest circular
    /// (when `periodic`) or linear window holding every position.
    fn from_points(len: usize, periodic: bool, points: BTreeMap<usize, f64>) -> Atom {
        let pos: Vec<usize> = points.keys().copied().collect();
        let (Some(&first), Some(&last)) = (pos.first(), pos.last()) else {
            return Atom {
                len,
                start: 0,
                values: Vec::new(),
            };
        };
        // Start just after the largest gap between neighbouring positions;
        // the wrap-around gap counts only for periodic signals.
        let mut start = first;
        let mut gap = if periodic { first + len - last } else { usize::MAX };
        for w in pos.windows(2) {
            if w[1] - w[0] > gap {
                gap = w[1] - w[0];
                start = w[1];
            }
        }
        let span = if start == first {
            last - first + 1
        } else {
            len - gap + 1
        };
        let mut values = vec![0.0; span];
        for (p, v) in points {
            values[(p + len - start) % len] += v;
        }
        Atom { len, start, values }
    }

    /// Length of the signal the atom lives in.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the signal has no samples.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// First position of the support (the support may wrap past the end).
    pub fn start(&self) -> usize {
        self.start
    }
    /// The values over the support, from [`Self::start`] on.
    pub fn values(&self) -> &[f64] {
        &self.values
    }
    /// The support as at most two contiguous runs `(first position, values)`.
    pub fn segments(&self) -> impl Iterator<Item = (usize, &[f64])> {
        let head = (self.len - self.start).min(self.values.len());
        let (a, b) = self.values.split_at(head);
        std::iter::once((self.start, a))
            .chain(std::iter::once((0, b)))
            .filter(|(_, s)| !s.is_empty())
    }
    /// Call `f(position, value)` over the support.
    pub fn for_each(&self, mut f: impl FnMut(usize, f64)) {
        for (s, seg) in self.segments() {
            for (i, &v) in seg.iter().enumerate() {
                f(s + i, v);
            }
        }
    }
    /// The part of the atom inside `lo..lo + len`, in the coordinates of that
    /// window (a crop). A periodic atom stays periodic over the new length.
    pub fn crop(&self, lo: usize, len: usize, periodic: bool) -> Atom {
        let mut points = BTreeMap::new();
        self.for_each(|p, v| {
            if (lo..lo + len).contains(&p) {
                *points.entry(p - lo).or_insert(0.0) += v;
            }
        });
        Atom::from_points(len, periodic, points)
    }
}

/// The synthesis atoms of one axis of a multilevel decomposition: what
/// [`crate::waverec`] makes of each unit coefficient of
/// `wavedec(signal_len, level)`.
#[derive(Debug, Clone)]
pub struct AtomBasis {
    rec_lo: Vec<f64>,
    rec_hi: Vec<f64>,
    mode: Mode,
    /// `lens[0]` is the signal length, `lens[j]` the coefficient length of level `j`.
    lens: Vec<usize>,
    out_len: usize,
}

impl AtomBasis {
    /// The atoms of a `level`-deep decomposition of `signal_len` samples.
    /// Any level whose lengths are positive is accepted (PyWavelets warns
    /// past [`crate::dwt_max_level`]; check that yourself if you care).
    ///
    /// # Errors
    /// [`Error::Empty`] for `signal_len == 0`, [`Error::LevelTooDeep`] for
    /// level 0 or a level whose inverse would have no samples,
    /// [`Error::TooShortForMode`] where `wavedec` would refuse a level's
    /// input as too short for the mode.
    pub fn new(wavelet: &Wavelet, mode: Mode, signal_len: usize, level: usize) -> Result<Self> {
        if signal_len == 0 {
            return Err(Error::Empty { what: "signal" });
        }
        let l = wavelet.filter_len();
        let too_deep = Error::LevelTooDeep {
            level,
            max_level: crate::dwt_max_level(signal_len, l),
            len: signal_len,
            filter_len: l,
        };
        if level == 0 {
            return Err(too_deep);
        }
        let mut lens = vec![signal_len];
        for _ in 0..level {
            let prev = lens[lens.len() - 1];
            mode.check_len(prev)?;
            let next = dwt_coeff_len(prev, l, mode);
            if next == 0 || idwt_len(next, l, mode).is_err() {
                return Err(too_deep);
            }
            lens.push(next);
        }
        let out_len = idwt_len(lens[1], l, mode)?;
        Ok(AtomBasis {
            rec_lo: wavelet.rec_lo().to_vec(),
            rec_hi: wavelet.rec_hi().to_vec(),
            mode,
            lens,
            out_len,
        })
    }

    /// Number of decomposition levels.
    pub fn levels(&self) -> usize {
        self.lens.len() - 1
    }
    /// Coefficient count of each band at `level` (1 = finest).
    ///
    /// # Panics
    /// When `level` is 0 or deeper than [`Self::levels`].
    pub fn coeff_len(&self, level: usize) -> usize {
        assert!((1..=self.levels()).contains(&level), "level {level} out of range");
        self.lens[level]
    }
    /// Length of the reconstructed signal (PyWavelets' `waverec` length,
    /// which can exceed the original length by one per odd level).
    pub fn output_len(&self) -> usize {
        self.out_len
    }
    /// The extension mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The reconstruction of a unit coefficient at `index` of `band` at
    /// `level`, every other coefficient zero. `Band::Approx` below the
    /// coarsest level is the atom of the approximation at that level (what
    /// the 2-D `cH`/`cV` bands need along their low-pass axis).
    ///
    /// # Errors
    /// [`Error::InvalidCoeffLength`] when `level` or `index` is out of range.
    pub fn atom(&self, level: usize, band: Band, index: usize) -> Result<Atom> {
        if !(1..=self.levels()).contains(&level) || index >= self.lens[level] {
            return Err(Error::InvalidCoeffLength {
                len: index,
                filter_len: self.rec_lo.len(),
                mode: self.mode,
            });
        }
        let periodic = self.mode == Mode::Periodization;
        let mut cur = Atom {
            len: self.lens[level],
            start: index,
            values: vec![1.0],
        };
        let mut filter = match band {
            Band::Approx => &self.rec_lo,
            Band::Detail => &self.rec_hi,
        };
        for j in (1..=level).rev() {
            let full = self.synthesize(&cur, filter);
            // PyWavelets trims the reconstruction to the next level's length.
            let keep = if j == 1 { self.out_len } else { self.lens[j - 1] };
            cur = if keep == full.len {
                full
            } else {
                full.crop(0, keep, periodic)
            };
            filter = &self.rec_lo;
        }
        Ok(cur)
    }

    /// One sparse synthesis step of `src` (coefficients of one band).
    fn synthesize(&self, src: &Atom, f: &[f64]) -> Atom {
        let l = f.len();
        let m = src.len;
        let mut points = BTreeMap::new();
        if self.mode == Mode::Periodization {
            // y[n] = Σ_j f[j]·c[k] with n ≡ 2k + j − L/2 + 1 (mod 2m).
            let r = 2 * m;
            src.for_each(|k, c| {
                for (j, &fj) in f.iter().enumerate() {
                    let n = (2 * k + j + 1) as isize - (l / 2) as isize;
                    *points.entry(n.rem_euclid(r as isize) as usize).or_insert(0.0) += fj * c;
                }
            });
            Atom::from_points(r, true, points)
        } else {
            // "Valid" upsampling convolution: n = 2k + j − L + 2, kept in 0..r.
            let r = 2 * m + 2 - l;
            src.for_each(|k, c| {
                for (j, &fj) in f.iter().enumerate() {
                    let n = 2 * k + j;
                    if n + 2 >= l && n + 2 - l < r {
                        *points.entry(n + 2 - l).or_insert(0.0) += fj * c;
                    }
                }
            });
            Atom::from_points(r, false, points)
        }
    }
}
