//! Reusable `f32` buffers for the training step's large temporaries (activations kept for the
//! backward pass, gradients, attention weights). A fresh multi-megabyte allocation costs a page
//! fault and a page clear per 4 KiB (about a fifth of a step when every temporary was fresh);
//! a buffer handed back here is reused by the next step with its pages already mapped.

use std::sync::Mutex;

static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// Most buffers kept (a step of a few blocks needs a few dozen).
const MAX_BUFFERS: usize = 64;

/// Most floats kept in all (1 GiB).
const MAX_FLOATS: usize = 1 << 28;

/// A buffer of `len` values with unspecified contents (every value must be written before it is
/// read): the pool's smallest that is large enough, else a fresh one.
pub(super) fn take(len: usize) -> Vec<f32> {
    let found = POOL.lock().ok().and_then(|mut pool| {
        let best = pool
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i)?;
        Some(pool.swap_remove(best))
    });
    let mut v = found.unwrap_or_default();
    if v.len() > len {
        v.truncate(len);
    } else {
        v.resize(len, 0.0);
    }
    v
}

/// Hands a buffer back for reuse (dropped if the pool is full).
pub(super) fn put(v: Vec<f32>) {
    if v.capacity() == 0 {
        return;
    }
    if let Ok(mut pool) = POOL.lock() {
        let held: usize = pool.iter().map(Vec::capacity).sum();
        if pool.len() < MAX_BUFFERS && held + v.capacity() <= MAX_FLOATS {
            pool.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn buffers_come_back_with_the_asked_length() {
        let mut v = super::take(1000);
        assert_eq!(v.len(), 1000);
        v.fill(3.0);
        super::put(v);
        let w = super::take(10);
        assert_eq!(w.len(), 10);
        let x = super::take(5000);
        assert_eq!(x.len(), 5000);
    }
}
