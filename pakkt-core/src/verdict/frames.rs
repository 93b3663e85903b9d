//! A small frame builder for the verdict tests: every header written byte by
//! byte, independently of the parser. Public with the `testing` feature, so
//! that the engine's differential tests build the same frames; the
//! generators that draw them are in [`strategies`](super::strategies).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::packet::Fragment;

const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// Shortest Ethernet frame without FCS; shorter ones are padded with zeros.
pub const MIN_FRAME: usize = 60;

/// Ethernet II with `tags` VLAN tags (each the tag's own ethertype), padded
/// to [`MIN_FRAME`].
pub fn ethernet(tags: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&DST_MAC);
    frame.extend_from_slice(&SRC_MAC);
    for (i, tpid) in tags.iter().enumerate() {
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&(100 + i as u16).to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    if frame.len() < MIN_FRAME {
        frame.resize(MIN_FRAME, 0);
    }
    frame
}

/// An unpadded Ethernet frame, for exact-length tests.
pub fn ethernet_unpadded(tags: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = ethernet(tags, ethertype, payload);
    frame.truncate(14 + 4 * tags.len() + payload.len());
    frame
}

/// The destination of [`ipv4`] packets.
pub const DST_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The destination of [`ipv6`] packets.
pub const DST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
/// The source port of [`tcp`], [`tcp_with`] and [`udp`] segments.
pub const SRC_PORT: u16 = 40_000;

/// An IPv4 packet to [`DST_V4`]; `options` must be a multiple of 4 bytes
/// long.
pub fn ipv4(src: Ipv4Addr, protocol: u8, options: &[u8], flags_offset: u16, payload: &[u8]) -> Vec<u8> {
    ipv4_to(src, DST_V4, protocol, options, flags_offset, payload)
}

/// An IPv4 packet to `dst`; `options` must be a multiple of 4 bytes long.
pub fn ipv4_to(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    options: &[u8],
    flags_offset: u16,
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0, "options are whole words");
    let header_len = 20 + options.len();
    let total = u16::try_from(header_len + payload.len()).expect("fits an IPv4 packet");
    let mut ip = vec![0x40 | (header_len / 4) as u8, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34]);
    ip.extend_from_slice(&flags_offset.to_be_bytes());
    ip.extend_from_slice(&[64, protocol, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(options);
    let checksum =
        !ip.chunks(2).map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]]))).fold(0u32, |sum, word| {
            let sum = sum + word;
            (sum & 0xFFFF) + (sum >> 16)
        }) as u16;
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    ip.extend_from_slice(payload);
    ip
}

/// An IPv6 packet to [`DST_V6`] whose payload (extension headers included)
/// is `payload`.
pub fn ipv6(src: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    ipv6_to(src, DST_V6, next, payload)
}

/// An IPv6 packet to `dst` whose payload (extension headers included) is
/// `payload`.
pub fn ipv6_to(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).expect("fits an IPv6 payload");
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&len.to_be_bytes());
    ip.extend_from_slice(&[next, 64]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(payload);
    ip
}

/// A Hop-by-Hop, Routing or Destination Options header of `(units + 1) * 8`
/// bytes.
pub fn options_header(next: u8, units: u8) -> Vec<u8> {
    let mut header = vec![next, units];
    header.resize((usize::from(units) + 1) * 8, 0);
    header
}

/// An AH header of `(units + 2) * 4` bytes.
pub fn ah_header(next: u8, units: u8) -> Vec<u8> {
    let mut header = vec![next, units];
    header.resize((usize::from(units) + 2) * 4, 0xAA);
    header
}

/// An IPv6 Fragment header.
pub fn fragment_header(next: u8, offset_units: u16, more: bool) -> Vec<u8> {
    let field = (offset_units << 3) | u16::from(more);
    let mut header = vec![next, 0];
    header.extend_from_slice(&field.to_be_bytes());
    header.extend_from_slice(&[0xDE, 0xAD, 0xBE, 0xEF]);
    header
}

/// A TCP SYN from [`SRC_PORT`] with data offset `data_offset` (in words),
/// followed by `extra` bytes (options, then data).
pub fn tcp_with(dst_port: u16, data_offset: u8, extra: usize) -> Vec<u8> {
    let mut segment = tcp_flags(SRC_PORT, dst_port, 0x02);
    segment[12] = data_offset << 4;
    segment.resize(20 + extra, 0);
    segment
}

/// A 20-byte TCP header between these ports with these flags.
pub fn tcp_flags(src_port: u16, dst_port: u16, flags: u8) -> Vec<u8> {
    let mut segment = Vec::new();
    segment.extend_from_slice(&src_port.to_be_bytes());
    segment.extend_from_slice(&dst_port.to_be_bytes());
    segment.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    segment.extend_from_slice(&[5 << 4, flags, 0xFF, 0xFF, 0, 0, 0, 0]);
    segment
}

/// A minimal TCP SYN.
pub fn tcp(dst_port: u16) -> Vec<u8> {
    tcp_with(dst_port, 5, 0)
}

/// A UDP datagram from [`SRC_PORT`] with `data` bytes of payload.
pub fn udp(dst_port: u16, data: usize) -> Vec<u8> {
    udp_from(SRC_PORT, dst_port, data)
}

