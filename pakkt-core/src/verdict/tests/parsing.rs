//! Parsing: every header and length check, on frames built byte by byte.

use super::*;

#[test]
fn parses_ethernet_ipv4_tcp() {
    let frame = tcp4("192.0.2.7", 443);
    let packet = parsed_ip(&frame);
    assert_eq!(packet.src, ip("192.0.2.7"));
    assert_eq!(packet.l4, L4::Tcp { src_port: frames::SRC_PORT, dst_port: 443, flags: 0x02 });
    assert_eq!(packet.ip_total_len, 40);
    assert_eq!(packet.fragment, Fragment::None);
    assert_eq!(frame.len(), frames::MIN_FRAME, "54 bytes padded to 60; the padding is ignored");
}

#[test]
fn strips_up_to_two_vlan_tags_of_either_kind() {
    for tags in [vec![0x8100], vec![0x88A8], vec![0x88A8, 0x8100], vec![0x8100, 0x8100]] {
        let desc = Desc { tags: tags.clone(), ..Desc::new(ip("192.0.2.7"), Transport::Udp(53)) };
        assert_eq!(parsed_ip(&desc.frame()).l4, L4::Udp { src_port: frames::SRC_PORT, dst_port: 53 }, "tags {tags:x?}");
    }
    let three = frames::ethernet(
        &[0x88A8, 0x8100, 0x8100],
        0x0800,
        &frames::ipv4(v4("192.0.2.7"), 6, &[], 0, &frames::tcp(80)),
    );
    assert_eq!(packet::parse(&three), Parsed::NonIp, "a third tag is just not IP");
}

#[test]
fn arp_and_other_ethertypes_are_not_ip() {
    assert_eq!(packet::parse(&frames::ethernet(&[], 0x0806, &frames::arp())), Parsed::NonIp);
    assert_eq!(packet::parse(&frames::ethernet(&[0x8100], 0x0806, &frames::arp())), Parsed::NonIp);
    assert_eq!(packet::parse(&frames::ethernet(&[], 0x88CC, &[0; 40])), Parsed::NonIp, "LLDP");
    assert_eq!(packet::parse(&frames::ethernet(&[], 0x0040, &[0; 40])), Parsed::NonIp, "802.3 length");
    for len in 0..14 {
        assert_eq!(packet::parse(&tcp4("192.0.2.7", 80)[..len]), Parsed::NonIp, "{len} bytes");
    }
}

#[test]
fn ipv4_options_are_skipped() {
    let options = [0x94, 0x04, 0, 0, 0x01, 0x01, 0x01, 0x00];
    let frame = frames::ethernet(&[], 0x0800, &frames::ipv4(v4("192.0.2.9"), 17, &options, 0, &frames::udp(30120, 12)));
    let packet = parsed_ip(&frame);
    assert_eq!(packet.l4, L4::Udp { src_port: frames::SRC_PORT, dst_port: 30120 });
    assert_eq!(packet.ip_total_len, 28 + 20);
}

#[test]
fn ipv4_header_checks() {
    let good = frames::ipv4(v4("192.0.2.9"), 6, &[], 0, &frames::tcp(22));
    let with = |change: &dyn Fn(&mut Vec<u8>)| {
        let mut ip = good.clone();
        change(&mut ip);
        frames::ethernet_unpadded(&[], 0x0800, &ip)
    };
    assert_eq!(malformed(&with(&|ip| ip[0] = 0x65)), Malformation::BadIpVersion);
    assert_eq!(malformed(&with(&|ip| ip[0] = 0x44)), Malformation::BadIpHeaderLength);
    assert_eq!(malformed(&with(&|ip| ip[0] = 0x4F)), Malformation::TruncatedIpHeader, "60-byte header in 40 bytes");
    assert_eq!(malformed(&with(&|ip| ip[2..4].copy_from_slice(&41u16.to_be_bytes()))), Malformation::BadIpLength);
    assert_eq!(malformed(&with(&|ip| ip[2..4].copy_from_slice(&19u16.to_be_bytes()))), Malformation::BadIpLength);
    assert_eq!(parsed_ip(&with(&|ip| ip[2..4].copy_from_slice(&40u16.to_be_bytes()))).ip_total_len, 40);
    // Version 6 behind the IPv4 ethertype.
    let v6_packet = frames::ipv6(v6("2001:db8::1"), 59, &[]);
    assert_eq!(malformed(&frames::ethernet(&[], 0x0800, &v6_packet)), Malformation::BadIpVersion);
    assert_eq!(malformed(&frames::ethernet(&[], 0x86DD, &good)), Malformation::BadIpVersion);
}

