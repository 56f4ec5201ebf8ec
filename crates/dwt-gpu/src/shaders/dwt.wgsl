// One level of a 1-D two-channel filter bank along one axis of strided 2-D
// views, PyWavelets' conventions (see REFERENCE §2 and dwt-core):
//
// * `analysis`: out_lo[k] = Σ_j dec_lo[j]·x̃[2k+1−j] (x̃ the extended signal),
//   or, in periodization, Σ_j dec_lo[j]·x[(L/2 + 2k − j) mod N'];
// * `synthesis`: y[n] = Σ_k a[k]·rec_lo[n+L−2−2k] + d[k]·rec_hi[n+L−2−2k]
//   ("valid" upsampling convolution), or its periodic version.
//
// One thread computes one output sample (both bands for `analysis`). A 2-D
// level is three such dispatches; the host chains them.

// Filter length and extension mode are pipeline constants, so loops have a
// fixed trip count; the taps themselves come from a storage buffer.
override L: u32 = 2u;
// 0 zero, 1 constant, 2 symmetric, 3 reflect, 4 periodic, 5 periodization.
override MODE: u32 = 0u;

// A strided view: element (lane o, position i) is at off + o·so + i·sa.
struct View {
    off: u32,
    so: u32,
    sa: u32,
    pad: u32,
}

struct Params {
    lanes: u32,
    // Input length along the axis: the signal (analysis) or the coefficient
    // count of each band (synthesis).
    n_in: u32,
    // Output samples per lane.
    n_out: u32,
    // Threads per row of the 2-D dispatch grid.
    grid_x: u32,
    // Lane index varies fastest across threads when the lanes are adjacent
    // in memory (passes along axis 0), so loads and stores coalesce.
    lane_major: u32,
    // Synthesis only: 1 adds `scale · y` to the destination instead of
    // storing it.
    accumulate: u32,
    scale: f32,
    pad: u32,
    // Analysis: `a` is the signal. Synthesis: approximation and detail.
    a: View,
    d: View,
    // Analysis: approximation and detail outputs. Synthesis: `y` only.
    y: View,
    z: View,
}

@group(0) @binding(0) var<uniform> p: Params;
// dec_lo, dec_hi, rec_lo, rec_hi, L taps each.
@group(0) @binding(1) var<storage, read> taps: array<f32>;
// Each view has its own buffer (a band, a scratch, or a block of rows of a
// matrix larger than one binding).
@group(0) @binding(2) var<storage, read> src_a: array<f32>;
@group(0) @binding(3) var<storage, read> src_d: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst_y: array<f32>;
@group(0) @binding(5) var<storage, read_write> dst_z: array<f32>;

// (lane, position) of this thread's output, or lanes = out of range.
fn position(gid: vec3<u32>) -> vec2<u32> {
    let idx = gid.x + gid.y * p.grid_x;
    if idx >= p.lanes * p.n_out {
        return vec2<u32>(p.lanes, 0u);
    }
    if p.lane_major == 1u {
        return vec2<u32>(idx % p.lanes, idx / p.lanes);
    }
    return vec2<u32>(idx / p.n_out, idx % p.n_out);
}

// m mod period in [0, period). Unsigned arithmetic only: a signed `%` of a
// negative number is undefined in GLSL, which the GL backend compiles to.
fn wrap(m: i32, period: i32) -> i32 {
    let p = u32(period);
    if m >= 0 {
        return i32(u32(m) % p);
    }
    return i32((p - u32(-m) % p) % p);
}

// Sample m of the extended signal of lane o (any integer m).
fn extended(o: u32, m: i32) -> f32 {
    let n = i32(p.n_in);
    var i = m;
    if m < 0 || m >= n {
        switch MODE {
            case 1u: {
                i = clamp(m, 0, n - 1);
            }
            case 2u: {
                // Half-sample symmetric, reflecting again past each end.
                i = wrap(m, 2 * n);
                if i >= n {
                    i = 2 * n - 1 - i;
                }
            }
            case 3u: {
                // Whole-sample symmetric.
                if n == 1 {
                    i = 0;
                } else {
                    i = wrap(m, 2 * n - 2);
                    if i >= n {
                        i = 2 * n - 2 - i;
                    }
                }
            }
            case 4u: {
                i = wrap(m, n);
            }
            default: {
                return 0.0;
            }
        }
    }
    return src_a[p.a.off + o * p.a.so + u32(i) * p.a.sa];
}

@compute @workgroup_size(256)
fn analysis(@builtin(global_invocation_id) gid: vec3<u32>) {
    let pos = position(gid);
    let o = pos.x;
    let k = pos.y;
    if o >= p.lanes {
        return;
    }
    var lo = 0.0;
    var hi = 0.0;
    if MODE == 5u {
        // Periodization: an odd signal is first extended by its last sample.
        let n = i32(p.n_in);
        let np = n + (n & 1);
        for (var j = 0u; j < L; j++) {
            var t = wrap(i32(L / 2u) + 2 * i32(k) - i32(j), np);
            t = min(t, n - 1);
            let x = src_a[p.a.off + o * p.a.so + u32(t) * p.a.sa];
            lo += taps[j] * x;
            hi += taps[L + j] * x;
        }
    } else {
        for (var j = 0u; j < L; j++) {
            let x = extended(o, 2 * i32(k) + 1 - i32(j));
            lo += taps[j] * x;
            hi += taps[L + j] * x;
        }
    }
    dst_y[p.y.off + o * p.y.so + k * p.y.sa] = lo;
    dst_z[p.z.off + o * p.z.so + k * p.z.sa] = hi;
}

@compute @workgroup_size(256)
fn synthesis(@builtin(global_invocation_id) gid: vec3<u32>) {
    let pos = position(gid);
    let o = pos.x;
    let n = pos.y;
    if o >= p.lanes {
        return;
    }
    let m = i32(p.n_in);
    let hl = L / 2u;
    var y = 0.0;
    if MODE == 5u {
        // y[(2k + j − (L/2 − 1)) mod 2m] += a[k]·rec_lo[j] + d[k]·rec_hi[j],
        // gathered: for each tap j of the right parity, k is unique mod m.
        let base = i32(n) + i32(hl) - 1;
        let j0 = u32(base & 1);
        for (var t = 0u; t < hl; t++) {
            let j = j0 + 2u * t;
            let k = u32(wrap(base - i32(j), 2 * m) / 2);
            let a = src_a[p.a.off + o * p.a.so + k * p.a.sa];
            let d = src_d[p.d.off + o * p.d.so + k * p.d.sa];
            y += a * taps[2u * L + j] + d * taps[3u * L + j];
        }
    } else {
        // Taps j = n + L − 2 − 2k of one parity, k = k0, k0 − 1, …
        let k0 = i32((n + L - 2u) / 2u);
        let j0 = n + L - 2u - 2u * u32(k0);
        for (var t = 0u; t < hl; t++) {
            let k = k0 - i32(t);
            if k >= 0 && k < m {
                let j = j0 + 2u * t;
                let a = src_a[p.a.off + o * p.a.so + u32(k) * p.a.sa];
                let d = src_d[p.d.off + o * p.d.so + u32(k) * p.d.sa];
                y += a * taps[2u * L + j] + d * taps[3u * L + j];
            }
        }
    }
    let at = p.y.off + o * p.y.so + n * p.y.sa;
    if p.accumulate == 1u {
        dst_y[at] += p.scale * y;
    } else {
        dst_y[at] = p.scale * y;
    }
}
