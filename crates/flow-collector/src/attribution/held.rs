//! The flows held back: a slab of flows, two FIFO queues (waiting for a peer; then
//! waiting for heartbeats), and two intrusive lists per flow, so that an arriving
//! peer record finds the flows waiting for it by connection (the list's head is in
//! the connection's entry of the peer index), and a heartbeat finds the
//! flows waiting on its IP, without a scan and without an allocation per flow.
//!
//! Sizes (x86-64): a held flow ([`Held`]) is 296 bytes, 248 of them the record
//! itself (kept to be written out), the rest its chunk, position, host, arrival,
//! phase, side and two list links; its slot 304 bytes; plus 8 bytes in a deadline
//! queue, an entry in the by-IP map while it waits on heartbeats, and its
//! connection's waiting list head in the peer index (shared by the flows of one
//! connection; see `peers`).
//!
//! Arrival times never go back (the engine's clock only rises), and the peer wait
//! and the hold-back are the same for every flow, so arrival order is deadline
//! order: the front of each queue is the next to decide. A flow decided out of
//! order (by a peer or a heartbeat) leaves a stale entry in its queue, skipped when
//! it reaches the front and dropped when stale entries outnumber live ones.

use std::{collections::VecDeque, hash::Hash, sync::Arc};

use flow_batch::wire::BatchId;
use flow_record::FlowRecord;

use crate::attribution::{
    FastMap,
    ip_key::{HostId, IpKey},
    peers::{ConnRef, PeerIndex, PeerKey, Side},
    time::Nanos,
};

/// No slot.
pub(crate) const NIL: u32 = u32::MAX;

/// Where a held flow is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for its peer's record; the map is not consulted yet.
    Peer,
    /// Its peer wait ended and the map knew no owner: waiting for heartbeats on its
    /// remote IP (or its peer) until the hold-back ends.
    Map,
}

/// A link of an intrusive list.
#[derive(Clone, Copy, Debug)]
struct Link {
    prev: u32,
    next: u32,
}

const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
};

/// Which list.
#[derive(Clone, Copy, Debug)]
enum List {
    /// Flows by the 4-tuple of the peer record they wait for.
    Peer,
    /// Flows in the map phase by remote IP.
    Ip,
}

/// A flow held back.
#[derive(Debug)]
pub(crate) struct Held {
    /// The record.
    pub(crate) record: FlowRecord,
    /// Its chunk.
    pub(crate) batch: Arc<BatchId>,
    /// Its position in the chunk.
    pub(crate) index: u32,
    /// The host that reported it.
    pub(crate) host: HostId,
    /// When it arrived.
    pub(crate) arrival: Nanos,
    /// Where it is.
    pub(crate) phase: Phase,
    /// Which end of its connection it is (set when held).
    side: Side,
    peer_link: Link,
    ip_link: Link,
}

impl Held {
    /// A flow that just arrived.
    pub(crate) fn new(
        record: FlowRecord,
        batch: Arc<BatchId>,
        index: u32,
        host: HostId,
        arrival: Nanos,
    ) -> Held {
        Held {
            record,
            batch,
            index,
            host,
            arrival,
            phase: Phase::Peer,
            side: Side::Both,
            peer_link: UNLINKED,
            ip_link: UNLINKED,
        }
    }

    /// Its own 4-tuple key.
    pub(crate) fn key(&self) -> PeerKey {
        PeerKey::of(&self.record, self.host)
    }

    fn link(&mut self, list: List) -> &mut Link {
        match list {
            List::Peer => &mut self.peer_link,
            List::Ip => &mut self.ip_link,
        }
    }
}

/// A handle on a held flow (stale once the flow leaves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeldRef {
    slot: u32,
    generation: u32,
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    held: Option<Held>,
}

/// The held flows.
#[derive(Debug, Default)]
pub(crate) struct HeldFlows {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Flows waiting for their peer, in one list per connection whose head is kept
    /// in the connection's entry of the peer index (so that indexing a record finds
    /// the flows waiting for it in the same probe).
    waiting: usize,
    /// Remote IP -> first flow in the map phase waiting on it.
    by_ip: FastMap<IpKey, u32>,
    peer_queue: VecDeque<HeldRef>,
    map_queue: VecDeque<HeldRef>,
    live_peer: usize,
    live_map: usize,
}

impl HeldFlows {
    /// Flows held.
    pub(crate) fn len(&self) -> usize {
        self.live_peer + self.live_map
    }

