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

    /// The value of boundary sample `b` (left ones first, then right ones).
    #[inline]
    fn boundary_value(&self, b: usize, x: &[T]) -> T {
        self.terms(b).iter().map(|&(i, w)| w * x[i]).sum()
    }

    /// Write the extended lane of `x` split into its even samples (`even[k]`
    /// = `x̂[2k]`) and odd samples, `len.div_ceil(2)` and `len / 2` of them.
    #[inline(always)]
    fn fill_phases(&self, x: &[T], even: &mut [T], odd: &mut [T]) {
        let (pad, n) = (self.pad, self.n);
        let value = |t: usize| {
            if t < pad {
                self.boundary_value(t, x)
            } else if t < pad + n {
                x[t - pad]
            } else {
                self.boundary_value(t - n, x)
            }
        };
        // Head and tail samples go through the stencils; the body is a
        // strided copy that the compiler turns into shuffles.
        let body_start = pad.div_ceil(2);
        let body_end = (pad + n) / 2; // first k with 2k+1 >= pad+n
        for k in (0..body_start).chain(body_end.max(body_start)..self.len.div_ceil(2)) {
            even[k] = value(2 * k);
            if 2 * k + 1 < self.len {
                odd[k] = value(2 * k + 1);
            }
        }
        if body_end > body_start {
            // 2k >= pad and 2k+1 < pad+n for k in body_start..body_end.
            let src = &x[2 * body_start - pad..2 * body_end - pad];
            let (ev, od) = (&mut even[body_start..body_end], &mut odd[body_start..body_end]);
            for ((pair, e), o) in src.chunks_exact(2).zip(ev).zip(od) {
                *e = pair[0];
                *o = pair[1];
            }
        }
    }

    /// Write the whole extended lane (`len` samples) of `x` (`n` samples).
    #[inline(always)]
    fn fill_lane(&self, x: &[T], out: &mut [T]) {
        let (left, rest) = out[..self.len].split_at_mut(self.pad);
        let (body, right) = rest.split_at_mut(self.n);
        body.copy_from_slice(x);
        for (b, o) in left.iter_mut().chain(right.iter_mut()).enumerate() {
            *o = self.boundary_value(b, x);
        }
    }

    /// Write the boundary rows of `x` (`n` rows of `inner`) into `out`,
    /// `boundary_rows()` rows of `inner`: left rows first, then right rows.
    #[inline(always)]
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

/// Filters longer than this are rejected when a wavelet is built; it sizes
/// the stack arrays of per-tap source slices (PyWavelets' longest, coif17,
/// has 102 taps).
pub(crate) const MAX_TAPS: usize = 128;

/// Outputs computed per register block: 16 accumulators per band stay in
/// registers across all taps, so each tap costs one load per vector.
const BLOCK: usize = 16;

/// `lo[i] = Σ_j f[j]·src[j][i]`, `hi[i] = Σ_j g[j]·src[j][i]`, summed in tap
/// order (the same rounding as one AXPY per tap).
#[inline(always)]
fn correlate2<T: Real>(lo: &mut [T], hi: &mut [T], f: &[T], g: &[T], src: &[&[T]]) {
    let n = lo.len().min(hi.len());
    let mut i = 0;
    while i + BLOCK <= n {
        let (mut a, mut b) = ([T::zero(); BLOCK], [T::zero(); BLOCK]);
        for ((&fj, &gj), s) in f.iter().zip(g).zip(src) {
            let s = &s[i..i + BLOCK];
            for k in 0..BLOCK {
                a[k] += fj * s[k];
                b[k] += gj * s[k];
            }
        }
        lo[i..i + BLOCK].copy_from_slice(&a);
        hi[i..i + BLOCK].copy_from_slice(&b);
        i += BLOCK;
    }
    for i in i..n {
        let (mut a, mut b) = (T::zero(), T::zero());
        for ((&fj, &gj), s) in f.iter().zip(g).zip(src) {
            a += fj * s[i];
            b += gj * s[i];
        }
        lo[i] = a;
        hi[i] = b;
    }
}

/// Outputs per register block in synthesis (two phases in flight).
const SYNTH_BLOCK: usize = 8;

