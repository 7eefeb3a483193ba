//! The vectors of a [`VectorIndex`](super::VectorIndex), one row per item, quantized to 8 bits.
//!
//! A unit vector `v` is stored as `codes[j] = round(v[j] / scale)` with `scale = max|v[j]| / 127`
//! (one `f32` per row): a quarter of the `f32` matrix (a 384-dimension row is 384 + 4 bytes
//! instead of 1,536), and a quarter of the memory a search reads, which is what bounds HNSW (its
//! visits are random rows, each a cache miss).
//!
//! A query is quantized to 16 bits ([`Probe`]), so the products are exact integers and the only
//! error is the row's rounding: at most `scale / 2` per component, about 4·10⁻⁴ of cosine for a
//! 384-dimension embedding (whose largest component is about 0.2), below the gaps between most
//! neighbours. Neighbours closer than that may swap places.

/// Rows of `dim` 8-bit codes with one scale each.
#[derive(Debug, Clone, Default)]
pub(super) struct Rows {
    dim: usize,
    codes: Vec<i8>,
    scales: Vec<f32>,
}

/// A query quantized to 16 bits: `codes[j] · scale ≈ q[j]`.
#[derive(Debug, Clone)]
pub(super) struct Probe {
    codes: Vec<i16>,
    scale: f32,
}

impl Probe {
    /// Quantizes a finite vector.
    pub(super) fn new(q: &[f32]) -> Probe {
        let max = q.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        if max == 0.0 {
            return Probe {
                codes: vec![0; q.len()],
                scale: 0.0,
            };
        }
        let scale = max / f32::from(i16::MAX);
        Probe {
            codes: q.iter().map(|x| (x / scale).round() as i16).collect(),
            scale,
        }
    }
}

impl Rows {
    /// No rows, of `dim` components each.
    pub(super) fn new(dim: usize) -> Rows {
        Rows {
            dim,
            codes: Vec::new(),
            scales: Vec::new(),
        }
    }

    /// Room for `rows` more rows.
    pub(super) fn reserve(&mut self, rows: usize) {
        self.codes.reserve_exact(rows * self.dim);
        self.scales.reserve_exact(rows);
    }

    /// The number of rows.
    pub(super) fn len(&self) -> usize {
        self.scales.len()
    }

    /// Bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        self.codes.capacity() + self.scales.capacity() * 4
    }

    /// The quantized form of `v` (a finite vector of `dim` components): its codes and scale.
    fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
        let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        if max == 0.0 {
            return (vec![0; v.len()], 0.0);
        }
        let scale = max / 127.0;
        (
            v.iter()
                .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
                .collect(),
            scale,
        )
    }

    /// Appends a row.
    pub(super) fn push(&mut self, v: &[f32]) {
        debug_assert_eq!(v.len(), self.dim);
        let (codes, scale) = Self::quantize(v);
        self.codes.extend_from_slice(&codes);
        self.scales.push(scale);
    }

    /// Appends row `row` of `other` (same dimension) as it is.
    pub(super) fn push_from(&mut self, other: &Rows, row: u32) {
        self.codes.extend_from_slice(other.codes(row));
        self.scales.push(other.scales[row as usize]);
    }

    /// Replaces row `row` with `v`.
    pub(super) fn set(&mut self, row: u32, v: &[f32]) {
        let (codes, scale) = Self::quantize(v);
        let start = row as usize * self.dim;
        self.codes[start..start + self.dim].copy_from_slice(&codes);
        self.scales[row as usize] = scale;
    }

    /// Whether row `row` is what `v` quantizes to.
    pub(super) fn holds(&self, row: u32, v: &[f32]) -> bool {
        let (codes, scale) = Self::quantize(v);
        self.codes(row) == codes.as_slice() && self.scales[row as usize] == scale
    }

    /// Moves the last row into `row` and drops the last.
    pub(super) fn swap_remove(&mut self, row: u32) {
        let last = self.len() - 1;
        let (dim, row) = (self.dim, row as usize);
        if row != last {
            self.codes
                .copy_within(last * dim..(last + 1) * dim, row * dim);
            self.scales[row] = self.scales[last];
        }
        self.codes.truncate(last * dim);
        self.scales.truncate(last);
    }

    fn codes(&self, row: u32) -> &[i8] {
        let start = row as usize * self.dim;
        &self.codes[start..start + self.dim]
    }

    /// Row `row` as floats (a unit vector up to rounding).
    pub(super) fn get(&self, row: u32) -> Vec<f32> {
        let scale = self.scales[row as usize];
        self.codes(row)
            .iter()
            .map(|&c| f32::from(c) * scale)
            .collect()
    }

    /// Row `row` as a probe (to search from a stored vector, as inserts do).
    pub(super) fn probe(&self, row: u32) -> Probe {
        Probe {
            codes: self.codes(row).iter().map(|&c| i16::from(c)).collect(),
            scale: self.scales[row as usize],
        }
    }

    /// The dot product of the probe and row `row` (the cosine, both being unit vectors).
    #[inline]
    pub(super) fn score(&self, probe: &Probe, row: u32) -> f32 {
        dot(&probe.codes, self.codes(row)) as f32 * (probe.scale * self.scales[row as usize])
    }

    /// The dot product of rows `a` and `b`.
    #[inline]
    pub(super) fn score_rows(&self, a: u32, b: u32) -> f32 {
        let d: i64 = self
            .codes(a)
            .iter()
            .zip(self.codes(b))
            .map(|(&x, &y)| i64::from(i16::from(x) * i16::from(y)))
            .sum();
        d as f32 * (self.scales[a as usize] * self.scales[b as usize])
    }
}

