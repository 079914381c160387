//! The uplink over WebSocket (WSS on the backend's HTTPS port), for agents
//! whose UDP is blocked. Same mutual-TLS identity, same protocol: the byte
//! stream of length-prefixed frames travels in binary WebSocket messages (any
//! chunking), and [`super::serve_agent`] runs on it unchanged.
//!
//! The agent is authenticated from its TLS client certificate *before* the
//! upgrade; without one the answer is 401, with a wrong one 403. A
//! connection on which nothing arrives for [`super::IDLE_TIMEOUT`]
//! is closed (the agent pings every few seconds).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::CertificateDer;
use tokio::sync::mpsc;
use tokio_util::io::{CopyToBytes, SinkWriter, StreamReader};
use tokio_util::sync::PollSender;

use super::{IDLE_TIMEOUT, Transport, authenticate, serve_agent};
use crate::state::AppState;
use crate::web::Routes;

/// The client certificate chain of the TLS connection a request came on
/// (empty without one). Inserted by the HTTPS server for every request.
#[derive(Clone, Debug, Default)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// The path agents connect to.
pub const PATH: &str = "/api/v1/uplink";

/// The WSS uplink route: agents only, authenticated by their client
/// certificate (checked in the handler, before the upgrade).
pub fn routes() -> Routes {
    Routes::new().get(PATH, crate::web::Access::Agent, upgrade)
}

/// The agents' uplink over WebSocket (subprotocol `palisade/1`), for agents
/// whose UDP is blocked; the TLS client certificate identifies the agent.
#[utoipa::path(get, path = "/api/v1/uplink", tag = "agents",
    responses((status = 101, description = "switching to the WebSocket uplink"),
              (status = 401, description = "no client certificate"),
              (status = 403, description = "not an enrolled agent")))]
async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    peer: Option<Extension<PeerCertificates>>,
    ws: WebSocketUpgrade,
) -> Response {
    let chain = peer.map(|Extension(p)| p.0).unwrap_or_default();
    if chain.is_empty() {
        return (StatusCode::UNAUTHORIZED, "a client certificate is required").into_response();
    }
    let agent_id = match authenticate(&state, &chain).await {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(%remote, error = %e, "refused a WSS uplink");
            return (StatusCode::FORBIDDEN, "not an enrolled agent").into_response();
        }
    };
    let subprotocol = std::str::from_utf8(palisade_proto::UPLINK_ALPN).unwrap_or("palisade/1");
    ws.protocols([subprotocol])
        .max_message_size(palisade_proto::frame::MAX_UPLINK_FRAME + 64)
        .on_upgrade(move |socket| async move {
            let (reader, writer) = pump(socket);
            if let Err(e) = serve_agent(
                &state,
                &agent_id,
                Transport::Wss,
                remote,
                false,
                reader,
                writer,
            )
            .await
            {
                tracing::warn!(agent_id, error = %e, "WSS uplink ended with an error");
            }
        })
}

type Reader = StreamReader<futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>, Bytes>;
type Writer = SinkWriter<
    CopyToBytes<
        futures_util::sink::SinkMapErr<
            PollSender<Bytes>,
            fn(tokio_util::sync::PollSendError<Bytes>) -> std::io::Error,
        >,
    >,
>;

fn closed(_: tokio_util::sync::PollSendError<Bytes>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "websocket closed")
}

/// Turns a WebSocket into a byte reader and writer, with a task that moves
/// binary messages in both directions and enforces the idle timeout.
fn pump(socket: WebSocket) -> (Reader, Writer) {
    let (in_tx, mut in_rx) = mpsc::channel::<std::io::Result<Bytes>>(64);
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let (mut sink, mut stream) = socket.split();
        loop {
            tokio::select! {
                msg = tokio::time::timeout(IDLE_TIMEOUT, stream.next()) => {
                    let item = match msg {
                        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "websocket idle timeout")),
                        Ok(None) | Ok(Some(Ok(Message::Close(_)))) => break,
                        Ok(Some(Ok(Message::Binary(b)))) => Ok(b),
                        Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                        Ok(Some(Ok(Message::Text(_)))) => Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "text message on the uplink",
                        )),
                        Ok(Some(Err(e))) => Err(std::io::Error::other(e)),
                    };
                    let failed = item.is_err();
                    if in_tx.send(item).await.is_err() || failed {
                        break;
                    }
                }
                out = out_rx.recv() => match out {
                    Some(bytes) => {
                        if sink.send(Message::Binary(bytes)).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
            }
        }
        let _ = sink.close().await;
    });
    let stream = futures_util::stream::poll_fn(move |cx| in_rx.poll_recv(cx)).boxed();
    let sink: futures_util::sink::SinkMapErr<PollSender<Bytes>, fn(_) -> std::io::Error> =
        PollSender::new(out_tx).sink_map_err(closed);
    (
        StreamReader::new(stream),
        SinkWriter::new(CopyToBytes::new(sink)),
    )
}

/// The handler's OpenAPI path, for [`crate::web::openapi`].
pub(crate) fn openapi_paths() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(upgrade))]
    struct Paths;
    <Paths as utoipa::OpenApi>::openapi()
}
