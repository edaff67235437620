//! Tokenization as open_clip's HFTokenizer does it for BiomedCLIP: clean the text
//! (`text_clean::clean`), then the `tokenizers` crate with the model's `tokenizer.json`,
//! `[CLS] ... [SEP]`, truncated to the context length and *not* padded (padding is the batcher's
//! job, with an attention mask).

use crate::text_clean;
use std::fmt;
use std::path::Path;
use tokenizers::{Tokenizer, TruncationParams};

#[derive(Debug, Clone, PartialEq)]
pub enum TextError {
    Empty,
    Tokenizer(String),
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::Empty => write!(f, "text is empty after cleaning (whitespace only or empty)"),
            TextError::Tokenizer(e) => write!(f, "tokenizer error: {e}"),
        }
    }
}

impl std::error::Error for TextError {}

pub struct TextTokenizer {
    inner: Tokenizer,
    context_length: usize,
}

impl TextTokenizer {
    pub fn from_file(path: &Path, context_length: usize) -> Result<Self, TextError> {
        let inner = Tokenizer::from_file(path).map_err(|e| TextError::Tokenizer(format!("{}: {e}", path.display())))?;
        Self::configure(inner, context_length)
    }

    pub fn from_bytes(json: &[u8], context_length: usize) -> Result<Self, TextError> {
        let inner = Tokenizer::from_bytes(json).map_err(|e| TextError::Tokenizer(e.to_string()))?;
        Self::configure(inner, context_length)
    }

    fn configure(mut inner: Tokenizer, context_length: usize) -> Result<Self, TextError> {
        // The shipped tokenizer.json pads to 256; padding is done per batch instead.
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams { max_length: context_length, ..Default::default() }))
            .map_err(|e| TextError::Tokenizer(e.to_string()))?;
        Ok(TextTokenizer { inner, context_length })
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Token ids of `text` after open_clip's cleaning.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TextError> {
        let cleaned = text_clean::clean(text);
        if cleaned.is_empty() {
            return Err(TextError::Empty);
        }
        self.encode_cleaned(&cleaned)
    }

    /// Token ids of already-cleaned text.
    pub fn encode_cleaned(&self, cleaned: &str) -> Result<Vec<u32>, TextError> {
        Ok(self.encode_cleaned_reporting(cleaned)?.0)
    }

    /// Token ids of `text`, and whether the context length cut it (open_clip cuts silently).
    pub fn encode_reporting(&self, text: &str) -> Result<(Vec<u32>, bool), TextError> {
        let cleaned = text_clean::clean(text);
        if cleaned.is_empty() {
            return Err(TextError::Empty);
        }
        self.encode_cleaned_reporting(&cleaned)
    }

    fn encode_cleaned_reporting(&self, cleaned: &str) -> Result<(Vec<u32>, bool), TextError> {
        let enc = self.inner.encode(cleaned, true).map_err(|e| TextError::Tokenizer(e.to_string()))?;
        Ok((enc.get_ids().to_vec(), !enc.get_overflowing().is_empty()))
    }
}
