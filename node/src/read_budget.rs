//! Budgets of the HTTP API's heavy reads: those that read block bodies, fragments
//! or many index entries from disk (blocks, fragments, headers, own fragments, and
//! a transaction's status when it has to look into bodies).
//!
//! Every such read takes one of [`HEAVY_READS_MAX`] permits for as long as it runs
//! (also on a blocking thread, past the answer's timeout), so however many clients
//! ask at once the disk serves at most that many of them, and past it a request
//! is answered 503 with `Retry-After` at once instead of queueing. Each read also
//! has a byte budget (its endpoint's answer limit) and a time budget
//! ([`READ_TIME_MAX`]): a read over many heights stops when either runs out and
//! says where (`to`), and the client asks again from there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// Heavy reads running at once, at most.
pub const HEAVY_READS_MAX: usize = 4;

/// How long one heavy read over many heights runs before it answers with what it
/// has.
pub const READ_TIME_MAX: Duration = Duration::from_secs(2);

/// Seconds a client is told to wait when every permit is taken.
pub const RETRY_AFTER_SECS: u64 = 1;

/// The permits of the heavy reads.
#[derive(Debug, Clone)]
pub struct HeavyReads {
    permits: Arc<Semaphore>,
    max: usize,
}

/// Every permit is taken: answer 503 with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "busy: {max} heavy reads (blocks, fragments, headers, statuses that read bodies) are running, the most this node runs at once; retry in {RETRY_AFTER_SECS} s"
)]
pub struct Busy {
    /// The bound.
    pub max: usize,
}

/// A running heavy read: holds its permit until dropped, and knows its deadline.
#[derive(Debug)]
pub struct HeavyRead {
    _permit: OwnedSemaphorePermit,
    deadline: Instant,
}

impl HeavyReads {
    /// `max` permits (at least one).
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        HeavyReads {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Starts a heavy read if a permit is free, with [`READ_TIME_MAX`] to run.
    pub fn start(&self) -> Result<HeavyRead, Busy> {
        self.start_for(READ_TIME_MAX)
    }

    /// [`HeavyReads::start`] with another time budget.
    pub fn start_for(&self, budget: Duration) -> Result<HeavyRead, Busy> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(HeavyRead {
                _permit: permit,
                deadline: Instant::now() + budget,
            }),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {
                Err(Busy { max: self.max })
            }
        }
    }

    /// Permits free now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

impl HeavyRead {
    /// Whether its time budget is spent: a read over many heights answers with
    /// what it has.
    pub fn out_of_time(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_bound_a_read_is_refused_until_one_ends() {
        let reads = HeavyReads::new(2);
        let a = reads.start().unwrap();
        let _b = reads.start().unwrap();
        assert_eq!(reads.start().unwrap_err(), Busy { max: 2 });
        assert!(
            reads
                .start()
                .unwrap_err()
                .to_string()
                .contains("retry in 1 s")
        );
        drop(a);
        assert_eq!(reads.available(), 1);
        assert!(reads.start().is_ok());
    }

    #[test]
    fn a_read_knows_when_its_time_is_spent() {
        let reads = HeavyReads::new(1);
        assert!(reads.start_for(Duration::ZERO).unwrap().out_of_time());
        assert!(
            !reads
                .start_for(Duration::from_secs(60))
                .unwrap()
                .out_of_time()
        );
    }
}
