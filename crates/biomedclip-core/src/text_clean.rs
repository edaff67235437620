//! open_clip's text cleaning for HFTokenizer (`clean="whitespace"`):
//! `" ".join(html.unescape(html.unescape(ftfy.fix_text(text))).split())`.
//!
//! * `ftfy.fix_text` (ftfy 6.3, default configuration) is reproduced for everything except its
//!   mojibake repair (`fix_encoding`: re-decoding text that was decoded with the wrong codec),
//!   which rests on large statistical tables. Covered: HTML entity decoding (when the line has no
//!   `<`), C1 controls as Windows-1252, Latin ligatures, full-width and half-width forms, curly
//!   quotes, line breaks, ANSI terminal escapes, control characters and NFC, applied per line and
//!   repeated until nothing changes, as ftfy does.
//! * `html.unescape` follows CPython's rules, with CPython's own tables (`text_tables.rs`).
//! * Whitespace is CPython's `str.isspace()` set, which includes U+001C..U+001F.

use crate::text_tables::{HTML5_ENTITIES, INVALID_CHARREFS, INVALID_CODEPOINTS, PY_WHITESPACE};
use std::collections::HashMap;
use std::sync::OnceLock;
use unicode_normalization::UnicodeNormalization;

/// The full cleaning open_clip applies before tokenization.
pub fn clean(text: &str) -> String {
    PieceCleaner::new(text).clean(0, text.len())
}

/// Whether a text may be cut just before byte `at` for [`PieceCleaner`]: an ASCII space, tab or
/// line feed.
pub fn is_piece_cut(text: &[u8], at: usize) -> bool {
    matches!(text.get(at), Some(b' ' | b'\t' | b'\n'))
}

/// Cleans a text piece by piece, each piece cut just before an ASCII space, tab or line feed
/// ([`is_piece_cut`]). The non-empty cleanings of consecutive pieces, joined by single spaces,
/// are exactly [`clean`] of the whole text, because no step looks across such a cut: HTML
/// entities (CPython's and ftfy's), terminal escapes and "\r\n" never hold one of those
/// characters, none of them takes part in a canonical composition, and the final whitespace
/// collapse makes them all one separator. The one rule that does look across is ftfy's: a line
/// holding '<' keeps its entities (and so do the lines after it). That is decided on the whole
/// line of the whole text when the line begins, so a piece ending mid-line sees the '<' that
/// comes after it.
pub struct PieceCleaner<'a> {
    text: &'a str,
    /// ftfy's `unescape_html = "auto"`: off from the first line holding '<'.
    unescape: bool,
    /// End (after its '\n') of the line being cleaned.
    line_end: usize,
}

impl<'a> PieceCleaner<'a> {
    pub fn new(text: &'a str) -> Self {
        PieceCleaner { text, unescape: true, line_end: 0 }
    }

    /// The cleaning of `text[start..end]`. Pieces are cleaned in order from 0, each starting
    /// where the last ended, and each but the last ends at a cut ([`is_piece_cut`]).
    pub fn clean(&mut self, start: usize, end: usize) -> String {
        let mut fixed = String::with_capacity(end - start);
        let mut at = start;
        // ftfy.fix_text without mojibake repair: line by line.
        for segment in self.text[start..end].split_inclusive('\n') {
            if at >= self.line_end {
                let rest = &self.text[at..];
                self.line_end = at + rest.find('\n').map_or(rest.len(), |i| i + 1);
                if self.text[at..self.line_end].contains('<') {
                    self.unescape = false;
                }
            }
            fixed.push_str(&ftfy_fix_segment(segment, self.unescape));
            at += segment.len();
        }
        collapse_whitespace(&html_unescape(&html_unescape(&fixed)))
    }
}

fn html5_lookup(name: &str) -> Option<&'static str> {
    HTML5_ENTITIES.binary_search_by(|(k, _)| (*k).cmp(name)).ok().map(|i| HTML5_ENTITIES[i].1)
}

/// Python's `str.isspace()`.
pub fn is_py_space(c: char) -> bool {
    PY_WHITESPACE.binary_search(&(c as u32)).is_ok()
}

