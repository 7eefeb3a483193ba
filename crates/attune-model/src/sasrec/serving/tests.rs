//! The serving path against the candle path, on random models.

use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// A model of this shape whose every weight is random (biases and layer norms included,
/// unlike a fresh model's zeros and ones), with item `zero_item`'s embedding all zeros.
fn random_model(config: &SasRecConfig, num_items: usize, seed: u64) -> SasRec {
    let model = SasRec::new(config, num_items).expect("model");
    let mut rng = StdRng::seed_from_u64(seed);
    for var in &model.vars {
        let values: Vec<f32> = with_f32(var.as_tensor(), |v| Ok(v.to_vec())).expect("values");
        let noisy: Vec<f32> = values
            .iter()
            .map(|v| v + 0.3 * (rng.random::<f32>() * 2.0 - 1.0))
            .collect();
        let t = Tensor::from_vec(noisy, var.dims(), &candle_core::Device::Cpu).expect("t");
        var.set(&t).expect("set");
    }
    model
}

fn with_zero_row(model: &SasRec, item: usize) {
    let d = model.config.hidden;
    let var = &model.vars[0];
    let mut values: Vec<f32> = with_f32(var.as_tensor(), |v| Ok(v.to_vec())).expect("values");
    values[item * d..(item + 1) * d].fill(0.0);
    let t = Tensor::from_vec(values, var.dims(), &candle_core::Device::Cpu).expect("t");
    var.set(&t).expect("set");
}

fn close(got: f32, want: f32) -> bool {
    (got - want).abs() <= 1e-4 * want.abs().max(1.0)
}

/// `(hidden, heads, blocks, max_len, cosine_scale, num_items)`: 1–2 blocks and heads, head
/// sizes that are not whole SIMD vectors, item counts that are not whole groups of four.
const CONFIGS: [(usize, usize, usize, usize, f64, usize); 8] = [
    (8, 1, 1, 4, 0.0, 37),
    (8, 2, 2, 6, 0.0, 40),
    (16, 2, 2, 5, 4.0, 41),
    (12, 1, 2, 7, 16.0, 38),
    (50, 2, 2, 6, 0.0, 39),
    (50, 1, 1, 3, 16.0, 43),
    (32, 2, 2, 20, 16.0, 200),
    (24, 3, 1, 1, 2.0, 9),
];

fn config(hidden: usize, heads: usize, blocks: usize, max_len: usize, cos: f64) -> SasRecConfig {
    SasRecConfig {
        hidden,
        heads,
        blocks,
        max_len,
        cosine_scale: cos,
        dropout: 0.3,
        seed: 11,
        threads: 1,
        ..SasRecConfig::default()
    }
}

/// Random sequences of every length from empty to past `max_len`, with padding (0) and
/// unknown indices (above `num_items`) among the items, and some of nothing but those.
fn sequences(max_len: usize, num_items: usize, rng: &mut StdRng) -> Vec<Vec<u32>> {
    let top = u32::try_from(num_items).expect("items") + 3;
    let mut out = vec![vec![], vec![0], vec![top - 1, 0, top]];
    for len in 1..=max_len + 3 {
        for _ in 0..4 {
            out.push((0..len).map(|_| rng.random_range(0..=top)).collect());
        }
    }
    out
}

#[test]
fn serving_scores_equal_the_candle_path_on_random_models() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut worst = 0f32;
    for (k, &(hidden, heads, blocks, max_len, cos, n)) in CONFIGS.iter().enumerate() {
        let config = config(hidden, heads, blocks, max_len, cos);
        let model = random_model(&config, n, k as u64);
        with_zero_row(&model, 3);
        let serving = model.serving().expect("serving");
        let seqs = sequences(max_len, n, &mut rng);
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        let want = model.score_all(&refs).expect("scores");
        let states = model.output_states(&refs).expect("states");
        let mut got = Vec::new();
        for (s, seq) in seqs.iter().enumerate() {
            let state = serving.state(seq);
            let want_state = &states[s * hidden..(s + 1) * hidden];
            for (j, (&g, &w)) in state.iter().zip(want_state).enumerate() {
                assert!(close(g, w), "config {k}, {seq:?}: state[{j}] {g} vs {w}");
            }
            serving.score_all_into(seq, &mut got);
            assert_eq!(got.len(), n + 1);
            for (i, (&g, &w)) in got.iter().zip(&want[s]).enumerate() {
                assert!(close(g, w), "config {k}, {seq:?}: item {i} {g} vs {w}");
                worst = worst.max((g - w).abs() / w.abs().max(1.0));
            }
        }
        // The trait gives the same, for a batch.
        assert_eq!(
            SequenceScorer::score_all(&serving, &refs).expect("scores"),
            seqs.iter()
                .map(|s| {
                    serving.score_all_into(s, &mut got);
                    got.clone()
                })
                .collect::<Vec<_>>()
        );
    }
    eprintln!("worst difference {worst:.2e} (of max(1, |score|))");
}

