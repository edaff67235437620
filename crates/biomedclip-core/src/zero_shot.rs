//! Zero-shot scoring: prompt ensembling and CLIP logits.

/// The prompt for `label`: `{}` in the template is replaced by the label; a template without
/// `{}` gets the label appended after one space ("this is a photo of " + label, as Microsoft's
/// example, and "a photo of" + " " + label rather than "a photo oflabel").
pub fn fill_template(template: &str, label: &str) -> String {
    if template.contains("{}") {
        template.replace("{}", label)
    } else if template.is_empty() || template.ends_with(char::is_whitespace) {
        format!("{template}{label}")
    } else {
        format!("{template} {label}")
    }
}

#[cfg(test)]
mod tests {
    use super::fill_template;

    #[test]
    fn templates_without_a_slot_get_one_space() {
        assert_eq!(fill_template("this is a photo of ", "chest X-ray"), "this is a photo of chest X-ray");
        assert_eq!(fill_template("a photo of", "chest X-ray"), "a photo of chest X-ray");
        assert_eq!(fill_template("{} presented in image", "MRI"), "MRI presented in image");
        assert_eq!(fill_template("", "MRI"), "MRI");
    }
}

/// A label's embedding: the L2-normalized mean of its (normalized) template embeddings.
pub fn ensemble(embeddings: &[Vec<f32>]) -> Vec<f32> {
    let dim = embeddings.first().map_or(0, Vec::len);
    let mut mean = vec![0f32; dim];
    for e in embeddings {
        let unit = crate::vector_ops::l2_normalize(e);
        for (m, x) in mean.iter_mut().zip(unit) {
            *m += x;
        }
    }
    crate::vector_ops::l2_normalize(&mean)
}

/// CLIP logits: exp(logit_scale) * cos(image, label) for each label.
pub fn logits(image: &[f32], labels: &[Vec<f32>], logit_scale: f64) -> Vec<f64> {
    let scale = logit_scale.exp();
    labels.iter().map(|l| scale * (1.0 - crate::distance::cosine_distance_f32(image, l))).collect()
}
