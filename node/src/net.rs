//! libp2p: the validator's identity, the network behaviour and the wire formats.
//!
//! - Transport: TCP + Noise + Yamux ([`transport`]); the validator's ed25519 key is
//!   its libp2p identity, so an authenticated connection's peer id *is* a validator.
//! - `/mosaic/<chain>/consensus/2`: one long-lived stream from each validator to each
//!   other, carrying length-prefixed consensus messages in order ([`crate::links`]);
//!   only genesis validators may open one.
//! - `/mosaic/<chain>/sync/3` (3: the status answer carries a [`crate::overview::PeerReport`]; peers of another version do not negotiate it rather than misread it): request-response for status, certified blocks and
//!   fragments ([`SyncRequest`], [`SyncResponse`]), served to validators within
//!   per-peer budgets ([`crate::serve`]); `sync/1` had no `Busy` answer.
//! - gossipsub topic `mosaic/<chain>/tx/2`: batches of signed transfers, verified
//!   before they are forwarded. Messages are anonymous (no author, sequence number or
//!   gossipsub signature; each transfer is signed); `tx/1` carried signed messages.
//! - Identify and Kademlia for discovery; mDNS optional.
//!
//! Every frame is length-prefixed (u32, big endian) and refused above its limit
//! before any byte of the body is read.

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    PeerId, StreamProtocol, allow_block_list, connection_limits, gossipsub, identify, identity,
    kad, mdns, ping, request_response,
};
use mosaic_consensus::CommitCertificate;
use mosaic_crypto::{ChainId, Keypair, PublicKey};
use mosaic_storage::Fragment;
use serde::{Deserialize, Serialize};

use crate::block::BlockHeader;

/// How often every connection is pinged. A connection through a partition keeps
/// its TCP state and its queued bytes, and after the heal TCP resends them only on
/// its next backed-off retry (a minute or more after a long outage): a failed ping
/// closes it instead, and the peer is dialled afresh.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);
/// How long a ping may take before it fails. libp2p reports a connection's second
/// failed ping in a row (the first is free), so a dead connection is closed within
/// `PING_INTERVAL + 2 x PING_TIMEOUT + PING_INTERVAL` (6 s) of its last answer: a
/// partition healed before that waits at most about as long as it lasted for TCP's
/// next retry, and one healed later finds the peer dialled afresh within a second.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long bytes sent to a peer may stay unacknowledged before the kernel drops
/// the connection (`TCP_USER_TIMEOUT`). Pings go out every second, so a connection
/// into a partition always has such bytes and dies this long after the cut, at
/// once, without a graceful close that would wait on the cut link; until then a
/// heal is picked up by TCP's next retry. Without it Linux retries for minutes.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long dialling a peer (TCP, noise, yamux) may take: a dial into a partition
/// holds back the next one to that peer until it gives up.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// Largest consensus message (a NEW-VIEW re-issues up to a window of payloads).
pub const CONSENSUS_FRAME_MAX: usize = 64 * 1024 * 1024;
/// Largest sync request.
pub const SYNC_REQUEST_MAX: usize = 1024;
/// Largest sync response (a batch of blocks).
pub const SYNC_RESPONSE_MAX: usize = 64 * 1024 * 1024;
/// Largest gossiped transaction batch.
pub const GOSSIP_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Blocks per sync response at most.
pub const SYNC_BLOCKS_MAX: u64 = 32;

/// Errors setting up the network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The key could not become a libp2p identity.
    #[error("validator key is not a valid libp2p ed25519 key: {0}")]
    Identity(String),
    /// A behaviour could not be built.
    #[error("cannot build the network: {0}")]
    Build(String),
}

