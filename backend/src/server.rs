//! `palisade-backend serve`: one address and port number, QUIC on UDP for
//! agents and HTTPS on TCP for browsers, the API, enrollment (and WSS next).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Extension;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

use crate::config::Config;
use crate::db::Db;
use crate::pki::Pki;
use crate::state::AppState;
use crate::uplink::registry::Registry;

/// How long a TLS handshake on the HTTPS port may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Opens the data directory and the database (migrated) and loads the PKI
/// (created if missing). Blocking: PostgreSQL is connected to here.
pub fn open(config: &Config) -> anyhow::Result<(Db, Arc<Pki>)> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| {
            format!(
                "cannot restrict data directory {}",
                config.data_dir.display()
            )
        })?;
    let url = config.database_url()?;
    let db =
        Db::open(&url).with_context(|| format!("cannot open the database {}", url.redacted()))?;
    let supplied = match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        _ => None,
    };
    let pki = Pki::load_or_create(&config.pki_dir(), &config.tls.server_names, supplied)
        .with_context(|| format!("cannot load PKI from {}", config.pki_dir().display()))?;
    Ok((db, Arc::new(pki)))
}

/// Binds TCP and UDP on the same port. With port 0, finds a port free for both.
pub fn bind_pair(addr: SocketAddr) -> anyhow::Result<(std::net::TcpListener, std::net::UdpSocket)> {
    let attempts = if addr.port() == 0 { 32 } else { 1 };
    let mut last_err = None;
    for _ in 0..attempts {
        let tcp = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen on tcp {addr}"))?;
        let bound = tcp.local_addr().context("tcp local address")?;
        match std::net::UdpSocket::bind(bound) {
            Ok(udp) => return Ok((tcp, udp)),
            Err(e) => last_err = Some(e),
        }
    }
    Err(anyhow::anyhow!(
        "cannot listen on udp {addr}: {}",
        last_err.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// The HTTPS TLS configuration: TLS 1.3 only. Client certificates are
/// optional here (browsers have none); agents on WSS present theirs.
pub fn https_tls_config(pki: &Pki) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(pki.agent_ca_der().clone())
        .context("agent CA certificate")?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .context("client certificate verifier")?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server_chain().to_vec(), pki.server_key())
        .context("server certificate")?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// Runs the backend until SIGINT or SIGTERM.
pub async fn serve(mut config: Config) -> anyhow::Result<()> {
    config.validate()?;
    let opened = config.clone();
    let (db, pki) = tokio::task::spawn_blocking(move || open(&opened))
        .await
        .context("opening the data directory")??;
    tracing::info!(database = %config.database_url()?.redacted(), "database ready");
    let (tcp, udp) = bind_pair(config.listen)?;
    let local = tcp.local_addr().context("local address")?;
    // Port 0 asked for any free port: what depends on the port (the
    // passkey origins) uses the one bound.
    config.listen.set_port(local.port());
    tcp.set_nonblocking(true).context("tcp socket")?;
    let tcp = tokio::net::TcpListener::from_std(tcp).context("tcp socket")?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(crate::uplink::quic::server_config(&pki)?),
        udp,
        Arc::new(quinn::TokioRuntime),
    )
    .context("cannot start the QUIC endpoint")?;

    let metrics_config = config.metrics.clone();
    let key_path = config.audit_key_path();
    let audit_key =
        crate::audit::checkpoint::AuditKey::load_or_create(&key_path).with_context(|| {
            format!(
                "cannot load the audit checkpoint key {}",
                key_path.display()
            )
        })?;
    let state = AppState::new(
        db.clone(),
        Arc::new(Registry::new()),
        pki.clone(),
        Arc::new(config),
        Arc::new(audit_key),
    );
    let app = crate::web::router(state.clone());
    let maintenance = tokio::spawn(crate::metrics::maintenance::run(db, metrics_config));
    // Signs the chain at once and then every interval.
    let checkpoints = tokio::spawn(crate::audit::checkpoint::run(state.clone()));
    let throttle = tokio::spawn(crate::identity::throttle::run(state.clone()));
    let index_refresh = tokio::spawn(crate::patching::refresh::run(state.clone()));
    let patch_rollouts = tokio::spawn(crate::patching::rollout::run(state.clone()));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(https_tls_config(&pki)?));

    tracing::info!(%local, ca_pin = %hex::encode(pki.ca_pin()), "palisade-backend listening (QUIC on udp, HTTPS on tcp)");
    // A machine-readable line for scripts and tests that asked for port 0.
    println!("listening on {local}");

    let https = run_https(tcp, acceptor, app);
    let quic = crate::uplink::quic::run(state.clone(), endpoint.clone());
    tokio::select! {
        r = https => r?,
        () = quic => {},
        () = shutdown_signal() => tracing::info!("shutting down"),
    }
    maintenance.abort();
    checkpoints.abort();
    throttle.abort();
    index_refresh.abort();
    patch_rollouts.abort();
    // The last events of this run get a signature too.
    let key = state.audit_key.clone();
    let now = crate::now_millis();
    match state
        .db
        .write("audit checkpoint", move |tx| {
            crate::audit::checkpoint::sign_head(tx, &key, now)
        })
        .await
    {
        Ok(signed) => {
            let log = state.config.audit_checkpoint_log();
            if let Err(e) = crate::audit::checkpoint::append_to_log(&log, signed.as_slice()) {
                tracing::warn!(error = %e, "cannot keep a copy of the audit checkpoint");
            }
        }
        Err(e) => tracing::warn!(error = %e, "audit checkpoint at shutdown failed"),
    }
    endpoint.close(0u8.into(), b"backend shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    Ok(())
}

async fn run_https(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
) -> anyhow::Result<()> {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let peer = crate::uplink::wss::PeerCertificates(Arc::new(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                    .unwrap_or_default(),
            ));
            let service = TowerToHyperService::new(
                app.layer(Extension(ConnectInfo(remote)))
                    .layer(Extension(peer)),
            );
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let builder = builder.http1_only();
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%remote, error = %e, "https connection ended with an error");
            }
        });
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
