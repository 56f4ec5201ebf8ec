//! The sentencepiece (`tokenizer.ggml.model = llama`, Llama 2 / Mistral)
//! tokenizer path against transformers' GGUF tokenizer, on the tiny
//! vocabulary `scripts/make_spm_tokenizer_references.py` writes: ids of texts
//! with Unicode (byte fallback), code, whitespace runs, control and
//! user-defined tokens; their decoding; chat-templated prompts.

use std::path::PathBuf;

use wft_candle::gguf::Gguf;
use wft_train::llm::{ChatTemplate, LlmTokenizer, Message};

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spm")
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .map(|a| a.iter().filter_map(|x| x.as_u64().map(|n| n as u32)).collect())
        .unwrap_or_default()
}

#[test]
fn sentencepiece_vocabularies_tokenize_as_transformers() -> R {
    let gguf = Gguf::open(fixtures().join("tiny-spm.gguf"))?;
    let tokenizer = LlmTokenizer::from_gguf(&gguf)?;
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokens.json"))?)?;
    let texts = reference["texts"].as_array().ok_or("texts")?;
    assert!(texts.len() >= 10);
    let mut byte_fallbacks = 0;
    for t in texts {
        let text = t["text"].as_str().ok_or("text")?;
        let want = ids(&t["ids"]);
        assert!(!want.is_empty(), "{text:?}: transformers adds BOS");
        let got = tokenizer.encode(text)?;
        assert_eq!(got, want, "ids of {text:?}");
        assert_eq!(
            tokenizer.decode(&got)?,
            t["decoded"].as_str().ok_or("decoded")?,
            "decoding {text:?}"
        );
        byte_fallbacks += got
            .iter()
            .filter(|&&i| tokenizer.token(i).is_some_and(|s| s.starts_with("<0x")))
            .count();
    }
    assert!(
        byte_fallbacks > 10,
        "the texts exercise byte fallback ({byte_fallbacks} byte tokens)"
    );
    let template = ChatTemplate::from_gguf(&gguf, &tokenizer)?.ok_or("the file has a chat template")?;
    for c in reference["chats"].as_array().ok_or("chats")? {
        let messages: Vec<Message> = serde_json::from_value(c["messages"].clone())?;
        let text = template.render(&messages, true)?;
        assert_eq!(text, c["text"].as_str().ok_or("text")?);
        assert_eq!(tokenizer.encode_rendered(&text)?, ids(&c["ids"]), "{text:?}");
    }
    Ok(())
}
