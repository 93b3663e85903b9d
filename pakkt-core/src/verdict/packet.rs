//! What the verdict model reads from a frame, and how.
//!
//! [`parse`] turns the bytes an XDP program sees (an Ethernet frame without
//! its FCS) into a [`Parsed`]: not IP at all, IP but malformed, or an IP
//! packet reduced to the few facts the verdict needs (source and
//! destination addresses, transport and its ports, TCP flags, IP length,
//! fragment position).
//!
//! Every rule here is written so that the BPF program can follow it step by
//! step: a bounds check before every read (the parser never indexes, it asks
//! [`slice::get`] and treats `None` as "too short"), loops with constant
//! bounds ([`MAX_VLAN_TAGS`], [`MAX_IPV6_EXT_HEADERS`]), integers only.
//!
//! # Layer 2
//! An Ethernet II header (14 bytes), then up to [`MAX_VLAN_TAGS`] VLAN tags
//! (ethertype `0x8100` or `0x88A8`, 4 bytes each). After two tags the next
//! ethertype is taken as it is, so a third tag is simply not IP. `0x0800` is
//! IPv4, `0x86DD` IPv6, anything else (ARP, LLDP, an 802.3 length field …)
//! is [`Parsed::NonIp`]. A frame too short for its Ethernet header or for a
//! VLAN tag it announces is also [`Parsed::NonIp`]: the model does not
//! classify it and the stack discards it.
//!
//! # IPv4
//! Checked in this order, the first failure naming the [`Malformation`]:
//! at least 20 bytes after layer 2 ([`Malformation::TruncatedIpHeader`]),
//! version 4 ([`Malformation::BadIpVersion`]), IHL ≥ 5
//! ([`Malformation::BadIpHeaderLength`]), the whole header with its options
//! within the frame ([`Malformation::TruncatedIpHeader`]), and
//! `IHL*4 ≤ total length ≤ bytes after layer 2` ([`Malformation::BadIpLength`]).
//! Bytes beyond the total length (Ethernet padding) are ignored. The header
//! checksum, the reserved flag and DF are not looked at: the kernel checks
//! the checksum itself and a bad one is dropped there.
//!
//! A fragment offset other than 0 makes a [`Fragment::NonFirst`] packet
//! whose transport is not parsed; MF with offset 0 makes a
//! [`Fragment::First`] one, parsed normally.
//!
//! # IPv6
//! At least 40 bytes after layer 2 ([`Malformation::TruncatedIpHeader`]),
//! version 6 ([`Malformation::BadIpVersion`]), `40 + payload length ≤ bytes
//! after layer 2` ([`Malformation::BadIpLength`]). The packet ends at
//! `40 + payload length`; a payload length of 0 means an empty payload
//! (jumbograms are not supported: their headers run past that end and so
//! are malformed).
//!
//! Extension headers are walked, at most [`MAX_IPV6_EXT_HEADERS`] of them:
//! Hop-by-Hop (0), Routing (43) and Destination Options (60), each
//! `(hdr_ext_len + 1) * 8` bytes; Fragment (44), 8 bytes; AH (51),
//! `(payload_len + 2) * 4` bytes. Hop-by-Hop is accepted in any position
//! (the kernel refuses it later; the model only needs a bounded walk). A
//! header that runs past the packet end is
//! [`Malformation::TruncatedExtensionHeader`]; meeting a ninth extension
//! header is [`Malformation::TooManyExtensionHeaders`], decided from its
//! next-header value alone, before reading it. A Fragment header with a
//! non-zero offset ends the walk with [`Fragment::NonFirst`]; with offset 0
//! it marks the packet [`Fragment::First`] (atomic fragments included) and
//! the walk goes on. No Next Header (59) is [`L4::None`]; ESP (50) and any
//! other value are [`L4::Other`].
//!
//! # Transport
//! Parsed for unfragmented packets and first fragments only, within the IP
//! packet (its total length, not the frame). TCP (6) needs 20 bytes, a data
//! offset of at least 5 and its whole header within the packet; UDP (17)
//! needs 8 bytes (its length field is not checked); ICMP (1, IPv4 only) and
//! `ICMPv6` (58, IPv6 only) need 4 bytes (type, code, checksum). Anything
//! shorter is [`Malformation::TruncatedTransportHeader`] (or
//! [`Malformation::BadTcpDataOffset`]). A first fragment too short to hold
//! its transport header is therefore malformed, which also defeats the
//! tiny-fragment trick of hiding the ports in the second fragment. Protocol
//! 1 in IPv6 and 58 in IPv4 are [`L4::Other`], and so is 59 in IPv4.
//!
//! For a [`Fragment::NonFirst`] packet [`IpPacket::l4`] is
//! [`L4::Other`] with the protocol number from the header (IPv4) or from
//! the Fragment header (IPv6): its transport header is in another fragment.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// TCP flag FIN.
pub const TCP_FIN: u8 = 0x01;
/// TCP flag SYN.
pub const TCP_SYN: u8 = 0x02;
/// TCP flag RST.
pub const TCP_RST: u8 = 0x04;
/// TCP flag ACK.
pub const TCP_ACK: u8 = 0x10;

