//! What the examples share: turning `run()`'s result into an exit status.

use std::process::ExitCode;

/// Print the error (with its `Display` text, which names files and tensors)
/// and fail, or succeed.
pub fn exit(result: Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
