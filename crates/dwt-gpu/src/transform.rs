//! Dense multilevel 2-D transforms: `wavedec2` / `waverec2` on the GPU.

use dwt_core::{Coeffs2, Mode, Wavelet, dwt_coeff_len, idwt_len};
use ndarray::{Array2, ArrayView2, Axis};

use crate::buffer::rows_binding;
use crate::context::Kernel;
use crate::{Context, Error, GpuMatrix, GpuVector, Result};

/// Threads per workgroup of the filter-bank kernels.
const THREADS: u32 = 256;

/// The GPU code of a mode, or an error for modes without a kernel.
pub(crate) fn mode_code(mode: Mode) -> Result<u32> {
    Ok(match mode {
        Mode::Zero => 0,
        Mode::Constant => 1,
        Mode::Symmetric => 2,
        Mode::Reflect => 3,
        Mode::Periodic => 4,
        Mode::Periodization => 5,
        other => return Err(Error::UnsupportedMode(other)),
    })
}

/// Refuse what dwt-core's `wavedec2` refuses: level 0, a level deeper than
/// `dwt_max_level` of the shorter side, empty or too-short axes. Returns
/// the two axes' atom bases.
pub(crate) fn check_level(
    wavelet: &Wavelet,
    mode: Mode,
    (rows, cols): (usize, usize),
    level: usize,
) -> Result<[dwt_core::AtomBasis; 2]> {
    let bases = [
        dwt_core::AtomBasis::new(wavelet, mode, rows, level)?,
        dwt_core::AtomBasis::new(wavelet, mode, cols, level)?,
    ];
    let max = wavelet.max_level(rows.min(cols));
    if level > max {
        return Err(dwt_core::Error::LevelTooDeep {
            level,
            max_level: max,
            len: rows.min(cols),
            filter_len: wavelet.filter_len(),
        }
        .into());
    }
    Ok(bases)
}

/// A 2-D dispatch grid of at least `groups` workgroups: `(x, y)` with
/// `x ≤ max`, the kernels linearise `id.x + id.y · x`.
pub(crate) fn grid(groups: u64, max: u32) -> Result<(u32, u32)> {
    let max = u64::from(max.max(1));
    let x = groups.clamp(1, max);
    let y = groups.div_ceil(x).max(1);
    if y > max {
        return Err(Error::TooLarge {
            what: "dispatch",
            bytes: groups,
            limit: max * max,
        });
    }
    Ok((x as u32, y as u32))
}

/// A strided view of a 2-D region, as the WGSL `View`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct View {
    off: u32,
    so: u32,
    sa: u32,
    pad: u32,
}

/// The WGSL `Params` of `dwt.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    lanes: u32,
    n_in: u32,
    n_out: u32,
    grid_x: u32,
    lane_major: u32,
    accumulate: u32,
    scale: f32,
    pad: u32,
    a: View,
    d: View,
    y: View,
    z: View,
}

/// A row-major `rows × cols` matrix in its own buffer.
#[derive(Debug)]
struct Band {
    buf: wgpu::Buffer,
    rows: usize,
    cols: usize,
}

impl Band {
    fn new(ctx: &Context, what: &'static str, rows: usize, cols: usize) -> Result<Self> {
        let io = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        Ok(Band {
            buf: ctx.storage(what, (rows * cols) as u64 * 4, io)?,
            rows,
            cols,
        })
    }
    fn len(&self) -> usize {
        self.rows * self.cols
    }
}

/// The strided view of a row-major `cols`-wide matrix starting at element
/// `off` of its binding, with rows as lanes (a pass along axis 1) or
/// columns as lanes (along axis 0).
fn along(off: usize, cols: usize, axis: usize) -> View {
    let (so, sa) = if axis == 1 { (cols, 1) } else { (1, cols) };
    View {
        off: off as u32,
        so: so as u32,
        sa: sa as u32,
        pad: 0,
    }
}

/// One recorded dispatch.
#[derive(Debug)]
struct Pass {
    pipeline: wgpu::ComputePipeline,
    bind: wgpu::BindGroup,
    groups: (u32, u32),
}