/// Sets [`TCP_USER_TIMEOUT`] on a socket (Linux; elsewhere the pings alone close a
/// connection into a partition).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_user_timeout(socket: &tokio::net::TcpStream) {
    let millis = u32::try_from(TCP_USER_TIMEOUT.as_millis()).unwrap_or(u32::MAX);
    if let Err(e) = rustix::net::sockopt::set_tcp_user_timeout(socket, millis) {
        // Only slower failure detection: the pings still close it.
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn set_user_timeout(_socket: &tokio::net::TcpStream) {}

/// The transport of a node: TCP without Nagle's delay and with
/// [`TCP_USER_TIMEOUT`] on every socket, Noise, Yamux.
pub fn transport(
    key: &identity::Keypair,
) -> Result<libp2p::core::transport::Boxed<(PeerId, libp2p::core::muxing::StreamMuxerBox)>, NetError>
{
    use libp2p::core::Transport as _;
    use libp2p::core::muxing::StreamMuxerBox;
    use libp2p::{noise, tcp, yamux};
    let noise = noise::Config::new(key).map_err(|e| NetError::Build(e.to_string()))?;
    Ok(
        tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
            .map(|stream: tcp::tokio::TcpStream, _| {
                set_user_timeout(&stream.0);
                stream
            })
            .upgrade(libp2p::core::upgrade::Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed(),
    )
}

/// The libp2p identity of a validator key.
pub fn identity_of(key: &Keypair) -> Result<identity::Keypair, NetError> {
    identity::Keypair::ed25519_from_bytes(key.secret_bytes())
        .map_err(|e| NetError::Identity(e.to_string()))
}

/// The peer id of a validator's public key.
pub fn peer_id_of(key: &PublicKey) -> Result<PeerId, NetError> {
    let public = identity::ed25519::PublicKey::try_from_bytes(key.as_bytes())
        .map_err(|e| NetError::Identity(e.to_string()))?;
    Ok(identity::PublicKey::from(public).to_peer_id())
}

/// A sync request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRequest {
    /// The responder's executed height.
    Status,
    /// Certified blocks `from ..` (at most [`SYNC_BLOCKS_MAX`]).
    Blocks {
        /// First height.
        from: u64,
        /// How many.
        count: u64,
    },
    /// The responder's own fragment at `height`.
    Fragment {
        /// Height.
        height: u64,
    },
}

/// A certified block as sync serves it: the body is `None` when the responder
/// pruned it (the requester rebuilds it from fragments).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncBlock {
    /// The header.
    pub header: BlockHeader,
    /// Its commit certificate.
    pub certificate: CommitCertificate,
    /// The body bytes, if the responder still has them.
    #[serde(with = "serde_bytes")]
    pub body: Option<Vec<u8>>,
}

/// A sync response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResponse {
    /// The responder's executed height, and what it says of itself for the
    /// operator's page ([`crate::overview`]).
    Status {
        /// Height.
        height: u64,
        /// View, peers, scrub findings.
        report: crate::overview::PeerReport,
    },
    /// Blocks in height order (possibly fewer than asked).
    Blocks(Vec<SyncBlock>),
    /// The responder's own fragment, if it has one at that height.
    Fragment(Option<Fragment>),
    /// The request could not be served.
    Error(String),
    /// The responder is serving this peer as much as it will now: ask another
    /// peer, or this one again later (see [`crate::serve`]).
    Busy,
}

/// Length-prefixed byte frames with per-direction limits.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    request_max: usize,
    response_max: usize,
}

impl FrameCodec {
    /// A codec refusing requests above `request_max` and responses above
    /// `response_max` bytes.
    pub fn new(request_max: usize, response_max: usize) -> Self {
        FrameCodec {
            request_max,
            response_max,
        }
    }
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    bytes: &[u8],
    max: usize,
) -> io::Result<()> {
    if bytes.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds the limit of {max}", bytes.len()),
        ));
    }
    io.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.request_max).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.response_max).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req, self.request_max).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res, self.response_max).await
    }
}

/// The node's libp2p behaviour.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Banned peers: their connections are refused both ways, before any protocol
    /// runs (so the consensus links and redials do not dial them either).
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    /// Connections in their handshake, and connections per peer, at most (for every
    /// peer; see [`ConnectionLimits`]).
    pub limits: connection_limits::Behaviour,
    /// Established incoming connections at most, from peers outside the genesis
    /// validator set: a validator is never refused for want of room.
    pub room: connection_limits::Behaviour,
    /// Exchanges listen addresses and protocols.
    pub identify: identify::Behaviour,
    /// Peer discovery.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Transaction gossip.
    pub gossipsub: gossipsub::Behaviour,
    /// Consensus links between validators (streams driven by [`crate::links`]).
    pub consensus: libp2p_stream::Behaviour,
    /// Block and fragment sync.
    pub sync: request_response::Behaviour<FrameCodec>,
    /// Liveness.
    pub ping: ping::Behaviour,
    /// Local discovery, when enabled.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour").finish_non_exhaustive()
    }
}

