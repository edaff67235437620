//! Long texts, which are cleaned and tokenized in pieces (tokenize.rs), against open_clip's
//! HFTokenizer in Python (tools/reference_tokenize.py: ftfy, html.unescape and HF tokenizers on
//! the whole text). The constructed texts put the constructs that could look across a cut at the
//! cuts: a '<' later on the line of an entity, "\r\n", combining marks, entities, escapes, runs of
//! characters the cleaning removes, CJK without spaces, exactly 254 and 255 tokens.
mod common;
use biomedclip_core::tokenize::{TextError, TextTokenizer, MAX_PIECE_BYTES, PIECE_BYTES};

const CONTEXT: usize = 256;

fn tokenizer_path() -> std::path::PathBuf {
    common::shared_data().join("biomedclip/tokenizer.json")
}

fn captions() -> Vec<String> {
    let text = std::fs::read_to_string(common::shared_data().join("captions/roco_validation_radiology.jsonl")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.get("text").or(v.get("caption")).and_then(|t| t.as_str()).unwrap().to_string()
        })
        .collect()
}

#[derive(serde::Deserialize, Debug, PartialEq)]
struct Reference {
    ids: Vec<u32>,
    cut: bool,
}

fn reference(tokenizer: &std::path::Path, name: &str, cases: &[String]) -> Vec<Reference> {
    let dir = common::workspace().join("target/test-work/long-texts").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let (input, output) = (dir.join("input.json"), dir.join("output.json"));
    std::fs::write(&input, serde_json::to_string(cases).unwrap()).unwrap();
    let context = CONTEXT.to_string();
    common::run_tool("reference_tokenize.py", &[tokenizer.to_str().unwrap(), &context, input.to_str().unwrap(), output.to_str().unwrap()]);
    serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap()
}

fn long_cases() -> Vec<String> {
    let caps = captions();
    let words = caps[..60].join(" ");
    // A string of `n` bytes ending in '\r', so that the default cut falls between '\r' and '\n'.
    let before_crlf = |tail: &str| format!("{}{tail}\r", "y".repeat(PIECE_BYTES - tail.len() - 1));
    vec![
        caps[..400].join("\n"),
        caps[..400].join(" \t "),
        // The first tokens lie pieces away: characters the cleaning removes, then words.
        format!("{}{words}", "\u{1} \u{200b}\t\u{7f} ".repeat(2000)),
        // ftfy decodes entities on a line without '<' only; here the '<' is pieces later on the
        // entity's line ("&amp;amp;amp;" is "&" with ftfy's decoding, "&amp;" without).
        format!("&amp;amp;amp; {}<b> {words}", "\u{7f} ".repeat(3000)),
        format!("&amp;amp;amp; {}b> {words}", "\u{7f} ".repeat(3000)),
        format!("&amp;amp;amp; x\n{}\n< {words} &amp;amp;amp;", "\u{7f} ".repeat(3000)),
        format!("{}\n{words}", before_crlf(" &amp")),
        format!("{}\n&amp;amp;amp; {words}", before_crlf(" x")),
        "e\u{301} \u{301}a \u{301}\u{327}c A\u{30a} \u{327}".repeat(600),
        "&amp;lt;b&amp;gt; &#x201c;q&#x201d; &ampx ".repeat(500),
        "\u{1b}[36;44mblue\u{1b}[0m \u{1b}[x ".repeat(400),
        "ﬁbrosis ＣＴ　ｓｃａｎ ‘q’ ".repeat(400),
        format!("{} {words}", "肺部感染".repeat(2000)),
        format!("{} {words}", "QUJD+/==".repeat(40_000)),
        format!("{}lung", " ".repeat(9000)),
        format!("{}{}", "\u{1} ".repeat(1500), "lung ".repeat(253)),
        format!("{}{}", "\u{1} ".repeat(1500), "lung ".repeat(254)),
        format!("{}{}", "\u{1} ".repeat(1500), "lung ".repeat(255)),
        "pneumonia ".repeat(100_000),
    ]
}

#[test]
fn long_texts_give_the_ids_hf_tokenizers_gives_the_whole_text() {
    let tok = TextTokenizer::from_file(&tokenizer_path(), CONTEXT).unwrap();
    let cases = long_cases();
    let expected = reference(&tokenizer_path(), "bert", &cases);
    let mut wrong = Vec::new();
    for (k, (text, want)) in cases.iter().zip(&expected).enumerate() {
        for piece in [PIECE_BYTES, 64] {
            let (ids, cut) = tok.encode_in_pieces(text, piece, MAX_PIECE_BYTES, &|| false).unwrap();
            if (Reference { ids, cut }) != *want {
                wrong.push((k, piece));
            }
        }
    }
    // The context boundary itself: 253 and 254 content tokens fit, 255 are cut.
    assert_eq!([15, 16, 17].map(|k| (expected[k].ids.len(), expected[k].cut)), [(255, false), (256, false), (256, true)]);
    assert!(wrong.is_empty(), "cases (index, piece bytes) differing from HF tokenizers: {wrong:?}");
}

