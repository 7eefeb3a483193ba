use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;

fn arm(shows: f64, clicks: f64) -> Arm {
    Arm { shows, clicks }
}

fn item(s: &str) -> ItemId {
    ItemId::new(s).unwrap()
}

fn items(ids: &[&str]) -> Vec<ItemId> {
    ids.iter().map(|s| item(s)).collect()
}

/// How often, in `trials` seeded draws, `a` draws higher than `b`.
fn win_rate(a: (Arm, bool), b: (Arm, bool), trials: usize, seed: u64) -> f64 {
    let params = BanditParams::default();
    let mut rng = SmallRng::seed_from_u64(seed);
    let wins = (0..trials)
        .filter(|_| {
            draw(a.0, a.1, &params, &mut rng).sample > draw(b.0, b.1, &params, &mut rng).sample
        })
        .count();
    wins as f64 / trials as f64
}

#[test]
fn a_seeded_rng_gives_the_same_ranking() {
    let params = BanditParams::default();
    let candidates: Vec<Candidate<usize>> = (0..50)
        .map(|i| Candidate {
            item: i,
            arm: arm(i as f64 * 10.0, i as f64),
            is_new: i % 7 == 0,
        })
        .collect();
    let run = |seed| {
        rank(
            candidates.clone(),
            10,
            &params,
            &mut SmallRng::seed_from_u64(seed),
        )
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43), "another seed, another ranking");
    let ranked = run(42);
    assert_eq!(ranked.len(), 10);
    assert!(ranked.windows(2).all(|w| w[0].1.sample >= w[1].1.sample));
}

#[test]
fn rank_keeps_the_best_n_of_all_draws_in_order() {
    let params = BanditParams::default();
    let candidates: Vec<Candidate<usize>> = (0..30)
        .map(|i| Candidate {
            item: i,
            arm: arm(100.0, (i % 9) as f64),
            is_new: false,
        })
        .collect();
    let all = rank(
        candidates.clone(),
        usize::MAX,
        &params,
        &mut SmallRng::seed_from_u64(1),
    );
    assert_eq!(all.len(), 30);
    for n in [0, 1, 5, 29, 30] {
        let top = rank(
            candidates.clone(),
            n,
            &params,
            &mut SmallRng::seed_from_u64(1),
        );
        assert_eq!(top, all[..n], "n = {n}");
    }
    let none: Vec<(usize, Draw)> = rank(Vec::new(), 3, &params, &mut SmallRng::seed_from_u64(1));
    assert!(none.is_empty());
}

#[test]
fn equal_draws_keep_the_input_order() {
    // Beta(0.01, 0.01) puts nearly all its mass at 0 and 1: many draws are exactly 1.0.
    let params = BanditParams {
        prior_alpha: 0.01,
        prior_beta: 0.01,
        ..BanditParams::default()
    };
    let candidates = (0..40).map(|item| Candidate {
        item,
        arm: Arm::default(),
        is_new: false,
    });
    let ranked = rank(candidates, 40, &params, &mut SmallRng::seed_from_u64(3));
    let ties = ranked
        .windows(2)
        .filter(|w| w[0].1.sample == w[1].1.sample)
        .inspect(|w| assert!(w[0].0 < w[1].0, "{w:?}"))
        .count();
    assert!(ties > 5, "the case needs ties: {ranked:?}");
}

#[test]
fn the_posterior_concentrates_on_the_better_arm() {
    let good = (arm(1000.0, 100.0), false);
    let poor = (arm(1000.0, 10.0), false);
    assert!(win_rate(good, poor, 5000, 11) > 0.999);
    let params = BanditParams::default();
    assert!((mean(good.0, &params) - 101.0 / 1020.0).abs() < 1e-12);
    assert!((mean(poor.0, &params) - 11.0 / 1020.0).abs() < 1e-12);
}

