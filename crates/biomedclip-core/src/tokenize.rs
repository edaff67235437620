//! Tokenization as open_clip's HFTokenizer does it for BiomedCLIP: clean the text
//! (`text_clean::clean`), then the `tokenizers` crate with the model's `tokenizer.json`,
//! `[CLS] ... [SEP]`, truncated to the context length and *not* padded (padding is the batcher's
//! job, with an attention mask).
//!
//! Only the first `context_length - 2` tokens of a text are kept, so a long text is cleaned and
//! tokenized in pieces until they are found ([`TextTokenizer::encode_watched`]): a 9 MB text took
//! 6.4 s and about 16 bytes of the `tokenizers` crate's alignment data per byte when tokenized
//! whole. The pieces are cut before ASCII whitespace, where neither the cleaning
//! ([`text_clean::PieceCleaner`]) nor a BERT tokenizer (per-character normalizer, a pre-tokenizer
//! that splits words at whitespace, WordPiece within a word) looks across, so the ids are the
//! whole text's; tests/tokenize_long_texts.rs checks that against HF tokenizers in Python.

use crate::text_clean::{self, PieceCleaner};
use std::fmt;
use std::path::Path;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{Tokenizer, TruncationParams};

/// A long text is cleaned and tokenized in pieces of at least this many bytes.
pub const PIECE_BYTES: usize = 2048;

/// The most bytes of a text read as one piece: a run this long without an ASCII space, tab or
/// line feed, before the context is full, is refused (the `tokenizers` crate keeps about 16 bytes
/// per byte of a piece while tokenizing it). With a tokenizer other than BERT's, the most bytes
/// of a whole text.
pub const MAX_PIECE_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
pub enum TextError {
    Empty,
    Tokenizer(String),
    /// More than `limit` bytes would have to be tokenized at once: a run without whitespace, or
    /// the `whole` text (a tokenizer that is not run piece by piece).
    TooLong { limit: usize, whole: bool },
    /// The caller's interrupt flag was set between two pieces.
    Interrupted,
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::Empty => write!(f, "text is empty after cleaning (whitespace only or empty)"),
            TextError::Tokenizer(e) => write!(f, "tokenizer error: {e}"),
            TextError::TooLong { limit, whole: false } => write!(
                f,
                "text has a run of more than {} without a space, tab or line feed before the model's context is full (the most tokenized at once)",
                size(*limit)
            ),
            TextError::TooLong { limit, whole: true } => write!(f, "text is longer than {} (the most this tokenizer reads)", size(*limit)),
            TextError::Interrupted => write!(f, "tokenization interrupted"),
        }
    }
}

impl std::error::Error for TextError {}

