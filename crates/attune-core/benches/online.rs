//! Hot path of online learning: one accepted event updates trending, co-view and session kNN;
//! and the three queries at recommendation time, on realistic states (40k items, 100k sessions
//! of 20 events).

use std::hint::black_box;
use std::time::Duration;

use attune_core::online::{
    CoKind, Cooccurrence, CooccurrenceConfig, SessionKnn, SessionKnnConfig, Trending,
    TrendingConfig,
};
use attune_core::{ItemId, Timestamp};
use criterion::{Criterion, criterion_group, criterion_main};

const ITEMS: usize = 40_000;
const SESSIONS: usize = 100_000;
const SESSION_LEN: usize = 20;
const TOPICS: usize = 400;

/// A small deterministic generator (xorshift64*), so the bench needs no RNG crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Skewed towards 0: a few popular, a long tail.
    fn skewed(&mut self, n: usize) -> usize {
        ((n as f64) * self.unit().powi(3)) as usize % n
    }
}

/// Sessions that browse one topic (100 related items) most of the time, and popular items
/// across the catalog otherwise.
fn sessions(rng: &mut Rng, items: &[ItemId], n: usize) -> Vec<Vec<ItemId>> {
    let per_topic = items.len() / TOPICS;
    (0..n)
        .map(|_| {
            let topic = rng.skewed(TOPICS);
            (0..SESSION_LEN)
                .map(|_| {
                    let i = if rng.unit() < 0.7 {
                        topic * per_topic + rng.skewed(per_topic)
                    } else {
                        rng.skewed(items.len())
                    };
                    items[i].clone()
                })
                .collect()
        })
        .collect()
}

/// How long this thread has run on a CPU (Linux: the first field of
/// `/proc/thread-self/schedstat`, in nanoseconds; updated at least every scheduler tick). On a
/// shared machine, wall-clock times include the waits for a CPU that other processes cause;
/// this does not.
fn on_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

fn at(session: usize, event: usize) -> Timestamp {
    Timestamp::from_millis(1_763_800_000_000 + session as i64 * 3_000 + event as i64 * 20_000)
}

struct State {
    trending: Trending,
    co: Cooccurrence,
    knn: SessionKnn,
}

impl State {
    fn update(&mut self, key: u64, session: &[ItemId], k: usize, t: Timestamp) {
        let item = &session[k];
        self.trending.observe(item, 1.0, t);
        self.co.observe(CoKind::View, item, &session[..k], t);
        self.knn.observe(key, item, t);
    }
}

fn bench(c: &mut Criterion) {
    let items: Vec<ItemId> = (0..ITEMS)
        .map(|i| ItemId::new(format!("item-{i}")).expect("valid id"))
        .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let history = sessions(&mut rng, &items, SESSIONS);
    let live = sessions(&mut rng, &items, 20_000);

    let mut state = State {
        trending: Trending::new(TrendingConfig::default()).expect("valid"),
        co: Cooccurrence::new(CooccurrenceConfig::default()).expect("valid"),
        // At its cap, so that new sessions evict old ones as in steady state.
        knn: SessionKnn::new(SessionKnnConfig {
            max_sessions: SESSIONS,
            ..SessionKnnConfig::default()
        })
        .expect("valid"),
    };
    for (s, session) in history.iter().enumerate() {
        for k in 0..session.len() {
            state.update(s as u64, session, k, at(s, k));
        }
    }
    eprintln!(
        "state: trending {} items, co-view {} items, session kNN {} sessions / {} items",
        state.trending.len(),
        state.co.len(CoKind::View),
        state.knn.len(),
        state.knn.item_count()
    );

    // Events of new sessions, in the order they arrive.
    let stream: Vec<(usize, usize)> = (0..live.len())
        .flat_map(|s| (0..SESSION_LEN).map(move |k| (s, k)))
        .collect();
    let mut g = c.benchmark_group("online/update");
    let mut cursor = 0usize;
    let next = |cursor: &mut usize| {
        let (s, k) = stream[*cursor % stream.len()];
        let round = *cursor / stream.len();
        *cursor += 1;
        let key = (SESSIONS + round * live.len() + s) as u64;
        (key, s, k, at(SESSIONS + round * live.len() + s, k))
    };
    g.bench_function("all three, one event", |b| {
        b.iter(|| {
            let (key, s, k, t) = next(&mut cursor);
            state.update(key, black_box(&live[s]), k, t);
        })
    });
    g.bench_function("trending", |b| {
        b.iter(|| {
            let (_, s, k, t) = next(&mut cursor);
            state.trending.observe(black_box(&live[s][k]), 1.0, t);
        })
    });
    g.bench_function("co-view (19 earlier items, window 5)", |b| {
        b.iter(|| {
            let (_, s, k, t) = next(&mut cursor);
            let session = &live[s];
            state
                .co
                .observe(CoKind::View, black_box(&session[k]), &session[..k], t);
        })
    });
    g.bench_function("session kNN", |b| {
        b.iter(|| {
            let (key, s, k, t) = next(&mut cursor);
            state.knn.observe(key, black_box(&live[s][k]), t);
        })
    });
    g.finish();

    // The same, timed on the CPU: the counter moves at scheduler ticks (a few ms), so samples
    // are long (about 2 s each).
    let mut g = c.benchmark_group("online/update, on-CPU time");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("all three, one event", |b| {
        b.iter_custom(|iters| {
            let t0 = on_cpu();
            for _ in 0..iters {
                let (key, s, k, t) = next(&mut cursor);
                state.update(key, black_box(&live[s]), k, t);
            }
            on_cpu().saturating_sub(t0)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("online/query (100 candidates)");
    let now = at(SESSIONS + 40_000, 0);
    let queries: Vec<&Vec<ItemId>> = live.iter().take(256).collect();
    let mut q = 0usize;
    let mut query = || {
        q = (q + 1) % queries.len();
        queries[q]
    };
    g.bench_function("trending top", |b| {
        b.iter(|| {
            let seq = query();
            black_box(state.trending.top(100, now, &|i| !seq.contains(i)))
        })
    });
    g.bench_function("co-view neighbors", |b| {
        b.iter(|| {
            let seq = query();
            black_box(state.co.neighbors(CoKind::View, &seq[19], 100, &|_| true))
        })
    });
    g.bench_function("co-view recommend (5 anchors)", |b| {
        b.iter(|| {
            let seq = query();
            let anchors: Vec<(ItemId, f32)> = (0..5)
                .map(|j| (seq[19 - j].clone(), 0.5f32.powi(j as i32)))
                .collect();
            black_box(
                state
                    .co
                    .recommend(CoKind::View, &anchors, 100, &|i| !seq.contains(i)),
            )
        })
    });
    g.bench_function("session kNN recommend (20-item session)", |b| {
        b.iter(|| {
            let seq = query();
            black_box(state.knn.recommend(seq, 100, &|i| !seq.contains(i), None))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
