//! Swarm and sync events: connection bookkeeping (counts, redials, addresses
//! learned from identify, mDNS and the bootstrap list), then dispatch of gossip to
//! `gossip.rs`, peers' sync requests to `serving.rs` and the answers to ours to
//! `catchup.rs`.

use std::time::Instant;

use libp2p::multiaddr::Protocol;
use libp2p::request_response;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, gossipsub, identify};
use mosaic_consensus::Input;
use mosaic_crypto::codec;

use crate::error::NodeError;
use crate::net::{self, BehaviourEvent, SYNC_RESPONSE_MAX, SyncResponse};

use super::state::{EventLoop, QUICK_REDIAL_GAP};

impl EventLoop {
    pub(super) fn on_swarm_event(
        &mut self,
        event: SwarmEvent<BehaviourEvent>,
    ) -> Result<(), NodeError> {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                let count = self.connected.entry(peer_id).or_insert(0);
                *count += 1;
                if *count == 1 {
                    tracing::debug!(peer = %peer_id, address = %endpoint.get_remote_address(), "connected");
                    if let Some(i) = self.validator_index(&peer_id) {
                        tracing::info!(validator = i.0, peer = %peer_id, "validator connected");
                        // A healed partition: tell the replica, which re-sends its
                        // view change to that validator now.
                        self.drive(Input::Reconnected { peer: i })?;
                    }
                }
                self.metrics
                    .peers_connected
                    .set(self.connected.len() as i64);
                // The API's peer list follows the connections on the next tick.
                self.status_dirty = true;
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0 {
                    self.connected.remove(&peer_id);
                    self.sync.forget(&peer_id);
                    if let Some(i) = self.validator_index(&peer_id) {
                        tracing::info!(validator = i.0, peer = %peer_id, "validator disconnected");
                        // Dial it again now rather than on the next slow tick: a
                        // connection the kernel dropped after a healed cut comes back
                        // at once.
                        let now = Instant::now();
                        let recent = self
                            .quick_redials
                            .get(&peer_id)
                            .is_some_and(|at| now.duration_since(*at) < QUICK_REDIAL_GAP);
                        if !recent {
                            self.quick_redials.insert(peer_id, now);
                            self.redial();
                        }
                    }
                } else {
                    self.connected.insert(peer_id, num_established);
                }
                self.metrics
                    .peers_connected
                    .set(self.connected.len() as i64);
                // The API's peer list follows the connections on the next tick.
                self.status_dirty = true;
            }
            SwarmEvent::IncomingConnectionError {
                error: libp2p::swarm::ListenError::Denied { cause },
                ..
            }
            | SwarmEvent::OutgoingConnectionError {
                error: libp2p::swarm::DialError::Denied { cause },
                ..
            } => {
                let reason = net::denial_reason(&cause);
                tracing::debug!(reason, "connection denied");
                self.metrics.connection_denied(reason);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(libp2p::ping::Event {
                peer,
                connection,
                result: Err(error),
            })) => {
                tracing::info!(%peer, %error, "peer stopped answering pings; closing the connection and dialling again");
                self.metrics.connections_dead.inc();
                self.swarm.close_connection(connection);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                for address in info.listen_addrs.into_iter().take(8) {
                    self.learn_address(peer_id, address);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(libp2p::mdns::Event::Discovered(list))) => {
                for (peer, address) in list {
                    self.learn_address(peer, address);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync_event(event)?,
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_gossip(propagation_source, message_id, &message.data),
            _ => {}
        }
        Ok(())
    }

    pub(super) fn on_sync_event(
        &mut self,
        event: request_response::Event<Vec<u8>, Vec<u8>>,
    ) -> Result<(), NodeError> {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.serve_sync(peer, &request, channel),
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let Some((_, purpose)) = self.requests.remove(&request_id) else {
                    return Ok(());
                };
                match codec::decode::<SyncResponse>(&response, SYNC_RESPONSE_MAX) {
                    Ok(response) => self.on_sync_response(peer, purpose, response)?,
                    Err(_) => {
                        self.misbehaved(peer, "sync-undecodable", 5);
                        self.sync_request_failed(peer, purpose);
                    }
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "sync request failed");
                if let Some((_, purpose)) = self.requests.remove(&request_id) {
                    self.sync_request_failed(peer, purpose);
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound sync stream failed");
                if matches!(error, request_response::InboundFailure::Io(_)) {
                    self.misbehaved(peer, "sync-bad-frame", 2);
                }
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn add_bootstrap(&mut self, address: &str) {
        let Ok(multiaddr) = address.parse::<Multiaddr>() else {
            tracing::warn!(address, "bootstrap address is not a multiaddress; skipped");
            return;
        };
        let peer = multiaddr.iter().find_map(|p| match p {
            Protocol::P2p(id) => Some(id),
            _ => None,
        });
        match peer {
            Some(peer) if peer != self.info.peer_id => {
                let without_peer: Multiaddr = multiaddr
                    .iter()
                    .filter(|p| !matches!(p, Protocol::P2p(_)))
                    .collect();
                self.learn_address(peer, without_peer);
            }
            Some(_) => {}
            None => {
                if let Err(e) = self.swarm.dial(multiaddr) {
                    tracing::warn!(address, error = %e, "cannot dial bootstrap address");
                }
            }
        }
    }

    pub(super) fn learn_address(&mut self, peer: PeerId, address: Multiaddr) {
        if self.validator_index(&peer).is_none() {
            return;
        }
        if address.iter().any(|p| {
            matches!(p, Protocol::Ip4(ip) if ip.is_unspecified())
                || matches!(p, Protocol::Ip6(ip) if ip.is_unspecified())
        }) {
            return;
        }
        let set = self.addresses.entry(peer).or_default();
        if set.len() < 8 && set.insert(address.clone()) {
            self.swarm.add_peer_address(peer, address.clone());
            self.swarm.behaviour_mut().kad.add_address(&peer, address);
        }
    }
}
