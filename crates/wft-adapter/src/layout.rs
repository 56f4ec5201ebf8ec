//! Where trainable wavelet coefficients live, and what each one does to ΔW.
//!
//! A [`Geometry`] describes the coefficient array of one `out × in` layer:
//! its sub-bands in a fixed flat order, and for each coefficient the two 1-D
//! synthesis atoms whose outer product is its contribution to ΔW (2-D
//! wavelet bases are separable).

use dwt_core::{AtomBasis, Band, Mode, Wavelet, dwt_max_level};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How coefficients map to ΔW.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Hugging Face PEFT's WaveFT (`use_idwt=true`): one level, each side
    /// padded to `d + L − 2` rounded up to even, quadrants cA top-left,
    /// cH top-right, cV bottom-left, cD bottom-right, `idwt2` in zero mode,
    /// then a crop starting at `(size − d) / 2`.
    Peft,
    /// PEFT's WaveFT with `use_idwt=false`: ΔW is the scattered coefficients
    /// themselves.
    Identity,
    /// The multilevel `wavedec2` coefficients of the `out × in` weight, any
    /// level and mode; ΔW is `waverec2` cropped to `out × in` from the
    /// top-left, PyWavelets' convention.
    Wavedec,
}

/// A 2-D sub-band kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BandKind {
    /// Approximation (low-pass along both axes).
    A,
    /// Detail along rows (axis 0), approximation along columns: PyWavelets' cH.
    H,
    /// Approximation along rows, detail along columns: PyWavelets' cV.
    V,
    /// Detail along both axes.
    D,
}

impl BandKind {
    /// The 1-D bands of the row (axis 0) and column (axis 1) atoms.
    pub fn factors(self) -> (Band, Band) {
        match self {
            BandKind::A => (Band::Approx, Band::Approx),
            BandKind::H => (Band::Detail, Band::Approx),
            BandKind::V => (Band::Approx, Band::Detail),
            BandKind::D => (Band::Detail, Band::Detail),
        }
    }
}

/// One sub-band of the coefficient array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BandInfo {
    /// Decomposition level (1 = finest).
    pub level: usize,
    /// Which of the four kinds.
    pub kind: BandKind,
    /// Rows and columns.
    pub shape: (usize, usize),
}

impl BandInfo {
    /// Number of coefficients.
    pub fn size(&self) -> usize {
        self.shape.0 * self.shape.1
    }
}

/// One coefficient position: sub-band index (into [`Geometry::bands`]), row
/// and column inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Coef {
    /// Index into [`Geometry::bands`].
    pub band: usize,
    /// Row inside the band.
    pub row: usize,
    /// Column inside the band.
    pub col: usize,
}

/// A 1-D atom as it lands in ΔW: at most two contiguous runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Factor {
    /// `(first position, values)` runs.
    pub runs: Vec<(usize, Vec<f64>)>,
}

/// The coefficient array of one `out × in` layer.
#[derive(Debug, Clone)]
pub struct Geometry {
    layout: Layout,
    shape: (usize, usize),
    bases: Option<[AtomBasis; 2]>,
    crop: (usize, usize),
    periodic: bool,
    bands: Vec<BandInfo>,
}

