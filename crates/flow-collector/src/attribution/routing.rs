//! Which connection a record belongs to, as a number every collector node computes
//! alike: both ends' records of one connection (the 4-tuple and its reverse) get the
//! same [`connection_hash`], so that routing records by it (a Kafka partition,
//! `docs/kafka.md`, "Connection routing") brings both to one node, whose peer index
//! then pairs them exactly as a single node would.
//!
//! An address scoped to its host (loopback, link-local, unspecified: see `ip_key`)
//! is hashed with the host that reported it, as the peer index keys it, so that two
//! hosts' loopback connections do not meet. The hash is CRC-32C over a fixed byte
//! layout: stable across processes, machines and versions (a change would split
//! connections between nodes running different versions during an upgrade).

use flow_record::FlowRecord;

use super::ip_key::{HostId, IpKey};

/// The connection hash of `record`, sent by the exporter `host` (see the module
/// docs): equal for both ends' records of one connection.
pub fn connection_hash(record: &FlowRecord, host: &str) -> u32 {
    // The host only matters for scoped addresses; HostId(1) marks "scoped" in the
    // key, and the host's name is hashed in below.
    let local = IpKey::new(record.local.ip(), HostId::SCOPED_MARK);
    let remote = IpKey::new(record.remote.ip(), HostId::SCOPED_MARK);
    let a = (local.words(), record.local.port());
    let b = (remote.words(), record.remote.port());
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    let mut bytes = [0u8; 44];
    for (i, word) in first.0.iter().chain(&second.0).enumerate() {
        bytes[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
    }
    bytes[40..42].copy_from_slice(&first.1.to_be_bytes());
    bytes[42..44].copy_from_slice(&second.1.to_be_bytes());
    let hash = crc32c::crc32c(&bytes);
    if local.is_scoped() || remote.is_scoped() {
        crc32c::crc32c_append(hash, host.as_bytes())
    } else {
        hash
    }
}

/// The partition (of `partitions`, at least 1) that `record`'s connection routes to.
pub fn connection_partition(record: &FlowRecord, host: &str, partitions: u32) -> u32 {
    connection_hash(record, host) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(local: &str, remote: &str) -> FlowRecord {
        flow_testkit::record().local(local).remote(remote).build()
    }

    #[test]
    fn both_ends_of_a_connection_route_alike() {
        let a = record("10.0.0.1:40000", "10.0.0.2:443");
        let b = record("10.0.0.2:443", "10.0.0.1:40000");
        assert_eq!(connection_hash(&a, "h1"), connection_hash(&b, "h2"));
        // IPv4 and its mapped IPv6 form are one address.
        let c = record("[::ffff:10.0.0.2]:443", "[::ffff:10.0.0.1]:40000");
        assert_eq!(connection_hash(&a, "h1"), connection_hash(&c, "h3"));
        let v6a = record("[2001:db8::1]:5000", "[2001:db8::2]:80");
        let v6b = record("[2001:db8::2]:80", "[2001:db8::1]:5000");
        assert_eq!(connection_hash(&v6a, "x"), connection_hash(&v6b, "y"));
        // Another port is another connection.
        let d = record("10.0.0.1:40001", "10.0.0.2:443");
        assert_ne!(connection_hash(&a, "h1"), connection_hash(&d, "h1"));
    }

    #[test]
    fn scoped_addresses_route_with_their_host() {
        let a = record("127.0.0.1:40000", "127.0.0.1:8080");
        let b = record("127.0.0.1:8080", "127.0.0.1:40000");
        assert_eq!(connection_hash(&a, "h1"), connection_hash(&b, "h1"));
        assert_ne!(connection_hash(&a, "h1"), connection_hash(&a, "h2"));
        // A global connection does not depend on the host.
        let g = record("10.0.0.1:1", "10.0.0.2:2");
        assert_eq!(connection_hash(&g, "h1"), connection_hash(&g, "h2"));
    }

    #[test]
    fn the_hash_is_stable() {
        // Fixed: nodes of different versions must route alike.
        let a = record("10.0.0.1:40000", "10.0.0.2:443");
        assert_eq!(connection_hash(&a, "h"), 0xd96d_5f59);
        assert!(connection_partition(&a, "h", 12) < 12);
        assert_eq!(connection_partition(&a, "h", 0), 0);
    }
}
