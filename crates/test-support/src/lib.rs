//! What the workspace's tests, benches and harnesses share, so that each
//! rule is written once:
//!
//! * [`skip_or_fail`]: a missing GPU adapter, model or namespace is a
//!   failure under `CI=true` and a loud `SKIPPED` line otherwise (never a
//!   silent pass);
//! * [`fetched`]: where a `cargo xtask fetch-*` model or data set lies,
//!   or the skip (the failure under CI) when it is not there;
//! * [`XorShift`]: reproducible values from a seed, so a failing case
//!   reproduces;
//! * [`rel_err`]: `max |a − b| / max |b|`;
//! * [`read_f32`]: one `f32` tensor of a safetensors file;
//! * [`exit`]: an example's or harness's result as its exit status, the
//!   error printed with its `Display` text.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Print the error (its `Display` text names files and tensors) and fail,
/// or succeed.
pub fn exit(result: Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Whether this run is CI's (`CI=true`), where nothing may be skipped.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `test` cannot run here because of `reason`: panic under `CI=true`;
/// otherwise write `SKIPPED test: reason` to the real stderr (past the test
/// harness's capture) and return, so the caller returns too.
///
/// # Panics
/// Under `CI=true`, always.
pub fn skip_or_fail(test: &str, reason: impl std::fmt::Display) {
    assert!(!ci(), "CI=true, so {test} may not be skipped: {reason}");
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// What `cargo xtask <fetch>` put at `default` (a path below the
/// workspace root, `.cache/…`), or at the path in the environment variable
/// `var`: that path when `marker` exists inside it (`""`: the path itself);
/// otherwise [`skip_or_fail`] for `test`, and `None`.
///
/// # Panics
/// Under `CI=true`, when it is missing.
pub fn fetched(test: &str, var: &str, default: &str, marker: &str, fetch: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(default));
    // `path.join("")` would add a trailing slash, which a file fails.
    let wanted = if marker.is_empty() {
        path.clone()
    } else {
        path.join(marker)
    };
    if wanted.exists() {
        return Some(path);
    }
    skip_or_fail(
        test,
        format!(
            "{}: missing (run `cargo xtask {fetch}`, or set {var})",
            wanted.display()
        ),
    );
    None
}

/// Marsaglia's xorshift64 (13, 7, 17): cheap, reproducible, not for
/// statistics.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from a raw state (0 is replaced by 1: xorshift's one
    /// fixed point).
    pub fn new(state: u64) -> Self {
        XorShift(state.max(1))
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut s = self.0;
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        self.0 = s;
        s
    }

    /// The next value in `[-1, 1)`, from the top 24 bits (exact in `f32`).
    pub fn next_signed(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// `max |a − b| / max |b|` (the denominator at least `f32::MIN_POSITIVE`).
pub fn rel_err<'a>(a: impl IntoIterator<Item = &'a f32>, b: impl IntoIterator<Item = &'a f32> + Clone) -> f32 {
    let scale = b
        .clone()
        .into_iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    a.into_iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// The `f32` tensor `name` of the safetensors file at `path`, flattened.
///
/// # Panics
/// When the file cannot be read or parsed, lacks `name`, or `name` is not
/// `F32`: in a test, each of those is the test's failure.
pub fn read_f32(path: &Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("{}: {name}: {e}", path.display()));
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{}: {name}", path.display());
    t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marsaglia's xorshift64 with shifts (13, 7, 17) from his example
    /// state 88172645463325252 ("Xorshift RNGs", J. Stat. Softw. 8(14),
    /// 2003): its first three outputs.
    #[test]
    fn xorshift_matches_marsaglia() {
        let mut g = XorShift::new(88_172_645_463_325_252);
        let got = [g.next_u64(), g.next_u64(), g.next_u64()];
        assert_eq!(
            got,
            [
                8_748_534_153_485_358_512,
                3_040_900_993_826_735_515,
                3_453_997_556_048_239_312
            ]
        );
        let v = XorShift::new(3).next_signed();
        assert!((-1.0..1.0).contains(&v));
    }

    #[test]
    fn rel_err_is_relative_to_the_reference() {
        assert_eq!(rel_err(&[1.0, 2.5], &[1.0, 2.0]), 0.25);
        assert_eq!(rel_err(&[0.0], &[0.0]), 0.0);
    }
}
