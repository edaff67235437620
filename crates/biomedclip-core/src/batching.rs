//! How inputs are cut into inference calls: a call never holds more than a budget of items or of
//! padded tokens, whatever the caller asked for, so one SQL call cannot pin gigabytes in ONNX
//! Runtime's arena.

use std::ops::Range;

/// Consecutive ranges of `lens` (token counts) with at most `max_items` sequences each and a
/// padded size (count × longest) of at most `max_tokens`. A sequence longer than the token
/// budget on its own still gets a call of its own.
pub fn token_batches(lens: &[usize], max_items: usize, max_tokens: usize) -> Vec<Range<usize>> {
    let max_items = max_items.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    let mut longest = 0;
    for (i, &len) in lens.iter().enumerate() {
        let count = i - start;
        let padded = (count + 1) * longest.max(len);
        if count > 0 && (count >= max_items || padded > max_tokens) {
            out.push(start..i);
            start = i;
            longest = 0;
        }
        longest = longest.max(len);
    }
    if start < lens.len() {
        out.push(start..lens.len());
    }
    out
}

/// Consecutive ranges of `count` items with at most `max_items` each.
pub fn item_batches(count: usize, max_items: usize) -> Vec<Range<usize>> {
    let max_items = max_items.max(1);
    (0..count).step_by(max_items).map(|s| s..(s + max_items).min(count)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_budget_counts_padding() {
        // 4 × 10 = 40 fits a budget of 40; a fifth row would pad to 50.
        assert_eq!(token_batches(&[10, 3, 10, 2, 1], 8, 40), vec![0..4, 4..5]);
        // One long row pads all its neighbours.
        assert_eq!(token_batches(&[2, 2, 30, 2], 8, 40), vec![0..2, 2..3, 3..4]);
        // A row over the budget goes alone.
        assert_eq!(token_batches(&[100, 1], 8, 40), vec![0..1, 1..2]);
        assert_eq!(token_batches(&[1; 5], 2, 1000), vec![0..2, 2..4, 4..5]);
        assert!(token_batches(&[], 2, 10).is_empty());
    }

    #[test]
    fn item_batches_cover_everything_once() {
        assert_eq!(item_batches(5, 2), vec![0..2, 2..4, 4..5]);
        assert_eq!(item_batches(0, 2), Vec::<Range<usize>>::new());
    }
}
