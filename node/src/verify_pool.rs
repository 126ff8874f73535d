//! Signature checks of submitted and gossiped transactions run on a few threads of
//! their own at a lower scheduling priority (nice 10 on Linux).
//!
//! A validator's consensus work (its event loop on tokio's workers) is short and on
//! the critical path of every block; signature checks are long and can wait. Run at
//! the same priority, a burst of checks kept the event loops of all validators on a
//! machine waiting for a CPU at every consensus phase. With the checks niced, the
//! scheduler runs an event loop as soon as it has work, and the checks use the rest.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Niceness of the checking threads (0 is normal, 19 the lowest priority).
pub const VERIFY_NICE: i32 = 10;

/// Jobs waiting for a thread at most; [`VerifyPool::run`] answers `None` beyond.
pub const VERIFY_JOBS_WAITING_MAX: usize = 1_024;

/// A fixed set of low-priority threads for CPU-heavy checks.
#[derive(Clone)]
pub struct VerifyPool {
    jobs: SyncSender<Job>,
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
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("mosaic-verify-{i}"))
                .spawn(move || {
                    lower_priority();
                    while let Some(job) = next_job(&queue) {
                        job();
                    }
                })?;
        }
        Ok(VerifyPool { jobs })
    }

    /// Runs `work` on a pool thread and returns its result; `None` if the queue is
    /// full or the pool has stopped (the caller answers "busy").
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(work());
        });
        match self.jobs.try_send(job) {
            Ok(()) => rx.await.ok(),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => None,
        }
    }

    /// Queues `work` without waiting for it; `false` if the queue is full or the pool
    /// has stopped (`work` is dropped then).
    pub fn spawn(&self, work: impl FnOnce() + Send + 'static) -> bool {
        self.jobs.try_send(Box::new(work)).is_ok()
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

    #[tokio::test]
    async fn runs_jobs_off_the_caller_at_lower_priority() {
        let pool = VerifyPool::start(2).unwrap();
        let answer = pool.run(|| 6 * 7).await;
        assert_eq!(answer, Some(42));
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .flatten()
            .unwrap_or_default();
        assert!(name.starts_with("mosaic-verify-"), "{name}");
        #[cfg(target_os = "linux")]
        {
            let nice = pool
                .run(|| rustix::process::getpriority_process(Some(rustix::thread::gettid())))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(nice, VERIFY_NICE);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        assert!(pool.spawn(move || {
            let _ = tx.send(1);
        }));
        assert_eq!(rx.await.ok(), Some(1));
    }
}
