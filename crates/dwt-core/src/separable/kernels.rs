//! Products with `s · Σ_k c_k u_k v_kᵀ` that never form it.

use super::{FactorSet, Orientation, SeparableBasis};
use crate::Real;
use crate::isa::dispatch;

impl<T: Real> FactorSet<T> {
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
    fn axpy(&self, id: usize, a: T, y: &mut [T]) {
        self.for_runs(id, |s, v| axpy(a, v, &mut y[s..s + v.len()]));
    }

    /// Call `f(position, value)` over factor `id`.
    #[inline(always)]
    fn for_each(&self, id: usize, mut f: impl FnMut(usize, T)) {
        self.for_runs(id, |s, v| {
            for (i, &p) in v.iter().enumerate() {
                f(s + i, p);
            }
        });
    }

    /// `out[id] = factor_id · x` for every factor, on a block of `rb`
    /// batch rows stored transposed (`xt[t·rb + j]` is row `j`'s element
    /// `t`): one AXPY of length `rb` per factor value.
    #[inline(always)]
    fn project(&self, xt: &[T], rb: usize, out: &mut [T]) {
        for (id, o) in out.chunks_exact_mut(rb).enumerate().take(self.len()) {
            o.fill(T::zero());
            self.for_each(id, |t, v| axpy(v, &xt[t * rb..(t + 1) * rb], o));
        }
    }
}

impl<T: Real> SeparableBasis<T> {
    /// Multiply-adds per batch row of the block kernels: projecting onto
    /// every distinct atom of both sides, and expanding every coefficient's
    /// atoms back. Compare with `rows · cols` to choose between these
    /// kernels and a dense reconstruction.
    pub fn cost_per_row(&self) -> usize {
        let expand: usize = self
            .atoms()
            .map(|(r, c)| self.rows.run_len(r) + self.cols.run_len(c))
            .sum();
        self.rows.support() + self.cols.support() + expand + self.len()
    }

    /// `W += s · Σ_k c_k u_k v_kᵀ` on a row-major buffer stored in
    /// `orientation` (`rows × cols`, or its transpose).
    ///
    /// # Panics
    /// When `c` has fewer than [`SeparableBasis::len`] values or `w` is
    /// shorter than `rows · cols`.
    pub fn add_outer(&self, c: &[T], s: T, w: &mut [T], orientation: Orientation) {
        let (rows, cols) = self.shape;
        // Rows of the stored matrix follow `outer`, its columns `inner`.
        let (outer, inner, outer_of, inner_of, stride) = match orientation {
            Orientation::Normal => (&self.rows, &self.cols, &self.row_of, &self.col_of, cols),
            Orientation::Transposed => (&self.cols, &self.rows, &self.col_of, &self.row_of, rows),
        };
        for k in 0..self.len() {
            let a = s * c[k];
            let (o, i) = (outer_of[k], inner_of[k]);
            match (outer.single(o), inner.single(i)) {
                // The common case, one run each: a tight double loop.
                (Some((os, ov)), Some((is, iv))) => {
                    for (r, &ou) in ov.iter().enumerate() {
                        let row = &mut w[(os + r) * stride + is..(os + r) * stride + is + iv.len()];
                        axpy(a * ou, iv, row);
                    }
                }
                // Atoms that wrap around (periodization).
                _ => outer.for_each(o, |u, ou| inner.axpy(i, a * ou, &mut w[u * stride..(u + 1) * stride])),
            }
        }
    }

    /// Call `f(start, len)` for every contiguous run of the row-major
    /// buffer, stored in `orientation`, that [`SeparableBasis::add_outer`]
    /// writes: one per atom, row of its rectangle and run of its inner
    /// factor. Runs of different atoms may overlap. `O(Σ_k |u_k|)` calls
    /// covering `O(Σ_k |u_k|·|v_k|)` elements, never `O(rows · cols)`.
    pub fn for_each_touched_run(&self, orientation: Orientation, mut f: impl FnMut(usize, usize)) {
        let (rows, cols) = self.shape;
        let (outer, inner, outer_of, inner_of, stride) = match orientation {
            Orientation::Normal => (&self.rows, &self.cols, &self.row_of, &self.col_of, cols),
            Orientation::Transposed => (&self.cols, &self.rows, &self.col_of, &self.row_of, rows),
        };
        for k in 0..self.len() {
            let (o, i) = (outer_of[k], inner_of[k]);
            outer.for_runs(o, |os, ov| {
                for r in os..os + ov.len() {
                    inner.for_runs(i, |is, iv| f(r * stride + is, iv.len()));
                }
            });
        }
    }

