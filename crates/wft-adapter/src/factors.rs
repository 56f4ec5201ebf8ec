//! Rank-1 atom tables: `ΔW = s · Σ_k c_k · u_k v_kᵀ` with compactly
//! supported factors, and the products with ΔW that never form it.

use std::collections::HashMap;
use std::hash::Hash;

use crate::Element;
use crate::layout::Factor;

/// Distinct 1-D factors of one side (rows or columns), each at most two
/// contiguous runs, values stored back to back.
#[derive(Debug, Clone, Default)]
pub(crate) struct FactorSet<T> {
    /// Per factor: up to two `(start, len)` runs; values from `off` on.
    runs: Vec<([(usize, usize); 2], usize)>,
    vals: Vec<T>,
}

impl<T: Element> FactorSet<T> {
    fn push(&mut self, f: &Factor) {
        let mut runs = [(0, 0); 2];
        let off = self.vals.len();
        for (slot, (start, v)) in runs.iter_mut().zip(&f.runs) {
            *slot = (*start, v.len());
            self.vals.extend(v.iter().map(|&x| T::from_f64(x)));
        }
        self.runs.push((runs, off));
    }

    pub(crate) fn len(&self) -> usize {
        self.runs.len()
    }

    /// The runs `(start, values)` of factor `id`.
    #[cfg(feature = "gpu")]
    pub(crate) fn runs(&self, id: usize) -> Vec<(usize, &[T])> {
        let (runs, mut off) = self.runs[id];
        let mut v = Vec::new();
        for (start, len) in runs.into_iter().filter(|r| r.1 > 0) {
            v.push((start, &self.vals[off..off + len]));
            off += len;
        }
        v
    }

    /// Total support (number of stored values).
    pub(crate) fn support(&self) -> usize {
        self.vals.len()
    }

    /// The factor as one run `(start, values)`, unless it wraps around.
    #[inline(always)]
    fn single(&self, id: usize) -> Option<(usize, &[T])> {
        let ([(start, len), (_, tail)], off) = self.runs[id];
        (tail == 0).then(|| (start, &self.vals[off..off + len]))
    }

    /// Call `f(start, values)` for each run of factor `id`.
    #[inline(always)]
    fn for_runs(&self, id: usize, mut f: impl FnMut(usize, &[T])) {
        let (runs, mut off) = self.runs[id];
        for (start, len) in runs {
            if len > 0 {
                f(start, &self.vals[off..off + len]);
                off += len;
            }
        }
    }

    /// `y += a · factor`.
    #[inline(always)]
    pub(crate) fn axpy(&self, id: usize, a: T, y: &mut [T]) {
        self.for_runs(id, |s, v| {
            for (t, &p) in y[s..s + v.len()].iter_mut().zip(v) {
                *t += a * p;
            }
        });
    }

    /// Call `f(position, value)` over factor `id`.
    #[inline(always)]
    pub(crate) fn for_each(&self, id: usize, mut f: impl FnMut(usize, T)) {
        self.for_runs(id, |s, v| {
            for (i, &p) in v.iter().enumerate() {
                f(s + i, p);
            }
        });
    }
}

/// The atoms of `n` coefficients: for coefficient `k`, row factor
/// `row_of[k]` and column factor `col_of[k]` (shared between coefficients
/// that have the same one).
#[derive(Debug, Clone, Default)]
pub(crate) struct AtomTable<T> {
    pub(crate) rows: FactorSet<T>,
    pub(crate) cols: FactorSet<T>,
    pub(crate) row_of: Vec<usize>,
    pub(crate) col_of: Vec<usize>,
}

/// Interns factors by key so each distinct one is computed and stored once.
struct Interner<K> {
    ids: HashMap<K, usize>,
}

