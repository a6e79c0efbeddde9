//! A decoding step's products shared between the cores by threads that spin, not sleep.
//!
//! Through rayon, a thread that finds no work soon sleeps, and a sleeping thread is woken through
//! the OS natively and through `Atomics.wait` in the page, where a wake-up takes tens of
//! microseconds. A step is some 120 products of a few hundred microseconds each, and at the end of
//! each the calling thread, waiting for the other's last share, had gone to sleep: in the page,
//! the products of one sample on two threads took 22 ms a token against 25 on one.
//!
//! So for the length of a step ([`on_pool`]) the pool's other threads (up to seven) spin on a
//! crew: the caller posts a product's tasks, every thread claims them one at a time from a
//! counter, and the caller spins until the last is done. The other cores are busy for the step's
//! milliseconds only; between steps they sleep in rayon's pool as before.

#[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
pub use pooled::{for_each, on_pool};

#[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
mod pooled {
    use std::cell::Cell;
    use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
    use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize};

    /// One task of the posted job: `f(i)`.
    type Job = &'static (dyn Fn(usize) + Sync);

    /// The state word: the job's number, its task count and the next unclaimed task, packed so a
    /// claim is one compare-and-swap that fails if another job was posted meanwhile.
    const BITS: u32 = 20;
    const MASK: u64 = (1 << BITS) - 1;

    /// At most this many threads spin beside the caller: a product has 3 to 800 tasks of a few
    /// microseconds, and on a machine with many cores more spinning threads would only take
    /// turns at the claims (and in the page spin without a pause instruction, beside a working
    /// thread on the same core).
    const HELPERS: usize = 7;

    /// The job on offer to the spinning threads, one at a time.
    struct Crew {
        /// `number << 40 | total << 20 | next`.
        state: AtomicU64,
        /// Tasks of the current job finished.
        done: AtomicUsize,
        /// Where the caller keeps the current job; valid while its tasks are unclaimed.
        job: AtomicPtr<Job>,
        /// The step is over: the spinning threads return to the pool.
        over: AtomicBool,
        /// Threads that came to spin on this step, up to [`HELPERS`].
        joined: AtomicUsize,
    }

    impl Crew {
        /// Claims and runs tasks of the job on offer until none is left unclaimed.
        fn work(&self) {
            loop {
                let s = self.state.load(Acquire);
                let (total, next) = ((s >> BITS) & MASK, s & MASK);
                if next >= total {
                    return;
                }
                let job = self.job.load(Acquire);
                if self.state.compare_exchange_weak(s, s + 1, AcqRel, Relaxed).is_ok() {
                    // Counted done even if it panics, so the poster never waits for it forever.
                    let _finished = Finished(&self.done);
                    // SAFETY: the claim succeeded on this job's number with a task left, so the
                    // job is still posted (its poster waits until every claimed task is done
                    // before posting another or returning, unwinding included), and `job` was
                    // stored before the number was (read with Acquire above).
                    unsafe { (*job)(next as usize) };
                }
            }
        }

        /// Takes the job's unclaimed tasks off offer; they count as done. Returns how many.
        fn close(&self) -> usize {
            let mut s = self.state.load(Acquire);
            loop {
                let (total, next) = ((s >> BITS) & MASK, s & MASK);
                if next >= total {
                    return 0;
                }
                match self.state.compare_exchange_weak(s, s - next + total, AcqRel, Acquire) {
                    Ok(_) => return (total - next) as usize,
                    Err(now) => s = now,
                }
            }
        }

        /// Posts `f(0..total)`, takes part, and returns once every task is done.
        fn run(&self, total: usize, f: &(dyn Fn(usize) + Sync)) {
            assert!(total as u64 <= MASK, "{total} tasks in one product");
            // SAFETY: the reference outlives every use: this function returns (or unwinds) only
            // after each task claimed under this job's number is done (`Wait`), and a claim under
            // a later number never runs this job.
            let f: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
            self.done.store(0, Relaxed);
            self.job.store(&f as *const Job as *mut Job, Release);
            let number = (self.state.load(Relaxed) >> (2 * BITS)) + 1;
            self.state.store(number << (2 * BITS) | (total as u64) << BITS, Release);
            let _wait = Wait { crew: self, total };
            self.work();
        }

        /// A spinning thread: works on each job posted until the step is over.
        fn spin(&self) {
            while !self.over.load(Acquire) {
                self.work();
                std::hint::spin_loop();
            }
        }
    }

    /// Counts a claimed task done when it ends, by returning or by unwinding.
    struct Finished<'a>(&'a AtomicUsize);
    impl Drop for Finished<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Release);
        }
    }

    /// The poster's wait for its job, on return and on unwinding (a task of its own panicked):
    /// no task starts after it, and every task started has ended, before the job's data goes.
    struct Wait<'a> {
        crew: &'a Crew,
        total: usize,
    }
    impl Drop for Wait<'_> {
        fn drop(&mut self) {
            self.crew.done.fetch_add(self.crew.close(), Release);
            while self.crew.done.load(Acquire) < self.total {
                std::hint::spin_loop();
            }
        }
    }

    thread_local!(
        /// The crew of the step running on this thread, if any.
        static CREW: Cell<*const Crew> = const { Cell::new(std::ptr::null()) }
    );

    /// Runs `f` (one decoding step) on one of rayon's threads with up to [`HELPERS`] of the
    /// pool's other threads spinning on a crew, so [`for_each`] inside shares its tasks for the
    /// cost of a claim.
    pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
        /// Ends the step, a panicking one included: the spinning threads return (the scope waits
        /// for them before it returns or unwinds), and this thread forgets the crew.
        struct Over<'a>(&'a Crew);
        impl Drop for Over<'_> {
            fn drop(&mut self) {
                self.0.over.store(true, Release);
                CREW.with(|c| c.set(std::ptr::null()));
            }
        }
        let crew = Crew { state: AtomicU64::new(0), done: AtomicUsize::new(0), job: AtomicPtr::new(std::ptr::null_mut()), over: AtomicBool::new(false), joined: AtomicUsize::new(0) };
        let crew = &crew;
        rayon::scope(|s| {
            let caller = rayon::current_thread_index();
            s.spawn_broadcast(move |_, ctx| {
                if Some(ctx.index()) != caller && crew.joined.fetch_add(1, Relaxed) < HELPERS {
                    crew.spin();
                }
            });
            let _over = Over(crew);
            CREW.with(|c| c.set(crew));
            f()
        })
    }

    /// `f(i)` for every `i < total`: shared with the crew inside [`on_pool`], through rayon
    /// elsewhere.
    pub fn for_each(total: usize, f: impl Fn(usize) + Send + Sync) {
        let crew = CREW.with(|c| c.get());
        if crew.is_null() {
            use rayon::prelude::*;
            (0..total).into_par_iter().for_each(f);
        } else {
            // SAFETY: set by `on_pool` on this thread, and cleared before its crew is dropped.
            unsafe { &*crew }.run(total, &f);
        }
    }
}

