//! Separable atoms: the one model of a sparse 2-D synthesis that the CPU
//! kernels run on and `dwt-gpu` uploads as it is.
//!
//! A 2-D inverse DWT is linear and separable, so the reconstruction of a
//! few coefficients is `s · Σ_k c_k · u_k v_kᵀ`, with `u_k` and `v_k` the
//! 1-D synthesis atoms ([`crate::AtomBasis`]) of coefficient `k` along the
//! rows and the columns. A [`SeparableBasis`] stores those factors once
//! each (coefficients that share a row or column factor share its storage)
//! as at most two contiguous runs, and gives the products with the
//! reconstruction that never form it ([`SeparableBasis::add_outer`] and the
//! block kernels).
//!
//! ```
//! use dwt_core::{Level, Location, Mode, Orientation, SeparableBasis, Subband, Wavelet, waverec2, wavedec2};
//! use ndarray::Array2;
//!
//! let w = Wavelet::new("db2")?;
//! let loc = Location { level: 1, band: Subband::Diagonal, row: 3, col: 2 };
//! let basis = SeparableBasis::<f64>::wavedec2(&w, Mode::Zero, (12, 10), Level::Exactly(1), None, &[loc])?;
//! let (rows, cols) = basis.shape();
//! let mut sparse = vec![0.0; rows * cols];
//! basis.add_outer(&[1.0], 1.0, &mut sparse, Orientation::Normal);
//!
//! // The same thing, the slow way: waverec2 of a unit coefficient.
//! let mut c = wavedec2(Array2::<f64>::zeros((12, 10)).view(), &w, Mode::Zero, Some(1))?;
//! c.details_mut()[0][2][[3, 2]] = 1.0;
//! let dense = waverec2(&c, &w, Mode::Zero)?;
//! assert!(dense.iter().zip(&sparse).all(|(a, b)| (a - b).abs() < 1e-12));
//! # Ok::<(), dwt_core::Error>(())
//! ```

mod kernels;

pub use kernels::BackwardBlock;

use std::collections::HashMap;
use std::hash::Hash;

use crate::{AtomBasis, Band, Error, Level, Mode, Real, Result, Wavelet, dwt_max_level};

/// A 2-D sub-band, PyWavelets' names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subband {
    /// `cA`: low-pass along both axes (coarsest level only).
    Approx,
    /// `cH`: detail along axis 0, low-pass along axis 1.
    Horizontal,
    /// `cV`: low-pass along axis 0, detail along axis 1.
    Vertical,
    /// `cD`: detail along both axes.
    Diagonal,
}

impl Subband {
    /// The three detail bands in PyWavelets' order `(cH, cV, cD)`.
    pub const DETAILS: [Subband; 3] = [Subband::Horizontal, Subband::Vertical, Subband::Diagonal];

    /// The 1-D bands of the row (axis 0) and column (axis 1) atoms.
    pub fn bands(self) -> (Band, Band) {
        match self {
            Subband::Approx => (Band::Approx, Band::Approx),
            Subband::Horizontal => (Band::Detail, Band::Approx),
            Subband::Vertical => (Band::Approx, Band::Detail),
            Subband::Diagonal => (Band::Detail, Band::Detail),
        }
    }
}

/// One coefficient of a 2-D decomposition: `level` counts from 1 (finest)
/// to the decomposition depth, as [`AtomBasis`] does, and the approximation
/// exists only at the coarsest level. Level 0 with [`Subband::Approx`]
/// names an entry of an untransformed array (unit impulses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// Decomposition level, 1 = finest.
    pub level: usize,
    /// The sub-band.
    pub band: Subband,
    /// Row inside the band.
    pub row: usize,
    /// Column inside the band.
    pub col: usize,
}

/// How a matrix is stored relative to the basis's `rows × cols`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Orientation {
    /// Row-major `rows × cols`, as the basis.
    #[default]
    Normal,
    /// Row-major `cols × rows`: the transpose (PEFT's `fan_in_fan_out`,
    /// GPT-2's `Conv1D` weights).
    Transposed,
}

