//! The information elements the sink exports, in template order: one table
//! ([`ELEMENTS`]) that the templates are built from and the encoder writes, and that
//! `docs/schema.md`'s IPFIX column names (a test compares them).

/// The Private Enterprise Number of RFC 5103's reverse information elements: a
/// reverse element is the IANA element of the same number, for the reverse direction.
pub const REVERSE_PEN: u32 = 29305;

/// The length that announces a variable-length element in a template (RFC 7011
/// §7): each value then starts with its own length.
pub const VARIABLE_LENGTH: u16 = 65535;

/// Template ID of the IPv4 data records with a known start time.
pub const TEMPLATE_IPV4: u16 = 256;
/// Template ID of the IPv6 data records with a known start time.
pub const TEMPLATE_IPV6: u16 = 257;
/// Template ID of the IPv4 data records of a connection whose open was not seen
/// (`t_start` null): the same elements without the two start times.
pub const TEMPLATE_IPV4_NO_START: u16 = 258;
/// Template ID of the IPv6 data records without a start time.
pub const TEMPLATE_IPV6_NO_START: u16 = 259;
/// Template ID of the options template whose one record names the exporter's host
/// (scope: the observation domain).
pub const TEMPLATE_EXPORTER: u16 = 260;

/// IANA `observationDomainId` (149): the scope of the exporter options record.
pub const OBSERVATION_DOMAIN_ID: u16 = 149;
/// IANA `protocolIdentifier` (4).
pub const PROTOCOL_IDENTIFIER: u16 = 4;
/// Our `exporterHostId` enterprise element: the host ID, in the exporter options
/// record.
pub const EXPORTER_HOST_ID: u16 = 15;

/// Whose number an element's ID is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Registry {
    /// IANA's IPFIX information element registry (enterprise bit clear).
    Iana,
    /// RFC 5103's reverse element of the IANA element of the same number, under
    /// [`REVERSE_PEN`].
    Reverse,
    /// Ours, under the sink's enterprise number
    /// ([`IpfixSinkConfig::enterprise_number`](super::IpfixSinkConfig::enterprise_number)).
    Enterprise,
}

/// One information element of the data templates.
#[derive(Clone, Copy, Debug)]
pub struct InformationElement {
    /// Its name: IANA's, or ours for an enterprise element.
    pub name: &'static str,
    /// Whose number [`id`](InformationElement::id) is.
    pub registry: Registry,
    /// Its number (without the enterprise bit).
    pub id: u16,
    /// Its length in the templates, bytes ([`VARIABLE_LENGTH`] for a string).
    pub length: u16,
    /// Its IPFIX abstract data type (RFC 7011 §6.1).
    pub data_type: &'static str,
    /// The record field it carries: the first column of the `docs/schema.md` row
    /// whose IPFIX cell names it (`None` for `protocolIdentifier`, always 6, named in
    /// the paragraph above the table). `tcpControlBits`, derived from several fields,
    /// is named in `close_reason`'s row.
    pub record_field: Option<&'static str>,
    /// What the encoder writes (its switch).
    pub(crate) field: Field,
}

/// What the encoder writes for an element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    SourceV4,
    SourceV6,
    SourcePort,
    DestinationV4,
    DestinationV6,
    DestinationPort,
    Protocol,
    BiflowDirection,
    StartMs,
    EndMs,
    StartNs,
    EndNs,
    Octets,
    ReverseOctets,
    Packets,
    ReversePackets,
    EndReason,
    ControlBits,
    Retransmits,
    SmoothedRtt,
    RttVariance,
    RetransmittedOctets,
    CloseState,
    CloseReason,
    Workload,
    IdentitySource,
    UnattributedReason,
    Incomplete,
    FlowId,
    ProcessId,
    ProcessName,
    CgroupId,
}

impl Field {
    /// Whether a record of this address family and start time has the element.
    pub(crate) fn applies(self, ipv6: bool, has_start: bool) -> bool {
        match self {
            Field::SourceV4 | Field::DestinationV4 => !ipv6,
            Field::SourceV6 | Field::DestinationV6 => ipv6,
            Field::StartMs | Field::StartNs => has_start,
            _ => true,
        }
    }
}

