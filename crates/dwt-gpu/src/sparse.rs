//! Sparse synthesis: ΔW from a few coefficients, the fused merge, and the
//! gradient with respect to the coefficients.

use dwt_core::{Orientation, SeparableBasis};
use ndarray::Array2;

use crate::buffer::rows_binding;
use crate::context::Kernel;
use crate::transform::grid;
use crate::{Context, Error, GpuMatrix, GpuVector, Result};

/// Output tile edge of the reconstruction kernel (16×16 threads).
const TILE: usize = 16;

/// The WGSL `Params` of `sparse.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    tiles_c: u32,
    count: u32,
    use_active: u32,
    accumulate: u32,
    transposed: u32,
    alpha: f32,
    grid_x: u32,
    tile_off: u32,
    list_off: u32,
    active_off: u32,
    coef_off: u32,
    batch: u32,
    first: u32,
    row0: u32,
    row1: u32,
    global_off: u32,
    n_global: u32,
    pad: [u32; 2],
}

/// A [`SeparableBasis`] uploaded to the device: pieces bucketed by output
/// tile, ready for [`Batch`] operations. Build it once per set of
/// locations; only the coefficient values change between calls.
#[derive(Debug)]
pub struct SparsePlan {
    ctx: Context,
    shape: (usize, usize),
    n: usize,
    words: wgpu::Buffer,
    vals: wgpu::Buffer,
    base: Params,
    tiles: usize,
    tiles_c: usize,
    /// Tiles some atom touches, ascending (a host copy of the device list).
    active: Vec<usize>,
}

fn to_u32(what: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::TooLarge {
        what,
        bytes: v as u64 * 4,
        limit: u64::from(u32::MAX),
    })
}

