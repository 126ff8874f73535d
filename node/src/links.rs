//! Consensus links: one long-lived libp2p stream to each validator, carrying
//! length-prefixed consensus messages in the order they were sent.
//!
//! A consensus message used to travel as a request-response exchange: a new Yamux
//! stream per message, a protocol negotiation, an empty acknowledgement and a timer
//! each. A link opens its stream once (again after an error) and then only writes
//! frames, so a message costs one frame on an open stream, and two messages to one
//! validator arrive in the order they were sent. A writer starts writing only after
//! the reader's ready byte: libp2p-stream holds one new inbound stream until it is
//! taken and drops the others without telling the opener.
//!
//! Bounds: each outbound link queues at most [`LINK_QUEUE_BYTES_MAX`] (one message
//! always fits); a message that does not fit is dropped, as one to an unreachable
//! validator is (consensus tolerates lost messages: it retransmits and changes view).
//! Inbound, each validator may have two streams being read (a replaced one is read to
//! its end, an older one is cut); frames are refused above
//! [`CONSENSUS_FRAME_MAX`] before their bodies are read, and the bytes read from it
//! but not yet handled by the event loop are capped by [`INBOUND_BYTES_MAX`] per
//! validator, which stops reading (the stream's flow control then holds the sender).
//! Streams from peers outside the genesis validator set are refused.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::net::CONSENSUS_FRAME_MAX;

/// Bytes queued for one validator at most (beyond one message).
pub const LINK_QUEUE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Bytes read from one validator and not yet handled, at most.
pub const INBOUND_BYTES_MAX: usize = CONSENSUS_FRAME_MAX;
// A reader waits for as many permits as its frame has bytes: the largest frame must
// fit in the budget and in a u32 permit count, or it would wait forever.
const _: () = assert!(INBOUND_BYTES_MAX >= CONSENSUS_FRAME_MAX);
const _: () = assert!(CONSENSUS_FRAME_MAX <= u32::MAX as usize);
/// How long opening a stream (dialling first if need be) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing queued frames may take before the stream is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed open, messages to that validator are dropped for this long.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// Frames written before one flush, at most.
const FRAMES_PER_FLUSH: usize = 64;
/// The byte a reader writes once it took a stream: until the writer has read it, the
/// stream may still be dropped unread by the receiving side (its queue of new
/// streams holds one), and frames written to it would be lost without an error.
const READY: u8 = 0x01;
/// Streams one writer opens for one batch at most: streams dropped before they were
/// taken (retried after 10, 20, 40, 80, 160 ms: the other side's accept loop takes
/// one at a time), one broken by a restart, then the one that works.
const OPENS_PER_BATCH: u32 = 7;
/// Readers kept per validator: a replaced stream is read to its end, not cut.
const READERS_PER_VALIDATOR: usize = 2;

/// What the inbound side hands to the event loop.
#[derive(Debug)]
pub enum Inbound {
    /// One consensus message from a genesis validator (not yet decoded).
    Message {
        /// The sender.
        peer: PeerId,
        /// The frame's body.
        bytes: Vec<u8>,
        /// Released once the message is handled (frees the sender's budget).
        permit: OwnedSemaphorePermit,
    },
    /// A peer broke the link protocol.
    Misbehaved {
        /// The peer.
        peer: PeerId,
        /// Why (a metric label).
        reason: &'static str,
        /// Misbehaviour points it earns.
        points: u32,
    },
}

struct Link {
    queue: mpsc::UnboundedSender<Arc<Vec<u8>>>,
    queued_bytes: Arc<AtomicUsize>,
}

/// The outbound links to every other validator, by validator index.
#[derive(Default)]
pub struct Links {
    links: Vec<Option<Link>>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

impl Links {
    /// Starts a writer task for each validator in `validators` other than `me`.
    /// Each opens its stream on the first message. Tasks end once `Links` is dropped.
    pub fn start(
        control: &libp2p_stream::Control,
        protocol: &StreamProtocol,
        validators: &[PeerId],
        me: PeerId,
    ) -> Self {
        let dropped = Arc::new(AtomicU64::new(0));
        let links = validators
            .iter()
            .map(|peer| {
                if *peer == me {
                    return None;
                }
                let (queue, frames) = mpsc::unbounded_channel();
                let queued_bytes = Arc::new(AtomicUsize::new(0));
                tokio::spawn(write_loop(
                    control.clone(),
                    *peer,
                    protocol.clone(),
                    frames,
                    queued_bytes.clone(),
                    dropped.clone(),
                ));
                Some(Link {
                    queue,
                    queued_bytes,
                })
            })
            .collect();
        Links { links, dropped }
    }