#[test]
fn candidate_scores_are_their_entries_in_score_all() {
    let mut rng = StdRng::seed_from_u64(6);
    for (k, &(hidden, heads, blocks, max_len, cos, n)) in CONFIGS.iter().enumerate() {
        let config = config(hidden, heads, blocks, max_len, cos);
        let model = random_model(&config, n, 100 + k as u64);
        let serving = model.serving().expect("serving");
        let top = u32::try_from(n).expect("items") + 2;
        let (mut all, mut picked) = (Vec::new(), Vec::new());
        for seq in sequences(max_len, n, &mut rng) {
            // Every index, some twice, and indices that are not items.
            let mut candidates: Vec<u32> = (0..=top).rev().collect();
            candidates.extend((0..50).map(|_| rng.random_range(0..=top)));
            serving.score_all_into(&seq, &mut all);
            serving.score_candidates_into(&seq, &candidates, &mut picked);
            assert_eq!(picked.len(), candidates.len());
            for (&c, &score) in candidates.iter().zip(&picked) {
                if c == 0 || c as usize > n {
                    assert_eq!(score, f32::NEG_INFINITY, "{c}");
                } else {
                    assert_eq!(
                        score.to_bits(),
                        all[c as usize].to_bits(),
                        "config {k}: {c}"
                    );
                }
            }
            // And the candle path's candidate scores.
            let want = model
                .score_candidates(&[&seq], &[&candidates])
                .expect("candidates");
            for (&g, &w) in picked.iter().zip(&want[0]) {
                assert!(g == w || close(g, w), "config {k}: {g} vs {w}");
            }
        }
    }
}

#[test]
fn a_serving_copy_does_not_follow_later_changes_to_the_model() {
    let config = config(8, 2, 2, 5, 4.0);
    let model = random_model(&config, 20, 1);
    let serving = model.serving().expect("serving");
    let before = model.score_all(&[&[1, 2, 3]]).expect("scores");
    let model_after = random_model(&config, 20, 2);
    let mut got = Vec::new();
    serving.score_all_into(&[1, 2, 3], &mut got);
    assert!(got.iter().zip(&before[0]).all(|(&g, &w)| close(g, w)));
    let after = model_after.score_all(&[&[1, 2, 3]]).expect("scores");
    assert!(got.iter().zip(&after[0]).any(|(&g, &w)| !close(g, w)));
}

/// The definition [`Serving::top_accepted`] must equal: every item scored, sorted (higher
/// score, then lower index), the first `k` accepted, padding and non-finite scores left out.
fn by_full_sort(
    serving: &Serving,
    seq: &[u32],
    k: usize,
    accept: &dyn Fn(u32) -> bool,
) -> Vec<(u32, f32)> {
    let mut all = Vec::new();
    serving.score_all_into(seq, &mut all);
    let mut order: Vec<u32> = (1..all.len() as u32)
        .filter(|&i| all[i as usize].is_finite())
        .collect();
    order.sort_by(|&a, &b| all[b as usize].total_cmp(&all[a as usize]).then(a.cmp(&b)));
    order
        .into_iter()
        .filter(|&i| accept(i))
        .take(k)
        .map(|i| (i, all[i as usize]))
        .collect()
}

/// Which items a case accepts.
type Accept<'a> = Box<dyn Fn(u32) -> bool + 'a>;

/// Both as `(index, score bits)`, so that equal means bit for bit.
fn bits(list: &[(u32, f32)]) -> Vec<(u32, u32)> {
    list.iter().map(|&(i, s)| (i, s.to_bits())).collect()
}

