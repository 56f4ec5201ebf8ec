//! Many generation requests, each naming its adapter, decoded together in
//! mixed-adapter batches (`wft-train generate --requests`).

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use wft_adapter::{AdapterBank, AdapterModel};
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
/// one mixed-adapter batch, each row with the adapter it names in `bank`.
/// Every name is checked before anything is decoded; each batch then takes
/// only the adapters its rows name from the bank (loaded on first use,
/// kept within the bank's budget), so a request file may name more
/// adapters than the budget holds at once.
///
/// # Errors
/// [`Error::Usage`] for a request naming an adapter the bank does not have
/// (with its number), the bank's errors (a folder that does not load or
/// fit the base, an adapter larger than the whole budget), and
/// generation's errors.
pub fn answer(
    decoder: &Decoder,
    bank: &AdapterBank,
    requests: &[Request],
    default_max: usize,
) -> Result<Vec<Generated>> {
    for (i, r) in requests.iter().enumerate() {
        if let Some(name) = r.adapter.as_deref().filter(|n| !bank.contains(n)) {
            return Err(Error::Usage(format!(
                "request {}: no adapter named {name:?} (given: {:?})",
                i + 1,
                bank.report().registered
            )));
        }
    }
    let prompts = requests
        .iter()
        .map(|r| decoder.prompt_ids(&r.prompt, r.chat))
        .collect::<Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(requests.len());
    for (batch, prompts) in requests.chunks(BATCH_ROWS).zip(prompts.chunks(BATCH_ROWS)) {
        // This batch's adapters, each once, and every row's index into them.
        let mut names: Vec<&str> = Vec::new();
        let routes: Vec<Option<usize>> = batch
            .iter()
            .map(|r| {
                r.adapter.as_deref().map(|name| {
                    names.iter().position(|n| *n == name).unwrap_or_else(|| {
                        names.push(name);
                        names.len() - 1
                    })
                })
            })
            .collect();
        let held: Vec<Arc<AdapterModel>> = names.iter().map(|n| bank.get(n)).collect::<wft_adapter::Result<_>>()?;
        let mix = AdapterMix::new(held.iter().map(Arc::as_ref).collect(), routes)?;
        let budgets: Vec<usize> = batch.iter().map(|r| r.max_new_tokens.unwrap_or(default_max)).collect();
        let ids = decoder.generate_rows(prompts, &budgets, Stop::AtEos, Some(&mix))?;
        for (prompt_ids, ids) in prompts.iter().zip(ids) {
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