#[test]
fn a_tokenizer_other_than_berts_reads_each_text_whole() {
    // BERT's pre-tokenizer replaced: the pieces would not be safe to assume, so each text is
    // tokenized whole, and at most MAX_PIECE_BYTES of it.
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(tokenizer_path()).unwrap()).unwrap();
    json["pre_tokenizer"] = serde_json::json!({"type": "WhitespaceSplit"});
    let dir = common::workspace().join("target/test-work/long-texts");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("whitespace_split_tokenizer.json");
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let tok = TextTokenizer::from_file(&path, CONTEXT).unwrap();
    let cases: Vec<String> = long_cases().into_iter().take(3).collect();
    let expected = reference(&path, "whitespace-split", &cases);
    for (text, want) in cases.iter().zip(&expected) {
        let (ids, cut) = tok.encode_reporting(text).unwrap();
        assert_eq!(Reference { ids, cut }, *want);
    }
    assert_eq!(tok.encode_reporting(&"lung ".repeat(MAX_PIECE_BYTES / 5 + 1)), Err(TextError::TooLong { limit: MAX_PIECE_BYTES, whole: true }));
}

#[test]
fn a_run_without_whitespace_is_refused_only_when_it_must_be_read() {
    let tok = TextTokenizer::from_file(&tokenizer_path(), CONTEXT).unwrap();
    let run = "a".repeat(MAX_PIECE_BYTES + 1);
    assert_eq!(tok.encode_reporting(&run), Err(TextError::TooLong { limit: MAX_PIECE_BYTES, whole: false }));
    assert_eq!(tok.encode_reporting(&format!("lung {run}")), Err(TextError::TooLong { limit: MAX_PIECE_BYTES, whole: false }));
    // After a full context the run is never read.
    let (ids, cut) = tok.encode_reporting(&format!("{}{run}", "lung ".repeat(1000))).unwrap();
    assert_eq!((ids.len(), cut), (CONTEXT, true));
    // A run that ends the text within the limit is read: one [UNK] word (WordPiece's 100 characters).
    let (ids, _) = tok.encode_reporting(&"a".repeat(MAX_PIECE_BYTES)).unwrap();
    assert_eq!(ids, tok.encode_reporting("[UNK]").unwrap().0);
    assert_eq!(tok.encode_in_pieces(&"b".repeat(100), 8, 50, &|| false), Err(TextError::TooLong { limit: 50, whole: false }));
}

#[test]
fn an_interrupt_is_seen_between_pieces() {
    let tok = TextTokenizer::from_file(&tokenizer_path(), CONTEXT).unwrap();
    let calls = std::cell::Cell::new(0);
    let third_call = || {
        calls.set(calls.get() + 1);
        calls.get() >= 3
    };
    // 400 KB the cleaning removes: about 200 pieces, none with a token.
    let text = format!("{}lung", "\u{1} ".repeat(200_000));
    assert_eq!(tok.encode_watched(&text, &third_call), Err(TextError::Interrupted));
    assert_eq!(calls.get(), 3);
    assert_eq!(tok.encode_watched("lung", &|| true), Err(TextError::Interrupted));
    assert_eq!(tok.encode_watched(&text, &|| false).unwrap().0, tok.encode_reporting("lung").unwrap().0);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 500, ..Default::default() })]
    /// Texts made of the constructs that could look across a cut, cut before every space, tab and
    /// line feed, give the ids of the text read as one piece (which the tests above hold to HF
    /// tokenizers).
    #[test]
    fn cutting_at_every_whitespace_changes_nothing(
        s in "(&amp;amp;amp;|&EACUTE;|&amp;|&amp|&lt;|&#x41;|&#65|<|\r\n|\r|\n|\t| | |\u{1b}\\[3m|e\u{301}|\u{301}|\u{327}|lung|肺|ﬁ|Ｃ|\u{7f}|&|;|#|x){0,80}"
    ) {
        static TOK: std::sync::OnceLock<TextTokenizer> = std::sync::OnceLock::new();
        let tok = TOK.get_or_init(|| TextTokenizer::from_file(&tokenizer_path(), CONTEXT).unwrap());
        let whole = tok.encode_in_pieces(&s, usize::MAX / 2, usize::MAX / 2, &|| false);
        proptest::prop_assert_eq!(tok.encode_in_pieces(&s, 1, MAX_PIECE_BYTES, &|| false), whole);
    }
}