#[test]
fn a_new_item_is_explored_but_a_clearly_better_established_one_usually_wins() {
    let fresh = (Arm::default(), true);
    let mediocre = (arm(1000.0, 20.0), false);
    let strong = (arm(1000.0, 150.0), false);
    let against_mediocre = win_rate(fresh, mediocre, 5000, 21);
    assert!(
        against_mediocre > 0.5,
        "a new item should often beat a 2 % arm: {against_mediocre}"
    );
    let against_strong = win_rate(fresh, strong, 5000, 22);
    assert!(
        against_strong > 0.01 && against_strong < 0.25,
        "a new item should sometimes, not usually, beat a 15 % arm: {against_strong}"
    );
    // The boost is what makes a new item more adventurous than an old one without history.
    let old_unseen = (Arm::default(), false);
    assert!(win_rate(fresh, old_unseen, 5000, 23) > 0.55);
}

#[test]
fn the_new_item_boost_fades_with_shows() {
    let params = BanditParams::default();
    let shapes = |shows: f64, is_new| params.shapes(arm(shows, 0.0), is_new);
    assert_eq!(shapes(0.0, true).0, 2.0);
    assert_eq!(shapes(100.0, true).0, 1.5);
    assert_eq!(shapes(200.0, true), shapes(200.0, false));
    assert_eq!(shapes(5000.0, true), shapes(5000.0, false));
    let off = BanditParams {
        new_item_shows: 0.0,
        ..BanditParams::default()
    };
    assert_eq!(off.shapes(Arm::default(), true), (1.0, 19.0));
}

#[test]
fn evidence_is_capped_keeping_the_mean() {
    let params = BanditParams::default();
    let (alpha, beta) = params.shapes(arm(1e7, 1e6), false);
    assert!((alpha + beta - params.max_evidence).abs() < 1e-6);
    let capped_mean = alpha / (alpha + beta);
    assert!((capped_mean - mean(arm(1e7, 1e6), &params)).abs() < 1e-12);
}

#[test]
fn impossible_counts_are_mended() {
    assert_eq!(arm(-3.0, 2.0).sanitized(), arm(0.0, 0.0));
    assert_eq!(arm(5.0, 9.0).sanitized(), arm(5.0, 5.0));
    assert_eq!(arm(f64::NAN, 1.0).sanitized(), arm(0.0, 0.0));
    assert_eq!(arm(f64::INFINITY, 1.0).sanitized(), arm(0.0, 0.0));
    assert_eq!(arm(4.0, f64::NAN).sanitized(), arm(4.0, 0.0));
}

/// Counts of every kind, the weird ones often.
fn count() -> impl Strategy<Value = f64> {
    prop_oneof![
        0.0..1e4f64,
        Just(0.0),
        Just(-1.0),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        1e9..1e300f64,
        proptest::num::f64::ANY,
    ]
}

/// Parameters in range, at the edges, and out of range (a caller may skip `validate`).
fn param() -> impl Strategy<Value = f64> {
    prop_oneof![
        0.01..100.0f64,
        Just(0.0),
        Just(0.01),
        Just(1e6),
        Just(1e9),
        Just(f64::NAN),
        Just(-1.0),
        proptest::num::f64::ANY,
    ]
}

