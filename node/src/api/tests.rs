use std::sync::atomic::AtomicUsize;

use super::reads::push_range;
use super::writes::{DRAIN_BYTES_MAX, DRAIN_TIME, admission, behind, read_body};
use super::*;

#[test]
fn a_node_behind_the_network_refuses_submissions_with_503() {
    // Unknown network height (fewer than f+1 reports): no refusal.
    assert!(behind(None, 3, 8).is_none());
    assert!(
        behind(Some(11), 3, 8).is_none(),
        "8 behind is still in step"
    );
    assert!(behind(Some(2), 3, 8).is_none(), "ahead of the reports");
    let refused = behind(Some(1_207), 3, 8).unwrap();
    assert!(
        refused
            .to_string()
            .contains("catching up: 1204 heights behind"),
        "{refused}"
    );
    let (status, _) = admission(Hash::ZERO, Err(refused));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[test]
fn a_heavy_read_past_the_bound_is_a_503_with_retry_after() {
    let reads = HeavyReads::new(1);
    let _running = reads.start().unwrap();
    let refused = ApiError::from(reads.start().unwrap_err()).into_response();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused.headers().get(header::RETRY_AFTER).unwrap(),
        &RETRY_AFTER_SECS.to_string()
    );
}

#[test]
fn heights_fold_into_ranges() {
    let mut ranges = Vec::new();
    for h in [1, 2, 3, 5, 7, 8] {
        push_range(&mut ranges, h);
    }
    assert_eq!(ranges, vec![[1, 3], [5, 5], [7, 8]]);
}

const CHUNK: usize = 64 * 1024;

/// A body of unknown length that yields `chunks` chunks (or forever), counting
/// the bytes taken from it; after the last chunk it ends, or hangs if `hang`.
fn counted(chunks: Option<usize>, hang: bool, taken: Arc<AtomicUsize>) -> Body {
    let stream = futures::stream::unfold(0usize, move |i| {
        let taken = taken.clone();
        async move {
            if chunks.is_some_and(|n| i >= n) {
                if hang {
                    std::future::pending::<()>().await;
                }
                return None;
            }
            taken.fetch_add(CHUNK, Ordering::Relaxed);
            Some((Ok::<_, std::io::Error>(vec![7u8; CHUNK]), i + 1))
        }
    });
    Body::from_stream(stream)
}

#[tokio::test]
async fn bodies_up_to_the_limit_are_read_whole() {
    let exact = vec![1u8; REQUEST_BYTES_MAX];
    let read = read_body(Body::from(exact.clone())).await;
    assert_eq!(read.ok(), Some(exact));
    let taken = Arc::new(AtomicUsize::new(0));
    let n = REQUEST_BYTES_MAX / CHUNK;
    let read = read_body(counted(Some(n), false, taken.clone())).await;
    assert_eq!(read.map(|b| b.len()).ok(), Some(n * CHUNK));
    assert!(read_body(Body::empty()).await.is_ok_and(|b| b.is_empty()));
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_and_drained_to_its_end() {
    // One byte over, with a declared length.
    let over = read_body(Body::from(vec![1u8; REQUEST_BYTES_MAX + 1])).await;
    assert_eq!(
        over.err().map(|e| e.status),
        Some(StatusCode::PAYLOAD_TOO_LARGE)
    );
    // Of unknown length, a little over: all of it is read so the client can
    // finish sending and see the answer.
    let taken = Arc::new(AtomicUsize::new(0));
    let chunks = REQUEST_BYTES_MAX / CHUNK + 16;
    let over = read_body(counted(Some(chunks), false, taken.clone())).await;
    let error = over.err();
    assert_eq!(
        error.as_ref().map(|e| e.status),
        Some(StatusCode::PAYLOAD_TOO_LARGE)
    );
    assert!(error.is_some_and(|e| e.message.contains("split the batch")));
    assert_eq!(taken.load(Ordering::Relaxed), chunks * CHUNK);
}

#[tokio::test]
async fn draining_stops_at_its_byte_bound() {
    let taken = Arc::new(AtomicUsize::new(0));
    let endless = read_body(counted(None, false, taken.clone())).await;
    assert_eq!(
        endless.err().map(|e| e.status),
        Some(StatusCode::PAYLOAD_TOO_LARGE)
    );
    let taken = taken.load(Ordering::Relaxed);
    assert!(
        taken > DRAIN_BYTES_MAX && taken <= DRAIN_BYTES_MAX + CHUNK,
        "{taken}"
    );
}

#[tokio::test(start_paused = true)]
async fn draining_stops_at_its_time_bound() {
    let taken = Arc::new(AtomicUsize::new(0));
    let chunks = REQUEST_BYTES_MAX / CHUNK + 2;
    let start = tokio::time::Instant::now();
    let stalled = read_body(counted(Some(chunks), true, taken.clone())).await;
    assert_eq!(
        stalled.err().map(|e| e.status),
        Some(StatusCode::PAYLOAD_TOO_LARGE)
    );
    assert_eq!(start.elapsed(), DRAIN_TIME);
    assert_eq!(taken.load(Ordering::Relaxed), chunks * CHUNK);
}

#[tokio::test]
async fn a_declared_length_past_the_drain_bound_is_refused_unread() {
    let huge = Body::from(vec![0u8; DRAIN_BYTES_MAX + 1]);
    let refused = read_body(huge).await;
    assert_eq!(
        refused.err().map(|e| e.status),
        Some(StatusCode::PAYLOAD_TOO_LARGE)
    );
}
