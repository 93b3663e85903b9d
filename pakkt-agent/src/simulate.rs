//! Synthetic traffic for the in-memory dataplane (`--simulate-traffic`), so
//! that demos and the panel show real-looking figures: a game server's
//! steady UDP, web and SSH traffic, pings, and now and then a flood from
//! spoofed sources. Every frame goes through the verdict model, so rules
//! and lists act on it exactly as the engine would.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use pakkt_core::clock::Clock;
use pakkt_core::memory::MemoryDataplane;
use rand::Rng;
use tokio::sync::watch;

/// An Ethernet + IPv4 frame with `l4` (a transport header and payload) of
/// IP protocol `protocol`.
pub fn ipv4_frame(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + l4.len()).unwrap_or(u16::MAX);
    let mut frame = Vec::with_capacity(34 + l4.len());
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00]);
    frame.extend_from_slice(&[0x45, 0]);
    frame.extend_from_slice(&total.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0, 64, protocol, 0, 0]);
    frame.extend_from_slice(&src.octets());
    frame.extend_from_slice(&dst.octets());
    frame.extend_from_slice(l4);
    frame
}

/// A UDP datagram to `port` with `payload` bytes.
pub fn udp(src: Ipv4Addr, port: u16, payload: usize) -> Vec<u8> {
    let len = u16::try_from(8 + payload).unwrap_or(u16::MAX);
    let mut l4 = vec![0u8; 8 + payload];
    l4[0..2].copy_from_slice(&40_000u16.to_be_bytes());
    l4[2..4].copy_from_slice(&port.to_be_bytes());
    l4[4..6].copy_from_slice(&len.to_be_bytes());
    ipv4_frame(src, Ipv4Addr::new(192, 0, 2, 1), 17, &l4)
}

/// A TCP segment (ACK) to `port` with `payload` bytes.
pub fn tcp(src: Ipv4Addr, port: u16, payload: usize) -> Vec<u8> {
    let mut l4 = vec![0u8; 20 + payload];
    l4[0..2].copy_from_slice(&50_000u16.to_be_bytes());
    l4[2..4].copy_from_slice(&port.to_be_bytes());
    l4[12] = 0x50;
    l4[13] = 0x10;
    ipv4_frame(src, Ipv4Addr::new(192, 0, 2, 1), 6, &l4)
}

/// An ICMP echo request.
pub fn ping(src: Ipv4Addr) -> Vec<u8> {
    let mut l4 = vec![0u8; 64];
    l4[0] = 8;
    ipv4_frame(src, Ipv4Addr::new(192, 0, 2, 1), 1, &l4)
}

/// Runs synthetic traffic of about `pps` packets a second into `dataplane`
/// until `stop` turns true.
pub async fn run<C: Clock>(dataplane: Arc<MemoryDataplane<C>>, pps: u32, mut stop: watch::Receiver<bool>) {
    let tick = Duration::from_millis(100);
    let per_tick = (pps / 10).max(1);
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        ticks += 1;
        // A flood of spoofed sources for 20 s out of every 2 minutes.
        let flooding = ticks % 1200 < 200;
        let frames: Vec<Vec<u8>> = {
            let mut rng = rand::rng();
            let mut frames = Vec::with_capacity(per_tick as usize * 2);
            for _ in 0..per_tick {
                let player = Ipv4Addr::new(198, 51, 100, rng.random_range(1..=40));
                let frame = match rng.random_range(0..100u8) {
                    0..=54 => udp(player, 30120, rng.random_range(40..400)),
                    55..=69 => tcp(player, 443, rng.random_range(0..1200)),
                    70..=79 => tcp(player, 80, rng.random_range(0..800)),
                    80..=86 => tcp(player, 22, rng.random_range(0..200)),
                    87..=93 => udp(player, 53, rng.random_range(20..120)),
                    94..=96 => tcp(player, 25565, rng.random_range(0..300)),
                    _ => ping(player),
                };
                frames.push(frame);
                if flooding {
                    let spoofed = Ipv4Addr::from(rng.random::<u32>());
                    frames.push(udp(spoofed, 30120, 1200));
                }
            }
            frames
        };
        for frame in &frames {
            dataplane.inject(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use pakkt_core::verdict::packet::{L4, Parsed, parse};

    use super::*;

    #[test]
    fn frames_parse_as_what_they_claim() {
        let src = Ipv4Addr::new(198, 51, 100, 7);
        let Parsed::Ip(packet) = parse(&udp(src, 30120, 100)) else { panic!("udp") };
        assert_eq!(packet.l4, L4::Udp { src_port: 40_000, dst_port: 30120 });
        assert_eq!(packet.src, std::net::IpAddr::V4(src));
        assert_eq!(packet.ip_total_len, 20 + 8 + 100);
        let Parsed::Ip(packet) = parse(&tcp(src, 22, 0)) else { panic!("tcp") };
        assert_eq!(packet.l4, L4::Tcp { src_port: 50_000, dst_port: 22, flags: 0x10 });
        let Parsed::Ip(packet) = parse(&ping(src)) else { panic!("icmp") };
        assert!(matches!(packet.l4, L4::Icmp { v6: false, icmp_type: 8 }));
    }

    #[tokio::test]
    async fn simulated_traffic_is_counted() {
        let dataplane = Arc::new(MemoryDataplane::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(Arc::clone(&dataplane), 2000, stop_rx));
        tokio::time::sleep(Duration::from_millis(550)).await;
        stop_tx.send(true).expect("stop");
        task.await.expect("task");
        let counters = pakkt_core::dataplane::Dataplane::counters(dataplane.as_ref()).await.expect("counters");
        let total: u64 = counters.ports.values().map(|c| c.packets()).sum();
        assert!(total >= 600, "about 200 packets per 100 ms: {total}");
        assert!(counters.ports.contains_key(&30120));
    }
}