impl SparsePlan {
    /// Upload `basis` as it is: its factor runs back to back, and its
    /// pieces bucketed by output tile.
    ///
    /// # Errors
    /// [`Error::TooLarge`] / [`Error::OutOfMemory`] when the tables do not
    /// fit the device, [`Error::ShapeMismatch`] for an empty shape.
    pub fn new(ctx: &Context, basis: &SeparableBasis<f32>) -> Result<Self> {
        let (rows, cols) = basis.shape();
        if rows == 0 || cols == 0 {
            return Err(Error::ShapeMismatch {
                what: "sparse basis shape",
                expected: "non-empty".into(),
                got: format!("{rows}×{cols}"),
            });
        }
        // Values: every factor's runs back to back.
        let mut vals: Vec<f32> = Vec::new();
        let mut place = |side: &dwt_core::FactorSet<f32>| -> Vec<Vec<(usize, usize, usize)>> {
            (0..side.len())
                .map(|id| {
                    side.runs(id)
                        .map(|(start, v)| {
                            vals.extend_from_slice(v);
                            (start, v.len(), vals.len() - v.len())
                        })
                        .collect()
                })
                .collect()
        };
        let rowp = place(basis.rows());
        let colp = place(basis.cols());
        // Pieces, grouped by coefficient.
        let mut pieces: Vec<[usize; 8]> = Vec::new();
        let mut coef_start = vec![0usize];
        for (k, (r, c)) in basis.atoms().enumerate() {
            for &(r0, nr, rv) in &rowp[r] {
                for &(c0, nc, cv) in &colp[c] {
                    pieces.push([k, r0, nr, rv, c0, nc, cv, 0]);
                }
            }
            coef_start.push(pieces.len());
        }
        // Bucket pieces by the 16×16 tiles they overlap (counting sort);
        // pieces over a quarter of all tiles go to the global list instead.
        let (tiles_r, tiles_c) = (rows.div_ceil(TILE), cols.div_ceil(TILE));
        let tiles = tiles_r * tiles_c;
        let span = |p: &[usize; 8]| {
            let (r0, r1) = (p[1] / TILE, (p[1] + p[2] - 1) / TILE);
            let (c0, c1) = (p[4] / TILE, (p[4] + p[5] - 1) / TILE);
            (r0, r1, c0, c1)
        };
        let is_global = |p: &[usize; 8]| {
            let (r0, r1, c0, c1) = span(p);
            4 * (r1 - r0 + 1) * (c1 - c0 + 1) > tiles && tiles >= 16
        };
        let tiles_of = |p: &[usize; 8]| {
            let (r0, r1, c0, c1) = span(p);
            (r0..=r1).flat_map(move |tr| (c0..=c1).map(move |tc| tr * tiles_c + tc))
        };
        let global: Vec<usize> = (0..pieces.len()).filter(|&i| is_global(&pieces[i])).collect();
        let mut start = vec![0usize; tiles + 1];
        for p in pieces.iter().filter(|p| !is_global(p)) {
            for t in tiles_of(p) {
                start[t + 1] += 1;
            }
        }
        for t in 0..tiles {
            start[t + 1] += start[t];
        }
        let mut list = vec![0usize; start[tiles]];
        let mut fill = start.clone();
        for (id, p) in pieces.iter().enumerate().filter(|(_, p)| !is_global(p)) {
            for t in tiles_of(p) {
                list[fill[t]] = id;
                fill[t] += 1;
            }
        }
        let active: Vec<usize> = (0..tiles)
            .filter(|&t| !global.is_empty() || start[t + 1] > start[t])
            .collect();

        let tile_off = pieces.len() * 8;
        let list_off = tile_off + start.len();
        let active_off = list_off + list.len();
        let coef_off = active_off + active.len();
        let global_off = coef_off + coef_start.len();
        let words: Vec<u32> = pieces
            .iter()
            .flatten()
            .chain(&start)
            .chain(&list)
            .chain(&active)
            .chain(&coef_start)
            .chain(&global)
            .map(|&w| to_u32("sparse tables", w))
            .collect::<Result<_>>()?;
        let base = Params {
            rows: to_u32("rows", rows)?,
            cols: to_u32("columns", cols)?,
            tiles_c: to_u32("tiles", tiles_c)?,
            tile_off: to_u32("sparse tables", tile_off)?,
            list_off: to_u32("sparse tables", list_off)?,
            active_off: to_u32("sparse tables", active_off)?,
            coef_off: to_u32("sparse tables", coef_off)?,
            global_off: to_u32("sparse tables", global_off)?,
            n_global: to_u32("sparse tables", global.len())?,
            ..Params::default()
        };
        to_u32("matrix", rows.saturating_mul(cols))?;
        if basis.len() as u64 * 4 > ctx.max_binding_bytes() {
            return Err(Error::TooLarge {
                what: "coefficient vector",
                bytes: basis.len() as u64 * 4,
                limit: ctx.max_binding_bytes(),
            });
        }
        Ok(SparsePlan {
            ctx: ctx.clone(),
            shape: basis.shape(),
            n: basis.len(),
            words: ctx.storage_init("sparse tables", &words)?,
            vals: ctx.storage_init("atom values", &vals)?,
            base,
            tiles,
            tiles_c,
            active,
        })
    }

