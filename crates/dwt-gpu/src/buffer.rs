//! Matrices and vectors that live on the device.

use ndarray::{Array2, ArrayView2};

use crate::{Context, Error, Result};

/// A row-major `f32` matrix in device memory.
#[derive(Debug)]
pub struct GpuMatrix {
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) shape: (usize, usize),
}

/// An `f32` vector in device memory (coefficients, gradients).
#[derive(Debug)]
pub struct GpuVector {
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) len: usize,
}

fn bytes_of(what: &'static str, len: usize) -> Result<u64> {
    (len as u64).checked_mul(4).ok_or(Error::TooLarge {
        what,
        bytes: u64::MAX,
        limit: 0,
    })
}

const IO: wgpu::BufferUsages = wgpu::BufferUsages::COPY_SRC.union(wgpu::BufferUsages::COPY_DST);

impl GpuMatrix {
    /// The shape `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.0 * self.shape.1
    }

    /// Whether the matrix has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl GpuVector {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the vector has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Rows `r0..r1` of a row-major `cols`-wide matrix stored in `buf`, as a
/// binding (a block of a matrix larger than one binding).
pub(crate) fn rows_binding(buf: &wgpu::Buffer, cols: usize, (r0, r1): (usize, usize)) -> wgpu::BindingResource<'_> {
    let row_bytes = cols as u64 * 4;
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer: buf,
        offset: r0 as u64 * row_bytes,
        size: std::num::NonZeroU64::new((r1 - r0) as u64 * row_bytes),
    })
}

impl Context {
    /// Blocks of rows `[r0, r1)` of a row-major `rows × cols` matrix that
    /// each fit one binding. Block starts are multiples of 64 rows: of 16
    /// (the sparse kernels' tile height) and, in bytes, of 256 (the largest
    /// binding-offset alignment a device may ask for).
    pub(crate) fn row_blocks(&self, rows: usize, cols: usize) -> Result<Vec<(usize, usize)>> {
        let row_bytes = cols as u64 * 4;
        let limit = self.max_binding_bytes();
        if rows as u64 * row_bytes <= limit {
            return Ok(vec![(0, rows)]);
        }
        let per = ((limit / row_bytes) as usize / 64) * 64;
        if per == 0 {
            return Err(Error::TooLarge {
                what: "64 rows of a matrix",
                bytes: 64 * row_bytes,
                limit,
            });
        }
        Ok((0..rows).step_by(per).map(|r0| (r0, (r0 + per).min(rows))).collect())
    }

    /// A `rows × cols` matrix of zeros on the device.
    ///
    /// # Errors
    /// [`Error::TooLarge`] beyond the device's buffer-size limit,
    /// [`Error::OutOfMemory`] when the allocation fails.
    pub fn zeros(&self, shape: (usize, usize)) -> Result<GpuMatrix> {
        let len = shape.0.checked_mul(shape.1).ok_or(Error::TooLarge {
            what: "matrix",
            bytes: u64::MAX,
            limit: self.max_binding_bytes(),
        })?;
        // wgpu zero-initialises new buffers. Kernels bind large matrices in
        // blocks of rows, so only the buffer-size limit applies.
        let buffer = self.storage_blocked("matrix", bytes_of("matrix", len)?, IO)?;
        Ok(GpuMatrix { buffer, shape })
    }

    /// Copy a matrix to the device (any memory order; it is stored
    /// row-major).
    ///
    /// # Errors
    /// As [`Context::zeros`].
    pub fn upload(&self, a: ArrayView2<'_, f32>) -> Result<GpuMatrix> {
        let m = self.zeros(a.dim())?;
        self.write(&m, a)?;
        Ok(m)
    }

    /// Overwrite a device matrix with `a`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the shapes differ.
    pub fn write(&self, m: &GpuMatrix, a: ArrayView2<'_, f32>) -> Result<()> {
        if a.dim() != m.shape {
            return Err(Error::ShapeMismatch {
                what: "matrix",
                expected: format!("{:?}", m.shape),
                got: format!("{:?}", a.dim()),
            });
        }
        if m.is_empty() {
            return Ok(());
        }
        match a.as_slice() {
            Some(s) => self.queue().write_buffer(&m.buffer, 0, bytemuck::cast_slice(s)),
            None => {
                let owned = a.as_standard_layout();
                let s = owned.as_slice().unwrap_or(&[]);
                self.queue().write_buffer(&m.buffer, 0, bytemuck::cast_slice(s));
            }
        }
        Ok(())
    }

    /// Fill a device matrix with one value (tests poison outputs with NaN).
    ///
    /// # Errors
    /// As [`Context::write`].
    pub fn fill(&self, m: &GpuMatrix, value: f32) -> Result<()> {
        self.write(m, Array2::from_elem(m.shape, value).view())
    }

    /// Copy a device matrix back to the host.
    ///
    /// # Errors
    /// [`Error::Device`] when the readback fails.
    pub async fn download_async(&self, m: &GpuMatrix) -> Result<Array2<f32>> {
        let v = self.read_f32(&m.buffer, m.len(), false).await?;
        Array2::from_shape_vec(m.shape, v).map_err(|e| Error::Device(e.to_string()))
    }

    /// Blocking [`Context::download_async`].
    ///
    /// # Errors
    /// As [`Context::download_async`].
    pub fn download(&self, m: &GpuMatrix) -> Result<Array2<f32>> {
        let v = pollster::block_on(self.read_f32(&m.buffer, m.len(), true))?;
        Array2::from_shape_vec(m.shape, v).map_err(|e| Error::Device(e.to_string()))
    }

    /// Copy a vector to the device.
    ///
    /// # Errors
    /// As [`Context::zeros`].
    pub fn upload_vec(&self, v: &[f32]) -> Result<GpuVector> {
        // Kernels bind coefficient and gradient vectors whole; plans check
        // their sizes. A long vector may still be copied (dense transforms).
        let buffer = self.storage_blocked("vector", bytes_of("vector", v.len())?, IO)?;
        if !v.is_empty() {
            self.queue().write_buffer(&buffer, 0, bytemuck::cast_slice(v));
        }
        Ok(GpuVector { buffer, len: v.len() })
    }

    /// Overwrite a device vector.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the lengths differ.
    pub fn write_vec(&self, d: &GpuVector, v: &[f32]) -> Result<()> {
        if v.len() != d.len {
            return Err(Error::ShapeMismatch {
                what: "vector",
                expected: d.len.to_string(),
                got: v.len().to_string(),
            });
        }
        if !v.is_empty() {
            self.queue().write_buffer(&d.buffer, 0, bytemuck::cast_slice(v));
        }
        Ok(())
    }

    /// Copy a device vector back to the host (blocking).
    ///
    /// # Errors
    /// [`Error::Device`] when the readback fails.
    pub fn download_vec(&self, d: &GpuVector) -> Result<Vec<f32>> {
        pollster::block_on(self.read_f32(&d.buffer, d.len, true))
    }
}