impl Pass {
    fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind, &[]);
        pass.dispatch_workgroups(self.groups.0, self.groups.1, 1);
    }
}

/// A buffer bound whole, or the rows `r0..r1` of a `cols`-wide matrix.
#[derive(Debug, Clone, Copy)]
enum Bound<'a> {
    Whole(&'a wgpu::Buffer),
    Rows(&'a wgpu::Buffer, usize, usize, usize),
}

impl<'a> Bound<'a> {
    fn resource(self) -> wgpu::BindingResource<'a> {
        match self {
            Bound::Whole(b) => b.as_entire_binding(),
            Bound::Rows(b, r0, r1, cols) => rows_binding(b, cols, (r0, r1)),
        }
    }
}

/// A multilevel 2-D DWT plan for one shape, wavelet, mode and level, with
/// its buffers and dispatches built once (RustFFT style): `forward` is
/// PyWavelets' `wavedec2`, `inverse` its `waverec2`, both along axes 0
/// and 1 of a row-major `f32` matrix.
///
/// ```
/// use dwt_core::{Mode, Wavelet};
/// use dwt_gpu::{Context, Dwt2};
/// use ndarray::Array2;
///
/// # if Context::new().is_err() { return Ok(()); }
/// let ctx = Context::new()?;
/// let w = Wavelet::new("db4")?;
/// let plan = Dwt2::new(&ctx, &w, Mode::Periodization, (512, 384), 3)?;
/// let x = Array2::from_shape_fn((512, 384), |(i, j)| (i as f32 * 0.1).sin() + j as f32);
/// let coeffs = plan.forward(x.view())?;
/// let y = plan.inverse(&coeffs)?;
/// assert!((&y - &x).iter().all(|e| e.abs() < 1e-3));
/// # Ok::<(), dwt_gpu::Error>(())
/// ```
#[derive(Debug)]
pub struct Dwt2 {
    ctx: Context,
    shape: (usize, usize),
    out_shape: (usize, usize),
    taps_len: u32,
    mode: u32,
    taps: wgpu::Buffer,
    input: GpuMatrix,
    output: GpuMatrix,
    /// All coefficients in `wavedec2` order, for one readback.
    flat: GpuMatrix,
    /// Finest level first: `[cA_j, cH_j, cV_j, cD_j]`, one buffer each
    /// (`cA_j` is scratch except at the coarsest level).
    bands: Vec<[Band; 4]>,
    /// `recon[j]`: the approximation of level `j` rebuilt from level `j + 1`.
    recon: Vec<Option<Band>>,
    /// Scratch between the two axes of a level: low-pass and high-pass.
    lo: wgpu::Buffer,
    hi: wgpu::Buffer,
    n_coeffs: usize,
    forward: Vec<Pass>,
    inverse: Vec<Pass>,
}