impl Geometry {
    /// The geometry of an `out × in` weight.
    ///
    /// # Errors
    /// * [`Error::Invalid`] for an empty or impossibly large shape, or `Layout::Peft` with a level
    ///   other than 1 or a mode other than zero.
    /// * [`Error::Dwt`] ([`dwt_core::Error::LevelTooDeep`]) for a `Wavedec`
    ///   level beyond `dwt_max_level` of the shorter side.
    pub fn new(layout: Layout, wavelet: &Wavelet, mode: Mode, level: usize, shape: (usize, usize)) -> Result<Self> {
        let (out, inp) = shape;
        if out == 0 || inp == 0 {
            return Err(Error::invalid("weight shape", format!("{out}×{inp} is empty")));
        }
        // A shape read from a file must describe a matrix that can exist.
        if out.checked_mul(inp).is_none_or(|n| n > isize::MAX as usize / 8) {
            return Err(Error::invalid("weight shape", format!("{out}×{inp} is too large")));
        }
        let l = wavelet.filter_len();
        match layout {
            Layout::Identity => Ok(Geometry {
                layout,
                shape,
                bases: None,
                crop: (0, 0),
                periodic: false,
                bands: vec![BandInfo {
                    level: 0,
                    kind: BandKind::A,
                    shape,
                }],
            }),
            Layout::Peft => {
                if level != 1 || mode != Mode::Zero {
                    return Err(Error::invalid(
                        "layout",
                        format!("the PEFT layout is one level in zero mode (got level {level}, mode {mode})"),
                    ));
                }
                // Pad each side to d + L − 2, rounded up to even; the zero-mode
                // idwt of P/2 coefficients has P − L + 2 samples.
                let pad = |d: usize| (d + l - 2).next_multiple_of(2);
                let (po, pi) = (pad(out), pad(inp));
                let rows = AtomBasis::new(wavelet, Mode::Zero, po + 2 - l, 1)?;
                let cols = AtomBasis::new(wavelet, Mode::Zero, pi + 2 - l, 1)?;
                let crop = ((rows.output_len() - out) / 2, (cols.output_len() - inp) / 2);
                let half = (po / 2, pi / 2);
                let bands = [BandKind::A, BandKind::H, BandKind::V, BandKind::D]
                    .map(|kind| BandInfo {
                        level: 1,
                        kind,
                        shape: half,
                    })
                    .to_vec();
                Ok(Geometry {
                    layout,
                    shape,
                    bases: Some([rows, cols]),
                    crop,
                    periodic: false,
                    bands,
                })
            }
            Layout::Wavedec => {
                let max_level = dwt_max_level(out.min(inp), l);
                if level == 0 || level > max_level {
                    return Err(dwt_core::Error::LevelTooDeep {
                        level,
                        max_level,
                        len: out.min(inp),
                        filter_len: l,
                    }
                    .into());
                }
                let rows = AtomBasis::new(wavelet, mode, out, level)?;
                let cols = AtomBasis::new(wavelet, mode, inp, level)?;
                let mut bands = vec![BandInfo {
                    level,
                    kind: BandKind::A,
                    shape: (rows.coeff_len(level), cols.coeff_len(level)),
                }];
                for j in (1..=level).rev() {
                    for kind in [BandKind::H, BandKind::V, BandKind::D] {
                        bands.push(BandInfo {
                            level: j,
                            kind,
                            shape: (rows.coeff_len(j), cols.coeff_len(j)),
                        });
                    }
                }
                Ok(Geometry {
                    layout,
                    shape,
                    bases: Some([rows, cols]),
                    crop: (0, 0),
                    periodic: mode == Mode::Periodization,
                    bands,
                })
            }
        }
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }
    /// The weight shape `(out, in)`.
    pub fn shape(&self) -> (usize, usize) {
        self.shape
    }
    /// The sub-bands, coarsest first: `A_J, H_J, V_J, D_J, …, H_1, V_1, D_1`
    /// (PEFT layout: `A, H, V, D`; identity layout: one band, the weight).
    pub fn bands(&self) -> &[BandInfo] {
        &self.bands
    }
    /// Where the weight starts in the inverse transform's output (PEFT's
    /// centre crop; the top-left corner otherwise).
    pub fn crop(&self) -> (usize, usize) {
        self.crop
    }
    /// Shape of the inverse transform's output before the crop (the weight's
    /// own shape for the identity layout).
    pub fn full_shape(&self) -> (usize, usize) {
        match &self.bases {
            Some([rows, cols]) => (rows.output_len(), cols.output_len()),
            None => self.shape,
        }
    }
    /// Total number of coefficient positions.
    pub fn num_positions(&self) -> usize {
        self.bands.iter().map(BandInfo::size).sum()
    }

