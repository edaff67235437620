//! Limited-memory BFGS (Nocedal & Wright, Algorithm 7.4, two-loop recursion) with a backtracking
//! line search on the Armijo condition, for smooth convex objectives such as the probe's
//! L2-regularized multinomial log-loss. Deterministic; stops when the gradient's max-norm is
//! below `gtol` · max(1, |f|) or after `max_iter` iterations.

pub struct Outcome {
    pub x: Vec<f64>,
    pub value: f64,
    pub iterations: usize,
    pub converged: bool,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Minimizes `f` (returning value and gradient) from `x0`.
pub fn minimize(mut f: impl FnMut(&[f64]) -> (f64, Vec<f64>), x0: Vec<f64>, memory: usize, gtol: f64, max_iter: usize) -> Outcome {
    let mut x = x0;
    let (mut fx, mut g) = f(&x);
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    for it in 0..max_iter {
        if g.iter().fold(0.0f64, |m, v| m.max(v.abs())) < gtol * fx.abs().max(1.0) {
            return Outcome { x, value: fx, iterations: it, converged: true };
        }
        // Two-loop recursion: d = −H·g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(s_hist.len());
        for (s, y) in s_hist.iter().zip(&y_hist).rev() {
            let rho = 1.0 / dot(y, s);
            let a = rho * dot(s, &q);
            for (qi, yi) in q.iter_mut().zip(y) {
                *qi -= a * yi;
            }
            alphas.push((a, rho));
        }
        let gamma = match (s_hist.last(), y_hist.last()) {
            (Some(s), Some(y)) => dot(s, y) / dot(y, y),
            _ => 1.0 / g.iter().map(|v| v * v).sum::<f64>().sqrt().max(1.0),
        };
        for v in q.iter_mut() {
            *v *= gamma;
        }
        for ((s, y), (a, rho)) in s_hist.iter().zip(&y_hist).zip(alphas.into_iter().rev()) {
            let b = rho * dot(y, &q);
            for (qi, si) in q.iter_mut().zip(s) {
                *qi += (a - b) * si;
            }
        }
        let mut d: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &d);
        if slope >= 0.0 {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            d = g.iter().map(|v| -v).collect();
            slope = dot(&g, &d);
        }
        // Backtracking (Armijo, c = 1e-4).
        let mut step = 1.0;
        let (mut x_new, mut f_new, mut g_new);
        loop {
            x_new = x.iter().zip(&d).map(|(a, b)| a + step * b).collect::<Vec<f64>>();
            (f_new, g_new) = f(&x_new);
            if f_new <= fx + 1e-4 * step * slope || step < 1e-20 {
                break;
            }
            step *= 0.5;
        }
        let s: Vec<f64> = x_new.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        if dot(&s, &y) > 1e-12 * dot(&y, &y).sqrt() * dot(&s, &s).sqrt() {
            s_hist.push(s);
            y_hist.push(y);
            if s_hist.len() > memory {
                s_hist.remove(0);
                y_hist.remove(0);
            }
        }
        let stalled = (fx - f_new).abs() <= 1e-16 * fx.abs().max(1.0) && step < 1e-10;
        x = x_new;
        fx = f_new;
        g = g_new;
        if stalled {
            let converged = g.iter().fold(0.0f64, |m, v| m.max(v.abs())) < gtol * fx.abs().max(1.0);
            return Outcome { x, value: fx, iterations: it + 1, converged };
        }
    }
    let converged = g.iter().fold(0.0f64, |m, v| m.max(v.abs())) < gtol * fx.abs().max(1.0);
    Outcome { x, value: fx, iterations: max_iter, converged }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rosenbrock() {
        let f = |x: &[f64]| {
            let (a, b) = (x[0], x[1]);
            ((1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2), vec![-2.0 * (1.0 - a) - 400.0 * a * (b - a * a), 200.0 * (b - a * a)])
        };
        let out = super::minimize(f, vec![-1.2, 1.0], 10, 1e-10, 1000);
        assert!(out.converged && (out.x[0] - 1.0).abs() < 1e-8 && (out.x[1] - 1.0).abs() < 1e-8, "{:?} in {}", out.x, out.iterations);
    }
}