/// Length of an Ethernet II header.
pub const ETH_HEADER_LEN: usize = 14;
/// Length of one VLAN tag (TCI and the next ethertype).
pub const VLAN_TAG_LEN: usize = 4;
/// How many VLAN tags are stripped before the ethertype is taken as is.
pub const MAX_VLAN_TAGS: usize = 2;
/// How many IPv6 extension headers are walked; meeting one more is
/// malformed.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// ethertype of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// ethertype of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86DD;
/// ethertype of an IEEE 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// ethertype of an IEEE 802.1ad (service) VLAN tag.
pub const ETHERTYPE_QINQ: u16 = 0x88A8;

/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IPv6 Hop-by-Hop Options header.
pub const IPPROTO_HOPOPTS: u8 = 0;
/// IPv6 Routing header.
pub const IPPROTO_ROUTING: u8 = 43;
/// IPv6 Fragment header.
pub const IPPROTO_FRAGMENT: u8 = 44;
/// Encapsulating Security Payload (not walked: encrypted).
pub const IPPROTO_ESP: u8 = 50;
/// Authentication Header.
pub const IPPROTO_AH: u8 = 51;
/// `ICMPv6`.
pub const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 No Next Header.
pub const IPPROTO_NONE: u8 = 59;
/// IPv6 Destination Options header.
pub const IPPROTO_DSTOPTS: u8 = 60;

/// First `ICMPv6` neighbour-discovery type (Router Solicitation).
pub const ICMPV6_ND_FIRST: u8 = 133;
/// Last `ICMPv6` neighbour-discovery type (Redirect).
pub const ICMPV6_ND_LAST: u8 = 137;

const IPV4_MIN_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const IPV6_FRAGMENT_HEADER_LEN: usize = 8;
const TCP_MIN_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
const ICMP_MIN_HEADER_LEN: usize = 4;
/// IPv4 flags and fragment offset: More Fragments.
const IPV4_MF: u16 = 0x2000;
/// IPv4 flags and fragment offset: the offset bits.
const IPV4_OFFSET_MASK: u16 = 0x1FFF;

/// What a frame is, as far as the verdict cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Parsed {
    /// Not IPv4 or IPv6 (ARP and friends), or too short to tell.
    NonIp,
    /// IPv4 or IPv6 by its ethertype, but broken.
    Malformed(Malformation),
    /// A well-formed IP packet.
    Ip(IpPacket),
}

/// Why an IP packet is malformed. Only "malformed" is part of the contract
/// with the BPF program; the reason is for tests and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformation {
    /// Fewer bytes than the fixed IP header, or than the IPv4 header with
    /// its options.
    TruncatedIpHeader,
    /// The version nibble does not match the ethertype.
    BadIpVersion,
    /// IPv4 IHL below 5.
    BadIpHeaderLength,
    /// The IP length field is below the header length or beyond the frame.
    BadIpLength,
    /// An IPv6 extension header runs past the end of the packet.
    TruncatedExtensionHeader,
    /// More than [`MAX_IPV6_EXT_HEADERS`] IPv6 extension headers.
    TooManyExtensionHeaders,
    /// The TCP, UDP, ICMP or `ICMPv6` header does not fit in the packet.
    TruncatedTransportHeader,
    /// TCP data offset below 5.
    BadTcpDataOffset,
}

/// A well-formed IP packet, reduced to what the verdict reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpPacket {
    /// Source address.
    pub src: IpAddr,
    /// Destination address (egress observation verifies it).
    pub dst: IpAddr,
    /// The transport, when it was parsed.
    pub l4: L4,
    /// IPv4 total length; for IPv6 `40 + payload length`, saturating at
    /// 65535 (only a frame above 64 KiB could exceed it). Compared with a
    /// rule's size bounds.
    pub ip_total_len: u16,
    /// Where the packet sits in a fragmented datagram.
    pub fragment: Fragment,
}

/// The transport of an IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4 {
    /// TCP, with its ports and flags.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// The flags byte (byte 13: CWR ECE URG ACK PSH RST SYN FIN).
        flags: u8,
    },
    /// UDP, with its ports.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// ICMP (in IPv4) or `ICMPv6` (in IPv6).
    Icmp {
        /// Whether this is `ICMPv6`.
        v6: bool,
        /// The message type.
        icmp_type: u8,
    },
    /// Any other protocol, by number; also every non-first fragment, whose
    /// transport header is elsewhere.
    Other(u8),
    /// IPv6 No Next Header: no transport at all.
    None,
}