impl Dwt2 {
    /// Plan a `level`-deep transform of `shape` matrices.
    ///
    /// Every band and scratch buffer must fit one storage binding; the
    /// input and output matrices need not (they are bound in blocks of
    /// rows), so a 4096×11008 transform runs where the device binds 128 MiB.
    ///
    /// # Errors
    /// * [`Error::Dwt`] where `dwt_core::wavedec2` would refuse the
    ///   request (level 0 or deeper than `dwt_max_level`, empty shape, too
    ///   short for the mode).
    /// * [`Error::UnsupportedMode`] for smooth, antisymmetric and
    ///   antireflect.
    /// * [`Error::TooLarge`] / [`Error::OutOfMemory`] when a buffer does
    ///   not fit the device.
    pub fn new(ctx: &Context, wavelet: &Wavelet, mode: Mode, shape: (usize, usize), level: usize) -> Result<Self> {
        let code = mode_code(mode)?;
        let l = wavelet.filter_len();
        let (rows, cols) = shape;
        check_level(wavelet, mode, shape, level)?;
        let mut r = vec![rows];
        let mut c = vec![cols];
        for j in 1..=level {
            r.push(dwt_coeff_len(r[j - 1], l, mode));
            c.push(dwt_coeff_len(c[j - 1], l, mode));
        }
        let inv = |n: usize| idwt_len(n, l, mode);
        let out_shape = (inv(r[1])?, inv(c[1])?);

        let mut bands = Vec::with_capacity(level);
        for j in 1..=level {
            let b = |what| Band::new(ctx, what, r[j], c[j]);
            bands.push([b("approximation band")?, b("cH band")?, b("cV band")?, b("cD band")?]);
        }
        let mut recon = vec![None];
        for j in 1..level {
            recon.push(Some(Band::new(ctx, "approximation", inv(r[j + 1])?, inv(c[j + 1])?)?));
        }
        let mut scratch = 0;
        for j in 1..=level {
            scratch = scratch.max(r[j - 1] * c[j]).max(inv(r[j])? * c[j]);
        }
        let n_coeffs = bands[level - 1][0].len() + bands.iter().map(|b| 3 * b[1].len()).sum::<usize>();
        let io = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        let taps: Vec<f32> = wavelet
            .filter_bank()
            .iter()
            .flat_map(|f| f.iter().map(|&t| t as f32))
            .collect();
        let mut plan = Dwt2 {
            ctx: ctx.clone(),
            shape,
            out_shape,
            taps_len: l as u32,
            mode: code,
            taps: ctx.storage_init("filter taps", &taps)?,
            input: ctx.zeros(shape)?,
            output: ctx.zeros(out_shape)?,
            lo: ctx.storage("transform scratch", scratch as u64 * 4, io)?,
            hi: ctx.storage("transform scratch", scratch as u64 * 4, io)?,
            n_coeffs,
            flat: ctx.zeros((1, n_coeffs))?,
            bands,
            recon,
            forward: Vec::new(),
            inverse: Vec::new(),
        };

        // Forward: level j filters X (the input, or cA_{j-1}) along axis 1
        // into lo | hi, then each along axis 0 into the bands.
        let mut forward = Vec::new();
        for j in 1..=level {
            let p = Params {
                lanes: r[j - 1] as u32,
                n_in: c[j - 1] as u32,
                n_out: c[j] as u32,
                ..Params::default()
            };
            let x = if j == 1 {
                &plan.input.buffer
            } else {
                &plan.bands[j - 2][0].buf
            };
            forward.extend(plan.rows_pass(Kernel::Analysis, p, x, c[j - 1])?);
            let [ca, ch, cv, cd] = &plan.bands[j - 1];
            for (src, a, d) in [(&plan.lo, ca, ch), (&plan.hi, cv, cd)] {
                let p = Params {
                    lanes: c[j] as u32,
                    n_in: r[j - 1] as u32,
                    n_out: r[j] as u32,
                    lane_major: 1,
                    a: along(0, c[j], 0),
                    y: along(0, c[j], 0),
                    z: along(0, c[j], 0),
                    ..Params::default()
                };
                let binds = [
                    (2, Bound::Whole(src)),
                    (4, Bound::Whole(&a.buf)),
                    (5, Bound::Whole(&d.buf)),
                ];
                forward.push(plan.pass(Kernel::Analysis, p, &binds)?);
            }
        }

        // Inverse: level j synthesises (cA, cH) and (cV, cD) along axis 0
        // into lo and hi, then (lo, hi) along axis 1 into the next
        // approximation, or the output.
        let mut inverse = Vec::new();
        for j in (1..=level).rev() {
            let [ca, ch, cv, cd] = &plan.bands[j - 1];
            let approx = match plan.recon.get(j) {
                Some(Some(rec)) => rec,
                _ => ca,
            };
            let n0 = inv(r[j])?;
            for (a, d, y) in [(approx, ch, &plan.lo), (cv, cd, &plan.hi)] {
                let p = Params {
                    lanes: c[j] as u32,
                    n_in: r[j] as u32,
                    n_out: n0 as u32,
                    lane_major: 1,
                    scale: 1.0,
                    // The approximation may be one column wider (PyWavelets trims it).
                    a: along(0, a.cols, 0),
                    d: along(0, c[j], 0),
                    y: along(0, c[j], 0),
                    ..Params::default()
                };
                let binds = [
                    (2, Bound::Whole(&a.buf)),
                    (3, Bound::Whole(&d.buf)),
                    (4, Bound::Whole(y)),
                ];
                inverse.push(plan.pass(Kernel::Synthesis, p, &binds)?);
            }
            if j > 1 {
                let target = plan.recon[j - 1].as_ref().map_or(&plan.output.buffer, |b| &b.buf);
                inverse.extend(plan.synthesis_rows(n0, c[j], inv(c[j])?, target, 1.0, false)?);
            }
        }
        inverse.extend(plan.synthesis_rows(out_shape.0, c[1], out_shape.1, &plan.output.buffer, 1.0, false)?);
        plan.forward = forward;
        plan.inverse = inverse;
        Ok(plan)
    }

