//! Gradient checks: every trainable tensor gets a non-zero gradient, and the fused ops'
//! backward passes agree with finite differences of the loss, for every loss and with dropout.

use candle_core::Tensor;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::adam::Adam;
use super::adam::NO_SLOT;
use super::config::{SasRecConfig, SasRecLoss};
use super::model::SasRec;
use super::ops::with_f32;
use super::train::{StepInput, compact_gradients, loss_graph, make_step};
use crate::scorer::SequenceScorer;

fn tiny(loss: SasRecLoss, dropout: f64, heads: usize) -> SasRecConfig {
    SasRecConfig {
        max_len: 6,
        hidden: 8,
        blocks: 2,
        heads,
        dropout,
        loss,
        negatives: if loss == SasRecLoss::Bce { 2 } else { 7 },
        seed: 3,
        threads: 1,
        ..SasRecConfig::default()
    }
}

fn sequences() -> Vec<Vec<u32>> {
    vec![
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9],
        vec![4, 9, 2],
        vec![11, 3, 5, 7, 1, 12, 2],
        vec![6, 6, 14, 2, 8],
    ]
}

fn input(config: &SasRecConfig, num_items: usize) -> StepInput {
    let seqs = sequences();
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    make_step(config, num_items, &refs, &mut StdRng::seed_from_u64(9))
}

fn values(t: &Tensor) -> Vec<f32> {
    with_f32(t, |v| Ok(v.to_vec())).expect("values")
}

const ALL_LOSSES: [SasRecLoss; 4] = [
    SasRecLoss::Bce,
    SasRecLoss::SampledSoftmax,
    SasRecLoss::Softmax,
    SasRecLoss::Gbce,
];

#[test]
fn every_trainable_tensor_gets_a_nonzero_gradient() {
    for loss in ALL_LOSSES {
        for (heads, cosine_scale) in [(1, 0.0), (2, 0.0), (2, 4.0)] {
            let config = SasRecConfig {
                cosine_scale,
                ..tiny(loss, 0.2, heads)
            };
            let model = SasRec::new(&config, 15).expect("model");
            let input = input(&config, 15);
            let w = model.weights(true);
            let l = loss_graph(&model, &w, &input, Some(5)).expect("loss");
            let grads = l.backward().expect("backward");
            assert_eq!(model.vars.len(), 2 + 12 * config.blocks + 2);
            for (name, var) in model.names.iter().zip(&model.vars) {
                let g = grads.get(var.as_tensor()).unwrap_or_else(|| {
                    panic!("{loss:?}/{heads}/{cosine_scale}: no gradient for {name}")
                });
                assert_eq!(g.dims(), var.dims(), "{name}");
                let g = values(g);
                assert!(g.iter().all(|v| v.is_finite()), "{name}: not finite");
                let max = g.iter().fold(0f32, |a, v| a.max(v.abs()));
                assert!(
                    max > 0.0,
                    "{loss:?}/{heads}/{cosine_scale}: zero gradient for {name}"
                );
            }
            // The padding item's embedding never moves.
            let ge = values(grads.get(model.vars[0].as_tensor()).expect("item grad"));
            assert!(ge[..config.hidden].iter().all(|&v| v == 0.0));
        }
    }
}

/// The loss at the given weights (dropout masks fixed by the seed).
fn loss_at(model: &SasRec, w: &[Tensor], input: &StepInput) -> f64 {
    let l = loss_graph(model, w, input, Some(5)).expect("loss");
    f64::from(l.to_scalar::<f32>().expect("scalar"))
}

