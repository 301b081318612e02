//! One task per TCP or TLS connection: it writes what the driver hands it,
//! frames what it reads, answers keepalive pings, and reports frames and its
//! own end to the driver.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

use crate::sip::framing::{Frame, StreamFramer};
use crate::sip::Transport;

/// How long a TCP connect plus TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What connection tasks tell the driver.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A frame arrived.
    Frame {
        transport: Transport,
        remote: SocketAddr,
        frame: Frame,
    },
    /// The connection could not be opened.
    ConnectFailed {
        id: u64,
        transport: Transport,
        remote: SocketAddr,
        reason: String,
    },
    /// The connection ended.
    Closed {
        id: u64,
        transport: Transport,
        remote: SocketAddr,
        reason: String,
    },
}

/// The driver's end of a connection task.
#[derive(Debug)]
pub(crate) struct ConnectionHandle {
    pub id: u64,
    pub writer: mpsc::UnboundedSender<Vec<u8>>,
}

/// How to secure an outgoing connection.
#[derive(Clone)]
pub(crate) struct TlsSetup {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsSetup {
    pub fn new(config: Arc<rustls::ClientConfig>, name: &str) -> Result<TlsSetup, String> {
        Ok(TlsSetup {
            connector: TlsConnector::from(config),
            server_name: server_name(name)?,
        })
    }

    /// The same trust settings for a server of another name.
    pub fn for_name(&self, name: &str) -> Result<TlsSetup, String> {
        Ok(TlsSetup {
            connector: self.connector.clone(),
            server_name: server_name(name)?,
        })
    }
}

fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_owned()).map_err(|e| format!("bad TLS name {name:?}: {e}"))
}

/// Opens a connection to `remote` in the background; writes queue until it is up.
pub(crate) fn spawn_outgoing(
    id: u64,
    transport: Transport,
    remote: SocketAddr,
    tls: Option<TlsSetup>,
    inbound: mpsc::UnboundedSender<Inbound>,
) -> ConnectionHandle {
    let (writer, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let connect = async {
            let tcp = TcpStream::connect(remote)
                .await
                .map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            Ok::<_, String>(tcp)
        };
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(reason)) => return connect_failed(&inbound, id, transport, remote, reason),
            Err(_) => {
                return connect_failed(&inbound, id, transport, remote, "connect timed out".into())
            }
        };
        let reason = match (transport, tls) {
            (Transport::Tls, Some(tls)) => {
                let handshake = tls.connector.connect(tls.server_name, tcp);
                match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
                    Ok(Ok(stream)) => run(stream, id, transport, remote, rx, &inbound).await,
                    Ok(Err(e)) => {
                        return connect_failed(&inbound, id, transport, remote, format!("TLS: {e}"))
                    }
                    Err(_) => {
                        return connect_failed(
                            &inbound,
                            id,
                            transport,
                            remote,
                            "TLS handshake timed out".into(),
                        )
                    }
                }
            }
            (Transport::Tls, None) => {
                return connect_failed(
                    &inbound,
                    id,
                    transport,
                    remote,
                    "TLS is not configured".into(),
                )
            }
            _ => run(tcp, id, transport, remote, rx, &inbound).await,
        };
        let _ = inbound.send(Inbound::Closed {
            id,
            transport,
            remote,
            reason,
        });
    });
    ConnectionHandle { id, writer }
}

/// Serves a connection a peer opened to us.
pub(crate) fn spawn_accepted(
    id: u64,
    stream: TcpStream,
    remote: SocketAddr,
    inbound: mpsc::UnboundedSender<Inbound>,
) -> ConnectionHandle {
    let (writer, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let reason = run(stream, id, Transport::Tcp, remote, rx, &inbound).await;
        let _ = inbound.send(Inbound::Closed {
            id,
            transport: Transport::Tcp,
            remote,
            reason,
        });
    });
    ConnectionHandle { id, writer }
}

fn connect_failed(
    inbound: &mpsc::UnboundedSender<Inbound>,
    id: u64,
    transport: Transport,
    remote: SocketAddr,
    reason: String,
) {
    tracing::info!(%remote, %transport, %reason, "connection failed");
    let _ = inbound.send(Inbound::ConnectFailed {
        id,
        transport,
        remote,
        reason,
    });
}

/// Pumps one established stream until it ends; returns why it ended.
async fn run<S>(
    stream: S,
    id: u64,
    transport: Transport,
    remote: SocketAddr,
    mut outgoing: mpsc::UnboundedReceiver<Vec<u8>>,
    inbound: &mpsc::UnboundedSender<Inbound>,
) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tracing::debug!(id, %remote, %transport, "connection up");
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut framer = StreamFramer::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            data = outgoing.recv() => match data {
                Some(bytes) => {
                    if let Err(e) = writer.write_all(&bytes).await {
                        return format!("write failed: {e}");
                    }
                }
                None => {
                    let _ = writer.shutdown().await;
                    return "closed locally".into();
                }
            },
            read = reader.read(&mut buf) => match read {
                Ok(0) => return "closed by peer".into(),
                Ok(n) => {
                    framer.push(&buf[..n]);
                    loop {
                        match framer.next_frame() {
                            Ok(Some(frame)) => {
                                if frame == Frame::Ping {
                                    if let Err(e) = writer.write_all(b"\r\n").await {
                                        return format!("write failed: {e}");
                                    }
                                }
                                if inbound.send(Inbound::Frame { transport, remote, frame }).is_err() {
                                    return "phone stopped".into();
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!(%remote, error = %e, "closing connection after malformed data");
                                return format!("malformed data: {e}");
                            }
                        }
                    }
                }
                Err(e) => return format!("read failed: {e}"),
            },
        }
    }
}
