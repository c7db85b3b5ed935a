//! `IpfixSink`: records exported as IPFIX (RFC 7011) over UDP or TCP (feature `ipfix`).