impl L4 {
    /// The destination port, 0 for transports without ports.
    pub fn dst_port(self) -> u16 {
        match self {
            Self::Tcp { dst_port, .. } | Self::Udp { dst_port, .. } => dst_port,
            Self::Icmp { .. } | Self::Other(_) | Self::None => 0,
        }
    }

    /// The source port, 0 for transports without ports.
    pub fn src_port(self) -> u16 {
        match self {
            Self::Tcp { src_port, .. } | Self::Udp { src_port, .. } => src_port,
            Self::Icmp { .. } | Self::Other(_) | Self::None => 0,
        }
    }

    /// Whether this is an `ICMPv6` neighbour-discovery message (types
    /// [`ICMPV6_ND_FIRST`]`..=`[`ICMPV6_ND_LAST`]: router solicitation and
    /// advertisement, neighbour solicitation and advertisement, redirect).
    pub fn is_neighbour_discovery(self) -> bool {
        matches!(self, Self::Icmp { v6: true, icmp_type } if (ICMPV6_ND_FIRST..=ICMPV6_ND_LAST).contains(&icmp_type))
    }
}

/// Where a packet sits in a fragmented datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fragment {
    /// Not fragmented.
    None,
    /// The first fragment (offset 0): it carries the transport header.
    First,
    /// A later fragment: no transport header, so no ports.
    NonFirst,
}

/// Reads a big-endian `u16` at `at`, if the bytes are there.
fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    array::<2>(bytes, at).map(u16::from_be_bytes)
}

/// Reads the byte at `at`, if it is there.
fn byte(bytes: &[u8], at: usize) -> Option<u8> {
    bytes.get(at).copied()
}

/// Reads `N` bytes at `at`, if they are there.
fn array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Parses a frame. Never panics, whatever the bytes.
pub fn parse(frame: &[u8]) -> Parsed {
    let Some((ethertype, l2_len)) = layer2(frame) else {
        return Parsed::NonIp;
    };
    let ip = frame.get(l2_len..).unwrap_or_default();
    let parsed = match ethertype {
        ETHERTYPE_IPV4 => ipv4(ip),
        ETHERTYPE_IPV6 => ipv6(ip),
        _ => return Parsed::NonIp,
    };
    match parsed {
        Ok(packet) => Parsed::Ip(packet),
        Err(why) => Parsed::Malformed(why),
    }
}

/// The ethertype after at most [`MAX_VLAN_TAGS`] tags and the length of the
/// layer-2 header, or `None` when the frame is too short for either.
fn layer2(frame: &[u8]) -> Option<(u16, usize)> {
    let mut ethertype = be16(frame, ETH_HEADER_LEN - 2)?;
    let mut len = ETH_HEADER_LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        // The tag is the TCI (2 bytes) then the next ethertype (2 bytes);
        // both must be present.
        ethertype = be16(frame, len + 2)?;
        len += VLAN_TAG_LEN;
    }
    Some((ethertype, len))
}

fn ipv4(ip: &[u8]) -> Result<IpPacket, Malformation> {
    if ip.len() < IPV4_MIN_HEADER_LEN {
        return Err(Malformation::TruncatedIpHeader);
    }
    let version_ihl = byte(ip, 0).ok_or(Malformation::TruncatedIpHeader)?;
    if version_ihl >> 4 != 4 {
        return Err(Malformation::BadIpVersion);
    }
    let header_len = usize::from(version_ihl & 0x0F) * 4;
    if header_len < IPV4_MIN_HEADER_LEN {
        return Err(Malformation::BadIpHeaderLength);
    }
    if header_len > ip.len() {
        return Err(Malformation::TruncatedIpHeader);
    }
    let total_len = be16(ip, 2).ok_or(Malformation::TruncatedIpHeader)?;
    if usize::from(total_len) < header_len || usize::from(total_len) > ip.len() {
        return Err(Malformation::BadIpLength);
    }
    let flags_offset = be16(ip, 6).ok_or(Malformation::TruncatedIpHeader)?;
    let protocol = byte(ip, 9).ok_or(Malformation::TruncatedIpHeader)?;
    let src = array::<4>(ip, 12).ok_or(Malformation::TruncatedIpHeader)?;
    let dst = array::<4>(ip, 16).ok_or(Malformation::TruncatedIpHeader)?;
    let fragment = if flags_offset & IPV4_OFFSET_MASK != 0 {
        Fragment::NonFirst
    } else if flags_offset & IPV4_MF != 0 {
        Fragment::First
    } else {
        Fragment::None
    };
    let l4 = if fragment == Fragment::NonFirst {
        L4::Other(protocol)
    } else {
        let segment = ip.get(header_len..usize::from(total_len)).unwrap_or_default();
        transport(protocol, false, segment)?
    };
    Ok(IpPacket {
        src: IpAddr::V4(Ipv4Addr::from(src)),
        dst: IpAddr::V4(Ipv4Addr::from(dst)),
        l4,
        ip_total_len: total_len,
        fragment,
    })
}

