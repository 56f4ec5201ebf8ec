//! `cargo xtask scale [--gb N]`: merge an adapter into a synthetic
//! checkpoint larger than most machines' RAM share, and measure what the
//! issue asks: wall time and peak resident memory of `wft merge`
//! (`/usr/bin/time -v`), against a plain copy of the same bytes in the same
//! run.
//!
//! The checkpoint is generated once under `target/scale/` (never
//! committed): Llama-3-70B layer shapes (hidden 8192, MLP 28672, 8 KV
//! heads of 128), random bf16 weights, sharded at about 2 GB like Hugging
//! Face writes them, with `model.safetensors.index.json`. The adapter is a
//! PEFT `WAVEFT` folder (db1, n = 1000) on `q_proj`, `v_proj` and
//! `down_proj` (8192×28672: torch's large randperm branch).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::{Result, cargo, root, run, write_section};

const HIDDEN: usize = 8192;
const MLP: usize = 28672;
const KV: usize = 1024;
const VOCAB: usize = 32000;
const SHARD_BYTES: usize = 2 << 30;

/// One tensor of the synthetic model: name and shape (bf16).
fn tensors(layers: usize) -> Vec<(String, Vec<usize>)> {
    let mut v = vec![("model.embed_tokens.weight".to_string(), vec![VOCAB, HIDDEN])];
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        v.push((format!("{p}.input_layernorm.weight"), vec![HIDDEN]));
        for (m, shape) in [
            ("self_attn.q_proj", [HIDDEN, HIDDEN]),
            ("self_attn.k_proj", [KV, HIDDEN]),
            ("self_attn.v_proj", [KV, HIDDEN]),
            ("self_attn.o_proj", [HIDDEN, HIDDEN]),
            ("mlp.gate_proj", [MLP, HIDDEN]),
            ("mlp.up_proj", [MLP, HIDDEN]),
            ("mlp.down_proj", [HIDDEN, MLP]),
        ] {
            v.push((format!("{p}.{m}.weight"), shape.to_vec()));
        }
        v.push((format!("{p}.post_attention_layernorm.weight"), vec![HIDDEN]));
    }
    v.push(("model.norm.weight".to_string(), vec![HIDDEN]));
    v
}

/// xorshift64*: fast, seeded, good enough for weights nobody reads.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Four bf16 values, uniform in about ±0.02 (the top half of an f32).
    fn bf16x4(&mut self, out: &mut [u8]) {
        let r = self.next();
        for (k, o) in out.chunks_exact_mut(2).enumerate() {
            let u = ((r >> (16 * k)) & 0xffff) as f32 / 65536.0 - 0.5;
            let b = ((u * 0.04).to_bits() >> 16) as u16;
            o.copy_from_slice(&b.to_le_bytes());
        }
    }
}

fn io<E: std::fmt::Display>(p: &Path) -> impl Fn(E) -> String + '_ {
    move |e| format!("{}: {e}", p.display())
}

/// The element types the synthetic checkpoints are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Float {
    F32,
    Bf16,
}

impl Float {
    fn name(self) -> &'static str {
        match self {
            Float::F32 => "F32",
            Float::Bf16 => "BF16",
        }
    }
    fn size(self) -> usize {
        match self {
            Float::F32 => 4,
            Float::Bf16 => 2,
        }
    }
}

/// Write one safetensors shard of bf16 tensors, streaming.
fn write_shard(path: &Path, tensors: &[(String, Vec<usize>)], rng: &mut Rng) -> Result<u64> {
    write_file(path, tensors, Float::Bf16, rng)
}

