//! A tiny thread pool for the short parallel regions of inference. Waking a sleeping
//! thread costs tens of microseconds on a virtual machine, as much as a whole batch-1
//! layer, so after each job the workers spin for a while (a few hundred microseconds)
//! waiting for the next, then sleep. A plan runs its layers back to back, so the next
//! job usually comes while they spin. This is what onnxruntime's pool does too.
//!
//! On a shared machine a worker may not be running when a job is published. The caller
//! never waits for such a worker: a job is a set of chunks that every participant takes
//! from one counter, the caller included, and once the caller has finished the chunks it
//! closes the job. A worker that arrives after that skips it; only workers that joined in
//! time are waited for, and they are busy with a chunk.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A job: called once with each task index `0..threads`.
type Job<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    epoch: AtomicUsize,
    /// Points at the current job (a fat reference on the caller's stack); valid until
    /// `remaining` is 0.
    job: AtomicPtr<Job<'static>>,
    /// `OPEN` while workers may still join the current job, plus the number of workers
    /// inside it.
    state: AtomicUsize,
    stop: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

pub struct SpinPool {
    shared: Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

const OPEN: usize = 1 << (usize::BITS - 1);

/// How long a worker spins for the next job before it sleeps.
const SPIN: Duration = Duration::from_micros(300);

impl SpinPool {
    /// A pool that runs jobs on the caller plus `threads - 1` workers.
    pub fn new(threads: usize) -> std::io::Result<SpinPool> {
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            state: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut workers = Vec::new();
        for index in 1..threads.max(1) {
            let shared = shared.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("sculpt-runtime-{index}"))
                    .spawn(move || work(&shared, index))?,
            );
        }
        Ok(SpinPool { shared, workers })
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `job(t)` on the caller (`t = 0`) and on every worker that joins in time
    /// (`t` = its index). The job must share out its work itself (from a counter), so
    /// that it is all done whoever joins; returns when every participant has finished.
    pub fn run(&self, job: Job<'_>) {
        if self.workers.is_empty() {
            job(0);
            return;
        }
        let s = &*self.shared;
        // The reference lives on this stack frame until every participant has left it.
        let erased: *const Job<'_> = &job;
        s.job.store(erased as *mut Job<'static>, Ordering::Release);
        s.state.store(OPEN, Ordering::Release);
        s.epoch.fetch_add(1, Ordering::AcqRel);
        {
            let _guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        job(0);
        // Close the job, then wait only for the workers inside it.
        s.state.fetch_and(!OPEN, Ordering::AcqRel);
        while s.state.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
    }
}

fn work(s: &Shared, index: usize) {
    let mut seen = 0;
    loop {
        let mut since = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            let epoch = s.epoch.load(Ordering::Acquire);
            if epoch != seen {
                seen = epoch;
                break;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && since.elapsed() > SPIN {
                let guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                if s.epoch.load(Ordering::Acquire) == seen && !s.stop.load(Ordering::Acquire) {
                    let _ = s.wake.wait_timeout(guard, Duration::from_millis(50));
                }
                since = Instant::now();
            } else {
                std::hint::spin_loop();
            }
        }
        // Join the job if it is still open.
        let mut state = s.state.load(Ordering::Acquire);
        let joined = loop {
            if state & OPEN == 0 {
                break false;
            }
            match s.state.compare_exchange_weak(
                state,
                state + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break true,
                Err(now) => state = now,
            }
        };
        if joined {
            let job = unsafe { &*s.job.load(Ordering::Acquire) };
            job(index);
            s.state.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for SpinPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        {
            let _guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every chunk of every job runs exactly once, whoever joins.
    #[test]
    fn every_chunk_runs_once_per_job_across_many_jobs() {
        let pool = SpinPool::new(3).unwrap();
        let chunks: Vec<AtomicUsize> = (0..64).map(|_| AtomicUsize::new(0)).collect();
        let job_once = || {
            let next = AtomicUsize::new(0);
            pool.run(&|_| loop {
                let c = next.fetch_add(1, Ordering::Relaxed);
                if c >= chunks.len() {
                    break;
                }
                chunks[c].fetch_add(1, Ordering::Relaxed);
            });
        };
        for _ in 0..2000 {
            job_once();
        }
        // Let the workers fall asleep, then wake them again.
        std::thread::sleep(Duration::from_millis(5));
        job_once();
        for c in &chunks {
            assert_eq!(c.load(Ordering::Relaxed), 2001);
        }
    }
}
