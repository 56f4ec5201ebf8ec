//! What the harnesses share. They are programs `cargo xtask` runs and
//! whose output it parses; a harness that cannot do its work exits
//! non-zero with the reason, never prints a timing for a failed call.

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