/// Why a connection was refused, as a metric label: `banned` (the block list),
/// `limit` (a connection limit) or `other`.
pub fn denial_reason(cause: &libp2p::swarm::ConnectionDenied) -> &'static str {
    if cause.downcast_ref::<allow_block_list::Blocked>().is_some() {
        "banned"
    } else if cause
        .downcast_ref::<connection_limits::Exceeded>()
        .is_some()
    {
        "limit"
    } else {
        "other"
    }
}

/// The gossipsub topic of a chain's transactions.
pub fn tx_topic(chain: &ChainId) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("mosaic/{}/tx/2", chain.as_str()))
}

/// The protocol of the consensus links.
pub fn consensus_protocol(chain: &ChainId) -> Result<StreamProtocol, NetError> {
    protocol(chain, "consensus/2")
}

fn protocol(chain: &ChainId, name: &str) -> Result<StreamProtocol, NetError> {
    StreamProtocol::try_from_owned(format!("/mosaic/{}/{name}", chain.as_str()))
        .map_err(|e| NetError::Build(e.to_string()))
}

impl Behaviour {
    /// The behaviour for `chain`, with mDNS when `mdns` is set; `validators` are
    /// exempt from the limit on incoming connections.
    pub fn new(
        key: &identity::Keypair,
        chain: &ChainId,
        mdns: bool,
        limits: &ConnectionLimits,
        validators: &[PeerId],
    ) -> Result<Self, NetError> {
        let peer_id = key.public().to_peer_id();
        let build = |e: String| NetError::Build(e);

        // Mesh sizes that a network of 4 to 31 validators can meet (the defaults,
        // 6/5/12, can never be met with 4: each node has only 3 peers); heartbeats
        // start at once instead of after 5 s; a message may carry a whole batch.
        let gossip_config = gossipsub::ConfigBuilder::default()
            .mesh_n(4)
            .mesh_n_low(2)
            .mesh_n_high(8)
            .mesh_outbound_min(1)
            .gossip_lazy(3)
            .heartbeat_interval(Duration::from_millis(500))
            .heartbeat_initial_delay(Duration::from_millis(50))
            .max_transmit_size(GOSSIP_BYTES_MAX)
            // Messages carry no author, sequence number or signature: every transaction
            // in a batch is signed by its sender and checked on arrival, and peers are
            // scored by who forwarded a message, so a gossipsub signature only cost an
            // ed25519 signing per message sent and a check per message received (about
            // 3% of a validator's CPU at 5,000 transfers/s). Ids are content hashes.
            .validation_mode(gossipsub::ValidationMode::Anonymous)
            .validate_messages()
            .message_id_fn(|m: &gossipsub::Message| {
                gossipsub::MessageId::from(mosaic_crypto::Hash::of(&m.data).as_bytes().to_vec())
            })
            .duplicate_cache_time(Duration::from_secs(120))
            .build()
            .map_err(|e| build(e.to_string()))?;
        let gossipsub =
            gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, gossip_config)
                .map_err(|e| build(e.to_string()))?;

