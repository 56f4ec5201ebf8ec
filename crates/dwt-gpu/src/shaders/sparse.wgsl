// Sparse wavelet synthesis and its adjoint, from separable atoms.
//
// ΔW = α · Σ_k c_k · u_k v_kᵀ, where u_k (rows) and v_k (columns) are the
// 1-D synthesis atoms of coefficient k, each at most two contiguous runs.
// The host splits every atom into rectangular "pieces" (row run × column
// run) and buckets the pieces by 16×16 output tile, so:
//
// * `reconstruct`: one workgroup per tile, one thread per output element,
//   sums the pieces of its tile (gather, no atomics), then stores or adds
//   α·ΔW — the fused merge reads and writes each touched element once;
// * `grad_dense`: ∂L/∂c_k = α · Σ_ij G_ij u_k[i] v_k[j], one workgroup per
//   coefficient;
// * `grad_factors`: the same for G = Gyᵀ·X without forming it:
//   α · Σ_b (u_k·Gy[b,:]) (v_k·X[b,:]).

struct Piece {
    coef: u32,
    r0: u32,
    nr: u32,
    rv: u32,
    c0: u32,
    nc: u32,
    cv: u32,
    pad: u32,
}

struct Params {
    rows: u32,
    cols: u32,
    tiles_c: u32,
    // Workgroups with work: tiles, active tiles or coefficients.
    count: u32,
    use_active: u32,
    accumulate: u32,
    // 1: the matrix is stored transposed (cols × rows), PEFT's
    // fan_in_fan_out.
    transposed: u32,
    alpha: f32,
    // Workgroups per row of the dispatch grid.
    grid_x: u32,
    tile_off: u32,
    list_off: u32,
    active_off: u32,
    coef_off: u32,
    batch: u32,
    // Matrices larger than one binding are processed in blocks of stored
    // rows: this dispatch sees stored rows row0..row1, bound from row0 on,
    // and starts at tile (or active tile) number `first`.
    first: u32,
    row0: u32,
    row1: u32,
    // Pieces that cover much of the matrix (FourierFT's and LoRA's factors
    // span it all) are kept in one global list that every tile visits.
    global_off: u32,
    n_global: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// Pieces (8 words each) from 0, then tile offsets, tile lists, active tiles
// and per-coefficient piece offsets at the offsets in `p`.
@group(0) @binding(1) var<storage, read> words: array<u32>;
@group(0) @binding(2) var<storage, read> vals: array<f32>;
// reconstruct: coefficients; grad_*: G (rows × cols) or Gy (batch × rows).
@group(0) @binding(3) var<storage, read> in0: array<f32>;
// reconstruct: the matrix; grad_*: ∂L/∂c.
@group(0) @binding(4) var<storage, read_write> out0: array<f32>;
// grad_factors: X (batch × cols).
@group(0) @binding(5) var<storage, read> in1: array<f32>;

fn piece(id: u32) -> Piece {
    let b = id * 8u;
    return Piece(words[b], words[b + 1u], words[b + 2u], words[b + 3u], words[b + 4u], words[b + 5u], words[b + 6u], 0u);
}

// The stored row of matrix element (i, j).
fn stored_row(i: u32, j: u32) -> u32 {
    return select(i, j, p.transposed == 1u);
}

// Memory index of matrix element (i, j) inside the bound block.
fn elem(i: u32, j: u32) -> u32 {
    if p.transposed == 1u {
        return (j - p.row0) * p.rows + i;
    }
    return (i - p.row0) * p.cols + j;
}

fn in_block(i: u32, j: u32) -> bool {
    let r = stored_row(i, j);
    return r >= p.row0 && r < p.row1;
}

// c_k · u[i] · v[j] of one piece at (i, j), 0 outside it.
fn contribution(pc: Piece, i: u32, j: u32) -> f32 {
    if i >= pc.r0 && i - pc.r0 < pc.nr && j >= pc.c0 && j - pc.c0 < pc.nc {
        return in0[pc.coef] * vals[pc.rv + i - pc.r0] * vals[pc.cv + j - pc.c0];
    }
    return 0.0;
}

@compute @workgroup_size(16, 16)
fn reconstruct(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = wid.x + wid.y * p.grid_x;
    if g >= p.count {
        return;
    }
    var tile = p.first + g;
    if p.use_active == 1u {
        tile = words[p.active_off + p.first + g];
    }
    // Threads along x walk the contiguous axis of the stored matrix.
    var li = lid.y;
    var lj = lid.x;
    if p.transposed == 1u {
        li = lid.x;
        lj = lid.y;
    }
    let i = (tile / p.tiles_c) * 16u + li;
    let j = (tile % p.tiles_c) * 16u + lj;
    if i >= p.rows || j >= p.cols || !in_block(i, j) {
        return;
    }
    var acc = 0.0;
    for (var q = 0u; q < p.n_global; q++) {
        acc += contribution(piece(words[p.global_off + q]), i, j);
    }
    let first = words[p.tile_off + tile];
    let last = words[p.tile_off + tile + 1u];
    for (var q = first; q < last; q++) {
        acc += contribution(piece(words[p.list_off + q]), i, j);
    }
    let idx = elem(i, j);
    if p.accumulate == 1u {
        out0[idx] += p.alpha * acc;
    } else {
        out0[idx] = p.alpha * acc;
    }
}

var<workgroup> partial: array<f32, 64>;

// Tree-sum `partial` and store α·sum as ∂L/∂c_k (thread 0). Every thread of
// the workgroup must call it.
fn finish(k: u32, t: u32, acc: f32) {
    partial[t] = acc;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if t < s {
            partial[t] += partial[t + s];
        }
        workgroupBarrier();
    }
    if t == 0u && k < p.count {
        if p.accumulate == 1u {
            out0[k] += p.alpha * partial[0];
        } else {
            out0[k] = p.alpha * partial[0];
        }
    }
}

@compute @workgroup_size(64)
fn grad_dense(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let k = wid.x + wid.y * p.grid_x;
    let t = lid.x;
    var acc = 0.0;
    if k < p.count {
        let first = words[p.coef_off + k];
        let last = words[p.coef_off + k + 1u];
        for (var q = first; q < last; q++) {
            let pc = piece(q);
            for (var e = t; e < pc.nr * pc.nc; e += 64u) {
                let i = e / pc.nc;
                let j = e % pc.nc;
                if in_block(pc.r0 + i, pc.c0 + j) {
                    acc += in0[elem(pc.r0 + i, pc.c0 + j)] * vals[pc.rv + i] * vals[pc.cv + j];
                }
            }
        }
    }
    finish(k, t, acc);
}

@compute @workgroup_size(64)
fn grad_factors(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let k = wid.x + wid.y * p.grid_x;
    let t = lid.x;
    var acc = 0.0;
    if k < p.count {
        let first = words[p.coef_off + k];
        let last = words[p.coef_off + k + 1u];
        for (var b = t; b < p.batch; b += 64u) {
            for (var q = first; q < last; q++) {
                let pc = piece(q);
                var gu = 0.0;
                for (var i = 0u; i < pc.nr; i++) {
                    gu += vals[pc.rv + i] * in0[b * p.rows + pc.r0 + i];
                }
                var xv = 0.0;
                for (var j = 0u; j < pc.nc; j++) {
                    xv += vals[pc.cv + j] * in1[b * p.cols + pc.c0 + j];
                }
                acc += gu * xv;
            }
        }
    }
    finish(k, t, acc);
}
