//! With the `openblas` feature, link the system's OpenBLAS (found by
//! pkg-config; `apt install libopenblas-dev` on Debian and Ubuntu).

fn main() {
    #[cfg(feature = "openblas")]
    if let Err(e) = pkg_config::probe_library("openblas") {
        panic!("the `openblas` feature needs the system's OpenBLAS (apt install libopenblas-dev): {e}");
    }
}
