//! Temperature scaling and ECE against numpy/scipy (tools/reference_calibration.py) on synthetic
//! logits with a known miscalibration (true temperature 2.5), and softmax against the real
//! BiomedCLIP reference probabilities.
mod common;
use biomedclip_core::calibration::{self, Sample};
use biomedclip_core::kmeans::Rng;

fn synthetic(n: usize, k: usize, true_t: f64, seed: u64) -> Vec<Sample> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let logits: Vec<f64> = (0..k).map(|_| rng.normal() * 4.0).collect();
            // The true label is drawn from softmax(logits / true_t): the raw logits are overconfident.
            let p = calibration::softmax(&logits, true_t);
            let mut u = rng.next_f64();
            let mut idx = k - 1;
            for (i, pi) in p.iter().enumerate() {
                u -= pi;
                if u < 0.0 {
                    idx = i;
                    break;
                }
            }
            Sample { logits, true_index: idx }
        })
        .collect()
}

#[test]
fn temperature_and_ece_match_scipy() {
    let (n, k) = (5000, 9);
    let samples = synthetic(n, k, 2.5, 11);
    let dir = common::workspace().join("target/test-work/calibration");
    std::fs::create_dir_all(&dir).unwrap();
    let logits: Vec<u8> = samples.iter().flat_map(|s| s.logits.iter().flat_map(|x| x.to_le_bytes())).collect();
    let labels: Vec<u8> = samples.iter().flat_map(|s| (s.true_index as i64).to_le_bytes()).collect();
    std::fs::write(dir.join("logits.f64"), logits).unwrap();
    std::fs::write(dir.join("labels.i64"), labels).unwrap();
    let out = dir.join("ref.json");
    common::run_tool(
        "reference_calibration.py",
        &[dir.join("logits.f64").to_str().unwrap(), dir.join("labels.i64").to_str().unwrap(), &k.to_string(), out.to_str().unwrap()],
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap();
    let fit = calibration::fit(&samples).unwrap();
    let ref_t = r["temperature"].as_f64().unwrap();
    println!("fitted T {} (scipy {ref_t}), ECE {} -> {}", fit.temperature, fit.ece_before, fit.ece_after);
    assert!((fit.temperature - ref_t).abs() / ref_t < 1e-3, "T {} vs scipy {ref_t}", fit.temperature);
    assert!((fit.temperature - 2.5).abs() < 0.25, "should recover roughly the true 2.5, got {}", fit.temperature);
    assert!((fit.ece_before - r["ece_before"].as_f64().unwrap()).abs() < 1e-9);
    assert!((calibration::ece(&samples, ref_t, 15) - r["ece_at_ref_t"].as_f64().unwrap()).abs() < 1e-9);
    assert!((fit.nll_before - r["nll_before"].as_f64().unwrap()).abs() < 1e-9);
    assert!((fit.accuracy - r["accuracy"].as_f64().unwrap()).abs() < 1e-12);
    assert!(fit.nll_after <= fit.nll_before && fit.ece_after < fit.ece_before);
}

#[test]
fn softmax_reproduces_the_real_reference_probabilities() {
    // Log-probabilities are logits up to a constant, so softmax(log p) must give back p.
    let path = common::shared_data().join("biomedclip/reference_zero_shot.json");
    let reference: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut checked = 0;
    for (_image, probs) in reference["softmax_probs"].as_object().unwrap() {
        let p: Vec<f64> = probs.as_object().unwrap().values().map(|v| v.as_f64().unwrap()).collect();
        let logits: Vec<f64> = p.iter().map(|x| x.ln()).collect();
        let back = calibration::softmax(&logits, 1.0);
        let sum: f64 = p.iter().sum();
        for (a, b) in back.iter().zip(&p) {
            // The reference probabilities are float32 values summing to 1 within float32 error.
            assert!((a - b / sum).abs() <= 1e-12 * b.max(1e-300) / sum + 1e-15, "{a} vs {}", b / sum);
        }
        checked += 1;
    }
    assert_eq!(checked, 9);
}

#[test]
fn bad_inputs_are_reported() {
    assert!(calibration::fit(&[]).is_err());
    let s = vec![Sample { logits: vec![1.0, 2.0], true_index: 2 }];
    assert!(calibration::fit(&s).unwrap_err().contains("outside"));
    let s = vec![Sample { logits: vec![1.0, 2.0], true_index: 0 }, Sample { logits: vec![1.0], true_index: 0 }];
    assert!(calibration::fit(&s).unwrap_err().contains("expected 2"));
}

#[test]
fn prompt_ensembling_and_logits() {
    use biomedclip_core::zero_shot::{ensemble, fill_template, logits};
    assert_eq!(fill_template("this is a photo of {}", "brain MRI"), "this is a photo of brain MRI");
    assert_eq!(fill_template("this is a photo of ", "brain MRI"), "this is a photo of brain MRI");
    assert_eq!(fill_template("{} presented in image", "X"), "X presented in image");
    // Mean of the unit vectors [1,0] and [0,2]/2 is [0.5,0.5], normalized [0.7071,0.7071].
    let e = ensemble(&[vec![1.0, 0.0], vec![0.0, 2.0]]);
    assert!((e[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6 && (e[1] - e[0]).abs() < 1e-7);
    // exp(ln 100) * cos: cos([1,0],[1,0]) = 1, cos([1,0],[0,1]) = 0.
    let l = logits(&[1.0, 0.0], &[vec![1.0, 0.0], vec![0.0, 1.0]], 100f64.ln());
    assert!((l[0] - 100.0).abs() < 1e-9 && l[1].abs() < 1e-9);
}