/// The page's single-threaded worker: everything on the calling thread.
#[cfg(all(target_arch = "wasm32", not(feature = "threads")))]
pub fn on_pool<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(all(target_arch = "wasm32", not(feature = "threads")))]
pub fn for_each(total: usize, f: impl Fn(usize)) {
    (0..total).for_each(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every task of every job runs exactly once, on the crew and through rayon alike.
    #[test]
    fn each_task_runs_once() {
        // More threads than spin on a crew: the others return to the pool at once.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(11).build().unwrap();
        let counts: Vec<AtomicUsize> = (0..97).map(|_| AtomicUsize::new(0)).collect();
        pool.install(|| {
            on_pool(|| {
                for job in 0..500 {
                    for_each(1 + job % counts.len(), |i| {
                        counts[i].fetch_add(1, Ordering::Relaxed);
                    });
                }
            });
            for_each(counts.len(), |i| {
                counts[i].fetch_add(1, Ordering::Relaxed);
            });
        });
        for (i, c) in counts.iter().enumerate() {
            let want = (0..500).filter(|job| i < 1 + job % 97).count() + 1;
            assert_eq!(c.load(Ordering::Relaxed), want, "task {i}");
        }
    }

    /// A step that panics ends its crew: the panic reaches the caller, and the pool's threads
    /// are free for the next step (a spinner left behind would hang it).
    #[test]
    fn a_panicking_step_frees_the_pool() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        pool.install(|| {
            // Either thread may claim a failing task: try often enough to see both.
            for _ in 0..50 {
                let step = std::panic::catch_unwind(|| {
                    on_pool(|| for_each(64, |i| assert!(i % 16 != 15, "task {i} fails")));
                });
                assert!(step.is_err());
            }
            let ran = AtomicUsize::new(0);
            on_pool(|| for_each(8, |_| {
                ran.fetch_add(1, Ordering::Relaxed);
            }));
            assert_eq!(ran.load(Ordering::Relaxed), 8);
        });
    }
}