#[test]
fn gradients_match_finite_differences() {
    let mut checked = 0;
    let mut skipped = 0;
    let mut loose = 0;
    let mut worst: f64 = 0.0;
    for loss in ALL_LOSSES {
        for (dropout, heads, cosine_scale) in [(0.0, 1, 0.0), (0.3, 2, 0.0), (0.2, 2, 4.0)] {
            let config = SasRecConfig {
                cosine_scale,
                ..tiny(loss, dropout, heads)
            };
            let model = SasRec::new(&config, 15).expect("model");
            let input = input(&config, 15);
            let w = model.weights(true);
            let grads = loss_graph(&model, &w, &input, Some(5))
                .expect("loss")
                .backward()
                .expect("backward");
            let base: Vec<Tensor> = model.weights(false);
            for (p, name) in model.names.iter().enumerate() {
                let analytic = values(grads.get(model.vars[p].as_tensor()).expect("grad"));
                let original = values(&base[p]);
                // The three largest gradient entries and one more: the ones that matter.
                let mut idx: Vec<usize> = (0..analytic.len()).collect();
                idx.sort_by(|&a, &b| analytic[b].abs().total_cmp(&analytic[a].abs()));
                idx.truncate(3);
                idx.push(original.len() / 2);
                for &i in &idx {
                    let at = |delta: f32| {
                        let mut v = original.clone();
                        v[i] += delta;
                        let mut w2 = base.clone();
                        w2[p] = Tensor::from_vec(v, base[p].shape().clone(), base[p].device())
                            .expect("tensor");
                        loss_at(&model, &w2, &input)
                    };
                    let fd = |h: f32| (at(h) - at(-h)) / (2.0 * f64::from(h));
                    // Four step sizes: f32 rounding spoils small ones, curvature large ones.
                    let steps = [fd(1e-2), fd(2.5e-3), fd(1e-3), fd(5e-4)];
                    let rel = |x: f64, y: f64| (x - y).abs() / (1e-2 + x.abs().max(y.abs()));
                    if rel(steps[0], steps[2]) > 0.2 {
                        // The step crosses a ReLU kink: finite differences say nothing here.
                        skipped += 1;
                        continue;
                    }
                    let a = f64::from(analytic[i]);
                    let err = steps
                        .iter()
                        .map(|&n| rel(a, n))
                        .fold(f64::INFINITY, f64::min);
                    worst = worst.max(err);
                    if err > 0.02 {
                        loose += 1;
                    }
                    assert!(
                        err < 0.1,
                        "{loss:?} dropout {dropout} heads {heads} cosine {cosine_scale}: {name}[{i}]: \
                         analytic {a} vs numeric {steps:?}"
                    );
                    checked += 1;
                }
            }
        }
    }
    // f32 rounding and nearby ReLU kinks blur a few estimates; the bulk must be tight.
    assert!(
        checked > 500 && skipped * 20 < checked,
        "{checked} checks, {skipped} skipped"
    );
    assert!(
        loose * 50 < checked,
        "{loose} of {checked} checks off by more than 2%"
    );
    eprintln!(
        "finite differences: {checked} checks ({skipped} at kinks, {loose} above 2%), \
         worst relative error {worst:.2e}"
    );
}

