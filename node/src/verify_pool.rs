//! Signature checks of submitted and gossiped transactions run on a few threads of
//! their own at a lower scheduling priority (nice 10 on Linux).
//!
//! A validator's consensus work (its event loop on tokio's workers) is short and on
//! the critical path of every block; signature checks are long and can wait. Run at
//! the same priority, a burst of checks kept the event loops of all validators on a
//! machine waiting for a CPU at every consensus phase. With the checks niced, the
//! scheduler runs an event loop as soon as it has work, and the checks use the rest.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Niceness of the checking threads (0 is normal, 19 the lowest priority).
pub const VERIFY_NICE: i32 = 10;

/// Jobs waiting for a thread at most ([`crate::sigbatch`] queues one per thread).
pub const VERIFY_JOBS_WAITING_MAX: usize = 1_024;

/// A fixed set of low-priority threads for CPU-heavy checks.
#[derive(Clone)]
pub struct VerifyPool {
    threads: usize,
    jobs: SyncSender<Job>,
    waiting: Arc<AtomicUsize>,
}

impl std::fmt::Debug for VerifyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyPool").finish_non_exhaustive()
    }
}

impl VerifyPool {
    /// Starts `threads` threads (at least one) at [`VERIFY_NICE`]. They stop when the
    /// last handle to the pool is dropped and the queue is empty.
    pub fn start(threads: usize) -> std::io::Result<Self> {
        let (jobs, queue) = sync_channel::<Job>(VERIFY_JOBS_WAITING_MAX);
        let queue = Arc::new(Mutex::new(queue));
        let waiting = Arc::new(AtomicUsize::new(0));
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            let waiting = waiting.clone();
            std::thread::Builder::new()
                .name(format!("mosaic-verify-{i}"))
                .spawn(move || {
                    lower_priority();
                    while let Some(job) = next_job(&queue) {
                        waiting.fetch_sub(1, Ordering::Relaxed);
                        // A panicking job loses only its own answer (its caller sees
                        // the channel closed), not the thread.
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                            tracing::error!("a signature-check job panicked");
                        }
                    }
                })?;
        }
        Ok(VerifyPool {
            threads: threads.max(1),
            jobs,
            waiting,
        })
    }

    /// Threads of the pool.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Jobs queued and not yet started.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    fn enqueue(&self, job: Job) -> bool {
        if self.waiting() >= VERIFY_JOBS_WAITING_MAX {
            return false;
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        if self.jobs.try_send(job).is_ok() {
            true
        } else {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }

    /// Queues `work` without waiting for it; `false` if the queue is full or the pool
    /// has stopped (`work` is dropped then).
    pub fn spawn(&self, work: impl FnOnce() + Send + 'static) -> bool {
        self.enqueue(Box::new(work))
    }
}

fn next_job(queue: &Mutex<Receiver<Job>>) -> Option<Job> {
    // A poisoned lock only means another checking thread panicked while waiting;
    // the receiver itself is intact.
    let guard = queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    guard.recv().ok()
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // On Linux, PRIO_PROCESS with a thread id sets that thread's nice value.
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), VERIFY_NICE) {
        tracing::warn!(error = %e, "cannot lower the priority of a signature-check thread");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `work` on the pool and waits for its result (`None`: refused or panicked).
    async fn run<T: Send + 'static>(
        pool: &VerifyPool,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !pool.spawn(move || {
            let _ = tx.send(work());
        }) {
            return None;
        }
        rx.await.ok()
    }

    #[tokio::test]
    async fn runs_jobs_off_the_caller_at_lower_priority() {
        let pool = VerifyPool::start(2).unwrap();
        assert_eq!(run(&pool, || 6 * 7).await, Some(42));
        let name = run(&pool, || std::thread::current().name().map(str::to_owned))
            .await
            .flatten()
            .unwrap_or_default();
        assert!(name.starts_with("mosaic-verify-"), "{name}");
        #[cfg(target_os = "linux")]
        {
            let nice = run(&pool, || {
                rustix::process::getpriority_process(Some(rustix::thread::gettid()))
            })
            .await
            .unwrap()
            .unwrap();
            assert_eq!(nice, VERIFY_NICE);
        }
        // A panicking job loses only its own answer and leaves the threads working.
        let panicked: Option<u32> =
            run(&pool, || std::panic::panic_any("job failed on purpose")).await;
        assert_eq!(panicked, None);
        for _ in 0..4 {
            assert_eq!(run(&pool, || 1).await, Some(1));
        }
        assert_eq!(pool.waiting(), 0);
    }
}
