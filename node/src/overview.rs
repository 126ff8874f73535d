//! The operator's view of the validator set, kept by each validator for its page
//! (`GET /`) and `GET /v1/overview`: what every validator last reported of itself
//! (in its answer to the once-a-second sync status request), the last minutes of
//! commits second by second, and the view changes with their reasons.
//!
//! Everything here is bounded by construction: one report per validator, at most
//! [`HISTORY_SECONDS`] seconds, [`VIEW_CHANGES_MAX`] view changes and
//! [`LATENCY_SAMPLES_MAX`] latency samples a second. A peer's report is its own
//! word: the page says so, and a report that breaks the bounds is not kept.
//!
//! The event loop writes (a few calls per block and per second); the API reads a
//! [`Snapshot`]. Neither holds the lock for more than a copy.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Seconds of commit history kept.
pub const HISTORY_SECONDS: usize = 300;
/// View changes kept.
pub const VIEW_CHANGES_MAX: usize = 32;
/// Commit latency samples kept per second (blocks beyond it in one second are
/// counted, not sampled).
pub const LATENCY_SAMPLES_MAX: usize = 4_096;
/// Ranges of unrepaired heights a report carries at most.
pub const REPORT_RANGES_MAX: usize = 32;
/// Heights the scrub remembers as unrepaired at most (past that it says "more").
pub const UNREPAIRED_MAX: usize = 4_096;

/// What a validator says of itself in its sync status answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    /// Its view.
    pub view: u64,
    /// The primary of that view.
    pub primary: u32,
    /// Whether it is changing views.
    pub view_changing: bool,
    /// Peers it is connected to.
    pub peers: u32,
    /// Whether it is catching up.
    pub syncing: bool,
    /// Milliseconds since it last executed a block (none since it started: `None`).
    pub commit_age_ms: Option<u64>,
    /// The height its scrub is checking (0 between passes).
    pub scrub_position: u64,
    /// Full scrub passes it completed.
    pub scrub_passes: u64,
    /// Heights whose own fragment its scrub found missing or corrupt and could not
    /// repair yet, as inclusive ranges, at most [`REPORT_RANGES_MAX`].
    pub unrepaired: Vec<[u64; 2]>,
    /// Whether there are more than `unrepaired` says.
    pub unrepaired_more: bool,
}

impl PeerReport {
    /// Why the report cannot be kept, if it cannot: too many ranges, or a range
    /// that ends before it starts or past `height` (the height it reports).
    pub fn problem(&self, height: u64) -> Option<&'static str> {
        if self.unrepaired.len() > REPORT_RANGES_MAX {
            return Some("status report with too many unrepaired ranges");
        }
        let mut after = 0u64;
        for &[from, to] in &self.unrepaired {
            // Sorted, disjoint, inside 1..=height: each height counted once.
            if from <= after || from > to || to > height {
                return Some("status report with an impossible unrepaired range");
            }
            after = to;
        }
        None
    }
}

/// Heights whose own fragment the scrub found missing or corrupt and has not
/// repaired yet (shared by the scrub, which writes, and the event loop, which
/// reports them).
#[derive(Debug, Clone, Default)]
pub struct Unrepaired(Arc<Mutex<Set>>);

#[derive(Debug, Default)]
struct Set {
    heights: BTreeSet<u64>,
    /// Heights found bad that did not fit, since the last full pass began.
    overflow: bool,
    /// The same, in the pass under way.
    overflow_this_pass: bool,
}

impl Unrepaired {
    fn lock(&self) -> MutexGuard<'_, Set> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The repair of `height` failed.
    pub fn failed(&self, height: u64) {
        let mut set = self.lock();
        if set.heights.len() < UNREPAIRED_MAX || set.heights.contains(&height) {
            set.heights.insert(height);
        } else {
            set.overflow = true;
            set.overflow_this_pass = true;
        }
    }

    /// `height` holds a good own fragment (checked, or repaired).
    pub fn good(&self, height: u64) {
        self.lock().heights.remove(&height);
    }

    /// A full pass ended: every height was checked in it, so only what did not
    /// fit in this pass is still unlisted.
    pub fn pass_done(&self) {
        let mut set = self.lock();
        set.overflow = std::mem::take(&mut set.overflow_this_pass);
    }