    /// The output shape `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        self.shape
    }

    /// Number of coefficients.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no coefficients.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The fraction of output tiles a merge touches.
    pub fn touched_fraction(&self) -> f64 {
        self.active.len() as f64 / self.tiles as f64
    }

    /// `α · ΔW` on the host (one-off use; see [`Batch`] for device-side
    /// work).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `coeffs` does not have
    /// [`SparsePlan::len`] values.
    pub fn delta(&self, coeffs: &[f32], alpha: f32) -> Result<Array2<f32>> {
        let c = self.ctx.upload_vec(coeffs)?;
        let out = self.ctx.zeros(self.shape)?;
        self.ctx
            .batch()
            .delta(self, &c, alpha, &out, Orientation::Normal)?
            .submit()?;
        self.ctx.download(&out)
    }

    /// `∂L/∂c` for `G = ∂L/∂(α·ΔW)` given on the host (one-off use).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `g` is not [`SparsePlan::shape`].
    pub fn grad(&self, g: ndarray::ArrayView2<'_, f32>, alpha: f32) -> Result<Vec<f32>> {
        let g = self.ctx.upload(g)?;
        let out = self.ctx.upload_vec(&vec![0.0; self.n])?;
        self.ctx
            .batch()
            .grad(self, &g, alpha, &out, Orientation::Normal)?
            .submit()?;
        self.ctx.download_vec(&out)
    }

    fn check_matrix(&self, m: &GpuMatrix, orient: Orientation, what: &'static str) -> Result<()> {
        let want = orient.stored_shape(self.shape);
        if m.shape() != want {
            return Err(Error::ShapeMismatch {
                what,
                expected: format!("{want:?}"),
                got: format!("{:?}", m.shape()),
            });
        }
        Ok(())
    }

    fn check_vec(&self, v: &GpuVector, what: &'static str) -> Result<()> {
        if v.len() != self.n {
            return Err(Error::ShapeMismatch {
                what,
                expected: self.n.to_string(),
                got: v.len().to_string(),
            });
        }
        Ok(())
    }
}

/// Work for many matrices, of any shapes, recorded into one command buffer
/// and submitted at once: every adapted layer of a model in one submission.
///
/// ```
/// use dwt_core::{Level, Mode, Wavelet};
/// use dwt_gpu::{Batch, Context, Location, Orientation, SeparableBasis, SparsePlan, Subband};
///
/// # if Context::new().is_err() { return Ok(()); }
/// let ctx = Context::new()?;
/// let w = Wavelet::new("db2")?;
/// let locs = [Location { level: 1, band: Subband::Approx, row: 3, col: 4 }];
/// let plan = SparsePlan::new(&ctx, &SeparableBasis::wavedec2(&w, Mode::Periodization, (64, 64), Level::Exactly(1), None, &locs)?)?;
/// let (w1, w2) = (ctx.zeros((64, 64))?, ctx.zeros((64, 64))?);
/// let c = ctx.upload_vec(&[1.5])?;
/// ctx.batch()
///     .merge(&plan, &c, 0.5, &w1, Orientation::Normal)?
///     .merge(&plan, &c, 2.0, &w2, Orientation::Normal)?
///     .submit()?;
/// # Ok::<(), dwt_gpu::Error>(())
/// ```
#[derive(Debug)]
pub struct Batch<'a> {
    ctx: &'a Context,
    passes: Vec<(wgpu::ComputePipeline, wgpu::BindGroup, (u32, u32))>,
}

impl Context {
    /// Start an empty [`Batch`].
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            ctx: self,
            passes: Vec::new(),
        }
    }
}