/// `" ".join(text.split())`
pub fn collapse_whitespace(text: &str) -> String {
    text.split(is_py_space).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

fn numeric_charref(digits: &str, radix: u32) -> String {
    // Saturate: any value beyond U+10FFFF gets the same replacement.
    let num = u32::from_str_radix(digits, radix).unwrap_or(u32::MAX);
    if let Ok(i) = INVALID_CHARREFS.binary_search_by_key(&num, |(k, _)| *k) {
        return INVALID_CHARREFS[i].1.to_string();
    }
    if (0xD800..=0xDFFF).contains(&num) || num > 0x10FFFF {
        return "\u{FFFD}".to_string();
    }
    if INVALID_CODEPOINTS.binary_search(&num).is_ok() {
        return String::new();
    }
    char::from_u32(num).map(String::from).unwrap_or_else(|| "\u{FFFD}".to_string())
}

/// CPython's `html.unescape`.
pub fn html_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        match charref(after) {
            Some((consumed, replacement)) => {
                out.push_str(&replacement);
                rest = &after[consumed..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Matches CPython's `&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)` after the `&`.
/// Returns the bytes consumed and the replacement.
fn charref(after: &str) -> Option<(usize, String)> {
    let bytes = after.as_bytes();
    let semicolon = |end: usize| if bytes.get(end) == Some(&b';') { end + 1 } else { end };
    if bytes.first() == Some(&b'#') {
        let dec = bytes[1..].iter().take_while(|b| b.is_ascii_digit()).count();
        if dec > 0 {
            let end = semicolon(1 + dec);
            return Some((end, numeric_charref(&after[1..1 + dec], 10)));
        }
        if matches!(bytes.get(1), Some(b'x' | b'X')) {
            let hex = bytes[2..].iter().take_while(|b| b.is_ascii_hexdigit()).count();
            if hex > 0 {
                let end = semicolon(2 + hex);
                return Some((end, numeric_charref(&after[2..2 + hex], 16)));
            }
        }
        return None;
    }
    let name_end = after
        .char_indices()
        .take_while(|&(_, c)| !matches!(c, '\t' | '\n' | '\x0c' | ' ' | '<' | '&' | '#' | ';'))
        .take(32)
        .last()
        .map(|(i, c)| i + c.len_utf8())?;
    let end = semicolon(name_end);
    let name = &after[..end];
    if let Some(v) = html5_lookup(name) {
        return Some((end, v.to_string()));
    }
    // The longest prefix (at least 2 characters) that is a known name, e.g. "&ampx" -> "&x".
    let boundaries: Vec<usize> = name.char_indices().map(|(i, _)| i).skip(2).collect();
    for &cut in boundaries.iter().rev() {
        if let Some(v) = html5_lookup(&name[..cut]) {
            return Some((end, format!("{v}{}", &name[cut..])));
        }
    }
    None
}

/// ftfy's entity table: HTML5 names ending in ';', plus all-caps forms of lowercase names when
/// the all-caps form is not itself an entity (`&EACUTE;` -> `É`).
fn ftfy_entities() -> &'static HashMap<String, String> {
    static TABLE: OnceLock<HashMap<String, String>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut map = HashMap::new();
        for (name, value) in HTML5_ENTITIES.iter() {
            if !name.ends_with(';') {
                continue;
            }
            map.insert(format!("&{name}"), value.to_string());
            if *name == name.to_lowercase() {
                let upper = format!("&{}", name.to_uppercase());
                if html_unescape(&upper) == upper {
                    map.insert(upper, value.to_uppercase());
                }
            }
        }
        map
    })
}

/// ftfy's `unescape_html`: only `&#?[0-9A-Za-z]{1,24};` forms, and only unambiguous ones.
fn ftfy_unescape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let b = after.as_bytes();
        let start = usize::from(b.first() == Some(&b'#'));
        let run = b[start..].iter().take_while(|c| c.is_ascii_alphanumeric()).count();
        if (1..=24).contains(&run) && b.get(start + run) == Some(&b';') {
            let entity = &rest[pos..pos + 1 + start + run + 1];
            let replacement = if let Some(v) = ftfy_entities().get(entity) {
                v.clone()
            } else if start == 1 {
                let u = html_unescape(entity);
                if u.contains(';') {
                    entity.to_string()
                } else {
                    u
                }
            } else {
                entity.to_string()
            };
            out.push_str(&replacement);
            rest = &rest[pos + entity.len()..];
        } else {
            out.push('&');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn windows_1252(c: char) -> char {
    // The C1 range read as Windows-1252; its five undefined bytes stay as they are ("sloppy").
    let code = c as u32;
    match INVALID_CHARREFS.binary_search_by_key(&code, |(k, _)| *k) {
        Ok(i) if (0x80..=0x9F).contains(&code) => INVALID_CHARREFS[i].1.chars().next().unwrap_or(c),
        _ => c,
    }
}

fn ligature(c: char) -> Option<&'static str> {
    Some(match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "ʼn",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        _ => return None,
    })
}

fn is_control_to_remove(c: char) -> bool {
    matches!(c as u32, 0x00..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0x206A..=0x206F | 0xFEFF | 0xFFF9..=0xFFFC)
}

/// One round of ftfy's per-character fixes, after entity decoding.
fn ftfy_char_fixes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let c = if ('\u{80}'..='\u{9F}').contains(&c) { windows_1252(c) } else { c };
        if let Some(l) = ligature(c) {
            out.push_str(l);
        } else if c == '\u{3000}' {
            out.push(' ');
        } else if ('\u{FF01}'..='\u{FFEF}').contains(&c) {
            // Full-width and half-width forms: their NFKC form, where one exists.
            out.extend(c.to_string().nfkc());
        } else {
            out.push(c);
        }
    }
    // Curly quotes.
    let out: String = out
        .chars()
        .map(|c| match c {
            '\u{02BC}' | '\u{2018}'..='\u{201B}' => '\'',
            '\u{201C}'..='\u{201F}' => '"',
            c => c,
        })
        .collect();
    // Line breaks: "\r\n" first, then the single-character breaks.
    let out = out.replace("\r\n", "\n");
    let out: String = out
        .chars()
        .map(|c| if matches!(c, '\r' | '\u{2028}' | '\u{2029}' | '\u{85}') { '\n' } else { c })
        .collect();
    let out = remove_terminal_escapes(&out);
    let out: String = out.chars().filter(|&c| !is_control_to_remove(c)).collect();
    out.nfc().collect()
}

/// Removes `ESC [ (digits|;)* letter`.
fn remove_terminal_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("\x1b[") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let params = after.bytes().take_while(|b| b.is_ascii_digit() || *b == b';').count();
        match after.as_bytes().get(params) {
            Some(b) if b.is_ascii_alphabetic() => rest = &after[params + 1..],
            _ => {
                out.push_str("\x1b[");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn ftfy_fix_segment(segment: &str, unescape: bool) -> String {
    let mut text = segment.to_string();
    loop {
        let before = text.clone();
        if unescape {
            text = ftfy_unescape_html(&text);
        }
        text = ftfy_char_fixes(&text);
        if text == before {
            return text;
        }
    }
}