/// The synthesis taps, grouped by the source position they read. Output
/// sample `2p + φ` reads source `p + off`; most positions feed both phases
/// (`shared`), and in periodization mode with `L ≡ 0 (mod 4)` one position
/// at each end feeds only one phase.
#[derive(Debug, Clone, Default)]
struct SynthTaps<T> {
    /// `(off, [rec_lo even, rec_hi even, rec_lo odd, rec_hi odd])`.
    shared: Vec<(usize, [T; 4])>,
    even_only: Vec<(usize, [T; 2])>,
    odd_only: Vec<(usize, [T; 2])>,
}

impl<T> SynthTaps<T> {
    /// Every source offset, shared first, then even-only, then odd-only
    /// (the order of the source slices given to [`synthesize_pairs`]).
    fn offsets(&self) -> impl Iterator<Item = usize> + '_ {
        let s = self.shared.iter().map(|t| t.0);
        s.chain(self.even_only.iter().map(|t| t.0))
            .chain(self.odd_only.iter().map(|t| t.0))
    }
    fn len(&self) -> usize {
        self.shared.len() + self.even_only.len() + self.odd_only.len()
    }
}

/// The taps that feed one output phase only (`w` outputs from `i`).
#[inline(always)]
fn one_phase<T: Real>(
    acc: &mut [T; SYNTH_BLOCK],
    i: usize,
    w: usize,
    taps: &[(usize, [T; 2])],
    a: &[&[T]],
    d: &[&[T]],
) {
    for ((&(_, c), x1), x2) in taps.iter().zip(a).zip(d) {
        if w == SYNTH_BLOCK {
            let (x1, x2) = (&x1[i..i + SYNTH_BLOCK], &x2[i..i + SYNTH_BLOCK]);
            for k in 0..SYNTH_BLOCK {
                acc[k] += c[0] * x1[k] + c[1] * x2[k];
            }
        } else {
            for k in 0..w {
                acc[k] += c[0] * x1[i + k] + c[1] * x2[i + k];
            }
        }
    }
}

/// Both output phases of synthesis at once over register blocks:
/// `even[i] = Σ le·a[t][i] + he·d[t][i]`, `odd[i] = Σ lo·a[t][i] + ho·d[t][i]`
/// over each phase's own taps only (so NaN spreads exactly as far as the
/// filter support). `a`, `d` hold one source slice per tap, in
/// [`SynthTaps::offsets`] order. `put(i, even, odd)` stores one block.
#[inline(always)]
fn synthesize_pairs<T: Real>(
    n: usize,
    taps: &SynthTaps<T>,
    a: &[&[T]],
    d: &[&[T]],
    mut put: impl FnMut(usize, &[T], &[T]),
) {
    let ns = taps.shared.len();
    let ne = taps.even_only.len();
    let mut i = 0;
    while i < n {
        let w = SYNTH_BLOCK.min(n - i);
        let (mut ev, mut od) = ([T::zero(); SYNTH_BLOCK], [T::zero(); SYNTH_BLOCK]);
        if w == SYNTH_BLOCK {
            for ((&(_, c), x1), x2) in taps.shared.iter().zip(&a[..ns]).zip(&d[..ns]) {
                let (x1, x2) = (&x1[i..i + SYNTH_BLOCK], &x2[i..i + SYNTH_BLOCK]);
                for k in 0..SYNTH_BLOCK {
                    ev[k] += c[0] * x1[k] + c[1] * x2[k];
                    od[k] += c[2] * x1[k] + c[3] * x2[k];
                }
            }
        } else {
            for ((&(_, c), x1), x2) in taps.shared.iter().zip(&a[..ns]).zip(&d[..ns]) {
                for k in 0..w {
                    ev[k] += c[0] * x1[i + k] + c[1] * x2[i + k];
                    od[k] += c[2] * x1[i + k] + c[3] * x2[i + k];
                }
            }
        }
        one_phase(&mut ev, i, w, &taps.even_only, &a[ns..ns + ne], &d[ns..ns + ne]);
        one_phase(&mut od, i, w, &taps.odd_only, &a[ns + ne..], &d[ns + ne..]);
        put(i, &ev[..w], &od[..w]);
        i += w;
    }
}

