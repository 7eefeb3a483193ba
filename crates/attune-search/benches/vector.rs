//! Vector retrieval: exact scan at 10k and 44k items, HNSW at 44k (384 dimensions), with the HNSW
//! build time and its recall@10 against the exact scan printed before the timings.
//!
//! `cargo bench -p attune-search --bench vector`

use std::hint::black_box;
use std::time::Instant;

use attune_search::vector::{VectorConfig, VectorHit, VectorIndex};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIM: usize = 384;
const QUERIES: usize = 200;

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

/// A standard normal draw (Box–Muller).
fn gauss(rng: &mut StdRng) -> f32 {
    let u: f32 = 1.0 - rng.random::<f32>();
    let v: f32 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

/// Uniform on the unit sphere.
fn random_unit(rng: &mut StdRng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM).map(|_| gauss(rng)).collect();
    normalize(&mut v);
    v
}

/// Points around `centres` (noise comparable to the spread between centres), like embeddings of a
/// catalog of product families.
fn clustered(rng: &mut StdRng, centres: &[Vec<f32>], noise: f32) -> Vec<f32> {
    let c = &centres[rng.random_range(0..centres.len())];
    let mut v: Vec<f32> = c.iter().map(|x| x + noise * gauss(rng)).collect();
    normalize(&mut v);
    v
}

struct Data {
    items: Vec<Vec<f32>>,
    queries: Vec<Vec<f32>>,
}

fn random_data(n: usize, seed: u64) -> Data {
    let mut rng = StdRng::seed_from_u64(seed);
    Data {
        items: (0..n).map(|_| random_unit(&mut rng)).collect(),
        queries: (0..QUERIES).map(|_| random_unit(&mut rng)).collect(),
    }
}

fn clustered_data(n: usize, seed: u64) -> Data {
    let mut rng = StdRng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..400).map(|_| random_unit(&mut rng)).collect();
    let noise = 1.0 / (DIM as f32).sqrt();
    Data {
        items: (0..n)
            .map(|_| clustered(&mut rng, &centres, noise))
            .collect(),
        queries: (0..QUERIES)
            .map(|_| clustered(&mut rng, &centres, noise))
            .collect(),
    }
}

/// Points near a random 24-dimensional subspace: like real text embeddings, whose intrinsic
/// dimension is far below their 384 coordinates.
fn low_rank_data(n: usize, seed: u64) -> Data {
    const RANK: usize = 24;
    let mut rng = StdRng::seed_from_u64(seed);
    let basis: Vec<Vec<f32>> = (0..RANK).map(|_| random_unit(&mut rng)).collect();
    let point = |rng: &mut StdRng| {
        let mut v: Vec<f32> = (0..DIM).map(|_| 0.05 * gauss(rng)).collect();
        for b in &basis {
            let z = gauss(rng);
            v.iter_mut().zip(b).for_each(|(x, b)| *x += z * b);
        }
        normalize(&mut v);
        v
    };
    Data {
        items: (0..n).map(|_| point(&mut rng)).collect(),
        queries: (0..QUERIES).map(|_| point(&mut rng)).collect(),
    }
}

fn fill(data: &Data, config: VectorConfig) -> VectorIndex {
    let index = VectorIndex::new(DIM, config);
    for (i, v) in data.items.iter().enumerate() {
        index.upsert(&format!("item-{i}"), v).expect("valid vector");
    }
    index
}

fn exact_config() -> VectorConfig {
    VectorConfig {
        exact_below: usize::MAX,
        ..VectorConfig::default()
    }
}

fn recall(graph: &VectorIndex, exact: &VectorIndex, queries: &[Vec<f32>], k: usize) -> f64 {
    let ids =
        |hits: Vec<VectorHit>| -> Vec<String> { hits.into_iter().map(|h| h.item_id).collect() };
    let mut found = 0;
    for q in queries {
        let truth = ids(exact.search(q, k, &|_| true).expect("valid query"));
        let got = ids(graph.search(q, k, &|_| true).expect("valid query"));
        found += got.iter().filter(|id| truth.contains(id)).count();
    }
    found as f64 / (queries.len() * k) as f64
}

/// One data set with its exact index and its HNSW index.
struct Case {
    name: &'static str,
    data: Data,
    exact: VectorIndex,
    hnsw: VectorIndex,
}

/// CPU seconds this process has used so far (user + system, from `/proc/self/stat`, assuming 100
/// ticks a second), where available: on a shared machine wall time overstates the build.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / 100.0)
}

fn case(name: &'static str, data: Data) -> Case {
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    let hnsw = fill(&data, VectorConfig::default());
    let (built, cpu) = (start.elapsed(), cpu_seconds());
    assert!(hnsw.uses_graph());
    let cpu = match (cpu_start, cpu) {
        (Some(a), Some(b)) => format!("{:.1} s CPU", b - a),
        _ => "CPU time unknown".to_owned(),
    };
    let exact = fill(&data, exact_config());
    println!(
        "{name}: hnsw built from 44k upserts (graph from the 20,000th) in {:.1} s ({cpu}); \
         recall@10 vs exact (ef_search 64, {QUERIES} queries) {:.3}",
        built.as_secs_f64(),
        recall(&hnsw, &exact, &data.queries, 10),
    );
    Case {
        name,
        data,
        exact,
        hnsw,
    }
}

fn bench(c: &mut Criterion) {
    let cases = [
        case("random", random_data(44_000, 7)),
        case("clustered", clustered_data(44_000, 8)),
        case("low-rank", low_rank_data(44_000, 9)),
    ];
    let small = Data {
        items: cases[0].data.items[..10_000].to_vec(),
        queries: Vec::new(),
    };
    let exact10 = fill(&small, VectorConfig::default());
    assert!(!exact10.uses_graph());

    let mut group = c.benchmark_group("vector");
    let mut run =
        |name: &str, index: &VectorIndex, queries: &[Vec<f32>], accept: &dyn Fn(&str) -> bool| {
            let mut i = 0;
            group.bench_function(name, |b| {
                b.iter(|| {
                    i = (i + 1) % queries.len();
                    black_box(index.search(&queries[i], 10, accept).expect("valid query"))
                })
            });
        };
    let all = |_: &str| true;
    // One item in ten passes.
    let tenth = |id: &str| id.ends_with('3');
    let queries = &cases[0].data.queries;
    run("exact 10k k=10", &exact10, queries, &all);
    run("exact 44k k=10", &cases[0].exact, queries, &all);
    run("exact 44k k=10, 10% pass", &cases[0].exact, queries, &tenth);
    for case in &cases {
        let queries = &case.data.queries;
        run(
            &format!("hnsw 44k k=10 {}", case.name),
            &case.hnsw,
            queries,
            &all,
        );
        run(
            &format!("hnsw 44k k=10, 10% pass, {}", case.name),
            &case.hnsw,
            queries,
            &tenth,
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
