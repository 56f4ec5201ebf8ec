//! One transform step along one axis of a C-contiguous buffer.
//!
//! Every step sees its buffer as `(outer, n, inner)`: `n` samples along the
//! transformed axis, `inner` the product of the later axes (the stride between
//! neighbouring samples), `outer` the product of the earlier ones.
//!
//! * `inner == 1` (the last axis): each lane is extended into scratch, split
//!   into even and odd phases, and every filter tap becomes one AXPY over the
//!   whole lane.
//! * `inner > 1`: samples are whole rows of `inner` elements, so every tap is
//!   an AXPY over a row. Only the few boundary rows are materialised.
//!
//! The extension mode never appears in the loops: [`Extension`] turns it into
//! a precomputed stencil per boundary sample. The inverse transform needs no
//! extension at all except in periodization mode.

use crate::mode::{Term, stencil};
use crate::{Mode, Real};

#[cfg(feature = "parallel")]
use rayon::prelude::*;

/// Work (multiply-adds) below which a step never goes parallel.
#[cfg(feature = "parallel")]
const PAR_MIN_WORK: usize = 1 << 16;

/// A signal of `n` samples extended to `len` samples, body sample `i` at
/// extended index `pad + i`. Boundary samples are stored as stencils.
#[derive(Debug, Clone)]
pub(crate) struct Extension<T> {
    n: usize,
    pad: usize,
    len: usize,
    /// CSR offsets into `terms`, one entry per boundary sample (left, then right).
    starts: Vec<usize>,
    terms: Vec<(usize, T)>,
}

impl<T: Real> Extension<T> {
    pub(crate) fn new(mode: Mode, n: usize, pad: usize, len: usize) -> Self {
        debug_assert!(len >= pad + n);
        let mut starts = vec![0];
        let mut terms = Vec::new();
        let mut tmp: Vec<Term> = Vec::new();
        let boundary = (0..pad).chain(pad + n..len);
        for t in boundary {
            tmp.clear();
            stencil(mode, n, t as isize - pad as isize, &mut tmp);
            terms.extend(tmp.iter().map(|&(i, w)| (i, T::from_f64(w))));
            starts.push(terms.len());
        }
        Extension {
            n,
            pad,
            len,
            starts,
            terms,
        }
    }

    fn boundary_rows(&self) -> usize {
        self.len - self.n
    }

    fn terms(&self, b: usize) -> &[(usize, T)] {
        &self.terms[self.starts[b]..self.starts[b + 1]]
    }

    /// Write the whole extended lane (`len` samples) of `x` (`n` samples).
    fn fill_lane(&self, x: &[T], out: &mut [T]) {
        let (left, rest) = out[..self.len].split_at_mut(self.pad);
        let (body, right) = rest.split_at_mut(self.n);
        body.copy_from_slice(x);
        for (b, o) in left.iter_mut().chain(right.iter_mut()).enumerate() {
            *o = self.terms(b).iter().map(|&(i, w)| w * x[i]).sum();
        }
    }

    /// Write the boundary rows of `x` (`n` rows of `inner`) into `out`,
    /// `boundary_rows()` rows of `inner`: left rows first, then right rows.
    fn fill_rows(&self, x: &[T], inner: usize, out: &mut [T]) {
        for (b, row) in out.chunks_exact_mut(inner).take(self.boundary_rows()).enumerate() {
            row.fill(T::zero());
            for &(i, w) in self.terms(b) {
                axpy(row, w, &x[i * inner..(i + 1) * inner]);
            }
        }
    }

    /// Row `t` of the extended signal: a body row of `x` or a boundary row.
    #[inline]
    fn row<'a>(&self, t: usize, x: &'a [T], bnd: &'a [T], inner: usize) -> &'a [T] {
        if t < self.pad {
            &bnd[t * inner..(t + 1) * inner]
        } else if t < self.pad + self.n {
            &x[(t - self.pad) * inner..(t - self.pad + 1) * inner]
        } else {
            &bnd[(t - self.n) * inner..(t - self.n + 1) * inner]
        }
    }
}

