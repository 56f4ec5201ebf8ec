//! Chat templates: the Jinja template a model file carries
//! (`tokenizer.chat_template`), rendered with minijinja as transformers
//! renders it, with Python's string methods (`.strip()`, `.startswith()`,
//! …), `raise_exception`, and `bos_token`/`eos_token` in scope.

use minijinja::{Environment, ErrorKind, context};
use serde::{Deserialize, Serialize};

use wft_candle::gguf::Gguf;

use super::LlmTokenizer;
use crate::{Error, Result};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

const NAME: &str = "chat";

impl ChatTemplate {
    /// Compile `source`, with the model's BOS and EOS spellings.
    ///
    /// # Errors
    /// [`Error::Template`] when the template does not parse.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        // transformers renders with trim_blocks and lstrip_blocks.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| Error::Template(e.to_string()))?;
        Ok(ChatTemplate {
            env,
            bos: bos.into(),
            eos: eos.into(),
        })
    }

    /// The template a GGUF file carries (`tokenizer.chat_template`), with
    /// the BOS and EOS spellings of its `tokenizer`; `None` when it has none.
    ///
    /// # Errors
    /// [`Error::Template`] when the template does not parse.
    pub fn from_gguf(gguf: &Gguf, tokenizer: &LlmTokenizer) -> Result<Option<Self>> {
        let Ok(source) = gguf.string("tokenizer.chat_template") else {
            return Ok(None);
        };
        let spell = |id: Option<u32>| id.and_then(|i| tokenizer.token(i)).unwrap_or("").to_string();
        Ok(Some(ChatTemplate::new(
            source,
            &spell(tokenizer.bos),
            &spell(tokenizer.eos),
        )?))
    }

    /// The prompt text for `messages`, ending with the assistant's turn
    /// opened when `add_generation_prompt`.
    ///
    /// # Errors
    /// [`Error::Template`] when rendering fails (or the template raises).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .env
            .get_template(NAME)
            .map_err(|e| Error::Template(e.to_string()))?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos,
                eos_token => &self.eos,
            })
            .map_err(|e| Error::Template(e.to_string()))
    }
}
