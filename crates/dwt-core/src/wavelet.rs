//! Wavelets and their filter banks, looked up by PyWavelets name.

use std::fmt;
use std::str::FromStr;

use crate::filters;
use crate::{Error, Result};

/// The family a [`Wavelet`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Family {
    /// `haar` (identical filters to `db1`).
    Haar,
    /// Daubechies, `db1`–`db38`.
    Daubechies,
    /// Symlets, `sym2`–`sym20`.
    Symlets,
    /// Coiflets, `coif1`–`coif17`.
    Coiflets,
    /// Biorthogonal spline wavelets, `biorN.M`.
    Biorthogonal,
    /// Reverse biorthogonal, `rbioN.M` (the `bior` filters swapped).
    ReverseBiorthogonal,
    /// The FIR approximation of the discrete Meyer wavelet, `dmey`.
    DiscreteMeyer,
    /// A filter bank given by the user.
    Custom,
}

/// A discrete wavelet: a name and its four-filter bank, in `f64`.
///
/// The bank is derived from one scaling filter `h` (orthogonal wavelets) or a
/// pair `h`, `h~` (biorthogonal ones) with PyWavelets' relations, for a filter
/// length `L`:
///
/// | filter | value |
/// |---|---|
/// | `rec_lo[i]` | `h[i]` |
/// | `dec_lo[i]` | `h~[L-1-i]` |
/// | `rec_hi[i]` | `(-1)^i · h~[L-1-i]` |
/// | `dec_hi[i]` | `(-1)^(L-1-i) · h[i]` |
///
/// with `h~ = h` for orthogonal wavelets. The results equal
/// `pywt.Wavelet(name).filter_bank` bit for bit (a test checks every wavelet).
///
/// ```
/// use dwt_core::Wavelet;
/// let w = Wavelet::new("db2")?;
/// assert_eq!(w.filter_len(), 4);
/// assert!((w.dec_lo()[0] + 0.129409522551).abs() < 1e-12);
/// assert!(Wavelet::new("db39").is_err());
/// # Ok::<(), dwt_core::Error>(())
/// ```
#[derive(Clone, PartialEq)]
pub struct Wavelet {
    name: String,
    family: Family,
    orthogonal: bool,
    dec_lo: Vec<f64>,
    dec_hi: Vec<f64>,
    rec_lo: Vec<f64>,
    rec_hi: Vec<f64>,
}

impl fmt::Debug for Wavelet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wavelet")
            .field("name", &self.name)
            .field("family", &self.family)
            .field("filter_len", &self.filter_len())
            .finish()
    }
}

