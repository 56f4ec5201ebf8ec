//! Dense multilevel 2-D transforms: `wavedec2` / `waverec2` on the GPU.

use dwt_core::{Coeffs2, Mode, Wavelet, dwt_coeff_len, idwt_len};
use ndarray::{Array2, ArrayView2, Axis};

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

/// A row-major `rows × cols` block at element offset `off` of a buffer.
#[derive(Debug, Clone, Copy)]
struct Region {
    off: usize,
    rows: usize,
    cols: usize,
}

impl Region {
    fn len(&self) -> usize {
        self.rows * self.cols
    }
    /// The view whose lanes are rows (transform along axis 1) or columns
    /// (along axis 0).
    fn along(&self, axis: usize) -> View {
        let (so, sa) = if axis == 1 { (self.cols, 1) } else { (1, self.cols) };
        View {
            off: self.off as u32,
            so: so as u32,
            sa: sa as u32,
            pad: 0,
        }
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

/// Which buffer a pass reads or writes.
#[derive(Debug, Clone, Copy)]
enum Buf {
    Input,
    Arena,
    Temp,
    Output,
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
    taps: wgpu::Buffer,
    input: GpuMatrix,
    arena: wgpu::Buffer,
    temp: wgpu::Buffer,
    output: GpuMatrix,
    /// Band regions, finest level first: `[cA_j, cH_j, cV_j, cD_j]`
    /// (`cA_j` is scratch except at the coarsest level).
    bands: Vec<[Region; 4]>,
    /// Element count of the coefficient prefix of the arena, in
    /// `wavedec2` order.
    n_coeffs: usize,
    forward: Vec<Pass>,
    inverse: Vec<Pass>,
    /// The inverse's last pass, rebuilt by `inverse_into` for other targets.
    last: (Params, Kernel, u32, u32),
}

impl Dwt2 {
    /// Plan a `level`-deep transform of `shape` matrices.
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

        // Arena: the coefficients in wavedec2 order, then scratch slots for
        // the intermediate approximations of both directions.
        let mut off = 0;
        let take = |off: &mut usize, rows: usize, cols: usize| {
            let reg = Region { off: *off, rows, cols };
            *off += rows * cols;
            reg
        };
        let mut bands = vec![
            [Region {
                off: 0,
                rows: 0,
                cols: 0
            }; 4];
            level
        ];
        bands[level - 1][0] = take(&mut off, r[level], c[level]);
        for j in (1..=level).rev() {
            for band in &mut bands[j - 1][1..] {
                *band = take(&mut off, r[j], c[j]);
            }
        }
        let n_coeffs = off;
        for band in bands.iter_mut().take(level - 1) {
            band[0] = take(&mut off, band[1].rows, band[1].cols);
        }
        // recon[j]: the approximation of level j rebuilt from level j + 1.
        let mut recon = vec![None; level + 1];
        for j in 1..level {
            recon[j] = Some(take(&mut off, inv(r[j + 1])?, inv(c[j + 1])?));
        }
        let arena_len = off;
        let out_shape = (inv(r[1])?, inv(c[1])?);

        let mut temp_len = 0;
        for j in 1..=level {
            temp_len = temp_len.max(2 * r[j - 1] * c[j]).max(2 * inv(r[j])? * c[j]);
        }
        let io = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        let bytes = |n: usize| n as u64 * 4;
        let taps: Vec<f32> = wavelet
            .filter_bank()
            .iter()
            .flat_map(|f| f.iter().map(|&t| t as f32))
            .collect();
        let taps = ctx.storage_init("filter taps", &taps)?;
        // The dense transforms bind whole matrices.
        for (what, n) in [
            ("transform input", rows * cols),
            ("transform output", out_shape.0 * out_shape.1),
        ] {
            if bytes(n) > ctx.max_binding_bytes() {
                return Err(Error::TooLarge {
                    what,
                    bytes: bytes(n),
                    limit: ctx.max_binding_bytes(),
                });
            }
        }
        let input = ctx.zeros(shape)?;
        let arena = ctx.storage("coefficient arena", bytes(arena_len), io)?;
        let temp = ctx.storage("transform scratch", bytes(temp_len), io)?;
        let output = ctx.zeros(out_shape)?;

        let mut plan = Dwt2 {
            ctx: ctx.clone(),
            shape,
            out_shape,
            taps,
            input,
            arena,
            temp,
            output,
            bands,
            n_coeffs,
            forward: Vec::new(),
            inverse: Vec::new(),
            last: (Params::default(), Kernel::Synthesis, l as u32, code),
        };
        let (l, code) = (l as u32, code);

        // Forward: level j reads X (the input, or cA_{j-1}), filters along
        // axis 1 into the scratch (lo | hi), then along axis 0 into bands.
        for j in 1..=level {
            let x = if j == 1 {
                (Buf::Input, Region { off: 0, rows, cols })
            } else {
                (Buf::Arena, plan.bands[j - 2][0])
            };
            let lo = Region {
                off: 0,
                rows: r[j - 1],
                cols: c[j],
            };
            let hi = Region { off: lo.len(), ..lo };
            let p1 = Params {
                lanes: r[j - 1] as u32,
                n_in: c[j - 1] as u32,
                n_out: c[j] as u32,
                a: x.1.along(1),
                y: lo.along(1),
                z: hi.along(1),
                ..Params::default()
            };
            let pass = plan.pass(Kernel::Analysis, l, code, p1, x.0, Buf::Temp)?;
            plan.forward.push(pass);
            let [ca, ch, cv, cd] = plan.bands[j - 1];
            for (src, (a, d)) in [(lo, (ca, ch)), (hi, (cv, cd))] {
                let p = Params {
                    lanes: c[j] as u32,
                    n_in: r[j - 1] as u32,
                    n_out: r[j] as u32,
                    lane_major: 1,
                    a: src.along(0),
                    y: a.along(0),
                    z: d.along(0),
                    ..Params::default()
                };
                let pass = plan.pass(Kernel::Analysis, l, code, p, Buf::Temp, Buf::Arena)?;
                plan.forward.push(pass);
            }
        }

        // Inverse: level j synthesises (cA, cH) and (cV, cD) along axis 0
        // into the scratch, then (lo, hi) along axis 1 into the next
        // approximation, or the output.
        for j in (1..=level).rev() {
            let [ca, ch, cv, cd] = plan.bands[j - 1];
            let approx = if j == level { ca } else { recon[j].unwrap_or(ca) };
            let n0 = inv(r[j])?;
            let n1 = inv(c[j])?;
            let lo = Region {
                off: 0,
                rows: n0,
                cols: c[j],
            };
            let hi = Region { off: lo.len(), ..lo };
            for ((a, d), y) in [((approx, ch), lo), ((cv, cd), hi)] {
                let p = Params {
                    lanes: c[j] as u32,
                    n_in: r[j] as u32,
                    n_out: n0 as u32,
                    lane_major: 1,
                    scale: 1.0,
                    a: a.along(0),
                    d: d.along(0),
                    y: y.along(0),
                    ..Params::default()
                };
                let pass = plan.pass(Kernel::Synthesis, l, code, p, Buf::Arena, Buf::Temp)?;
                plan.inverse.push(pass);
            }
            let (target, dst) = match recon[j - 1] {
                Some(reg) if j > 1 => (reg, Buf::Arena),
                _ => (
                    Region {
                        off: 0,
                        rows: n0,
                        cols: n1,
                    },
                    Buf::Output,
                ),
            };
            let p = Params {
                lanes: n0 as u32,
                n_in: c[j] as u32,
                n_out: n1 as u32,
                scale: 1.0,
                a: lo.along(1),
                d: hi.along(1),
                y: target.along(1),
                ..Params::default()
            };
            if j == 1 {
                plan.last.0 = p;
            }
            let pass = plan.pass(Kernel::Synthesis, l, code, p, Buf::Temp, dst)?;
            plan.inverse.push(pass);
        }
        Ok(plan)
    }

    fn buffer(&self, b: Buf) -> &wgpu::Buffer {
        match b {
            Buf::Input => &self.input.buffer,
            Buf::Arena => &self.arena,
            Buf::Temp => &self.temp,
            Buf::Output => &self.output.buffer,
        }
    }

    fn pass(&self, kernel: Kernel, l: u32, code: u32, p: Params, src: Buf, dst: Buf) -> Result<Pass> {
        self.pass_to(kernel, l, code, p, self.buffer(src), self.buffer(dst))
    }

    fn pass_to(
        &self,
        kernel: Kernel,
        l: u32,
        code: u32,
        mut p: Params,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
    ) -> Result<Pass> {
        let threads = u64::from(p.lanes) * u64::from(p.n_out);
        let groups = grid(
            threads.div_ceil(u64::from(THREADS)),
            self.ctx.limits().max_compute_workgroups_per_dimension,
        )?;
        p.grid_x = groups.0 * THREADS;
        let pipeline = self.ctx.pipeline(kernel, l, code);
        let params = self.ctx.uniform(&p);
        let bind = self
            .ctx
            .bind(&pipeline, &[(0, &params), (1, &self.taps), (2, src), (3, dst)]);
        Ok(Pass { pipeline, bind, groups })
    }

    /// Fill every internal buffer (coefficients, scratch, output) with
    /// `value`; tests poison them with NaN to prove every element is
    /// written.
    #[doc(hidden)]
    pub fn poison(&self, value: f32) {
        for b in [&self.arena, &self.temp, &self.output.buffer] {
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
        let level = self.bands.len();
        let mut v = vec![(self.bands[level - 1][0].rows, self.bands[level - 1][0].cols)];
        for j in (1..=level).rev() {
            v.extend(self.bands[j - 1][1..].iter().map(|r| (r.rows, r.cols)));
        }
        v
    }

    /// Number of coefficients (all bands).
    pub fn num_coeffs(&self) -> usize {
        self.n_coeffs
    }

    fn run(&self, passes: &[Pass], extra: Option<&Pass>) -> Result<()> {
        self.ctx.submit(|enc| {
            let mut cp = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            for p in passes.iter().chain(extra) {
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
        self.run(&self.forward, None)?;
        self.ctx.wait()
    }

    /// Run the inverse passes again on the coefficients already on the
    /// device; waits for completion.
    ///
    /// # Errors
    /// [`Error::Device`] when the device fails.
    pub fn run_inverse(&self) -> Result<()> {
        self.run(&self.inverse, None)?;
        self.ctx.wait()
    }

    /// `wavedec2(x, wavelet, mode, level)` along axes 0 and 1.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `x` is not [`Dwt2::shape`];
    /// [`Error::Device`] when the device fails.
    pub fn forward(&self, x: ArrayView2<'_, f32>) -> Result<Coeffs2<f32>> {
        self.ctx.write(&self.input, x)?;
        self.run(&self.forward, None)?;
        let flat = pollster::block_on(self.ctx.read_f32(&self.arena, self.n_coeffs, true))?;
        self.split(&flat)
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
        self.ctx
            .queue()
            .write_buffer(&self.arena, 0, bytemuck::cast_slice(&flat));
        self.run(&self.inverse, None)?;
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
        let (mut p, kernel, l, code) = self.last;
        p.scale = scale;
        p.accumulate = u32::from(accumulate);
        let last = self.pass_to(kernel, l, code, p, &self.temp, &out.buffer)?;
        let n = self.inverse.len();
        self.ctx.submit(|enc| {
            enc.copy_buffer_to_buffer(&coeffs.buffer, 0, &self.arena, 0, self.n_coeffs as u64 * 4);
            let mut cp = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            for p in self.inverse[..n - 1].iter().chain([&last]) {
                p.record(&mut cp);
            }
        })
    }
}