#[test]
fn the_softmax_loss_is_the_cross_entropy_over_every_item() {
    // One position per sequence (two items each): the loss is the mean over sequences of
    // -log softmax(logits)[target], with the logits h · E[1..=n] (or, for the cosine output,
    // scale · cos(h, E[i])) computed here from the serving path's hidden states; the serving
    // scores are those logits.
    for cosine_scale in [0.0, 3.0] {
        let config = SasRecConfig {
            cosine_scale,
            ..tiny(SasRecLoss::Softmax, 0.0, 2)
        };
        let n = 15;
        let model = SasRec::new(&config, n).expect("model");
        let seqs: [&[u32]; 4] = [&[1, 2], &[3, 15], &[7, 7], &[12, 4]];
        let step = make_step(&config, n, &seqs, &mut StdRng::seed_from_u64(1));
        assert_eq!(step.negatives.len(), n, "every item, padding excluded");
        let w = model.weights(false);
        let loss = f64::from(
            loss_graph(&model, &w, &step, None)
                .and_then(|l| l.to_scalar::<f32>())
                .expect("loss"),
        );

        let d = config.hidden;
        let inputs: Vec<&[u32]> = seqs.iter().map(|s| &s[..1]).collect();
        let states = model.last_states(&inputs).expect("states");
        let table = values(&model.item_embeddings());
        let norm = |v: &[f32]| v.iter().map(|x| f64::from(x * x)).sum::<f64>().sqrt();
        let served = model.score_all(&inputs).expect("scores");
        // Scoring a candidate set gives the same scores as scoring every item.
        let candidates: Vec<Vec<u32>> = (0..inputs.len()).map(|_| vec![3, 1, 15, 9]).collect();
        let refs: Vec<&[u32]> = candidates.iter().map(Vec::as_slice).collect();
        let picked = model.score_candidates(&inputs, &refs).expect("candidates");
        for (row, scores) in picked.iter().enumerate() {
            for (&c, &score) in candidates[row].iter().zip(scores) {
                let all = served[row][c as usize];
                assert!(
                    (score - all).abs() <= 1e-5 * all.abs().max(1.0),
                    "{c}: {score} vs {all}"
                );
            }
        }
        let mut expected = 0.0;
        for (row, s) in seqs.iter().enumerate() {
            let h = &states[row * d..(row + 1) * d];
            let logit = |item: usize| -> f64 {
                let e = &table[item * d..(item + 1) * d];
                let dot: f64 = h.iter().zip(e).map(|(a, b)| f64::from(a * b)).sum();
                if cosine_scale > 0.0 {
                    cosine_scale * dot / (norm(h) * norm(e))
                } else {
                    dot
                }
            };
            let max = (1..=n).map(logit).fold(f64::MIN, f64::max);
            let log_z = max + (1..=n).map(|i| (logit(i) - max).exp()).sum::<f64>().ln();
            expected += log_z - logit(s[1] as usize);
            for (item, &score) in served[row].iter().enumerate().skip(1) {
                let (a, b) = (f64::from(score), logit(item));
                assert!(
                    (a - b).abs() < 1e-4 * b.abs().max(1.0),
                    "cosine {cosine_scale}: item {item} served {a}, logit {b}"
                );
            }
        }
        expected /= seqs.len() as f64;
        assert!(
            (loss - expected).abs() < 1e-4 * expected.abs().max(1.0),
            "cosine {cosine_scale}: loss {loss}, expected {expected}"
        );
    }
}

#[test]
fn dropout_masks_are_fixed_by_the_seed() {
    let config = tiny(SasRecLoss::SampledSoftmax, 0.5, 1);
    let model = SasRec::new(&config, 15).expect("model");
    let input = input(&config, 15);
    let w = model.weights(false);
    let a = loss_at(&model, &w, &input);
    assert_eq!(a, loss_at(&model, &w, &input));
    let other = loss_graph(&model, &w, &input, Some(6))
        .and_then(|l| l.to_scalar::<f32>())
        .expect("loss");
    assert_ne!(a, f64::from(other));
}