impl<K: Hash + Eq> Interner<K> {
    fn id<T: Element, E>(
        &mut self,
        key: K,
        set: &mut FactorSet<T>,
        make: impl FnOnce() -> Result<Factor, E>,
    ) -> Result<usize, E> {
        if let Some(&id) = self.ids.get(&key) {
            return Ok(id);
        }
        set.push(&make()?);
        let id = set.len() - 1;
        self.ids.insert(key, id);
        Ok(id)
    }
}

impl<T: Element> AtomTable<T> {
    /// Build the table from each coefficient's `(row key, column key)`;
    /// `factor(k, axis)` computes coefficient `k`'s factor along `axis` the
    /// first time its key is seen.
    pub(crate) fn build<K: Hash + Eq + Copy, E>(
        keys: impl IntoIterator<Item = (K, K)>,
        mut factor: impl FnMut(usize, usize) -> Result<Factor, E>,
    ) -> Result<Self, E> {
        let mut t = AtomTable::default();
        let (mut ri, mut ci) = (Interner { ids: HashMap::new() }, Interner { ids: HashMap::new() });
        for (k, (rk, ck)) in keys.into_iter().enumerate() {
            let r = ri.id(rk, &mut t.rows, || factor(k, 0))?;
            let c = ci.id(ck, &mut t.cols, || factor(k, 1))?;
            t.row_of.push(r);
            t.col_of.push(c);
        }
        Ok(t)
    }

    /// Number of coefficients.
    pub(crate) fn n(&self) -> usize {
        self.row_of.len()
    }

    /// Multiply-adds per batch row of the block kernels: projecting onto
    /// every distinct atom of both sides, and expanding every coefficient's
    /// atoms back.
    pub(crate) fn cost_per_row(&self) -> usize {
        let expand: usize = (0..self.n())
            .map(|k| self.rows.run_len(self.row_of[k]) + self.cols.run_len(self.col_of[k]))
            .sum();
        self.rows.support() + self.cols.support() + expand + self.n()
    }

    /// `W += s · Σ_k c_k u_k v_kᵀ` on a row-major `out × in` buffer, or on
    /// its transpose (`in × out`, PEFT's `fan_in_fan_out`) when `transposed`.
    pub(crate) fn add_outer(&self, c: &[T], s: T, w: &mut [T], shape: (usize, usize), transposed: bool) {
        let (out, inp) = shape;
        // Rows of the stored matrix follow `outer`, its columns `inner`.
        let (outer, inner, outer_of, inner_of, stride) = if transposed {
            (&self.cols, &self.rows, &self.col_of, &self.row_of, out)
        } else {
            (&self.rows, &self.cols, &self.row_of, &self.col_of, inp)
        };
        for k in 0..self.n() {
            let a = s * c[k];
            let (o, i) = (outer_of[k], inner_of[k]);
            match (outer.single(o), inner.single(i)) {
                // The common case, one run each: a tight double loop.
                (Some((os, ov)), Some((is, iv))) => {
                    for (r, &ou) in ov.iter().enumerate() {
                        let f = a * ou;
                        let row = &mut w[(os + r) * stride + is..(os + r) * stride + is + iv.len()];
                        for (t, &v) in row.iter_mut().zip(iv) {
                            *t += f * v;
                        }
                    }
                }
                // Atoms that wrap around (periodization).
                _ => outer.for_each(o, |u, ou| inner.axpy(i, a * ou, &mut w[u * stride..(u + 1) * stride])),
            }
        }
    }

    /// `out[id] = factor_id · x` for every factor of `side`, on a block of
    /// `rb` batch rows stored transposed (`xt[t·rb + j]` is row `j`'s
    /// element `t`): one AXPY of length `rb` per factor value.
    #[inline(always)]
    fn project(side: &FactorSet<T>, xt: &[T], rb: usize, out: &mut [T]) {
        for (id, o) in out.chunks_exact_mut(rb).enumerate().take(side.len()) {
            o.fill(T::zero());
            side.for_each(id, |t, v| axpy(v, &xt[t * rb..(t + 1) * rb], o));
        }
    }