#[test]
fn transport_is_bounded_by_the_ip_length_not_the_frame() {
    // Total length says 30 bytes: only 10 of TCP, though the padded frame
    // holds 46 bytes after Ethernet.
    let mut ip = frames::ipv4(v4("192.0.2.9"), 6, &[], 0, &frames::tcp(22));
    ip.truncate(30);
    ip[2..4].copy_from_slice(&30u16.to_be_bytes());
    let frame = frames::ethernet(&[], 0x0800, &ip);
    assert_eq!(malformed(&frame), Malformation::TruncatedTransportHeader);
}

#[test]
fn transport_header_checks() {
    let src = v4("192.0.2.9");
    let frame4 =
        |protocol: u8, segment: &[u8]| frames::ethernet(&[], 0x0800, &frames::ipv4(src, protocol, &[], 0, segment));
    assert_eq!(malformed(&frame4(6, &frames::tcp(80)[..19])), Malformation::TruncatedTransportHeader);
    assert_eq!(malformed(&frame4(6, &frames::tcp_with(80, 4, 0))), Malformation::BadTcpDataOffset);
    assert_eq!(malformed(&frame4(6, &frames::tcp_with(80, 0, 0))), Malformation::BadTcpDataOffset);
    assert_eq!(malformed(&frame4(6, &frames::tcp_with(80, 8, 11))), Malformation::TruncatedTransportHeader);
    assert_eq!(
        parsed_ip(&frame4(6, &frames::tcp_with(80, 8, 12))).l4,
        L4::Tcp { src_port: frames::SRC_PORT, dst_port: 80, flags: 0x02 }
    );
    assert_eq!(
        parsed_ip(&frame4(6, &frames::tcp_with(80, 15, 40))).l4,
        L4::Tcp { src_port: frames::SRC_PORT, dst_port: 80, flags: 0x02 }
    );
    assert_eq!(malformed(&frame4(17, &frames::udp(53, 0)[..7])), Malformation::TruncatedTransportHeader);
    assert_eq!(parsed_ip(&frame4(17, &frames::udp(53, 0))).l4, L4::Udp { src_port: frames::SRC_PORT, dst_port: 53 });
    assert_eq!(malformed(&frame4(1, &[8, 0, 0])), Malformation::TruncatedTransportHeader);
    assert_eq!(parsed_ip(&frame4(1, &[8, 0, 0, 0])).l4, L4::Icmp { v6: false, icmp_type: 8 });
    assert_eq!(parsed_ip(&frame4(58, &[])).l4, L4::Other(58), "ICMPv6 number in IPv4");
    assert_eq!(parsed_ip(&frame4(59, &[])).l4, L4::Other(59), "No Next Header is IPv6's");
    assert_eq!(parsed_ip(&frame4(47, &[])).l4, L4::Other(47));
    let src6 = v6("2001:db8::9");
    let frame6 = |next: u8, payload: &[u8]| frames::ethernet(&[], 0x86DD, &frames::ipv6(src6, next, payload));
    assert_eq!(parsed_ip(&frame6(58, &frames::icmp(128))).l4, L4::Icmp { v6: true, icmp_type: 128 });
    assert_eq!(malformed(&frame6(58, &[135, 0, 0])), Malformation::TruncatedTransportHeader);
    assert_eq!(parsed_ip(&frame6(1, &frames::icmp(8))).l4, L4::Other(1), "ICMPv4 number in IPv6");
    assert_eq!(parsed_ip(&frame6(59, &[1, 2, 3])).l4, L4::None);
    assert_eq!(parsed_ip(&frame6(50, &[0; 16])).l4, L4::Other(50), "ESP is not walked");
    assert_eq!(malformed(&frame6(6, &frames::tcp(80)[..19])), Malformation::TruncatedTransportHeader);
}

#[test]
fn ipv4_fragments() {
    let src = v4("192.0.2.9");
    let frag = |flags_offset: u16, segment: &[u8]| {
        frames::ethernet(&[], 0x0800, &frames::ipv4(src, 17, &[], flags_offset, segment))
    };
    let first = parsed_ip(&frag(0x2000, &frames::udp(53, 100)));
    assert_eq!((first.fragment, first.l4), (Fragment::First, L4::Udp { src_port: frames::SRC_PORT, dst_port: 53 }));
    let later = parsed_ip(&frag(0x2000 | 0x000D, &[1, 2, 3]));
    assert_eq!((later.fragment, later.l4), (Fragment::NonFirst, L4::Other(17)));
    let last = parsed_ip(&frag(13, &[]));
    assert_eq!(last.fragment, Fragment::NonFirst, "MF clear, offset set: the last fragment");
    let df = parsed_ip(&frag(0x4000, &frames::udp(53, 0)));
    assert_eq!(df.fragment, Fragment::None, "DF is not fragmentation");
    assert_eq!(
        malformed(&frag(0x2000, &frames::udp(53, 0)[..4])),
        Malformation::TruncatedTransportHeader,
        "tiny first fragment"
    );
}

