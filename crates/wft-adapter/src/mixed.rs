//! Mixed-adapter batches: one batch in which each row names its own
//! adapter (or none), with no merging.
//!
//! Rows that share an adapter are gathered and run together through that
//! adapter's own factored form ([`Adapter::forward_delta`]: for WaveletFT
//! `α Σ_k c_k (x·v_k) u_k`, `O(n · support)` per row; LoRA and FourierFT
//! through their factors), then scattered back, as Punica's SGMV groups
//! LoRA rows. The frozen product `x·Wᵀ` is the caller's, once for the
//! whole batch.

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis};

use crate::adapter::check_batch;
use crate::{Adapter, Error, Result};

/// Which adapter each row of a batch uses: `Some(k)` for `adapters[k]`,
/// `None` for the frozen model alone.
pub type Routes<'a> = &'a [Option<usize>];

/// `y[r] += x[r] · ΔW_{routes[r]}ᵀ` for every row `r` whose route names an
/// adapter (`x`: `batch × in`, `y`: `batch × out`). Each row's result is its
/// adapter's [`Adapter::forward_delta`] on the rows of the same adapter.
///
/// # Errors
/// [`Error::Invalid`] when `routes` does not have one entry per row or names
/// an adapter past `adapters`; [`Error::Shape`] when an adapter used has
/// another shape than the batch.
pub fn forward_mixed(
    x: ArrayView2<'_, f32>,
    mut y: ArrayViewMut2<'_, f32>,
    routes: Routes<'_>,
    adapters: &[&dyn Adapter<f32>],
) -> Result<()> {
    if routes.len() != x.nrows() {
        return Err(Error::invalid(
            "routes",
            format!("{} routes for a batch of {} rows", routes.len(), x.nrows()),
        ));
    }
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); adapters.len()];
    for (r, route) in routes.iter().enumerate() {
        if let Some(k) = *route {
            groups
                .get_mut(k)
                .ok_or_else(|| Error::invalid("routes", format!("row {r} names adapter {k} of {}", adapters.len())))?
                .push(r);
        }
    }
    for (adapter, rows) in adapters.iter().zip(&groups) {
        if rows.is_empty() {
            continue;
        }
        let (out, inp) = adapter.shape();
        check_batch(x, y.view(), inp, out)?;
        if rows.len() == x.nrows() {
            // One adapter for the whole batch: no gather.
            adapter.forward_delta(x, y.view_mut())?;
            continue;
        }
        let xs = x.select(Axis(0), rows);
        let mut ys = Array2::zeros((rows.len(), out));
        adapter.forward_delta(xs.view(), ys.view_mut())?;
        for (&r, yr) in rows.iter().zip(ys.rows()) {
            let mut dst = y.row_mut(r);
            dst += &yr;
        }
    }
    Ok(())
}
