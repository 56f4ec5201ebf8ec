//! Merging adapters into safetensors checkpoints, one tensor at a time
//! (`stream.rs`; docs/DESIGN.md tells the streaming story).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use dwt_core::Orientation;
use ndarray::{Array2, ArrayViewMut2};
use safetensors::Dtype;

use crate::adapter::check_finite;
use crate::model::{AdapterModel, ModuleAdapter, module_shape};
use crate::stream::{Edit, rewrite};
use crate::tensors::{TensorFile, decode_to, encode_f32, encode_to};
use crate::{Adapter, Coverage, Error, Result};

/// What [`AdapterModel::merge`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeReport {
    /// Base tensors that received a ΔW, with the module that adapted them.
    pub merged: Vec<(String, String)>,
    /// Tensors copied unchanged.
    pub copied: usize,
}

impl AdapterModel {
    /// Merge every adapter into the matching weights of `base` and write
    /// the result to `out` atomically. Every other tensor is copied with its
    /// dtype; the header metadata is kept. F16/BF16 weights are merged in f32
    /// and rounded back; F64 weights get the f32 ΔW added in f64.
    /// `progress(done, total)` is called once per tensor.
    ///
    /// At the speed of a copy: each file is copied whole by the kernel
    /// (`copy_file_range`, which shares extents on filesystems that can),
    /// then mapped, and only the elements each adapter writes are rewritten
    /// in place, in the file's dtype (for WaveletFT `O(n · support²)` per
    /// tensor; LoRA and FourierFT rewrite the whole tensor). The bytes are
    /// those of [`AdapterModel::merge_streaming`].
    ///
    /// # Errors
    /// [`Error::ModuleNotInBase`]/[`Error::AmbiguousModule`] when a module
    /// cannot be found, [`Error::ShapeMismatch`] when its weight has the
    /// wrong shape, [`Error::DtypeMismatch`] for a non-float weight,
    /// [`Error::NonFinite`] when adapter values are NaN or infinite, and
    /// write errors. Nothing is written unless everything checks out.
    pub fn merge(&self, base: &TensorFile, out: &Path, progress: &mut dyn FnMut(usize, usize)) -> Result<MergeReport> {
        self.merge_on(base, out, Device::Cpu, Writer::Patch, progress)
    }