#[test]
fn ipv6_extension_headers_are_walked() {
    let src = v6("2001:db8::9");
    let mut payload = frames::options_header(43, 1);
    payload.extend(frames::options_header(60, 0));
    payload.extend(frames::options_header(51, 2));
    payload.extend(frames::ah_header(6, 4));
    payload.extend(frames::tcp(8080));
    let frame = frames::ethernet(&[0x8100], 0x86DD, &frames::ipv6(src, 0, &payload));
    let packet = parsed_ip(&frame);
    assert_eq!(packet.src, IpAddr::V6(src));
    assert_eq!(packet.l4, L4::Tcp { src_port: frames::SRC_PORT, dst_port: 8080, flags: 0x02 });
    assert_eq!(usize::from(packet.ip_total_len), 40 + 16 + 8 + 24 + 24 + 20);
}

#[test]
fn ipv6_fragments() {
    let src = v6("2001:db8::9");
    let frame = |payload: &[u8]| frames::ethernet(&[], 0x86DD, &frames::ipv6(src, 44, payload));
    let mut first = frames::fragment_header(17, 0, true);
    first.extend(frames::udp(53, 20));
    let parsed = parsed_ip(&frame(&first));
    assert_eq!((parsed.fragment, parsed.l4), (Fragment::First, L4::Udp { src_port: frames::SRC_PORT, dst_port: 53 }));
    let mut atomic = frames::fragment_header(17, 0, false);
    atomic.extend(frames::udp(53, 0));
    assert_eq!(parsed_ip(&frame(&atomic)).fragment, Fragment::First, "atomic fragments count as first");
    let mut later = frames::fragment_header(17, 3, true);
    later.extend([9; 5]);
    let parsed = parsed_ip(&frame(&later));
    assert_eq!((parsed.fragment, parsed.l4), (Fragment::NonFirst, L4::Other(17)));
    let mut hidden = frames::fragment_header(0, 3, false);
    hidden.extend(frames::options_header(6, 0));
    assert_eq!(parsed_ip(&frame(&hidden)).l4, L4::Other(0), "the walk stops at a non-first fragment");
    assert_eq!(malformed(&frame(&frames::fragment_header(17, 0, true)[..7])), Malformation::TruncatedExtensionHeader);
}

fn chain(headers: usize, last: u8) -> Vec<u8> {
    let mut payload = Vec::new();
    for i in 0..headers {
        let next = if i + 1 == headers { last } else { 60 };
        payload.extend(frames::options_header(next, 0));
    }
    payload
}

#[test]
fn at_most_eight_ipv6_extension_headers() {
    let src = v6("2001:db8::9");
    let mut eight = chain(MAX_IPV6_EXT_HEADERS, 17);
    eight.extend(frames::udp(53, 0));
    let frame = frames::ethernet(&[], 0x86DD, &frames::ipv6(src, 60, &eight));
    assert_eq!(parsed_ip(&frame).l4, L4::Udp { src_port: frames::SRC_PORT, dst_port: 53 });
    let mut nine = chain(MAX_IPV6_EXT_HEADERS + 1, 17);
    nine.extend(frames::udp(53, 0));
    let frame = frames::ethernet(&[], 0x86DD, &frames::ipv6(src, 60, &nine));
    assert_eq!(malformed(&frame), Malformation::TooManyExtensionHeaders);
    // The ninth is refused before it is read, even when it is cut short.
    let cut = chain(MAX_IPV6_EXT_HEADERS, 60);
    let frame = frames::ethernet(&[], 0x86DD, &frames::ipv6(src, 60, &cut));
    assert_eq!(malformed(&frame), Malformation::TooManyExtensionHeaders);
}