#[test]
fn top_accepted_equals_sorting_every_score() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut configs: Vec<_> = CONFIGS.to_vec();
    // Larger tables, where the bounds leave most items out.
    configs.extend([(32, 2, 2, 8, 16.0, 3_000), (32, 1, 2, 8, 0.0, 2_999)]);
    for (c, &(hidden, heads, blocks, max_len, cos, n)) in configs.iter().enumerate() {
        let config = config(hidden, heads, blocks, max_len, cos);
        let model = random_model(&config, n, 300 + c as u64);
        let serving = model.serving().expect("serving");
        assert!(serving.quantized.is_some());
        let seqs = sequences(max_len, n, &mut rng);
        for (s, seq) in seqs.iter().enumerate().filter(|(s, _)| s % 3 == 0) {
            // The best items by exact score, to reject in two of the cases (the second makes
            // the selection look further down several times).
            let top: Vec<u32> = by_full_sort(&serving, seq, 300, &|_| true)
                .iter()
                .map(|p| p.0)
                .collect();
            let accepts: [(&str, Accept<'_>); 6] = [
                ("all", Box::new(|_| true)),
                ("no multiple of 3", Box::new(|i| i % 3 != 0)),
                (
                    "not the best 20",
                    Box::new(|i| !top[..20.min(top.len())].contains(&i)),
                ),
                ("not the best 300", Box::new(|i| !top.contains(&i))),
                ("a few", Box::new(|i| i % 97 == 5)),
                ("none", Box::new(|_| false)),
            ];
            for (name, accept) in &accepts {
                for k in [1, 3, 10, 50, n + 5] {
                    let want = by_full_sort(&serving, seq, k, accept.as_ref());
                    let got = serving.top_accepted(seq, k, &mut |i| accept(i));
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "config {c}, sequence {s} {seq:?}, {name}, k {k}"
                    );
                }
            }
        }
        if n >= 1_000 {
            // The bounds do their job: the items scored exactly are a small part of the table.
            serving.top_accepted(&seqs[10], 10, &mut |_| true);
            let scored = with_select_scratch(|sc| sc.short.len());
            eprintln!("config {c}: {scored} of {n} items scored exactly for k = 10");
            assert!(
                scored * 10 < n,
                "config {c}: {scored} of {n} items scored exactly"
            );
        }
    }
}

#[test]
fn a_table_that_is_not_finite_is_selected_from_exactly() {
    let config = config(8, 2, 2, 5, 0.0);
    let model = random_model(&config, 60, 9);
    let d = config.hidden;
    let var = &model.vars[0];
    let mut values: Vec<f32> = with_f32(var.as_tensor(), |v| Ok(v.to_vec())).expect("values");
    values[7 * d] = f32::NAN;
    values[8 * d + 1] = f32::INFINITY;
    let t = Tensor::from_vec(values, var.dims(), &candle_core::Device::Cpu).expect("t");
    var.set(&t).expect("set");
    let serving = model.serving().expect("serving");
    assert!(serving.quantized.is_none());
    for k in [1, 5, 70] {
        let got = serving.top_accepted(&[1, 2, 3], k, &mut |i| i != 4);
        let want = by_full_sort(&serving, &[1, 2, 3], k, &|i| i != 4);
        assert_eq!(bits(&got), bits(&want));
        assert!(got.iter().all(|&(i, s)| i != 7 && i != 8 && s.is_finite()));
    }
}

#[test]
fn the_state_cache_follows_the_sequence_and_the_model() {
    let config = config(16, 2, 2, 6, 4.0);
    let (a, b) = (random_model(&config, 30, 1), random_model(&config, 30, 2));
    let (sa, sb) = (a.serving().expect("a"), b.serving().expect("b"));
    let mut got = Vec::new();
    for seq in [
        &[1u32, 2, 3][..],
        &[1, 2, 3],
        &[1, 2, 4],
        &[0, 1, 2, 4],
        &[],
        &[1, 2, 3],
    ] {
        for (model, serving) in [(&a, &sa), (&b, &sb), (&b, &sb), (&a, &sa)] {
            serving.score_all_into(seq, &mut got);
            let want = model.score_all(&[seq]).expect("scores");
            assert!(
                got.iter().zip(&want[0]).all(|(&g, &w)| close(g, w)),
                "{seq:?}"
            );
        }
    }
}