    /// The flat indices [`SeparableBasis::for_each_touched_run`] covers,
    /// sorted and without repeats: every element a merge can change.
    pub fn touched(&self, orientation: Orientation) -> Vec<usize> {
        let mut idx = Vec::new();
        self.for_each_touched_run(orientation, |start, len| idx.extend(start..start + len));
        idx.sort_unstable();
        idx.dedup();
        idx
    }

    /// The forward pass on a block of `rb` batch rows, transposed: `xt` is
    /// `cols × rb`, `yt` (`rows × rb`) receives `s · Σ_k c_k (x·v_k) u_k`.
    /// `xv` is scratch of `self.cols().len() × rb`.
    ///
    /// # Panics
    /// When a buffer is shorter than stated.
    pub fn forward_block(&self, c: &[T], s: T, xt: &[T], rb: usize, yt: &mut [T], xv: &mut [T]) {
        dispatch!(self.forward_block_impl(c, s, xt, rb, yt, xv))
    }

    #[inline(always)]
    fn forward_block_impl(&self, c: &[T], s: T, xt: &[T], rb: usize, yt: &mut [T], xv: &mut [T]) {
        self.cols.project(xt, rb, xv);
        yt.fill(T::zero());
        for k in 0..self.len() {
            let src = &xv[self.col_of[k] * rb..(self.col_of[k] + 1) * rb];
            let a = s * c[k];
            self.rows
                .for_each(self.row_of[k], |u, ru| axpy(a * ru, src, &mut yt[u * rb..(u + 1) * rb]));
        }
    }

    /// The backward pass on one [`BackwardBlock`]: `grad[k] += Σ_j
    /// (g_j·u_k)(x_j·v_k)` and, with `dxt`, `dxt = s · Σ_k c_k (g·u_k) v_k`.
    ///
    /// # Panics
    /// When a buffer is shorter than [`BackwardBlock`] states.
    pub fn backward_block(&self, c: &[T], s: T, block: BackwardBlock<'_, T>) {
        dispatch!(self.backward_block_impl(c, s, block))
    }

    #[inline(always)]
    fn backward_block_impl(&self, c: &[T], s: T, b: BackwardBlock<'_, T>) {
        let BackwardBlock {
            xt,
            gt,
            rb,
            grad,
            dxt,
            gu,
            xv,
        } = b;
        self.rows.project(gt, rb, gu);
        self.cols.project(xt, rb, xv);
        let row = |k: usize| &gu[self.row_of[k] * rb..(self.row_of[k] + 1) * rb];
        for (k, gk) in grad.iter_mut().enumerate().take(self.len()) {
            let col = &xv[self.col_of[k] * rb..(self.col_of[k] + 1) * rb];
            *gk += dot(row(k), col);
        }
        if let Some(dxt) = dxt {
            dxt.fill(T::zero());
            for (k, &ck) in c.iter().enumerate().take(self.len()) {
                let a = s * ck;
                self.cols.for_each(self.col_of[k], |v, cv| {
                    axpy(a * cv, row(k), &mut dxt[v * rb..(v + 1) * rb])
                });
            }
        }
    }
}

/// One block of `rb` batch rows for [`SeparableBasis::backward_block`],
/// stored transposed (`xt[t·rb + j]` is row `j`'s element `t`).
#[derive(Debug)]
pub struct BackwardBlock<'a, T> {
    /// The inputs, `cols × rb`.
    pub xt: &'a [T],
    /// `∂L/∂y`, `rows × rb`.
    pub gt: &'a [T],
    /// Rows in the block.
    pub rb: usize,
    /// Receives `Σ_j (g_j·u_k)(x_j·v_k)` per coefficient (added).
    pub grad: &'a mut [T],
    /// When given (`cols × rb`), receives the block's `∂L/∂x` share.
    pub dxt: Option<&'a mut [T]>,
    /// Scratch of `rows().len() × rb`.
    pub gu: &'a mut [T],
    /// Scratch of `cols().len() × rb`.
    pub xv: &'a mut [T],
}

/// `x · y` with eight independent partial sums, so it vectorises.
#[inline(always)]
fn dot<T: Real>(x: &[T], y: &[T]) -> T {
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
fn axpy<T: Real>(a: T, x: &[T], y: &mut [T]) {
    for (t, &v) in y.iter_mut().zip(x) {
        *t += a * v;
    }
}
