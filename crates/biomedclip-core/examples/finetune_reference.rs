//! JSON in, JSON out bridge for tests/finetune_reference.py, which checks the fine-tuning code
//! against numpy: the contrastive loss's gradients and the adapter's backward pass against
//! finite differences of numpy's own forward pass, and a whole training run against a numpy
//! implementation of the same algorithm (residual adapters, and the projection heads).
//!
//! stdin: {"op": "contrastive" | "adapter" | "head" | "train" | "train_projection" | "probe", ...};
//! stdout: the results.

use biomedclip_core::finetune::adapter::ResidualAdapter;
use biomedclip_core::finetune::contrastive;
use biomedclip_core::finetune::probe::{self, ProbeOptions};
use biomedclip_core::finetune::projection::Head;
use biomedclip_core::finetune::train::{train_projection, train_residual, TrainOptions};
use serde_json::{json, Value};
use std::io::Read;

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).expect("stdin");
    let q: Value = serde_json::from_str(&input).expect("JSON");
    let dim = q["dim"].as_u64().expect("dim") as usize;
    let out = match q["op"].as_str().expect("op") {
        "contrastive" => {
            let g = contrastive::loss_and_grad(&floats(&q["images"]), &floats(&q["texts"]), dim, q["logit_scale"].as_f64().unwrap());
            json!({"loss": g.loss, "d_images": g.d_images, "d_texts": g.d_texts, "d_logit_scale": g.d_logit_scale})
        }
        "adapter" => {
            let a = ResidualAdapter {
                dim,
                hidden: q["hidden"].as_u64().unwrap() as usize,
                alpha: q["alpha"].as_f64().unwrap(),
                w1: floats(&q["w1"]),
                w2: floats(&q["w2"]),
            };
            let x = floats(&q["x"]);
            let (y, act) = a.forward(&x);
            let (dw1, dw2) = a.backward(&x, &act, &floats(&q["dy"]));
            json!({"y": y, "dw1": dw1, "dw2": dw2})
        }
        "head" => {
            let (hidden, d_out) = (q["hidden"].as_u64().unwrap() as usize, q["d_out"].as_u64().unwrap() as usize);
            let head = if hidden == 0 {
                Head::Linear { d_in: dim, d_out, w: floats(&q["w1"]) }
            } else {
                Head::Mlp { d_in: dim, hidden, d_out, w1: floats(&q["w1"]), w2: floats(&q["w2"]) }
            };
            let x = floats(&q["x"]);
            let (y, act) = head.forward(&x);
            json!({"y": y, "grad": head.backward(&x, &act, &floats(&q["dy"]))})
        }
        "train" | "train_projection" => {
            let o = &q["options"];
            let opts = TrainOptions {
                epochs: o["epochs"].as_u64().unwrap() as usize,
                batch_size: o["batch_size"].as_u64().unwrap() as usize,
                lr: o["lr"].as_f64().unwrap(),
                pull: o["pull"].as_f64().unwrap(),
                alpha: o["alpha"].as_f64().unwrap(),
                hidden: o["hidden"].as_u64().unwrap() as usize,
                val_fraction: o["val_fraction"].as_f64().unwrap(),
                seed: o["seed"].as_u64().unwrap(),
                patience: o["patience"].as_u64().unwrap() as usize,
                min_delta: o["min_delta"].as_f64().unwrap(),
                logit_scale: o["logit_scale"].as_f64().unwrap(),
                learn_logit_scale: o["learn_logit_scale"].as_bool().unwrap(),
            };
            if q["op"] == "train_projection" {
                let (hidden, d_out) = (q["hidden"].as_u64().unwrap() as usize, q["d_out"].as_u64().unwrap() as usize);
                let image = Head::Linear { d_in: dim, d_out, w: floats(&q["image_w"]) };
                let text = Head::Mlp { d_in: dim, hidden, d_out, w1: floats(&q["text_w1"]), w2: floats(&q["text_w2"]) };
                let r = train_projection(&floats(&q["images"]), &floats(&q["texts"]), image, text, &opts, |_| {}).expect("train");
                let (Head::Linear { w, .. }, Head::Mlp { w1, w2, .. }) = (&r.image, &r.text) else { unreachable!() };
                println!("{}", json!({"image_w": w, "text_w1": w1, "text_w2": w2, "best_epoch": r.best_epoch,
                                       "val_losses": r.epochs.iter().map(|e| e.val_loss).collect::<Vec<_>>()}));
                return;
            }
            let r = train_residual(&floats(&q["images"]), &floats(&q["texts"]), dim, &opts, |_| {}).expect("train");
            json!({"image_w1": r.image.w1, "image_w2": r.image.w2, "text_w1": r.text.w1, "text_w2": r.text.w2,
                   "logit_scale": r.logit_scale, "best_epoch": r.best_epoch,
                   "val_losses": r.epochs.iter().map(|e| e.val_loss).collect::<Vec<_>>(),
                   "val_after_i2t_r1": r.val_after.i2t_r1, "val_after_t2i_mrr": r.val_after.t2i_mrr})
        }
        "probe" => {
            let labels: Vec<usize> = q["labels"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            let classes = q["classes"].as_u64().unwrap() as usize;
            let opts = ProbeOptions { c: q["C"].as_f64().unwrap(), balanced: q["balanced"].as_bool().unwrap(), ..Default::default() };
            let x = floats(&q["x"]);
            let (p, converged) = probe::fit(&x, &labels, dim, classes, &opts).expect("fit");
            let probs: Vec<Vec<f64>> = (0..labels.len()).map(|i| p.probabilities(&x[i * dim..(i + 1) * dim])).collect();
            json!({"coef": p.coef, "intercept": p.intercept, "converged": converged, "probabilities": probs})
        }
        other => panic!("unknown op {other}"),
    };
    println!("{out}");
}
