//! The two ways to reach the backend, as connected byte streams:
//! QUIC (one bidirectional stream, 0-RTT resumption when a ticket is held)
//! and WSS (WebSocket over TLS 1.3 on the backend's TCP port, optionally
//! through an HTTP CONNECT proxy). Both present the agent's certificate.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::io::{CopyToBytes, SinkWriter, StreamReader};
use tokio_util::sync::PollSender;

/// The WebSocket path of the uplink on the backend.
pub const WSS_PATH: &str = "/api/v1/uplink";
/// Ping interval on WSS and how long silence may last (as QUIC's keep-alive and idle timeout).
const WSS_PING: Duration = Duration::from_secs(5);
const WSS_IDLE: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("QUIC connect: {0}")]
    QuicConnect(#[from] quinn::ConnectError),
    #[error("QUIC connection: {0}")]
    Quic(#[from] quinn::ConnectionError),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("{0}: {1}")]
    Io(&'static str, std::io::Error),
    #[error("proxy {proxy} refused CONNECT: {status}")]
    Proxy { proxy: String, status: String },
    #[error("invalid proxy setting {0:?} (expected http://host:port)")]
    ProxySetting(String),
    #[error("WebSocket handshake: {0}")]
    WebSocket(String),
}

/// The QUIC client configuration: keep-alive and idle timeout as the
/// backend's, 0-RTT enabled in the TLS configuration.
pub fn quic_client_config(mut tls: rustls::ClientConfig) -> Result<quinn::ClientConfig, String> {
    tls.enable_early_data = true;
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(crate::uplink::KEEP_ALIVE));
    let idle =
        quinn::IdleTimeout::try_from(crate::uplink::IDLE_TIMEOUT).map_err(|e| e.to_string())?;
    transport.max_idle_timeout(Some(idle));
    client.transport_config(Arc::new(transport));
    Ok(client)
}

/// An HTTP proxy for the WSS path (from `HTTPS_PROXY`).
#[derive(Debug, Clone, PartialEq)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
    /// `user:password` for Basic authentication, if the URL had one.
    pub credentials: Option<String>,
}

impl Proxy {
    /// Parses `http://[user:pass@]host[:port][/]` (the port defaults to 80, as curl does).
    pub fn parse(url: &str) -> Result<Proxy, TransportError> {
        let bad = || TransportError::ProxySetting(url.to_owned());
        let rest = url
            .strip_prefix("http://")
            .or_else(|| (!url.contains("://")).then_some(url))
            .ok_or_else(bad)?;
        let rest = rest.trim_end_matches('/');
        let (credentials, hostport) = match rest.rsplit_once('@') {
            Some((c, h)) => (Some(c.to_owned()), h),
            None => (None, rest),
        };
        let (host, port) = match crate::tls::split_server(hostport) {
            Some((h, p)) => (h, p),
            None if !hostport.is_empty() && !hostport.contains(':') => (hostport.to_owned(), 80),
            None => return Err(bad()),
        };
        Ok(Proxy {
            host,
            port,
            credentials,
        })
    }

    /// The proxy to use for `host`, from `HTTPS_PROXY`/`https_proxy`,
    /// honouring `NO_PROXY`/`no_proxy` (exact names, `.suffix` and `*`).
    pub fn from_env(host: &str) -> Result<Option<Proxy>, TransportError> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let Some(url) = get("HTTPS_PROXY").or_else(|| get("https_proxy")) else {
            return Ok(None);
        };
        if let Some(no) = get("NO_PROXY").or_else(|| get("no_proxy")) {
            let bypass = no.split(',').map(str::trim).any(|p| {
                p == "*"
                    || p == host
                    || (p.starts_with('.') && host.ends_with(p))
                    || host.ends_with(&format!(".{p}"))
            });
            if bypass {
                return Ok(None);
            }
        }
        Proxy::parse(&url).map(Some)
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    /// `host:port` as configured.
    pub server: String,
    pub host: String,
    pub port: u16,
    pub quic: quinn::ClientConfig,
    pub wss_tls: Arc<rustls::ClientConfig>,
    pub proxy: Option<Proxy>,
}

async fn resolve(target: &Target) -> Result<SocketAddr, TransportError> {
    let mut addrs = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|_| TransportError::Resolve(target.server.clone()))?;
    addrs
        .next()
        .ok_or_else(|| TransportError::Resolve(target.server.clone()))
}