/// `y += a * x` (boundary rows only).
#[inline(always)]
fn axpy<T: Real>(y: &mut [T], a: T, x: &[T]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
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
            // the two phases of the extended lane
            self.ext.len + 1
        } else {
            self.ext.boundary_rows() * inner
        }
    }

    /// Transform `outer` blocks of `n × inner` in `x` into `m × inner` blocks
    /// of `lo` and `hi`.
    #[allow(clippy::too_many_arguments)]
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
            let lanes = x
                .chunks_exact(n)
                .zip(lo.chunks_exact_mut(m))
                .zip(hi.chunks_exact_mut(m));
            if par {
                #[cfg(feature = "parallel")]
                {
                    let need = self.scratch_len(1);
                    x.par_chunks_exact(n)
                        .zip(lo.par_chunks_exact_mut(m))
                        .zip(hi.par_chunks_exact_mut(m))
                        .with_min_len(8)
                        .for_each_init(|| vec![T::zero(); need], |s, ((x, lo), hi)| self.lane(x, lo, hi, s));
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
            let row = |o: usize, lo: &mut [T], hi: &mut [T]| self.row(o, x, bnd, inner, lo, hi);
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

    /// Output row `o` (of `inner` elements) of both bands.
    fn row(&self, o: usize, x: &[T], bnd: &[T], inner: usize, lo: &mut [T], hi: &mut [T]) {
        crate::isa::dispatch!(self.row_impl(o, x, bnd, inner, lo, hi))
    }

    #[inline(always)]
    fn row_impl(&self, o: usize, x: &[T], bnd: &[T], inner: usize, lo: &mut [T], hi: &mut [T]) {
        let mut src: [&[T]; MAX_TAPS] = [&[]; MAX_TAPS];
        for (j, slot) in src.iter_mut().enumerate().take(self.lo.len()) {
            *slot = self.ext.row(2 * o + self.s - j, x, bnd, inner);
        }
        correlate2(lo, hi, &self.lo, &self.hi, &src[..self.lo.len()]);
    }

    /// One lane of `n` samples into `m` coefficients of each band.
    fn lane(&self, x: &[T], lo: &mut [T], hi: &mut [T], scratch: &mut [T]) {
        crate::isa::dispatch!(self.lane_impl(x, lo, hi, scratch))
    }

    #[inline(always)]
    fn lane_impl(&self, x: &[T], lo: &mut [T], hi: &mut [T], scratch: &mut [T]) {
        let half = self.ext.len.div_ceil(2);
        let (even, odd) = scratch[..2 * half].split_at_mut(half);
        self.ext.fill_phases(x, even, odd);
        let m = self.m;
        let mut src: [&[T]; MAX_TAPS] = [&[]; MAX_TAPS];
        for (j, slot) in src.iter_mut().enumerate().take(self.lo.len()) {
            let t = self.s - j;
            let phase: &[T] = if t.is_multiple_of(2) { even } else { odd };
            *slot = &phase[t / 2..t / 2 + m];
        }
        correlate2(lo, hi, &self.lo, &self.hi, &src[..self.lo.len()]);
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
    /// The taps of both output phases, by source position.
    taps: SynthTaps<T>,
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
        // Output sample 2p+φ reads input p + off for each tap j with
        // (φ + σ + j) even, off = (2·pad + φ + σ − j)/2 (never negative).
        let mut by_off: std::collections::BTreeMap<usize, [Option<(T, T)>; 2]> = Default::default();
        for j in 0..l {
            let ph = (sigma + j) % 2;
            let off = (2 * pad + ph + sigma - j) / 2;
            by_off.entry(off).or_default()[ph] = Some((T::from_f64(lo[j]), T::from_f64(hi[j])));
        }
        let mut taps = SynthTaps::default();
        for (off, [even, odd]) in by_off {
            match (even, odd) {
                (Some((le, he)), Some((lo, ho))) => taps.shared.push((off, [le, he, lo, ho])),
                (Some((le, he)), None) => taps.even_only.push((off, [le, he])),
                (None, Some((lo, ho))) => taps.odd_only.push((off, [lo, ho])),
                (None, None) => {}
            }
        }
        let ext = per.then(|| Extension::new(Mode::Periodic, m, pad, m + 2 * pad));
        Synthesis { m, r, taps, ext }
    }

    /// Scratch elements one call of [`Self::run`] needs.
    pub(crate) fn scratch_len(&self, inner: usize) -> usize {
        let ext = self.ext.as_ref();
        if inner == 1 {
            2 * ext.map_or(0, |e| e.len)
        } else {
            2 * ext.map_or(0, |e| e.boundary_rows()) * inner
        }
    }

    /// Combine `outer` blocks of `m × inner` from `a` and `d` into
    /// `r × inner` blocks of `y`.
    #[allow(clippy::too_many_arguments)]
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
        let par = go_parallel(parallel, outer * r * inner * self.taps.len());
        let blocks = a
            .chunks_exact(m * inner)
            .zip(d.chunks_exact(m * inner))
            .zip(y.chunks_exact_mut(r * inner));
        if inner == 1 {
            if par {
                #[cfg(feature = "parallel")]
                {
                    let need = self.scratch_len(1);
                    a.par_chunks_exact(m)
                        .zip(d.par_chunks_exact(m))
                        .zip(y.par_chunks_exact_mut(r))
                        .with_min_len(8)
                        .for_each_init(|| vec![T::zero(); need], |s, ((a, d), y)| self.lane(a, d, y, s));
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
            let rows = |p: usize, out: &mut [T]| self.row_pair(p, a, d, abnd, dbnd, inner, out);
            if par {
                #[cfg(feature = "parallel")]
                {
                    y.par_chunks_exact_mut(2 * inner)
                        .enumerate()
                        .for_each(|(p, out)| rows(p, out));
                    continue;
                }
            }
            for (p, out) in y.chunks_exact_mut(2 * inner).enumerate() {
                rows(p, out);
            }
        }
    }

    /// Output rows `2p` and `2p + 1` (`2 × inner` elements).
    #[allow(clippy::too_many_arguments)]
    fn row_pair(&self, p: usize, a: &[T], d: &[T], abnd: &[T], dbnd: &[T], inner: usize, out: &mut [T]) {
        crate::isa::dispatch!(self.row_pair_impl(p, a, d, abnd, dbnd, inner, out))
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn row_pair_impl(&self, p: usize, a: &[T], d: &[T], abnd: &[T], dbnd: &[T], inner: usize, out: &mut [T]) {
        let mut s1: [&[T]; MAX_TAPS] = [&[]; MAX_TAPS];
        let mut s2: [&[T]; MAX_TAPS] = [&[]; MAX_TAPS];
        for ((off, x1), x2) in self.taps.offsets().zip(&mut s1).zip(&mut s2) {
            let t = p + off;
            (*x1, *x2) = match &self.ext {
                Some(e) => (e.row(t, a, abnd, inner), e.row(t, d, dbnd, inner)),
                None => (&a[t * inner..(t + 1) * inner], &d[t * inner..(t + 1) * inner]),
            };
        }
        let n = self.taps.len();
        let (even, odd) = out.split_at_mut(inner);
        synthesize_pairs(inner, &self.taps, &s1[..n], &s2[..n], |i, e, o| {
            for (dst, &v) in even[i..].iter_mut().zip(e) {
                *dst = v;
            }
            for (dst, &v) in odd[i..].iter_mut().zip(o) {
                *dst = v;
            }
        });
    }

    /// One lane of `m` coefficient pairs into `r` samples.
    fn lane(&self, a: &[T], d: &[T], y: &mut [T], scratch: &mut [T]) {
        crate::isa::dispatch!(self.lane_impl(a, d, y, scratch))
    }

    #[inline(always)]
    fn lane_impl(&self, a: &[T], d: &[T], y: &mut [T], scratch: &mut [T]) {
        let (a, d): (&[T], &[T]) = match &self.ext {
            Some(e) => {
                let (ae, rest) = scratch.split_at_mut(e.len);
                let de = &mut rest[..e.len];
                e.fill_lane(a, ae);
                e.fill_lane(d, de);
                (ae, de)
            }
            None => (a, d),
        };
        let half = self.r / 2;
        let mut s1: [&[T]; MAX_TAPS] = [&[]; MAX_TAPS];
        let mut s2: [&[T]; MAX_TAPS] = [&[]; MAX_TAPS];
        for ((off, x1), x2) in self.taps.offsets().zip(&mut s1).zip(&mut s2) {
            (*x1, *x2) = (&a[off..off + half], &d[off..off + half]);
        }
        let n = self.taps.len();
        synthesize_pairs(half, &self.taps, &s1[..n], &s2[..n], |i, e, o| {
            for ((pair, &e), &o) in y[2 * i..2 * (i + e.len())].chunks_exact_mut(2).zip(e).zip(o) {
                pair[0] = e;
                pair[1] = o;
            }
        });
    }
}