    /// [`AdapterModel::merge`] written tensor by tensor: unchanged tensors
    /// copied by the kernel, every adapted tensor decoded whole, merged and
    /// written. Memory stays at about one tensor; the output file is never
    /// mapped for writing.
    ///
    /// # Errors
    /// As [`AdapterModel::merge`].
    pub fn merge_streaming(
        &self,
        base: &TensorFile,
        out: &Path,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<MergeReport> {
        self.merge_on(base, out, Device::Cpu, Writer::Stream, progress)
    }

    /// [`AdapterModel::merge`] with ΔW built and added on a GPU (every
    /// method; see [`crate::GpuAdapter`]). The output matches the CPU merge
    /// to `f32` rounding.
    ///
    /// # Errors
    /// As [`AdapterModel::merge`], plus [`Error::Gpu`].
    #[cfg(feature = "gpu")]
    pub fn merge_gpu(
        &self,
        base: &TensorFile,
        out: &Path,
        ctx: &dwt_gpu::Context,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<MergeReport> {
        self.merge_on(base, out, Device::Gpu(ctx), Writer::Stream, progress)
    }

    fn merge_on(
        &self,
        base: &TensorFile,
        out: &Path,
        device: Device<'_>,
        writer: Writer,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<MergeReport> {
        let orient = self.config.orientation;
        let mut plan: BTreeMap<String, &str> = BTreeMap::new();
        for (m, a) in &self.modules {
            let weight = module_shape(base, m, orient)?;
            let layout = self.layout(m);
            if weight.shape != a.as_adapter().shape() || weight.layout != layout {
                return Err(Error::ShapeMismatch {
                    path: base.path().to_path_buf(),
                    found: weight.stored(orient),
                    tensor: weight.key,
                    expected: format!(
                        "{:?} for the adapter of {m:?}",
                        layout.stored_shape(a.as_adapter().shape(), orient)
                    ),
                });
            }
            let key = weight.key;
            check_finite(&format!("adapter of {m:?}"), a.as_adapter().params())?;
            match base.info(&key) {
                Some((Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16, _)) => {}
                found => {
                    return Err(Error::DtypeMismatch {
                        path: base.path().to_path_buf(),
                        tensor: key,
                        found: found.map_or("nothing".into(), |(d, _)| format!("{d:?}")),
                        expected: "F32, F64, F16 or BF16".into(),
                    });
                }
            }
            plan.insert(key, m);
        }
        let mut report = MergeReport {
            merged: Vec::new(),
            copied: 0,
        };
        let mut record = |name: &str| match plan.get(name) {
            Some(m) => {
                report.merged.push((name.to_string(), m.to_string()));
                Some((*m, self.layout(m).orientation(self.config.orientation)))
            }
            None => {
                report.copied += 1;
                None
            }
        };
        match writer {
            Writer::Stream => {
                let mut replace = |name: &str, w: &mut dyn Write| -> Result<bool> {
                    let Some((m, orientation)) = record(name) else {
                        return Ok(false);
                    };
                    self.merge_one(base, name, &self.modules[m], orientation, device, w)?;
                    Ok(true)
                };
                rewrite(base, out, Edit::Stream(&mut replace), progress)?;
            }
            Writer::Patch => {
                let mut patch = |name: &str, bytes: &mut [u8]| -> Result<bool> {
                    let Some((m, orientation)) = record(name) else {
                        return Ok(false);
                    };
                    let info = base.info(name).map(|(d, s)| (d, s.to_vec()));
                    let (dtype, dims) = info.ok_or_else(|| Error::MissingTensor {
                        path: base.path().to_path_buf(),
                        tensor: name.to_string(),
                        expected: "the adapted weight".into(),
                    })?;
                    let module = self.modules[m].as_adapter();
                    patch_one(module, dtype, &dims, orientation, bytes).map_err(|e| in_tensor(base, name, e))?;
                    Ok(true)
                };
                rewrite(base, out, Edit::Patch(&mut patch), progress)?;
            }
        }
        report.merged.sort();
        Ok(report)
    }

    /// Merge one weight and write its bytes (same dtype and length) to `w`.
    fn merge_one(
        &self,
        base: &TensorFile,
        name: &str,
        module: &ModuleAdapter,
        orient: Orientation,
        device: Device<'_>,
        w: &mut dyn Write,
    ) -> Result<()> {
        let raw = base.raw(name, "")?;
        let (dtype, dims) = (raw.dtype, raw.shape.clone());
        let not_float = || Error::DtypeMismatch {
            path: base.path().to_path_buf(),
            tensor: name.to_string(),
            found: format!("{dtype:?}"),
            expected: "F32, F64, F16 or BF16".into(),
        };
        let io = |e| Error::io(base.path(), e);
        if dtype == Dtype::F64 {
            let d = orient.orient(device.delta(module)?);
            let mut buf = Vec::with_capacity(1 << 16);
            for (c, &v) in raw.data.chunks_exact(8).zip(d.iter()) {
                buf.extend_from_slice(&f64_plus(c, v));
                if buf.len() >= 1 << 16 {
                    w.write_all(&buf).map_err(io)?;
                    buf.clear();
                }
            }
            return w.write_all(&buf).map_err(io);
        }
        drop(raw);
        let mut values = base.f32_releasing(name)?.ok_or_else(not_float)?;
        // A convolution `[out, in, kh, kw]` merges as its `out × (in·kh·kw)` matrix.
        let cols = dims.iter().skip(1).product();
        let view = ArrayViewMut2::from_shape([dims.first().copied().unwrap_or(0), cols], &mut values)
            .map_err(|e| Error::invalid(name, e.to_string()))?;
        device.merge(module, view, orient)?;
        encode_f32(dtype, &values, w).map_err(io)?.ok_or_else(not_float)
    }
}

/// How a merge writes its output ([`Edit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    Stream,
    Patch,
}

fn in_tensor(base: &TensorFile, name: &str, e: Error) -> Error {
    match e {
        Error::Invalid { what, reason } => {
            Error::invalid(format!("{} tensor {name}: {what}", base.path().display()), reason)
        }
        e => e,
    }
}

/// An F64 weight's 8 little-endian bytes plus an f32 ΔW element, in f64:
/// how both writers merge F64 weights.
fn f64_plus(c: &[u8], v: f32) -> [u8; 8] {
    (f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) + f64::from(v)).to_le_bytes()
}

/// `W += ΔW` on a tensor's little-endian bytes in place, with the arithmetic
/// and rounding of the streaming merge: f32 added in place (through an
/// aligned view when the bytes allow), F16/BF16 decoded to f32 on the
/// elements the adapter writes, merged and rounded back, F64 given the f32
/// ΔW in f64.
fn patch_one(
    adapter: &dyn Adapter<f32>,
    dtype: Dtype,
    dims: &[usize],
    orientation: Orientation,
    bytes: &mut [u8],
) -> Result<()> {
    let rows = dims.first().copied().unwrap_or(0);
    let cols: usize = dims.iter().skip(1).product();
    let len = rows * cols;
    let view = |s: &mut [f32]| -> Result<()> {
        let w = ArrayViewMut2::from_shape([rows, cols], s).map_err(|e| Error::invalid("weight", e.to_string()))?;
        adapter.merge_into(w, 1.0, orientation)
    };
    if dtype == Dtype::F64 {
        let d = orientation.orient(adapter.delta_weight());
        for (c, &v) in bytes.chunks_exact_mut(8).zip(d.iter()) {
            let t = f64_plus(c, v);
            c.copy_from_slice(&t);
        }
        return Ok(());
    }
    if dtype == Dtype::F32
        && cfg!(target_endian = "little")
        && let Ok(w) = bytemuck::try_cast_slice_mut::<u8, f32>(bytes)
    {
        return view(w);
    }
    let size = dtype.bitsize() / 8;
    // Zeroed by the allocator (calloc: pages the kernel maps on first
    // touch), so memory and time follow the touched elements, not the
    // tensor: only they are written and read.
    let mut scratch = vec![0f32; len];
    let s = scratch.as_mut_slice();

    let mut runs = Vec::new();
    let coverage = adapter.for_each_touched_run(orientation, &mut |start, n| runs.push((start, n)));
    if coverage == Coverage::Everything {
        runs = vec![(0, len)];
    }
    for &(start, n) in &runs {
        decode_to(
            dtype,
            &bytes[start * size..(start + n) * size],
            &mut s[start..start + n],
        );
    }
    view(s)?;
    for &(start, n) in &runs {
        encode_to(
            dtype,
            &s[start..start + n],
            &mut bytes[start * size..(start + n) * size],
        );
    }
    Ok(())
}

/// Where a merge computes.
#[derive(Debug, Clone, Copy)]
enum Device<'a> {
    Cpu,
    #[cfg(feature = "gpu")]
    Gpu(&'a dwt_gpu::Context),
    /// Keeps the lifetime used when the `gpu` feature is off.
    #[cfg(not(feature = "gpu"))]
    #[allow(dead_code)]
    Unused(std::convert::Infallible, std::marker::PhantomData<&'a ()>),
}

impl Device<'_> {
    /// The module's dense ΔW.
    fn delta(&self, module: &ModuleAdapter) -> Result<Array2<f32>> {
        match self {
            Device::Cpu => Ok(module.as_adapter().delta_weight()),
            #[cfg(feature = "gpu")]
            Device::Gpu(ctx) => crate::GpuAdapter::new(ctx, module)?.delta_weight(),
            #[cfg(not(feature = "gpu"))]
            Device::Unused(never, _) => match *never {},
        }
    }

    /// `W += ΔW` in place.
    fn merge(&self, module: &ModuleAdapter, w: ArrayViewMut2<'_, f32>, orientation: Orientation) -> Result<()> {
        match self {
            Device::Cpu => module.as_adapter().merge_into(w, 1.0, orientation),
            #[cfg(feature = "gpu")]
            Device::Gpu(ctx) => crate::GpuAdapter::new(ctx, module)?.merge_into(w, 1.0, orientation),
            #[cfg(not(feature = "gpu"))]
            Device::Unused(never, _) => match *never {},
        }
    }
}