/// A QUIC connection, handshake complete, with its uplink stream.
pub struct QuicLink {
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    /// True when `hello` already went out on this stream as 0-RTT data and
    /// the server accepted it.
    pub hello_sent: bool,
}

/// Connects over QUIC. With a session ticket from an earlier connection the
/// `hello` frame (idempotent, the only thing allowed there) is sent as 0-RTT
/// data; nothing else is sent before the handshake completes. Returns once
/// the handshake is complete, so a link is proof that the path works.
pub async fn connect_quic(
    target: &Target,
    endpoint: &mut Option<quinn::Endpoint>,
    hello: &[u8],
) -> Result<QuicLink, TransportError> {
    let addr = resolve(target).await?;
    let ep = match endpoint {
        Some(ep) if ep.local_addr().is_ok_and(|l| l.is_ipv4() == addr.is_ipv4()) => ep.clone(),
        _ => {
            let bind: SocketAddr = if addr.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                ([0u16; 8], 0).into()
            };
            let ep = quinn::Endpoint::client(bind)
                .map_err(|e| TransportError::Io("binding a UDP socket", e))?;
            *endpoint = Some(ep.clone());
            ep
        }
    };
    let connecting = ep.connect_with(target.quic.clone(), addr, &target.host)?;
    match connecting.into_0rtt() {
        Ok((conn, accepted)) => {
            let (mut send, recv) = conn.open_bi().await?;
            // Errors here surface below: a rejected 0-RTT makes `accepted` false.
            let _ = send.write_all(hello).await;
            let accepted = tokio::time::timeout(CONNECT_TIMEOUT, accepted)
                .await
                .map_err(|_| TransportError::Timeout("connecting over QUIC (0-RTT)"))?;
            if let Some(reason) = conn.close_reason() {
                return Err(TransportError::Quic(reason));
            }
            if accepted {
                return Ok(QuicLink {
                    conn,
                    send,
                    recv,
                    hello_sent: true,
                });
            }
            // Rejected: the stream and its data are gone; start a fresh one.
            tracing::debug!("0-RTT rejected; continuing with the completed handshake");
            let (send, recv) = conn.open_bi().await?;
            Ok(QuicLink {
                conn,
                send,
                recv,
                hello_sent: false,
            })
        }
        Err(connecting) => {
            let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
                .await
                .map_err(|_| TransportError::Timeout("connecting over QUIC"))??;
            let (send, recv) = conn.open_bi().await?;
            Ok(QuicLink {
                conn,
                send,
                recv,
                hello_sent: false,
            })
        }
    }
}

pub type WssReader =
    StreamReader<futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>, Bytes>;
pub type WssWriter =
    SinkWriter<CopyToBytes<Pin<Box<dyn futures_util::Sink<Bytes, Error = std::io::Error> + Send>>>>;

/// Connects over WSS (through the proxy if one is set) and returns the byte
/// stream. A task pings every 5 s and ends the stream after 15 s of silence.
pub async fn connect_wss(target: &Target) -> Result<(WssReader, WssWriter), TransportError> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect_wss_inner(target))
        .await
        .map_err(|_| TransportError::Timeout("connecting over WSS"))?
}

async fn connect_wss_inner(target: &Target) -> Result<(WssReader, WssWriter), TransportError> {
    let tcp = match &target.proxy {
        None => tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| TransportError::Io("connecting over TCP", e))?,
        Some(proxy) => connect_via_proxy(proxy, &target.host, target.port).await?,
    };
    let _ = tcp.set_nodelay(true);
    let name = rustls_pki_types::ServerName::try_from(target.host.clone())
        .map_err(|_| TransportError::Resolve(target.server.clone()))?;
    let tls = tokio_rustls::TlsConnector::from(target.wss_tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| TransportError::Io("TLS handshake", e))?;
    let authority = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let request = tokio_tungstenite::tungstenite::http::Request::builder()
        .uri(format!("wss://{authority}{WSS_PATH}"))
        .header("Host", authority)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header(
            "Sec-WebSocket-Key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .header(
            "Sec-WebSocket-Protocol",
            std::str::from_utf8(palisade_proto::UPLINK_ALPN).unwrap_or("palisade/1"),
        )
        .header(
            "User-Agent",
            concat!("palisade-agent/", env!("CARGO_PKG_VERSION")),
        )
        .body(())
        .map_err(|e| TransportError::WebSocket(e.to_string()))?;
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(palisade_proto::frame::MAX_UPLINK_FRAME + 64))
        .max_frame_size(Some(palisade_proto::frame::MAX_UPLINK_FRAME + 64));
    let (ws, _response) = tokio_tungstenite::client_async_with_config(request, tls, Some(config))
        .await
        .map_err(|e| TransportError::WebSocket(e.to_string()))?;
    Ok(pump(ws))
}