fn ipv6(ip: &[u8]) -> Result<IpPacket, Malformation> {
    if ip.len() < IPV6_HEADER_LEN {
        return Err(Malformation::TruncatedIpHeader);
    }
    let version = byte(ip, 0).ok_or(Malformation::TruncatedIpHeader)? >> 4;
    if version != 6 {
        return Err(Malformation::BadIpVersion);
    }
    let payload_len = be16(ip, 4).ok_or(Malformation::TruncatedIpHeader)?;
    let end = IPV6_HEADER_LEN + usize::from(payload_len);
    if end > ip.len() {
        return Err(Malformation::BadIpLength);
    }
    let packet = ip.get(..end).ok_or(Malformation::BadIpLength)?;
    let src = array::<16>(packet, 8).ok_or(Malformation::TruncatedIpHeader)?;
    let dst = array::<16>(packet, 24).ok_or(Malformation::TruncatedIpHeader)?;
    let mut next = byte(packet, 6).ok_or(Malformation::TruncatedIpHeader)?;
    let mut at = IPV6_HEADER_LEN;
    let mut fragment = Fragment::None;
    let mut walked = 0;
    let l4 = loop {
        if !matches!(next, IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT | IPPROTO_AH) {
            let segment = packet.get(at..).unwrap_or_default();
            break transport(next, true, segment)?;
        }
        if walked == MAX_IPV6_EXT_HEADERS {
            return Err(Malformation::TooManyExtensionHeaders);
        }
        walked += 1;
        let header_len = match next {
            IPPROTO_FRAGMENT => IPV6_FRAGMENT_HEADER_LEN,
            IPPROTO_AH => {
                let units = byte(packet, at + 1).ok_or(Malformation::TruncatedExtensionHeader)?;
                (usize::from(units) + 2) * 4
            }
            _ => {
                let units = byte(packet, at + 1).ok_or(Malformation::TruncatedExtensionHeader)?;
                (usize::from(units) + 1) * 8
            }
        };
        if at + header_len > end {
            return Err(Malformation::TruncatedExtensionHeader);
        }
        let header_next = byte(packet, at).ok_or(Malformation::TruncatedExtensionHeader)?;
        if next == IPPROTO_FRAGMENT {
            // Offset is the upper 13 bits of bytes 2..4.
            let offset = be16(packet, at + 2).ok_or(Malformation::TruncatedExtensionHeader)? >> 3;
            if offset != 0 {
                fragment = Fragment::NonFirst;
                break L4::Other(header_next);
            }
            fragment = Fragment::First;
        }
        next = header_next;
        at += header_len;
    };
    Ok(IpPacket {
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        l4,
        ip_total_len: u16::try_from(end).unwrap_or(u16::MAX),
        fragment,
    })
}

/// Parses the transport header at the start of `segment`, which ends where
/// the IP packet ends.
fn transport(protocol: u8, v6: bool, segment: &[u8]) -> Result<L4, Malformation> {
    let truncated = Malformation::TruncatedTransportHeader;
    match (protocol, v6) {
        (IPPROTO_TCP, _) => {
            if segment.len() < TCP_MIN_HEADER_LEN {
                return Err(truncated);
            }
            let data_offset = usize::from(byte(segment, 12).ok_or(truncated)? >> 4) * 4;
            if data_offset < TCP_MIN_HEADER_LEN {
                return Err(Malformation::BadTcpDataOffset);
            }
            if data_offset > segment.len() {
                return Err(truncated);
            }
            Ok(L4::Tcp {
                src_port: be16(segment, 0).ok_or(truncated)?,
                dst_port: be16(segment, 2).ok_or(truncated)?,
                flags: byte(segment, 13).ok_or(truncated)?,
            })
        }
        (IPPROTO_UDP, _) => {
            if segment.len() < UDP_HEADER_LEN {
                return Err(truncated);
            }
            Ok(L4::Udp { src_port: be16(segment, 0).ok_or(truncated)?, dst_port: be16(segment, 2).ok_or(truncated)? })
        }
        (IPPROTO_ICMP, false) | (IPPROTO_ICMPV6, true) => {
            if segment.len() < ICMP_MIN_HEADER_LEN {
                return Err(truncated);
            }
            Ok(L4::Icmp { v6, icmp_type: byte(segment, 0).ok_or(truncated)? })
        }
        (IPPROTO_NONE, true) => Ok(L4::None),
        (other, _) => Ok(L4::Other(other)),
    }
}