impl Batch<'_> {
    fn push(
        &mut self,
        plan: &SparsePlan,
        kernel: Kernel,
        mut p: Params,
        groups: usize,
        bufs: Vec<(u32, wgpu::BindingResource<'_>)>,
    ) -> Result<()> {
        if plan.ctx.device() != self.ctx.device() {
            return Err(Error::ShapeMismatch {
                what: "plan",
                expected: "a plan of this context".into(),
                got: "a plan of another device".into(),
            });
        }
        if groups == 0 {
            return Ok(());
        }
        let g = grid(groups as u64, self.ctx.limits().max_compute_workgroups_per_dimension)?;
        p.grid_x = g.0;
        p.count = to_u32("workgroups", groups)?;
        let pipeline = self.ctx.pipeline(kernel, 0, 0)?;
        let params = self.ctx.uniform(&p);
        let mut all = vec![
            (0, params.as_entire_binding()),
            (1, plan.words.as_entire_binding()),
            (2, plan.vals.as_entire_binding()),
        ];
        all.extend(bufs);
        let bind = self.ctx.bind(&pipeline, all)?;
        self.passes.push((pipeline, bind, g));
        Ok(())
    }

    /// Blocks of stored rows of `m` that each fit one binding.
    fn blocks(&self, m: &GpuMatrix) -> Result<Vec<(usize, usize)>> {
        self.ctx.row_blocks(m.shape().0, m.shape().1)
    }

    fn block_binding(m: &GpuMatrix, block: (usize, usize)) -> wgpu::BindingResource<'_> {
        rows_binding(&m.buffer, m.shape().1, block)
    }

    fn reconstruct(
        &mut self,
        plan: &SparsePlan,
        coeffs: &GpuVector,
        alpha: f32,
        target: &GpuMatrix,
        orient: Orientation,
        accumulate: bool,
    ) -> Result<&mut Self> {
        plan.check_vec(coeffs, "coefficients")?;
        plan.check_matrix(target, orient, "target matrix")?;
        let transposed = orient == Orientation::Transposed;
        for block in self.blocks(target)? {
            // The tiles (or active tiles) this block needs: a contiguous
            // range of tile rows when stored rows are ΔW rows; every tile
            // otherwise (the kernel skips elements outside the block).
            let (lo, hi) = if transposed {
                (0, plan.tiles)
            } else {
                (block.0 / TILE * plan.tiles_c, block.1.div_ceil(TILE) * plan.tiles_c)
            };
            let (first, count) = if accumulate {
                let a = plan.active.partition_point(|&t| t < lo);
                (a, plan.active.partition_point(|&t| t < hi) - a)
            } else {
                (lo, hi - lo)
            };
            let p = Params {
                accumulate: u32::from(accumulate),
                // A merge only visits tiles that some atom touches.
                use_active: u32::from(accumulate),
                transposed: u32::from(transposed),
                alpha,
                first: to_u32("tiles", first)?,
                row0: to_u32("rows", block.0)?,
                row1: to_u32("rows", block.1)?,
                ..plan.base
            };
            let bufs = vec![
                (3, coeffs.buffer.as_entire_binding()),
                (4, Self::block_binding(target, block)),
            ];
            self.push(plan, Kernel::Reconstruct, p, count, bufs)?;
        }
        Ok(self)
    }

    /// `out ← α · ΔW(coeffs)`: every element of `out` is written.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `coeffs` or `out` do not fit the plan.
    pub fn delta(
        &mut self,
        plan: &SparsePlan,
        coeffs: &GpuVector,
        alpha: f32,
        out: &GpuMatrix,
        orient: Orientation,
    ) -> Result<&mut Self> {
        self.reconstruct(plan, coeffs, alpha, out, orient, false)
    }

    /// The fused merge `W ← W + α · ΔW(coeffs)`, in place; only the
    /// elements some atom touches are read and written.
    ///
    /// # Errors
    /// As [`Batch::delta`].
    pub fn merge(
        &mut self,
        plan: &SparsePlan,
        coeffs: &GpuVector,
        alpha: f32,
        w: &GpuMatrix,
        orient: Orientation,
    ) -> Result<&mut Self> {
        self.reconstruct(plan, coeffs, alpha, w, orient, true)
    }

    /// The unmerge `W ← W − α · ΔW(coeffs)`: it subtracts exactly the
    /// values [`Batch::merge`] added (same kernel, same summation order).
    ///
    /// # Errors
    /// As [`Batch::delta`].
    pub fn unmerge(
        &mut self,
        plan: &SparsePlan,
        coeffs: &GpuVector,
        alpha: f32,
        w: &GpuMatrix,
        orient: Orientation,
    ) -> Result<&mut Self> {
        self.reconstruct(plan, coeffs, -alpha, w, orient, true)
    }

    /// `out[k] ← α · Σ_ij G_ij · atom_k(i, j)`: the gradient of a loss with
    /// respect to the coefficients, given `G = ∂L/∂(W + α·ΔW)`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `g` or `out` do not fit the plan.
    pub fn grad(
        &mut self,
        plan: &SparsePlan,
        g: &GpuMatrix,
        alpha: f32,
        out: &GpuVector,
        orient: Orientation,
    ) -> Result<&mut Self> {
        plan.check_matrix(g, orient, "gradient matrix")?;
        plan.check_vec(out, "gradient output")?;
        // Blocks after the first add their part of the sums.
        for (b, block) in self.blocks(g)?.into_iter().enumerate() {
            let p = Params {
                transposed: u32::from(orient == Orientation::Transposed),
                accumulate: u32::from(b > 0),
                alpha,
                row0: to_u32("rows", block.0)?,
                row1: to_u32("rows", block.1)?,
                ..plan.base
            };
            let bufs = vec![(3, Self::block_binding(g, block)), (4, out.buffer.as_entire_binding())];
            self.push(plan, Kernel::GradDense, p, plan.n, bufs)?;
        }
        Ok(self)
    }

    /// The same gradient for a linear layer `y = x·(W + α·ΔW)ᵀ`, from the
    /// batch factors without forming `G = gyᵀ·x`: `gy` is `batch × rows`
    /// (`∂L/∂y`), `x` is `batch × cols`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the factors or `out` do not fit.
    pub fn grad_factors(
        &mut self,
        plan: &SparsePlan,
        gy: &GpuMatrix,
        x: &GpuMatrix,
        alpha: f32,
        out: &GpuVector,
    ) -> Result<&mut Self> {
        let (b, rows) = gy.shape();
        if rows != plan.shape.0 || x.shape() != (b, plan.shape.1) {
            return Err(Error::ShapeMismatch {
                what: "gradient factors",
                expected: format!("gy: batch × {}, x: batch × {}", plan.shape.0, plan.shape.1),
                got: format!("gy: {:?}, x: {:?}", gy.shape(), x.shape()),
            });
        }
        plan.check_vec(out, "gradient output")?;
        for m in [gy, x] {
            if m.len() as u64 * 4 > self.ctx.max_binding_bytes() {
                return Err(Error::TooLarge {
                    what: "gradient factor (split the batch)",
                    bytes: m.len() as u64 * 4,
                    limit: self.ctx.max_binding_bytes(),
                });
            }
        }
        let p = Params {
            alpha,
            batch: to_u32("batch", b)?,
            row1: u32::MAX,
            ..plan.base
        };
        let bufs = vec![
            (3, gy.buffer.as_entire_binding()),
            (4, out.buffer.as_entire_binding()),
            (5, x.buffer.as_entire_binding()),
        ];
        self.push(plan, Kernel::GradFactors, p, plan.n, bufs)?;
        Ok(self)
    }

    /// Number of recorded dispatches.
    pub fn len(&self) -> usize {
        self.passes.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.passes.is_empty()
    }

    /// Submit everything as one command buffer (dispatches run in the
    /// order recorded) and wait for it.
    ///
    /// # Errors
    /// [`Error::Device`] when the device reports an error.
    pub fn submit(&mut self) -> Result<()> {
        self.record_and_submit()?;
        self.ctx.wait()
    }

    /// [`Batch::submit`] that resolves when the work is done, without
    /// blocking a thread in the driver.
    ///
    /// # Errors
    /// As [`Batch::submit`].
    pub async fn submit_async(&mut self) -> Result<()> {
        self.record_and_submit()?;
        self.ctx.wait_async().await
    }

    fn record_and_submit(&mut self) -> Result<()> {
        let passes = std::mem::take(&mut self.passes);
        self.ctx.submit(|enc| {
            let mut cp = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            for (pipeline, bind, g) in &passes {
                cp.set_pipeline(pipeline);
                cp.set_bind_group(0, bind, &[]);
                cp.dispatch_workgroups(g.0, g.1, 1);
            }
        })
    }
}