#[test]
fn the_compact_embedding_gradient_and_sparse_adam_equal_the_dense_ones() {
    for (loss, cosine_scale) in ALL_LOSSES
        .into_iter()
        .map(|l| (l, 0.0))
        .chain([(SasRecLoss::SampledSoftmax, 4.0)])
    {
        let config = SasRecConfig {
            cosine_scale,
            ..tiny(loss, 0.2, 2)
        };
        let model = SasRec::new(&config, 15).expect("model");
        let input = input(&config, 15);
        let w = model.weights(true);
        let l = loss_graph(&model, &w, &input, Some(4)).expect("loss");
        let dense = l.backward().expect("backward");
        let compact = compact_gradients(&model, &input, 4).expect("compact");
        let ld = l.to_scalar::<f32>().expect("scalar");
        assert!(
            (ld - compact.loss).abs() <= 1e-6 * ld.abs().max(1.0),
            "{loss:?}"
        );
        // The compact gradient scattered back is the dense one.
        let d = config.hidden;
        let table = values(&compact.table_grad);
        let mut scattered = vec![0f32; 16 * d];
        for (item, &s) in compact.slot.iter().enumerate() {
            if s != NO_SLOT {
                let s = s as usize;
                scattered[item * d..(item + 1) * d].copy_from_slice(&table[s * d..(s + 1) * d]);
            }
        }
        let want = values(dense.get(model.vars[0].as_tensor()).expect("item grad"));
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        for (a, b) in want.iter().zip(&scattered) {
            assert!((a - b).abs() <= 1e-5 * scale, "{loss:?}: {a} vs {b}");
        }
        for (name, var) in model.names.iter().zip(&model.vars).skip(1) {
            let a = values(dense.get(var.as_tensor()).expect("grad"));
            let b = values(compact.grads.get(var.as_tensor()).expect("grad"));
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() <= 1e-5 * scale,
                    "{loss:?}: {name}: {x} vs {y}"
                );
            }
        }
        // Adam from the compact gradient (rows without a slot included) moves every weight
        // exactly as from the same gradient written out densely.
        for l2 in [0.0, 0.01] {
            let a = SasRec::new(&config, 15).expect("model");
            let b = SasRec::new(&config, 15).expect("model");
            let mut adam_a = Adam::new(&a.vars, 0.01, 0.9, 0.98, l2);
            let mut adam_b = Adam::new(&b.vars, 0.01, 0.9, 0.98, l2);
            let grad = Tensor::from_vec(scattered.clone(), (16, d), &candle_core::Device::Cpu)
                .expect("tensor");
            for _ in 0..2 {
                let wa = a.weights(true);
                let la = loss_graph(&a, &wa, &input, Some(4)).expect("loss");
                let mut ga = la.backward().expect("backward");
                ga.insert(a.vars[0].as_tensor(), grad.clone());
                adam_a.step(&a.vars, &ga).expect("dense");
                adam_b
                    .step_with_sparse_first(
                        &b.vars,
                        &ga,
                        Some((&compact.table_grad, &compact.slot)),
                    )
                    .expect("sparse");
            }
            let (va, vb) = (values(a.vars[0].as_tensor()), values(b.vars[0].as_tensor()));
            assert_eq!(va, vb, "{loss:?} l2 {l2}");
        }
    }
}

/// The loss and every weight's gradient, with the blocks fused or op by op.
fn loss_and_gradients(
    model: &SasRec,
    input: &StepInput,
    seed: Option<u64>,
    unfused: bool,
) -> (f32, Vec<Vec<f32>>) {
    super::model::reference::UNFUSED.with(|u| u.set(unfused));
    let w = model.weights(true);
    let l = loss_graph(model, &w, input, seed).expect("loss");
    let grads = l.backward().expect("backward");
    super::model::reference::UNFUSED.with(|u| u.set(false));
    let g = model
        .vars
        .iter()
        .map(|v| values(grads.get(v.as_tensor()).expect("gradient")))
        .collect();
    (l.to_scalar::<f32>().expect("scalar"), g)
}

#[test]
fn the_fused_block_matches_the_op_by_op_graph() {
    for loss in ALL_LOSSES {
        for (dropout, heads) in [(0.0, 1), (0.3, 2), (0.5, 1)] {
            let config = tiny(loss, dropout, heads);
            let model = SasRec::new(&config, 15).expect("model");
            let input = input(&config, 15);
            for seed in [Some(5), None] {
                let (la, ga) = loss_and_gradients(&model, &input, seed, false);
                let (lb, gb) = loss_and_gradients(&model, &input, seed, true);
                let what = format!("{loss:?} dropout {dropout} heads {heads} seed {seed:?}");
                assert!(
                    (la - lb).abs() <= 1e-5 * lb.abs().max(1.0),
                    "{what}: {la} vs {lb}"
                );
                for ((name, a), b) in model.names.iter().zip(&ga).zip(&gb) {
                    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
                    for (i, (x, y)) in a.iter().zip(b).enumerate() {
                        assert!(
                            (x - y).abs() <= 1e-4 * scale,
                            "{what}: {name}[{i}]: fused {x} vs op by op {y}"
                        );
                    }
                }
            }
        }
    }
}
