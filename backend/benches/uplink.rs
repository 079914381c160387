//! Uplink scenario benchmark (whole processes and real sockets, so not
//! criterion). Against a release `palisade-backend`:
//!
//! - reconnect → first record acknowledged, for a QUIC full handshake, a
//!   QUIC 0-RTT resumption and WSS; the record is stored before the ack is
//!   sent, so "stored" is the ack time minus half an RTT;
//! - UDP blocked at start → first record acknowledged over WSS (the full
//!   happy-eyeballs path of `uplink::run`);
//! - throughput: 1 KiB records through one connection, spool included
//!   (records appended in batches while the uplink drains them).
//!
//! Over loopback always; over a veth link between two network namespaces
//! with 50 ms RTT (tc netem, 25 ms each way) when run as root.
//!
//! Run: `cargo bench -p palisade-backend --bench uplink`
//! (`PALISADE_BENCH_RUNS`, default 7; `PALISADE_BENCH_RECORDS`, default 50000).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_agent::spool::Spool;
use palisade_agent::transport::{Target, connect_quic, connect_wss, quic_client_config};
use palisade_agent::uplink::{PathPolicy, UplinkConfig, run_stream_after};
use palisade_proto::msg::RecordBody;
use palisade_proto::pb;
use support::*;

fn target(state: &Path, fresh_tickets: bool, cached: &mut Option<quinn::ClientConfig>) -> Target {
    let store = palisade_agent::identity::IdentityStore::open(state).expect("identity store");
    let id = store.load().expect("load").expect("enrolled");
    let (host, port) = palisade_agent::tls::split_server(&id.server).expect("server");
    let tls = |alpn: &[u8]| {
        palisade_agent::tls::uplink_config(
            &id.server_ca_der,
            &id.certificate_der,
            &id.private_key_der,
            alpn,
        )
        .expect("tls")
    };
    let quic = match cached {
        Some(q) if !fresh_tickets => q.clone(),
        _ => {
            let q = quic_client_config(tls(palisade_proto::UPLINK_ALPN)).expect("quic config");
            *cached = Some(q.clone());
            q
        }
    };
    // A relay in front of the backend (the 50 ms RTT scenario) listens on another port.
    let port = std::env::var("PALISADE_BENCH_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(port);
    Target {
        server: id.server.clone(),
        host,
        port,
        quic,
        wss_tls: Arc::new(tls(b"http/1.1")),
        proxy: None,
    }
}

fn one_record(spool: &Spool) {
    let facts = pb::HostFacts {
        hostname: "bench".into(),
        ..Default::default()
    };
    spool.append(RecordBody::Facts(facts), 0).expect("append");
}

/// Runs the uplink stream until the spool is empty; returns the elapsed time.
async fn drain<R, W>(
    writer: W,
    reader: R,
    spool: &Spool,
    hello_sent: bool,
    start: Instant,
) -> Duration
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let (events, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let session = run_stream_after(writer, reader, spool, &events, "bench", hello_sent);
    tokio::pin!(session);
    loop {
        tokio::select! {
            r = &mut session => panic!("uplink ended early: {r:?}"),
            () = tokio::time::sleep(Duration::from_micros(200)) => {
                if spool.is_empty().expect("len") {
                    return start.elapsed();
                }
            }
        }
    }
}

/// The agent side of every scenario; prints one `name value` line per figure.
async fn agent_side(
    state: &Path,
    runs: usize,
    records: usize,
    udp_blocked_cmd: Option<(String, String)>,
) {
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(spool_dir.path()).expect("spool");
    let mut cached = None;
    let mut endpoint = None;
    let (mut full, mut zero, mut wss) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        // QUIC, full handshake (a fresh TLS session cache has no ticket).
        let t = target(state, true, &mut cached);
        one_record(&spool);
        let start = Instant::now();
        let link = connect_quic(
            &t,
            &mut endpoint,
            &palisade_agent::uplink::hello_frame(&spool),
        )
        .await
        .expect("quic");
        assert!(!link.hello_sent);
        full.push(drain(link.send, link.recv, &spool, link.hello_sent, start).await);
        link.conn.close(0u8.into(), b"");
        // QUIC, 0-RTT (the cache now holds a ticket).
        let t = target(state, false, &mut cached);
        one_record(&spool);
        let start = Instant::now();
        let link = connect_quic(
            &t,
            &mut endpoint,
            &palisade_agent::uplink::hello_frame(&spool),
        )
        .await
        .expect("quic");
        let resumed = link.hello_sent;
        let d = drain(link.send, link.recv, &spool, resumed, start).await;
        if resumed {
            zero.push(d);
        }
        link.conn.close(0u8.into(), b"");
        // WSS.
        one_record(&spool);
        let start = Instant::now();
        let (r, w) = connect_wss(&t).await.expect("wss");
        wss.push(drain(w, r, &spool, false, start).await);
    }
    let ms = |v: Vec<Duration>| median(v.iter().map(|d| d.as_secs_f64() * 1000.0).collect());
    println!("quic_full_ms {:.2}", ms(full));
    println!(
        "quic_0rtt_ms {:.2} ({} of {runs} resumed)",
        ms(zero.clone()),
        zero.len()
    );
    println!("wss_ms {:.2}", ms(wss));

    // UDP blocked at start: the whole happy-eyeballs path.
    if let Some((block, unblock)) = udp_blocked_cmd {
        let mut v = Vec::new();
        for _ in 0..runs.min(5) {
            sh(&block);
            let dir = tempfile::tempdir().expect("tempdir");
            let s = Arc::new(Spool::open(dir.path()).expect("spool"));
            one_record(&s);
            let config = UplinkConfig {
                target: target(state, true, &mut cached),
                policy: PathPolicy::default(),
            };
            let (events, mut rx) = tokio::sync::mpsc::channel(64);
            tokio::spawn(async move { while rx.recv().await.is_some() {} });
            let start = Instant::now();
            let task = tokio::spawn(palisade_agent::uplink::run(config, s.clone(), events));
            while !s.is_empty().expect("len") {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            v.push(start.elapsed());
            task.abort();
            sh(&unblock);
        }
        println!("udp_blocked_to_wss_ms {:.2}", ms(v));
    }

    if records == 0 {
        return;
    }
    // Throughput: 1 KiB records, appended in batches of 256 while the uplink drains them.
    let t = target(state, false, &mut cached);
    let link = connect_quic(
        &t,
        &mut endpoint,
        &palisade_agent::uplink::hello_frame(&spool),
    )
    .await
    .expect("quic");
    let spool = Arc::new(spool);
    let producer = {
        let spool = spool.clone();
        tokio::task::spawn_blocking(move || {
            let facts = pb::HostFacts {
                hostname: "bench".into(),
                os_pretty_name: "x".repeat(1000),
                ..Default::default()
            };
            let mut left = records;
            while left > 0 {
                let n = left.min(256);
                spool
                    .append_batch((0..n).map(|_| (RecordBody::Facts(facts.clone()), 0)))
                    .expect("append");
                left -= n;
            }
        })
    };
    let start = Instant::now();
    let (events, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let session = run_stream_after(
        link.send,
        link.recv,
        &spool,
        &events,
        "quic",
        link.hello_sent,
    );
    tokio::pin!(session);
    let mut produced = false;
    let elapsed = loop {
        tokio::select! {
            r = &mut session => panic!("uplink ended early: {r:?}"),
            () = tokio::time::sleep(Duration::from_millis(1)) => {
                produced = produced || producer.is_finished();
                if produced && spool.is_empty().expect("len") {
                    break start.elapsed();
                }
            }
        }
    };
    println!(
        "throughput_records_per_s {:.0} ({records} records of 1 KiB in {:.2} s)",
        records as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
}

fn sh(cmd: &str) {
    let status = Command::new("sh").arg("-c").arg(cmd).status().expect("sh");
    assert!(status.success(), "{cmd} failed");
}

fn scenario(
    label: &str,
    runs: usize,
    records: usize,
    netns: Option<&str>,
    relay: Option<Duration>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (listen, names): (String, Vec<&str>) = match netns {
        Some(_) => ("10.232.0.1:0".into(), vec!["10.232.0.1"]),
        None => ("127.0.0.1:0".into(), vec![]),
    };
    let backend = Backend::start_with(&dir.path().join("backend"), &listen, &names);
    let token = backend.token(&[]);
    let state = dir.path().join("agent");
    let out = enroll(&backend.server(), &token, &state);
    assert!(
        out.status.success(),
        "enroll: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("== {label}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let relay_port = relay.map(|d| start_relay(&rt, backend.addr, d));
    // The agent side runs in a child process (inside the namespace when there is one).
    let me = std::env::current_exe().expect("exe");
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&me);
            let port = backend.addr.port();
            c.env(
                "PALISADE_BENCH_BLOCK",
                format!("ip netns exec {ns} nft add rule inet palbench out udp dport {port} drop"),
            );
            c.env(
                "PALISADE_BENCH_UNBLOCK",
                format!("ip netns exec {ns} nft flush chain inet palbench out"),
            );
            c
        }
        None => Command::new(&me),
    };
    let status = cmd
        .arg("--bench")
        .env("PALISADE_BENCH_AGENT", &state)
        .env("PALISADE_BENCH_RUNS", runs.to_string())
        .env("PALISADE_BENCH_RECORDS", records.to_string())
        .env(
            "PALISADE_BENCH_PORT",
            relay_port.map(|p| p.to_string()).unwrap_or_default(),
        )
        .status()
        .expect("agent side runs");
    assert!(status.success(), "agent side failed");
    drop(backend);
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runs: usize = std::env::var("PALISADE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let records: usize = std::env::var("PALISADE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(state) = std::env::var("PALISADE_BENCH_AGENT") {
        let block = std::env::var("PALISADE_BENCH_BLOCK")
            .ok()
            .zip(std::env::var("PALISADE_BENCH_UNBLOCK").ok());
        rt.block_on(agent_side(Path::new(&state), runs, records, block));
        return;
    }
    scenario("loopback", runs, records, None, None);
    // This kernel may lack sch_netem (it does on the project's CI machines),
    // so the 50 ms RTT link is made in user space: a relay on loopback that
    // holds every UDP datagram and every TCP chunk for 25 ms in each
    // direction. QUIC and WSS go through the same relay port.
    scenario(
        "loopback + relay adding 25 ms each way (50 ms RTT)",
        runs,
        records.min(20_000),
        None,
        Some(Duration::from_millis(25)),
    );
    if !nix::unistd::geteuid().is_root() {
        println!("(not root: the UDP-blocked scenario needs a network namespace and is skipped)");
        return;
    }
    let ns = "palbench";
    let setup = [
        format!("ip netns del {ns} 2>/dev/null; ip link del pbh0 2>/dev/null; true"),
        format!("ip netns add {ns}"),
        "ip link add pbh0 type veth peer name pbn0".into(),
        format!("ip link set pbn0 netns {ns}"),
        "ip addr add 10.232.0.1/24 dev pbh0 && ip link set pbh0 up".into(),
        format!("ip netns exec {ns} ip addr add 10.232.0.2/24 dev pbn0"),
        format!("ip netns exec {ns} ip link set pbn0 up && ip netns exec {ns} ip link set lo up"),
        format!("ip netns exec {ns} nft add table inet palbench"),
        format!(
            "ip netns exec {ns} nft add chain inet palbench out '{{ type filter hook output priority 0 ; }}'"
        ),
    ];
    for step in &setup {
        sh(step);
    }
    scenario("netns veth (UDP blocked at start)", runs, 0, Some(ns), None);
    sh(&format!(
        "ip netns del {ns}; ip link del pbh0 2>/dev/null; true"
    ));
}

/// Starts a relay on a free loopback port (UDP and TCP on the same number)
/// forwarding to `upstream` with `delay` added in each direction.
fn start_relay(
    rt: &tokio::runtime::Runtime,
    upstream: std::net::SocketAddr,
    delay: Duration,
) -> u16 {
    rt.block_on(async move {
        let (tcp, udp) = palisade_backend::server::bind_pair("127.0.0.1:0".parse().expect("addr"))
            .expect("relay binds");
        tcp.set_nonblocking(true).expect("nonblocking");
        udp.set_nonblocking(true).expect("nonblocking");
        let port = tcp.local_addr().expect("addr").port();
        let tcp = tokio::net::TcpListener::from_std(tcp).expect("tcp");
        let udp = Arc::new(tokio::net::UdpSocket::from_std(udp).expect("udp"));
        // TCP: every chunk is forwarded after `delay`, order kept.
        tokio::spawn(async move {
            while let Ok((client, _)) = tcp.accept().await {
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(delayed_copy(cr, sw, delay));
                    tokio::spawn(delayed_copy(sr, cw, delay));
                });
            }
        });
        // UDP: one upstream socket per client address; each direction is a
        // FIFO released after `delay`, so datagrams keep their order.
        tokio::spawn(async move {
            let mut peers: std::collections::HashMap<
                std::net::SocketAddr,
                tokio::sync::mpsc::UnboundedSender<(tokio::time::Instant, Vec<u8>)>,
            > = Default::default();
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                let up = match peers.get(&from) {
                    Some(tx) => tx.clone(),
                    None => {
                        let s = Arc::new(
                            tokio::net::UdpSocket::bind("127.0.0.1:0")
                                .await
                                .expect("bind"),
                        );
                        s.connect(upstream).await.expect("connect");
                        let (up_tx, mut up_rx) = tokio::sync::mpsc::unbounded_channel::<(
                            tokio::time::Instant,
                            Vec<u8>,
                        )>();
                        let sender = s.clone();
                        tokio::spawn(async move {
                            while let Some((due, data)) = up_rx.recv().await {
                                tokio::time::sleep_until(due).await;
                                let _ = sender.send(&data).await;
                            }
                        });
                        let (down_tx, mut down_rx) = tokio::sync::mpsc::unbounded_channel::<(
                            tokio::time::Instant,
                            Vec<u8>,
                        )>();
                        let back = udp.clone();
                        tokio::spawn(async move {
                            while let Some((due, data)) = down_rx.recv().await {
                                tokio::time::sleep_until(due).await;
                                let _ = back.send_to(&data, from).await;
                            }
                        });
                        tokio::spawn(async move {
                            let mut b = vec![0u8; 65536];
                            while let Ok(n) = s.recv(&mut b).await {
                                if down_tx
                                    .send((tokio::time::Instant::now() + delay, b[..n].to_vec()))
                                    .is_err()
                                {
                                    return;
                                }
                            }
                        });
                        peers.insert(from, up_tx.clone());
                        up_tx
                    }
                };
                let _ = up.send((tokio::time::Instant::now() + delay, buf[..n].to_vec()));
            }
        });
        port
    })
}

async fn delayed_copy<R, W>(mut r: R, mut w: W, delay: Duration)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((due, data)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if w.write_all(&data).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0
            || tx
                .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
        {
            return;
        }
    }
}
