//! With no adapter to be had, `Context::new` returns a typed error. Its own
//! test binary: it changes the process environment.
#![allow(clippy::unwrap_used)]

#[test]
#[cfg(target_os = "linux")]
fn no_adapter_is_a_typed_error() {
    // Metal does not exist on Linux, so this backend set has no adapter.
    // SAFETY: the only test in this binary; no other thread reads the
    // environment concurrently.
    unsafe { std::env::set_var("WGPU_BACKEND", "metal") };
    let err = dwt_gpu::Context::new().unwrap_err();
    assert!(matches!(err, dwt_gpu::Error::NoAdapter { .. }), "{err}");
    assert!(err.to_string().contains("WGPU_BACKEND"), "{err}");
}
