//! Picking loopback addresses and ports nobody else is using.

use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};

use rand::Rng;

/// A random address in 127.0.0.0/8 (never 127.0.0.1) where the SIP ports
/// 5060 (UDP and TCP) and 5061 (TLS) are free. Giving each server its own
/// address keeps parallel tests apart without racing for ports.
pub fn free_sip_address() -> std::io::Result<(IpAddr, u16, u16)> {
    let mut rng = rand::rng();
    for _ in 0..200 {
        let ip = IpAddr::V4(Ipv4Addr::new(
            127,
            rng.random_range(1..=254),
            rng.random_range(0..=255),
            rng.random_range(2..=254),
        ));
        let free = UdpSocket::bind((ip, 5060)).is_ok()
            && TcpListener::bind((ip, 5060)).is_ok()
            && TcpListener::bind((ip, 5061)).is_ok();
        if free {
            return Ok((ip, 5060, 5061));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free loopback address found",
    ))
}