    /// Holds a flow of the connection `conn` that just arrived, waiting for its peer
    /// (listed in `peers`, the index its peer's record will arrive in).
    pub(crate) fn insert(
        &mut self,
        mut held: Held,
        conn: &ConnRef,
        peers: &mut PeerIndex,
    ) -> HeldRef {
        held.side = conn.side();
        let slot = match self.free.pop() {
            Some(n) => {
                self.slots[n as usize].held = Some(held);
                n
            }
            None => {
                // More than four billion held flows cannot fit in memory anyway.
                let n = u32::try_from(self.slots.len()).unwrap_or(NIL - 1);
                self.slots.push(Slot {
                    generation: 0,
                    held: Some(held),
                });
                n
            }
        };
        let r = HeldRef {
            slot,
            generation: self.slots[slot as usize].generation,
        };
        push_front(
            &mut self.slots,
            |s| peers.swap_waiters(conn, s),
            slot,
            List::Peer,
        );
        self.waiting += 1;
        self.peer_queue.push_back(r);
        self.live_peer += 1;
        r
    }

    /// The flow `r` refers to, if it is still held.
    pub(crate) fn get(&self, r: HeldRef) -> Option<&Held> {
        let slot = self.slots.get(r.slot as usize)?;
        (slot.generation == r.generation)
            .then_some(slot.held.as_ref())
            .flatten()
    }

    /// Takes the flow `r` refers to out (and out of its list in `peers`).
    pub(crate) fn remove(&mut self, r: HeldRef, peers: &mut PeerIndex) -> Option<Held> {
        let phase = self.get(r)?.phase;
        let key = self.get(r)?.key();
        let conn = peers.conn(&key);
        unlink(
            &mut self.slots,
            |next| peers.set_waiters(&conn, next),
            r.slot,
            List::Peer,
        );
        self.waiting -= 1;
        match phase {
            Phase::Peer => self.live_peer -= 1,
            Phase::Map => {
                let by_ip = &mut self.by_ip;
                unlink(
                    &mut self.slots,
                    |next| set_head(by_ip, &key.remote, next),
                    r.slot,
                    List::Ip,
                );
                self.live_map -= 1;
            }
        }
        let slot = &mut self.slots[r.slot as usize];
        slot.generation = slot.generation.wrapping_add(1);
        let held = slot.held.take();
        self.free.push(r.slot);
        self.tidy_queues();
        held
    }

    /// Moves the flow at the front of the peer queue to the map phase.
    pub(crate) fn enter_map_phase(&mut self, r: HeldRef) {
        let Some(held) = self.get(r) else {
            return;
        };
        if held.phase != Phase::Peer {
            return;
        }
        let remote = held.key().remote;
        if let Some(held) = self.slots[r.slot as usize].held.as_mut() {
            held.phase = Phase::Map;
        }
        let by_ip = &mut self.by_ip;
        push_front(
            &mut self.slots,
            |s| by_ip.insert(remote, s).unwrap_or(NIL),
            r.slot,
            List::Ip,
        );
        self.live_peer -= 1;
        self.live_map += 1;
        self.map_queue.push_back(r);
        self.tidy_queues();
    }

    /// The oldest flow still waiting for its peer (the next peer deadline).
    pub(crate) fn front_peer(&self) -> Option<(HeldRef, &Held)> {
        self.peer_queue.iter().find_map(|r| {
            self.get(*r)
                .filter(|h| h.phase == Phase::Peer)
                .map(|h| (*r, h))
        })
    }

    /// The oldest flow in the map phase (the next hold-back deadline).
    pub(crate) fn front_map(&self) -> Option<(HeldRef, &Held)> {
        self.map_queue.iter().find_map(|r| {
            self.get(*r)
                .filter(|h| h.phase == Phase::Map)
                .map(|h| (*r, h))
        })
    }

    /// The oldest flow held.
    pub(crate) fn oldest(&self) -> Option<HeldRef> {
        self.front_map()
            .or_else(|| self.front_peer())
            .map(|(r, _)| r)
    }

    /// Every flow held, oldest first.
    pub(crate) fn all(&self) -> Vec<HeldRef> {
        self.map_queue
            .iter()
            .chain(&self.peer_queue)
            .filter(|r| self.get(**r).is_some())
            .copied()
            .collect()
    }

