//! libp2p: the validator's identity, the network behaviour and the wire formats.
//!
//! - Transport: TCP + Noise + Yamux; the validator's ed25519 key is its libp2p
//!   identity, so an authenticated connection's peer id *is* a validator.
//! - `/mosaic/<chain>/consensus/2`: one long-lived stream from each validator to each
//!   other, carrying length-prefixed consensus messages in order ([`crate::links`]);
//!   only genesis validators may open one.
//! - `/mosaic/<chain>/sync/1`: request-response for status, certified blocks and
//!   fragments ([`SyncRequest`], [`SyncResponse`]).
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
    PeerId, StreamProtocol, gossipsub, identify, identity, kad, mdns, ping, request_response,
};
use mosaic_consensus::CommitCertificate;
use mosaic_crypto::{ChainId, Keypair, PublicKey};
use mosaic_storage::Fragment;
use serde::{Deserialize, Serialize};

use crate::block::BlockHeader;

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
    pub body: Option<Vec<u8>>,
}

/// A sync response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResponse {
    /// The responder's executed height.
    Status {
        /// Height.
        height: u64,
    },
    /// Blocks in height order (possibly fewer than asked).
    Blocks(Vec<SyncBlock>),
    /// The responder's own fragment, if it has one at that height.
    Fragment(Option<Fragment>),
    /// The request could not be served.
    Error(String),
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
    /// The behaviour for `chain`, with mDNS when `mdns` is set.
    pub fn new(key: &identity::Keypair, chain: &ChainId, mdns: bool) -> Result<Self, NetError> {
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
                protocol(chain, "sync/1")?,
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
        Ok(Behaviour {
            identify,
            kad,
            gossipsub,
            consensus,
            sync,
            ping: ping::Behaviour::new(ping::Config::new()),
            mdns: Toggle::from(mdns),
        })
    }
}