    /// The heights as at most `max` ranges, and whether there are more.
    pub fn ranges(&self, max: usize) -> (Vec<[u64; 2]>, bool) {
        let set = self.lock();
        let mut ranges: Vec<[u64; 2]> = Vec::new();
        let mut more = set.overflow;
        for &height in &set.heights {
            let full = ranges.len() == max;
            match ranges.last_mut() {
                Some(last) if last[1] + 1 == height => last[1] = height,
                _ if full => {
                    more = true;
                    break;
                }
                _ => ranges.push([height, height]),
            }
        }
        (ranges, more)
    }
}

/// One second of the chain at this validator.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Second {
    /// When it ended, in Unix milliseconds.
    pub t: u64,
    /// The executed height then.
    pub height: u64,
    /// Blocks executed in it.
    pub blocks: u64,
    /// Transfers committed in it.
    pub transfers: u64,
    /// Median commit latency (proposal seen here to executed), milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile of the same.
    pub p99_ms: Option<f64>,
    /// API answers of 503 (refused for load) in it.
    pub unavailable: u64,
    /// Transfers in the mempool at its end.
    pub mempool: usize,
    /// Transfers queued for blocks at its end (the backlog the API sheds on).
    pub backlog: usize,
}

/// A view this validator entered after its first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ViewChange {
    /// When, in Unix milliseconds.
    pub t: u64,
    /// The view entered.
    pub view: u64,
    /// Its primary.
    pub primary: u32,
    /// Why the view changed, as far as this validator knows.
    pub reason: String,
}

/// A validator's last report, with its age.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reported {
    /// Milliseconds since it came.
    pub age_ms: u64,
    /// The height it reported.
    pub height: u64,
    /// The rest of what it said.
    #[serde(flatten)]
    pub report: PeerReport,
}

/// A copy of the overview for one answer.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Each validator's last report, by index (this validator's own is `None`).
    pub reports: Vec<Option<Reported>>,
    /// The last seconds, oldest first.
    pub history: Vec<Second>,
    /// The last view changes, oldest first.
    pub view_changes: Vec<ViewChange>,
    /// Milliseconds since this validator last executed a block.
    pub commit_age_ms: Option<u64>,
}

/// The overview (see the module documentation).
#[derive(Debug, Default)]
pub struct Overview {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    reports: Vec<Option<(Instant, u64, PeerReport)>>,
    history: VecDeque<Second>,
    /// The second under way.
    blocks: u64,
    transfers: u64,
    latencies: Vec<f64>,
    unavailable_seen: u64,
    view_changes: VecDeque<ViewChange>,
    /// Why this validator's own timer moved it out of a view, if it did.
    cause: Option<String>,
    entered_first_view: bool,
    last_commit: Option<Instant>,
}