    /// Queues `frame` for validator `to`. False if it was dropped (no such
    /// validator, this node itself, or the link's queue is full).
    pub fn send(&self, to: usize, frame: Arc<Vec<u8>>) -> bool {
        let Some(Some(link)) = self.links.get(to) else {
            return false;
        };
        let len = frame.len();
        let queued = link.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if queued > 0 && queued + len > LINK_QUEUE_BYTES_MAX {
            link.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if link.queue.send(frame).is_err() {
            link.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Messages dropped so far (queue full, or the validator unreachable).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Writes one validator's queued frames to its stream, opening it when needed.
async fn write_loop(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    protocol: StreamProtocol,
    mut frames: mpsc::UnboundedReceiver<Arc<Vec<u8>>>,
    queued_bytes: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
) {
    let mut stream: Option<Stream> = None;
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut batch: Vec<Arc<Vec<u8>>> = Vec::with_capacity(FRAMES_PER_FLUSH);
    while let Some(first) = frames.recv().await {
        batch.push(first);
        while batch.len() < FRAMES_PER_FLUSH {
            match frames.try_recv() {
                Ok(frame) => batch.push(frame),
                Err(_) => break,
            }
        }
        let bytes: usize = batch.iter().map(|f| f.len()).sum();
        // A stream that broke (the validator restarted, say) or was never taken is
        // replaced at once, so the batch that found it so is not lost with it.
        let mut written = false;
        let mut not_taken = 0u32;
        for _ in 0..OPENS_PER_BATCH {
            if stream.is_none() {
                if retry_at.is_some_and(|at| tokio::time::Instant::now() < at) {
                    break;
                }
                match tokio::time::timeout(OPEN_TIMEOUT, open_link(&mut control, peer, &protocol))
                    .await
                {
                    Ok(Opened::Ready(opened)) => {
                        stream = Some(opened);
                        retry_at = None;
                    }
                    Ok(Opened::NotTaken(e)) => {
                        // Dropped by the other side before a reader took it (its
                        // queue of new streams was full) or reset: try again.
                        tracing::debug!(%peer, error = %e, "consensus link not taken");
                        tokio::time::sleep(Duration::from_millis(10 << not_taken.min(4))).await;
                        not_taken += 1;
                        continue;
                    }
                    Ok(Opened::Failed(e)) => {
                        tracing::debug!(%peer, error = %e, "cannot open the consensus link");
                        retry_at = Some(tokio::time::Instant::now() + RETRY_AFTER);
                        break;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "opening the consensus link timed out");
                        retry_at = Some(tokio::time::Instant::now() + RETRY_AFTER);
                        break;
                    }
                }
            }
            let Some(open) = stream.as_mut() else { break };
            match tokio::time::timeout(WRITE_TIMEOUT, write_frames(open, &batch)).await {
                Ok(Ok(())) => {
                    written = true;
                    break;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "consensus link broke");
                    stream = None;
                }
                Err(_) => {
                    // The validator does not read: do not queue more behind it now.
                    tracing::debug!(%peer, "consensus link stalled");
                    stream = None;
                    break;
                }
            }
        }
        if !written {
            dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        batch.clear();
    }
}

enum Opened {
    /// Open, and a reader on the other side took it.
    Ready(Stream),
    /// Opened but dropped or reset before the reader's ready byte came.
    NotTaken(std::io::Error),
    /// Could not be opened (no connection, no address, protocol refused).
    Failed(libp2p_stream::OpenStreamError),
}

/// Opens a stream to `peer` and waits for the reader's [`READY`] byte.
async fn open_link(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    protocol: &StreamProtocol,
) -> Opened {
    let mut stream = match control.open_stream(peer, protocol.clone()).await {
        Ok(s) => s,
        Err(e) => return Opened::Failed(e),
    };
    let mut ready = [0u8; 1];
    match stream.read_exact(&mut ready).await {
        Ok(()) if ready[0] == READY => Opened::Ready(stream),
        Ok(()) => Opened::NotTaken(std::io::Error::other("not a ready byte")),
        Err(e) => Opened::NotTaken(e),
    }
}

/// Writes `frames`, each after its u32 big-endian length, then flushes. Small frames
/// are gathered into one write, so a PREPARE does not become a Yamux and Noise frame
/// of its own for its 4-byte prefix.
async fn write_frames(stream: &mut Stream, frames: &[Arc<Vec<u8>>]) -> std::io::Result<()> {
    const GATHER_MAX: usize = 64 * 1024;
    let mut gathered: Vec<u8> = Vec::new();
    for frame in frames {
        let len = u32::try_from(frame.len())
            .map_err(|_| std::io::Error::other("frame longer than u32::MAX"))?;
        gathered.extend_from_slice(&len.to_be_bytes());
        if frame.len() <= GATHER_MAX {
            gathered.extend_from_slice(frame);
        } else {
            stream.write_all(&gathered).await?;
            gathered.clear();
            stream.write_all(frame).await?;
        }
        if gathered.len() >= GATHER_MAX {
            stream.write_all(&gathered).await?;
            gathered.clear();
        }
    }
    if !gathered.is_empty() {
        stream.write_all(&gathered).await?;
    }
    stream.flush().await
}

/// Accepts inbound consensus streams from genesis validators (at most two read at
/// once per validator; beyond that the oldest is cut) and forwards their frames to `inbound`. Ends when `inbound`'s receiver is
/// dropped.
pub async fn accept_loop(
    mut incoming: libp2p_stream::IncomingStreams,
    validators: Vec<PeerId>,
    inbound: mpsc::Sender<Inbound>,
) {
    let mut readers: HashMap<PeerId, VecDeque<JoinHandle<()>>> = HashMap::new();
    let budgets: HashMap<PeerId, Arc<Semaphore>> = validators
        .iter()
        .map(|p| (*p, Arc::new(Semaphore::new(INBOUND_BYTES_MAX))))
        .collect();
    loop {
        let next = tokio::select! {
            () = inbound.closed() => break,
            next = incoming.next() => next,
        };
        let Some((peer, stream)) = next else { break };
        let Some(budget) = budgets.get(&peer) else {
            // Dropping the stream resets it.
            let _ = inbound.try_send(Inbound::Misbehaved {
                peer,
                reason: "consensus-from-non-validator",
                points: 5,
            });
            continue;
        };
        let reader = tokio::spawn(read_loop(peer, stream, budget.clone(), inbound.clone()));
        let theirs = readers.entry(peer).or_default();
        theirs.retain(|r| !r.is_finished());
        theirs.push_back(reader);
        while theirs.len() > READERS_PER_VALIDATOR {
            if let Some(oldest) = theirs.pop_front() {
                oldest.abort();
            }
        }
    }
    for reader in readers.into_values().flatten() {
        reader.abort();
    }
}

/// Reads frames from one validator's stream until it ends or misbehaves.
async fn read_loop(
    peer: PeerId,
    mut stream: Stream,
    budget: Arc<Semaphore>,
    inbound: mpsc::Sender<Inbound>,
) {
    if stream.write_all(&[READY]).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    loop {
        let mut prefix = [0u8; 4];
        let read = tokio::select! {
            () = inbound.closed() => return,
            read = stream.read_exact(&mut prefix) => read,
        };
        if read.is_err() {
            return;
        }
        let len = u32::from_be_bytes(prefix) as usize;
        if len > CONSENSUS_FRAME_MAX {
            let _ = inbound
                .send(Inbound::Misbehaved {
                    peer,
                    reason: "consensus-bad-frame",
                    points: 2,
                })
                .await;
            return;
        }
        // At most INBOUND_BYTES_MAX (>= CONSENSUS_FRAME_MAX) unhandled bytes per
        // validator: wait here (not reading) until the event loop catches up.
        let permits = u32::try_from(len.max(1)).unwrap_or(u32::MAX);
        let Ok(permit) = budget.clone().acquire_many_owned(permits).await else {
            return;
        };
        // The buffer grows as bytes arrive, not to the announced length at once.
        let mut bytes = Vec::new();
        match (&mut stream).take(len as u64).read_to_end(&mut bytes).await {
            Ok(n) if n == len => {}
            _ => return,
        }
        if inbound
            .send(Inbound::Message {
                peer,
                bytes,
                permit,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::swarm::SwarmEvent;
    use libp2p::{Multiaddr, Swarm, noise, tcp, yamux};

    const LIMIT: Duration = Duration::from_secs(20);

    fn swarm() -> Swarm<libp2p_stream::Behaviour> {
        libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap_or_else(|e| panic!("test transport: {e}"))
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap_or_else(|e| panic!("test behaviour: {e}"))
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build()
    }

    fn protocol() -> StreamProtocol {
        StreamProtocol::new("/mosaic/test/consensus/2")
    }

    /// A listening receiver whose accepted frames come out of the returned channel,
    /// with `validators` allowed to speak.
    async fn receiver(validators: Vec<PeerId>) -> (PeerId, Multiaddr, mpsc::Receiver<Inbound>) {
        receiver_after(validators, Duration::ZERO).await
    }

    /// [`receiver`] whose accept loop starts only after `delay` (new streams that
    /// arrive meanwhile queue in libp2p-stream's one slot or are dropped).
    async fn receiver_after(
        validators: Vec<PeerId>,
        delay: Duration,
    ) -> (PeerId, Multiaddr, mpsc::Receiver<Inbound>) {
        let mut swarm = swarm();
        let listen: Multiaddr = "/ip4/127.0.0.1/tcp/0"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        swarm.listen_on(listen).unwrap_or_else(|e| panic!("{e}"));
        let address = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        let peer = *swarm.local_peer_id();
        let incoming = swarm
            .behaviour()
            .new_control()
            .accept(protocol())
            .unwrap_or_else(|e| panic!("{e}"));
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            accept_loop(incoming, validators, tx).await;
        });
        tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
        (peer, address, rx)
    }

    /// A sender connected to `address` (once this returns), polled in the background.
    async fn sender(
        mut swarm: Swarm<libp2p_stream::Behaviour>,
        address: Multiaddr,
    ) -> libp2p_stream::Control {
        let control = swarm.behaviour().new_control();
        swarm.dial(address).unwrap_or_else(|e| panic!("{e}"));
        tokio::time::timeout(LIMIT, async {
            loop {
                if let SwarmEvent::ConnectionEstablished { .. } = swarm.select_next_some().await {
                    break;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no connection within {LIMIT:?}"));
        tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
        control
    }

    async fn next(rx: &mut mpsc::Receiver<Inbound>) -> Inbound {
        match tokio::time::timeout(LIMIT, rx.recv()).await {
            Ok(Some(inbound)) => inbound,
            Ok(None) => panic!("the link's channel closed"),
            Err(_) => panic!("nothing arrived within {LIMIT:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_arrive_in_order_on_one_stream() {
        let sender_swarm = swarm();
        let me = *sender_swarm.local_peer_id();
        let (peer, address, mut rx) = receiver(vec![me]).await;
        let control = sender(sender_swarm, address).await;
        let links = Links::start(&control, &protocol(), &[me, peer], me);
        assert!(!links.send(0, Arc::new(vec![1])), "no link to itself");
        assert!(!links.send(2, Arc::new(vec![1])), "no such validator");
        // Sizes from empty to large, so frames span many Yamux frames.
        let frames: Vec<Vec<u8>> = (0..200u32)
            .map(|i| {
                let len = (i as usize * 7919) % 300_000;
                (0..len).map(|j| (j as u32 ^ i) as u8).collect()
            })
            .collect();
        for frame in &frames {
            assert!(links.send(1, Arc::new(frame.clone())));
        }
        for (i, frame) in frames.iter().enumerate() {
            match next(&mut rx).await {
                Inbound::Message {
                    peer: from, bytes, ..
                } => {
                    assert_eq!(from, me);
                    assert!(bytes == *frame, "frame {i} differs");
                }
                other => panic!("frame {i}: {other:?}"),
            }
        }
        assert_eq!(links.dropped(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn links_opened_at_once_by_several_validators_all_deliver() {
        // The receiving side queues one new stream at a time and drops the others;
        // the ready byte makes their writers notice and open again.
        let swarms: Vec<_> = (0..3).map(|_| swarm()).collect();
        let ids: Vec<PeerId> = swarms.iter().map(|s| *s.local_peer_id()).collect();
        let (peer, address, mut rx) = receiver_after(ids.clone(), Duration::from_millis(100)).await;
        let mut controls = Vec::new();
        for s in swarms {
            controls.push(sender(s, address.clone()).await);
        }
        let all: Vec<Links> = controls
            .iter()
            .zip(&ids)
            .map(|(control, me)| Links::start(control, &protocol(), &[*me, peer], *me))
            .collect();
        for round in 0..20u8 {
            for (i, links) in all.iter().enumerate() {
                assert!(links.send(1, Arc::new(vec![i as u8, round])));
            }
        }
        let mut next_round = [0u8; 3];
        for _ in 0..60 {
            match next(&mut rx).await {
                Inbound::Message {
                    peer: from, bytes, ..
                } => {
                    let i = ids.iter().position(|id| *id == from).unwrap();
                    assert_eq!(bytes, vec![i as u8, next_round[i]], "in order per sender");
                    next_round[i] += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(next_round, [20; 3]);
        assert!(all.iter().all(|l| l.dropped() == 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_oversized_frame_is_refused_before_its_body() {
        let sender_swarm = swarm();
        let me = *sender_swarm.local_peer_id();
        let (peer, address, mut rx) = receiver(vec![me]).await;
        let mut control = sender(sender_swarm, address).await;
        let mut stream = tokio::time::timeout(LIMIT, control.open_stream(peer, protocol()))
            .await
            .unwrap_or_else(|_| panic!("no stream within {LIMIT:?}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let len = (CONSENSUS_FRAME_MAX as u32) + 1;
        stream
            .write_all(&len.to_be_bytes())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        stream.flush().await.unwrap_or_else(|e| panic!("{e}"));
        match next(&mut rx).await {
            Inbound::Misbehaved {
                peer: from, reason, ..
            } => {
                assert_eq!(from, me);
                assert_eq!(reason, "consensus-bad-frame");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_outside_the_validator_set_is_refused() {
        let stranger = swarm();
        let stranger_id = *stranger.local_peer_id();
        let someone_else = PeerId::random();
        let (peer, address, mut rx) = receiver(vec![someone_else]).await;
        let control = sender(stranger, address).await;
        let links = Links::start(&control, &protocol(), &[stranger_id, peer], stranger_id);
        assert!(links.send(1, Arc::new(b"hello".to_vec())));
        match next(&mut rx).await {
            Inbound::Misbehaved {
                peer: from, reason, ..
            } => {
                assert_eq!(from, stranger_id);
                assert_eq!(reason, "consensus-from-non-validator");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn queues_are_bounded_and_unreachable_validators_drop_messages() {
        let lonely = swarm();
        let me = *lonely.local_peer_id();
        let control = lonely.behaviour().new_control();
        let mut lonely = lonely;
        tokio::spawn(async move {
            loop {
                lonely.select_next_some().await;
            }
        });
        // Nobody knows an address for this validator: every message is dropped.
        let links = Links::start(&control, &protocol(), &[me, PeerId::random()], me);
        // The writer task cannot run until this test awaits, so these all queue:
        // one message beyond the limit always fits, the next that overflows does not.
        let big = Arc::new(vec![0u8; LINK_QUEUE_BYTES_MAX / 2 + 1]);
        assert!(links.send(1, big.clone()));
        assert!(
            !links.send(1, big.clone()),
            "a second half-limit message overflows"
        );
        assert!(links.send(1, Arc::new(vec![0u8; 10])));
        assert_eq!(links.dropped(), 1);
        let deadline = tokio::time::Instant::now() + LIMIT;
        while links.dropped() < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "messages to an unreachable validator were not dropped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The queue is empty again: a half-limit message fits beside a queued one only
        // if the count of queued bytes went back down.
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            if links.send(1, big.clone()) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the queue never emptied"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