        let consensus = libp2p_stream::Behaviour::new();
        let sync = request_response::Behaviour::with_codec(
            FrameCodec::new(SYNC_REQUEST_MAX, SYNC_RESPONSE_MAX),
            [(
                protocol(chain, "sync/3")?,
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(Duration::from_secs(30))
                .with_max_concurrent_streams(256),
        );

        let mut kad_config = kad::Config::new(protocol(chain, "kad/1")?);
        kad_config.set_query_timeout(Duration::from_secs(30));
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        kad.set_mode(Some(kad::Mode::Server));

        let identify = identify::Behaviour::new(identify::Config::new(
            format!("/mosaic/{}/1", chain.as_str()),
            key.public(),
        ));
        let mdns = if mdns {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                    .map_err(|e| build(e.to_string()))?,
            )
        } else {
            None
        };
        let mut room = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established_incoming(Some(limits.incoming_max)),
        );
        for validator in validators {
            room.bypass_peer_id(validator);
        }
        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_pending_incoming(Some(limits.pending_incoming_max))
                .with_max_established_per_peer(Some(limits.per_peer_max)),
        );
        Ok(Behaviour {
            blocked: allow_block_list::Behaviour::default(),
            limits,
            room,
            identify,
            kad,
            gossipsub,
            consensus,
            sync,
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(PING_INTERVAL)
                    .with_timeout(PING_TIMEOUT),
            ),
            mdns: Toggle::from(mdns),
        })
    }
}