/// `Σ a[j]·b[j]` in exact integers: sixteen independent 32-bit lanes over fixed-size chunks, which
/// the compiler turns into paired 16-bit multiply-adds, summed in 64 bits. No overflow below
/// 8,000 dimensions: each product is below 2^22, so a lane holds 2^9 of them.
#[inline]
fn dot(a: &[i16], b: &[i8]) -> i64 {
    const LANES: usize = 16;
    let (a_chunks, a_rest) = a.as_chunks::<LANES>();
    let (b_chunks, b_rest) = b.as_chunks::<LANES>();
    let mut acc = [0i32; LANES];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for ((s, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *s += i32::from(x) * i32::from(y);
        }
    }
    let mut tail = 0i64;
    for (&x, &y) in a_rest.iter().zip(b_rest) {
        tail += i64::from(i32::from(x) * i32::from(y));
    }
    acc.iter().map(|&s| i64::from(s)).sum::<i64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn unit(rng: &mut StdRng, dim: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() - 0.5).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    fn exact(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn scores_are_within_the_rounding_of_the_exact_cosine() {
        let mut rng = StdRng::seed_from_u64(1);
        for dim in [1, 3, 16, 17, 384] {
            let mut rows = Rows::new(dim);
            let vectors: Vec<Vec<f32>> = (0..50).map(|_| unit(&mut rng, dim)).collect();
            for v in &vectors {
                rows.push(v);
            }
            for _ in 0..20 {
                let q = unit(&mut rng, dim);
                let probe = Probe::new(&q);
                for (r, v) in vectors.iter().enumerate() {
                    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                    // Each component is off by at most half a step; a unit query bounds the sum.
                    let bound = max / 127.0 / 2.0 * (dim as f32).sqrt() + 1e-4;
                    let got = rows.score(&probe, r as u32);
                    assert!((got - exact(&q, v)).abs() <= bound, "{dim}: {got}");
                    let both = rows.score_rows(r as u32, 0);
                    assert!((both - exact(v, &vectors[0])).abs() <= 2.0 * bound);
                }
            }
        }
    }

    #[test]
    fn rows_round_trip_and_move() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut rows = Rows::new(8);
        let (a, b, c) = (unit(&mut rng, 8), unit(&mut rng, 8), unit(&mut rng, 8));
        for v in [&a, &b, &c] {
            rows.push(v);
        }
        assert!(rows.holds(1, &b) && !rows.holds(1, &a));
        for (x, y) in rows.get(1).iter().zip(&b) {
            assert!((x - y).abs() <= 0.5 / 127.0 + 1e-6);
        }
        rows.swap_remove(0);
        assert_eq!(rows.len(), 2);
        assert!(rows.holds(0, &c) && rows.holds(1, &b));
        rows.set(1, &a);
        assert!(rows.holds(1, &a));
        let mut copy = Rows::new(8);
        copy.push_from(&rows, 1);
        assert!(copy.holds(0, &a));
        assert!(copy.heap_bytes() >= 8 + 4);
        // The largest component maps to ±127 exactly, the probe's to ±32767.
        let probe = rows.probe(1);
        assert!(probe.codes.iter().any(|c| c.abs() == 127));
        assert!(Probe::new(&a).codes.iter().any(|c| c.abs() == 32767));
    }

    #[test]
    fn the_integer_dot_handles_any_length() {
        for n in [0, 1, 15, 16, 17, 33, 384] {
            let a: Vec<i16> = (0..n).map(|i| ((i % 7) as i16 - 3) * 4000).collect();
            let b: Vec<i8> = (0..n).map(|i| ((i % 5) as i8 - 2) * 60).collect();
            let want: i64 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| i64::from(x) * i64::from(y))
                .sum();
            assert_eq!(dot(&a, &b), want, "{n}");
        }
    }
}