/// A UDP datagram between these ports with `data` bytes of payload.
pub fn udp_from(src_port: u16, dst_port: u16, data: usize) -> Vec<u8> {
    let mut segment = Vec::new();
    segment.extend_from_slice(&src_port.to_be_bytes());
    segment.extend_from_slice(&dst_port.to_be_bytes());
    segment.extend_from_slice(&u16::try_from(8 + data).expect("fits").to_be_bytes());
    segment.extend_from_slice(&[0, 0]);
    segment.resize(8 + data, 0x55);
    segment
}

/// An ICMP or `ICMPv6` message of 8 bytes.
pub fn icmp(icmp_type: u8) -> Vec<u8> {
    vec![icmp_type, 0, 0, 0, 0, 1, 0, 1]
}

/// An ARP request payload.
pub fn arp() -> Vec<u8> {
    let mut body = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    body.extend_from_slice(&SRC_MAC);
    body.extend_from_slice(&[192, 0, 2, 1]);
    body.extend_from_slice(&[0; 6]);
    body.extend_from_slice(&[192, 0, 2, 2]);
    body
}

/// A transport, as a test describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP to a port.
    Tcp(u16),
    /// UDP to a port.
    Udp(u16),
    /// ICMP in IPv4, `ICMPv6` in IPv6, of a type.
    Icmp(u8),
    /// Another protocol number (never 6, 17, the family's ICMP or an IPv6
    /// extension header).
    Other(u8),
}

/// A well-formed packet, described rather than encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desc {
    /// VLAN tags' ethertypes (0..=2 of them).
    pub tags: Vec<u16>,
    /// Source address; its family picks IPv4 or IPv6.
    pub src: IpAddr,
    /// What it carries.
    pub transport: Transport,
    /// Fragment position.
    pub fragment: Fragment,
    /// Payload bytes after the transport header.
    pub data: usize,
    /// IPv6 only: a Hop-by-Hop header before everything else.
    pub hop_by_hop: bool,
    /// Destination address, of the source's family; `None` for [`DST_V4`]
    /// or [`DST_V6`].
    pub dst: Option<IpAddr>,
    /// TCP and UDP source port.
    pub src_port: u16,
    /// TCP flags.
    pub tcp_flags: u8,
}

impl Desc {
    /// A plain packet.
    pub fn new(src: IpAddr, transport: Transport) -> Self {
        Self {
            tags: Vec::new(),
            src,
            transport,
            fragment: Fragment::None,
            data: 0,
            hop_by_hop: false,
            dst: None,
            src_port: SRC_PORT,
            tcp_flags: 0x02,
        }
    }

    /// The destination address the frame carries.
    pub fn dst_addr(&self) -> IpAddr {
        match (self.dst, self.src) {
            (Some(dst), _) => dst,
            (None, IpAddr::V4(_)) => IpAddr::V4(DST_V4),
            (None, IpAddr::V6(_)) => IpAddr::V6(DST_V6),
        }
    }

    fn protocol(&self) -> u8 {
        match (self.transport, self.src) {
            (Transport::Tcp(_), _) => 6,
            (Transport::Udp(_), _) => 17,
            (Transport::Icmp(_), IpAddr::V4(_)) => 1,
            (Transport::Icmp(_), IpAddr::V6(_)) => 58,
            (Transport::Other(n), _) => n,
        }
    }

    fn segment(&self) -> Vec<u8> {
        let mut segment = match self.transport {
            Transport::Tcp(port) => tcp_flags(self.src_port, port, self.tcp_flags),
            Transport::Udp(port) => udp_from(self.src_port, port, 0),
            Transport::Icmp(t) => icmp(t),
            Transport::Other(_) => Vec::new(),
        };
        segment.resize(segment.len() + self.data, 0x77);
        segment
    }

    /// The IP length the parser should report.
    pub fn ip_total_len(&self) -> u16 {
        let ext = match self.src {
            IpAddr::V4(_) => 0,
            IpAddr::V6(_) => 8 * (usize::from(self.hop_by_hop) + usize::from(self.fragment != Fragment::None)),
        };
        let header = if self.src.is_ipv4() { 20 } else { 40 };
        u16::try_from(header + ext + self.segment().len()).expect("small")
    }

    /// The encoded frame.
    pub fn frame(&self) -> Vec<u8> {
        let protocol = self.protocol();
        let segment = self.segment();
        match self.src {
            IpAddr::V4(src) => {
                let flags_offset = match self.fragment {
                    Fragment::None => 0,
                    Fragment::First => 0x2000,
                    Fragment::NonFirst => 0x2000 | 0x00B9,
                };
                let dst = match self.dst_addr() {
                    IpAddr::V4(dst) => dst,
                    IpAddr::V6(_) => DST_V4,
                };
                ethernet(&self.tags, 0x0800, &ipv4_to(src, dst, protocol, &[], flags_offset, &segment))
            }
            IpAddr::V6(src) => {
                let mut payload = Vec::new();
                let mut first = protocol;
                if self.fragment != Fragment::None {
                    let offset = if self.fragment == Fragment::NonFirst { 185 } else { 0 };
                    payload = fragment_header(first, offset, true);
                    first = 44;
                }
                if self.hop_by_hop {
                    let mut with_hbh = options_header(first, 0);
                    with_hbh.extend_from_slice(&payload);
                    payload = with_hbh;
                    first = 0;
                }
                payload.extend_from_slice(&segment);
                let dst = match self.dst_addr() {
                    IpAddr::V6(dst) => dst,
                    IpAddr::V4(_) => DST_V6,
                };
                ethernet(&self.tags, 0x86DD, &ipv6_to(src, dst, first, &payload))
            }
        }
    }
}
