//! A 2-D convolution that carries an adapter. The adapter works on the
//! weight's `out × (in·kh·kw)` matrix ([`WeightLayout::Conv2d`]): the
//! convolution is that matrix applied to the input's patches (`im2col`),
//! so forward, backward, merge and unmerge are the linear layer's on the
//! patch matrix.
//!
//! [`WeightLayout::Conv2d`]: crate::WeightLayout::Conv2d

use ndarray::{Array1, Array2, Array4, ArrayView2, ArrayView4};

use crate::adapter::{AdaptedLinear, Gradients, InputGrad};
use crate::error::check_shape;
use crate::{Adapter, Element, Error, Result};

/// A convolution's stride and zero padding, per axis `[rows, columns]`
/// (dilation 1, one group: the convolutions of vision transformers' patch
/// embeddings and of U-Nets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dGeometry {
    /// Step between output positions, `[sh, sw]`, each ≥ 1.
    pub stride: [usize; 2],
    /// Zeros added on each side of the input, `[ph, pw]`.
    pub padding: [usize; 2],
}

impl Default for Conv2dGeometry {
    /// Stride 1, no padding.
    fn default() -> Self {
        Conv2dGeometry {
            stride: [1, 1],
            padding: [0, 0],
        }
    }
}

/// `y = conv2d(x, W + ΔW) + b` for `x: batch × in × h × w`, with ΔW from
/// an adapter on the `[out, in, kh, kw]` weight's `out × (in·kh·kw)`
/// matrix; merged or not.
#[derive(Debug, Clone)]
pub struct AdaptedConv2d<T, A> {
    linear: AdaptedLinear<T, A>,
    in_channels: usize,
    kernel: [usize; 2],
    geometry: Conv2dGeometry,
}

impl<T: Element, A: Adapter<T>> AdaptedConv2d<T, A> {
    /// Wrap a frozen `[out, in, kh, kw]` weight (and optional `[out]` bias)
    /// with an adapter of shape `(out, in·kh·kw)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when the weight, bias and adapter disagree;
    /// [`Error::Invalid`] for a zero stride or an empty kernel.
    pub fn new(weight: Array4<T>, bias: Option<Array1<T>>, adapter: A, geometry: Conv2dGeometry) -> Result<Self> {
        let (out, in_channels, kh, kw) = weight.dim();
        if geometry.stride.contains(&0) {
            return Err(Error::invalid("stride", "must be at least 1"));
        }
        if kh == 0 || kw == 0 || in_channels == 0 {
            return Err(Error::invalid(
                "weight",
                format!("an empty kernel {:?}", weight.shape()),
            ));
        }
        check_shape(
            "adapter",
            &[adapter.shape().0, adapter.shape().1],
            &[out, in_channels * kh * kw],
        )?;
        let values: Vec<T> = weight.iter().copied().collect();
        let matrix = Array2::from_shape_vec((out, in_channels * kh * kw), values)
            .map_err(|e| Error::invalid("weight", e.to_string()))?;
        Ok(AdaptedConv2d {
            linear: AdaptedLinear::new(matrix, bias, adapter)?,
            in_channels,
            kernel: [kh, kw],
            geometry,
        })
    }

    /// The adapter.
    pub fn adapter(&self) -> &A {
        self.linear.adapter()
    }

    /// The adapter, for an optimizer step.
    ///
    /// # Errors
    /// [`Error::Merged`] while ΔW is merged (see [`AdaptedLinear::adapter_mut`]).
    pub fn adapter_mut(&mut self) -> Result<&mut A> {
        self.linear.adapter_mut()
    }

    /// The weight `[out, in, kh, kw]` (with ΔW added while merged).
    pub fn weight(&self) -> Array4<T> {
        let (m, [kh, kw]) = (self.linear.weight(), self.kernel);
        Array4::from_shape_fn((m.nrows(), self.in_channels, kh, kw), |(o, i, u, v)| {
            m[[o, (i * kh + u) * kw + v]]
        })
    }

    /// Whether ΔW is currently added into the weight.
    pub fn is_merged(&self) -> bool {
        self.linear.is_merged()
    }

    /// The output's `(rows, columns)` for an input of `(h, w)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when the padded input is smaller than the kernel.
    pub fn output_size(&self, (h, w): (usize, usize)) -> Result<(usize, usize)> {
        let side = |n: usize, axis: usize| {
            let padded = n + 2 * self.geometry.padding[axis];
            padded
                .checked_sub(self.kernel[axis])
                .map(|room| room / self.geometry.stride[axis] + 1)
        };
        match (side(h, 0), side(w, 1)) {
            (Some(oh), Some(ow)) => Ok((oh, ow)),
            _ => Err(Error::Shape {
                what: "input (padded, smaller than the kernel)",
                found: vec![h, w],
                expected: vec![self.kernel[0], self.kernel[1]],
            }),
        }
    }

    /// `y = conv2d(x, W + ΔW) + b`: `batch × out × oh × ow`.
    ///
    /// # Errors
    /// [`Error::Shape`] for an input with the wrong channel count or smaller
    /// than the kernel.
    pub fn forward(&self, x: ArrayView4<'_, T>) -> Result<Array4<T>> {
        let (batch, (oh, ow)) = (x.dim().0, self.check_input(x)?);
        let rows = self.linear.forward(self.patches(x, (oh, ow)).view())?;
        Ok(to_images(rows.view(), batch, (oh, ow)))
    }

