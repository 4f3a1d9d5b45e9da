//! Where work runs on rayon's pool.
//!
//! Two shapes of parallel work share the pool. A small model's batch goes through in fixed
//! chunks side by side ([`par_map`]); inside a chunk every kernel runs on one thread, since
//! splitting it further only adds synchronisation ([`in_chunk`]). A large model's step is one
//! stream of parallel kernels, and where that stream is driven from decides what each kernel
//! costs: from a thread outside the pool, every kernel hands its job to the pool and puts the
//! caller to sleep until the job is done, a round trip of 11–25 µs on a 2-core AMD EPYC against
//! 1–3 µs for a fork-join started on a pool thread (hundreds of kernels a decoded token).
//! [`on_pool`] moves such a stream onto the pool once.
//!
//! Which thread runs what never changes a result: kernels cut their work into pieces that
//! depend on the data and the pool's size, not on who runs them.

use crate::error::Result;
use rayon::prelude::*;
use std::cell::Cell;

thread_local! {
    static IN_CHUNK: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is running one chunk of a [`par_map`] beside others.
pub fn in_chunk() -> bool {
    IN_CHUNK.with(Cell::get)
}

/// `f(i, item)` for every item, in order of the items: on rayon's pool when there are several
/// items and the pool has several threads, one after another on the calling thread otherwise
/// (a one-thread pool shared by callers on their own threads, as the world's seeds are, would
/// run their chunks one caller at a time).
pub fn par_map<T: Send, R: Send>(items: &mut [T], f: impl Fn(usize, &mut T) -> Result<R> + Sync) -> Result<Vec<R>> {
    match items.len() > 1 && rayon::current_num_threads() > 1 {
        true => items.par_iter_mut().enumerate().map(|(i, x)| chunk(|| f(i, x))).collect(),
        false => items.iter_mut().enumerate().map(|(i, x)| f(i, x)).collect(),
    }
}

/// Runs `f` marked as a chunk, restoring the mark afterwards, also when `f` panics (a thread
/// waiting on its own fork-join may run another job meanwhile, and pool threads outlive a run).
fn chunk<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            IN_CHUNK.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(IN_CHUNK.with(|c| c.replace(true)));
    f()
}

/// Runs `f` on a pool thread, the calling thread waiting once for all of it: at once when
/// already on one, or when the pool has a single thread (nothing to fork to).
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    match rayon::current_thread_index().is_none() && rayon::current_num_threads() > 1 {
        true => rayon::scope(|_| f()),
        false => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_marked_and_the_mark_is_restored() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        pool.install(|| {
            assert!(!in_chunk());
            let mut items = vec![0usize; 4];
            let marks = par_map(&mut items, |i, x| {
                *x = i * 10;
                Ok(in_chunk())
            })
            .unwrap();
            assert_eq!(marks, vec![true; 4]);
            assert_eq!(items, vec![0, 10, 20, 30]);
            assert!(!in_chunk());
        });
    }

    #[test]
    fn on_pool_runs_on_a_pool_thread_and_returns_the_result() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        // From outside a pool (this test's thread) with a two-thread global pool, the work moves
        // onto it; from inside one it stays where it is.
        let outside = rayon::current_num_threads() > 1;
        let (on, v) = on_pool(|| (rayon::current_thread_index().is_some(), 7));
        assert_eq!((on, v), (outside, 7));
        let inside = pool.install(|| on_pool(|| rayon::current_thread_index()));
        assert!(inside.is_some());
    }
}