impl Orientation {
    /// The stored shape of a `(rows, cols)` matrix in this orientation.
    pub fn stored_shape(self, (rows, cols): (usize, usize)) -> (usize, usize) {
        match self {
            Orientation::Normal => (rows, cols),
            Orientation::Transposed => (cols, rows),
        }
    }

    /// `a` unchanged, or its transpose (axes reversed, no copy) for
    /// [`Orientation::Transposed`]: from the basis's layout to the stored
    /// one, and back, since a transpose is its own inverse.
    pub fn orient<S: ndarray::RawData>(
        self,
        a: ndarray::ArrayBase<S, ndarray::Ix2>,
    ) -> ndarray::ArrayBase<S, ndarray::Ix2> {
        match self {
            Orientation::Normal => a,
            Orientation::Transposed => a.reversed_axes(),
        }
    }
}

/// A window of a reconstruction: rows `origin.0 ..` and columns
/// `origin.1 ..` of `shape` (PEFT's centre crop of a padded transform).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crop {
    /// First row and column kept.
    pub origin: (usize, usize),
    /// Rows and columns kept.
    pub shape: (usize, usize),
}

/// The distinct 1-D factors of one side (rows or columns), each at most two
/// contiguous runs, values stored back to back.
#[derive(Debug, Clone, Default)]
pub struct FactorSet<T> {
    /// Per factor: up to two `(start, len)` runs; values from `off` on.
    runs: Vec<([(usize, usize); 2], usize)>,
    vals: Vec<T>,
}

impl<T: Real> FactorSet<T> {
    /// Number of factors.
    pub fn len(&self) -> usize {
        self.runs.len()
    }
    /// Whether there are no factors.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
    /// Total support (number of stored values).
    pub fn support(&self) -> usize {
        self.vals.len()
    }
    /// The non-empty runs `(start, values)` of factor `id`.
    ///
    /// # Panics
    /// When `id >= self.len()`.
    pub fn runs(&self, id: usize) -> impl Iterator<Item = (usize, &[T])> {
        let (runs, off) = self.runs[id];
        let split = off + runs[0].1;
        [
            (runs[0].0, &self.vals[off..split]),
            (runs[1].0, &self.vals[split..split + runs[1].1]),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
    }
    /// Number of values of factor `id`.
    fn run_len(&self, id: usize) -> usize {
        let (runs, _) = self.runs[id];
        runs[0].1 + runs[1].1
    }

    /// Append a factor of at most two runs inside `0..extent`.
    fn push(&mut self, runs: &[(usize, &[T])], extent: usize, what: &'static str) -> Result<usize> {
        let runs: Vec<_> = runs.iter().filter(|(_, v)| !v.is_empty()).collect();
        if runs.len() > 2 {
            return Err(Error::OutOfRange {
                what,
                detail: format!("{} runs (at most 2)", runs.len()),
            });
        }
        let mut slots = [(0, 0); 2];
        for (slot, &&(start, v)) in slots.iter_mut().zip(&runs) {
            if start.checked_add(v.len()).is_none_or(|end| end > extent) {
                return Err(Error::OutOfRange {
                    what,
                    detail: format!("run {start}..{} of a {extent}-long axis", start.saturating_add(v.len())),
                });
            }
            *slot = (start, v.len());
        }
        let off = self.vals.len();
        for (_, v) in runs {
            self.vals.extend_from_slice(v);
        }
        self.runs.push((slots, off));
        Ok(self.runs.len() - 1)
    }
}

/// The separable atoms of `n` coefficients on a `rows × cols` output:
/// coefficient `k` contributes `c_k · u ⊗ v`, with `u` a row factor and `v`
/// a column factor. Any linear separable synthesis fits: a multilevel
/// `waverec2` in any mode ([`SeparableBasis::wavedec2`]), a cropped one
/// (PEFT's layout), unit impulses ([`SeparableBasis::impulses`]), or
/// dense factors (LoRA, FourierFT).
#[derive(Debug, Clone, Default)]
pub struct SeparableBasis<T> {
    shape: (usize, usize),
    rows: FactorSet<T>,
    cols: FactorSet<T>,
    row_of: Vec<usize>,
    col_of: Vec<usize>,
}

/// `(start, values)` runs of one factor in `f64`, as [`crate::Atom`] gives them.
type Runs64 = Vec<(usize, Vec<f64>)>;

impl<T: Real> SeparableBasis<T> {
    /// An empty basis on a `rows × cols` output.
    pub fn new(shape: (usize, usize)) -> Self {
        SeparableBasis {
            shape,
            rows: FactorSet {
                runs: Vec::new(),
                vals: Vec::new(),
            },
            cols: FactorSet {
                runs: Vec::new(),
                vals: Vec::new(),
            },
            row_of: Vec::new(),
            col_of: Vec::new(),
        }
    }