    /// `∂L/∂params` and, with [`InputGrad::Compute`], `∂L/∂x`
    /// (`batch × in × h × w`), given `g = ∂L/∂y` (`batch × out × oh × ow`).
    ///
    /// # Errors
    /// [`Error::Shape`] for mismatched shapes.
    pub fn backward(
        &self,
        x: ArrayView4<'_, T>,
        g: ArrayView4<'_, T>,
        input: InputGrad,
    ) -> Result<Gradients<T, ndarray::Ix4>> {
        let (oh, ow) = self.check_input(x)?;
        let out = self.linear.weight().nrows();
        check_shape("dL/dy", g.shape(), &[x.dim().0, out, oh, ow])?;
        let patches = self.patches(x, (oh, ow));
        let grads = self.linear.backward(patches.view(), to_rows(g).view(), input)?;
        let input = grads.input.map(|d| self.fold(d.view(), x.dim(), (oh, ow)));
        Ok(Gradients {
            params: grads.params,
            input,
        })
    }

    /// Add ΔW into the weight (a no-op when merged).
    ///
    /// # Errors
    /// As [`AdaptedLinear::merge`].
    pub fn merge(&mut self) -> Result<()> {
        self.linear.merge()
    }

    /// Take ΔW out again, bit for bit (a no-op when not merged).
    ///
    /// # Errors
    /// As [`AdaptedLinear::unmerge`].
    pub fn unmerge(&mut self) -> Result<()> {
        self.linear.unmerge()
    }

    /// [`Self::merge`], refusing non-finite parameters or results.
    ///
    /// # Errors
    /// As [`AdaptedLinear::merge_safe`].
    pub fn merge_safe(&mut self) -> Result<()> {
        self.linear.merge_safe()
    }

    fn check_input(&self, x: ArrayView4<'_, T>) -> Result<(usize, usize)> {
        let (_, c, h, w) = x.dim();
        check_shape("x channels", &[c], &[self.in_channels])?;
        self.output_size((h, w))
    }

    /// The patch matrix: row `(b, oy, ox)`, column `(c, u, v)` holds
    /// `x[b, c, oy·sh + u − ph, ox·sw + v − pw]` (0 in the padding).
    fn patches(&self, x: ArrayView4<'_, T>, (oh, ow): (usize, usize)) -> Array2<T> {
        let (batch, c, h, w) = x.dim();
        let [kh, kw] = self.kernel;
        let mut cols = Array2::zeros((batch * oh * ow, c * kh * kw));
        self.for_each_tap((h, w), (oh, ow), |oy, ox, u, v, iy, ix| {
            for b in 0..batch {
                let row = (b * oh + oy) * ow + ox;
                for ch in 0..c {
                    cols[[row, (ch * kh + u) * kw + v]] = x[[b, ch, iy, ix]];
                }
            }
        });
        cols
    }

    /// The adjoint of [`Self::patches`]: sums each patch column back onto
    /// the input pixel it came from.
    fn fold(
        &self,
        d: ArrayView2<'_, T>,
        (batch, c, h, w): (usize, usize, usize, usize),
        out: (usize, usize),
    ) -> Array4<T> {
        let [kh, kw] = self.kernel;
        let (oh, ow) = out;
        let mut dx = Array4::zeros((batch, c, h, w));
        self.for_each_tap((h, w), out, |oy, ox, u, v, iy, ix| {
            for b in 0..batch {
                let row = (b * oh + oy) * ow + ox;
                for ch in 0..c {
                    dx[[b, ch, iy, ix]] += d[[row, (ch * kh + u) * kw + v]];
                }
            }
        });
        dx
    }

    /// Calls `f(oy, ox, u, v, iy, ix)` for every output position and
    /// kernel tap that lands inside the (unpadded) input.
    fn for_each_tap(
        &self,
        (h, w): (usize, usize),
        (oh, ow): (usize, usize),
        mut f: impl FnMut(usize, usize, usize, usize, usize, usize),
    ) {
        let ([kh, kw], [sh, sw], [ph, pw]) = (self.kernel, self.geometry.stride, self.geometry.padding);
        for oy in 0..oh {
            for u in 0..kh {
                let Some(iy) = (oy * sh + u).checked_sub(ph).filter(|&iy| iy < h) else {
                    continue;
                };
                for ox in 0..ow {
                    for v in 0..kw {
                        if let Some(ix) = (ox * sw + v).checked_sub(pw).filter(|&ix| ix < w) {
                            f(oy, ox, u, v, iy, ix);
                        }
                    }
                }
            }
        }
    }
}

/// Rows `(b, oy, ox) × out` back to `batch × out × oh × ow`.
fn to_images<T: Element>(rows: ArrayView2<'_, T>, batch: usize, (oh, ow): (usize, usize)) -> Array4<T> {
    let out = rows.ncols();
    Array4::from_shape_fn((batch, out, oh, ow), |(b, o, y, x)| rows[[(b * oh + y) * ow + x, o]])
}

/// `batch × out × oh × ow` as rows `(b, oy, ox) × out`.
fn to_rows<T: Element>(g: ArrayView4<'_, T>) -> Array2<T> {
    let (batch, out, oh, ow) = g.dim();
    Array2::from_shape_fn((batch * oh * ow, out), |(r, o)| {
        g[[r / (oh * ow), o, r / ow % oh, r % ow]]
    })
}