/// An element: `(name, id, length, data type)` in `registry`, carrying
/// `record_field` through `field`.
const fn element(
    registry: Registry,
    (name, id, length, data_type): (&'static str, u16, u16, &'static str),
    record_field: &'static str,
    field: Field,
) -> InformationElement {
    InformationElement {
        name,
        registry,
        id,
        length,
        data_type,
        record_field: Some(record_field),
        field,
    }
}

const fn iana(
    definition: (&'static str, u16, u16, &'static str),
    record_field: &'static str,
    field: Field,
) -> InformationElement {
    element(Registry::Iana, definition, record_field, field)
}

/// RFC 5103's reverse of an IANA `unsigned64` counter.
const fn reverse(
    name: &'static str,
    id: u16,
    record_field: &'static str,
    field: Field,
) -> InformationElement {
    element(
        Registry::Reverse,
        (name, id, 8, "unsigned64"),
        record_field,
        field,
    )
}

const fn ours(
    definition: (&'static str, u16, u16, &'static str),
    record_field: &'static str,
    field: Field,
) -> InformationElement {
    element(Registry::Enterprise, definition, record_field, field)
}

/// `tcpControlBits` (IANA 6): the TCP flags the connection's life implies.
pub const TCP_CONTROL_BITS: u16 = 6;
/// `tcpControlBits`' FIN bit.
pub const TCP_FIN: u16 = 0x01;
/// `tcpControlBits`' SYN bit.
pub const TCP_SYN: u16 = 0x02;
/// `tcpControlBits`' RST bit.
pub const TCP_RST: u16 = 0x04;
/// `tcpControlBits`' ACK bit.
pub const TCP_ACK: u16 = 0x10;

/// Every element of the data templates, in template order. A template holds the ones
/// of its address family (the IPv4 or the IPv6 addresses), and the start times only
/// when the connection's open was seen ([`TEMPLATE_IPV4`] and [`TEMPLATE_IPV6`]; the
/// `_NO_START` templates leave them out rather than send a made-up time).
pub const ELEMENTS: &[InformationElement] = &[
    iana(
        ("sourceIPv4Address", 8, 4, "ipv4Address"),
        "local_ip",
        Field::SourceV4,
    ),
    iana(
        ("sourceIPv6Address", 27, 16, "ipv6Address"),
        "local_ip",
        Field::SourceV6,
    ),
    iana(
        ("sourceTransportPort", 7, 2, "unsigned16"),
        "local_port",
        Field::SourcePort,
    ),
    iana(
        ("destinationIPv4Address", 12, 4, "ipv4Address"),
        "remote_ip",
        Field::DestinationV4,
    ),
    iana(
        ("destinationIPv6Address", 28, 16, "ipv6Address"),
        "remote_ip",
        Field::DestinationV6,
    ),
    iana(
        ("destinationTransportPort", 11, 2, "unsigned16"),
        "remote_port",
        Field::DestinationPort,
    ),
    InformationElement {
        name: "protocolIdentifier",
        registry: Registry::Iana,
        id: PROTOCOL_IDENTIFIER,
        length: 1,
        data_type: "unsigned8",
        record_field: None,
        field: Field::Protocol,
    },
    iana(
        ("biflowDirection", 239, 1, "unsigned8"),
        "direction",
        Field::BiflowDirection,
    ),
    iana(
        ("flowStartMilliseconds", 152, 8, "dateTimeMilliseconds"),
        "t_start",
        Field::StartMs,
    ),
    iana(
        ("flowEndMilliseconds", 153, 8, "dateTimeMilliseconds"),
        "t_end",
        Field::EndMs,
    ),
    iana(
        ("flowStartNanoseconds", 156, 8, "dateTimeNanoseconds"),
        "t_start",
        Field::StartNs,
    ),
    iana(
        ("flowEndNanoseconds", 157, 8, "dateTimeNanoseconds"),
        "t_end",
        Field::EndNs,
    ),
    iana(
        ("octetTotalCount", 85, 8, "unsigned64"),
        "bytes_sent",
        Field::Octets,
    ),
    reverse(
        "octetTotalCount",
        85,
        "bytes_received",
        Field::ReverseOctets,
    ),
    iana(
        ("packetTotalCount", 86, 8, "unsigned64"),
        "segs_out",
        Field::Packets,
    ),
    reverse("packetTotalCount", 86, "segs_in", Field::ReversePackets),
    iana(
        ("flowEndReason", 136, 1, "unsigned8"),
        "record_kind",
        Field::EndReason,
    ),
    iana(
        ("tcpControlBits", TCP_CONTROL_BITS, 2, "unsigned16"),
        "close_reason",
        Field::ControlBits,
    ),
    ours(
        ("tcpRetransmits", 1, 4, "unsigned32"),
        "retransmits",
        Field::Retransmits,
    ),
    ours(
        ("tcpSmoothedRttMicroseconds", 2, 4, "unsigned32"),
        "srtt_us",
        Field::SmoothedRtt,
    ),
    ours(
        ("tcpRttVarianceMicroseconds", 3, 4, "unsigned32"),
        "rttvar_us",
        Field::RttVariance,
    ),
    ours(
        ("tcpRetransmittedOctets", 4, 8, "unsigned64"),
        "bytes_retransmitted",
        Field::RetransmittedOctets,
    ),
    ours(
        ("tcpCloseState", 5, VARIABLE_LENGTH, "string"),
        "close_state",
        Field::CloseState,
    ),
    ours(
        ("tcpCloseReason", 6, VARIABLE_LENGTH, "string"),
        "close_reason",
        Field::CloseReason,
    ),
    ours(
        ("sourceWorkloadId", 7, VARIABLE_LENGTH, "string"),
        "local_workload_id",
        Field::Workload,
    ),
    ours(
        ("sourceIdentitySource", 8, VARIABLE_LENGTH, "string"),
        "identity_source",
        Field::IdentitySource,
    ),
    ours(
        ("sourceUnattributedReason", 9, VARIABLE_LENGTH, "string"),
        "unattributed_reason",
        Field::UnattributedReason,
    ),
    ours(
        ("flowIncomplete", 10, 1, "boolean"),
        "incomplete",
        Field::Incomplete,
    ),
    ours(
        ("flowIdentifier", 11, VARIABLE_LENGTH, "string"),
        "flow_id",
        Field::FlowId,
    ),
    ours(("processId", 12, 4, "unsigned32"), "pid", Field::ProcessId),
    ours(
        ("processCommandName", 13, VARIABLE_LENGTH, "string"),
        "comm",
        Field::ProcessName,
    ),
    ours(
        ("cgroupId", 14, 8, "unsigned64"),
        "cgroup_id",
        Field::CgroupId,
    ),
];