    /// The forward pass on a block of `rb` rows, transposed: `xt` is
    /// `in × rb`, `yt` (`out × rb`) receives `s · Σ_k c_k (x·v_k) u_k`.
    /// `xv` is scratch of `cols.len() × rb`.
    pub(crate) fn forward_block(&self, c: &[T], s: T, xt: &[T], rb: usize, yt: &mut [T], xv: &mut [T]) {
        dwt_core::__dispatch!(self.forward_block_impl(c, s, xt, rb, yt, xv))
    }

    #[inline(always)]
    fn forward_block_impl(&self, c: &[T], s: T, xt: &[T], rb: usize, yt: &mut [T], xv: &mut [T]) {
        Self::project(&self.cols, xt, rb, xv);
        yt.fill(T::zero());
        for k in 0..self.n() {
            let src = &xv[self.col_of[k] * rb..(self.col_of[k] + 1) * rb];
            let a = s * c[k];
            self.rows
                .for_each(self.row_of[k], |u, ru| axpy(a * ru, src, &mut yt[u * rb..(u + 1) * rb]));
        }
    }

    /// The backward pass on a block of `rb` rows, transposed (`xt`: `in × rb`,
    /// `gt`: `out × rb`): `grad[k] += Σ_j (g_j·u_k)(x_j·v_k)` and, with `dxt`
    /// (`in × rb`), `dxt = s · Σ_k c_k (g·u_k) v_k`. `gu` and `xv` are scratch
    /// of `rows.len() × rb` and `cols.len() × rb`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_block(
        &self,
        c: &[T],
        s: T,
        xt: &[T],
        gt: &[T],
        rb: usize,
        grad: &mut [T],
        dxt: Option<&mut [T]>,
        gu: &mut [T],
        xv: &mut [T],
    ) {
        dwt_core::__dispatch!(self.backward_block_impl(c, s, xt, gt, rb, grad, dxt, gu, xv))
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn backward_block_impl(
        &self,
        c: &[T],
        s: T,
        xt: &[T],
        gt: &[T],
        rb: usize,
        grad: &mut [T],
        dxt: Option<&mut [T]>,
        gu: &mut [T],
        xv: &mut [T],
    ) {
        Self::project(&self.rows, gt, rb, gu);
        Self::project(&self.cols, xt, rb, xv);
        let row = |k: usize| &gu[self.row_of[k] * rb..(self.row_of[k] + 1) * rb];
        for (k, gk) in grad.iter_mut().enumerate().take(self.n()) {
            let col = &xv[self.col_of[k] * rb..(self.col_of[k] + 1) * rb];
            *gk += dot(row(k), col);
        }
        if let Some(dxt) = dxt {
            dxt.fill(T::zero());
            for (k, &ck) in c.iter().enumerate().take(self.n()) {
                let a = s * ck;
                self.cols.for_each(self.col_of[k], |v, cv| {
                    axpy(a * cv, row(k), &mut dxt[v * rb..(v + 1) * rb])
                });
            }
        }
    }
}

/// `x · y` with eight independent partial sums, so it vectorises.
#[inline(always)]
fn dot<T: Element>(x: &[T], y: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .fold(T::zero(), |a, (&p, &q)| a + p * q);
    for (p, q) in xc.zip(yc) {
        for i in 0..8 {
            acc[i] += p[i] * q[i];
        }
    }
    acc.iter().fold(tail, |a, &v| a + v)
}

/// `y += a · x`.
#[inline(always)]
fn axpy<T: Element>(a: T, x: &[T], y: &mut [T]) {
    for (t, &v) in y.iter_mut().zip(x) {
        *t += a * v;
    }
}

impl<T: Element> FactorSet<T> {
    fn run_len(&self, id: usize) -> usize {
        let (runs, _) = self.runs[id];
        runs[0].1 + runs[1].1
    }
}