/// libp2p connection limits. Genesis validators are never refused for
/// `incoming_max` (their connections count towards it but pass when it is reached),
/// so peers filling the incoming slots cannot keep validators apart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Established incoming connections at most; a genesis validator's connection
    /// is let in even beyond it.
    pub incoming_max: u32,
    /// Incoming connections still in their handshake at most.
    pub pending_incoming_max: u32,
    /// Established connections to or from one peer at most (two dialling each
    /// other at once may briefly hold two).
    pub per_peer_max: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            incoming_max: 256,
            pending_incoming_max: 64,
            per_peer_max: 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use libp2p::swarm::{DialError, ListenError, SwarmEvent};
    use libp2p::{Multiaddr, Swarm, noise, tcp, yamux};
    use tokio::sync::mpsc;

    use super::ConnectionLimits;
    use super::*;

    const LIMIT: Duration = Duration::from_secs(20);

    /// What a swarm under test reports.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Connected(PeerId),
        /// A connection refused by this side, and why.
        Denied(&'static str),
        /// A dial that failed for another reason.
        DialFailed,
        /// A command ran.
        Done,
    }

    fn node(limits: &ConnectionLimits) -> Swarm<Behaviour> {
        node_with(identity::Keypair::generate_ed25519(), limits, &[])
    }

    fn node_with(
        key: identity::Keypair,
        limits: &ConnectionLimits,
        validators: &[PeerId],
    ) -> Swarm<Behaviour> {
        let chain = ChainId::new("limits-test").unwrap_or_else(|e| panic!("{e}"));
        let behaviour = Behaviour::new(&key, &chain, false, limits, validators)
            .unwrap_or_else(|e| panic!("{e}"));
        libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap_or_else(|e| panic!("{e}"))
            .with_behaviour(|_| behaviour)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build()
    }

    /// Runs on a swarm in its task; may report something itself.
    type Command = Box<dyn FnOnce(&mut Swarm<Behaviour>) -> Option<Seen> + Send>;

    /// Polls `swarm` in the background, running the commands sent to it there, and
    /// reports what it sees.
    fn run(
        mut swarm: Swarm<Behaviour>,
    ) -> (
        mpsc::UnboundedSender<Command>,
        mpsc::UnboundedReceiver<Seen>,
    ) {
        let (commands, mut todo) = mpsc::unbounded_channel::<Command>();
        let (seen, reports) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    command = todo.recv() => match command {
                        Some(command) => {
                            if let Some(report) = command(&mut swarm)
                                && seen.send(report).is_err()
                            {
                                return;
                            }
                        }
                        None => return,
                    },
                    event = swarm.select_next_some() => {
                        let report = match event {
                            SwarmEvent::ConnectionEstablished { peer_id, .. } => Seen::Connected(peer_id),
                            SwarmEvent::IncomingConnectionError { error: ListenError::Denied { cause }, .. }
                            | SwarmEvent::OutgoingConnectionError { error: DialError::Denied { cause }, .. } => {
                                Seen::Denied(denial_reason(&cause))
                            }
                            SwarmEvent::OutgoingConnectionError { .. } => Seen::DialFailed,
                            _ => continue,
                        };
                        if seen.send(report).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        (commands, reports)
    }

    fn dial(address: Multiaddr) -> Command {
        Box::new(move |s| match s.dial(address) {
            Ok(()) => None,
            Err(DialError::Denied { cause }) => Some(Seen::Denied(denial_reason(&cause))),
            Err(_) => Some(Seen::DialFailed),
        })
    }

    async fn next(reports: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
        match tokio::time::timeout(LIMIT, reports.recv()).await {
            Ok(Some(seen)) => seen,
            other => panic!("nothing reported within {LIMIT:?}: {other:?}"),
        }
    }

    async fn listening(limits: &ConnectionLimits) -> (PeerId, Multiaddr, Swarm<Behaviour>) {
        listening_with(node(limits)).await
    }

    async fn listening_with(mut swarm: Swarm<Behaviour>) -> (PeerId, Multiaddr, Swarm<Behaviour>) {
        let any: Multiaddr = "/ip4/127.0.0.1/tcp/0"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        swarm.listen_on(any).unwrap_or_else(|e| panic!("{e}"));
        let address = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        (*swarm.local_peer_id(), address, swarm)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn incoming_connections_past_the_limit_are_denied_except_to_validators() {
        let limits = ConnectionLimits {
            incoming_max: 1,
            ..ConnectionLimits::default()
        };
        let validator_key = identity::Keypair::generate_ed25519();
        let validator_id = validator_key.public().to_peer_id();
        let (server_id, address, server) = listening_with(node_with(
            identity::Keypair::generate_ed25519(),
            &limits,
            &[validator_id],
        ))
        .await;
        let (_server, mut server_seen) = run(server);
        let first = node(&ConnectionLimits::default());
        let first_id = *first.local_peer_id();
        let (first, mut first_seen) = run(first);
        let _ = first.send(dial(address.clone()));
        assert_eq!(next(&mut first_seen).await, Seen::Connected(server_id));
        assert_eq!(next(&mut server_seen).await, Seen::Connected(first_id));
        // The one slot is taken: a second peer is refused by the server...
        let (second, _second_seen) = run(node(&ConnectionLimits::default()));
        let _ = second.send(dial(address.clone()));
        assert_eq!(next(&mut server_seen).await, Seen::Denied("limit"));
        // ...but a genesis validator is let in.
        let (validator, _validator_seen) =
            run(node_with(validator_key, &ConnectionLimits::default(), &[]));
        let _ = validator.send(dial(address));
        assert_eq!(next(&mut server_seen).await, Seen::Connected(validator_id));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocked_peer_is_refused_both_ways_until_unblocked() {
        let limits = ConnectionLimits::default();
        let (_, address, server) = listening(&limits).await;
        let (server, mut server_seen) = run(server);
        let (client_id, client_address, client) = listening(&limits).await;
        let (client, _client_seen) = run(client);
        let _ = server.send(Box::new(move |s| {
            s.behaviour_mut().blocked.block_peer(client_id);
            Some(Seen::Done)
        }));
        assert_eq!(next(&mut server_seen).await, Seen::Done);
        // Its dial in is refused by the server...
        let _ = client.send(dial(address.clone()));
        assert_eq!(next(&mut server_seen).await, Seen::Denied("banned"));
        // ...and the server does not dial it: refused before any connection.
        let _ = server.send(Box::new(move |s| {
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(client_id)
                .addresses(vec![client_address])
                .build();
            match s.dial(opts) {
                Err(DialError::Denied { cause }) => Some(Seen::Denied(denial_reason(&cause))),
                Err(_) => Some(Seen::DialFailed),
                Ok(()) => None,
            }
        }));
        assert_eq!(next(&mut server_seen).await, Seen::Denied("banned"));
        // Until the ban ends.
        let _ = server.send(Box::new(move |s| {
            s.behaviour_mut().blocked.unblock_peer(client_id);
            Some(Seen::Done)
        }));
        assert_eq!(next(&mut server_seen).await, Seen::Done);
        let _ = client.send(dial(address));
        assert_eq!(next(&mut server_seen).await, Seen::Connected(client_id));
    }
}