impl Overview {
    /// An overview of `validators` validators.
    pub fn new(validators: usize) -> Self {
        Overview {
            inner: Mutex::new(Inner {
                reports: vec![None; validators],
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validator `index` reported `height` and `report` at `now`.
    pub fn reported(&self, index: usize, height: u64, report: PeerReport, now: Instant) {
        if let Some(slot) = self.lock().reports.get_mut(index) {
            *slot = Some((now, height, report));
        }
    }

    /// A block of `transfers` executed at `now`, `latency` after its proposal was
    /// seen here (unknown for blocks caught up).
    pub fn committed(&self, transfers: u64, latency: Option<Duration>, now: Instant) {
        let mut inner = self.lock();
        inner.blocks += 1;
        inner.transfers += transfers;
        inner.last_commit = Some(now);
        if let Some(latency) = latency
            && inner.latencies.len() < LATENCY_SAMPLES_MAX
        {
            inner.latencies.push(latency.as_secs_f64() * 1000.0);
        }
    }

    /// A consensus timer fired here: if it is one that starts or moves a view
    /// change, it is the reason for the next view entered.
    pub fn timer_fired(&self, timer: &mosaic_consensus::Timer) {
        let cause = match timer {
            mosaic_consensus::Timer::Progress { view } => format!(
                "no progress in view {} within the timeout (this validator's timer)",
                view.0
            ),
            mosaic_consensus::Timer::ViewChange { view } => format!(
                "the view change to view {} did not finish in time (this validator's timer)",
                view.0
            ),
            _ => return,
        };
        self.lock().cause = Some(cause);
    }

    /// This validator entered `view` (led by `primary`) at `t` (Unix ms). The first
    /// view after a start is not a change.
    pub fn entered_view(&self, view: u64, primary: u32, t: u64) {
        let mut inner = self.lock();
        if !std::mem::replace(&mut inner.entered_first_view, true) {
            inner.cause = None;
            return;
        }
        let reason = inner.cause.take().unwrap_or_else(|| {
            "other validators moved on (f+1 VIEW-CHANGEs, or a NEW-VIEW) before this validator's timer fired".into()
        });
        if inner.view_changes.len() == VIEW_CHANGES_MAX {
            inner.view_changes.pop_front();
        }
        inner.view_changes.push_back(ViewChange {
            t,
            view,
            primary,
            reason,
        });
    }

    /// A second ended at `t` (Unix ms) with the chain at `height`, `mempool`
    /// transfers pooled, `backlog` queued, and `unavailable_total` 503 answers
    /// since the start.
    pub fn second(
        &self,
        t: u64,
        height: u64,
        mempool: usize,
        backlog: usize,
        unavailable_total: u64,
    ) {
        let mut inner = self.lock();
        let mut latencies = std::mem::take(&mut inner.latencies);
        latencies.sort_by(f64::total_cmp);
        let unavailable = unavailable_total.saturating_sub(inner.unavailable_seen);
        inner.unavailable_seen = unavailable_total;
        let second = Second {
            t,
            height,
            blocks: std::mem::take(&mut inner.blocks),
            transfers: std::mem::take(&mut inner.transfers),
            p50_ms: percentile(&latencies, 0.50),
            p99_ms: percentile(&latencies, 0.99),
            unavailable,
            mempool,
            backlog,
        };
        if inner.history.len() == HISTORY_SECONDS {
            inner.history.pop_front();
        }
        inner.history.push_back(second);
        // The buffer is kept for the next second.
        latencies.clear();
        inner.latencies = latencies;
    }

    /// Milliseconds since this validator last executed a block, at `now`.
    pub fn commit_age_ms(&self, now: Instant) -> Option<u64> {
        self.lock()
            .last_commit
            .map(|at| millis(now.saturating_duration_since(at)))
    }

    /// A copy for an answer, ages taken at `now`.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            reports: inner
                .reports
                .iter()
                .map(|r| {
                    r.as_ref().map(|(at, height, report)| Reported {
                        age_ms: millis(now.saturating_duration_since(*at)),
                        height: *height,
                        report: report.clone(),
                    })
                })
                .collect(),
            history: inner.history.iter().cloned().collect(),
            view_changes: inner.view_changes.iter().cloned().collect(),
            commit_age_ms: inner
                .last_commit
                .map(|at| millis(now.saturating_duration_since(at))),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The `q` quantile of sorted `values` (nearest rank), `None` when empty.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).map(|v| (v * 100.0).round() / 100.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn a_second_sums_commits_and_takes_percentiles_then_starts_afresh() {
        let overview = Overview::new(4);
        let now = Instant::now();
        for ms in 1..=100u64 {
            overview.committed(10, Some(Duration::from_millis(ms)), now);
        }
        overview.committed(5, None, now);
        overview.second(1_000, 7, 3, 2, 4);
        overview.second(2_000, 7, 0, 0, 6);
        let snap = overview.snapshot(now);
        assert_eq!(snap.history.len(), 2);
        let first = &snap.history[0];
        assert_eq!((first.blocks, first.transfers), (101, 1_005));
        assert_eq!(first.p50_ms, Some(50.0));
        assert_eq!(first.p99_ms, Some(99.0));
        assert_eq!(
            (
                first.unavailable,
                first.mempool,
                first.backlog,
                first.height
            ),
            (4, 3, 2, 7)
        );
        let second = &snap.history[1];
        assert_eq!(
            (second.blocks, second.transfers, second.p50_ms),
            (0, 0, None)
        );
        assert_eq!(second.unavailable, 2);
        assert_eq!(snap.commit_age_ms, Some(0));
    }

    #[test]
    fn history_and_view_changes_stay_bounded() {
        let overview = Overview::new(1);
        for t in 0..(HISTORY_SECONDS as u64 + 10) {
            overview.second(t, 0, 0, 0, 0);
        }
        for view in 0..(VIEW_CHANGES_MAX as u64 + 5) {
            overview.entered_view(view, 0, view);
        }
        let snap = overview.snapshot(Instant::now());
        assert_eq!(snap.history.len(), HISTORY_SECONDS);
        assert_eq!(snap.history[0].t, 10);
        assert_eq!(snap.view_changes.len(), VIEW_CHANGES_MAX);
        assert_eq!(
            snap.view_changes.last().unwrap().view,
            VIEW_CHANGES_MAX as u64 + 4
        );
    }

    #[test]
    fn a_view_change_says_whose_timer_moved_it() {
        let overview = Overview::new(4);
        overview.entered_view(0, 0, 1);
        overview.timer_fired(&mosaic_consensus::Timer::HelpPeriod);
        overview.timer_fired(&mosaic_consensus::Timer::Progress {
            view: mosaic_consensus::View(0),
        });
        overview.entered_view(1, 1, 2);
        overview.entered_view(2, 2, 3);
        let snap = overview.snapshot(Instant::now());
        assert_eq!(snap.view_changes.len(), 2, "the first view is not a change");
        assert!(
            snap.view_changes[0]
                .reason
                .contains("no progress in view 0")
        );
        assert!(
            snap.view_changes[1]
                .reason
                .contains("other validators moved on")
        );
    }

    #[test]
    fn reports_are_kept_by_index_and_out_of_range_ones_ignored() {
        let overview = Overview::new(2);
        let now = Instant::now();
        let report = PeerReport {
            view: 3,
            ..PeerReport::default()
        };
        overview.reported(1, 9, report.clone(), now);
        overview.reported(7, 9, report.clone(), now);
        let snap = overview.snapshot(now + Duration::from_millis(1_500));
        assert_eq!(snap.reports.len(), 2);
        assert!(snap.reports[0].is_none());
        let got = snap.reports[1].as_ref().unwrap();
        assert_eq!((got.height, got.age_ms, got.report.view), (9, 1_500, 3));
    }

    #[test]
    fn a_report_breaking_the_bounds_is_refused() {
        let mut report = PeerReport {
            unrepaired: vec![[1, 2], [5, 5]],
            ..PeerReport::default()
        };
        assert_eq!(report.problem(5), None);
        assert!(report.problem(4).is_some(), "past the reported height");
        report.unrepaired = vec![[3, 2]];
        assert!(report.problem(5).is_some());
        report.unrepaired = vec![[0, 2]];
        assert!(report.problem(5).is_some());
        report.unrepaired = vec![[1, 1]; REPORT_RANGES_MAX + 1];
        assert!(report.problem(5).is_some());
        report.unrepaired = vec![[1, 3], [1, 3]];
        assert!(report.problem(5).is_some(), "a height counted twice");
        report.unrepaired = vec![[3, 4], [1, 2]];
        assert!(report.problem(5).is_some(), "out of order");
        report.unrepaired = vec![[1, 2], [2, 4]];
        assert!(report.problem(5).is_some(), "overlapping");
    }

    #[test]
    fn unrepaired_heights_fold_into_bounded_ranges() {
        let unrepaired = Unrepaired::default();
        for h in [1, 2, 3, 7, 9, 10] {
            unrepaired.failed(h);
        }
        unrepaired.good(2);
        assert_eq!(
            unrepaired.ranges(8),
            (vec![[1, 1], [3, 3], [7, 7], [9, 10]], false)
        );
        assert_eq!(unrepaired.ranges(2), (vec![[1, 1], [3, 3]], true));
        for h in 100..(100 + UNREPAIRED_MAX as u64) {
            unrepaired.failed(h);
        }
        assert!(unrepaired.ranges(REPORT_RANGES_MAX).1, "overflow is said");
    }
}