#[test]
fn ipv6_extension_headers_must_fit_the_packet() {
    let src = v6("2001:db8::9");
    let frame = |next: u8, payload: &[u8]| frames::ethernet(&[], 0x86DD, &frames::ipv6(src, next, payload));
    assert_eq!(malformed(&frame(0, &[])), Malformation::TruncatedExtensionHeader);
    assert_eq!(malformed(&frame(0, &[17])), Malformation::TruncatedExtensionHeader);
    assert_eq!(malformed(&frame(0, &frames::options_header(17, 1)[..15])), Malformation::TruncatedExtensionHeader);
    assert_eq!(malformed(&frame(51, &frames::ah_header(17, 1)[..11])), Malformation::TruncatedExtensionHeader);
    assert_eq!(parsed_ip(&frame(0, &frames::options_header(59, 1))).l4, L4::None);
    // Payload length bounds the walk even when the frame is longer.
    let mut ip = frames::ipv6(src, 0, &frames::options_header(59, 1));
    ip[4..6].copy_from_slice(&8u16.to_be_bytes());
    assert_eq!(malformed(&frames::ethernet(&[], 0x86DD, &ip)), Malformation::TruncatedExtensionHeader);
}

#[test]
fn ipv6_header_checks() {
    let good = frames::ipv6(v6("2001:db8::9"), 17, &frames::udp(53, 0));
    let mut bad_version = good.clone();
    bad_version[0] = 0x40;
    assert_eq!(malformed(&frames::ethernet(&[], 0x86DD, &bad_version)), Malformation::BadIpVersion);
    let mut too_long = good.clone();
    too_long[4..6].copy_from_slice(&9u16.to_be_bytes());
    assert_eq!(malformed(&frames::ethernet_unpadded(&[], 0x86DD, &too_long)), Malformation::BadIpLength);
    assert_eq!(malformed(&frames::ethernet_unpadded(&[], 0x86DD, &good[..39])), Malformation::TruncatedIpHeader);
}

#[test]
fn ipv6_length_saturates_at_65535() {
    let payload = vec![0u8; usize::from(u16::MAX)];
    let frame = frames::ethernet(&[], 0x86DD, &frames::ipv6(v6("2001:db8::9"), 59, &payload));
    assert_eq!(parsed_ip(&frame).ip_total_len, u16::MAX);
    let small = frames::ethernet(&[], 0x86DD, &frames::ipv6(v6("2001:db8::9"), 59, &payload[..65495]));
    assert_eq!(parsed_ip(&small).ip_total_len, 65535);
}

/// Every prefix of a valid frame: shorter than its layer-2 header → not
/// IP; shorter than its IP packet → malformed; otherwise the full parse
/// (padding may be cut freely).
#[test]
fn truncation_at_every_length_is_deliberate() {
    let mut ext = frames::options_header(44, 0);
    ext.extend(frames::fragment_header(6, 0, true));
    ext.extend(frames::tcp_with(443, 6, 4));
    let cases: Vec<(usize, Vec<u8>)> = vec![
        (0, tcp4("192.0.2.1", 80)),
        (1, Desc { tags: vec![0x8100], ..Desc::new(ip("192.0.2.1"), Transport::Udp(53)) }.frame()),
        (
            2,
            Desc { tags: vec![0x88A8, 0x8100], data: 30, ..Desc::new(ip("2001:db8::1"), Transport::Icmp(128)) }.frame(),
        ),
        (0, frames::ethernet(&[], 0x0800, &frames::ipv4(v4("192.0.2.1"), 1, &[1, 1, 1, 0], 0, &frames::icmp(8)))),
        (1, frames::ethernet(&[0x8100], 0x86DD, &frames::ipv6(v6("2001:db8::1"), 0, &ext))),
        (0, Desc { fragment: Fragment::NonFirst, data: 3, ..Desc::new(ip("192.0.2.1"), Transport::Tcp(1)) }.frame()),
    ];
    for (tags, frame) in cases {
        let full = packet::parse(&frame);
        let Parsed::Ip(packet) = full else { panic!("case must be valid: {full:?}") };
        let l2 = 14 + 4 * tags;
        let ip_end = l2 + usize::from(packet.ip_total_len);
        for len in 0..=frame.len() {
            let cut = &frame[..len];
            let expected = if len < l2 {
                Parsed::NonIp
            } else if len < ip_end {
                let Parsed::Malformed(why) = packet::parse(cut) else {
                    panic!("{len} bytes of {frame:x?} must be malformed")
                };
                Parsed::Malformed(why)
            } else {
                full
            };
            assert_eq!(packet::parse(cut), expected, "{len} bytes");
            let outcome = decide(&hostile(), &mut State::new(), NOW, cut);
            let want = match expected {
                Parsed::NonIp => Reason::NonIp,
                Parsed::Malformed(_) => Reason::Malformed,
                Parsed::Ip(_) => Reason::Blacklisted,
            };
            assert_eq!(outcome.reason, want, "{len} bytes");
            assert_eq!(outcome.frame_len as usize, len);
        }
    }
}