/// Opens a tunnel through an HTTP proxy with CONNECT.
async fn connect_via_proxy(
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> Result<tokio::net::TcpStream, TransportError> {
    let mut tcp = tokio::net::TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(|e| TransportError::Io("connecting to the proxy", e))?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(credentials) = &proxy.credentials {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        request.push_str(&format!("Proxy-Authorization: Basic {encoded}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| TransportError::Io("writing to the proxy", e))?;
    // Read the response head byte-wise (at most 8 KiB) so nothing of the
    // tunnelled TLS stream is consumed.
    let mut reader = BufReader::with_capacity(1, &mut tcp);
    let mut status = String::new();
    let mut total = 0usize;
    let mut first = true;
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .await
            .map_err(|e| TransportError::Io("reading from the proxy", e))?;
        total += n;
        if n == 0 || total > 8192 {
            return Err(TransportError::Proxy {
                proxy: format!("{}:{}", proxy.host, proxy.port),
                status: "no valid response".into(),
            });
        }
        if first {
            status = line.trim().to_owned();
            first = false;
        } else if line == "\r\n" || line == "\n" {
            break;
        }
    }
    let ok = status
        .split_whitespace()
        .nth(1)
        .is_some_and(|code| code.starts_with('2'));
    if !ok {
        return Err(TransportError::Proxy {
            proxy: format!("{}:{}", proxy.host, proxy.port),
            status,
        });
    }
    Ok(tcp)
}

fn pump<S>(ws: tokio_tungstenite::WebSocketStream<S>) -> (WssReader, WssWriter)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (in_tx, mut in_rx) = mpsc::channel::<std::io::Result<Bytes>>(64);
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        let mut ping = tokio::time::interval(WSS_PING);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = tokio::time::Instant::now();
        loop {
            tokio::select! {
                msg = stream.next() => {
                    last_heard = tokio::time::Instant::now();
                    let item = match msg {
                        None | Some(Ok(Message::Close(_))) => break,
                        Some(Ok(Message::Binary(b))) => Ok(b),
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                        Some(Ok(Message::Text(_))) => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "text message on the uplink")),
                        Some(Err(e)) => Err(std::io::Error::other(e)),
                    };
                    let failed = item.is_err();
                    if in_tx.send(item).await.is_err() || failed {
                        break;
                    }
                }
                out = out_rx.recv() => match out {
                    Some(bytes) => if sink.send(Message::Binary(bytes)).await.is_err() { break },
                    None => break,
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() > WSS_IDLE {
                        let _ = in_tx.send(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "WSS idle timeout"))).await;
                        break;
                    }
                    if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
    });
    let stream = futures_util::stream::poll_fn(move |cx| in_rx.poll_recv(cx)).boxed();
    let sink: Pin<Box<dyn futures_util::Sink<Bytes, Error = std::io::Error> + Send>> = Box::pin(
        PollSender::new(out_tx)
            .sink_map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "WSS closed")),
    );
    (
        StreamReader::new(stream),
        SinkWriter::new(CopyToBytes::new(sink)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        assert_eq!(
            Proxy::parse("http://proxy.example:3128").ok(),
            Some(Proxy {
                host: "proxy.example".into(),
                port: 3128,
                credentials: None
            })
        );
        assert_eq!(
            Proxy::parse("http://u:p@10.0.0.1:8080/").ok(),
            Some(Proxy {
                host: "10.0.0.1".into(),
                port: 8080,
                credentials: Some("u:p".into())
            })
        );
        assert_eq!(Proxy::parse("proxy:3128").ok().map(|p| p.port), Some(3128));
        assert_eq!(Proxy::parse("http://proxy").ok().map(|p| p.port), Some(80));
        assert!(
            Proxy::parse("https://proxy:3128").is_err(),
            "TLS to the proxy is not supported"
        );
        assert!(Proxy::parse("socks5://proxy:1080").is_err());
        assert!(Proxy::parse("http://proxy:notaport").is_err());
    }
}