/// Write one safetensors file of `float` tensors with random values, streaming.
fn write_file(path: &Path, tensors: &[(String, Vec<usize>)], float: Float, rng: &mut Rng) -> Result<u64> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<usize>() * float.size();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": float.name(), "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut text = serde_json::Value::Object(header).to_string();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let file = std::fs::File::create(path).map_err(io(path))?;
    let mut w = std::io::BufWriter::with_capacity(8 << 20, file);
    w.write_all(&(text.len() as u64).to_le_bytes()).map_err(io(path))?;
    w.write_all(text.as_bytes()).map_err(io(path))?;
    let mut buf = vec![0u8; 8 << 20];
    let mut wide = vec![0u8; 16 << 20];
    let mut left = offset;
    while left > 0 {
        // bf16 values; as f32, the same values widened.
        let n = (left / float.size() * 2).min(buf.len());
        for c in buf[..n].chunks_exact_mut(8) {
            rng.bf16x4(c);
        }
        let out = match float {
            Float::Bf16 => &buf[..n],
            Float::F32 => {
                for (o, c) in wide.chunks_exact_mut(4).zip(buf[..n].chunks_exact(2)) {
                    o.copy_from_slice(&(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16).to_le_bytes());
                }
                &wide[..2 * n]
            }
        };
        w.write_all(out).map_err(io(path))?;
        left -= out.len();
    }
    w.flush().map_err(io(path))?;
    Ok((8 + text.len() + offset) as u64)
}