    /// One dispatch of `kernel` with the taps and the given bindings.
    fn pass(&self, kernel: Kernel, mut p: Params, binds: &[(u32, Bound<'_>)]) -> Result<Pass> {
        let threads = u64::from(p.lanes) * u64::from(p.n_out);
        let groups = grid(
            threads.div_ceil(u64::from(THREADS)),
            self.ctx.limits().max_compute_workgroups_per_dimension,
        )?;
        p.grid_x = groups.0 * THREADS;
        let pipeline = self.ctx.pipeline(kernel, self.taps_len, self.mode)?;
        let params = self.ctx.uniform(&p);
        let mut res = vec![(0, params.as_entire_binding()), (1, self.taps.as_entire_binding())];
        res.extend(binds.iter().map(|&(b, bound)| (b, bound.resource())));
        let bind = self.ctx.bind(&pipeline, res)?;
        Ok(Pass { pipeline, bind, groups })
    }

    /// The analysis pass along axis 1 of the `cols`-wide matrix `x` into
    /// lo | hi, in row blocks when `x` is larger than one binding.
    fn rows_pass(&self, kernel: Kernel, p: Params, x: &wgpu::Buffer, cols: usize) -> Result<Vec<Pass>> {
        let out_cols = p.n_out as usize;
        self.ctx
            .row_blocks(p.lanes as usize, cols)?
            .into_iter()
            .map(|(r0, r1)| {
                let q = Params {
                    lanes: (r1 - r0) as u32,
                    a: along(0, cols, 1),
                    y: along(r0 * out_cols, out_cols, 1),
                    z: along(r0 * out_cols, out_cols, 1),
                    ..p
                };
                let binds = [
                    (2, Bound::Rows(x, r0, r1, cols)),
                    (4, Bound::Whole(&self.lo)),
                    (5, Bound::Whole(&self.hi)),
                ];
                self.pass(kernel, q, &binds)
            })
            .collect()
    }

    /// A level's synthesis pass along axis 1: (lo, hi), `n0 × m` each,
    /// into the `n0 × n1` matrix `target` (`scale`, `accumulate`), in row
    /// blocks when `target` is larger than one binding.
    #[allow(clippy::too_many_arguments)]
    fn synthesis_rows(
        &self,
        n0: usize,
        m: usize,
        n1: usize,
        target: &wgpu::Buffer,
        scale: f32,
        accumulate: bool,
    ) -> Result<Vec<Pass>> {
        self.ctx
            .row_blocks(n0, n1)?
            .into_iter()
            .map(|(r0, r1)| {
                let p = Params {
                    lanes: (r1 - r0) as u32,
                    n_in: m as u32,
                    n_out: n1 as u32,
                    scale,
                    accumulate: u32::from(accumulate),
                    a: along(r0 * m, m, 1),
                    d: along(r0 * m, m, 1),
                    y: along(0, n1, 1),
                    ..Params::default()
                };
                let binds = [
                    (2, Bound::Whole(&self.lo)),
                    (3, Bound::Whole(&self.hi)),
                    (4, Bound::Rows(target, r0, r1, n1)),
                ];
                self.pass(Kernel::Synthesis, p, &binds)
            })
            .collect()
    }

    /// The bands in `wavedec2` order: `[cA_n, cH_n, cV_n, cD_n, …, cD_1]`.
    fn ordered(&self) -> Vec<&Band> {
        let level = self.bands.len();
        let mut v = vec![&self.bands[level - 1][0]];
        for j in (1..=level).rev() {
            v.extend(self.bands[j - 1][1..].iter());
        }
        v
    }

    /// Fill every internal buffer (bands, scratch, output) with `value`;
    /// tests poison them with NaN to prove every element is written.
    #[doc(hidden)]
    pub fn poison(&self, value: f32) {
        let bufs = self
            .bands
            .iter()
            .flatten()
            .chain(self.recon.iter().flatten())
            .map(|b| &b.buf);
        for b in bufs.chain([&self.lo, &self.hi, &self.output.buffer]) {
            let v = vec![value; (b.size() / 4) as usize];
            self.ctx.queue().write_buffer(b, 0, bytemuck::cast_slice(&v));
        }
    }

    /// The signal shape this plan transforms.
    pub fn shape(&self) -> (usize, usize) {
        self.shape
    }

    /// The shape [`Dwt2::inverse`] returns: PyWavelets' `waverec2` shape,
    /// one larger than [`Dwt2::shape`] along an axis whose levels had odd
    /// lengths (outside periodization).
    pub fn output_shape(&self) -> (usize, usize) {
        self.out_shape
    }

    /// Band shapes in `wavedec2` order: `[cA_n, cH_n, cV_n, cD_n, …, cD_1]`.
    pub fn band_shapes(&self) -> Vec<(usize, usize)> {
        self.ordered().iter().map(|b| (b.rows, b.cols)).collect()
    }

    /// Number of coefficients (all bands).
    pub fn num_coeffs(&self) -> usize {
        self.n_coeffs
    }

    fn run(&self, passes: &[Pass], copies: impl FnOnce(&mut wgpu::CommandEncoder)) -> Result<()> {
        self.ctx.submit(|enc| {
            copies(enc);
            let mut cp = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            for p in passes {
                p.record(&mut cp);
            }
        })
    }

    /// Run the forward passes again on the input already on the device
    /// (kernel timing without transfers); waits for completion.
    ///
    /// # Errors
    /// [`Error::Device`] when the device fails.
    pub fn run_forward(&self) -> Result<()> {
        self.run(&self.forward, |_| {})?;
        self.ctx.wait()
    }

    /// Run the inverse passes again on the coefficients already on the
    /// device; waits for completion.
    ///
    /// # Errors
    /// [`Error::Device`] when the device fails.
    pub fn run_inverse(&self) -> Result<()> {
        self.run(&self.inverse, |_| {})?;
        self.ctx.wait()
    }

    /// `wavedec2(x, wavelet, mode, level)` along axes 0 and 1.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `x` is not [`Dwt2::shape`];
    /// [`Error::Device`] when the device fails.
    pub fn forward(&self, x: ArrayView2<'_, f32>) -> Result<Coeffs2<f32>> {
        self.ctx.write(&self.input, x)?;
        self.run(&self.forward, |_| {})?;
        // Gather the bands into one vector, then read it back once.
        self.ctx.submit(|enc| {
            let mut off = 0;
            for b in self.ordered() {
                enc.copy_buffer_to_buffer(&b.buf, 0, &self.flat.buffer, off * 4, b.len() as u64 * 4);
                off += b.len() as u64;
            }
        })?;
        let flat = self.ctx.download(&self.flat)?;
        self.split(flat.as_slice().unwrap_or(&[]))
    }

    /// Flat coefficients in `wavedec2` order to [`Coeffs2`].
    fn split(&self, flat: &[f32]) -> Result<Coeffs2<f32>> {
        let mut bands = self.band_shapes().into_iter().scan(0, |off, s| {
            let a = Array2::from_shape_vec(s, flat[*off..*off + s.0 * s.1].to_vec());
            *off += s.0 * s.1;
            Some(a)
        });
        let bad = |e: ndarray::ShapeError| Error::Device(e.to_string());
        let approx = bands.next().transpose().map_err(bad)?.unwrap_or_default();
        let mut details = Vec::new();
        while let (Some(h), Some(v), Some(d)) = (bands.next(), bands.next(), bands.next()) {
            details.push([h.map_err(bad)?, v.map_err(bad)?, d.map_err(bad)?]);
        }
        Ok(Coeffs2::from_parts(approx, details, [Axis(0), Axis(1)]))
    }

    /// Coefficients (as from `wavedec2`) to one flat vector in
    /// `wavedec2` order, checking each band's shape against the plan.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a wrong level count or band shape.
    pub fn flatten(&self, c: &Coeffs2<f32>) -> Result<Vec<f32>> {
        let shapes = self.band_shapes();
        let mut got = vec![c.approx().dim()];
        for [h, v, d] in c.details() {
            got.extend([h.dim(), v.dim(), d.dim()]);
        }
        if got != shapes {
            return Err(Error::ShapeMismatch {
                what: "coefficients",
                expected: format!("{shapes:?}"),
                got: format!("{got:?}"),
            });
        }
        let mut flat = Vec::with_capacity(self.n_coeffs);
        flat.extend(c.approx().iter());
        for [h, v, d] in c.details() {
            flat.extend(h.iter().chain(v).chain(d));
        }
        Ok(flat)
    }

    /// `waverec2(c, wavelet, mode)`; the result has
    /// [`Dwt2::output_shape`].
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the bands do not have this plan's
    /// shapes; [`Error::Device`] when the device fails.
    pub fn inverse(&self, c: &Coeffs2<f32>) -> Result<Array2<f32>> {
        let flat = self.flatten(c)?;
        let mut off = 0;
        for b in self.ordered() {
            self.ctx
                .queue()
                .write_buffer(&b.buf, 0, bytemuck::cast_slice(&flat[off..off + b.len()]));
            off += b.len();
        }
        self.run(&self.inverse, |_| {})?;
        self.ctx.download(&self.output)
    }

    /// `out ← scale · waverec2(c)`, or `out += scale · waverec2(c)` when
    /// `accumulate` (a dense merge), entirely on the device. `coeffs` holds
    /// the bands flat in `wavedec2` order ([`Dwt2::flatten`]).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `coeffs` has not
    /// [`Dwt2::num_coeffs`] elements or `out` not [`Dwt2::output_shape`].
    pub fn inverse_into(&self, coeffs: &GpuVector, out: &GpuMatrix, scale: f32, accumulate: bool) -> Result<()> {
        if coeffs.len() != self.n_coeffs {
            return Err(Error::ShapeMismatch {
                what: "coefficient vector",
                expected: self.n_coeffs.to_string(),
                got: coeffs.len().to_string(),
            });
        }
        if out.shape() != self.out_shape {
            return Err(Error::ShapeMismatch {
                what: "output matrix",
                expected: format!("{:?}", self.out_shape),
                got: format!("{:?}", out.shape()),
            });
        }
        let (n0, n1) = self.out_shape;
        let last = self.synthesis_rows(n0, self.bands[0][1].cols, n1, &out.buffer, scale, accumulate)?;
        // The plan's own last pass (into `output`) is replaced by `last`.
        let keep = self.inverse.len() - self.ctx.row_blocks(n0, n1)?.len();
        let passes: Vec<&Pass> = self.inverse[..keep].iter().chain(&last).collect();
        self.ctx.submit(|enc| {
            let mut off = 0;
            for b in self.ordered() {
                enc.copy_buffer_to_buffer(&coeffs.buffer, off * 4, &b.buf, 0, b.len() as u64 * 4);
                off += b.len() as u64;
            }
            let mut cp = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            for p in passes {
                p.record(&mut cp);
            }
        })?;
        self.ctx.wait()
    }
}