    /// Appends to `out` the flows a record of `side` is the peer of, in the list of
    /// its connection that starts at `head` (from [`PeerIndex::insert`]).
    pub(crate) fn waiting_for_peer(&self, head: u32, side: Side, out: &mut Vec<HeldRef>) {
        if self.waiting == 0 || head == NIL {
            return;
        }
        let mut at = head;
        while at != NIL {
            let Some(slot) = self.slots.get(at as usize) else {
                break;
            };
            let Some(held) = slot.held.as_ref() else {
                break;
            };
            if held.side.is_peer_of(side) {
                out.push(HeldRef {
                    slot: at,
                    generation: slot.generation,
                });
            }
            at = held.peer_link.next;
        }
    }

    /// Whether flows wait on heartbeats of `ip`.
    pub(crate) fn has_waiters_on(&self, ip: &IpKey) -> bool {
        !self.by_ip.is_empty() && self.by_ip.contains_key(ip)
    }

    /// Appends to `out` the flows in the map phase waiting on `ip`.
    pub(crate) fn waiting_on_ip(&self, ip: &IpKey, out: &mut Vec<HeldRef>) {
        if let Some(head) = self.by_ip.get(ip) {
            self.walk(*head, List::Ip, out);
        }
    }

    fn walk(&self, head: u32, list: List, out: &mut Vec<HeldRef>) {
        let mut at = head;
        while at != NIL {
            let Some(slot) = self.slots.get(at as usize) else {
                break;
            };
            let Some(held) = slot.held.as_ref() else {
                break;
            };
            out.push(HeldRef {
                slot: at,
                generation: slot.generation,
            });
            at = match list {
                List::Peer => held.peer_link.next,
                List::Ip => held.ip_link.next,
            };
        }
    }

    /// Drops stale entries at the queues' fronts, and all of them once they
    /// outnumber the live ones.
    fn tidy_queues(&mut self) {
        let live = |slots: &[Slot], r: &HeldRef, phase: Phase| {
            slots.get(r.slot as usize).is_some_and(|s| {
                s.generation == r.generation && s.held.as_ref().is_some_and(|h| h.phase == phase)
            })
        };
        for (queue, phase, live_count) in [
            (&mut self.peer_queue, Phase::Peer, self.live_peer),
            (&mut self.map_queue, Phase::Map, self.live_map),
        ] {
            while queue.front().is_some_and(|r| !live(&self.slots, r, phase)) {
                queue.pop_front();
            }
            if queue.len() > 2 * live_count + 64 {
                queue.retain(|r| live(&self.slots, r, phase));
            }
        }
    }
}

/// Puts `slot` first in a list; `swap_head` makes it the head and returns the old one.
fn push_front(slots: &mut [Slot], swap_head: impl FnOnce(u32) -> u32, slot: u32, list: List) {
    let next = swap_head(slot);
    if let Some(held) = slots.get_mut(slot as usize).and_then(|s| s.held.as_mut()) {
        *held.link(list) = Link { prev: NIL, next };
    }
    if let Some(held) = slots.get_mut(next as usize).and_then(|s| s.held.as_mut()) {
        held.link(list).prev = slot;
    }
}

/// Sets the head of the list of `key` in `heads` (`NIL`: the list is empty).
fn set_head<K: Hash + Eq>(heads: &mut FastMap<K, u32>, key: &K, head: u32) {
    if head == NIL {
        heads.remove(key);
    } else if let Some(h) = heads.get_mut(key) {
        *h = head;
    }
}

/// Takes `slot` out of its list; `set_head` is called with the new head when it was
/// the head.
fn unlink(slots: &mut [Slot], set_head: impl FnOnce(u32), slot: u32, list: List) {
    let Some(held) = slots.get_mut(slot as usize).and_then(|s| s.held.as_mut()) else {
        return;
    };
    let Link { prev, next } = std::mem::replace(held.link(list), UNLINKED);
    match slots.get_mut(prev as usize).and_then(|s| s.held.as_mut()) {
        Some(p) => p.link(list).next = next,
        None => set_head(next),
    }
    if let Some(n) = slots.get_mut(next as usize).and_then(|s| s.held.as_mut()) {
        n.link(list).prev = prev;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sizes the module documentation gives.
    #[test]
    fn sizes() {
        use std::mem::size_of;
        assert_eq!(size_of::<FlowRecord>(), 248);
        assert_eq!(size_of::<Held>(), 296);
        assert_eq!(size_of::<Slot>(), 304);
    }
}