/// Generate the sharded checkpoint and the adapter, unless already there.
fn generate(dir: &Path, layers: usize) -> Result<(PathBuf, PathBuf)> {
    let base = dir.join("base");
    let adapter = dir.join("adapter");
    let spec = format!("llama70b-shapes layers={layers} vocab={VOCAB} shard={SHARD_BYTES} v1");
    let stamp = dir.join("spec");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(spec.as_str()) {
        println!("scale: reusing {}", base.display());
        return Ok((base, adapter));
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(&base).map_err(io(&base))?;
    std::fs::create_dir_all(&adapter).map_err(io(&adapter))?;
    // Shards of about SHARD_BYTES, in model order.
    let all = tensors(layers);
    let mut groups: Vec<Vec<(String, Vec<usize>)>> = vec![Vec::new()];
    let mut size = 0;
    for t in all {
        let bytes = t.1.iter().product::<usize>() * 2;
        if size + bytes > SHARD_BYTES && !groups.last().is_none_or(Vec::is_empty) {
            groups.push(Vec::new());
            size = 0;
        }
        size += bytes;
        if let Some(g) = groups.last_mut() {
            g.push(t);
        }
    }
    let started = Instant::now();
    let mut rng = Rng(0x5eed_1234_5678_9abc);
    let mut weight_map = serde_json::Map::new();
    let mut total = 0u64;
    for (i, g) in groups.iter().enumerate() {
        let name = format!("model-{:05}-of-{:05}.safetensors", i + 1, groups.len());
        total += write_shard(&base.join(&name), g, &mut rng)?;
        for (t, _) in g {
            weight_map.insert(t.clone(), name.clone().into());
        }
        println!("scale: wrote {name}");
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    let p = base.join("model.safetensors.index.json");
    std::fs::write(&p, serde_json::to_string_pretty(&index).map_err(|e| e.to_string())?).map_err(io(&p))?;

    let modules: Vec<String> = (0..layers)
        .flat_map(|i| {
            ["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"].map(|m| format!("model.layers.{i}.{m}"))
        })
        .collect();
    write_waveft_adapter(&adapter, &["q_proj", "v_proj", "down_proj"], &modules, &mut rng)?;
    std::fs::write(&stamp, spec).map_err(io(&stamp))?;
    println!(
        "scale: generated {:.2} GB in {:.0} s",
        total as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );
    Ok((base, adapter))
}

/// A PEFT WaveFT folder (db1, n = 1000 spectrum values per module) on
/// `modules`, which `targets` select.
fn write_waveft_adapter(adapter: &Path, targets: &[&str], modules: &[String], rng: &mut Rng) -> Result {
    let n = 1000;
    let config = serde_json::json!({
        "peft_type": "WAVEFT", "peft_version": "0.21.2", "task_type": null, "base_model_name_or_path": null,
        "revision": null, "inference_mode": true, "bias": "none", "fan_in_fan_out": false,
        "target_modules": targets, "exclude_modules": null,
        "layers_to_transform": null, "layers_pattern": null, "modules_to_save": null,
        "n_frequency": n, "n_frequency_pattern": {}, "proportional_parameters": false,
        "random_loc_seed": 777, "scaling": 25.0, "use_idwt": true, "wavelet_family": "db1",
        "init_weights": false,
    });
    std::fs::create_dir_all(adapter).map_err(io(adapter))?;
    let p = adapter.join("adapter_config.json");
    std::fs::write(&p, serde_json::to_string_pretty(&config).map_err(|e| e.to_string())?).map_err(io(&p))?;
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for m in modules {
        let key = format!("base_model.model.{m}.waveft_spectrum");
        let start = data.len();
        for _ in 0..n {
            let u = (rng.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            data.extend_from_slice(&(u * 1e-3).to_le_bytes());
        }
        header.insert(
            key,
            serde_json::json!({"dtype": "F32", "shape": [n], "data_offsets": [start, data.len()]}),
        );
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let text = serde_json::Value::Object(header).to_string();
    let p = adapter.join("adapter_model.safetensors");
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    bytes.extend_from_slice(&data);
    std::fs::write(&p, bytes).map_err(io(&p))
}

/// What [`rounds`] measured.
struct Timings {
    /// Median `wft merge` seconds.
    merge: f64,
    /// Median `cp` + `sync` seconds.
    copy: f64,
    /// Each round's (merge, copy) seconds.
    pairs: Vec<(f64, f64)>,
    /// Peak resident memory of the merges, bytes.
    rss: u64,
}

/// Median of three rounds of `cp` + `sync` against `wft merge` on the same input.
fn rounds(base: &Path, adapter: &Path, merged: &Path, copy: &Path) -> Result<Timings> {
    let wft = root().join("target/release/wft");
    let s = |p: &Path| p.display().to_string();
    let (mut merges, mut copies, mut rss) = (Vec::new(), Vec::new(), 0u64);
    // What `sync` must flush: the copy, or each shard of a copied folder.
    let synced: Vec<String> = if base.is_dir() {
        std::fs::read_dir(base)
            .map_err(io(base))?
            .flatten()
            .map(|e| s(&copy.join(e.file_name())))
            .collect()
    } else {
        vec![s(copy)]
    };
    // The page cache holds what fits either way; alternate, median of three.
    for round in 0..3 {
        let remove = |p: &Path| {
            let _ = std::fs::remove_dir_all(p);
            let _ = std::fs::remove_file(p);
        };
        remove(copy);
        let (t_copy, _) = timed(&[
            "sh",
            "-c",
            &format!("cp -r {} {} && sync {}", s(base), s(copy), synced.join(" ")),
        ])?;
        remove(copy);
        remove(merged);
        let (t_merge, r) = timed(&[
            &s(&wft),
            "merge",
            "--base",
            &s(base),
            "--adapter",
            &s(adapter),
            "--out",
            &s(merged),
            "--quiet",
        ])?;
        println!(
            "round {round}: merge {t_merge:.1} s, peak RSS {:.2} GB; copy + sync {t_copy:.1} s",
            r as f64 / 1e9
        );
        merges.push(t_merge);
        copies.push(t_copy);
        rss = rss.max(r);
    }
    let pairs = merges.iter().copied().zip(copies.iter().copied()).collect();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(Timings {
        merge: median(&mut merges),
        copy: median(&mut copies),
        pairs,
        rss,
    })
}

/// `cargo xtask scale --all-adapted [--gb N]`: one safetensors file in which
/// every tensor is adapted (4096×4096 weights, f32 and then bf16, about
/// `gb` GB each), merged against `cp` + `sync` of the same file.
fn all_adapted(gb: f64) -> Result {
    const SIDE: usize = 4096;
    run(cargo().args(["build", "--release", "-j2", "-p", "wft-cli"]))?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let date = crate::output(Command::new("date").args(["-u", "+%Y-%m-%d"]))?;
    let target = root().join("target");
    let fs = crate::output(Command::new("stat").args(["-f", "-c", "%T"]).arg(&target)).unwrap_or_default();
    let mut body = String::new();
    let _ = writeln!(
        body,
        "## Merging at the speed of a copy: every tensor adapted\n\n\
         Measured {} with `cargo xtask scale --all-adapted --gb {gb}` on this machine ({cpus} cores, \
         filesystem {}: `copy_file_range` shares extents on btrfs and XFS and copies the bytes elsewhere). One safetensors file of {SIDE}×{SIDE} weights, \
         every one adapted by a PEFT WaveFT folder (db1, n = 1000). `wft merge` copies the file with \
         `copy_file_range`, maps the copy and rewrites only the elements the atoms touch; the copy is \
         `cp` of the same file followed by `sync` of it (the merge fsyncs before its rename). Median \
         of three rounds.\n",
        date.trim(),
        fs.trim()
    );
    let _ = writeln!(
        body,
        "| dtype | file | `wft merge` | `cp` + `sync` | merge / copy | target |\n|---|---:|---:|---:|---:|---|"
    );
    let mut details = Vec::new();
    for float in [Float::F32, Float::Bf16] {
        let count = ((gb * 1e9) / (SIDE * SIDE * float.size()) as f64).ceil().max(1.0) as usize;
        let dir = root().join("target/scale-all").join(float.name());
        let base = dir.join("base.safetensors");
        let adapter = dir.join("adapter");
        let spec = format!("all-adapted {SIDE} {count} {} v1", float.name());
        let stamp = dir.join("spec");
        if std::fs::read_to_string(&stamp).ok().as_deref() != Some(spec.as_str()) {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let tensors: Vec<(String, Vec<usize>)> = (0..count)
                .map(|i| (format!("layers.{i}.proj.weight"), vec![SIDE, SIDE]))
                .collect();
            let mut rng = Rng(0x5eed_a11a_d0be_0001);
            write_file(&base, &tensors, float, &mut rng)?;
            let modules: Vec<String> = (0..count).map(|i| format!("layers.{i}.proj")).collect();
            write_waveft_adapter(&adapter, &["proj"], &modules, &mut rng)?;
            std::fs::write(&stamp, spec).map_err(io(&stamp))?;
        }
        let bytes = std::fs::metadata(&base).map_err(io(&base))?.len();
        let (merged, copy) = (dir.join("merged.safetensors"), dir.join("copy.safetensors"));
        let Timings {
            merge: t_merge,
            copy: t_copy,
            pairs,
            ..
        } = rounds(&base, &adapter, &merged, &copy)?;
        let merged_bytes = std::fs::metadata(&merged).map_err(io(&merged))?.len();
        let _ = std::fs::remove_file(&merged);
        if merged_bytes != bytes {
            return Err(format!("merged file has {merged_bytes} bytes, the base {bytes}"));
        }
        let _ = writeln!(
            body,
            "| {} | {:.2} GB, {count} tensors | {t_merge:.1} s | {t_copy:.1} s | **{:.2}×** | ≤ 1.25× |",
            float.name(),
            bytes as f64 / 1e9,
            t_merge / t_copy
        );
        let rounds: Vec<String> = pairs.iter().map(|(m, c)| format!("{m:.1} / {c:.1}")).collect();
        details.push(format!("{}: {}", float.name(), rounds.join(", ")));
    }
    let _ = writeln!(body, "\nEach round, merge / copy seconds: {}.", details.join("; "));
    write_section(&root().join("docs/PERFORMANCE.md"), "scale-all", &body)?;
    println!("{body}");
    Ok(())
}

/// `/usr/bin/time -v` of a command: (wall seconds, peak RSS bytes).
fn timed(cmd: &[&str]) -> Result<(f64, u64)> {
    let mut c = Command::new("/usr/bin/time");
    c.arg("-v").args(cmd).current_dir(root());
    println!("$ /usr/bin/time -v {}", cmd.join(" "));
    let started = Instant::now();
    let out = c
        .output()
        .map_err(|e| format!("/usr/bin/time: {e} (install GNU time: apt-get install time)"))?;
    let wall = started.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("`{}` failed:\n{err}", cmd.join(" ")));
    }
    let rss = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes): "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or("no peak RSS in /usr/bin/time's output")?;
    Ok((wall, rss * 1024))
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

pub(crate) fn scale(args: &[String]) -> Result {
    let gb: f64 = args
        .iter()
        .position(|a| a == "--gb")
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(8.0), |v| v.parse().map_err(|e| format!("--gb {v}: {e}")))?;
    // Layers of ~1.71 GB each on top of the 0.52 GB embedding.
    let layers = (((gb - 0.52) / 1.71).ceil() as usize).max(1);
    if args.iter().any(|a| a == "--all-adapted") {
        let given = args.iter().any(|a| a == "--gb");
        return all_adapted(if given { gb } else { 3.0 });
    }
    run(cargo().args(["build", "--release", "-j2", "-p", "wft-cli"]))?;
    let dir = root().join("target/scale");
    let (base, adapter) = generate(&dir, layers)?;
    let bytes = dir_bytes(&base);
    let largest = HIDDEN * MLP * 2;
    let merged = dir.join("merged");
    let copy = dir.join("copy");
    let Timings {
        merge: t_merge,
        copy: t_copy,
        pairs: rounds,
        rss,
    } = rounds(&base, &adapter, &merged, &copy)?;
    let merged_bytes = dir_bytes(&merged);
    let _ = std::fs::remove_dir_all(&merged);
    if merged_bytes != bytes {
        return Err(format!("merged checkpoint has {merged_bytes} bytes, the base {bytes}"));
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let date = crate::output(Command::new("date").args(["-u", "+%Y-%m-%d"]))?;
    let mut body = String::new();
    let _ = writeln!(
        body,
        "## Streaming merge of a multi-GB sharded checkpoint\n\n\
         Measured {} with `cargo xtask scale --gb {gb}` on this machine ({cpus} cores). \
         Synthetic Llama-3-70B-shaped checkpoint: {layers} layers plus a {VOCAB}×{HIDDEN} embedding, \
         random bf16, {:.2} GB in {} shards with an index. Adapter: PEFT WaveFT, db1, n = 1000 on \
         `q_proj`, `v_proj` and `down_proj` of every layer ({} merged weights). Largest tensor: \
         {HIDDEN}×{MLP} bf16 = {:.2} GB. Median of three rounds; the copy is `cp -r` of the same \
         folder followed by `sync` of its files (the merge fsyncs every shard before its rename).\n",
        date.trim(),
        bytes as f64 / 1e9,
        std::fs::read_dir(&base).map(|d| d.count() - 1).unwrap_or(0),
        3 * layers,
        largest as f64 / 1e9,
    );
    let _ = writeln!(body, "| measure | value | target |\n|---|---:|---|");
    let _ = writeln!(
        body,
        "| peak RSS of `wft merge` (/usr/bin/time -v) | {:.2} GB = **{:.2}× the largest tensor** | ≤ 3× |",
        rss as f64 / 1e9,
        rss as f64 / largest as f64
    );
    let _ = writeln!(
        body,
        "| `wft merge` wall time | {t_merge:.1} s ({:.2} GB/s) | |",
        bytes as f64 / t_merge / 1e9
    );
    let _ = writeln!(
        body,
        "| `cp -r` + `sync` wall time | {t_copy:.1} s ({:.2} GB/s) | |",
        bytes as f64 / t_copy / 1e9
    );
    let _ = writeln!(body, "| merge / copy | **{:.2}×** | ≤ 2× |", t_merge / t_copy);
    let rounds: Vec<String> = rounds.iter().map(|(m, c)| format!("{m:.1} / {c:.1}")).collect();
    let _ = writeln!(body, "\nEach round, merge / copy seconds: {}.", rounds.join(", "));
    write_section(&root().join("docs/PERFORMANCE.md"), "scale", &body)?;
    println!("{body}");
    Ok(())
}
