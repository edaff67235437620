//! Pooling patch embeddings into one slide embedding.
//!
//! `mean` is the plain average, the same as SQL `avg(embedding)` over the patch rows. `attention`
//! weights each patch by the softmax of its cosine similarity to a query embedding (a text
//! prompt's, typically), scaled by a temperature: w_i = softmax(t · cos(p_i, q)).

/// Why pooling was refused.
#[derive(Clone, Debug, PartialEq)]
pub enum PoolingError {
    NoPatches,
    DimensionMismatch { expected: usize, got: usize },
    ZeroQuery,
    BadTemperature(f64),
}

impl std::fmt::Display for PoolingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolingError::NoPatches => write!(f, "no patches to pool (no tissue found: lower tissue_threshold?)"),
            PoolingError::DimensionMismatch { expected, got } => write!(f, "query has {got} dimensions, patches have {expected}"),
            PoolingError::ZeroQuery => write!(f, "attention pooling needs a non-zero query embedding"),
            PoolingError::BadTemperature(t) => write!(f, "temperature {t} must be finite and positive"),
        }
    }
}

fn check(rows: &[Vec<f32>]) -> Result<usize, PoolingError> {
    let dim = rows.first().ok_or(PoolingError::NoPatches)?.len();
    if let Some(r) = rows.iter().find(|r| r.len() != dim) {
        return Err(PoolingError::DimensionMismatch { expected: dim, got: r.len() });
    }
    Ok(dim)
}

/// The softmax weights of attention pooling, in f64.
pub fn attention_weights(rows: &[Vec<f32>], query: &[f32], temperature: f64) -> Result<Vec<f64>, PoolingError> {
    let dim = check(rows)?;
    if query.len() != dim {
        return Err(PoolingError::DimensionMismatch { expected: dim, got: query.len() });
    }
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(PoolingError::BadTemperature(temperature));
    }
    let norm = |v: &[f32]| v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let qn = norm(query);
    if qn == 0.0 {
        return Err(PoolingError::ZeroQuery);
    }
    let logits: Vec<f64> = rows
        .iter()
        .map(|r| {
            let rn = norm(r);
            let dot: f64 = r.iter().zip(query).map(|(&a, &b)| a as f64 * b as f64).sum();
            if rn == 0.0 { 0.0 } else { temperature * dot / (rn * qn) }
        })
        .collect();
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    Ok(exps.into_iter().map(|e| e / total).collect())
}

fn weighted_sum(rows: &[Vec<f32>], weights: &[f64], dim: usize) -> Vec<f32> {
    let mut acc = vec![0f64; dim];
    for (r, &w) in rows.iter().zip(weights) {
        for (a, &x) in acc.iter_mut().zip(r) {
            *a += w * x as f64;
        }
    }
    acc.into_iter().map(|x| x as f32).collect()
}

/// The mean of the rows.
pub fn mean(rows: &[Vec<f32>]) -> Result<Vec<f32>, PoolingError> {
    let dim = check(rows)?;
    let mut acc = vec![0f64; dim];
    for r in rows {
        for (a, &x) in acc.iter_mut().zip(r) {
            *a += x as f64;
        }
    }
    Ok(acc.into_iter().map(|s| (s / rows.len() as f64) as f32).collect())
}

/// Attention pooling of the rows towards `query`.
pub fn attention(rows: &[Vec<f32>], query: &[f32], temperature: f64) -> Result<Vec<f32>, PoolingError> {
    let weights = attention_weights(rows, query, temperature)?;
    Ok(weighted_sum(rows, &weights, rows[0].len()))
}
