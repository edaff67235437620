//! De-identified query logging: what the search log keeps instead of the query itself.
//!
//! A query is never stored. The log keeps a keyed hash (HMAC-SHA-256, RFC 2104) of the
//! normalized query text or of the raw image bytes, so that repeated queries can be counted and
//! a query someone holds can be recognised by whoever holds the key, while the log alone reveals
//! nothing (the key lives in a file of the server, never in a table). HMAC comes from the `hmac`
//! crate; the test vectors are RFC 4231's.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of a freshly generated key.
pub const KEY_BYTES: usize = 32;
/// A key file shorter than this is refused (a guessable key would let the log be reversed by
/// hashing candidate queries).
pub const MIN_KEY_BYTES: usize = 16;

/// The text whose hash is logged: Unicode NFC, lowercase, whitespace runs collapsed to one space
/// and trimmed, so that "Pleural  effusion" and "pleural effusion" count as one query (the
/// tokenizer lowercases too, so they are the same query to the model).
pub fn normalize_query_text(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let lowered: String = text.nfc().collect::<String>().to_lowercase();
    lowered.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// HMAC-SHA-256 of `message` under `key`, as lowercase hex, prefixed by the query kind so that
/// an image and a text with the same bytes never share a hash.
pub fn keyed_hash(key: &[u8], kind: &str, message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(kind.as_bytes());
    mac.update(&[0]);
    mac.update(message);
    hex(&mac.finalize().into_bytes())
}

/// Plain HMAC-SHA-256 (no kind prefix), for the RFC test vectors.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// RFC 4231 test cases 1, 2 and 6 (a key longer than the block size).
    #[test]
    fn rfc4231_vectors() {
        let cases: [(Vec<u8>, &[u8], &str); 3] = [
            (vec![0x0b; 20], b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
            (b"Jefe".to_vec(), b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ];
        for (key, msg, want) in cases {
            assert_eq!(hmac_sha256(&key, msg).to_vec(), unhex(want));
        }
    }

    #[test]
    fn normalization_merges_case_and_spacing_only() {
        assert_eq!(normalize_query_text("  Pleural\t EFFUSION \n"), "pleural effusion");
        // NFC: a decomposed e + combining acute equals the precomposed é.
        assert_eq!(normalize_query_text("e\u{301}dema"), normalize_query_text("\u{e9}dema"));
        assert_ne!(normalize_query_text("pleural effusion"), normalize_query_text("pleuraleffusion"));
    }

    #[test]
    fn the_kind_and_the_key_change_the_hash() {
        let k1 = [1u8; 32];
        let k2 = [2u8; 32];
        let a = keyed_hash(&k1, "text", b"x");
        assert_eq!(a.len(), 64);
        assert_ne!(a, keyed_hash(&k1, "image", b"x"));
        assert_ne!(a, keyed_hash(&k2, "text", b"x"));
        assert_eq!(a, hex(&hmac_sha256(&k1, b"text\0x")));
    }
}