/// `y += a * x`.
#[inline(always)]
fn axpy<T: Real>(y: &mut [T], a: T, x: &[T]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `y1 += a1 * x; y2 += a2 * x` in one pass over `x`.
#[inline(always)]
fn axpy2<T: Real>(y1: &mut [T], y2: &mut [T], a1: T, a2: T, x: &[T]) {
    for ((y1, y2), &x) in y1.iter_mut().zip(y2.iter_mut()).zip(x) {
        *y1 += a1 * x;
        *y2 += a2 * x;
    }
}

/// `y += a * x1 + b * x2`.
#[inline(always)]
fn axpy_pair<T: Real>(y: &mut [T], a: T, x1: &[T], b: T, x2: &[T]) {
    for ((y, &x1), &x2) in y.iter_mut().zip(x1).zip(x2) {
        *y += a * x1 + b * x2;
    }
}

/// Should a step with this much work run on rayon?
#[inline]
#[allow(unused_variables)]
fn go_parallel(parallel: bool, work: usize) -> bool {
    #[cfg(feature = "parallel")]
    {
        parallel && work >= PAR_MIN_WORK && rayon::current_num_threads() > 1
    }
    #[cfg(not(feature = "parallel"))]
    {
        false
    }
}

/// One analysis (forward DWT) step: `n` samples to `m` low-pass and `m`
/// high-pass coefficients, `out[o] = Σ_j f[j] · x̂[2o + s − j]` over the
/// extended signal `x̂` (body at offset `L − 1`).
#[derive(Debug, Clone)]
pub(crate) struct Analysis<T> {
    pub(crate) n: usize,
    pub(crate) m: usize,
    s: usize,
    lo: Vec<T>,
    hi: Vec<T>,
    ext: Extension<T>,
}

impl<T: Real> Analysis<T> {
    /// `mode` must accept `n` (see [`Mode::min_len`]); the caller checks.
    pub(crate) fn new(n: usize, mode: Mode, lo: &[f64], hi: &[f64]) -> Self {
        let l = lo.len();
        let m = crate::dwt_coeff_len(n, l, mode);
        // Non-periodization: x̂[t] = ext(t - (L-1)), index 2o+1-j  => s = L.
        // Periodization: index L/2 + 2o - j on the padded period => s = 3L/2 - 1.
        let s = if mode == Mode::Periodization { l + l / 2 - 1 } else { l };
        let len = 2 * (m - 1) + s + 1;
        let conv = |f: &[f64]| f.iter().map(|&v| T::from_f64(v)).collect();
        Analysis {
            n,
            m,
            s,
            lo: conv(lo),
            hi: conv(hi),
            ext: Extension::new(mode, n, l - 1, len),
        }
    }

    /// Scratch elements one call of [`Self::run`] needs.
    pub(crate) fn scratch_len(&self, inner: usize) -> usize {
        if inner == 1 {
            // extended lane + two phases
            2 * self.ext.len + 2
        } else {
            self.ext.boundary_rows() * inner
        }
    }

    /// Transform `outer` blocks of `n × inner` in `x` into `m × inner` blocks
    /// of `lo` and `hi`.
    pub(crate) fn run(
        &self,
        x: &[T],
        outer: usize,
        inner: usize,
        lo: &mut [T],
        hi: &mut [T],
        scratch: &mut [T],
        parallel: bool,
    ) {
        let (n, m) = (self.n, self.m);
        let par = go_parallel(parallel, outer * m * inner * self.lo.len() * 2);
        if inner == 1 {
            let lanes = x.chunks_exact(n).zip(lo.chunks_exact_mut(m)).zip(hi.chunks_exact_mut(m));
            if par {
                #[cfg(feature = "parallel")]
                {
                    let need = self.scratch_len(1);
                    x.par_chunks_exact(n)
                        .zip(lo.par_chunks_exact_mut(m))
                        .zip(hi.par_chunks_exact_mut(m))
                        .with_min_len(8)
                        .for_each_init(
                            || vec![T::zero(); need],
                            |s, ((x, lo), hi)| self.lane(x, lo, hi, s),
                        );
                    return;
                }
            }
            for ((x, lo), hi) in lanes {
                self.lane(x, lo, hi, scratch);
            }
            return;
        }
        let bnd = &mut scratch[..self.scratch_len(inner)];
        for ((x, lo), hi) in x
            .chunks_exact(n * inner)
            .zip(lo.chunks_exact_mut(m * inner))
            .zip(hi.chunks_exact_mut(m * inner))
        {
            self.ext.fill_rows(x, inner, bnd);
            let bnd: &[T] = bnd;
            let row = |o: usize, lo: &mut [T], hi: &mut [T]| {
                lo.fill(T::zero());
                hi.fill(T::zero());
                for (j, (&f, &g)) in self.lo.iter().zip(&self.hi).enumerate() {
                    let src = self.ext.row(2 * o + self.s - j, x, bnd, inner);
                    axpy2(lo, hi, f, g, src);
                }
            };
            if par {
                #[cfg(feature = "parallel")]
                {
                    lo.par_chunks_exact_mut(inner)
                        .zip(hi.par_chunks_exact_mut(inner))
                        .enumerate()
                        .for_each(|(o, (lo, hi))| row(o, lo, hi));
                    continue;
                }
            }
            for (o, (lo, hi)) in lo.chunks_exact_mut(inner).zip(hi.chunks_exact_mut(inner)).enumerate() {
                row(o, lo, hi);
            }
        }
    }

    fn lane(&self, x: &[T], lo: &mut [T], hi: &mut [T], scratch: &mut [T]) {
        let len = self.ext.len;
        let (ext, phases) = scratch.split_at_mut(len);
        self.ext.fill_lane(x, ext);
        let half = len.div_ceil(2);
        let (even, odd) = phases[..2 * half].split_at_mut(half);
        for (k, pair) in ext.chunks(2).enumerate() {
            even[k] = pair[0];
            if let Some(&v) = pair.get(1) {
                odd[k] = v;
            }
        }
        lo.fill(T::zero());
        hi.fill(T::zero());
        let m = self.m;
        for (j, (&f, &g)) in self.lo.iter().zip(&self.hi).enumerate() {
            let t = self.s - j;
            let phase: &[T] = if t % 2 == 0 { even } else { odd };
            axpy2(lo, hi, f, g, &phase[t / 2..t / 2 + m]);
        }
    }
}

/// One synthesis (inverse DWT) step: `m` low-pass and `m` high-pass
/// coefficients to `r` samples. Output sample `2p + φ` is
/// `Σ_j rec_lo[j]·â[p + off_j] + rec_hi[j]·d̂[p + off_j]` over the taps `j`
/// of phase `φ`, where `â`, `d̂` are the inputs, periodically extended in
/// periodization mode and used as they are otherwise ("valid" upsampling
/// convolution, PyWavelets' result for every other mode).
#[derive(Debug, Clone)]
pub(crate) struct Synthesis<T> {
    pub(crate) m: usize,
    pub(crate) r: usize,
    lo: Vec<T>,
    hi: Vec<T>,
    /// Per phase, `(tap, offset)` pairs.
    taps: [Vec<(usize, usize)>; 2],
    ext: Option<Extension<T>>,
}

impl<T: Real> Synthesis<T> {
    /// `m` must give a positive output length (see [`crate::idwt_len`]).
    pub(crate) fn new(m: usize, mode: Mode, lo: &[f64], hi: &[f64]) -> Self {
        let l = lo.len();
        let per = mode == Mode::Periodization;
        // y[n] gathers the taps j with n + L - 2 - j (valid) or n + L/2 - 1 - j
        // (periodization) even; their input index is p + (φ + σ - j)/2.
        let (sigma, pad) = if per { (l / 2 - 1, l / 2) } else { (l - 2, 0) };
        let r = if per { 2 * m } else { 2 * m + 2 - l };
        let taps = [0, 1].map(|ph: usize| {
            (0..l)
                .filter(|j| (ph + sigma + j) % 2 == 0)
                // (2·pad + φ + σ − j) is even and never negative.
                .map(|j| (j, (2 * pad + ph + sigma - j) / 2))
                .collect()
        });
        let ext = per.then(|| Extension::new(Mode::Periodic, m, pad, m + 2 * pad));
        let conv = |f: &[f64]| f.iter().map(|&v| T::from_f64(v)).collect();
        Synthesis {
            m,
            r,
            lo: conv(lo),
            hi: conv(hi),
            taps,
            ext,
        }
    }

    /// Scratch elements one call of [`Self::run`] needs.
    pub(crate) fn scratch_len(&self, inner: usize) -> usize {
        let ext = self.ext.as_ref();
        if inner == 1 {
            2 * ext.map_or(0, |e| e.len) + self.r
        } else {
            2 * ext.map_or(0, |e| e.boundary_rows()) * inner
        }
    }

    /// Combine `outer` blocks of `m × inner` from `a` and `d` into
    /// `r × inner` blocks of `y`.
    pub(crate) fn run(
        &self,
        a: &[T],
        d: &[T],
        outer: usize,
        inner: usize,
        y: &mut [T],
        scratch: &mut [T],
        parallel: bool,
    ) {
        let (m, r) = (self.m, self.r);
        let par = go_parallel(parallel, outer * r * inner * self.lo.len());
        let blocks = a.chunks_exact(m * inner).zip(d.chunks_exact(m * inner)).zip(y.chunks_exact_mut(r * inner));
        if inner == 1 {
            if par {
                #[cfg(feature = "parallel")]
                {
                    let need = self.scratch_len(1);
                    a.par_chunks_exact(m)
                        .zip(d.par_chunks_exact(m))
                        .zip(y.par_chunks_exact_mut(r))
                        .with_min_len(8)
                        .for_each_init(
                            || vec![T::zero(); need],
                            |s, ((a, d), y)| self.lane(a, d, y, s),
                        );
                    return;
                }
            }
            for ((a, d), y) in blocks {
                self.lane(a, d, y, scratch);
            }
            return;
        }
        for ((a, d), y) in blocks {
            let half = self.scratch_len(inner) / 2;
            let (abnd, dbnd) = scratch[..2 * half].split_at_mut(half);
            if let Some(e) = &self.ext {
                e.fill_rows(a, inner, abnd);
                e.fill_rows(d, inner, dbnd);
            }
            let (abnd, dbnd): (&[T], &[T]) = (abnd, dbnd);
            let row = |k: usize, out: &mut [T]| {
                let (p, ph) = (k / 2, k % 2);
                out.fill(T::zero());
                for &(j, off) in &self.taps[ph] {
                    let t = p + off;
                    let (ar, dr) = match &self.ext {
                        Some(e) => (e.row(t, a, abnd, inner), e.row(t, d, dbnd, inner)),
                        None => (&a[t * inner..(t + 1) * inner], &d[t * inner..(t + 1) * inner]),
                    };
                    axpy_pair(out, self.lo[j], ar, self.hi[j], dr);
                }
            };
            if par {
                #[cfg(feature = "parallel")]
                {
                    y.par_chunks_exact_mut(inner).enumerate().for_each(|(k, out)| row(k, out));
                    continue;
                }
            }
            for (k, out) in y.chunks_exact_mut(inner).enumerate() {
                row(k, out);
            }
        }
    }

    fn lane(&self, a: &[T], d: &[T], y: &mut [T], scratch: &mut [T]) {
        let (a, d, rest): (&[T], &[T], &mut [T]) = match &self.ext {
            Some(e) => {
                let (ae, rest) = scratch.split_at_mut(e.len);
                let (de, rest) = rest.split_at_mut(e.len);
                e.fill_lane(a, ae);
                e.fill_lane(d, de);
                (ae, de, rest)
            }
            None => (a, d, scratch),
        };
        let half = self.r / 2;
        let (even, odd) = rest[..self.r].split_at_mut(half);
        for (ph, out) in [even, odd].into_iter().enumerate() {
            out.fill(T::zero());
            for &(j, off) in &self.taps[ph] {
                axpy_pair(out, self.lo[j], &a[off..off + half], self.hi[j], &d[off..off + half]);
            }
        }
        let (even, odd) = rest[..self.r].split_at(half);
        for ((pair, &e), &o) in y.chunks_exact_mut(2).zip(even).zip(odd) {
            pair[0] = e;
            pair[1] = o;
        }
    }
}