pub struct TextTokenizer {
    inner: Tokenizer,
    context_length: usize,
    /// `[CLS]` and `[SEP]` when the tokenizer is a BERT pipeline that may be run piece by piece.
    piecewise: Option<(u32, u32)>,
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
        let piecewise = bert_specials(&inner, context_length);
        Ok(TextTokenizer { inner, context_length, piecewise })
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Token ids of `text` after open_clip's cleaning.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TextError> {
        Ok(self.encode_reporting(text)?.0)
    }

    /// Token ids of `text`, and whether the context length cut it (open_clip cuts silently).
    pub fn encode_reporting(&self, text: &str) -> Result<(Vec<u32>, bool), TextError> {
        self.encode_watched(text, &|| false)
    }

    /// [`encode_reporting`](Self::encode_reporting), returning [`TextError::Interrupted`] when
    /// `interrupted` says so between two pieces of a long text.
    pub fn encode_watched(&self, text: &str, interrupted: &dyn Fn() -> bool) -> Result<(Vec<u32>, bool), TextError> {
        self.encode_in_pieces(text, PIECE_BYTES, MAX_PIECE_BYTES, interrupted)
    }

    /// The piecewise encoding with other piece sizes (tests cut every caption at every space).
    pub fn encode_in_pieces(&self, text: &str, piece: usize, max_piece: usize, interrupted: &dyn Fn() -> bool) -> Result<(Vec<u32>, bool), TextError> {
        if interrupted() {
            return Err(TextError::Interrupted);
        }
        let Some((cls, sep)) = self.piecewise else {
            if text.len() > max_piece {
                return Err(TextError::TooLong { limit: max_piece, whole: true });
            }
            return self.encode_cleaned_reporting(&nonempty(text_clean::clean(text))?);
        };
        let (piece, max_piece) = (piece.max(1), max_piece.max(piece.max(1)));
        let budget = self.context_length - 2;
        let mut cleaner = PieceCleaner::new(text);
        let mut content: Vec<u32> = Vec::new();
        let mut any_text = false;
        let mut start = 0;
        // A piece holds at most `context_length` tokens (the truncation): more than the budget.
        while start < text.len() && content.len() <= budget {
            if start > 0 && interrupted() {
                return Err(TextError::Interrupted);
            }
            let end = next_cut(text.as_bytes(), start, piece, max_piece)?;
            let cleaned = cleaner.clean(start, end);
            if !cleaned.is_empty() {
                any_text = true;
                let enc = self.inner.encode(cleaned.as_str(), false).map_err(|e| TextError::Tokenizer(e.to_string()))?;
                content.extend_from_slice(enc.get_ids());
            }
            start = end;
        }
        if !any_text {
            return Err(TextError::Empty);
        }
        let cut = content.len() > budget;
        content.truncate(budget);
        let mut ids = Vec::with_capacity(content.len() + 2);
        ids.push(cls);
        ids.extend(content);
        ids.push(sep);
        Ok((ids, cut))
    }

    fn encode_cleaned_reporting(&self, cleaned: &str) -> Result<(Vec<u32>, bool), TextError> {
        let enc = self.inner.encode(cleaned, true).map_err(|e| TextError::Tokenizer(e.to_string()))?;
        Ok((enc.get_ids().to_vec(), !enc.get_overflowing().is_empty()))
    }
}

fn size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

fn nonempty(cleaned: String) -> Result<String, TextError> {
    if cleaned.is_empty() {
        Err(TextError::Empty)
    } else {
        Ok(cleaned)
    }
}

/// The end of the piece that starts at `start`: the first cut at least `piece` bytes on, or the
/// end of the text; an error when none comes within `max_piece` bytes.
fn next_cut(text: &[u8], start: usize, piece: usize, max_piece: usize) -> Result<usize, TextError> {
    if text.len() - start <= piece {
        return Ok(text.len());
    }
    let limit = text.len().min(start + max_piece);
    match (start + piece..limit).find(|&i| text_clean::is_piece_cut(text, i)) {
        Some(cut) => Ok(cut),
        None if limit == text.len() => Ok(text.len()),
        None => Err(TextError::TooLong { limit: max_piece, whole: false }),
    }
}

/// `[CLS]` and `[SEP]` when `inner` is a BERT pipeline whose tokens of a text cut before ASCII
/// whitespace are the tokens of the parts: BERT's normalizer (per character), BERT's
/// pre-tokenizer (words split at whitespace), WordPiece, no added token holding whitespace, and
/// a post-processor that only puts one token before and one after (checked on a probe). Any
/// other tokenizer reads each text whole.
fn bert_specials(inner: &Tokenizer, context_length: usize) -> Option<(u32, u32)> {
    let bert = matches!(inner.get_normalizer(), Some(NormalizerWrapper::BertNormalizer(_)))
        && matches!(inner.get_pre_tokenizer(), Some(PreTokenizerWrapper::BertPreTokenizer(_)))
        && matches!(inner.get_model(), ModelWrapper::WordPiece(_))
        && inner.get_added_tokens_decoder().values().all(|t| !t.content.contains([' ', '\t', '\n']))
        && context_length > 2;
    if !bert {
        return None;
    }
    let ids = |text: &str, specials: bool| inner.encode(text, specials).ok().map(|e| e.get_ids().to_vec());
    let (empty, probe, probe_bare) = (ids("", true)?, ids("chest x-ray", true)?, ids("chest x-ray", false)?);
    let [cls, sep] = empty[..] else { return None };
    (probe == [&[cls][..], &probe_bare, &[sep]].concat() && !probe_bare.is_empty()).then_some((cls, sep))
}
