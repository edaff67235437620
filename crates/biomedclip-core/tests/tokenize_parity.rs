//! Token ids against open_clip's HFTokenizer reference ids for every shared caption, and the
//! cleaning rules against CPython's html.unescape / str.split and Python ftfy (run by the test).
mod common;
use biomedclip_core::text_clean;
use biomedclip_core::tokenize::TextTokenizer;

#[derive(serde::Deserialize)]
struct Caption {
    id: String,
    text: String,
    ids: Vec<u32>,
}

fn tokenizer() -> TextTokenizer {
    TextTokenizer::from_file(&common::shared_data().join("biomedclip/tokenizer.json"), 256).unwrap()
}

#[test]
fn every_shared_caption_gives_the_reference_ids() {
    let tok = tokenizer();
    let data = common::shared_data();
    let mut total = 0;
    let mut mismatches = Vec::new();
    let mut piece_mismatches = Vec::new();
    for file in ["captions/roco_validation_radiology.jsonl", "captions/roco_validation_nonradiology.jsonl", "medpix/captions.jsonl"] {
        let text = std::fs::read_to_string(data.join(file)).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let Some(ids) = v.get("ids") else { continue };
            let cap = Caption {
                id: v.get("id").or(v.get("image")).map(|x| x.to_string()).unwrap_or_default(),
                text: v.get("text").or(v.get("caption")).and_then(|t| t.as_str()).unwrap().to_string(),
                ids: serde_json::from_value(ids.clone()).unwrap(),
            };
            total += 1;
            let (ours, ours_cut) = tok.encode_reporting(&cap.text).unwrap();
            if ours != cap.ids {
                mismatches.push(cap.id.clone());
            }
            // The same ids when the text is cleaned and tokenized in small pieces (cut before
            // every space, tab or line feed for 1-byte pieces), as long texts are.
            for piece in [1, 7, 64] {
                let (pieces, cut) = tok.encode_in_pieces(&cap.text, piece, 1 << 20, &|| false).unwrap();
                if pieces != cap.ids || cut != ours_cut {
                    piece_mismatches.push((piece, cap.id.clone()));
                }
            }
        }
    }
    println!("tokenizer parity: {} of {total} captions identical", total - mismatches.len());
    assert!(total >= 8791, "expected all shared captions, found {total}");
    assert!(mismatches.is_empty(), "{} captions differ, e.g. {:?}", mismatches.len(), &mismatches[..mismatches.len().min(5)]);
    assert!(piece_mismatches.is_empty(), "{} differ in pieces, e.g. {:?}", piece_mismatches.len(), &piece_mismatches[..piece_mismatches.len().min(5)]);
}

#[test]
fn no_padding_and_truncation_to_256() {
    let tok = tokenizer();
    assert_eq!(tok.encode("chest x-ray").unwrap().first(), Some(&2));
    assert_eq!(tok.encode("chest x-ray").unwrap().last(), Some(&3));
    let long = "pneumonia ".repeat(400);
    let ids = tok.encode(&long).unwrap();
    assert_eq!(ids.len(), 256);
    assert_eq!(ids[255], 3);
    assert!(tok.encode(" \t\u{3000}\n").is_err());
    assert!(tok.encode("").is_err());
}

/// Cleaning against Python on constructed inputs: CPython's html.unescape rules, str.split
/// whitespace, and ftfy's fixes other than mojibake repair.
#[test]
fn cleaning_matches_python_on_constructed_inputs() {
    let cases: Vec<String> = vec![
        "&amp;lt;b&amp;gt; twice".into(),
        "&ampx &amp &notit; &notin; &ltfoo".into(),
        "&#65;&#x42;&#X43 &#0; &#128; &#x80; &#x9f; &#13; &#1; &#xD800; &#x110000; &#99999999999;".into(),
        "&#xFFFE; &#xFDD0; &#x1FFFF; &#11; &#0x41;".into(),
        "P&EACUTE;REZ &ntilde; &Ntilde; &NTILDE; &nTILDE; &SZLIG;".into(),
        "a < b &amp; c\n&amp; next line".into(),
        "ﬁbrosis ﬂuid ﬃ ĳ Ǆ ŉ".into(),
        "ＣＴ　ｓｃａｎ　（ａｘｉａｌ）ｶﾀｶﾅ".into(),
        "‘single’ “double” ‛x‟ ʼ".into(),
        "line\r\nbreak\rx\u{2028}y\u{2029}z\u{85}w".into(),
        "\u{1b}[36;44mblue\u{1b}[0m text \u{1b}[xnot".into(),
        "ctrl\u{0}\u{1}\u{7f}\u{200b}\u{feff}\u{206a}\u{fffb}end".into(),
        "c1 \u{80}\u{81}\u{85}\u{9c}\u{9f} chars".into(),
        "e\u{301} A\u{30a} nfc".into(),
        "sep\u{1c}a\u{1d}b\u{1e}c\u{1f}d\u{a0}e\u{180e}f\u{200b}g\u{3000}h".into(),
        "&#8217; &rsquo; &#x201c;quoted&#x201d;".into(),
        "&amp;#8217; &amp;amp;amp;".into(),
    ];
    let dir = common::workspace().join("target/test-work/clean");
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("input.json");
    std::fs::write(&input, serde_json::to_string(&cases).unwrap()).unwrap();
    let output = dir.join("output.json");
    common::run_tool("reference_clean.py", &[input.to_str().unwrap(), output.to_str().unwrap()]);
    let expected: Vec<String> = serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
    for (case, want) in cases.iter().zip(&expected) {
        assert_eq!(&text_clean::clean(case), want, "input {case:?}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]
    /// Arbitrary Unicode (controls, surrogate-free planes, entities, escapes) never panics.
    #[test]
    fn cleaning_and_tokenizing_never_panic(s in "\\PC{0,300}", entity in "&#?[0-9A-Za-z]{0,30};?") {
        let tok = tokenizer();
        let _ = tok.encode(&s);
        let _ = tok.encode(&format!("{s}{entity}{entity}"));
    }
}