fn params() -> impl Strategy<Value = BanditParams> {
    (param(), param(), param(), param(), param()).prop_map(|(a, b, boost, shows, cap)| {
        BanditParams {
            prior_alpha: a,
            prior_beta: b,
            new_item_boost: boost,
            new_item_shows: shows,
            max_evidence: cap,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn draws_are_finite_rates_for_any_input(
        shows in count(),
        clicks in count(),
        is_new in any::<bool>(),
        params in params(),
        seed in any::<u64>(),
    ) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let d = draw(arm(shows, clicks), is_new, &params, &mut rng);
        prop_assert!(d.sample.is_finite() && (0.0..=1.0).contains(&d.sample), "{d:?}");
        prop_assert!(d.alpha.is_finite() && d.alpha > 0.0, "{d:?}");
        prop_assert!(d.beta.is_finite() && d.beta > 0.0, "{d:?}");
        let m = mean(arm(shows, clicks), &params);
        prop_assert!(m.is_finite() && (0.0..=1.0).contains(&m), "{m}");
    }

    #[test]
    fn validated_params_draw_finite_rates(
        a in 0.01..1e6f64,
        b in 0.01..1e6f64,
        boost in 0.0..1e6f64,
        cap in 2.0..1e9f64,
        shows in 0.0..1e12f64,
        clicks in 0.0..1e12f64,
        seed in any::<u64>(),
    ) {
        let params = BanditParams {
            prior_alpha: a,
            prior_beta: b,
            new_item_boost: boost,
            new_item_shows: 200.0,
            max_evidence: cap,
        };
        prop_assert!(params.validate().is_ok());
        let d = draw(arm(shows, clicks), true, &params, &mut SmallRng::seed_from_u64(seed));
        prop_assert!(d.sample.is_finite() && (0.0..=1.0).contains(&d.sample), "{d:?}");
    }

    #[test]
    fn rank_returns_the_top_n_in_order(
        counts in proptest::collection::vec((count(), count(), any::<bool>()), 0..40),
        n in 0usize..50,
        seed in any::<u64>(),
    ) {
        let params = BanditParams::default();
        let candidates = counts
            .iter()
            .enumerate()
            .map(|(i, &(s, c, is_new))| Candidate { item: i, arm: arm(s, c), is_new });
        let ranked = rank(candidates, n, &params, &mut SmallRng::seed_from_u64(seed));
        prop_assert_eq!(ranked.len(), n.min(counts.len()));
        prop_assert!(ranked.windows(2).all(|w| w[0].1.sample >= w[1].1.sample));
        let mut seen: Vec<usize> = ranked.iter().map(|(i, _)| *i).collect();
        seen.sort_unstable();
        seen.dedup();
        prop_assert_eq!(seen.len(), ranked.len());
    }
}

/// 20 arms with fixed true click rates; each round shows the bandit's top 3 and clicks each shown
/// item with its true rate. Returns, per round, whether the best arm was shown and the regret
/// (expected clicks of the best 3 minus those of the 3 shown).
fn simulate(rounds: usize, seed: u64) -> (Vec<bool>, Vec<f64>) {
    let rates: Vec<f64> = (0..20).map(|i| 0.01 + 0.01 * i as f64).collect();
    let best = rates.len() - 1;
    let top3: f64 = rates.iter().rev().take(3).sum();
    let params = BanditParams::default();
    let mut arms = vec![Arm::default(); rates.len()];
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut best_shown = Vec::with_capacity(rounds);
    let mut regret = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let candidates = arms.iter().enumerate().map(|(i, &arm)| Candidate {
            item: i,
            arm,
            is_new: false,
        });
        let shown: Vec<usize> = rank(candidates, 3, &params, &mut rng)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        for &i in &shown {
            arms[i].shows += 1.0;
            if rng.random_bool(rates[i]) {
                arms[i].clicks += 1.0;
            }
        }
        best_shown.push(shown.contains(&best));
        regret.push(top3 - shown.iter().map(|&i| rates[i]).sum::<f64>());
    }
    (best_shown, regret)
}

#[test]
fn in_simulation_regret_is_sublinear_and_beats_uniform_choice() {
    let rounds = 5000;
    let rates_mean = (0..20).map(|i| 0.01 + 0.01 * i as f64).sum::<f64>() / 20.0;
    let top3 = 0.20 + 0.19 + 0.18;
    // Showing 3 arms uniformly at random loses this much per round, in expectation.
    let uniform_per_round = top3 - 3.0 * rates_mean;
    for seed in [1, 2, 3] {
        let (best_shown, regret) = simulate(rounds, seed);
        let late = &best_shown[rounds - 1000..];
        let share = late.iter().filter(|&&b| b).count() as f64 / late.len() as f64;
        assert!(
            share > 0.8,
            "seed {seed}: the best arm was shown in {share} of the last 1,000 rounds"
        );
        let first: f64 = regret[..1000].iter().sum();
        let last: f64 = regret[rounds - 1000..].iter().sum();
        assert!(
            last < first / 2.0,
            "seed {seed}: regret per 1,000 rounds went from {first} to {last}"
        );
        let total: f64 = regret.iter().sum();
        assert!(
            total < 0.25 * uniform_per_round * rounds as f64,
            "seed {seed}: regret {total} against {} for uniform choice",
            uniform_per_round * rounds as f64
        );
    }
}

#[test]
fn default_params_are_valid_and_round_trip() {
    let params = BanditParams::default();
    params.validate().unwrap();
    let yaml = serde_norway::to_string(&params).unwrap();
    assert_eq!(
        serde_norway::from_str::<BanditParams>(&yaml).unwrap(),
        params
    );
    let partial: BanditParams = serde_norway::from_str("prior_beta: 49\n").unwrap();
    assert_eq!(partial.prior_beta, 49.0);
    assert_eq!(partial.prior_alpha, 1.0);
}

#[test]
fn bad_params_name_their_field() {
    let cases = [
        ("prior_alpha: 0\n", "prior_alpha"),
        ("prior_beta: -1\n", "prior_beta"),
        ("new_item_boost: .nan\n", "new_item_boost"),
        ("new_item_shows: -5\n", "new_item_shows"),
        ("max_evidence: 1\n", "max_evidence"),
    ];
    for (text, field) in cases {
        let err = serde_norway::from_str::<BanditParams>(text).unwrap_err();
        assert!(
            err.to_string().contains("must be a finite number"),
            "{text:?}: {err}"
        );
        let mut params = BanditParams::default();
        let value = match field {
            "new_item_boost" => f64::NAN,
            _ => -1.0,
        };
        match field {
            "prior_alpha" => params.prior_alpha = value,
            "prior_beta" => params.prior_beta = value,
            "new_item_boost" => params.new_item_boost = value,
            "new_item_shows" => params.new_item_shows = value,
            _ => params.max_evidence = value,
        }
        assert_eq!(params.validate().unwrap_err().field(), field);
    }
    let err = serde_norway::from_str::<BanditParams>("prior_gamma: 1\n").unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}

#[test]
fn surfaces_are_validated() {
    assert_eq!(
        Surface::new("pdp:similar/v2").unwrap().as_str(),
        "pdp:similar/v2"
    );
    assert_eq!(
        Surface::new("").unwrap_err(),
        Error::Empty {
            field: "surface".into()
        }
    );
    assert!(matches!(
        Surface::new("x".repeat(65)).unwrap_err(),
        Error::TooLong {
            len: 65,
            max: 64,
            ..
        }
    ));
    for bad in ["home page", "a\u{0}b", "é", "a{b}", "a*"] {
        assert_eq!(Surface::new(bad).unwrap_err().field(), "surface", "{bad:?}");
    }
    let err = serde_norway::from_str::<Surface>("\"a b\"").unwrap_err();
    assert!(err.to_string().contains("ASCII"), "{err}");
}

#[test]
fn feedback_is_validated_and_counts_each_item_once() {
    let home = Surface::new("home").unwrap();
    let fb = Feedback::new(
        home.clone(),
        items(&["a", "b", "a", "c"]),
        items(&["b", "b"]),
    )
    .unwrap();
    assert_eq!(fb.shown(), items(&["a", "b", "c"]));
    assert_eq!(fb.clicked(), items(&["b"]));
    assert_eq!(fb.surface(), &home);
    assert!(Feedback::new(home.clone(), items(&["a"]), Vec::new()).is_ok());

    let cases: [(Vec<ItemId>, Vec<ItemId>, &str); 3] = [
        (Vec::new(), Vec::new(), "shown"),
        (
            (0..=MAX_SHOWN).map(|i| item(&format!("i{i}"))).collect(),
            Vec::new(),
            "shown",
        ),
        (items(&["a", "b"]), items(&["b", "z"]), "clicked"),
    ];
    for (shown, clicked, field) in cases {
        let err = Feedback::new(home.clone(), shown, clicked).unwrap_err();
        assert_eq!(err.field(), field, "{err}");
    }
    let err = Feedback::new(home, items(&["a"]), items(&["z"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "clicked: item z is not among the shown items"
    );
}
