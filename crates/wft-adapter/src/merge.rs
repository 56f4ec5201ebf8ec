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
use crate::stream::rewrite;
use crate::tensors::{TensorFile, encode_f32};
use crate::{Error, Result};

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
    /// # Errors
    /// [`Error::ModuleNotInBase`]/[`Error::AmbiguousModule`] when a module
    /// cannot be found, [`Error::ShapeMismatch`] when its weight has the
    /// wrong shape, [`Error::DtypeMismatch`] for a non-float weight,
    /// [`Error::NonFinite`] when adapter values are NaN or infinite, and
    /// write errors. Nothing is written unless everything checks out.
    pub fn merge(&self, base: &TensorFile, out: &Path, progress: &mut dyn FnMut(usize, usize)) -> Result<MergeReport> {
        self.merge_on(base, out, Device::Cpu, progress)
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
        self.merge_on(base, out, Device::Gpu(ctx), progress)
    }

    fn merge_on(
        &self,
        base: &TensorFile,
        out: &Path,
        device: Device<'_>,
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
        let mut replace = |name: &str, w: &mut dyn Write| -> Result<bool> {
            let Some(m) = plan.get(name) else {
                report.copied += 1;
                return Ok(false);
            };
            let orientation = self.layout(m).orientation(self.config.orientation);
            self.merge_one(base, name, &self.modules[*m], orientation, device, w)?;
            report.merged.push((name.to_string(), m.to_string()));
            Ok(true)
        };
        rewrite(base, out, &mut replace, progress)?;
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
                let t = f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) + f64::from(v);
                buf.extend_from_slice(&t.to_le_bytes());
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