    /// The output shape `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        self.shape
    }
    /// Number of coefficients.
    pub fn len(&self) -> usize {
        self.row_of.len()
    }
    /// Whether there are no coefficients.
    pub fn is_empty(&self) -> bool {
        self.row_of.is_empty()
    }
    /// The row factors.
    pub fn rows(&self) -> &FactorSet<T> {
        &self.rows
    }
    /// The column factors.
    pub fn cols(&self) -> &FactorSet<T> {
        &self.cols
    }
    /// Per coefficient, its `(row factor, column factor)` ids.
    pub fn atoms(&self) -> impl ExactSizeIterator<Item = (usize, usize)> + '_ {
        self.row_of.iter().copied().zip(self.col_of.iter().copied())
    }

    /// Add a row factor (at most two runs of `(first row, values)`);
    /// returns its id.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for a run past the last row or more than two runs.
    pub fn add_row_factor(&mut self, runs: &[(usize, &[T])]) -> Result<usize> {
        self.rows.push(runs, self.shape.0, "row factor")
    }

    /// Add a column factor; returns its id.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for a run past the last column or more than two runs.
    pub fn add_col_factor(&mut self, runs: &[(usize, &[T])]) -> Result<usize> {
        self.cols.push(runs, self.shape.1, "column factor")
    }

    /// Add coefficient number [`SeparableBasis::len`], with atom `row ⊗ col`.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for an unknown factor id.
    pub fn push(&mut self, row: usize, col: usize) -> Result<()> {
        if row >= self.rows.len() || col >= self.cols.len() {
            return Err(Error::OutOfRange {
                what: "factor id",
                detail: format!(
                    "({row}, {col}) with {} row and {} column factors",
                    self.rows.len(),
                    self.cols.len()
                ),
            });
        }
        self.row_of.push(row);
        self.col_of.push(col);
        Ok(())
    }

    /// Build from each coefficient's `(row key, column key)`: `factor(k,
    /// axis)` computes coefficient `k`'s factor along `axis` the first time
    /// its key is seen, so each distinct factor is computed and stored once.
    fn interned<K: Hash + Eq>(
        shape: (usize, usize),
        keys: impl IntoIterator<Item = (K, K)>,
        mut factor: impl FnMut(usize, usize) -> Result<Runs64>,
    ) -> Result<Self> {
        let mut basis = SeparableBasis::new(shape);
        let mut ids: [HashMap<K, usize>; 2] = [HashMap::new(), HashMap::new()];
        for (k, (rk, ck)) in keys.into_iter().enumerate() {
            let mut fid = [0; 2];
            for (axis, key) in [rk, ck].into_iter().enumerate() {
                fid[axis] = match ids[axis].get(&key) {
                    Some(&id) => id,
                    None => {
                        let runs: Vec<(usize, Vec<T>)> = factor(k, axis)?
                            .into_iter()
                            .map(|(s, v)| (s, v.into_iter().map(T::from_f64).collect()))
                            .collect();
                        let runs: Vec<(usize, &[T])> = runs.iter().map(|(s, v)| (*s, v.as_slice())).collect();
                        let id = if axis == 0 {
                            basis.add_row_factor(&runs)?
                        } else {
                            basis.add_col_factor(&runs)?
                        };
                        ids[axis].insert(key, id);
                        id
                    }
                };
            }
            basis.push(fid[0], fid[1])?;
        }
        Ok(basis)
    }

    /// The atoms of `locations` in a `level`-deep `wavedec2` of a `shape`
    /// signal: coefficient `k` of the result is `locations[k]`, and the
    /// reconstruction is `waverec2` of those coefficients (PyWavelets'
    /// output shape), or its `crop` window. Factors are computed in `f64`
    /// and rounded to `T` once.
    ///
    /// # Errors
    /// * [`Error::LevelTooDeep`] / [`Error::Empty`] / [`Error::TooShortForMode`]
    ///   for a level or shape `wavedec2` refuses ([`Level::Exactly`] past
    ///   `dwt_max_level` included; [`Level::Unchecked`] allows it).
    /// * [`Error::OutOfRange`] for a location outside its band, an
    ///   approximation below the coarsest level, or a crop outside the
    ///   reconstruction.
    pub fn wavedec2(
        wavelet: &Wavelet,
        mode: Mode,
        shape: (usize, usize),
        level: Level,
        crop: Option<Crop>,
        locations: &[Location],
    ) -> Result<Self> {
        let (rows, cols) = shape;
        let max = dwt_max_level(rows.min(cols), wavelet.filter_len());
        let level = match level {
            Level::Max => max,
            Level::Exactly(l) if l > max => {
                return Err(Error::LevelTooDeep {
                    level: l,
                    max_level: max,
                    len: rows.min(cols),
                    filter_len: wavelet.filter_len(),
                });
            }
            Level::Exactly(l) | Level::Unchecked(l) => l,
        };
        let bases = [
            AtomBasis::new(wavelet, mode, rows, level)?,
            AtomBasis::new(wavelet, mode, cols, level)?,
        ];
        let full = (bases[0].output_len(), bases[1].output_len());
        let crop = crop.unwrap_or(Crop {
            origin: (0, 0),
            shape: full,
        });
        let fits = |o: usize, n: usize, len: usize| o.checked_add(n).is_some_and(|e| e <= len);
        if !fits(crop.origin.0, crop.shape.0, full.0) || !fits(crop.origin.1, crop.shape.1, full.1) {
            return Err(Error::OutOfRange {
                what: "crop",
                detail: format!("{crop:?} of a {full:?} reconstruction"),
            });
        }
        for loc in locations {
            let in_band = |axis: usize, idx: usize| idx < bases[axis].coeff_len(loc.level);
            if loc.level == 0
                || loc.level > level
                || (loc.band == Subband::Approx && loc.level != level)
                || !in_band(0, loc.row)
                || !in_band(1, loc.col)
            {
                return Err(Error::OutOfRange {
                    what: "location",
                    detail: format!(
                        "{loc:?} in a {level}-level decomposition of {shape:?} (bands of level {} are {:?})",
                        loc.level,
                        (1..=level)
                            .contains(&loc.level)
                            .then(|| (bases[0].coeff_len(loc.level), bases[1].coeff_len(loc.level)))
                    ),
                });
            }
        }
        let periodic = mode == Mode::Periodization;
        let key = |loc: &Location| {
            let (rb, cb) = loc.band.bands();
            ((loc.level, rb, loc.row), (loc.level, cb, loc.col))
        };
        Self::interned(crop.shape, locations.iter().map(key), |k, axis| {
            let loc = locations[k];
            let (band, idx) = [(loc.band.bands().0, loc.row), (loc.band.bands().1, loc.col)][axis];
            let (o, n) = [(crop.origin.0, crop.shape.0), (crop.origin.1, crop.shape.1)][axis];
            let atom = bases[axis].atom(loc.level, band, idx)?.crop(o, n, periodic);
            Ok(atom.segments().map(|(s, v)| (s, v.to_vec())).collect())
        })
    }

    /// Unit impulses at `(row, col)` positions of a `shape` array: the
    /// reconstruction is the scattered coefficients themselves.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for a position outside the array.
    pub fn impulses(shape: (usize, usize), positions: &[(usize, usize)]) -> Result<Self> {
        Self::interned(shape, positions.iter().copied(), |k, axis| {
            let (r, c) = positions[k];
            Ok(vec![([r, c][axis], vec![1.0])])
        })
    }
}
