//! Locating SIP servers with DNS (RFC 3263): NAPTR picks transports and
//! SRV names, SRV gives servers with priority and weight, A/AAAA their
//! addresses. The result is a [`ServerList`] so one choice serves every
//! source. The fallback when the discovery service cannot be asked.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Name, TokioResolver};

use crate::sip::Transport;

use super::list::{Health, ServerEntry, ServerList, ServerState};
use super::DiscoveryError;

/// How long one DNS query may take; a dead DNS server must not hold up the
/// phone's recovery.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Transports we speak, in the order we prefer them when DNS gives no
/// order (streams first: a closing connection tells us at once that the
/// server went away).
const PREFERENCE: [Transport; 3] = [Transport::Tls, Transport::Tcp, Transport::Udp];

/// The SIP servers of `domain`. `transport` restricts the answer to one
/// transport; `nameserver` asks that DNS server instead of the system's.
pub async fn resolve(
    domain: &str,
    transport: Option<Transport>,
    nameserver: Option<SocketAddr>,
) -> Result<ServerList, DiscoveryError> {
    let resolver = resolver(nameserver)?;
    let name = Name::from_utf8(domain)
        .map_err(|e| DiscoveryError::Invalid(format!("domain {domain:?}: {e}")))?;
    let wanted = |t: &Transport| transport.is_none_or(|only| only == *t);
    let mut services = naptr(&resolver, &name).await?;
    services.retain(|(t, _)| wanted(t));
    if services.is_empty() {
        services = PREFERENCE
            .into_iter()
            .filter(wanted)
            .filter_map(|t| Some((t, srv_name(t, &name)?)))
            .collect();
    }
    let mut servers = Vec::new();
    for (rank, (t, srv)) in services.iter().enumerate() {
        let Ok(records) = resolver.srv_lookup(srv.clone()).await else {
            continue;
        };
        for record in records.iter() {
            let Some(ip) = first_address(&resolver, record.target()).await else {
                tracing::debug!(target = %record.target(), "SRV target without an address");
                continue;
            };
            servers.push(entry(
                *t,
                SocketAddr::new(ip, record.port()),
                group_priority(rank, record.priority()),
                record.weight(),
            ));
        }
    }
    if servers.is_empty() {
        // RFC 3263 §4.2: no SRV records, so the domain itself on the
        // default port.
        let t = transport.unwrap_or(Transport::Udp);
        if let Some(ip) = first_address(&resolver, &name).await {
            servers.push(entry(t, SocketAddr::new(ip, t.default_port()), 0, 0));
        }
    }
    if servers.is_empty() {
        return Err(DiscoveryError::Dns(format!(
            "no SIP server found for {domain}"
        )));
    }
    Ok(ServerList {
        version: 0,
        servers,
    })
}

fn resolver(nameserver: Option<SocketAddr>) -> Result<TokioResolver, DiscoveryError> {
    let mut options = ResolverOpts::default();
    options.timeout = QUERY_TIMEOUT;
    options.attempts = 1;
    // Servers move: a cached answer would send us back to the old address.
    options.cache_size = 0;
    let builder = match nameserver {
        Some(ns) => {
            options.use_hosts_file = ResolveHosts::Never;
            let group = NameServerConfigGroup::from_ips_clear(&[ns.ip()], ns.port(), true);
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), group),
                TokioConnectionProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio()
            .map_err(|e| DiscoveryError::Dns(format!("system resolver: {e}")))?,
    };
    Ok(builder.with_options(options).build())
}

/// NAPTR records for SIP (flag "s"), ordered, as (transport, SRV name).
/// A DNS server that does not answer at all ends the whole resolution
/// here, rather than after a timeout for each of the queries that follow.
async fn naptr(
    resolver: &TokioResolver,
    name: &Name,
) -> Result<Vec<(Transport, Name)>, DiscoveryError> {
    let lookup = match resolver.lookup(name.clone(), RecordType::NAPTR).await {
        Ok(lookup) => lookup,
        Err(e) if e.is_no_records_found() => return Ok(Vec::new()),
        Err(e) => return Err(DiscoveryError::Dns(format!("NAPTR {name}: {e}"))),
    };
    let mut records: Vec<_> = lookup
        .iter()
        .filter_map(|r| match r {
            RData::NAPTR(n) if n.flags().eq_ignore_ascii_case(b"s") => {
                let transport = match n.services().to_ascii_uppercase().as_slice() {
                    b"SIPS+D2T" => Transport::Tls,
                    b"SIP+D2T" => Transport::Tcp,
                    b"SIP+D2U" => Transport::Udp,
                    _ => return None,
                };
                Some((
                    (n.order(), n.preference()),
                    transport,
                    n.replacement().clone(),
                ))
            }
            _ => None,
        })
        .collect();
    records.sort_by_key(|(order, _, _)| *order);
    Ok(records.into_iter().map(|(_, t, srv)| (t, srv)).collect())
}

fn srv_name(transport: Transport, domain: &Name) -> Option<Name> {
    let prefix = match transport {
        Transport::Tls => "_sips._tcp",
        Transport::Tcp => "_sip._tcp",
        Transport::Udp => "_sip._udp",
    };
    Name::from_utf8(prefix).ok()?.append_domain(domain).ok()
}

async fn first_address(resolver: &TokioResolver, name: &Name) -> Option<IpAddr> {
    resolver.lookup_ip(name.clone()).await.ok()?.iter().next()
}

/// Keeps the transports' order ahead of the SRV priorities within them.
fn group_priority(rank: usize, srv_priority: u16) -> u16 {
    let rank = u16::try_from(rank).unwrap_or(u16::MAX).min(60);
    rank * 1000 + srv_priority.min(999)
}

fn entry(transport: Transport, addr: SocketAddr, priority: u16, weight: u16) -> ServerEntry {
    let host = match addr.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let uri = format!("sip:{host}:{};transport={}", addr.port(), transport.param());
    ServerEntry {
        id: format!("dns:{addr}/{}", transport.param()),
        uri,
        priority,
        weight,
        region: String::new(),
        state: ServerState::Active,
        health: Health::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_name_transport_and_address() {
        let e = entry(Transport::Tcp, "127.0.0.2:5070".parse().unwrap(), 1010, 5);
        assert_eq!(e.uri, "sip:127.0.0.2:5070;transport=tcp");
        assert_eq!(group_priority(1, 10), 1010);
        assert!(group_priority(0, 5000) < group_priority(1, 0));
    }

    #[tokio::test]
    async fn a_dead_dns_server_is_an_error_within_seconds() {
        // Nothing listens on this loopback port: the query fails fast.
        let ns: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let started = std::time::Instant::now();
        let e = resolve("example.test", None, Some(ns)).await.unwrap_err();
        assert!(matches!(e, DiscoveryError::Dns(_)), "{e}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}