impl fmt::Display for Wavelet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Wavelet {
    /// Look a wavelet up by its PyWavelets name: `haar`, `db1`–`db38`,
    /// `sym2`–`sym20`, `coif1`–`coif17`, `biorN.M`, `rbioN.M` or `dmey`.
    ///
    /// # Errors
    /// [`Error::UnknownWavelet`], whose message lists the valid names.
    pub fn new(name: &str) -> Result<Self> {
        let unknown = || Error::UnknownWavelet { name: name.to_owned() };
        let numbered = |prefix: &str, table: &'static [&'static [f64]], first: usize| {
            let digits = name.strip_prefix(prefix)?;
            if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let k: usize = digits.parse().ok()?;
            table.get(k.checked_sub(first)?).copied()
        };
        if name == "haar" {
            return Ok(Self::from_tables(name, Family::Haar, filters::DB[0], None));
        }
        if name == "dmey" {
            return Ok(Self::from_tables(name, Family::DiscreteMeyer, filters::DMEY[0], None));
        }
        if let Some(h) = numbered("db", &filters::DB, 1) {
            return Ok(Self::from_tables(name, Family::Daubechies, h, None));
        }
        if let Some(h) = numbered("sym", &filters::SYM, 2) {
            return Ok(Self::from_tables(name, Family::Symlets, h, None));
        }
        if let Some(h) = numbered("coif", &filters::COIF, 1) {
            return Ok(Self::from_tables(name, Family::Coiflets, h, None));
        }
        let bior = |order: &str| filters::BIOR_ORDERS.iter().position(|o| *o == order);
        if let Some(i) = name.strip_prefix("bior").and_then(bior) {
            let (h, ht) = (filters::BIOR_H[i], filters::BIOR_HT[i]);
            return Ok(Self::from_tables(name, Family::Biorthogonal, h, Some(ht)));
        }
        if let Some(i) = name.strip_prefix("rbio").and_then(bior) {
            let (h, ht) = (filters::BIOR_HT[i], filters::BIOR_H[i]);
            return Ok(Self::from_tables(name, Family::ReverseBiorthogonal, h, Some(ht)));
        }
        Err(unknown())
    }

    /// Every built-in wavelet name, in family order (the names
    /// `pywt.wavelist(kind="discrete")` returns, in a different order).
    pub fn names() -> impl Iterator<Item = String> {
        let db = (1..=filters::DB.len()).map(|k| format!("db{k}"));
        let sym = (2..=filters::SYM.len() + 1).map(|k| format!("sym{k}"));
        let coif = (1..=filters::COIF.len()).map(|k| format!("coif{k}"));
        let bior = filters::BIOR_ORDERS.iter().map(|o| format!("bior{o}"));
        let rbio = filters::BIOR_ORDERS.iter().map(|o| format!("rbio{o}"));
        std::iter::once("haar".to_owned())
            .chain(db)
            .chain(sym)
            .chain(coif)
            .chain(bior)
            .chain(rbio)
            .chain(std::iter::once("dmey".to_owned()))
    }

    /// An orthogonal wavelet from a user-given scaling filter `h` (PyWavelets'
    /// `rec_lo`). The other three filters follow from the relations above.
    ///
    /// # Errors
    /// [`Error::InvalidFilter`] when `h` is empty, of odd length, longer than
    /// 128 taps, or not finite.
    pub fn orthogonal(name: &str, h: &[f64]) -> Result<Self> {
        Self::custom(name, h, h)
    }

    /// A biorthogonal wavelet from its synthesis scaling filter `h` (PyWavelets'
    /// `rec_lo`) and analysis scaling filter `h~` (PyWavelets' `dec_lo`,
    /// reversed). Both must have the same even length.
    ///
    /// # Errors
    /// [`Error::InvalidFilter`] when the filters are empty, of odd or unequal
    /// length, or not finite.
    pub fn biorthogonal(name: &str, h: &[f64], h_tilde: &[f64]) -> Result<Self> {
        Self::custom(name, h, h_tilde)
    }

    fn custom(name: &str, h: &[f64], ht: &[f64]) -> Result<Self> {
        let reason = if h.is_empty() {
            Some("the scaling filter is empty")
        } else if !h.len().is_multiple_of(2) {
            Some("the filter length must be even")
        } else if h.len() > crate::kernels::MAX_TAPS {
            Some("filters longer than 128 taps are not supported")
        } else if h.len() != ht.len() {
            Some("the two scaling filters must have the same length")
        } else if !h.iter().chain(ht).all(|v| v.is_finite()) {
            Some("filter taps must be finite")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(Error::InvalidFilter { reason });
        }
        let mut w = Self::from_tables(name, Family::Custom, h, Some(ht));
        w.orthogonal = h == ht;
        Ok(w)
    }

    fn from_tables(name: &str, family: Family, h: &[f64], ht: Option<&[f64]>) -> Self {
        let ht = ht.unwrap_or(h);
        let l = h.len();
        let sign = |k: usize| if k.is_multiple_of(2) { 1.0 } else { -1.0 };
        Wavelet {
            name: name.to_owned(),
            family,
            orthogonal: !matches!(family, Family::Biorthogonal | Family::ReverseBiorthogonal),
            rec_lo: h.to_vec(),
            dec_lo: ht.iter().rev().copied().collect(),
            rec_hi: (0..l).map(|i| sign(i) * ht[l - 1 - i]).collect(),
            dec_hi: (0..l).map(|i| sign(l - 1 - i) * h[i]).collect(),
        }
    }

    /// The PyWavelets name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Whether the analysis and synthesis filters are the same (up to
    /// reversal), which makes the periodization transform orthogonal.
    pub fn is_orthogonal(&self) -> bool {
        self.orthogonal
    }

    /// The filter length `L` (PyWavelets' `dec_len`, always even).
    pub fn filter_len(&self) -> usize {
        self.dec_lo.len()
    }

    /// Decomposition low-pass filter.
    pub fn dec_lo(&self) -> &[f64] {
        &self.dec_lo
    }
    /// Decomposition high-pass filter.
    pub fn dec_hi(&self) -> &[f64] {
        &self.dec_hi
    }
    /// Reconstruction low-pass filter.
    pub fn rec_lo(&self) -> &[f64] {
        &self.rec_lo
    }
    /// Reconstruction high-pass filter.
    pub fn rec_hi(&self) -> &[f64] {
        &self.rec_hi
    }

    /// `[dec_lo, dec_hi, rec_lo, rec_hi]`, PyWavelets' `filter_bank` order.
    pub fn filter_bank(&self) -> [&[f64]; 4] {
        [&self.dec_lo, &self.dec_hi, &self.rec_lo, &self.rec_hi]
    }

    /// The deepest useful decomposition level for a signal of `len` samples:
    /// PyWavelets' `dwt_max_level(len, self.filter_len())`.
    pub fn max_level(&self, len: usize) -> usize {
        crate::dwt_max_level(len, self.filter_len())
    }
}

impl FromStr for Wavelet {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}
