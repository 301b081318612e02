//! A UDP socket received through tokio and sent through a non-blocking std
//! clone of itself.
//!
//! tokio's `try_send_to` answers WouldBlock until the reactor has seen the
//! socket become writable, so the first datagrams of a new socket were
//! dropped (measured: over 10 % of UDP registrations on loopback waited a
//! 500 ms retransmission). A plain non-blocking send only reports
//! WouldBlock when the socket buffer really is full.

use std::io;
use std::net::SocketAddr;

/// A UDP socket for the driver and the call media threads.
#[derive(Debug)]
pub(crate) struct DatagramSocket {
    receive: tokio::net::UdpSocket,
    send: std::net::UdpSocket,
}

impl DatagramSocket {
    /// Binds `addr`; must run inside a tokio runtime.
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<DatagramSocket> {
        DatagramSocket::from_std(std::net::UdpSocket::bind(addr)?)
    }

    /// Wraps a bound std socket; must run inside a tokio runtime.
    pub(crate) fn from_std(socket: std::net::UdpSocket) -> io::Result<DatagramSocket> {
        socket.set_nonblocking(true)?;
        let send = socket.try_clone()?;
        Ok(DatagramSocket {
            receive: tokio::net::UdpSocket::from_std(socket)?,
            send,
        })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.send.local_addr()
    }

    /// Waits for a datagram.
    pub(crate) async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.receive.recv_from(buf).await
    }

    /// Sends without waiting; WouldBlock only when the buffer is full.
    pub(crate) fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.send.send_to(buf, to)
    }

    /// Asks the kernel to report ICMP errors for our datagrams (an
    /// unconnected socket hears of them only this way), so a send to a
    /// server whose port is closed fails in milliseconds instead of a
    /// transaction timeout.
    pub(crate) fn report_unreachable(&self) -> io::Result<()> {
        icmp::enable(&self.send)
    }

    /// The destinations whose datagrams came back as ICMP errors since the
    /// last call (after a receive failed with the error they caused).
    pub(crate) fn unreachable_destinations(&self) -> Vec<(SocketAddr, io::Error)> {
        icmp::drain(&self.send)
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod icmp {
    use std::io::{self, IoSliceMut};
    use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrLike, SockaddrStorage,
    };

    pub(super) fn enable(socket: &UdpSocket) -> io::Result<()> {
        if socket.local_addr()?.is_ipv4() {
            setsockopt(socket, sockopt::Ipv4RecvErr, &true)?;
        } else {
            setsockopt(socket, sockopt::Ipv6RecvErr, &true)?;
        }
        Ok(())
    }

    pub(super) fn drain(socket: &UdpSocket) -> Vec<(SocketAddr, io::Error)> {
        let mut found = Vec::new();
        // A bounded loop: the queue holds a few entries at most.
        for _ in 0..64 {
            let mut data = [0u8; 128];
            let mut iov = [IoSliceMut::new(&mut data)];
            let mut cmsg = nix::cmsg_space!(nix::libc::sock_extended_err, nix::libc::sockaddr_in6);
            let Ok(msg) = recvmsg::<SockaddrStorage>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
            ) else {
                break;
            };
            let errno = msg
                .cmsgs()
                .ok()
                .into_iter()
                .flatten()
                .find_map(|c| match c {
                    ControlMessageOwned::Ipv4RecvErr(e, _)
                    | ControlMessageOwned::Ipv6RecvErr(e, _) => i32::try_from(e.ee_errno).ok(),
                    _ => None,
                });
            let destination = msg.address.and_then(|a: SockaddrStorage| match a.family() {
                Some(nix::sys::socket::AddressFamily::Inet) => a
                    .as_sockaddr_in()
                    .map(|s| SocketAddr::V4(SocketAddrV4::from(*s))),
                Some(nix::sys::socket::AddressFamily::Inet6) => a
                    .as_sockaddr_in6()
                    .map(|s| SocketAddr::V6(SocketAddrV6::from(*s))),
                _ => None,
            });
            if let (Some(dest), Some(errno)) = (destination, errno) {
                found.push((dest, io::Error::from_raw_os_error(errno)));
            }
        }
        found
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod icmp {
    use std::io;
    use std::net::{SocketAddr, UdpSocket};

    pub(super) fn enable(_: &UdpSocket) -> io::Result<()> {
        Ok(())
    }

    pub(super) fn drain(_: &UdpSocket) -> Vec<(SocketAddr, io::Error)> {
        Vec::new()
    }
}