    /// Check that a coefficient position exists.
    ///
    /// # Errors
    /// [`Error::Invalid`] when it does not.
    pub fn check(&self, c: Coef) -> Result<()> {
        match self.bands.get(c.band) {
            Some(b) if c.row < b.shape.0 && c.col < b.shape.1 => Ok(()),
            _ => Err(Error::invalid(
                "coefficient location",
                format!(
                    "{c:?} is outside the {} sub-bands {:?}",
                    self.bands.len(),
                    self.shape_list()
                ),
            )),
        }
    }

    fn shape_list(&self) -> Vec<(usize, usize)> {
        self.bands.iter().map(|b| b.shape).collect()
    }

    /// The position of flat index `i` in band order (row-major inside each band).
    ///
    /// # Errors
    /// [`Error::Invalid`] when `i >= num_positions()`.
    pub fn unflatten(&self, mut i: usize) -> Result<Coef> {
        for (band, b) in self.bands.iter().enumerate() {
            if i < b.size() {
                return Ok(Coef {
                    band,
                    row: i / b.shape.1,
                    col: i % b.shape.1,
                });
            }
            i -= b.size();
        }
        Err(Error::invalid("flat coefficient index", "beyond the coefficient array"))
    }

    /// The inverse of [`Self::unflatten`].
    pub fn flatten(&self, c: Coef) -> usize {
        let before: usize = self.bands[..c.band].iter().map(BandInfo::size).sum();
        before + c.row * self.bands[c.band].shape.1 + c.col
    }

    /// PEFT's location for flat weight index `idx` (`row = idx / in`,
    /// `col = idx % in`), placed into the padded array and its quadrant.
    /// Only for the PEFT and identity layouts.
    pub fn peft_position(&self, idx: u64) -> Result<Coef> {
        let (out, inp) = self.shape;
        let (r, c) = ((idx / inp as u64) as usize, (idx % inp as u64) as usize);
        if r >= out {
            return Err(Error::invalid("PEFT location", format!("{idx} is beyond {out}×{inp}")));
        }
        match self.layout {
            Layout::Identity => Ok(Coef {
                band: 0,
                row: r,
                col: c,
            }),
            Layout::Peft => {
                let (h, w) = self.bands[0].shape;
                let (po, pi) = (2 * h, 2 * w);
                let (pr, pc) = (r + (po - out) / 2, c + (pi - inp) / 2);
                let band = usize::from(pr >= h) * 2 + usize::from(pc >= w);
                // Quadrant order A (TL), H (TR), V (BL), D (BR).
                Ok(Coef {
                    band,
                    row: pr % h,
                    col: pc % w,
                })
            }
            Layout::Wavedec => Err(Error::invalid(
                "layout",
                "PEFT locations need the PEFT or identity layout",
            )),
        }
    }

    /// The atom of a coefficient along `axis` (0: rows, 1: columns),
    /// cropped to the weight. The outer product of the two is the
    /// coefficient's ΔW.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a position outside the array or an axis other
    /// than 0 or 1.
    pub fn factor(&self, c: Coef, axis: usize) -> Result<Factor> {
        self.check(c)?;
        if axis > 1 {
            return Err(Error::invalid("axis", format!("{axis} (a weight has axes 0 and 1)")));
        }
        let idx = [c.row, c.col][axis];
        let Some(bases) = &self.bases else {
            return Ok(Factor {
                runs: vec![(idx, vec![1.0])],
            });
        };
        let b = self.bands[c.band];
        let (rb, cb) = b.kind.factors();
        let (lo, len) = [(self.crop.0, self.shape.0), (self.crop.1, self.shape.1)][axis];
        let atom = bases[axis]
            .atom(b.level, [rb, cb][axis], idx)?
            .crop(lo, len, self.periodic);
        Ok(Factor {
            runs: atom.segments().map(|(s, v)| (s, v.to_vec())).collect(),
        })
    }

    /// The atom key of a coefficient's row and column factors: coefficients
    /// with equal keys share a factor.
    pub(crate) fn factor_keys(&self, c: Coef) -> ((usize, Band, usize), (usize, Band, usize)) {
        let b = self.bands[c.band];
        let (rb, cb) = b.kind.factors();
        ((b.level, rb, c.row), (b.level, cb, c.col))
    }
}
