//! Many generation requests, each naming its adapter, decoded together in
//! mixed-adapter batches (`wft-train generate --requests`).

use std::path::Path;

use serde::Deserialize;
use wft_adapter::AdapterModel;
use wft_candle::AdapterMix;

use super::finetune::{jsonl_lines, line_error};
use super::{Decoder, Stop};
use crate::{Error, Result};

/// Rows decoded together at most (longer request files go in several batches).
pub const BATCH_ROWS: usize = 16;

/// One request line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The prompt.
    pub prompt: String,
    /// The adapter's name, or none for the frozen model.
    #[serde(default)]
    pub adapter: Option<String>,
    /// Wrap the prompt in the chat template as one user turn.
    #[serde(default)]
    pub chat: bool,
    /// Most new tokens (the command's `--max-new-tokens` when absent).
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
}

/// One request's answer: what `wft-train generate --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Generated {
    /// The prompt's token ids.
    pub prompt_ids: Vec<u32>,
    /// The new token ids (EOS excluded).
    pub ids: Vec<u32>,
    /// The new tokens' text.
    pub text: String,
}

/// The requests of a JSONL file, blank lines skipped.
///
/// # Errors
/// [`Error::Data`] naming the file and line for a line that is not a
/// request (bad JSON, a wrong type, an unknown field, `max_new_tokens` 0).
pub fn read_requests(path: &Path) -> Result<Vec<Request>> {
    let mut out = Vec::new();
    for (n, r) in jsonl_lines::<Request>(path)? {
        if r.max_new_tokens == Some(0) {
            return Err(line_error(path, n, "max_new_tokens must be at least 1".into()));
        }
        out.push(r);
    }
    Ok(out)
}

/// Greedy answers to `requests`, in order: up to [`BATCH_ROWS`] at a time in
/// one mixed-adapter batch, each row with the adapter it names among
/// `adapters` (by name).
///
/// # Errors
/// [`Error::Usage`] for a request naming an adapter not given (with its
/// number), and generation's errors.
pub fn answer(
    decoder: &Decoder,
    adapters: &[(String, AdapterModel)],
    requests: &[Request],
    default_max: usize,
) -> Result<Vec<Generated>> {
    let mut routes = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        routes.push(match &r.adapter {
            None => None,
            Some(name) => Some(adapters.iter().position(|(n, _)| n == name).ok_or_else(|| {
                Error::Usage(format!(
                    "request {}: no adapter named {name:?} (given: {:?})",
                    i + 1,
                    adapters.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
                ))
            })?),
        });
    }
    let prompts = requests
        .iter()
        .map(|r| decoder.prompt_ids(&r.prompt, r.chat))
        .collect::<Result<Vec<_>>>()?;
    let models: Vec<&AdapterModel> = adapters.iter().map(|(_, m)| m).collect();
    let mut out = Vec::with_capacity(requests.len());
    for start in (0..requests.len()).step_by(BATCH_ROWS) {
        let end = (start + BATCH_ROWS).min(requests.len());
        let budgets: Vec<usize> = requests[start..end]
            .iter()
            .map(|r| r.max_new_tokens.unwrap_or(default_max))
            .collect();
        let mix = AdapterMix::new(models.clone(), routes[start..end].to_vec())?;
        let ids = decoder.generate_rows(&prompts[start..end], &budgets, Stop::AtEos, Some(&mix))?;
        for (prompt_ids, ids) in prompts[start..end].iter().zip(ids) {
            let text = decoder.tokenizer.decode(&ids)?;
            out.push(Generated {
                prompt_ids: prompt_ids.clone(),
                ids,
                text,
            });
        }
    }
    Ok(out)
}