/// The elements of the exporter options template ([`TEMPLATE_EXPORTER`]), scope
/// first: `observationDomainId` (149, IANA) and our `exporterHostId`
/// ([`EXPORTER_HOST_ID`], a string).
pub const EXPORTER_OPTIONS: &[(&str, Registry, u16, u16)] = &[
    (
        "observationDomainId",
        Registry::Iana,
        OBSERVATION_DOMAIN_ID,
        4,
    ),
    (
        "exporterHostId",
        Registry::Enterprise,
        EXPORTER_HOST_ID,
        VARIABLE_LENGTH,
    ),
];

/// The data template `id`'s elements: `(ipv6, has_start)` of its records.
pub(crate) fn template_shape(id: u16) -> (bool, bool) {
    match id {
        TEMPLATE_IPV6 => (true, true),
        TEMPLATE_IPV4_NO_START => (false, false),
        TEMPLATE_IPV6_NO_START => (true, false),
        _ => (false, true),
    }
}

/// The data template a record of this family and start time goes under.
pub(crate) fn template_for(ipv6: bool, has_start: bool) -> u16 {
    match (ipv6, has_start) {
        (false, true) => TEMPLATE_IPV4,
        (true, true) => TEMPLATE_IPV6,
        (false, false) => TEMPLATE_IPV4_NO_START,
        (true, false) => TEMPLATE_IPV6_NO_START,
    }
}

/// The IDs of the data templates.
pub const DATA_TEMPLATES: [u16; 4] = [
    TEMPLATE_IPV4,
    TEMPLATE_IPV6,
    TEMPLATE_IPV4_NO_START,
    TEMPLATE_IPV6_NO_START,
];

/// The elements of data template `id` (one of [`DATA_TEMPLATES`]), in order.
pub fn template_elements(id: u16) -> impl Iterator<Item = &'static InformationElement> {
    let (ipv6, has_start) = template_shape(id);
    ELEMENTS
        .iter()
        .filter(move |e| e.field.applies(ipv6, has_start))
}
