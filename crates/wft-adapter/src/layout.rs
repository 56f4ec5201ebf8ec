//! Where trainable wavelet coefficients live, and what each one does to ΔW.
//!
//! A [`Geometry`] describes the coefficient array of one `out × in` layer:
//! its sub-bands in a fixed flat order, and the separable synthesis
//! ([`dwt_core::SeparableBasis`]) whose atoms are each coefficient's
//! contribution to ΔW. Coefficients are [`dwt_core::Location`]s.

use dwt_core::{AtomBasis, Crop, Level, Location, Mode, Real, SeparableBasis, Subband, Wavelet, dwt_max_level};
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

/// One sub-band of the coefficient array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BandInfo {
    /// Decomposition level (1 = finest).
    pub level: usize,
    /// Which of the four kinds.
    pub kind: Subband,
    /// Rows and columns.
    pub shape: (usize, usize),
}

impl BandInfo {
    /// Number of coefficients.
    pub fn size(&self) -> usize {
        self.shape.0 * self.shape.1
    }
}

/// The coefficient array of one `out × in` layer.
#[derive(Debug, Clone)]
pub struct Geometry {
    layout: Layout,
    shape: (usize, usize),
    mode: Mode,
    level: usize,
    /// The shape `wavedec2` decomposes (PEFT's padded one, else the weight's).
    signal: (usize, usize),
    /// The inverse transform's output shape, before the crop.
    full: (usize, usize),
    crop: (usize, usize),
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
                mode,
                level: 0,
                signal: shape,
                full: shape,
                crop: (0, 0),
                bands: vec![BandInfo {
                    level: 0,
                    kind: Subband::Approx,
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
                let signal = (po + 2 - l, pi + 2 - l);
                let rows = AtomBasis::new(wavelet, Mode::Zero, signal.0, 1)?;
                let cols = AtomBasis::new(wavelet, Mode::Zero, signal.1, 1)?;
                let full = (rows.output_len(), cols.output_len());
                let crop = ((full.0 - out) / 2, (full.1 - inp) / 2);
                let half = (po / 2, pi / 2);
                let bands = [
                    Subband::Approx,
                    Subband::Horizontal,
                    Subband::Vertical,
                    Subband::Diagonal,
                ]
                .map(|kind| BandInfo {
                    level: 1,
                    kind,
                    shape: half,
                })
                .to_vec();
                Ok(Geometry {
                    layout,
                    shape,
                    mode: Mode::Zero,
                    level: 1,
                    signal,
                    full,
                    crop,
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
                    kind: Subband::Approx,
                    shape: (rows.coeff_len(level), cols.coeff_len(level)),
                }];
                for j in (1..=level).rev() {
                    for kind in Subband::DETAILS {
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
                    mode,
                    level,
                    signal: shape,
                    full: (rows.output_len(), cols.output_len()),
                    crop: (0, 0),
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
        self.full
    }
    /// Total number of coefficient positions.
    pub fn num_positions(&self) -> usize {
        self.bands.iter().map(BandInfo::size).sum()
    }

    /// The index into [`Self::bands`] of a location's band.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the location is outside every band.
    pub fn band_index(&self, c: Location) -> Result<usize> {
        match self.bands.iter().position(|b| b.level == c.level && b.kind == c.band) {
            Some(i) if c.row < self.bands[i].shape.0 && c.col < self.bands[i].shape.1 => Ok(i),
            _ => Err(Error::invalid(
                "coefficient location",
                format!(
                    "{c:?} is outside the {} sub-bands {:?}",
                    self.bands.len(),
                    self.bands
                        .iter()
                        .map(|b| (b.level, b.kind, b.shape))
                        .collect::<Vec<_>>()
                ),
            )),
        }
    }

    /// Check that a coefficient position exists.
    ///
    /// # Errors
    /// [`Error::Invalid`] when it does not.
    pub fn check(&self, c: Location) -> Result<()> {
        self.band_index(c).map(|_| ())
    }

    /// The location at `row`, `col` of band `band` (an index into
    /// [`Self::bands`], as the native file format stores it).
    ///
    /// # Errors
    /// [`Error::Invalid`] when there is no such position.
    pub fn location(&self, band: usize, row: usize, col: usize) -> Result<Location> {
        let b = self.bands.get(band).ok_or_else(|| {
            Error::invalid(
                "coefficient location",
                format!("band {band} of {} sub-bands", self.bands.len()),
            )
        })?;
        let c = Location {
            level: b.level,
            band: b.kind,
            row,
            col,
        };
        self.check(c)?;
        Ok(c)
    }

    /// The position of flat index `i` in band order (row-major inside each band).
    ///
    /// # Errors
    /// [`Error::Invalid`] when `i >= num_positions()`.
    pub fn unflatten(&self, mut i: usize) -> Result<Location> {
        for b in &self.bands {
            if i < b.size() {
                return Ok(Location {
                    level: b.level,
                    band: b.kind,
                    row: i / b.shape.1,
                    col: i % b.shape.1,
                });
            }
            i -= b.size();
        }
        Err(Error::invalid("flat coefficient index", "beyond the coefficient array"))
    }

    /// The inverse of [`Self::unflatten`].
    ///
    /// # Errors
    /// [`Error::Invalid`] for a location outside the array.
    pub fn flatten(&self, c: Location) -> Result<usize> {
        let band = self.band_index(c)?;
        let before: usize = self.bands[..band].iter().map(BandInfo::size).sum();
        Ok(before + c.row * self.bands[band].shape.1 + c.col)
    }

    /// PEFT's location for flat weight index `idx` (`row = idx / in`,
    /// `col = idx % in`), placed into the padded array and its quadrant.
    /// Only for the PEFT and identity layouts.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an index beyond the weight or the wavedec layout.
    pub fn peft_position(&self, idx: u64) -> Result<Location> {
        let (out, inp) = self.shape;
        let (r, c) = ((idx / inp as u64) as usize, (idx % inp as u64) as usize);
        if r >= out {
            return Err(Error::invalid("PEFT location", format!("{idx} is beyond {out}×{inp}")));
        }
        match self.layout {
            Layout::Identity => Ok(Location {
                level: 0,
                band: Subband::Approx,
                row: r,
                col: c,
            }),
            Layout::Peft => {
                let (h, w) = self.bands[0].shape;
                let (po, pi) = (2 * h, 2 * w);
                let (pr, pc) = (r + (po - out) / 2, c + (pi - inp) / 2);
                // Quadrant order A (TL), H (TR), V (BL), D (BR).
                let band = self.bands[usize::from(pr >= h) * 2 + usize::from(pc >= w)].kind;
                Ok(Location {
                    level: 1,
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

    /// The separable atoms of `locations`, cropped to the weight: the
    /// outer product of coefficient `k`'s two factors is its ΔW (before α).
    ///
    /// # Errors
    /// [`Error::Dwt`] for a location outside the array.
    pub fn basis<T: Real>(&self, wavelet: &Wavelet, locations: &[Location]) -> Result<SeparableBasis<T>> {
        Ok(match self.layout {
            Layout::Identity => {
                let positions: Vec<(usize, usize)> = locations.iter().map(|c| (c.row, c.col)).collect();
                SeparableBasis::impulses(self.shape, &positions)?
            }
            Layout::Peft | Layout::Wavedec => SeparableBasis::wavedec2(
                wavelet,
                self.mode,
                self.signal,
                Level::Unchecked(self.level),
                Some(Crop {
                    origin: self.crop,
                    shape: self.shape,
                }),
                locations,
            )?,
        })
    }
}
